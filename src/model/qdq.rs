//! Graph rewriting: a [`PrecisionPlan`] made concrete in the ONNX graph. Int8 tensors get
//! QuantizeLinear → DequantizeLinear pairs (scale from the cache, zero point 0), int8 layers'
//! weights get per-output-channel Q/DQ, fp16 tensors get Cast(float16) → Cast(float) pairs,
//! and fp16 weights are rounded in place.
//!
//! The int8 rewrite is also `calibench cache to-qdq`: an explicitly quantized model, which is
//! how a calibration cache stays useful on TensorRT versions without implicit calibration.

use std::collections::HashMap;

use super::onnx::{float_data, float_tensor, int8_tensor, pb, OnnxModel};
use super::precision::{weight_axis, PrecisionPlan, TensorPrecision};
use tract_onnx::pb::tensor_proto::DataType;

/// Minimum opset with per-axis QuantizeLinear/DequantizeLinear.
const QDQ_OPSET: i64 = 13;

/// Suffix of every name this rewrite adds.
const TAG: &str = "__calibench";

fn node(
    op: &str,
    name: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    attrs: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.to_string(),
        name,
        input: inputs,
        output: outputs,
        attribute: attrs,
        ..Default::default()
    }
}

fn int_attr(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_string(),
        i: value,
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        ..Default::default()
    }
}

/// Q → DQ nodes from `src` to `dst`, with named scale and zero point initializers.
fn qdq_nodes(
    src: &str,
    dst: &str,
    scale: &str,
    zero: &str,
    axis: Option<i64>,
) -> Vec<pb::NodeProto> {
    let q = format!("{dst}{TAG}_q");
    let attrs = || axis.map(|a| vec![int_attr("axis", a)]).unwrap_or_default();
    vec![
        node(
            "QuantizeLinear",
            format!("{q}_node"),
            vec![src.into(), scale.into(), zero.into()],
            vec![q.clone()],
            attrs(),
        ),
        node(
            "DequantizeLinear",
            format!("{dst}_node"),
            vec![q, scale.into(), zero.into()],
            vec![dst.into()],
            attrs(),
        ),
    ]
}

/// Cast(float16) → Cast(float) nodes from `src` to `dst`.
fn fp16_nodes(src: &str, dst: &str) -> Vec<pb::NodeProto> {
    let half = format!("{dst}{TAG}_f16");
    vec![
        node(
            "Cast",
            format!("{half}_node"),
            vec![src.into()],
            vec![half.clone()],
            vec![int_attr("to", DataType::Float16 as i64)],
        ),
        node(
            "Cast",
            format!("{dst}_node"),
            vec![half],
            vec![dst.into()],
            vec![int_attr("to", DataType::Float as i64)],
        ),
    ]
}

/// Per-channel symmetric scales (max-abs / 127) along `axis` of a tensor.
pub fn per_channel_scales(dims: &[i64], data: &[f32], axis: usize) -> Vec<f32> {
    let dims: Vec<usize> = dims.iter().map(|&d| d.max(0) as usize).collect();
    let Some(&channels) = dims.get(axis) else {
        return Vec::new();
    };
    let inner: usize = dims[axis + 1..].iter().product();
    if channels == 0 || inner == 0 {
        // An empty tensor: nothing to measure, every scale 1.
        return vec![1.0; channels];
    }
    let mut amax = vec![0f32; channels];
    for (i, v) in data.iter().enumerate() {
        let c = (i / inner) % channels;
        amax[c] = amax[c].max(v.abs());
    }
    amax.into_iter()
        .map(|a| if a > 0.0 { a / 127.0 } else { 1.0 })
        .collect()
}

