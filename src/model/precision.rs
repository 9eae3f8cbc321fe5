//! Precision plans: which tensors and layers run at int8, fp16 or fp32 for a cell's
//! precision and cache, with trtexec's meaning of the flags.
//!
//! - `fp32`: everything fp32.
//! - `fp16`: every activation and weight rounded through float16.
//! - `int8`: every quantizable activation with a usable scale in the cache is quantized
//!   (symmetric, zero point 0, per-tensor scale); layers whose activation inputs are all
//!   quantized run int8, with Conv/Gemm/MatMul weights quantized per output channel
//!   (max-abs, as TensorRT does); everything else stays fp32 and is reported as such.
//! - `best`: int8 where the cache covers a tensor, fp16 elsewhere.
//!
//! Graph outputs keep their float type, as TensorRT's network outputs do: the last layer may
//! run int8, but its output is not quantized.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::onnx::{node_label, OnnxModel};
use crate::cache::CalibrationCache;
use crate::matrix::Precision;

/// What happens to one activation tensor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "as", content = "scale")]
pub enum TensorPrecision {
    /// Quantized to int8 with this scale, then dequantized.
    Int8(f32),
    /// Rounded through float16.
    Fp16,
    /// Left as float32.
    Fp32,
}

/// The precision a layer runs at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerPrecision {
    /// Node name (or `op#index`).
    pub layer: String,
    /// ONNX operator.
    pub op: String,
    /// `int8`, `fp16` or `fp32`.
    pub precision: String,
    /// The implementation the engine's builder timed and kept for it (e.g. `cudnn
    /// implicit_precomp_gemm`, `calibench im2col+cublaslt`), where the backend chooses one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tactic: Option<String>,
}

/// The whole plan for one model at one precision.
#[derive(Debug, Clone, Default)]
pub struct PrecisionPlan {
    /// Treatment of each quantizable activation tensor, in graph order.
    pub tensors: Vec<(String, TensorPrecision)>,
    /// Precision of each computing layer, in graph order.
    pub layers: Vec<LayerPrecision>,
    /// Node indices whose weights are quantized per channel.
    pub int8_weight_nodes: HashSet<usize>,
    /// Whether weights (of non-int8 layers) are rounded through fp16.
    pub fp16_weights: bool,
    /// Quantizable tensors the cache has no scale for (int8/best only).
    pub uncovered: Vec<String>,
    /// Tensors whose scale is unusable (zero, negative, NaN, Inf), with the scale.
    pub unusable: Vec<(String, f32)>,
    /// Cache entries that name no tensor of the model.
    pub unused_entries: Vec<String>,
}

impl PrecisionPlan {
    /// Layers per precision: {"int8": 5, "fp32": 2}.
    pub fn layer_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for l in &self.layers {
            *m.entry(l.precision.clone()).or_insert(0) += 1;
        }
        m
    }
}

/// Operators that only move or reshape data: they run at whatever precision their input has
/// and are not counted as layers.
const DATA_MOVEMENT: &[&str] = &[
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Identity",
    "Shape",
    "Gather",
    "Slice",
    "Concat",
    "Split",
    "Expand",
    "Constant",
    "Cast",
];

/// Operators whose second input, when it is a weight, is quantized per output channel.
pub fn weight_axis(model: &OnnxModel, node: &super::onnx::pb::NodeProto) -> Option<(usize, i64)> {
    let weight = node.input.get(1)?;
    let w = model.constant(weight)?;
    let rank = w.dims.len() as i64;
    let axis = match node.op_type.as_str() {
        "Conv" => 0,
        "ConvTranspose" => 1,
        "Gemm" => {
            if super::onnx::attr_int(node, "transB") == Some(1) {
                0
            } else {
                1
            }
        }
        "MatMul" if rank >= 2 => rank - 1,
        _ => return None,
    };
    Some((1, axis))
}

