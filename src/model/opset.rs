//! Raising a model's opset without changing what it computes. The Q/DQ rewrite needs opset 13
//! (per-channel `axis`) and the fp16 Q/DQ model opset 19, but exporters write older ones
//! (Paddle2ONNX: 11 and 12), and some operators changed meaning on the way:
//! - opset 13: `Squeeze`, `Unsqueeze`, `ReduceSum` take `axes` and `Split` takes `split` as an
//!   input instead of an attribute; `Softmax`, `LogSoftmax`, `Hardmax` work along one axis
//!   instead of over the input flattened to 2-D at `axis`.
//! - opset 18: the other `Reduce*` operators take `axes` as an input.
//!
//! Each such node is rewritten to the new form (an int64 initializer for the attribute; a
//! Flatten → op → Reshape(Shape(x)) for the old softmax semantics where the axis is not the
//! last), so the raised model computes exactly what the original did.

use super::onnx::{pb, OnnxModel};
use tract_onnx::pb::tensor_proto::DataType;

/// Operators whose `axes` attribute became an input at opset 13.
const AXES_INPUT_13: &[&str] = &["Squeeze", "Unsqueeze", "ReduceSum"];
/// Operators whose `axes` attribute became an input at opset 18.
const AXES_INPUT_18: &[&str] = &[
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
];
/// Operators that work along one axis from opset 13 on, over a 2-D flattening before.
const ONE_AXIS_13: &[&str] = &["Softmax", "LogSoftmax", "Hardmax"];

/// Suffix of the names this module adds.
const TAG: &str = "__calibench_opset";

fn int64s(name: &str, values: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: vec![values.len() as i64],
        data_type: DataType::Int64 as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn node(op: &str, name: String, input: Vec<String>, output: Vec<String>) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name,
        input,
        output,
        ..Default::default()
    }
}

fn int_attr(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        i,
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        ..Default::default()
    }
}

/// The default-domain opset of a model.
pub fn opset(model: &OnnxModel) -> i64 {
    model
        .proto
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
        .unwrap_or(1)
}

/// Raises the default-domain opset to at least `version`, rewriting the nodes whose form or
/// meaning changed on the way.
pub fn raise(model: &mut OnnxModel, version: i64) {
    let from = opset(model);
    if from >= version {
        return;
    }
    let crosses = |v: i64| from < v && version >= v;
    let mut inits = Vec::new();
    let mut nodes = Vec::new();
    for (i, mut n) in std::mem::take(&mut model.graph_mut().node)
        .into_iter()
        .enumerate()
    {
        let op = n.op_type.as_str();
        let axes_attr = (crosses(13) && AXES_INPUT_13.contains(&op))
            || (crosses(18) && AXES_INPUT_18.contains(&op));
        let split_attr = crosses(13) && op == "Split";
        if axes_attr || split_attr {
            let key = if split_attr { "split" } else { "axes" };
            if let Some(pos) = n.attribute.iter().position(|a| a.name == key) {
                let a = n.attribute.remove(pos);
                let name = format!(
                    "{}{TAG}_{key}{i}",
                    n.output.first().cloned().unwrap_or_default()
                );
                inits.push(int64s(&name, &a.ints));
                n.input.truncate(1);
                n.input.push(name);
            }
            nodes.push(n);
            continue;
        }
        if crosses(13) && ONE_AXIS_13.contains(&op) {
            let axis = n
                .attribute
                .iter()
                .find(|a| a.name == "axis")
                .map_or(1, |a| a.i);
            if axis == -1 {
                nodes.push(n); // the last axis: the same in both meanings
                continue;
            }
            // old(x, axis) = Reshape(new(Flatten(x, axis), axis=1), Shape(x))
            let (x, y) = (n.input[0].clone(), n.output[0].clone());
            let (flat, inner, shape) = (
                format!("{y}{TAG}_flat"),
                format!("{y}{TAG}_2d"),
                format!("{y}{TAG}_shape"),
            );
            let mut flatten = node(
                "Flatten",
                format!("{flat}_node"),
                vec![x.clone()],
                vec![flat.clone()],
            );
            flatten.attribute.push(int_attr("axis", axis));
            nodes.push(flatten);
            nodes.push(node(
                "Shape",
                format!("{shape}_node"),
                vec![x],
                vec![shape.clone()],
            ));
            n.input = vec![flat];
            n.output = vec![inner.clone()];
            n.attribute.retain(|a| a.name != "axis");
            n.attribute.push(int_attr("axis", 1));
            nodes.push(n);
            nodes.push(node(
                "Reshape",
                format!("{y}{TAG}_reshape"),
                vec![inner, shape],
                vec![y],
            ));
            continue;
        }
        nodes.push(n);
    }
    let g = model.graph_mut();
    g.node = nodes;
    g.initializer.extend(inits);
    for o in model
        .proto
        .opset_import
        .iter_mut()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
    {
        o.version = o.version.max(version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(opset: i64, nodes: Vec<pb::NodeProto>) -> OnnxModel {
        OnnxModel {
            path: "m.onnx".into(),
            proto: pb::ModelProto {
                opset_import: vec![pb::OperatorSetIdProto {
                    domain: String::new(),
                    version: opset,
                }],
                graph: Some(pb::GraphProto {
                    node: nodes,
                    ..Default::default()
                }),
                ..Default::default()
            },
        }
    }

    fn with_ints(mut n: pb::NodeProto, key: &str, v: &[i64]) -> pb::NodeProto {
        n.attribute.push(pb::AttributeProto {
            name: key.into(),
            ints: v.to_vec(),
            r#type: pb::attribute_proto::AttributeType::Ints as i32,
            ..Default::default()
        });
        n
    }

    #[test]
    fn attributes_that_became_inputs_move_and_old_softmax_keeps_its_meaning() {
        let mut m = model(
            11,
            vec![
                with_ints(
                    node("Squeeze", "sq".into(), vec!["x".into()], vec!["s".into()]),
                    "axes",
                    &[2],
                ),
                with_ints(
                    node(
                        "ReduceMean",
                        "rm".into(),
                        vec!["s".into()],
                        vec!["r".into()],
                    ),
                    "axes",
                    &[1],
                ),
                {
                    let mut n = node("Softmax", "sm".into(), vec!["r".into()], vec!["y".into()]);
                    n.attribute.push(int_attr("axis", 1));
                    n
                },
            ],
        );
        raise(&mut m, 13);
        assert_eq!(opset(&m), 13);
        let g = m.graph();
        let sq = &g.node[0];
        assert!(sq.attribute.is_empty() && sq.input.len() == 2, "{sq:?}");
        let axes = g
            .initializer
            .iter()
            .find(|t| t.name == sq.input[1])
            .unwrap();
        assert_eq!(axes.raw_data, 2i64.to_le_bytes());
        // ReduceMean keeps its attribute until opset 18.
        assert_eq!(g.node[1].attribute.len(), 1);
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(
            ops,
            [
                "Squeeze",
                "ReduceMean",
                "Flatten",
                "Shape",
                "Softmax",
                "Reshape"
            ]
        );
        assert_eq!(g.node.last().unwrap().output, ["y"]);
        // On to 19: ReduceMean's axes move too.
        raise(&mut m, 19);
        assert_eq!(m.graph().node[1].input.len(), 2);
    }
}
