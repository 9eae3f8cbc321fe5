//! calibench's binary: parse the CLI, call the library, map the outcome to an exit code
//! (0 ok, 1 a cell or gate failed, 2 bad input or environment).

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command};
use commands::Outcome;

fn main() -> ExitCode {
    // A closed pipe (`calibench cache inspect X | head`) ends the process quietly, as it does
    // for other command-line tools, instead of a panic in println!. Records are synced to
    // disk as each cell finishes, so none is lost.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Before any thread or redirection: calibench's stderr survives criterion's silencing.
    calibench::console::init();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(calibench::console::stderr)
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Plan(args) => commands::plan::plan(args),
        Command::Run(args) => commands::run::run(args),
        Command::Check(args) => commands::check::check(args),
        Command::Export(args) => commands::export::export(args),
        Command::Cache(cmd) => commands::cache::cache(cmd),
        Command::Calibrate(args) => commands::calibrate::calibrate(args),
        Command::Gpus(args) => commands::gpus::gpus(args),
        Command::Profile(args) => commands::profile::profile(args),
        Command::ToFp16(args) => commands::to_fp16::to_fp16(args),
        Command::Report(args) => commands::report::report(args),
        Command::Merge(args) => commands::report::merge(args),
        Command::Compare(args) => commands::report::compare(args),
        Command::Store(cli::StoreCommand::Gc(args)) => commands::store::gc(args),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
