//! What makes a run pass: the `[gate]` table (skipped cells, the verdicts' caution band) and
//! `[[expect]]` tables (known failures, as pytest's xfail).
//!
//! ```toml
//! [gate]
//! allow_skipped = false        # a planned cell that was not measured fails the run
//! caution_min_cosine = 0.999   # "reuse with caution" below this (default: the gate itself)
//! caution_max_top1_drop = 0.0025   # fraction, like max_top1_drop (default: no caution band)
//!
//! [[expect]]
//! only = "cache=entropy,precision=int8"   # the same syntax as --only
//! status = "failed"
//! reason = "calibrated on the wrong data set"
//! ```

use serde::{Deserialize, Serialize};

use super::expand::{Cell, Filter};
use super::spec::SpecProblem;

/// The `[gate]` table.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    /// Whether planned cells that could not be measured (no GPU, backend absent) may leave the
    /// run passing. Default: they fail it, so a gate never passes because nothing ran.
    #[serde(default)]
    pub allow_skipped: bool,
    /// Cosine similarity below which a passing cache is "reuse with caution". Default: none
    /// (the model's `min_cosine` gate decides alone).
    #[serde(default)]
    pub caution_min_cosine: Option<f64>,
    /// Top-1 drop against fp32 on the same target (a fraction: 0.01 = one point) beyond which a
    /// passing cache is "reuse with caution". Default: none.
    #[serde(default)]
    pub caution_max_top1_drop: Option<f64>,
}

/// The `[cross_check]` table: CPU cells are also run on these other backends, and a
/// disagreement beyond the model's tolerance fails the cell (a second opinion on the engine).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CrossCheckSpec {
    /// Backends whose CPU cells check each other, e.g. `["reference", "onnxruntime"]`.
    #[serde(default)]
    pub backends: Vec<super::BackendKind>,
}

/// What an `[[expect]]` table says a cell ends as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpectedStatus {
    /// The cell fails (a gate or its build): reported as an expected failure.
    Failed,
    /// The cell is skipped (e.g. a GPU that some runners lack).
    Skipped,
}

impl ExpectedStatus {
    /// The word used in specs and records.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpectedStatus::Failed => "failed",
            ExpectedStatus::Skipped => "skipped",
        }
    }
}

/// One `[[expect]]` table: cells that are known to end a certain way, and why.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// Which cells (`--only` syntax: `cache=entropy,precision=int8`).
    pub only: String,
    /// How they are expected to end.
    pub status: ExpectedStatus,
    /// Why; shown in the summary and the report.
    pub reason: String,
}

/// The expectation that applies to a cell, as recorded with it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Expectation {
    /// The expected status.
    pub status: ExpectedStatus,
    /// Why.
    pub reason: String,
}

/// The expectation of a cell: the first `[[expect]]` table whose filter matches it.
pub fn expectation_for(expect: &[ExpectSpec], cell: &Cell) -> Option<Expectation> {
    expect.iter().find_map(|e| {
        Filter::parse(&e.only)
            .ok()
            .filter(|f| f.matches(cell))
            .map(|_| Expectation {
                status: e.status,
                reason: e.reason.clone(),
            })
    })
}

/// Problems of the `[gate]` and `[[expect]]` tables.
pub fn problems(gate: &GateSpec, expect: &[ExpectSpec], all_cells: &[Cell]) -> Vec<SpecProblem> {
    let mut out = Vec::new();
    if let Some(c) = gate
        .caution_min_cosine
        .filter(|c| !(-1.0..=1.0).contains(c))
    {
        out.push(SpecProblem {
            key: "gate.caution_min_cosine".into(),
            message: format!("caution_min_cosine = {c} is out of range"),
            fix: "use a value between -1 and 1".into(),
        });
    }
    if let Some(d) = gate
        .caution_max_top1_drop
        .filter(|d| !(0.0..=1.0).contains(d))
    {
        out.push(SpecProblem {
            key: "gate.caution_max_top1_drop".into(),
            message: format!("caution_max_top1_drop = {d} is out of range"),
            fix: "use a fraction between 0 and 1 (0.01 = one point of top-1)".into(),
        });
    }
    for (i, e) in expect.iter().enumerate() {
        match Filter::parse(&e.only) {
            Err(err) => out.push(SpecProblem {
                key: format!("expect[{i}].only"),
                message: err.to_string(),
                fix: "write conditions as key=value, as for --only".into(),
            }),
            Ok(f) if !all_cells.iter().any(|c| f.matches(c)) => out.push(SpecProblem {
                key: format!("expect[{i}].only"),
                message: format!("{:?} matches no cell of the matrix", e.only),
                fix: "check the ids against `calibench plan`, or remove the table".into(),
            }),
            Ok(_) => {}
        }
        if e.reason.trim().is_empty() {
            out.push(SpecProblem {
                key: format!("expect[{i}].reason"),
                message: "an expected outcome needs a reason".into(),
                fix: "say why the cells end this way (reason = \"…\")".into(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::{BackendKind, Precision};

    fn cell(cache: Option<&str>, p: Precision) -> Cell {
        Cell {
            model: "m".into(),
            cache: cache.map(str::to_string),
            device: "cpu".into(),
            precision: p,
            backend: BackendKind::Reference,
            batch: 1,
        }
    }

    #[test]
    fn first_matching_expectation_applies() {
        let expect = vec![
            ExpectSpec {
                only: "cache=bad,precision=int8".into(),
                status: ExpectedStatus::Failed,
                reason: "wrong data".into(),
            },
            ExpectSpec {
                only: "cache=bad".into(),
                status: ExpectedStatus::Skipped,
                reason: "other".into(),
            },
        ];
        let e = expectation_for(&expect, &cell(Some("bad"), Precision::Int8)).unwrap();
        assert_eq!(
            (e.status, e.reason.as_str()),
            (ExpectedStatus::Failed, "wrong data")
        );
        let e = expectation_for(&expect, &cell(Some("bad"), Precision::Best)).unwrap();
        assert_eq!(e.status, ExpectedStatus::Skipped);
        assert!(expectation_for(&expect, &cell(None, Precision::Fp32)).is_none());
    }

    #[test]
    fn expectations_that_match_nothing_or_lack_a_reason_are_spec_problems() {
        let cells = vec![cell(Some("good"), Precision::Int8)];
        let expect = vec![ExpectSpec {
            only: "cache=nope".into(),
            status: ExpectedStatus::Failed,
            reason: " ".into(),
        }];
        let p = problems(&GateSpec::default(), &expect, &cells);
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["expect[0].only", "expect[0].reason"]);
        let gate = GateSpec {
            caution_max_top1_drop: Some(0.5 * 100.0),
            ..GateSpec::default()
        };
        assert_eq!(
            problems(&gate, &[], &cells)[0].key,
            "gate.caution_max_top1_drop"
        );
    }
}
