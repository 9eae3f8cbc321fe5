//! The baseline gate: a current run against a baseline run, cell by cell (matched by key),
//! failing on latency regressions and accuracy drops beyond thresholds.

use serde::Serialize;

use crate::results::export::md_cell;
use crate::results::schema::{Record, Status};

/// Gate thresholds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Thresholds {
    /// Largest allowed median-latency increase, percent.
    pub max_latency_regression_pct: f64,
    /// Largest allowed top-1 drop, points.
    pub max_top1_drop_points: f64,
    /// Largest allowed cosine-similarity drop.
    pub max_cosine_drop: f64,
}

/// One cell compared.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Cell key.
    pub key: String,
    /// Baseline median, ms.
    pub baseline_ms: Option<f64>,
    /// Current median, ms.
    pub current_ms: Option<f64>,
    /// Change, percent.
    pub latency_change_pct: Option<f64>,
    /// Top-1 change, points.
    pub top1_change_points: Option<f64>,
    /// Cosine change.
    pub cosine_change: Option<f64>,
    /// Gate failures.
    pub failures: Vec<String>,
}

/// The result of a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    /// Thresholds used.
    pub thresholds: Thresholds,
    /// Compared cells.
    pub cells: Vec<Comparison>,
    /// Keys in the baseline that the current run lacks.
    pub missing: Vec<String>,
    /// Keys only in the current run.
    pub new: Vec<String>,
}

impl BaselineReport {
    /// Whether every gate held (missing cells fail the gate: a cell that stopped running is a regression).
    pub fn passed(&self) -> bool {
        self.missing.is_empty() && self.cells.iter().all(|c| c.failures.is_empty())
    }

    /// The comparison as a Markdown section.
    pub fn markdown(&self) -> String {
        let failed = self.cells.iter().filter(|c| !c.failures.is_empty()).count();
        let mut s = format!(
            "### calibench baseline gate: {}\n\n{} cells compared, {failed} over threshold, {} missing, {} new (latency +{}% · top-1 −{} pt · cosine −{})\n\n",
            if self.passed() { "passed ✅" } else { "FAILED ❌" },
            self.cells.len(),
            self.missing.len(),
            self.new.len(),
            self.thresholds.max_latency_regression_pct,
            self.thresholds.max_top1_drop_points,
            self.thresholds.max_cosine_drop
        );
        s.push_str("| cell | baseline ms | current ms | Δ latency | Δ top-1 | gate |\n| --- | ---: | ---: | ---: | ---: | --- |\n");
        let f = |v: Option<f64>, fmt: &dyn Fn(f64) -> String| v.map_or("-".to_string(), fmt);
        for c in &self.cells {
            s.push_str(&format!(
                "| `{}` | {} | {} | {} | {} | {} |\n",
                md_cell(&c.key),
                f(c.baseline_ms, &|v| format!("{v:.3}")),
                f(c.current_ms, &|v| format!("{v:.3}")),
                f(c.latency_change_pct, &|v| format!("{v:+.1}%")),
                f(c.top1_change_points, &|v| format!("{v:+.2}")),
                if c.failures.is_empty() {
                    "ok".to_string()
                } else {
                    md_cell(&c.failures.join("; "))
                }
            ));
        }
        for k in &self.missing {
            s.push_str(&format!(
                "| `{}` | | | | | missing in the current run |\n",
                md_cell(k)
            ));
        }
        s
    }
}

fn top1(r: &Record) -> Option<f64> {
    let o = r.accuracy.as_ref()?.outputs.first()?;
    o.top1_accuracy.or(o.top1_agreement).map(|v| v * 100.0)
}

/// Compares two runs.
pub fn compare(baseline: &[Record], current: &[Record], t: Thresholds) -> BaselineReport {
    let usable = |r: &&Record| r.status != Status::Skipped;
    let mut cells = Vec::new();
    let mut missing = Vec::new();
    for b in baseline.iter().filter(usable) {
        let Some(c) = current.iter().rev().find(|c| c.key == b.key) else {
            missing.push(b.key.clone());
            continue;
        };
        let bm = b.latency.as_ref().map(|l| l.median_ms);
        let cm = c.latency.as_ref().map(|l| l.median_ms);
        let change = bm
            .zip(cm)
            .filter(|(b, _)| *b > 0.0)
            .map(|(b, c)| (c - b) / b * 100.0);
        let top1_change = top1(c).zip(top1(b)).map(|(c, b)| c - b);
        let cos = |r: &Record| {
            r.accuracy
                .as_ref()
                .and_then(|a| a.outputs.first())
                .map(|o| o.cosine)
        };
        let cosine_change = cos(c).zip(cos(b)).map(|(c, b)| c - b);
        let mut failures = Vec::new();
        if c.status == Status::Failed && b.status != Status::Failed {
            failures.push(format!(
                "cell failed: {}",
                c.error
                    .as_ref()
                    .map_or("", |e| e.message.lines().next().unwrap_or(""))
            ));
        }
        if let Some(p) = change.filter(|p| *p > t.max_latency_regression_pct) {
            failures.push(format!(
                "latency +{p:.1}% > {}%",
                t.max_latency_regression_pct
            ));
        }
        if let Some(d) = top1_change.filter(|d| -d > t.max_top1_drop_points) {
            failures.push(format!("top-1 {d:+.2} points"));
        }
        if let Some(d) = cosine_change.filter(|d| -d > t.max_cosine_drop) {
            failures.push(format!("cosine {d:+.5}"));
        }
        cells.push(Comparison {
            key: b.key.clone(),
            baseline_ms: bm,
            current_ms: cm,
            latency_change_pct: change,
            top1_change_points: top1_change,
            cosine_change,
            failures,
        });
    }
    let new = current
        .iter()
        .filter(usable)
        .filter(|c| !baseline.iter().any(|b| b.key == c.key))
        .map(|c| c.key.clone())
        .collect();
    BaselineReport {
        thresholds: t,
        cells,
        missing,
        new,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::schema::tests_support::sample;

    fn t() -> Thresholds {
        Thresholds {
            max_latency_regression_pct: 10.0,
            max_top1_drop_points: 0.5,
            max_cosine_drop: 0.001,
        }
    }

    #[test]
    fn regressions_fail_and_improvements_pass() {
        let base = vec![
            sample("a", Status::Ok),
            sample("b", Status::Ok),
            sample("gone", Status::Ok),
        ];
        let mut slow = sample("a", Status::Ok);
        slow.latency.as_mut().unwrap().median_ms *= 1.25;
        let mut fast = sample("b", Status::Ok);
        fast.latency.as_mut().unwrap().median_ms *= 0.5;
        let report = compare(&base, &[slow, fast, sample("new", Status::Ok)], t());
        assert!(!report.passed());
        assert_eq!(report.missing.len(), 1);
        assert!(report.missing[0].starts_with("gone/"));
        assert_eq!(report.new.len(), 1);
        let a = report
            .cells
            .iter()
            .find(|c| c.key.starts_with("a/"))
            .unwrap();
        assert!((a.latency_change_pct.unwrap() - 25.0).abs() < 1e-9);
        assert!(a.failures[0].contains("latency +25.0%"));
        let b = report
            .cells
            .iter()
            .find(|c| c.key.starts_with("b/"))
            .unwrap();
        assert!(b.failures.is_empty());
        let md = report.markdown();
        assert!(
            md.contains("FAILED") && md.contains("missing in the current run"),
            "{md}"
        );
    }

    #[test]
    fn identical_runs_pass() {
        let base = vec![sample("a", Status::Ok)];
        assert!(compare(&base, &base, t()).passed());
    }
}
