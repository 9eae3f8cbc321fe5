//! From records to the portability picture: one summary per cell, a verdict per
//! model × cache × target, and per model a matrix of caches × targets.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::matrix::{ExpectedStatus, Precision};
use crate::results::schema::{Record, Status};

/// What a release manager should do with a cache on a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within tolerance and not measurably degraded.
    ReuseOk,
    /// Within tolerance, but degraded or measured under noise.
    ReuseWithCaution,
    /// Some of its cells were planned but not measured (no GPU, backend absent, setup
    /// failed): nothing can be said, and nothing may be signed.
    NotMeasured,
    /// A gate failed, or the engine could not be built: calibrate on this target.
    Recalibrate,
}

impl Verdict {
    /// The words shown to people.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::ReuseOk => "reuse OK",
            Verdict::ReuseWithCaution => "reuse with caution",
            Verdict::NotMeasured => "not measured",
            Verdict::Recalibrate => "recalibrate",
        }
    }
}

/// One cell as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CellSummary {
    /// Cell key.
    pub key: String,
    /// Model id.
    pub model: String,
    /// Cache id, or "-".
    pub cache: String,
    /// Where the cache was calibrated, if known.
    pub origin: Option<String>,
    /// Target: device and backend.
    pub target: String,
    /// Precision.
    pub precision: String,
    /// Backend.
    pub backend: String,
    /// Batch size.
    pub batch: usize,
    /// ok / failed / skipped.
    pub status: String,
    /// Error or gate reason.
    pub error: Option<String>,
    /// Phase of the error.
    pub error_phase: Option<String>,
    /// Top-1 accuracy against labels (%), or top-1 agreement with the reference.
    pub top1_pct: Option<f64>,
    /// Top-1 of the reference outputs (%).
    pub reference_top1_pct: Option<f64>,
    /// Cosine similarity of the first output with its reference.
    pub cosine: Option<f64>,
    /// Max absolute error of the first output.
    pub max_abs: Option<f64>,
    /// Top-1 change against the fp32 cell of the same target and batch, in points.
    pub delta_top1_vs_fp32: Option<f64>,
    /// Top-1 change against the same precision with a cache calibrated on this target.
    pub delta_top1_vs_native: Option<f64>,
    /// Median latency, ms.
    pub median_ms: Option<f64>,
    /// criterion's mean with its confidence interval (lower, mean, upper), ms.
    pub criterion_ms: Option<(f64, f64, f64)>,
    /// End-to-end latency of GPU cells (copies + compute + sync), median and p99, ms.
    pub end_to_end_ms: Option<(f64, f64)>,
    /// Latency percentiles: min, p50, p90, p95, p99, max (ms).
    pub ladder_ms: Option<[f64; 6]>,
    /// Mean ± standard deviation, ms.
    pub mean_ms: Option<f64>,
    /// Standard deviation, ms.
    pub std_ms: Option<f64>,
    /// Samples per second.
    pub samples_per_s: Option<f64>,
    /// Median speed-up over fp16 on the same target and batch.
    pub speedup_vs_fp16: Option<f64>,
    /// Layers per precision, e.g. "int8 8".
    pub layers: String,
    /// Each layer's precision, "conv1 int8, fc2 fp16, …" (where the backend reports it).
    pub layer_list: String,
    /// How the engine was built (TensorRT 10 flags or a TensorRT 11 strongly typed network).
    pub build_path: Option<String>,
    /// Layers that ran fp32 in an int8/best cell.
    pub fp32_layers: usize,
    /// Noisy measurement, with why.
    pub noisy: Option<String>,
    /// Diagnostics of the build, each "message (fix: …)".
    pub diagnostics: Vec<String>,
    /// The `[[expect]]` outcome of this cell, "failed: reason".
    pub expected: Option<String>,
    /// The cell's verdict thresholds (its gate and the spec's caution band).
    #[serde(skip)]
    pub thresholds: crate::results::schema::VerdictThresholds,
    /// Planned but not measured (skipped, or its setup failed).
    pub not_measured: bool,
}

