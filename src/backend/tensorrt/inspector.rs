//! The engine inspector's JSON (`IEngineInspector::getEngineInformation` with detailed profiling
//! verbosity): per layer its name, type, tactic and the precision it actually runs at. The JSON
//! has no precision field; precision is read from the weights' type where the layer has
//! weights, else from its inputs' format strings ("… Int8 format", "Row major linear FP32").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One layer of a built engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectedLayer {
    /// Layer name (often several fused ONNX nodes joined by " + ").
    pub name: String,
    /// TensorRT's layer type, e.g. "CaskConvolution", "Reformat".
    pub layer_type: String,
    /// `int8`, `fp8`, `fp16`, `bf16`, `fp32`, `int32`, `bool`, `reformat`, `noop`, or `unknown`.
    pub precision: String,
    /// Tactic name, when the inspector gives one.
    pub tactic: Option<String>,
}

/// Why inspector JSON could not be read.
#[derive(Debug, thiserror::Error)]
#[error("engine inspector JSON: {0}")]
pub struct InspectorError(String);

/// The precision a format/datatype string names.
pub fn datatype_of(format: &str) -> Option<&'static str> {
    let f = format.to_ascii_lowercase();
    // Order matters: "fp8" before "fp16"/"fp32" is irrelevant, but "int8" must not match "int8x4" oddly.
    [
        ("int8", "int8"),
        ("fp8", "fp8"),
        ("bf16", "bf16"),
        ("fp16", "fp16"),
        ("half", "fp16"),
        ("fp32", "fp32"),
        ("float", "fp32"),
        ("int32", "int32"),
        ("bool", "bool"),
    ]
    .into_iter()
    .find(|(token, _)| {
        f.split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| w == *token)
    })
    .map(|(_, p)| p)
}

/// Rank for "lowest precision wins" among a layer's inputs.
fn rank(p: &str) -> u8 {
    match p {
        "int8" => 0,
        "fp8" => 1,
        "fp16" | "bf16" => 2,
        "fp32" => 3,
        _ => 4,
    }
}

/// Parses the inspector's JSON. Handles detailed output (layers as objects) and
/// `kLAYER_NAMES_ONLY` output (layers as strings, precision unknown).
pub fn parse(json: &str) -> Result<Vec<InspectedLayer>, InspectorError> {
    let v: Value = serde_json::from_str(json).map_err(|e| InspectorError(e.to_string()))?;
    let layers = v.get("Layers").and_then(Value::as_array).ok_or_else(|| {
        InspectorError(
            "no \"Layers\" array (was the engine built with detailed profiling verbosity?)".into(),
        )
    })?;
    layers
        .iter()
        .map(|l| match l {
            Value::String(name) => Ok(InspectedLayer {
                name: name.clone(),
                layer_type: String::new(),
                precision: "unknown".into(),
                tactic: None,
            }),
            Value::Object(o) => {
                let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
                let layer_type = s("LayerType").unwrap_or_default();
                let precision = match layer_type.as_str() {
                    "Reformat" => "reformat".to_string(),
                    "NoOp" => "noop".to_string(),
                    _ => o
                        .get("Weights")
                        .and_then(|w| w.get("Type"))
                        .and_then(Value::as_str)
                        .and_then(datatype_of)
                        .or_else(|| {
                            o.get("Inputs")
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                                .filter_map(|i| {
                                    i.get("Format/Datatype")
                                        .and_then(Value::as_str)
                                        .and_then(datatype_of)
                                })
                                .min_by_key(|p| rank(p))
                        })
                        .unwrap_or("unknown")
                        .to_string(),
                };
                Ok(InspectedLayer {
                    name: s("Name").unwrap_or_default(),
                    layer_type,
                    precision,
                    tactic: s("TacticName"),
                })
            }
            other => Err(InspectorError(format!(
                "a layer is neither an object nor a name: {other}"
            ))),
        })
        .collect()
}

