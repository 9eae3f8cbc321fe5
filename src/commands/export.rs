//! `calibench export`: a run's records in another format.

use std::io::Write;

use anyhow::Context;
use calibench::results::export::ExportFormat;
use calibench::results::read_results;

use super::Outcome;
use crate::cli::ExportArgs;

pub fn export(args: &ExportArgs) -> anyhow::Result<Outcome> {
    let read = read_results(&args.run)?;
    if read.dropped_partial_tail {
        tracing::warn!(
            "{}: ignored an incomplete last line (interrupted run)",
            args.run.display()
        );
    }
    let format = match (args.format, &args.output) {
        (Some(f), _) => f,
        (None, Some(path)) => ExportFormat::from_path(path)?,
        (None, None) => anyhow::bail!(
            "which format? pass --format csv|json|junit|markdown, or -o FILE with a .csv, .json, .xml or .md extension"
        ),
    };
    let exporter = format.exporter();
    match &args.output {
        Some(path) => {
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("cannot create {}", path.display()))?,
            );
            exporter.export(&read.records, &mut file)?;
            file.flush()
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => exporter.export(&read.records, &mut std::io::stdout().lock())?,
    }
    Ok(Outcome::Ok)
}
