//! Element types of a model's tensors and its data path: the float tensors computed from the
//! model's inputs, which are what TensorRT quantizes (Q/DQ int8 tensors stay on it too). Shape subgraphs (Shape → Gather /
//! Slice → Concat → Reshape, int32/int64, and float tensors cast from them) are not on it: a
//! scale for them is meaningless and a QuantizeLinear on an int64 tensor is an invalid model.

use std::collections::{HashMap, HashSet};

use super::onnx::{attr_int, pb, OnnxModel};
use tract_onnx::pb::tensor_proto::DataType;

const FLOAT: i32 = DataType::Float as i32;
const INT64: i32 = DataType::Int64 as i32;
const BOOL: i32 = DataType::Bool as i32;

/// Operators whose outputs are booleans.
const BOOLEAN_OPS: &[&str] = &[
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "Not",
    "And",
    "Or",
    "Xor",
    "IsNaN",
    "IsInf",
];

/// Operators whose outputs are int64 indices or sizes.
const INDEX_OPS: &[&str] = &["Shape", "Size", "NonZero", "ArgMax", "ArgMin"];

/// What a model's tensors are: element types and which float tensors are on the data path.
#[derive(Debug, Clone, Default)]
pub struct TensorKinds {
    /// ONNX element type of every tensor whose type is known or inferred.
    pub types: HashMap<String, i32>,
    /// Float tensors computed from the model's float inputs (in graph order).
    pub data_path: Vec<String>,
    /// Shape arithmetic: results of Shape, Size, NonZero, ArgMax/ArgMin and index outputs, and
    /// everything computed from them without runtime values, float or not.
    pub shape_path: HashSet<String>,
    /// Initializers, Constant outputs and what is computed from them alone.
    pub weights: HashSet<String>,
}

impl TensorKinds {
    /// The element type of a tensor, if known.
    pub fn elem_type(&self, name: &str) -> Option<i32> {
        self.types.get(name).copied()
    }
}

fn declared_type(v: &pb::ValueInfoProto) -> Option<i32> {
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) if t.elem_type != 0 => Some(t.elem_type),
        _ => None,
    }
}

/// The element type of a node's output `slot`, from its operator and its inputs' types.
fn infer_output(node: &pb::NodeProto, slot: usize, types: &HashMap<String, i32>) -> Option<i32> {
    let input = |i: usize| {
        node.input
            .get(i)
            .filter(|n| !n.is_empty())
            .and_then(|n| types.get(n).copied())
    };
    let op = node.op_type.as_str();
    if BOOLEAN_OPS.contains(&op) {
        return Some(BOOL);
    }
    if INDEX_OPS.contains(&op) {
        return Some(INT64);
    }
    match op {
        "Constant" => node
            .attribute
            .iter()
            .find_map(|a| a.t.as_ref().map(|t| t.data_type))
            .or(Some(FLOAT)),
        "Cast" => attr_int(node, "to").map(|t| t as i32),
        "CastLike" => input(1),
        "ConstantOfShape" => node
            .attribute
            .iter()
            .find(|a| a.name == "value")
            .and_then(|a| a.t.as_ref().map(|t| t.data_type))
            .or(Some(FLOAT)),
        "TopK" | "MaxPool" if slot == 1 => Some(INT64),
        "Unique" if slot > 0 => Some(INT64),
        "QuantizeLinear" => input(2).or(Some(DataType::Uint8 as i32)),
        "DequantizeLinear" => input(1).or(Some(FLOAT)),
        "Where" => input(1).or(input(2)),
        "EyeLike" | "RandomNormal" | "RandomUniform" | "RandomNormalLike" | "RandomUniformLike"
        | "Multinomial" => attr_int(node, "dtype").map(|t| t as i32).or(Some(FLOAT)),
        _ => (0..node.input.len()).find_map(input),
    }
}

