//! The report's cache section: per model, each cache's coverage of the model and the
//! per-tensor scale ratios between its caches (what `cache diff` prints), largest first.
//! Cache and model files are read from the paths the records name, and used only when their
//! sha256 still matches the record's, so the section never describes a different file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::cache::coverage::check;
use crate::cache::diff::diff;
use crate::cache::CalibrationCache;
use crate::model::onnx::OnnxModel;
use crate::results::schema::Record;

/// Rows of the largest differences shown per pair.
const TOP: usize = 8;

/// One cache of a model.
#[derive(Debug, Clone, Serialize)]
pub struct CacheRow {
    /// Cache id.
    pub id: String,
    /// File, as the records name it.
    pub path: String,
    /// Where it was calibrated.
    pub origin: String,
    /// Header (TensorRT version and calibrator), when the file could be read.
    pub header: String,
    /// "10 of 10 tensors TensorRT would quantize have a scale", or why it is unknown.
    pub coverage: String,
    /// CSS class of the coverage: good, warn, none.
    pub coverage_class: &'static str,
    /// Tensors without a scale (first few).
    pub missing: Vec<String>,
}

/// One tensor of a pair.
#[derive(Debug, Clone, Serialize)]
pub struct TensorRow {
    /// Tensor name.
    pub name: String,
    /// amax in A (scale × 127).
    pub amax_a: String,
    /// amax in B.
    pub amax_b: String,
    /// B / A.
    pub ratio: String,
    /// log2(B / A).
    pub log2: String,
    /// CSS class: bad beyond a factor of 1.5, warn beyond 1.1.
    pub class: &'static str,
}

/// Two caches of one model compared.
#[derive(Debug, Clone, Serialize)]
pub struct PairView {
    /// Cache A's id.
    pub a: String,
    /// Cache B's id.
    pub b: String,
    /// "10 tensors in both (4 identical), 0 only in A, 0 only in B".
    pub counts: String,
    /// Median |log2(B/A)|.
    pub median_abs_log2: String,
    /// Largest |log2(B/A)|.
    pub max_abs_log2: String,
    /// CSS class of the largest difference.
    pub class: &'static str,
    /// The largest differences.
    pub tensors: Vec<TensorRow>,
}

/// A model's caches.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCaches {
    /// Model id.
    pub model: String,
    /// Anchor of its section.
    pub anchor: String,
    /// Its caches.
    pub caches: Vec<CacheRow>,
    /// Every pair of readable caches.
    pub pairs: Vec<PairView>,
    /// Why some comparisons are missing.
    pub notes: Vec<String>,
}

/// The anchor of a model's cache section (`#caches-<model>`).
pub fn anchor(model: &str) -> String {
    format!("caches-{}", super::html::slug(model))
}

/// Reads `path` if its sha256 is `sha`; else says why not.
fn matching(path: &str, sha: &str) -> Result<(), String> {
    match crate::hash::sha256_file(Path::new(path)) {
        Ok(h) if h == sha => Ok(()),
        Ok(_) => Err(format!("{path} changed since the run (sha256 differs)")),
        Err(_) => Err(format!("{path} is not on this machine")),
    }
}

fn class_of(abs_log2: f64) -> &'static str {
    if abs_log2 > 1.5f64.log2() {
        "bad"
    } else if abs_log2 > 1.1f64.log2() {
        "warn"
    } else {
        "good"
    }
}

