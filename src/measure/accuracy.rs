//! Accuracy of engine outputs against reference outputs, with Polygraphy's meaning of
//! tolerances so results compare with `polygraphy run --atol/--rtol` logs.
//!
//! absdiff = |a − b|; reldiff = absdiff / |b| (b the reference; a tiny epsilon where b is 0).
//! Elementwise: an element fails only if absdiff > atol AND reldiff > rtol; NaN fails. With a
//! statistic (max, mean, median, a quantile), the statistic of absdiff and of reldiff are
//! compared instead. Cosine similarity and top-1 drop gates come on top.

use serde::{Deserialize, Serialize};

use crate::measure::latency::percentile;
use crate::model::Tensor;

/// Denominator used for reldiff where the reference is exactly 0.
pub const REL_EPSILON: f64 = 1e-12;

/// How absdiff and reldiff are reduced before comparing with atol/rtol
/// (Polygraphy's `--check-error-stat`). Written as `elementwise`, `max`, `mean`, `median` or
/// `quantile=0.99`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum CheckStat {
    /// Every element on its own.
    Elementwise,
    /// The largest error.
    Max,
    /// The mean error.
    Mean,
    /// The median error.
    Median,
    /// A quantile (0..1) of the errors.
    Quantile(f64),
}

impl std::str::FromStr for CheckStat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "elementwise" | "elemwise" => CheckStat::Elementwise,
            "max" => CheckStat::Max,
            "mean" => CheckStat::Mean,
            "median" => CheckStat::Median,
            q => {
                let v = q
                    .strip_prefix("quantile=")
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|v| (0.0..=1.0).contains(v))
                    .ok_or_else(|| format!("check {q:?} is not one of elementwise, max, mean, median, quantile=Q (0 <= Q <= 1)"))?;
                CheckStat::Quantile(v)
            }
        })
    }
}

impl From<CheckStat> for String {
    fn from(c: CheckStat) -> String {
        c.to_string()
    }
}

impl TryFrom<String> for CheckStat {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::fmt::Display for CheckStat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckStat::Elementwise => f.write_str("elementwise"),
            CheckStat::Max => f.write_str("max"),
            CheckStat::Mean => f.write_str("mean"),
            CheckStat::Median => f.write_str("median"),
            CheckStat::Quantile(q) => write!(f, "quantile={q}"),
        }
    }
}

/// The tolerances one output is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// How errors are reduced.
    pub check: CheckStat,
    /// Minimum cosine similarity, if gated.
    pub min_cosine: Option<f64>,
    /// Maximum drop in top-1 accuracy (fraction, 0.01 = one point), if gated.
    pub max_top1_drop: Option<f64>,
}

impl Default for Tolerance {
    /// Polygraphy's defaults: atol = rtol = 1e-5, elementwise.
    fn default() -> Self {
        Tolerance {
            atol: 1e-5,
            rtol: 1e-5,
            check: CheckStat::Elementwise,
            min_cosine: None,
            max_top1_drop: None,
        }
    }
}

/// Metrics of one output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputMetrics {
    /// Output name.
    pub name: String,
    /// Elements compared.
    pub elements: usize,
    /// Largest absdiff.
    pub max_abs: f64,
    /// Mean absdiff.
    pub mean_abs: f64,
    /// Largest reldiff.
    pub max_rel: f64,
    /// ‖a − b‖ / ‖b‖.
    pub rel_l2: f64,
    /// Cosine similarity of a and b.
    pub cosine: f64,
    /// 10·log10(‖b‖² / ‖a − b‖²); `None` when a equals b exactly (infinite).
    pub snr_db: Option<f64>,
    /// NaNs in the engine's output.
    pub nan: usize,
    /// Infinities in the engine's output.
    pub inf: usize,
    /// Share of samples whose arg-max equals the reference's (outputs shaped [N, classes]).
    pub top1_agreement: Option<f64>,
    /// Top-1 accuracy against labels, when labels are given.
    pub top1_accuracy: Option<f64>,
    /// The reference's top-1 accuracy against the same labels.
    pub reference_top1_accuracy: Option<f64>,
    /// Elements failing the atol/rtol test (elementwise), or 0/1 for a statistic.
    pub failed_elements: usize,
    /// Smallest atol that would have passed with the rtol given.
    pub min_passing_atol: f64,
    /// Smallest rtol that would have passed with the atol given.
    pub min_passing_rtol: f64,
    /// Tolerances used.
    pub tolerance: Tolerance,
    /// Whether every gate held.
    pub passed: bool,
    /// Why not.
    pub reason: Option<String>,
}