/// Plans a model at a precision, with the cache for int8/best.
pub fn plan(
    model: &OnnxModel,
    precision: Precision,
    cache: Option<&CalibrationCache>,
) -> PrecisionPlan {
    let quantizable = model.quantizable_tensors();
    let outputs: HashSet<String> = model.outputs().into_iter().map(|o| o.name).collect();
    let constant = model.constant_tensors();
    let mut plan = PrecisionPlan {
        fp16_weights: matches!(precision, Precision::Fp16 | Precision::Best),
        ..Default::default()
    };
    let fallback = if matches!(precision, Precision::Fp16 | Precision::Best) {
        TensorPrecision::Fp16
    } else {
        TensorPrecision::Fp32
    };
    let scales: HashMap<&str, f32> = match (precision.needs_cache(), cache) {
        (true, Some(c)) => c
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.scale()))
            .collect(),
        _ => HashMap::new(),
    };
    let mut int8: HashSet<&str> = HashSet::new();
    for name in &quantizable {
        let treatment = match scales.get(name.as_str()) {
            Some(&s) if s.is_finite() && s > 0.0 => {
                int8.insert(name);
                TensorPrecision::Int8(s)
            }
            Some(&s) => {
                plan.unusable.push((name.clone(), s));
                fallback
            }
            None => {
                if precision.needs_cache() {
                    plan.uncovered.push(name.clone());
                }
                fallback
            }
        };
        // Graph outputs are never quantized (their layer may still run int8).
        let treatment = match treatment {
            TensorPrecision::Int8(_) if outputs.contains(name) => fallback,
            t => t,
        };
        plan.tensors.push((name.clone(), treatment));
    }
    if let (true, Some(c)) = (precision.needs_cache(), cache) {
        let known: HashSet<&str> = quantizable.iter().map(String::as_str).collect();
        plan.unused_entries = c
            .entries
            .iter()
            .filter(|e| !known.contains(e.name.as_str()))
            .map(|e| e.name.clone())
            .collect();
    }
    for (index, node) in model.graph().node.iter().enumerate() {
        if DATA_MOVEMENT.contains(&node.op_type.as_str()) {
            continue;
        }
        let activations: Vec<&String> = node
            .input
            .iter()
            .filter(|i| !i.is_empty() && !constant.contains(*i))
            .collect();
        if activations.is_empty() {
            continue;
        }
        let layer_int8 =
            precision.needs_cache() && activations.iter().all(|a| int8.contains(a.as_str()));
        let label = if layer_int8 {
            if weight_axis(model, node).is_some() {
                plan.int8_weight_nodes.insert(index);
            }
            "int8"
        } else if fallback == TensorPrecision::Fp16 {
            "fp16"
        } else {
            "fp32"
        };
        plan.layers.push(LayerPrecision {
            layer: node_label(node, index),
            op: node.op_type.clone(),
            precision: label.to_string(),
            tactic: None,
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::onnx::tests::digits;

    fn cache_without(names: &[&str]) -> CalibrationCache {
        let mut c =
            CalibrationCache::read(&digits().path.with_file_name("digits_cnn.entropy.cache"))
                .unwrap();
        c.entries.retain(|e| !names.contains(&e.name.as_str()));
        c
    }

    #[test]
    fn fp32_and_fp16_plans() {
        let m = digits();
        let p = plan(&m, Precision::Fp32, None);
        assert!(p.tensors.iter().all(|(_, t)| *t == TensorPrecision::Fp32));
        assert_eq!(p.layer_counts(), BTreeMap::from([("fp32".to_string(), 8)]));
        let p = plan(&m, Precision::Fp16, None);
        assert!(p.tensors.iter().all(|(_, t)| *t == TensorPrecision::Fp16));
        assert!(p.fp16_weights);
        assert_eq!(p.layer_counts()["fp16"], 8);
    }

    #[test]
    fn int8_with_full_cache() {
        let m = digits();
        let p = plan(&m, Precision::Int8, Some(&cache_without(&[])));
        assert!(p.uncovered.is_empty() && p.unusable.is_empty() && p.unused_entries.is_empty());
        assert_eq!(p.layer_counts(), BTreeMap::from([("int8".to_string(), 8)]));
        assert_eq!(p.int8_weight_nodes.len(), 4, "conv1, conv2, fc1, fc2");
        let logits = p.tensors.iter().find(|(n, _)| n == "logits").unwrap();
        assert_eq!(
            logits.1,
            TensorPrecision::Fp32,
            "outputs keep their float type"
        );
        assert!(
            matches!(p.tensors[0].1, TensorPrecision::Int8(s) if (s - 1.0 / 127.0).abs() < 1e-6)
        );
    }

    #[test]
    fn uncovered_tensors_fall_back() {
        let m = digits();
        let c = cache_without(&["relu1_out"]);
        let p = plan(&m, Precision::Int8, Some(&c));
        assert_eq!(p.uncovered, ["relu1_out"]);
        let layers: HashMap<&str, &str> = p
            .layers
            .iter()
            .map(|l| (l.layer.as_str(), l.precision.as_str()))
            .collect();
        assert_eq!(layers["pool1"], "fp32", "its input has no scale");
        assert_eq!(layers["conv1"], "int8");
        let p = plan(&m, Precision::Best, Some(&c));
        let layers: HashMap<&str, &str> = p
            .layers
            .iter()
            .map(|l| (l.layer.as_str(), l.precision.as_str()))
            .collect();
        assert_eq!(layers["pool1"], "fp16");
        assert!(p
            .tensors
            .iter()
            .any(|(n, t)| n == "relu1_out" && *t == TensorPrecision::Fp16));
    }

    #[test]
    fn unusable_and_foreign_entries_are_reported() {
        let m = digits();
        let mut c = cache_without(&[]);
        c.entries
            .iter_mut()
            .find(|e| e.name == "conv2_out")
            .unwrap()
            .bits = 0x7f800000;
        c.entries
            .push(crate::cache::Entry::from_scale("/old/name_output_0", 0.1));
        let p = plan(&m, Precision::Int8, Some(&c));
        assert_eq!(p.unusable.len(), 1);
        assert_eq!(p.unusable[0].0, "conv2_out");
        assert_eq!(p.unused_entries, ["/old/name_output_0"]);
    }
}
