//! `calibench run`: run a matrix and print where its results are.

use calibench::matrix::Spec;
use calibench::runner::{self, RunOptions};

use super::Outcome;
use crate::cli::{ExecArgs, RunArgs};

/// One line per verdict, coloured by verdict on a terminal.
fn print_verdicts(rows: &[calibench::report::portability::VerdictRow]) {
    use calibench::console::{paint, stderr_colour, Tone};
    use calibench::report::Verdict;
    if rows.is_empty() {
        eprintln!("verdict: none (no cache was run at int8 or best: pass --calib and --int8 to judge one)");
    }
    for r in rows {
        let tone = match r.verdict {
            Verdict::ReuseOk => Tone::Good,
            Verdict::Recalibrate => Tone::Bad,
            Verdict::ReuseWithCaution | Verdict::NotMeasured => Tone::Warn,
        };
        eprintln!(
            "verdict: {} · {} on {}: {}  ({}; speed: {})",
            r.model,
            r.cache,
            r.target,
            paint(r.label, tone, stderr_colour()),
            r.reasons.join("; "),
            r.speed
        );
    }
}

/// The one command that matters after this run.
fn next_step(s: &runner::RunSummary, html: &std::path::Path) -> String {
    if s.any_failed() {
        format!(
            "open {} (why each failing cell failed, and what to do)",
            html.display()
        )
    } else {
        format!(
            "calibench compare <baseline run> {}   (exit 1 on a latency or accuracy regression)",
            s.run_dir.display()
        )
    }
}

pub fn run(args: &RunArgs) -> anyhow::Result<Outcome> {
    let loaded = Spec::load(&args.matrix)?;
    let which = Which {
        filter: args.selection.filter(),
        shard: args.selection.shard,
        run_id: args.run_id.clone(),
        resume: args.resume.clone(),
        retry_failed: args.retry_failed,
        force: args.force,
        verdict_lines: false,
    };
    execute(loaded, &args.exec, which)
}

/// Which cells of a spec to run, and into which run folder.
pub struct Which {
    pub filter: calibench::matrix::Filter,
    pub shard: Option<calibench::matrix::Shard>,
    pub run_id: Option<String>,
    pub resume: Option<std::path::PathBuf>,
    pub retry_failed: bool,
    pub force: bool,
    /// Print every verdict (for `check`'s few).
    pub verdict_lines: bool,
}

/// Runs a loaded spec's cells, writes the run folder's reports and prints the outcome.
pub fn execute(
    mut loaded: calibench::matrix::LoadedSpec,
    args: &ExecArgs,
    which: Which,
) -> anyhow::Result<Outcome> {
    for m in &mut loaded.spec.models {
        // --atol/--rtol override the spec's tolerances for every output and precision.
        for t in std::iter::once(&mut m.tolerance.all)
            .chain(m.tolerance.precision.values_mut())
            .chain(m.tolerance.outputs.values_mut())
        {
            if args.atol.is_some() {
                t.atol = args.atol;
            }
            if args.rtol.is_some() {
                t.rtol = args.rtol;
            }
        }
    }
    let which_verdicts = which.verdict_lines;
    let mut latency = loaded.spec.latency;
    if let Some(ms) = args.warmup_ms {
        latency.warmup_ms = ms;
    }
    if let Some(ms) = args.measurement_ms {
        latency.measurement_ms = ms;
    }
    if let Some(n) = args.samples {
        latency.samples = n;
    }
    if let Some(n) = args.warmup_iterations {
        latency.warmup_iterations = n;
    }
    latency.cuda_graph |= args.use_cuda_graph;
    if let Some(sync) = args.sync {
        latency.sync = sync;
    }
    let opts = RunOptions {
        output_dir: args.output.clone(),
        run_id: which.run_id,
        resume: which.resume,
        retry_failed: which.retry_failed,
        force: which.force,
        filter: which.filter,
        shard: which.shard,
        latency,
        progress: !args.quiet,
        gpus: None,
        criterion: !args.no_criterion,
        criterion_html: args.criterion_html,
        serial: args.serial,
        engine_store: (!args.no_engine_store).then(|| {
            args.engine_store
                .clone()
                .unwrap_or_else(|| args.output.join(".cache").join("engines"))
        }),
        allow_skipped: args.allow_skipped,
        cross_check: args
            .cross_check
            .clone()
            .unwrap_or_else(|| loaded.spec.cross_check.backends.clone()),
        telemetry_period: (args.telemetry_ms > 0)
            .then(|| std::time::Duration::from_millis(args.telemetry_ms)),
    };
    if args.lock_clocks {
        match calibench::gpu::nvml::inventory() {
            Ok(inv) => {
                eprintln!("For stable GPU timings, lock the clocks first (calibench never changes them itself):");
                for g in &inv.gpus {
                    eprintln!("  {}", calibench::gpu::nvml::lock_clocks_advice(g));
                }
            }
            Err(e) => eprintln!("--lock-clocks: {e}"),
        }
    }
    let s = runner::run(&loaded, &opts)?;
    eprintln!("{}", s.line());
    let results = s.run_dir.join("results.jsonl");
    eprintln!("results: {}", results.display());
    // The records are on disk already: a report that cannot be written is a warning only.
    let reports = match super::report::write_run_reports(&s.run_dir) {
        Ok(r) => {
            if which_verdicts {
                print_verdicts(&r.rows);
            }
            eprintln!("report:  {}", r.html.display());
            eprintln!("summary: {}", r.markdown.display());
            eprintln!("next:    {}", next_step(&s, &r.html));
            Some(r)
        }
        Err(e) => {
            eprintln!(
                "warning: no report written: {e:#}\n  fix: calibench report {} -o report.html",
                s.run_dir.display()
            );
            None
        }
    };
    if args.json {
        // For scripts: the summary and verdicts as one JSON object on stdout.
        let mut v = serde_json::json!({
            "run_dir": s.run_dir, "results": results, "selected": s.selected, "ran": s.ran,
            "already_recorded": s.already_recorded, "ok": s.ok, "failed": s.failed,
            "expected_failures": s.expected_failures, "unexpected_passes": s.unexpected_passes,
            "skipped": s.skipped, "expected_skips": s.expected_skips, "passed": !s.any_failed(),
        });
        if let Some(r) = &reports {
            v["report"] = serde_json::json!(r.html);
            v["summary"] = serde_json::json!(r.markdown);
            v["verdicts"] = r.verdicts.clone();
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        // The run folder on stdout, for scripts: `run=$(calibench run m.toml -q)`.
        println!("{}", s.run_dir.display());
    }
    Ok(if s.any_failed() {
        Outcome::Failed
    } else {
        Outcome::Ok
    })
}
