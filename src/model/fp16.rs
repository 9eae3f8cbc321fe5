//! An fp16-typed copy of a model, for strongly typed builders (TensorRT 11 has no fp16 builder
//! flag: a network runs fp16 where its tensors are fp16). Float initializers and constants
//! become float16, float graph inputs are cast to float16 on entry and float outputs cast back
//! to float on exit, so the model's interface (and calibench's fp32 buffers) stay as they were.
//!
//! A model with QuantizeLinear/DequantizeLinear (the cache's Q/DQ rewrite) becomes what `best`
//! means for a strongly typed builder: int8 where the cache has scales, fp16 elsewhere. fp16
//! Q/DQ needs opset 19 (scales of the activation's type), so such models are raised to it.

use std::collections::HashSet;

use super::onnx::{float_data, pb, OnnxModel};
use tract_onnx::pb::tensor_proto::DataType;

/// Suffix of every name this rewrite adds.
const TAG: &str = "__calibench_fp16";

/// Inputs that ONNX requires to stay float32 whatever the data type: (operator, input index).
const FLOAT32_ONLY: &[(&str, usize)] = &[("Resize", 1), ("Resize", 2), ("Upsample", 1)];

/// First opset whose QuantizeLinear/DequantizeLinear take float16 scales and activations.
const FP16_QDQ_OPSET: i64 = 19;

fn fp16_tensor(name: &str, dims: &[i64], data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: DataType::Float16 as i32,
        raw_data: data
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        ..Default::default()
    }
}

