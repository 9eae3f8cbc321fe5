//! `cache check`: does a cache fit a model and a TensorRT version?
//!
//! Coverage compares the cache's tensor names with the activation tensors TensorRT would
//! quantize in the model. A model tensor without a scale makes TensorRT log "Missing scale and
//! zero-point for tensor …" / "Setting a default quantization params because quantization data
//! is missing": those layers run unquantized or with a meaningless default range. Cache
//! entries that name no tensor of the model mean the model was re-exported with new names or
//! changed structure (or the cache belongs to another model). A header whose TensorRT version
//! differs from the running TensorRT makes TensorRT reject the cache and recalibrate.

use std::collections::HashSet;

use serde::Serialize;

use super::format::{CalibrationCache, TrtVersion};
use crate::model::onnx::OnnxModel;

/// A model tensor the cache has no scale for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingTensor {
    /// Tensor name.
    pub tensor: String,
    /// The layer that produces it (none for a graph input).
    pub produced_by: Option<String>,
    /// Layers that read it.
    pub read_by: Vec<String>,
}

/// The verdict of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every quantizable tensor has a scale and the version matches (or was not asked).
    Ok,
    /// Some tensors have no scale.
    Incomplete,
    /// Few of the cache's names are in the model: another model or a re-export.
    Mismatch,
    /// The TensorRT version differs: TensorRT rejects the cache.
    VersionMismatch,
}

/// The result of `cache check`.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    /// Tensors TensorRT would quantize.
    pub quantizable: usize,
    /// Of those, with a scale.
    pub covered: usize,
    /// Those without, with the layers affected.
    pub missing: Vec<MissingTensor>,
    /// Cache entries naming no tensor of the model (TensorRT-internal names excluded).
    pub unknown_entries: Vec<String>,
    /// Cache entries naming a tensor of the model that TensorRT does not quantize (an integer
    /// tensor, or float shape arithmetic): ignored, never applied. Each "name: why".
    pub ignored_entries: Vec<String>,
    /// Entries with TensorRT-internal names (`(Unnamed Layer* …)`, `ONNXTRT_…`), which have
    /// no ONNX tensor by construction.
    pub internal_entries: usize,
    /// The cache's TensorRT version.
    pub cache_version: String,
    /// The target TensorRT version, if one was given.
    pub target_version: Option<String>,
    /// Whether the target version accepts the cache.
    pub version_ok: Option<bool>,
    /// Verdict.
    pub verdict: Verdict,
    /// What to do.
    pub fix: String,
}

/// Whether a cache name is one TensorRT makes up for its own layers.
pub fn is_trt_internal(name: &str) -> bool {
    name.starts_with("(Unnamed Layer*") || name.starts_with("ONNXTRT_")
}

