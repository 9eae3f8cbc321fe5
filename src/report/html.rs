//! The HTML report (tera, one self-contained file: inline styles and SVG, no network) and its
//! Markdown summary. Every string from records (model ids, tensor names, log lines, GPU names)
//! is escaped by tera's HTML autoescaping.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use super::baseline::BaselineReport;
use super::charts;
use super::portability::{analyze, sign_off, Analysis, CellSummary, Verdict};
use crate::results::export::md_cell;
use crate::results::schema::{Record, Status};

/// The template, compiled into the binary (edit `templates/report.html`).
const TEMPLATE: &str = include_str!("../../templates/report.html");

/// What to render.
#[derive(Debug, Clone)]
pub struct ReportOptions<'a> {
    /// Title shown on top.
    pub title: String,
    /// Where the records came from (run folders).
    pub sources: Vec<String>,
    /// Add the release sign-off summary.
    pub sign_off: bool,
    /// A baseline comparison to include.
    pub baseline: Option<&'a BaselineReport>,
}

/// An HTML id from any text: lowercase letters, digits, `-` and `_`; the rest become `-`.
pub fn slug(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

fn cell_anchor(key: &str) -> String {
    format!("cell-{}", slug(key))
}

fn verdict_anchor(model: &str, cache: &str, target: &str) -> String {
    format!("v-{}", slug(&format!("{model}/{cache}/{target}")))
}

/// Telemetry over a GPU cell's measurement, as one line: median (min–max) of each quantity.
fn telemetry_text(t: &crate::results::schema::Telemetry) -> String {
    let stat = |label: &str, s: Option<crate::results::schema::Stat>, unit: &str| {
        s.map(|s| format!("{label} {:.0}{unit} ({:.0}–{:.0})", s.median, s.min, s.max))
    };
    let mut parts: Vec<String> = [
        stat("SM clock", t.sm_clock_mhz, " MHz"),
        stat("memory clock", t.mem_clock_mhz, " MHz"),
        stat("power", t.power_w, " W"),
        stat("temperature", t.temperature_c, " °C"),
        stat("utilization", t.utilization_pct, " %"),
    ]
    .into_iter()
    .flatten()
    .collect();
    parts.push(if t.reasons.is_empty() {
        "no clock-event (throttle) reasons".to_string()
    } else {
        format!("clock-event reasons: {}", t.reasons.join(", "))
    });
    format!(
        "{} samples every {:.0} ms: {}",
        t.samples,
        t.period_ms,
        parts.join(" · ")
    )
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn cell_view(c: &CellSummary, by_key: &BTreeMap<&str, &Record>) -> serde_json::Value {
    let telemetry = by_key
        .get(c.key.as_str())
        .and_then(|r| r.telemetry.as_ref())
        .map(telemetry_text)
        .unwrap_or_default();
    json!({
        "anchor": cell_anchor(&c.key),
        "verdict_anchor": if c.cache == "-" { String::new() } else { verdict_anchor(&c.model, &c.cache, &c.target) },
        "telemetry": telemetry,
        "key": c.key, "model": c.model, "cache": c.cache, "origin": c.origin.clone().unwrap_or_default(),
        "target": c.target, "precision": c.precision, "batch": c.batch, "status": c.status,
        "error": c.error.clone().unwrap_or_default(), "error_phase": c.error_phase.clone().unwrap_or_default(),
        "top1": c.top1_pct.map_or("–".into(), |v| format!("{v:.2}%")),
        "delta_fp32": c.delta_top1_vs_fp32.map_or("–".into(), |v| format!("{v:+.2}")),
        "delta_native": c.delta_top1_vs_native.map_or("–".into(), |v| format!("{v:+.2}")),
        "cosine": num(c.cosine, 5), "max_abs": c.max_abs.map_or("–".into(), |v| format!("{v:.3e}")),
        "median": num(c.median_ms, 4),
        "end_to_end": c.end_to_end_ms.map_or("–".into(), |(m, p)| format!("{m:.4} / {p:.4}")),
        "ladder": c.ladder_ms.map_or("–".into(), |l| l.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>().join(" / ")),
        "criterion": c.criterion_ms.map_or(String::new(), |(lo, m, hi)| format!("criterion {m:.4} [{lo:.4}, {hi:.4}]")),
        "mean_std": c.mean_ms.zip(c.std_ms).map_or("–".into(), |(m, s)| format!("{m:.4} ± {s:.4}")),
        "throughput": num(c.samples_per_s, 0),
        "speedup": c.speedup_vs_fp16.map_or("–".into(), |v| format!("{v:.2}×")),
        "layers": c.layers, "layer_list": c.layer_list, "build_path": c.build_path.clone().unwrap_or_default(), "noisy": c.noisy.clone().unwrap_or_default(),
        "diagnostics": c.diagnostics,
    })
}

/// Environment facts gathered from the records.
fn environment(records: &[Record]) -> serde_json::Value {
    let mut gpus: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for r in records {
        if let Some(g) = &r.gpu {
            gpus.entry(g.uuid.clone()).or_insert_with(|| {
                json!({
                    "name": g.name, "uuid": g.uuid, "index": g.index,
                    "compute": g.compute_capability.clone().unwrap_or_default(),
                    "architecture": g.architecture.clone().unwrap_or_default(),
                    "memory": g.memory_total_mib.map_or(String::new(), |m| format!("{m} MiB")),
                    "vbios": g.vbios.clone().unwrap_or_default(),
                    "clocks": format!("SM {} / mem {} MHz", g.max_sm_clock_mhz.map_or("?".into(), |v| v.to_string()), g.max_mem_clock_mhz.map_or("?".into(), |v| v.to_string())),
                    "power": g.power_limit_w.map_or(String::new(), |p| format!("{p:.0} W")),
                    "host": r.environment.hostname,
                })
            });
        }
    }
    let set = |f: &dyn Fn(&Record) -> Option<String>| {
        let mut v: Vec<String> = records.iter().filter_map(f).collect();
        v.sort();
        v.dedup();
        if v.is_empty() {
            "–".to_string()
        } else {
            v.join(", ")
        }
    };
    json!({
        "gpus": gpus.into_values().collect::<Vec<_>>(),
        "hosts": set(&|r| Some(format!("{} ({}, {})", r.environment.hostname, r.environment.os, r.environment.cpu))),
        "drivers": set(&|r| r.environment.driver.clone()),
        "cuda": set(&|r| r.environment.cuda_driver.clone()),
        "tensorrt": "not used by these records",
        "calibench": set(&|r| Some(format!("{} ({})", r.calibench.version, r.calibench.git_commit))),
        "cargo_lock": set(&|r| r.environment.cargo_lock_sha256.clone()),
        "flake_lock": set(&|r| r.environment.flake_lock_sha256.clone()),
        "matrices": set(&|r| Some(format!("{} sha256 {}", r.matrix.name, r.matrix.sha256))),
        "runs": set(&|r| Some(r.run_id.clone())),
    })
}

pub(crate) fn count(records: &[Record], s: Status) -> usize {
    records.iter().filter(|r| r.status == s).count()
}

/// Renders the HTML report.
pub fn render_html(records: &[Record], opts: &ReportOptions<'_>) -> anyhow::Result<String> {
    let analysis = analyze(records);
    let mut tera = tera::Tera::default();
    tera.add_raw_template("report.html", TEMPLATE)?;
    let mut ctx = tera::Context::new();
    ctx.insert("title", &opts.title);
    ctx.insert(
        "generated",
        &chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
    );
    ctx.insert("sources", &opts.sources);
    ctx.insert("total", &records.len());
    ctx.insert("ok", &count(records, Status::Ok));
    ctx.insert("failed", &count(records, Status::Failed));
    ctx.insert("skipped", &count(records, Status::Skipped));
    let verdicts: Vec<serde_json::Value> = analysis
        .verdicts
        .iter()
        .map(|v| {
            let cells: Vec<serde_json::Value> = analysis
                .cells
                .iter()
                .filter(|c| c.model == v.model && c.cache == v.cache && c.target == v.target)
                .map(|c| json!({ "anchor": cell_anchor(&c.key), "label": format!("{} b{}", c.precision, c.batch), "status": c.status }))
                .collect();
            let mut row = serde_json::to_value(v).unwrap_or_default();
            row["anchor"] = json!(verdict_anchor(&v.model, &v.cache, &v.target));
            row["cache_anchor"] = json!(super::caches::anchor(&v.model));
            row["cells"] = json!(cells);
            row
        })
        .collect();
    ctx.insert("verdicts", &verdicts);
    ctx.insert("cache_sections", &super::caches::cache_sections(records));
    ctx.insert(
        "layer_comparisons",
        &super::layers::layer_comparisons(records),
    );
    ctx.insert("verdict_counts", &verdict_counts(&analysis));
    ctx.insert("matrices", &analysis.matrices);
    ctx.insert("cells", &{
        let by_key: BTreeMap<&str, &Record> = records.iter().map(|r| (r.key.as_str(), r)).collect();
        analysis
            .cells
            .iter()
            .map(|c| cell_view(c, &by_key))
            .collect::<Vec<_>>()
    });
    ctx.insert(
        "chart_latency",
        &charts::latency_by_precision(&analysis.cells),
    );
    ctx.insert(
        "chart_scatter",
        &charts::accuracy_vs_speedup(&analysis.cells),
    );
    ctx.insert("chart_cdfs", &charts::latency_cdfs(&analysis.cells));
    ctx.insert(
        "chart_throughput",
        &charts::throughput_by_batch(&analysis.cells),
    );
    ctx.insert("environment", &environment(records));
    ctx.insert("sign_off", &opts.sign_off);
    ctx.insert("signoff", &sign_off(&analysis));
    ctx.insert(
        "baseline",
        &opts
            .baseline
            .map(|b| json!({ "passed": b.passed(), "report": b })),
    );
    Ok(tera.render("report.html", &ctx)?)
}

#[derive(Serialize)]
pub(crate) struct VerdictCounts {
    ok: usize,
    caution: usize,
    not_measured: usize,
    recalibrate: usize,
}

pub(crate) fn verdict_counts(a: &Analysis) -> VerdictCounts {
    let n = |v: Verdict| a.verdicts.iter().filter(|r| r.verdict == v).count();
    VerdictCounts {
        ok: n(Verdict::ReuseOk),
        caution: n(Verdict::ReuseWithCaution),
        not_measured: n(Verdict::NotMeasured),
        recalibrate: n(Verdict::Recalibrate),
    }
}

/// The report's verdicts as Markdown (for `$GITHUB_STEP_SUMMARY`).
pub fn render_markdown(records: &[Record], opts: &ReportOptions<'_>) -> String {
    let a = analyze(records);
    let c = verdict_counts(&a);
    let mut s = format!(
        "## {}\n\n{} cells: {} ok, {} failed, {} skipped. Verdicts: **{} reuse OK**, **{} with caution**, **{} not measured**, **{} recalibrate**.\n\n",
        md_cell(&opts.title),
        records.len(),
        count(records, Status::Ok),
        count(records, Status::Failed),
        count(records, Status::Skipped),
        c.ok,
        c.caution,
        c.not_measured,
        c.recalibrate
    );
    if opts.sign_off {
        let so = sign_off(&a);
        if so.ready {
            s.push_str("**Ready to sign:** every planned cache × target pair was measured and passed (or failed as expected).\n\n");
        } else {
            s.push_str("**Not ready to sign:**\n\n");
            for b in &so.blockers {
                s.push_str(&format!("- {}\n", md_cell(b)));
            }
            s.push('\n');
        }
    }
    s.push_str(
        "| model | cache (origin) | target | verdict | speed | why |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for v in &a.verdicts {
        let label = match &v.expected {
            Some(_) => format!("{} (expected)", v.label),
            None => v.label.to_string(),
        };
        s.push_str(&format!(
            "| {} | {} ({}) | {} | **{}** | {} | {} |\n",
            md_cell(&v.model),
            md_cell(&v.cache),
            md_cell(v.origin.as_deref().unwrap_or("origin unknown")),
            md_cell(&v.target),
            label,
            md_cell(&v.speed),
            md_cell(&v.reasons.join("; "))
        ));
    }
    if let Some(b) = opts.baseline {
        s.push('\n');
        s.push_str(&b.markdown());
    }
    s
}
