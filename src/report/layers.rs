//! The report's per-layer comparison (as TREx compares engines): per model, the layers of its
//! int8/best engines side by side across targets, each with the precision it ran at, so a layer
//! that fell back to fp16/fp32 on one GPU and not on another reads at a glance.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::results::schema::Record;

/// Most engines shown side by side per model (the rest are counted in a note).
const MAX_ENGINES: usize = 12;

/// One layer across the engines.
#[derive(Debug, Clone, Serialize)]
pub struct LayerRow {
    /// Node name.
    pub layer: String,
    /// ONNX operator.
    pub op: String,
    /// Precision per engine (`-` where the engine has no such layer), with its CSS class.
    pub cells: Vec<(String, &'static str)>,
    /// Whether the engines disagree on this layer's precision.
    pub differs: bool,
}

/// A model's engines compared.
#[derive(Debug, Clone, Serialize)]
pub struct LayerComparison {
    /// Model id.
    pub model: String,
    /// Column headers: "cache · precision · target".
    pub engines: Vec<String>,
    /// One row per layer, in graph order.
    pub rows: Vec<LayerRow>,
    /// Layers whose precision differs between engines.
    pub differing: usize,
    /// What was left out.
    pub note: String,
}

fn class_of(precision: &str) -> &'static str {
    match precision {
        "int8" => "good",
        "fp16" => "warn",
        "fp32" => "bad",
        _ => "none",
    }
}

/// Per model, its int8/best engines (smallest batch; one per cache × precision × target).
pub fn layer_comparisons(records: &[Record]) -> Vec<LayerComparison> {
    let mut by_model: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in records {
        let quantized = matches!(r.cell.precision.as_str(), "int8" | "best");
        if quantized && r.engine.as_ref().is_some_and(|e| !e.layers.is_empty()) {
            by_model.entry(r.cell.model.as_str()).or_default().push(r);
        }
    }
    by_model
        .into_iter()
        .map(|(model, mut engines)| {
            let batch = engines.iter().map(|r| r.cell.batch).min().unwrap_or(1);
            engines.retain(|r| r.cell.batch == batch);
            engines.sort_by_key(|r| {
                (
                    r.cell.cache.clone(),
                    r.cell.precision.as_str(),
                    super::portability::target_of(r),
                )
            });
            let total = engines.len();
            engines.truncate(MAX_ENGINES);
            // Layers in the first engine's order, then any the others add.
            let mut order: Vec<(String, String)> = Vec::new();
            for r in &engines {
                for l in &r.engine.as_ref().expect("kept above").layers {
                    if !order.iter().any(|(name, _)| *name == l.layer) {
                        order.push((l.layer.clone(), l.op.clone()));
                    }
                }
            }
            let rows: Vec<LayerRow> = order
                .into_iter()
                .map(|(layer, op)| {
                    let cells: Vec<(String, &'static str)> = engines
                        .iter()
                        .map(|r| {
                            let p = r
                                .engine
                                .as_ref()
                                .and_then(|e| e.layers.iter().find(|l| l.layer == layer))
                                .map_or("-".to_string(), |l| l.precision.clone());
                            let class = class_of(&p);
                            (p, class)
                        })
                        .collect();
                    let differs = cells.iter().any(|(p, _)| *p != cells[0].0);
                    LayerRow {
                        layer,
                        op,
                        cells,
                        differs,
                    }
                })
                .collect();
            LayerComparison {
                model: model.to_string(),
                engines: engines
                    .iter()
                    .map(|r| {
                        format!(
                            "{} · {} · {}",
                            r.cell.cache.as_deref().unwrap_or("none"),
                            r.cell.precision,
                            super::portability::target_of(r)
                        )
                    })
                    .collect(),
                differing: rows.iter().filter(|r| r.differs).count(),
                rows,
                note: if total > MAX_ENGINES {
                    format!("{MAX_ENGINES} of {total} engines at batch {batch} shown")
                } else {
                    format!("engines at batch {batch}")
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::precision::LayerPrecision;
    use crate::results::schema::tests_support::sample;
    use crate::results::schema::Status;

    fn with_layers(device: &str, layers: &[(&str, &str)]) -> Record {
        let mut r = sample("m", Status::Ok);
        r.cell.device = device.into();
        let e = r.engine.as_mut().unwrap();
        e.layers = layers
            .iter()
            .map(|(l, p)| LayerPrecision {
                layer: l.to_string(),
                op: "Conv".into(),
                precision: p.to_string(),
                tactic: None,
            })
            .collect();
        r
    }

    #[test]
    fn a_layer_that_falls_back_on_one_target_is_marked() {
        let a = with_layers("gpu0", &[("conv1", "int8"), ("conv2", "int8")]);
        let b = with_layers("gpu1", &[("conv1", "int8"), ("conv2", "fp16")]);
        let c = layer_comparisons(&[a, b]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].engines.len(), 2);
        assert_eq!(c[0].differing, 1);
        let conv2 = &c[0].rows[1];
        assert_eq!(conv2.layer, "conv2");
        assert!(conv2.differs);
        assert_eq!(conv2.cells[1], ("fp16".to_string(), "warn"));
        assert!(!c[0].rows[0].differs);
    }
}