/// The cache section of every model that has caches in `records`.
pub fn cache_sections(records: &[Record]) -> Vec<ModelCaches> {
    // model id → (model path and sha, cache id → (path, sha, origin))
    type Caches = BTreeMap<String, (String, String, String)>;
    let mut models: BTreeMap<String, ((String, String), Caches)> = BTreeMap::new();
    for r in records {
        let Some(c) = &r.cache else { continue };
        let entry = models.entry(r.cell.model.clone()).or_insert_with(|| {
            (
                (r.model.path.clone(), r.model.sha256.clone()),
                Caches::new(),
            )
        });
        entry.1.entry(c.id.clone()).or_insert_with(|| {
            (
                c.path.clone(),
                c.sha256.clone(),
                c.origin_gpu
                    .clone()
                    .unwrap_or_else(|| "origin unknown".into()),
            )
        });
    }
    models
        .into_iter()
        .map(|(model, ((model_path, model_sha), caches))| {
            let mut notes = Vec::new();
            let onnx = match matching(&model_path, &model_sha) {
                Ok(()) => OnnxModel::load(Path::new(&model_path)).map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            if let Err(e) = &onnx {
                notes.push(format!("coverage not shown: {e}"));
            }
            let mut loaded: Vec<(String, CalibrationCache)> = Vec::new();
            let rows = caches
                .into_iter()
                .map(|(id, (path, sha, origin))| {
                    let read = matching(&path, &sha).and_then(|()| {
                        CalibrationCache::read(Path::new(&path)).map_err(|e| e.to_string())
                    });
                    let mut row = CacheRow {
                        id: id.clone(),
                        path: path.clone(),
                        origin,
                        header: String::new(),
                        coverage: "unknown".into(),
                        coverage_class: "none",
                        missing: Vec::new(),
                    };
                    match read {
                        Ok(cache) => {
                            row.header = cache.header.to_string();
                            if let Ok(m) = &onnx {
                                let c = check(&cache, m, None);
                                row.coverage = format!(
                                    "{} of {} tensors TensorRT would quantize have a scale",
                                    c.covered, c.quantizable
                                );
                                row.coverage_class =
                                    if c.missing.is_empty() { "good" } else { "warn" };
                                row.missing = c
                                    .missing
                                    .iter()
                                    .take(TOP)
                                    .map(|m| m.tensor.clone())
                                    .collect();
                            }
                            loaded.push((id, cache));
                        }
                        Err(e) => {
                            row.coverage = e.clone();
                            notes.push(format!("{id}: {e}"));
                        }
                    }
                    row
                })
                .collect();
            let mut pairs = Vec::new();
            for i in 0..loaded.len() {
                for j in i + 1..loaded.len() {
                    pairs.push(pair(&loaded[i], &loaded[j]));
                }
            }
            ModelCaches {
                anchor: anchor(&model),
                model,
                caches: rows,
                pairs,
                notes,
            }
        })
        .collect()
}

fn pair(
    (a_id, a): &(String, CalibrationCache),
    (b_id, b): &(String, CalibrationCache),
) -> PairView {
    let d = diff(a, b);
    let amax = |s: f32| format!("{:.4}", f64::from(s) * 127.0);
    PairView {
        a: a_id.clone(),
        b: b_id.clone(),
        counts: format!(
            "{} tensors in both ({} identical), {} only in {a_id}, {} only in {b_id}",
            d.summary.common,
            d.summary.identical,
            d.only_in_a.len(),
            d.only_in_b.len()
        ),
        median_abs_log2: format!("{:.4}", d.summary.median_abs_log2),
        max_abs_log2: format!("{:.4}", d.summary.max_abs_log2),
        class: class_of(d.summary.max_abs_log2),
        tensors: d
            .tensors
            .iter()
            .filter(|t| t.log2_ratio != 0.0)
            .take(TOP)
            .map(|t| TensorRow {
                name: t.name.clone(),
                amax_a: amax(t.scale_a),
                amax_b: amax(t.scale_b),
                ratio: format!("{:.4}", t.ratio),
                log2: format!("{:+.3}", t.log2_ratio),
                class: class_of(t.log2_ratio.abs()),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_classed_by_factor() {
        assert_eq!(class_of(0.0), "good");
        assert_eq!(class_of(0.2), "warn");
        assert_eq!(class_of(4.0), "bad");
    }
}