fn stat(sorted: &[f64], s: CheckStat) -> f64 {
    match s {
        CheckStat::Elementwise | CheckStat::Max => sorted.last().copied().unwrap_or(0.0),
        CheckStat::Mean => sorted.iter().sum::<f64>() / sorted.len().max(1) as f64,
        CheckStat::Median => percentile(sorted, 50.0),
        CheckStat::Quantile(q) => percentile(sorted, q * 100.0),
    }
}

fn argmax_rows(t: &[f32], classes: usize) -> Vec<usize> {
    t.chunks(classes)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv {
                        (i, v)
                    } else {
                        (bi, bv)
                    }
                })
                .0
        })
        .collect()
}

/// Compares one output with its reference.
pub fn compare(
    name: &str,
    actual: &Tensor,
    reference: &Tensor,
    labels: Option<&[i64]>,
    tol: &Tolerance,
) -> OutputMetrics {
    let mut m = OutputMetrics {
        name: name.to_string(),
        tolerance: *tol,
        ..Default::default()
    };
    if actual.shape != reference.shape {
        m.reason = Some(format!(
            "output shape {:?} differs from the reference's {:?}",
            actual.shape, reference.shape
        ));
        return m;
    }
    let n = actual.data.len();
    m.elements = n;
    let mut abs = Vec::with_capacity(n);
    let mut rel = Vec::with_capacity(n);
    let (mut dot, mut aa, mut bb, mut err2) = (0f64, 0f64, 0f64, 0f64);
    let mut failed = 0usize;
    let mut need_atol = 0f64;
    let mut need_rtol = 0f64;
    for (&a, &b) in actual.data.iter().zip(&reference.data) {
        let (a, b) = (f64::from(a), f64::from(b));
        if a.is_nan() {
            m.nan += 1;
        } else if a.is_infinite() {
            m.inf += 1;
        }
        let d = (a - b).abs();
        let r = d / if b == 0.0 { REL_EPSILON } else { b.abs() };
        let (d, r) = if d.is_nan() {
            (f64::INFINITY, f64::INFINITY)
        } else {
            (d, r)
        };
        if d > tol.atol && r > tol.rtol {
            failed += 1;
        }
        if r > tol.rtol {
            need_atol = need_atol.max(d);
        }
        if d > tol.atol {
            need_rtol = need_rtol.max(r);
        }
        abs.push(d);
        rel.push(r);
        dot += a * b;
        aa += a * a;
        bb += b * b;
        err2 += (a - b) * (a - b);
    }
    abs.sort_by(f64::total_cmp);
    rel.sort_by(f64::total_cmp);
    m.max_abs = abs.last().copied().unwrap_or(0.0);
    m.mean_abs = stat(&abs, CheckStat::Mean);
    m.max_rel = rel.last().copied().unwrap_or(0.0);
    m.rel_l2 = if bb > 0.0 {
        (err2 / bb).sqrt()
    } else if err2 == 0.0 {
        0.0
    } else {
        f64::INFINITY
    };
    m.cosine = if aa > 0.0 && bb > 0.0 {
        (dot / (aa * bb).sqrt()).clamp(-1.0, 1.0)
    } else if aa == bb {
        1.0
    } else {
        0.0
    };
    m.snr_db = (err2 > 0.0).then(|| 10.0 * (bb / err2).log10());
    let tolerance_ok = if tol.check == CheckStat::Elementwise {
        m.failed_elements = failed;
        m.min_passing_atol = need_atol;
        m.min_passing_rtol = need_rtol;
        failed == 0
    } else {
        let (sa, sr) = (stat(&abs, tol.check), stat(&rel, tol.check));
        let fails = sa > tol.atol && sr > tol.rtol;
        m.failed_elements = fails as usize;
        m.min_passing_atol = if sr > tol.rtol { sa } else { 0.0 };
        m.min_passing_rtol = if sa > tol.atol { sr } else { 0.0 };
        !fails
    };
    if let [rows, classes] = actual.shape[..] {
        if classes > 1 && rows > 0 {
            let pa = argmax_rows(&actual.data, classes);
            let pb = argmax_rows(&reference.data, classes);
            m.top1_agreement =
                Some(pa.iter().zip(&pb).filter(|(x, y)| x == y).count() as f64 / rows as f64);
            if let Some(labels) = labels.filter(|l| l.len() == rows) {
                let acc = |p: &[usize]| {
                    p.iter()
                        .zip(labels)
                        .filter(|(x, y)| **x as i64 == **y)
                        .count() as f64
                        / rows as f64
                };
                m.top1_accuracy = Some(acc(&pa));
                m.reference_top1_accuracy = Some(acc(&pb));
            }
        }
    }
    let mut reasons = Vec::new();
    if m.nan + m.inf > 0 {
        reasons.push(format!(
            "{} NaN and {} Inf values in the output",
            m.nan, m.inf
        ));
    }
    if !tolerance_ok {
        reasons.push(match tol.check {
            CheckStat::Elementwise => format!(
                "{failed} of {n} elements exceed atol={} and rtol={} (max absdiff {:.3e}, max reldiff {:.3e}; would pass with atol={:.3e} or rtol={:.3e})",
                tol.atol, tol.rtol, m.max_abs, m.max_rel, m.min_passing_atol, m.min_passing_rtol
            ),
            s => format!(
                "{s} absdiff {:.3e} > atol={} and {s} reldiff {:.3e} > rtol={} (would pass with atol={:.3e} or rtol={:.3e})",
                stat(&abs, s), tol.atol, stat(&rel, s), tol.rtol, m.min_passing_atol, m.min_passing_rtol
            ),
        });
    }
    if let Some(min) = tol.min_cosine {
        if m.cosine.is_nan() || m.cosine < min {
            reasons.push(format!("cosine similarity {:.6} < {min}", m.cosine));
        }
    }
    if let Some(max) = tol.max_top1_drop {
        let drop = match (m.top1_accuracy, m.reference_top1_accuracy, m.top1_agreement) {
            (Some(a), Some(r), _) => Some(r - a),
            (_, _, Some(agree)) => Some(1.0 - agree),
            _ => None,
        };
        if let Some(d) = drop.filter(|d| *d > max) {
            reasons.push(format!(
                "top-1 drop {:.2} points > {:.2}",
                d * 100.0,
                max * 100.0
            ));
        }
    }
    m.passed = reasons.is_empty();
    m.reason = (!reasons.is_empty()).then(|| reasons.join("; "));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(data: &[f32]) -> Tensor {
        Tensor::new(vec![data.len()], data.to_vec()).unwrap()
    }

    fn tol(atol: f64, rtol: f64, check: CheckStat) -> Tolerance {
        Tolerance {
            atol,
            rtol,
            check,
            min_cosine: None,
            max_top1_drop: None,
        }
    }

    #[test]
    fn polygraphy_elementwise_semantics() {
        // |a-b| = [0.1, 0.5], |b| = [10, 0.5] → reldiff = [0.01, 1.0]
        let (a, b) = (t(&[10.1, 1.0]), t(&[10.0, 0.5]));
        // Element 0 passes on rtol (0.01 <= 0.05) although absdiff 0.1 > atol; element 1 fails both.
        let m = compare("y", &a, &b, None, &tol(0.2, 0.05, CheckStat::Elementwise));
        assert!(!m.passed);
        assert_eq!(m.failed_elements, 1);
        assert!(
            (m.min_passing_atol - 0.5).abs() < 1e-6,
            "{}",
            m.min_passing_atol
        );
        assert!(
            (m.min_passing_rtol - 1.0).abs() < 1e-6,
            "{}",
            m.min_passing_rtol
        );
        // Passing with the smallest atol reported.
        let m2 = compare(
            "y",
            &a,
            &b,
            None,
            &tol(m.min_passing_atol, 0.05, CheckStat::Elementwise),
        );
        assert!(m2.passed, "{:?}", m2.reason);
        assert!(m.reason.unwrap().contains("1 of 2 elements"));
    }

    #[test]
    fn statistics_and_nan() {
        let (a, b) = (t(&[1.0, 2.0, 3.0, 7.0]), t(&[1.0, 2.0, 3.0, 4.0]));
        assert!(!compare("y", &a, &b, None, &tol(1.0, 0.1, CheckStat::Max)).passed);
        assert!(
            compare("y", &a, &b, None, &tol(1.0, 0.1, CheckStat::Mean)).passed,
            "mean absdiff 0.75"
        );
        assert!(
            compare("y", &a, &b, None, &tol(0.0, 0.0, CheckStat::Median)).passed,
            "median absdiff 0"
        );
        assert!(!compare("y", &a, &b, None, &tol(1.0, 0.1, CheckStat::Quantile(0.99))).passed);
        let m = compare(
            "y",
            &t(&[f32::NAN, 1.0]),
            &t(&[1.0, 1.0]),
            None,
            &tol(10.0, 10.0, CheckStat::Elementwise),
        );
        assert!(!m.passed && m.nan == 1);
    }

    #[test]
    fn zero_reference_uses_epsilon() {
        let m = compare(
            "y",
            &t(&[1e-6]),
            &t(&[0.0]),
            None,
            &tol(0.0, 1.0, CheckStat::Elementwise),
        );
        assert!(
            !m.passed,
            "reldiff with a zero reference is huge, so atol decides"
        );
        assert!(
            compare(
                "y",
                &t(&[1e-6]),
                &t(&[0.0]),
                None,
                &tol(1e-5, 0.0, CheckStat::Elementwise)
            )
            .passed
        );
    }

    #[test]
    fn metrics_and_top1() {
        let reference = Tensor::new(vec![2, 3], vec![0.0, 1.0, 0.0, 1.0, 0.0, 0.0]).unwrap();
        let actual = Tensor::new(vec![2, 3], vec![0.0, 1.0, 0.0, 0.0, 1.0, 0.0]).unwrap();
        let mut tl = tol(0.5, 0.5, CheckStat::Elementwise);
        tl.max_top1_drop = Some(0.1);
        tl.min_cosine = Some(0.9);
        let m = compare("logits", &actual, &reference, Some(&[1, 0]), &tl);
        assert_eq!(m.top1_agreement, Some(0.5));
        assert_eq!(m.top1_accuracy, Some(0.5));
        assert_eq!(m.reference_top1_accuracy, Some(1.0));
        assert!((m.cosine - 0.5).abs() < 1e-12);
        assert!((m.rel_l2 - 1.0).abs() < 1e-12);
        assert!((m.snr_db.unwrap() - 0.0).abs() < 1e-12);
        let reason = m.reason.unwrap();
        assert!(
            reason.contains("top-1 drop 50.00 points") && reason.contains("cosine"),
            "{reason}"
        );
        let same = compare("logits", &reference, &reference, None, &tl);
        assert!(same.passed && same.snr_db.is_none() && same.cosine == 1.0);
    }

    #[test]
    fn shape_mismatch_fails() {
        let m = compare(
            "y",
            &t(&[1.0]),
            &t(&[1.0, 2.0]),
            None,
            &Tolerance::default(),
        );
        assert!(!m.passed && m.reason.unwrap().contains("shape"));
    }

    #[test]
    fn check_stat_parsing() {
        assert_eq!(
            "quantile=0.99".parse::<CheckStat>().unwrap(),
            CheckStat::Quantile(0.99)
        );
        assert_eq!(
            "elemwise".parse::<CheckStat>().unwrap(),
            CheckStat::Elementwise
        );
        assert!("quantile=2".parse::<CheckStat>().is_err());
        assert_eq!(CheckStat::Quantile(0.5).to_string(), "quantile=0.5");
    }
}