/// Rewrites a model according to a plan.
pub fn apply(model: &OnnxModel, plan: &PrecisionPlan) -> OnnxModel {
    let mut out = model.clone();
    let graph_inputs: Vec<String> = model.inputs().into_iter().map(|i| i.name).collect();
    let producers: HashMap<String, usize> = model
        .producers()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();

    // Weights: fp16 rounding in place, or per-channel Q/DQ for int8 layers (placed right
    // before the layer, after the weight's producer when it is a Constant node).
    let mut head: Vec<pb::NodeProto> = Vec::new();
    let mut before_node: HashMap<usize, Vec<pb::NodeProto>> = HashMap::new();
    let mut new_inits: Vec<pb::TensorProto> = Vec::new();
    let mut weight_input: HashMap<usize, String> = HashMap::new();
    for &index in &plan.int8_weight_nodes {
        let n = &model.graph().node[index];
        let Some((slot, axis)) = weight_axis(model, n) else {
            continue;
        };
        let w = model
            .constant(&n.input[slot])
            .expect("weight_axis checked it");
        let Some(data) = float_data(w) else { continue };
        let elements = w.dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d));
        if data.is_empty() || elements != Some(data.len() as i64) {
            // An empty (zero-length) or malformed weight: nothing to quantize.
            continue;
        }
        let axis_u = axis as usize;
        let scales = per_channel_scales(&w.dims, &data, axis_u);
        let base = format!("{}{TAG}_w{index}", n.input[slot]);
        let (scale, zero, dq) = (
            format!("{base}_scale"),
            format!("{base}_zero"),
            format!("{base}_dq"),
        );
        new_inits.push(float_tensor(&scale, &[scales.len() as i64], &scales));
        new_inits.push(int8_tensor(
            &zero,
            &[scales.len() as i64],
            &vec![0; scales.len()],
        ));
        before_node.entry(index).or_default().extend(qdq_nodes(
            &n.input[slot],
            &dq,
            &scale,
            &zero,
            Some(axis),
        ));
        weight_input.insert(index, dq);
    }
    if plan.fp16_weights {
        let int8_weights: std::collections::HashSet<&str> = plan
            .int8_weight_nodes
            .iter()
            .filter_map(|&i| model.graph().node[i].input.get(1).map(String::as_str))
            .collect();
        let round = |t: &mut pb::TensorProto| {
            if let Some(data) = float_data(t) {
                let rounded: Vec<f32> = data
                    .iter()
                    .map(|&v| half::f16::from_f32(v).to_f32())
                    .collect();
                *t = float_tensor(&t.name, &t.dims, &rounded);
            }
        };
        let g = out.graph_mut();
        for init in &mut g.initializer {
            if !int8_weights.contains(init.name.as_str()) {
                round(init);
            }
        }
        // Weights held in Constant nodes (Paddle and TensorFlow exports).
        for n in g.node.iter_mut().filter(|n| n.op_type == "Constant") {
            if n.output
                .first()
                .is_some_and(|o| int8_weights.contains(o.as_str()))
            {
                continue;
            }
            for a in n.attribute.iter_mut().filter(|a| a.name == "value") {
                if let Some(t) = a.t.as_mut() {
                    round(t);
                }
            }
        }
    }

    // Activations: a chain after each treated tensor.
    let mut after_node: HashMap<usize, Vec<pb::NodeProto>> = HashMap::new();
    let mut renamed_outputs: HashMap<usize, Vec<(usize, String)>> = HashMap::new();
    let mut consumer_rename: HashMap<String, String> = HashMap::new();
    for (name, t) in &plan.tensors {
        if *t == TensorPrecision::Fp32 {
            continue;
        }
        // Where the chain starts and ends: a produced tensor is renamed at its producer and the
        // chain rebuilds the original name; a graph input keeps its name and consumers move.
        let (src, dst, slot) = if let Some(&p) = producers.get(name) {
            let raw = format!("{name}{TAG}_raw");
            let pos = model.graph().node[p]
                .output
                .iter()
                .position(|o| o == name)
                .expect("producer outputs it");
            renamed_outputs
                .entry(p)
                .or_default()
                .push((pos, raw.clone()));
            (raw, name.clone(), Some(p))
        } else if graph_inputs.contains(name) {
            let sim = format!("{name}{TAG}_sim");
            consumer_rename.insert(name.clone(), sim.clone());
            (name.clone(), sim, None)
        } else {
            continue;
        };
        let chain = match *t {
            TensorPrecision::Int8(s) => {
                let (scale, zero) = (format!("{name}{TAG}_scale"), format!("{name}{TAG}_zero"));
                new_inits.push(float_tensor(&scale, &[], &[s]));
                new_inits.push(int8_tensor(&zero, &[], &[0]));
                qdq_nodes(&src, &dst, &scale, &zero, None)
            }
            TensorPrecision::Fp16 => fp16_nodes(&src, &dst),
            TensorPrecision::Fp32 => unreachable!("skipped above"),
        };
        match slot {
            Some(p) => after_node.entry(p).or_default().extend(chain),
            None => head.extend(chain),
        }
    }

    let mut nodes = head;
    let originals = std::mem::take(&mut out.graph_mut().node);
    for (index, mut n) in originals.into_iter().enumerate() {
        for i in n.input.iter_mut() {
            if let Some(new) = consumer_rename.get(i) {
                *i = new.clone();
            }
        }
        if let Some(dq) = weight_input.get(&index) {
            n.input[1] = dq.clone();
        }
        nodes.extend(before_node.remove(&index).unwrap_or_default());
        for (pos, raw) in renamed_outputs.remove(&index).unwrap_or_default() {
            n.output[pos] = raw;
        }
        nodes.push(n);
        nodes.extend(after_node.remove(&index).unwrap_or_default());
    }
    let g = out.graph_mut();
    g.node = nodes;
    g.initializer.extend(new_inits);
    // Intermediate shapes no longer describe renamed tensors; let the runtime infer them.
    g.value_info.clear();
    if plan
        .tensors
        .iter()
        .any(|(_, t)| matches!(t, TensorPrecision::Int8(_)))
        || !plan.int8_weight_nodes.is_empty()
    {
        super::opset::raise(&mut out, QDQ_OPSET);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_scales_along_an_axis() {
        // [2, 3]: channels on axis 0 are rows, on axis 1 are columns.
        let data = [1.0, -2.0, 0.5, -4.0, 3.0, 0.0];
        let rows = per_channel_scales(&[2, 3], &data, 0);
        assert_eq!(rows, vec![2.0 / 127.0, 4.0 / 127.0]);
        let cols = per_channel_scales(&[2, 3], &data, 1);
        assert_eq!(cols, vec![4.0 / 127.0, 3.0 / 127.0, 0.5 / 127.0]);
        assert_eq!(
            per_channel_scales(&[1, 2], &[0.0, 0.0], 1),
            vec![1.0, 1.0],
            "all-zero channel"
        );
    }
}
