//! `calibench report`, `merge` and `compare`: what a release manager reads and a nightly job gates on.

use std::path::{Path, PathBuf};

use anyhow::Context;
use calibench::report::{
    compare as compare_runs, render_html, render_markdown, verdicts_json, verdicts_json_of,
    ReportOptions,
};
use calibench::results::merge::{merge_records, write_merged};
use calibench::results::Record;

use super::Outcome;
use crate::cli::{CompareArgs, MergeArgs, ReportArgs};

fn read_all(runs: &[PathBuf]) -> anyhow::Result<Vec<Record>> {
    let (records, summary) = merge_records(runs, true)?;
    if summary.matrices.len() > 1 {
        eprintln!(
            "note: these runs come from {} different matrix specs",
            summary.matrices.len()
        );
    }
    for d in &summary.duplicates {
        eprintln!("warning: cell {d} appears in several runs; the one that finished last is shown");
    }
    Ok(records)
}

/// The reports `run` leaves in its run folder.
pub struct RunReports {
    /// `<run>/report.html`.
    pub html: PathBuf,
    /// `<run>/summary.md`.
    pub markdown: PathBuf,
    /// The verdicts, as `report --json` prints them.
    pub verdicts: serde_json::Value,
    /// The verdict rows, worst first.
    pub rows: Vec<calibench::report::portability::VerdictRow>,
}

/// Writes `report.html` and `summary.md` into a run folder (at the end of `run`, also after
/// `--resume`, from every record the folder holds).
pub fn write_run_reports(run_dir: &Path) -> anyhow::Result<RunReports> {
    let records = calibench::results::read_results(run_dir)?.records;
    anyhow::ensure!(!records.is_empty(), "the run recorded no cells");
    let opts = ReportOptions {
        title: format!("calibench portability report — {}", records[0].matrix.name),
        sources: vec![run_dir.display().to_string()],
        sign_off: false,
        baseline: None,
    };
    let html = run_dir.join("report.html");
    let markdown = run_dir.join("summary.md");
    std::fs::write(&html, render_html(&records, &opts)?)
        .with_context(|| format!("cannot write {}", html.display()))?;
    std::fs::write(&markdown, render_markdown(&records, &opts))
        .with_context(|| format!("cannot write {}", markdown.display()))?;
    let analysis = calibench::report::analyze(&records);
    Ok(RunReports {
        html,
        markdown,
        verdicts: verdicts_json_of(&records, &analysis),
        rows: analysis.verdicts,
    })
}

/// What the report's output file is, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReportFormat {
    Html,
    Markdown,
}

fn report_format(path: &Path) -> anyhow::Result<ReportFormat> {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("html" | "htm") => Ok(ReportFormat::Html),
        Some("md" | "markdown") => Ok(ReportFormat::Markdown),
        other => anyhow::bail!(
            "{}: calibench writes reports as HTML (.html) or Markdown (.md), not {}\nfix: -o report.html or -o summary.md (for CSV, JSON or JUnit: calibench export RUN -o FILE)",
            path.display(),
            other.map_or("a file without an extension".to_string(), |e| format!(".{e}"))
        ),
    }
}