fn cast(input: &str, output: &str, to: DataType) -> pb::NodeProto {
    pb::NodeProto {
        op_type: "Cast".into(),
        name: format!("{output}_cast"),
        input: vec![input.into()],
        output: vec![output.into()],
        attribute: vec![pb::AttributeProto {
            name: "to".into(),
            i: to as i64,
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Converts a float tensor proto to float16 in place; leaves other types alone.
fn to_fp16(t: &mut pb::TensorProto) {
    if t.data_type == DataType::Float as i32 {
        if let Some(data) = float_data(t) {
            *t = fp16_tensor(&t.name, &t.dims, &data);
        }
    }
}

/// The fp16-typed model. Shape arithmetic (integer tensors, and float tensors cast from them,
/// with the weights only it reads) stays as it was: float16 sizes would be wrong above 2048,
/// and mixed types would make the model invalid.
pub fn apply(model: &OnnxModel) -> OnnxModel {
    let mut out = model.clone();
    let float = DataType::Float as i32;
    let is_float = |v: &pb::ValueInfoProto| {
        matches!(
            v.r#type.as_ref().and_then(|t| t.value.as_ref()),
            Some(pb::type_proto::Value::TensorType(t)) if t.elem_type == float
        )
    };
    let g = model.graph();
    let kinds = super::types::tensor_kinds(model);
    let data: HashSet<&str> = kinds.data_path.iter().map(String::as_str).collect();
    // A shape node computes on shape arithmetic only (no data-path input).
    let is_shape_node = |n: &pb::NodeProto| {
        !n.input.iter().any(|i| data.contains(i.as_str()))
            && n.input.iter().any(|i| kinds.shape_path.contains(i))
    };
    let keep32: HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| {
            FLOAT32_ONLY
                .iter()
                .filter(|(op, _)| *op == n.op_type)
                .filter_map(|(_, i)| n.input.get(*i).map(String::as_str))
        })
        .collect();
    // Weights read by shape nodes stay float32; those also read elsewhere get an fp16 copy.
    let mut read_by_shape: HashSet<&str> = HashSet::new();
    let mut read_elsewhere: HashSet<&str> = HashSet::new();
    for n in &g.node {
        let set = if is_shape_node(n) {
            &mut read_by_shape
        } else {
            &mut read_elsewhere
        };
        set.extend(
            n.input
                .iter()
                .filter(|i| kinds.weights.contains(*i))
                .map(String::as_str),
        );
    }
    let copied: HashSet<String> = read_by_shape
        .intersection(&read_elsewhere)
        .map(|s| s.to_string())
        .collect();
    let only_shape: HashSet<&str> = read_by_shape.difference(&read_elsewhere).copied().collect();
    let inputs: Vec<String> = g
        .input
        .iter()
        .filter(|i| is_float(i) && model.constant(&i.name).is_none())
        .map(|i| i.name.clone())
        .collect();
    let outputs: Vec<String> = g
        .output
        .iter()
        .filter(|o| is_float(o) && data.contains(o.name.as_str()))
        .map(|o| o.name.clone())
        .collect();
    let float_shape_tensors: HashSet<&str> = kinds
        .shape_path
        .iter()
        .filter(|t| kinds.elem_type(t) == Some(float))
        .map(String::as_str)
        .collect();

    let og = out.graph_mut();
    let mut copies = Vec::new();
    for init in og.initializer.iter_mut() {
        let name = init.name.clone();
        if keep32.contains(name.as_str()) || only_shape.contains(name.as_str()) {
            continue;
        }
        if copied.contains(&name) {
            let mut c = init.clone();
            c.name = format!("{name}{TAG}");
            to_fp16(&mut c);
            copies.push(c);
        } else {
            to_fp16(init);
        }
    }
    og.initializer.extend(copies);
    let mut nodes: Vec<pb::NodeProto> = inputs
        .iter()
        .map(|i| cast(i, &format!("{i}{TAG}"), DataType::Float16))
        .collect();
    let mut cast_in: HashSet<String> = HashSet::new();
    for mut n in std::mem::take(&mut og.node) {
        if is_shape_node(&n) {
            nodes.push(n);
            continue;
        }
        for (slot, name) in n.input.iter_mut().enumerate() {
            let float32_only = FLOAT32_ONLY.contains(&(n.op_type.as_str(), slot));
            if float32_only {
                continue;
            }
            if inputs.contains(name) || copied.contains(name.as_str()) {
                *name = format!("{name}{TAG}");
            } else if float_shape_tensors.contains(name.as_str()) {
                // A float size read by the data path: cast it once to fp16.
                if cast_in.insert(name.clone()) {
                    nodes.push(cast(name, &format!("{name}{TAG}"), DataType::Float16));
                }
                *name = format!("{name}{TAG}");
            }
        }
        for name in n.output.iter_mut() {
            if outputs.contains(name) {
                *name = format!("{name}{TAG}");
            }
        }
        // Constants that stay float32: sizes of shape arithmetic, and inputs ONNX requires in
        // float32 (Resize's roi and scales).
        let constant_for_shapes = n.op_type == "Constant"
            && n.output
                .first()
                .is_some_and(|o| only_shape.contains(o.as_str()) || keep32.contains(o.as_str()));
        let constant_copied = n.op_type == "Constant"
            && n.output
                .first()
                .is_some_and(|o| copied.contains(o.as_str()));
        if constant_copied {
            // The float32 original stays for shape nodes; an fp16 copy feeds the rest.
            let mut c = n.clone();
            c.output = vec![format!("{}{TAG}", n.output[0])];
            c.name = format!("{}{TAG}", n.name);
            for a in c.attribute.iter_mut() {
                if let Some(t) = a.t.as_mut() {
                    to_fp16(t);
                }
            }
            nodes.push(n);
            nodes.push(c);
            continue;
        }
        if !constant_for_shapes {
            for a in n.attribute.iter_mut() {
                if let Some(t) = a.t.as_mut() {
                    to_fp16(t); // Constant values (and other tensor attributes)
                }
                if n.op_type == "Cast" && a.name == "to" && a.i == DataType::Float as i64 {
                    a.i = DataType::Float16 as i64;
                }
            }
        }
        nodes.push(n);
    }
    nodes.extend(
        outputs
            .iter()
            .map(|o| cast(&format!("{o}{TAG}"), o, DataType::Float)),
    );
    og.node = nodes;
    // Intermediate types changed; let the builder infer them.
    og.value_info.clear();
    let qdq =
        |n: &pb::NodeProto| matches!(n.op_type.as_str(), "QuantizeLinear" | "DequantizeLinear");
    if g.node.iter().any(qdq) {
        super::opset::raise(&mut out, FP16_QDQ_OPSET);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn digits() -> OnnxModel {
        OnnxModel::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/digits/digits_cnn.onnx"),
        )
        .unwrap()
    }

    #[test]
    fn weights_become_fp16_and_the_interface_stays_fp32() {
        let model = digits();
        let fp16 = apply(&model);
        let g = fp16.graph();
        let f16 = DataType::Float16 as i32;
        for init in g.initializer.iter().filter(|i| i.name != "flatten_shape") {
            assert_eq!(init.data_type, f16, "{}", init.name);
            let original = model.constant(&init.name).unwrap();
            let a = float_data(original).unwrap();
            let b: Vec<f32> = init
                .raw_data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect();
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(half::f16::from_f32(*x).to_f32(), *y);
            }
        }
        assert_eq!(g.node.first().unwrap().op_type, "Cast", "input cast first");
        assert_eq!(g.node.first().unwrap().input, ["input"]);
        let last = g.node.last().unwrap();
        assert_eq!(
            (last.op_type.as_str(), last.output[0].as_str()),
            ("Cast", "logits")
        );
        assert_eq!(fp16.inputs()[0].name, "input");
        assert_eq!(fp16.outputs()[0].name, "logits");
        // Every node but the entry cast reads fp16 tensors only: nothing reads "input" itself.
        assert_eq!(
            g.node
                .iter()
                .filter(|n| n.input.iter().any(|i| i == "input"))
                .count(),
            1
        );
    }

    #[test]
    fn shape_arithmetic_stays_as_it_was() {
        let model = crate::model::types::tests::shape_subgraph_model();
        let fp16 = apply(&model);
        let g = fp16.graph();
        let node = |out: &str| g.node.iter().find(|n| n.output[0] == out).unwrap();
        // The cast of the shape to float keeps float32, and so does the weight it meets.
        assert_eq!(
            attr_to(node("shape_f")),
            Some(DataType::Float as i64),
            "{:?}",
            node("shape_f")
        );
        let half = g.initializer.iter().find(|t| t.name == "half").unwrap();
        assert_eq!(half.data_type, DataType::Float as i32);
        for int in ["starts", "ends", "minus1"] {
            let t = g.initializer.iter().find(|t| t.name == int).unwrap();
            assert_eq!(t.data_type, DataType::Int64 as i32, "{int}");
        }
        // The data path is fp16 between the entry and exit casts.
        assert_eq!(node("r").input, [format!("x{TAG}")]);
        assert_eq!(node("y").op_type, "Cast");
    }

    fn attr_to(n: &pb::NodeProto) -> Option<i64> {
        n.attribute.iter().find(|a| a.name == "to").map(|a| a.i)
    }

    #[test]
    fn resize_scales_in_a_constant_node_stay_float32() {
        // PaddleOCR's detector holds Resize's scales in a Constant node; fp16 there is an
        // invalid model ("Type 'tensor(float16)' of input parameter … of operator (Resize)").
        let mut model = crate::model::types::tests::shape_subgraph_model();
        let scales = pb::NodeProto {
            op_type: "Constant".into(),
            output: vec!["scales".into()],
            attribute: vec![pb::AttributeProto {
                name: "value".into(),
                t: Some(crate::model::onnx::float_tensor(
                    "",
                    &[4],
                    &[1.0, 1.0, 2.0, 2.0],
                )),
                r#type: pb::attribute_proto::AttributeType::Tensor as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        let resize = pb::NodeProto {
            op_type: "Resize".into(),
            name: "up".into(),
            input: vec!["r".into(), "".into(), "scales".into()],
            output: vec!["up".into()],
            ..Default::default()
        };
        let g = model.graph_mut();
        g.node.insert(1, scales);
        g.node.insert(2, resize);
        let fp16 = apply(&model);
        let c = fp16
            .graph()
            .node
            .iter()
            .find(|n| n.output.first().is_some_and(|o| o == "scales"))
            .unwrap();
        assert_eq!(
            c.attribute[0].t.as_ref().unwrap().data_type,
            DataType::Float as i32
        );
    }
}