/// The verdict for one model × cache × target.
#[derive(Debug, Clone, Serialize)]
pub struct VerdictRow {
    /// Model id.
    pub model: String,
    /// Cache id.
    pub cache: String,
    /// Where the cache was calibrated.
    pub origin: Option<String>,
    /// Target.
    pub target: String,
    /// Verdict.
    pub verdict: Verdict,
    /// Its label.
    pub label: &'static str,
    /// Why.
    pub reasons: Vec<String>,
    /// Every failing cell failed as an `[[expect]]` table says (its reason).
    pub expected: Option<String>,
    /// Cells an `[[expect]]` table says fail, which passed (the expectation is stale).
    pub unexpected_passes: Vec<String>,
    /// The speed verdict, apart from accuracy: int8/best against fp16 on this target.
    pub speed: String,
    /// CSS class of the speed verdict: good, warn, bad or none.
    pub speed_class: &'static str,
}

/// A cell of a portability matrix.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixCell {
    /// Accuracy text, e.g. "−0.25 pt · cos 0.9993 ✓".
    pub accuracy: String,
    /// CSS class: good, warn, bad or none.
    pub accuracy_class: &'static str,
    /// Speed-up text, e.g. "1.71×".
    pub speedup: String,
    /// CSS class.
    pub speedup_class: &'static str,
    /// Whether this target is the GPU (or CPU) the cache was calibrated on.
    pub origin: bool,
    /// Against the origin target's cell of the same cache: "top-1 −0.25 pt · cos −0.0004".
    pub vs_origin: String,
    /// The worst top-1 change against fp32 (points), for the comparison.
    #[serde(skip)]
    pub worst_delta: Option<f64>,
    /// The lowest cosine similarity, for the comparison.
    #[serde(skip)]
    pub min_cosine: Option<f64>,
}

/// Whether a target label ("NVIDIA H200 (GPU-bb8f1657) · cuda", "cpu · reference") is the
/// device a cache's origin ("NVIDIA H200 (GPU-bb8f1657-2c72-…, driver …)", "cpu (…)") names.
pub fn is_origin(origin: &str, target: &str) -> bool {
    let device = target.split(" · ").next().unwrap_or(target);
    match device.find("(GPU-").or_else(|| device.find("(MIG-")) {
        Some(i) => {
            let uuid = device[i + 1..].trim_end_matches(')');
            uuid.len() >= 12 && origin.contains(uuid)
        }
        None => device == "cpu" && origin.starts_with("cpu"),
    }
}

/// Fills each row's `origin` and `vs_origin` from the origin target's cell.
fn mark_origin(targets: &[&str], row: &mut MatrixRow) {
    let Some(o) = targets.iter().position(|t| is_origin(&row.origin, t)) else {
        return;
    };
    let (d0, c0) = (row.cells[o].worst_delta, row.cells[o].min_cosine);
    for (i, c) in row.cells.iter_mut().enumerate() {
        if i == o {
            c.origin = true;
            continue;
        }
        let mut parts = Vec::new();
        if let (Some(d), Some(d0)) = (c.worst_delta, d0) {
            parts.push(format!("top-1 {:+.2} pt", d - d0));
        }
        if let (Some(cos), Some(c0)) = (c.min_cosine, c0) {
            parts.push(format!("cos {:+.4}", cos - c0));
        }
        if !parts.is_empty() {
            c.vs_origin = format!("vs origin: {}", parts.join(" · "));
        }
    }
}

/// A row of a portability matrix: one cache.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixRow {
    /// Cache id.
    pub cache: String,
    /// Where it was calibrated.
    pub origin: String,
    /// One entry per target.
    pub cells: Vec<MatrixCell>,
}

/// Per model: caches × targets.
#[derive(Debug, Clone, Serialize)]
pub struct PortabilityMatrix {
    /// Model id.
    pub model: String,
    /// Column headers.
    pub targets: Vec<String>,
    /// Rows.
    pub rows: Vec<MatrixRow>,
}

/// Everything the report derives from records.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// Every cell.
    pub cells: Vec<CellSummary>,
    /// Verdicts, worst first.
    pub verdicts: Vec<VerdictRow>,
    /// Portability matrices.
    pub matrices: Vec<PortabilityMatrix>,
}