pub fn report(args: &ReportArgs) -> anyhow::Result<Outcome> {
    let format = report_format(&args.output)?;
    let records = read_all(&args.runs)?;
    anyhow::ensure!(
        !records.is_empty(),
        "the runs hold no records\nfix: pass run folders made by `calibench run`"
    );
    let baseline = match &args.baseline {
        Some(b) => Some(compare_runs(
            &read_all(std::slice::from_ref(b))?,
            &records,
            args.gate.thresholds(),
        )),
        None => None,
    };
    let title = args
        .title
        .clone()
        .unwrap_or_else(|| format!("calibench portability report — {}", records[0].matrix.name));
    let opts = ReportOptions {
        title,
        sources: args.runs.iter().map(|r| r.display().to_string()).collect(),
        sign_off: args.sign_off,
        baseline: baseline.as_ref(),
    };
    let text = match format {
        ReportFormat::Markdown => render_markdown(&records, &opts),
        ReportFormat::Html => render_html(&records, &opts)?,
    };
    std::fs::write(&args.output, text)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!("wrote {} ({} cells)", args.output.display(), records.len());
    if args.json {
        let mut v = verdicts_json(&records);
        v["report"] = serde_json::json!(args.output);
        if let Some(b) = &baseline {
            v["baseline"] = serde_json::to_value(b)?;
            v["baseline_passed"] = serde_json::json!(b.passed());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(match &baseline {
        Some(b) if !b.passed() => Outcome::Failed,
        _ => Outcome::Ok,
    })
}

pub fn merge(args: &MergeArgs) -> anyhow::Result<Outcome> {
    let (records, summary) = merge_records(&args.runs, args.force)?;
    write_merged(&args.output, &records, &args.runs[0])?;
    for d in &summary.duplicates {
        eprintln!("duplicate: {d} (kept the record that finished last)");
    }
    // Cells of the matrix that no shard recorded.
    let matrix = args.output.join("matrix.toml");
    // The copy's paths are relative to the original spec, so parse without resolving them.
    let spec = std::fs::read_to_string(&matrix)
        .ok()
        .and_then(|t| calibench::matrix::Spec::parse_str(&t, &matrix).ok());
    if let Some(spec) = spec {
        let recorded: std::collections::HashSet<(String, Option<String>, String, String, usize)> =
            records
                .iter()
                .map(|r| {
                    (
                        r.cell.model.clone(),
                        r.cell.cache.clone(),
                        r.cell.precision.to_string(),
                        r.cell.backend.to_string(),
                        r.cell.batch,
                    )
                })
                .collect();
        let missing: Vec<String> = calibench::matrix::expand(&spec)
            .into_iter()
            .filter(|c| {
                !recorded.contains(&(
                    c.model.clone(),
                    c.cache.clone(),
                    c.precision.to_string(),
                    c.backend.to_string(),
                    c.batch,
                ))
            })
            .map(|c| c.key())
            .collect();
        for m in &missing {
            eprintln!("missing: {m} (no shard recorded it)");
        }
    }
    eprintln!(
        "wrote {} ({} records from {} runs)",
        args.output.display(),
        records.len(),
        args.runs.len()
    );
    println!("{}", args.output.display());
    Ok(Outcome::Ok)
}

pub fn compare(args: &CompareArgs) -> anyhow::Result<Outcome> {
    let base = read_all(std::slice::from_ref(&args.baseline))?;
    let cur = read_all(std::slice::from_ref(&args.current))?;
    let report = compare_runs(&base, &cur, args.gate.thresholds());
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["passed"] = serde_json::json!(report.passed());
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if args.markdown {
        print!("{}", report.markdown());
    } else {
        println!(
            "{:<60} {:>12} {:>12} {:>10} {:>9}  gate",
            "CELL", "BASE ms", "CUR ms", "Δ lat", "Δ top-1"
        );
        let f = |v: Option<f64>, s: &dyn Fn(f64) -> String| v.map_or("-".to_string(), s);
        for c in &report.cells {
            println!(
                "{:<60} {:>12} {:>12} {:>10} {:>9}  {}",
                c.key,
                f(c.baseline_ms, &|v| format!("{v:.4}")),
                f(c.current_ms, &|v| format!("{v:.4}")),
                f(c.latency_change_pct, &|v| format!("{v:+.1}%")),
                f(c.top1_change_points, &|v| format!("{v:+.2}")),
                if c.failures.is_empty() {
                    "ok".to_string()
                } else {
                    format!("FAIL: {}", c.failures.join("; "))
                }
            );
        }
        for k in &report.missing {
            println!("{k:<60} missing in the current run: FAIL");
        }
        use calibench::console::{paint, stdout_colour, Tone};
        let gate = if report.passed() {
            paint("gate passed", Tone::Good, stdout_colour())
        } else {
            paint("gate FAILED", Tone::Bad, stdout_colour())
        };
        println!("\n{gate}");
    }
    Ok(if report.passed() {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}
