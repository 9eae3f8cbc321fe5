//! The verdicts as JSON (`report --json`, `run --json`): what a script gates on.

use serde_json::json;

use super::html::{count, verdict_counts};
use super::portability::{analyze, Analysis};
use crate::results::schema::{Record, Status};

/// Cell counts, verdict counts and every verdict row (worst first).
pub fn verdicts_json(records: &[Record]) -> serde_json::Value {
    verdicts_json_of(records, &analyze(records))
}

/// [`verdicts_json`] of an analysis already made of `records`.
pub fn verdicts_json_of(records: &[Record], a: &Analysis) -> serde_json::Value {
    json!({
        "cells": records.len(),
        "ok": count(records, Status::Ok),
        "failed": count(records, Status::Failed),
        "skipped": count(records, Status::Skipped),
        "verdict_counts": verdict_counts(a),
        "verdicts": a.verdicts,
    })
}
