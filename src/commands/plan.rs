//! `calibench plan`: the cells a matrix expands to.

use std::io::Write;

use calibench::matrix::{expand, select_checked, Cell, Spec};
use serde::Serialize;

use super::Outcome;
use crate::cli::PlanArgs;

#[derive(Serialize)]
struct CellRow<'a> {
    key: String,
    #[serde(flatten)]
    cell: &'a Cell,
}

pub fn plan(args: &PlanArgs) -> anyhow::Result<Outcome> {
    let loaded = Spec::load(&args.matrix)?;
    let total = expand(&loaded.spec).len();
    let cells = select_checked(&loaded.spec, &args.selection.filter(), args.selection.shard)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.matrix.display()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let rows: Vec<CellRow> = cells
            .iter()
            .map(|c| CellRow {
                key: c.key(),
                cell: c,
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(Outcome::Ok);
    }
    let header = [
        "#",
        "MODEL",
        "CACHE",
        "DEVICE",
        "PRECISION",
        "BACKEND",
        "BATCH",
    ];
    let rows: Vec<[String; 7]> = cells
        .iter()
        .enumerate()
        .map(|(i, c)| {
            [
                (i + 1).to_string(),
                c.model.clone(),
                c.cache.clone().unwrap_or_else(|| "none".into()),
                c.device.clone(),
                c.precision.to_string(),
                c.backend.to_string(),
                c.batch.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, v) in widths.iter_mut().zip(row) {
            *w = (*w).max(v.chars().count());
        }
    }
    let line = |cols: &[String]| {
        cols.iter()
            .zip(widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(&header.map(String::from)))?;
    for row in &rows {
        writeln!(out, "{}", line(row))?;
    }
    let shard = args
        .selection
        .shard
        .map(|s| format!(", shard {s}"))
        .unwrap_or_default();
    writeln!(
        out,
        "\n{} cell(s) selected of {total} in matrix {:?}{shard}",
        cells.len(),
        loaded.spec.name
    )?;
    Ok(Outcome::Ok)
}