/// Checks a cache against a model and, optionally, a target TensorRT version.
pub fn check(cache: &CalibrationCache, model: &OnnxModel, target: Option<TrtVersion>) -> Coverage {
    let kinds = crate::model::types::tensor_kinds(model);
    let quantizable = kinds.data_path.clone();
    let in_cache: HashSet<&str> = cache.entries.iter().map(|e| e.name.as_str()).collect();
    let in_model: HashSet<&str> = quantizable.iter().map(String::as_str).collect();
    let producers = model.producers();
    let graph = model.graph();
    let missing: Vec<MissingTensor> = quantizable
        .iter()
        .filter(|t| !in_cache.contains(t.as_str()))
        .map(|t| MissingTensor {
            tensor: t.clone(),
            produced_by: producers
                .get(t.as_str())
                .map(|&i| crate::model::onnx::node_label(&graph.node[i], i)),
            read_by: model.consumers_of(t),
        })
        .collect();
    let internal_entries = cache
        .entries
        .iter()
        .filter(|e| is_trt_internal(&e.name))
        .count();
    let (mut unknown_entries, mut ignored_entries): (Vec<String>, Vec<String>) =
        (Vec::new(), Vec::new());
    for e in &cache.entries {
        if in_model.contains(e.name.as_str()) || is_trt_internal(&e.name) {
            continue;
        }
        match kinds.elem_type(&e.name) {
            Some(t) if t != tract_onnx::pb::tensor_proto::DataType::Float as i32 => ignored_entries
                .push(format!(
                    "{}: ignored: TensorRT does not quantize {} tensors",
                    e.name,
                    crate::model::types::type_name(t)
                )),
            Some(_) if kinds.weights.contains(&e.name) => ignored_entries.push(format!(
                "{}: ignored: a weight, not an activation (TensorRT quantizes weights itself)",
                e.name
            )),
            Some(_) => ignored_entries.push(format!(
                "{}: ignored: a float tensor of shape arithmetic, not on the data path",
                e.name
            )),
            None => unknown_entries.push(e.name.clone()),
        }
    }
    let covered = quantizable.len() - missing.len();
    let version = cache.header.version();
    let version_ok = target.map(|t| t == version);
    let (verdict, fix) = if version_ok == Some(false) {
        (
            Verdict::VersionMismatch,
            format!(
                "TensorRT {} rejects a cache written by TensorRT {version} and recalibrates (or fails to build without calibration data): \
                 recalibrate with that TensorRT, or convert the cache to an explicitly quantized model with `calibench cache to-qdq`",
                target.expect("version_ok is set only with a target")
            ),
        )
    } else if covered * 2 < quantizable.len() && unknown_entries.len() > covered {
        (
            Verdict::Mismatch,
            "most of the cache's tensor names are not in this model: it was calibrated for another model or an export with different \
             tensor names; recalibrate on this model (`calibench calibrate --model …`)"
                .into(),
        )
    } else if !missing.is_empty() {
        (
            Verdict::Incomplete,
            "TensorRT will log \"Missing scale and zero-point\" for the tensors above and run those layers unquantized or with a default \
             range; check accuracy, and recalibrate on this exact model to cover them"
                .into(),
        )
    } else {
        (
            Verdict::Ok,
            "every tensor TensorRT would quantize has a scale".into(),
        )
    };
    Coverage {
        quantizable: quantizable.len(),
        covered,
        missing,
        unknown_entries,
        ignored_entries,
        internal_entries,
        cache_version: version.to_string(),
        target_version: target.map(|t| t.to_string()),
        version_ok,
        verdict,
        fix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::onnx::tests::digits;

    fn digits_cache() -> CalibrationCache {
        CalibrationCache::read(&digits().path.with_file_name("digits_cnn.entropy.cache")).unwrap()
    }

    #[test]
    fn full_cache_is_ok() {
        let c = check(&digits_cache(), &digits(), Some("10.14.1".parse().unwrap()));
        assert_eq!((c.quantizable, c.covered), (10, 10));
        assert_eq!(c.verdict, Verdict::Ok);
        assert_eq!(c.version_ok, Some(true));
    }

    #[test]
    fn missing_tensor_names_its_layers() {
        let mut cache = digits_cache();
        cache.entries.retain(|e| e.name != "relu1_out");
        let c = check(&cache, &digits(), None);
        assert_eq!(c.verdict, Verdict::Incomplete);
        assert_eq!(
            c.missing,
            vec![MissingTensor {
                tensor: "relu1_out".into(),
                produced_by: Some("relu1".into()),
                read_by: vec!["pool1".into()]
            }]
        );
        assert!(c.fix.contains("Missing scale and zero-point"));
    }

    #[test]
    fn renamed_export_is_a_mismatch() {
        let mut cache = digits_cache();
        for e in cache.entries.iter_mut().skip(1) {
            e.name = format!("/model/{}/Conv_output_0", e.name);
        }
        cache.entries.push(crate::cache::Entry::from_scale(
            "(Unnamed Layer* 3) [Constant]_output",
            1.0,
        ));
        let c = check(&cache, &digits(), None);
        assert_eq!(c.verdict, Verdict::Mismatch);
        assert_eq!(c.unknown_entries.len(), 9);
        assert_eq!(c.internal_entries, 1);
    }

    #[test]
    fn version_mismatch_means_rejection() {
        let c = check(&digits_cache(), &digits(), Some("8.6.1".parse().unwrap()));
        assert_eq!(c.verdict, Verdict::VersionMismatch);
        assert!(c.fix.contains("rejects"), "{}", c.fix);
    }
}