/// The element types and the data path of a model.
pub fn tensor_kinds(model: &OnnxModel) -> TensorKinds {
    let g = model.graph();
    let mut types: HashMap<String, i32> = HashMap::new();
    let mut declared: HashMap<String, i32> = HashMap::new();
    for v in g.value_info.iter().chain(&g.output).chain(&g.input) {
        if let Some(t) = declared_type(v) {
            declared.insert(v.name.clone(), t);
        }
    }
    let mut weights: HashSet<String> = HashSet::new();
    for t in &g.initializer {
        types.insert(t.name.clone(), t.data_type);
        weights.insert(t.name.clone());
    }
    let mut kinds = TensorKinds::default();
    // Runtime values: every graph input (float activations, and integer ones such as token ids)
    // and what is computed from them, except through the index operators, whose results are
    // shape arithmetic. The data path is the float part of it.
    let mut data: HashSet<String> = HashSet::new();
    for i in model.inputs() {
        let t = declared.get(&i.name).copied().unwrap_or(i.elem_type);
        types.insert(i.name.clone(), t);
        data.insert(i.name.clone());
        if t == FLOAT {
            kinds.data_path.push(i.name.clone());
        }
    }
    for node in &g.node {
        let inputs: Vec<&String> = node.input.iter().filter(|i| !i.is_empty()).collect();
        let from_data = inputs.iter().any(|i| data.contains(*i));
        let all_weights = node.op_type == "Constant" || inputs.iter().all(|i| weights.contains(*i));
        let index_op = INDEX_OPS.contains(&node.op_type.as_str());
        for (slot, out) in node.output.iter().enumerate() {
            if out.is_empty() {
                continue;
            }
            let t = declared
                .get(out)
                .copied()
                .or_else(|| infer_output(node, slot, &types))
                .unwrap_or(FLOAT);
            types.insert(out.clone(), t);
            let indices = index_op
                || (slot == 1 && matches!(node.op_type.as_str(), "TopK" | "MaxPool" | "Unique"));
            if all_weights {
                weights.insert(out.clone());
            } else if from_data && !indices {
                data.insert(out.clone());
                if t == FLOAT {
                    kinds.data_path.push(out.clone());
                }
            } else {
                kinds.shape_path.insert(out.clone());
            }
        }
    }
    kinds.types = types;
    kinds.weights = weights;
    kinds
}

/// A readable name of an ONNX element type.
pub fn type_name(t: i32) -> String {
    DataType::try_from(t)
        .map(|d| format!("{d:?}").to_lowercase())
        .unwrap_or_else(|_| format!("type {t}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::onnx::float_tensor;

    fn node(op: &str, inputs: &[&str], outputs: &[&str], to: Option<i64>) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            name: outputs[0].into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: to
                .map(|t| pb::AttributeProto {
                    name: "to".into(),
                    i: t,
                    r#type: pb::attribute_proto::AttributeType::Int as i32,
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    fn value(name: &str, elem: i32) -> pb::ValueInfoProto {
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: elem,
                    shape: None,
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// x → Relu → r; Shape(r) → Slice → Concat → Reshape(r, target) → y; Shape → Cast(float)
    /// → Mul(scale) → s (a float shape computation).
    pub(crate) fn shape_subgraph_model() -> OnnxModel {
        let mut ints = float_tensor("starts", &[1], &[0.0]);
        ints.data_type = INT64;
        ints.float_data.clear();
        ints.raw_data = 0i64.to_le_bytes().to_vec();
        let mut ends = ints.clone();
        ends.name = "ends".into();
        ends.raw_data = 1i64.to_le_bytes().to_vec();
        let mut minus1 = ints.clone();
        minus1.name = "minus1".into();
        minus1.raw_data = (-1i64).to_le_bytes().to_vec();
        let graph = pb::GraphProto {
            node: vec![
                node("Relu", &["x"], &["r"], None),
                node("Shape", &["r"], &["shape"], None),
                node("Slice", &["shape", "starts", "ends"], &["batch"], None),
                node("Concat", &["batch", "minus1"], &["target"], None),
                node("Reshape", &["r", "target"], &["y"], None),
                node("Cast", &["shape"], &["shape_f"], Some(FLOAT as i64)),
                node("Mul", &["shape_f", "half"], &["s"], None),
            ],
            initializer: vec![ints, ends, minus1, float_tensor("half", &[1], &[0.5])],
            input: vec![value("x", FLOAT)],
            output: vec![value("y", FLOAT), value("s", FLOAT)],
            ..Default::default()
        };
        OnnxModel {
            path: "shape.onnx".into(),
            proto: pb::ModelProto {
                graph: Some(graph),
                ..Default::default()
            },
        }
    }

    #[test]
    fn shape_subgraphs_are_not_on_the_data_path() {
        let k = tensor_kinds(&shape_subgraph_model());
        assert_eq!(k.data_path, ["x", "r", "y"]);
        for t in ["shape", "batch", "target"] {
            assert_eq!(k.elem_type(t), Some(INT64), "{t}");
            assert!(k.shape_path.contains(t), "{t}");
        }
        assert_eq!(k.elem_type("s"), Some(FLOAT));
        assert!(
            k.shape_path.contains("s"),
            "a float cast of a shape is shape arithmetic"
        );
        assert_eq!(type_name(INT64), "int64");
    }

    #[test]
    fn the_digits_cnn_is_all_data_path() {
        let m = OnnxModel::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/digits/digits_cnn.onnx"),
        )
        .unwrap();
        let k = tensor_kinds(&m);
        assert_eq!(k.data_path.len(), 10, "{:?}", k.data_path);
    }
}
