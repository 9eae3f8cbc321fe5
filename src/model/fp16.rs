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

/// The fp16-typed model.
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
    let inputs: Vec<String> = g
        .input
        .iter()
        .filter(|i| is_float(i) && model.constant(&i.name).is_none())
        .map(|i| i.name.clone())
        .collect();
    let outputs: Vec<String> = g
        .output
        .iter()
        .filter(|o| is_float(o))
        .map(|o| o.name.clone())
        .collect();

    let og = out.graph_mut();
    for init in og.initializer.iter_mut() {
        if !keep32.contains(init.name.as_str()) {
            to_fp16(init);
        }
    }
    let mut nodes: Vec<pb::NodeProto> = inputs
        .iter()
        .map(|i| cast(i, &format!("{i}{TAG}"), DataType::Float16))
        .collect();
    for mut n in std::mem::take(&mut og.node) {
        for (slot, name) in n.input.iter_mut().enumerate() {
            let float32_only = FLOAT32_ONLY.contains(&(n.op_type.as_str(), slot));
            if inputs.contains(name) && !float32_only {
                *name = format!("{name}{TAG}");
            }
        }
        for name in n.output.iter_mut() {
            if outputs.contains(name) {
                *name = format!("{name}{TAG}");
            }
        }
        for a in n.attribute.iter_mut() {
            if let Some(t) = a.t.as_mut() {
                to_fp16(t); // Constant values (and other tensor attributes)
            }
            if n.op_type == "Cast" && a.name == "to" && a.i == DataType::Float as i64 {
                a.i = DataType::Float16 as i64;
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
        out.raise_opset(FP16_QDQ_OPSET);
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
}
