//! `calibench report`, `merge` and `compare`: what a release manager reads and a nightly job gates on.

use std::path::PathBuf;

use anyhow::Context;
use calibench::report::{compare as compare_runs, render_html, render_markdown, ReportOptions};
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

pub fn report(args: &ReportArgs) -> anyhow::Result<Outcome> {
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
    let markdown = args.output.extension().is_some_and(|e| e == "md");
    let text = if markdown {
        render_markdown(&records, &opts)
    } else {
        render_html(&records, &opts)?
    };
    std::fs::write(&args.output, text)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!("wrote {} ({} cells)", args.output.display(), records.len());
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
    if args.markdown {
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
        println!(
            "\n{}",
            if report.passed() {
                "gate passed"
            } else {
                "gate FAILED"
            }
        );
    }
    Ok(if report.passed() {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}
