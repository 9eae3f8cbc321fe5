//! Patterns the reference backend's engine (tract 0.23) computes wrongly, found by running
//! the same rewritten models on onnxruntime. The reference backend refuses them, naming the
//! node, rather than report a wrong answer.
//!
//! - **Softmax between two int8 Q/DQ pairs** (`DequantizeLinear → Softmax → QuantizeLinear`,
//!   with Flatten/Reshape/Identity in between allowed). Bisected on PaddleOCR's orientation
//!   classifier, whose int8 model ends that way: every single Q/DQ pair alone agrees with
//!   onnxruntime to 8e-4, the pair around the final Softmax together gives a constant output
//!   (top-1 50 % on real text lines where onnxruntime gives 100 %). A five-node model of just
//!   that pattern is wrong by up to 0.99 (the test below).

use std::collections::HashMap;

use super::BackendError;
use crate::model::onnx::{node_label, pb, OnnxModel};

/// Operators that only move data: looked through when searching for a Q/DQ pair.
const PASS_THROUGH: &[&str] = &["Flatten", "Reshape", "Identity", "Squeeze", "Unsqueeze"];
/// Operators tract gets wrong between two int8 Q/DQ pairs.
const SOFTMAX_LIKE: &[&str] = &["Softmax", "LogSoftmax"];

/// Refuses a model with a pattern tract computes wrongly, naming the node and the fix.
pub fn refuse_known_defects(model: &OnnxModel) -> Result<(), BackendError> {
    let g = model.graph();
    let producer: HashMap<&str, &pb::NodeProto> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let consumers = |t: &str| -> Vec<&pb::NodeProto> {
        g.node
            .iter()
            .filter(|n| n.input.iter().any(|i| i == t))
            .collect()
    };
    for (index, n) in g.node.iter().enumerate() {
        if !SOFTMAX_LIKE.contains(&n.op_type.as_str()) {
            continue;
        }
        // Back through data movement to a DequantizeLinear?
        let mut t = n.input.first().map(String::as_str);
        let mut dequantized = false;
        while let Some(p) = t.and_then(|t| producer.get(t)) {
            if p.op_type == "DequantizeLinear" {
                dequantized = true;
                break;
            }
            if !PASS_THROUGH.contains(&p.op_type.as_str()) {
                break;
            }
            t = p.input.first().map(String::as_str);
        }
        // Forward through data movement to a QuantizeLinear?
        let mut out = n.output.first().cloned();
        let mut quantized = false;
        while let Some(o) = out.take() {
            let next = consumers(&o);
            if next.iter().any(|c| c.op_type == "QuantizeLinear") {
                quantized = true;
            } else if let [c] = next.as_slice() {
                if PASS_THROUGH.contains(&c.op_type.as_str()) {
                    out = c.output.first().cloned();
                }
            }
        }
        if dequantized && quantized {
            return Err(BackendError::Unsupported(format!(
                "{}: node {} ({}) sits between two int8 Q/DQ pairs, which the reference backend's engine (tract) computes wrongly (outputs collapse: a five-node model of the pattern is off by up to 0.99 against onnxruntime)\nfix: run this cell on onnxruntime (backends = [\"onnxruntime\"]); its cross-check with the reference backend shows the same disagreement",
                model.path.display(),
                node_label(n, index),
                n.op_type
            )));
        }
    }
    Ok(())
}

/// The minimal reproducer of the Softmax defect, `x [N, 2] → Q/DQ → Softmax → Q/DQ → y`
/// (public for the test that checks tract still has the defect).
pub fn qdq_softmax_model(path: &std::path::Path) -> OnnxModel {
    reproducer::qdq_softmax(path)
}

mod reproducer {
    use super::*;
    use crate::model::onnx::float_tensor;

    fn node(op: &str, i: &[&str], o: &[&str]) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            name: format!("{op}_{}", o[0]),
            input: i.iter().map(|s| s.to_string()).collect(),
            output: o.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn io(name: &str) -> pb::ValueInfoProto {
        use pb::tensor_shape_proto::{dimension::Value, Dimension};
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(pb::TensorShapeProto {
                        dim: [Value::DimParam("N".into()), Value::DimValue(2)]
                            .into_iter()
                            .map(|v| Dimension {
                                value: Some(v),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// x → Q/DQ → Softmax → Q/DQ → y: the minimal reproducer.
    pub fn qdq_softmax(path: &std::path::Path) -> OnnxModel {
        let mut zero = float_tensor("z", &[], &[0.0]);
        zero.data_type = 3; // int8
        zero.raw_data = vec![0];
        let graph = pb::GraphProto {
            name: "qdq_softmax".into(),
            node: vec![
                node("QuantizeLinear", &["x", "s1", "z"], &["xq"]),
                node("DequantizeLinear", &["xq", "s1", "z"], &["xd"]),
                node("Softmax", &["xd"], &["p"]),
                node("QuantizeLinear", &["p", "s2", "z"], &["pq"]),
                node("DequantizeLinear", &["pq", "s2", "z"], &["y"]),
            ],
            initializer: vec![
                float_tensor("s1", &[], &[0.05]),
                float_tensor("s2", &[], &[1.0 / 127.0]),
                zero,
            ],
            input: vec![io("x")],
            output: vec![io("y")],
            ..Default::default()
        };
        OnnxModel {
            path: path.to_path_buf(),
            proto: pb::ModelProto {
                ir_version: 8,
                opset_import: vec![pb::OperatorSetIdProto {
                    domain: String::new(),
                    version: 13,
                }],
                graph: Some(graph),
                ..Default::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_between_two_qdq_pairs_is_refused_naming_the_node() {
        let m = qdq_softmax_model(std::path::Path::new("qdq_softmax.onnx"));
        let err = refuse_known_defects(&m).unwrap_err().to_string();
        assert!(
            err.contains("Softmax_p (Softmax)") && err.contains("onnxruntime"),
            "{err}"
        );
        // Without the output's Q/DQ the pattern is gone.
        let mut only_input = m.clone();
        let g = only_input.graph_mut();
        g.node.truncate(3);
        g.output[0].name = "p".into();
        assert!(refuse_known_defects(&only_input).is_ok());
    }
}