/// Layers per precision, reformat and no-op layers left out: what the report shows as
/// "how many layers actually ran int8".
pub fn precision_counts(layers: &[InspectedLayer]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in layers
        .iter()
        .filter(|l| l.precision != "reformat" && l.precision != "noop")
    {
        *m.entry(l.precision.clone()).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shapes of a real detailed inspector dump of a Q/DQ MobileNet (layer types, fused
    /// names, format strings, weights' types), cut down to one layer of each kind.
    const DETAILED: &str = r#"{"Layers": [
      {"Name": "QuantizeLinear_2", "LayerType": "Reformat",
       "Inputs": [{"Name": "input1", "Location": "Device", "Dimensions": [1,3,224,224], "Format/Datatype": "Row major linear FP32"}],
       "Outputs": [{"Name": "317", "Location": "Device", "Dimensions": [1,3,224,224], "Format/Datatype": "Four wide channel vectorized row major Int8 format"}],
       "ParameterType": "Reformat", "Origin": "QDQ", "TacticValue": "0x0000000000000000"},
      {"Name": "features.0.0.weight + QuantizeLinear_8 + Conv_12 + PWN(Clip_16)", "LayerType": "CaskConvolution",
       "Inputs": [{"Name": "317", "Format/Datatype": "Four wide channel vectorized row major Int8 format"}],
       "Outputs": [{"Name": "334", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}],
       "ParameterType": "Convolution", "Weights": {"Type": "Int8", "Count": 864}, "Bias": {"Type": "Float", "Count": 32},
       "TacticName": "sm75_xmma_fprop_implicit_gemm_interleaved_i8i8_i8i32_f32", "TacticValue": "0x10d7116a3fad9b7a"},
      {"Name": "features.2.conv.2.weight + QuantizeLinear_90 + Conv_94", "LayerType": "CaskConvolution",
       "Inputs": [{"Name": "399", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}],
       "Outputs": [{"Name": "410", "Format/Datatype": "Thirty-two wide channel vectorized row major FP16 format"}],
       "Weights": {"Type": "Int8", "Count": 2304}, "TacticName": "turing_fp16_i8816cudnn_int8_128x128_ldg16_relu_small_nt_v1"},
      {"Name": "GlobalAveragePool_843", "LayerType": "TiledPooling",
       "Inputs": [{"Name": "r", "Format/Datatype": "Two wide channel vectorized row major FP16 format"}],
       "Outputs": [{"Name": "1158", "Format/Datatype": "Two wide channel vectorized row major FP16 format"}],
       "ParameterType": "Pooling", "PoolingType": "AVERAGE", "TacticValue": "0x00000000007f0101"},
      {"Name": "Softmax_9", "LayerType": "CaskSoftMax",
       "Inputs": [{"Name": "x", "Format/Datatype": "Row major linear FP32"}], "Outputs": [{"Name": "y", "Format/Datatype": "Row major linear FP32"}]},
      {"Name": "copied_squeeze_after_(Unnamed Layer* 850) [ElementWise]", "LayerType": "NoOp",
       "Inputs": [{"Name": "a", "Format/Datatype": "Row major linear FP32"}], "Outputs": [{"Name": "1179", "Format/Datatype": "Row major linear FP32"}],
       "TacticValue": "0x0000000000000000"}
    ], "Bindings": ["input1", "1179"]}"#;

    #[test]
    fn detailed_output_gives_precision_per_layer() {
        let layers = parse(DETAILED).unwrap();
        let p: Vec<&str> = layers.iter().map(|l| l.precision.as_str()).collect();
        assert_eq!(p, ["reformat", "int8", "int8", "fp16", "fp32", "noop"]);
        assert_eq!(
            layers[1].tactic.as_deref(),
            Some("sm75_xmma_fprop_implicit_gemm_interleaved_i8i8_i8i32_f32")
        );
        assert_eq!(layers[1].layer_type, "CaskConvolution");
        let counts = precision_counts(&layers);
        assert_eq!(
            counts,
            BTreeMap::from([("fp16".into(), 1), ("fp32".into(), 1), ("int8".into(), 2)])
        );
    }

    #[test]
    fn names_only_and_bad_json() {
        let layers =
            parse(r#"{"Layers": ["conv1 + relu1", "fc"], "Bindings": ["x", "y"]}"#).unwrap();
        assert_eq!(layers.len(), 2);
        assert!(layers.iter().all(|l| l.precision == "unknown"));
        assert!(parse("{}")
            .unwrap_err()
            .to_string()
            .contains("detailed profiling verbosity"));
        assert!(parse("not json").is_err());
        assert!(parse(r#"{"Layers": [3]}"#).is_err());
    }

    #[test]
    fn format_strings() {
        assert_eq!(datatype_of("Row major linear FP32"), Some("fp32"));
        assert_eq!(
            datatype_of("Thirty-two wide channel vectorized row major Int8 format"),
            Some("int8")
        );
        assert_eq!(
            datatype_of("Two wide channel vectorized row major FP16 format"),
            Some("fp16")
        );
        assert_eq!(datatype_of("Half"), Some("fp16"));
        assert_eq!(datatype_of("Row major linear BF16 format"), Some("bf16"));
        assert_eq!(datatype_of("Row major linear Int32"), Some("int32"));
        assert_eq!(datatype_of("mystery"), None);
    }
}