/// A target's label: the GPU (name and UUID prefix) or device, and the backend.
pub fn target_of(r: &Record) -> String {
    let device = match &r.gpu {
        Some(g) => format!(
            "{} ({})",
            g.name,
            g.uuid.chars().take(12).collect::<String>()
        ),
        None => r.cell.device.clone(),
    };
    format!("{device} · {}", r.cell.backend)
}

fn top1(r: &Record) -> Option<f64> {
    let o = r.accuracy.as_ref()?.outputs.first()?;
    o.top1_accuracy.or(o.top1_agreement).map(|t| t * 100.0)
}

fn median(r: &Record) -> Option<f64> {
    r.latency
        .as_ref()
        .filter(|l| l.iterations > 0)
        .map(|l| l.median_ms)
}

/// Analyses records (of one run or merged runs).
pub fn analyze(records: &[Record]) -> Analysis {
    // Index cells by (model, target, batch, precision, cache).
    let ok = |r: &&Record| r.status != Status::Skipped;
    let find =
        |model: &str, target: &str, batch: usize, precision: Precision, cache: Option<&str>| {
            records.iter().filter(ok).find(|r| {
                r.cell.model == model
                    && target_of(r) == target
                    && r.cell.batch == batch
                    && r.cell.precision == precision
                    && (cache.is_none() || r.cell.cache.as_deref() == cache)
            })
        };
    let mut cells = Vec::new();
    for r in records {
        let target = target_of(r);
        let origin = r.cache.as_ref().and_then(|c| c.origin_gpu.clone());
        let fp32 = find(&r.cell.model, &target, r.cell.batch, Precision::Fp32, None);
        let fp16 = find(&r.cell.model, &target, r.cell.batch, Precision::Fp16, None);
        let gpu_name = r.gpu.as_ref().map(|g| g.name.clone());
        let native = gpu_name.as_ref().and_then(|name| {
            records.iter().filter(ok).find(|n| {
                n.cell.model == r.cell.model
                    && target_of(n) == target
                    && n.cell.batch == r.cell.batch
                    && n.cell.precision == r.cell.precision
                    && n.cache.as_ref().and_then(|c| c.origin_gpu.as_ref()) == Some(name)
                    && n.key != r.key
            })
        });
        let t = top1(r);
        let lat = r.latency.as_ref().filter(|l| l.iterations > 0);
        let acc = r.accuracy.as_ref().and_then(|a| a.outputs.first());
        let fp32_layers = if r.cell.precision.needs_cache() {
            r.engine
                .as_ref()
                .and_then(|e| e.layer_precisions.get("fp32").copied())
                .unwrap_or(0)
        } else {
            0
        };
        cells.push(CellSummary {
            key: r.key.clone(),
            model: r.cell.model.clone(),
            cache: r.cell.cache.clone().unwrap_or_else(|| "-".into()),
            origin,
            target,
            precision: r.cell.precision.to_string(),
            backend: r.cell.backend.to_string(),
            batch: r.cell.batch,
            status: r.status.to_string(),
            error: r.error.as_ref().map(|e| e.message.clone()),
            error_phase: r.error.as_ref().map(|e| e.phase.clone()),
            top1_pct: t,
            reference_top1_pct: acc
                .and_then(|o| o.reference_top1_accuracy)
                .map(|v| v * 100.0),
            cosine: acc.map(|o| o.cosine),
            max_abs: acc.map(|o| o.max_abs),
            delta_top1_vs_fp32: t.zip(fp32.and_then(top1)).map(|(a, b)| a - b),
            delta_top1_vs_native: t.zip(native.and_then(top1)).map(|(a, b)| a - b),
            median_ms: median(r),
            criterion_ms: lat
                .and_then(|l| l.estimate)
                .map(|e| (e.mean_lower_ms, e.mean_ms, e.mean_upper_ms)),
            end_to_end_ms: r
                .end_to_end
                .as_ref()
                .filter(|l| l.iterations > 0)
                .map(|l| (l.median_ms, l.p99_ms)),
            ladder_ms: lat.map(|l| {
                [
                    l.min_ms,
                    l.median_ms,
                    l.p90_ms,
                    l.p95_ms,
                    l.p99_ms,
                    l.max_ms,
                ]
            }),
            mean_ms: lat.map(|l| l.mean_ms),
            std_ms: lat.map(|l| l.std_ms),
            samples_per_s: lat.map(|l| l.samples_per_s),
            speedup_vs_fp16: median(r).zip(fp16.and_then(median)).map(|(m, f)| f / m),
            layers: r
                .engine
                .as_ref()
                .map(|e| {
                    e.layer_precisions
                        .iter()
                        .map(|(p, n)| format!("{p} {n}"))
                        .collect::<Vec<_>>()
                        .join(" · ")
                })
                .unwrap_or_default(),
            layer_list: r.engine.as_ref().map_or(String::new(), |e| {
                e.layers
                    .iter()
                    .map(|l| format!("{} {}", l.layer, l.precision))
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
            build_path: r.engine.as_ref().and_then(|e| e.build_path.clone()),
            fp32_layers,
            noisy: r
                .telemetry
                .as_ref()
                .filter(|t| t.noisy)
                .map(|t| t.noisy_because.join("; ")),
            diagnostics: r
                .diagnostics
                .iter()
                .map(|d| format!("{} (fix: {})", d.message, d.fix))
                .collect(),
            expected: r
                .expected
                .as_ref()
                .map(|e| format!("{}: {}", e.status.as_str(), e.reason)),
            thresholds: r.thresholds.unwrap_or_default(),
            not_measured: not_measured(r),
        });
    }
    let verdicts = verdicts(records, &cells);
    let matrices = matrices(&cells);
    Analysis {
        cells,
        verdicts,
        matrices,
    }
}

/// Whether a record was planned but not measured: skipped, failed before anything was built
/// (backend, GPU or data unavailable), or refused by a backend that cannot run the model
/// (`unsupported`). Such a cell says nothing about the cache.
fn not_measured(r: &Record) -> bool {
    r.status == Status::Skipped
        || (r.status == Status::Failed
            && r.error
                .as_ref()
                .is_some_and(|e| e.phase == "setup" || e.phase == "unsupported"))
}

/// The smallest and largest speed-up over fp16 of real (not simulated) cells.
fn speed_range<'a>(cells: impl Iterator<Item = &'a CellSummary>) -> Option<(f64, f64)> {
    cells
        .filter(|c| c.backend != "reference")
        .filter_map(|c| c.speedup_vs_fp16)
        .fold(None, |r, s| {
            Some(r.map_or((s, s), |(lo, hi): (f64, f64)| (lo.min(s), hi.max(s))))
        })
}

/// "1.71×" or "0.72–1.12×": the same text in verdicts and matrices.
fn speed_text(range: (f64, f64)) -> String {
    let (lo, hi) = range;
    if format!("{lo:.2}") == format!("{hi:.2}") {
        format!("{lo:.2}×")
    } else {
        format!("{lo:.2}–{hi:.2}×")
    }
}

/// The speed verdict of a cache on a target, apart from its accuracy.
fn speed_verdict(members: &[&CellSummary]) -> (String, &'static str) {
    let measured: Vec<&CellSummary> = members
        .iter()
        .copied()
        .filter(|c| !c.not_measured && c.median_ms.is_some())
        .collect();
    if !measured.is_empty() && measured.iter().all(|c| c.backend == "reference") {
        return ("n/a: CPU simulation".into(), "none");
    }
    match speed_range(measured.iter().copied()) {
        None => ("not measured".into(), "none"),
        Some(r) if r.0 >= 1.0 => (
            format!("int8/best {} fp16 speed: faster", speed_text(r)),
            if r.0 >= 1.2 { "good" } else { "warn" },
        ),
        Some(r) if r.1 >= 1.0 => (
            format!(
                "int8/best {} fp16 speed: some cells no faster than fp16",
                speed_text(r)
            ),
            "warn",
        ),
        Some(r) => (
            format!(
                "int8/best {} fp16 speed: no faster than fp16 here",
                speed_text(r)
            ),
            "bad",
        ),
    }
}

fn verdicts(records: &[Record], cells: &[CellSummary]) -> Vec<VerdictRow> {
    type Members<'a> = Vec<(&'a Record, &'a CellSummary)>;
    let mut groups: BTreeMap<(String, String, String), Members> = BTreeMap::new();
    for (r, c) in records.iter().zip(cells) {
        if r.cell.precision.needs_cache() {
            groups
                .entry((c.model.clone(), c.cache.clone(), c.target.clone()))
                .or_default()
                .push((r, c));
        }
    }
    let mut rows: Vec<VerdictRow> = groups
        .into_iter()
        .map(|((model, cache, target), members)| {
            let mut verdict = Verdict::ReuseOk;
            let mut reasons = Vec::new();
            let mut raise = |v: Verdict, why: String, reasons: &mut Vec<String>| {
                verdict = verdict.max(v);
                if !reasons.contains(&why) {
                    reasons.push(why);
                }
            };
            let mut failing = 0;
            let mut expected_failing = Vec::new();
            let mut unexpected_passes = Vec::new();
            for (r, c) in &members {
                let tag = format!("{} b{}", c.precision, c.batch);
                let first = c
                    .error
                    .as_deref()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let expected = r.expected.as_ref();
                if c.not_measured {
                    let why = match expected.filter(|e| e.status == ExpectedStatus::Skipped) {
                        Some(e) => format!("{tag}: not measured, as expected ({})", e.reason),
                        None => format!("{tag}: not measured: {first}"),
                    };
                    raise(Verdict::NotMeasured, why, &mut reasons);
                    continue;
                }
                if r.status == Status::Failed {
                    failing += 1;
                    let phase = c.error_phase.clone().unwrap_or_default();
                    let mut why = if phase == "accuracy" {
                        format!("{tag}: accuracy gate failed: {first}")
                    } else {
                        format!("{tag}: {phase} failed: {first}")
                    };
                    if let Some(e) = expected.filter(|e| e.status == ExpectedStatus::Failed) {
                        why = format!("{why} (expected: {})", e.reason);
                        expected_failing.push(e.reason.clone());
                    }
                    raise(Verdict::Recalibrate, why, &mut reasons);
                    continue;
                }
                if let Some(e) = expected {
                    unexpected_passes.push(c.key.clone());
                    reasons.push(format!(
                        "{tag}: passed, but the spec expects it to be {} ({}): update the [[expect]] table",
                        e.status.as_str(),
                        e.reason
                    ));
                }
                let t = &c.thresholds;
                if let (Some(d), Some(limit)) = (c.delta_top1_vs_fp32, t.caution_max_top1_drop) {
                    if -d > limit * 100.0 {
                        raise(
                            Verdict::ReuseWithCaution,
                            format!(
                                "{tag}: top-1 {d:+.2} points vs fp32, beyond the caution threshold of {:.2} points (gate.caution_max_top1_drop = {limit})",
                                limit * 100.0
                            ),
                            &mut reasons,
                        );
                    }
                }
                if let (Some(cos), Some(limit)) = (c.cosine, t.caution_min_cosine) {
                    if cos < limit {
                        let gate = t
                            .min_cosine
                            .map_or(String::new(), |g| format!("; its gate is {g}"));
                        raise(
                            Verdict::ReuseWithCaution,
                            format!(
                                "{tag}: cosine {cos:.5} < caution threshold {limit} (gate.caution_min_cosine{gate})"
                            ),
                            &mut reasons,
                        );
                    }
                }
                if c.fp32_layers > 0 {
                    raise(
                        Verdict::ReuseWithCaution,
                        format!(
                            "{tag}: {} layer(s) had no usable scale and ran fp32",
                            c.fp32_layers
                        ),
                        &mut reasons,
                    );
                }
                if let Some(n) = &c.noisy {
                    raise(
                        Verdict::ReuseWithCaution,
                        format!("{tag}: noisy measurement ({n})"),
                        &mut reasons,
                    );
                }
            }
            if reasons.is_empty() {
                reasons.push("within tolerance and not degraded".into());
            }
            let origin = members.first().and_then(|(_, c)| c.origin.clone());
            let cells: Vec<&CellSummary> = members.iter().map(|(_, c)| *c).collect();
            let (speed, speed_class) = speed_verdict(&cells);
            let expected = (failing > 0 && expected_failing.len() == failing).then(|| {
                // One reason per distinct `[[expect]]` entry, however many cells it covers.
                let mut reasons: Vec<String> = Vec::new();
                for r in expected_failing {
                    if !reasons.contains(&r) {
                        reasons.push(r);
                    }
                }
                reasons.join("; ")
            });
            VerdictRow {
                model,
                cache,
                origin,
                target,
                verdict,
                label: verdict.label(),
                reasons,
                expected,
                unexpected_passes,
                speed,
                speed_class,
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        b.verdict
            .cmp(&a.verdict)
            .then_with(|| (&a.model, &a.cache, &a.target).cmp(&(&b.model, &b.cache, &b.target)))
    });
    rows
}

/// Whether a release can be signed off, and what stands in the way.
#[derive(Debug, Clone, Serialize)]
pub struct SignOff {
    /// Every planned cache × target pair has all its cells measured and passing (or failing
    /// as expected), and at least one pair was judged.
    pub ready: bool,
    /// What stands in the way, one line each.
    pub blockers: Vec<String>,
}

/// The sign-off of an analysis: never "ready" when nothing was measured.
pub fn sign_off(a: &Analysis) -> SignOff {
    let mut blockers = Vec::new();
    if a.verdicts.is_empty() {
        blockers.push(
            "no int8/best cell was run: there is no cache × target pair to sign off".to_string(),
        );
    }
    for v in &a.verdicts {
        let pair = format!("{} · {} on {}", v.model, v.cache, v.target);
        match v.verdict {
            Verdict::NotMeasured => blockers.push(format!("{pair}: not measured")),
            Verdict::Recalibrate if v.expected.is_none() => {
                blockers.push(format!("{pair}: recalibrate"))
            }
            _ => {}
        }
        for key in &v.unexpected_passes {
            blockers.push(format!("{key}: passed although the spec expects otherwise"));
        }
    }
    let unmeasured: Vec<&str> = a
        .cells
        .iter()
        .filter(|c| c.not_measured && c.cache == "-")
        .map(|c| c.key.as_str())
        .collect();
    if !unmeasured.is_empty() {
        blockers.push(format!(
            "{} fp32/fp16 cell(s) not measured: {}",
            unmeasured.len(),
            unmeasured.join(", ")
        ));
    }
    let failed: Vec<&str> = a
        .cells
        .iter()
        .filter(|c| c.cache == "-" && c.status == "failed" && !c.not_measured)
        .filter(|c| {
            !c.expected
                .as_deref()
                .is_some_and(|e| e.starts_with("failed"))
        })
        .map(|c| c.key.as_str())
        .collect();
    if !failed.is_empty() {
        blockers.push(format!(
            "{} fp32/fp16 cell(s) failed: {}",
            failed.len(),
            failed.join(", ")
        ));
    }
    SignOff {
        ready: blockers.is_empty(),
        blockers,
    }
}

fn matrices(cells: &[CellSummary]) -> Vec<PortabilityMatrix> {
    let models: BTreeSet<&str> = cells.iter().map(|c| c.model.as_str()).collect();
    let mut out = Vec::new();
    for model in models {
        // Targets whose cells were all skipped stay as columns: a GPU that did not run is
        // shown as "not measured", never dropped.
        let quantized: Vec<&CellSummary> = cells
            .iter()
            .filter(|c| c.model == model && c.cache != "-")
            .collect();
        if quantized.is_empty() {
            continue;
        }
        let targets: BTreeSet<&str> = quantized.iter().map(|c| c.target.as_str()).collect();
        let caches: BTreeSet<&str> = quantized.iter().map(|c| c.cache.as_str()).collect();
        let rows = caches
            .into_iter()
            .map(|cache| {
                let origin = quantized
                    .iter()
                    .find(|c| c.cache == cache)
                    .and_then(|c| c.origin.clone())
                    .unwrap_or_else(|| "origin unknown".into());
                let cells = targets
                    .iter()
                    .map(|t| {
                        let mine: Vec<&CellSummary> = quantized
                            .iter()
                            .copied()
                            .filter(|c| c.cache == cache && c.target == *t)
                            .collect();
                        matrix_cell(&mine)
                    })
                    .collect();
                let mut row = MatrixRow {
                    cache: cache.to_string(),
                    origin,
                    cells,
                };
                mark_origin(&targets.iter().copied().collect::<Vec<_>>(), &mut row);
                row
            })
            .collect();
        out.push(PortabilityMatrix {
            model: model.to_string(),
            targets: targets.into_iter().map(str::to_string).collect(),
            rows,
        });
    }
    out
}

/// The worst of a cache's int8/best cells on one target.
fn matrix_cell(all: &[&CellSummary]) -> MatrixCell {
    let cells: Vec<&CellSummary> = all.iter().copied().filter(|c| !c.not_measured).collect();
    if cells.is_empty() {
        return MatrixCell {
            accuracy: if all.is_empty() {
                "not run"
            } else {
                "not measured"
            }
            .into(),
            accuracy_class: "none",
            speedup: "-".into(),
            speedup_class: "none",
            origin: false,
            vs_origin: String::new(),
            worst_delta: None,
            min_cosine: None,
        };
    }
    let failed = cells.iter().any(|c| c.status == "failed");
    let partly = cells.len() < all.len();
    let worst_delta = cells
        .iter()
        .filter_map(|c| c.delta_top1_vs_fp32)
        .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.min(d))));
    let min_cos = cells
        .iter()
        .filter_map(|c| c.cosine)
        .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.min(d))));
    let mut accuracy = match worst_delta {
        Some(d) => format!("{d:+.2} pt"),
        None => String::new(),
    };
    if let Some(c) = min_cos {
        accuracy.push_str(&format!(
            "{}cos {c:.4}",
            if accuracy.is_empty() { "" } else { " · " }
        ));
    }
    accuracy.push_str(if failed { " ✗" } else { " ✓" });
    if partly {
        accuracy.push_str(" (partly measured)");
    }
    let caution = |c: &&CellSummary| {
        let t = &c.thresholds;
        t.caution_min_cosine
            .zip(c.cosine)
            .is_some_and(|(limit, cos)| cos < limit)
            || t.caution_max_top1_drop
                .zip(c.delta_top1_vs_fp32)
                .is_some_and(|(limit, d)| -d > limit * 100.0)
    };
    let accuracy_class = if failed {
        "bad"
    } else if partly || cells.iter().any(caution) {
        "warn"
    } else {
        "good"
    };
    let (speedup, speedup_class) = if cells.iter().all(|c| c.backend == "reference") {
        ("n/a: CPU simulation".into(), "none")
    } else {
        match speed_range(cells.iter().copied()) {
            Some(r) if r.0 >= 1.2 => (speed_text(r), "good"),
            Some(r) if r.0 >= 1.0 => (speed_text(r), "warn"),
            Some(r) => (speed_text(r), "bad"),
            None => ("-".into(), "none"),
        }
    };
    MatrixCell {
        accuracy: accuracy.trim().to_string(),
        accuracy_class,
        speedup,
        speedup_class,
        origin: false,
        vs_origin: String::new(),
        worst_delta,
        min_cosine: min_cos,
    }
}

#[cfg(test)]
mod tests {
    use super::is_origin;

    #[test]
    fn the_origin_column_is_found_by_uuid_or_cpu() {
        let h200 = "NVIDIA H200 (GPU-bb8f1657-2c72-57ce-c98b-0da4990715b9, driver 580.159.04)";
        assert!(is_origin(h200, "NVIDIA H200 (GPU-bb8f1657) · cuda"));
        assert!(!is_origin(h200, "NVIDIA H200 (GPU-0c1d2e3f) · cuda"));
        assert!(!is_origin(h200, "cpu · reference"));
        assert!(is_origin("cpu (reference backend)", "cpu · reference"));
        assert!(!is_origin(
            "cpu (reference backend)",
            "NVIDIA L4 (GPU-bb8f1657) · cuda"
        ));
        assert!(!is_origin("origin unknown", "cpu · reference"));
    }
}
