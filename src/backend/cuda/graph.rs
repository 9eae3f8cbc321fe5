//! The cuda backend's plan: an ONNX graph turned into layers over numbered buffers, with shapes
//! fixed at the cell's batch size and weights laid out for cuBLASLt. CPU-only, so it is tested
//! without a GPU.

use std::collections::HashMap;

use crate::model::onnx::{attr_int, float_data, node_label, OnnxModel};
use crate::model::tensor::TensorSpec;
use tract_onnx::pb;

/// Geometry of a convolution or pooling window over an NCHW tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// Batch, channels, height, width of the input.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels (convolutions).
    pub cout: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride height.
    pub sh: usize,
    /// Stride width.
    pub sw: usize,
    /// Padding top.
    pub ph: usize,
    /// Padding left.
    pub pw: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

/// One step of the plan; `x`/`y` index activation buffers, `w`/`b` weight buffers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Layer {
    /// im2col, a GEMM with the weights, then bias (+ a fused Relu) into NCHW.
    Conv {
        x: usize,
        w: usize,
        b: Option<usize>,
        y: usize,
        g: Window,
        relu: bool,
    },
    /// `y[batch, nout] = x[batch, k] · W (+ b)`, Relu fused as cuBLASLt's epilogue.
    Gemm {
        x: usize,
        w: usize,
        b: Option<usize>,
        y: usize,
        batch: usize,
        k: usize,
        nout: usize,
        trans_b: bool,
        relu: bool,
    },
    /// Elementwise max(x, 0).
    Relu { x: usize, y: usize, len: usize },
    /// Max pooling.
    MaxPool { x: usize, y: usize, g: Window },
}

/// A graph input or output and the buffer that holds it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlanIo {
    /// Name and shape at the cell's batch size.
    pub spec: TensorSpec,
    /// Activation buffer index.
    pub buffer: usize,
}

/// The whole plan.
/// Serialized (JSON) as the cuda backend's stored engine: weights and layers, no GPU state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// Layers in execution order.
    pub layers: Vec<Layer>,
    /// Host copies of the weights (f32), one per weight buffer.
    pub weights: Vec<Vec<f32>>,
    /// Element count of each activation buffer.
    pub buffer_sizes: Vec<usize>,
    /// Largest im2col buffer any convolution needs.
    pub max_cols: usize,
    /// Largest convolution GEMM output.
    pub max_gemm_out: usize,
    /// Graph inputs.
    pub inputs: Vec<PlanIo>,
    /// Graph outputs.
    pub outputs: Vec<PlanIo>,
}

struct Value {
    buffer: usize,
    shape: Vec<usize>,
}

fn ints(node: &pb::NodeProto, name: &str) -> Option<Vec<usize>> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.ints.iter().map(|&v| v.max(0) as usize).collect())
}

impl Plan {
    /// Plans `model` at batch size `batch`; names the node of any operator or attribute this
    /// backend does not run.
    pub fn from_model(model: &OnnxModel, batch: usize) -> Result<Plan, String> {
        let mut plan = Plan {
            layers: Vec::new(),
            weights: Vec::new(),
            buffer_sizes: Vec::new(),
            max_cols: 0,
            max_gemm_out: 0,
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        let mut values: HashMap<String, Value> = HashMap::new();
        let mut weight_ids: HashMap<String, (usize, Vec<usize>)> = HashMap::new();
        for input in model.inputs() {
            let shape = input
                .shape_at_batch(batch)
                .map_err(|e| format!("input {}: {e}", input.name))?;
            let buffer = plan.new_buffer(shape.iter().product());
            plan.inputs.push(PlanIo {
                spec: TensorSpec {
                    name: input.name.clone(),
                    shape: shape.clone(),
                },
                buffer,
            });
            values.insert(input.name, Value { buffer, shape });
        }
        let nodes = &model.graph().node;
        for (index, node) in nodes.iter().enumerate() {
            let label = node_label(node, index);
            let fail = |what: String| format!("node {label} ({}): {what}", node.op_type);
            let input = |i: usize| -> Result<&Value, String> {
                let name = node
                    .input
                    .get(i)
                    .ok_or_else(|| fail(format!("input {i} missing")))?;
                values
                    .get(name)
                    .ok_or_else(|| fail(format!("input {name} is not computed by the graph")))
            };
            let mut weight =
                |plan: &mut Plan, i: usize| -> Result<Option<(usize, Vec<usize>)>, String> {
                    let Some(name) = node.input.get(i).filter(|n| !n.is_empty()) else {
                        return Ok(None);
                    };
                    if let Some(w) = weight_ids.get(name) {
                        return Ok(Some(w.clone()));
                    }
                    let proto = model
                        .constant(name)
                        .ok_or_else(|| fail(format!("{name} must be a constant initializer")))?;
                    let data = float_data(proto)
                        .ok_or_else(|| fail(format!("{name} must be a float32 tensor")))?;
                    let dims: Vec<usize> = proto.dims.iter().map(|&d| d as usize).collect();
                    plan.weights.push(data);
                    let entry = (plan.weights.len() - 1, dims);
                    weight_ids.insert(name.clone(), entry.clone());
                    Ok(Some(entry))
                };
            let (buffer, shape) = match node.op_type.as_str() {
                "Conv" => {
                    let x = input(0)?;
                    let (w, wdims) = weight(&mut plan, 1)?.ok_or_else(|| fail("no weights".into()))?;
                    let b = weight(&mut plan, 2)?.map(|(b, _)| b);
                    if attr_int(node, "group").unwrap_or(1) != 1 {
                        return Err(fail("grouped convolutions are not supported yet".into()));
                    }
                    if ints(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
                        return Err(fail("dilated convolutions are not supported yet".into()));
                    }
                    let g = window(node, &x.shape, &wdims[2..], wdims[0]).map_err(fail)?;
                    if wdims.len() != 4 || wdims[1] != g.c {
                        return Err(fail(format!("weights {wdims:?} do not match input {:?}", x.shape)));
                    }
                    let p = g.n * g.oh * g.ow;
                    plan.max_cols = plan.max_cols.max(g.c * g.kh * g.kw * p);
                    plan.max_gemm_out = plan.max_gemm_out.max(g.cout * p);
                    let x = x.buffer;
                    let y = plan.new_buffer(g.cout * p);
                    plan.layers.push(Layer::Conv { x, w, b, y, g, relu: false });
                    (y, vec![g.n, g.cout, g.oh, g.ow])
                }
                "Gemm" => {
                    let x = input(0)?;
                    let (w, wdims) = weight(&mut plan, 1)?.ok_or_else(|| fail("no weights".into()))?;
                    let b = weight(&mut plan, 2)?;
                    let trans_b = attr_int(node, "transB").unwrap_or(0) == 1;
                    if attr_int(node, "transA").unwrap_or(0) != 0 {
                        return Err(fail("transA=1 is not supported yet".into()));
                    }
                    for (attr, default) in [("alpha", 1.0f32), ("beta", 1.0)] {
                        let v = node.attribute.iter().find(|a| a.name == attr).map_or(default, |a| a.f);
                        if v != 1.0 {
                            return Err(fail(format!("{attr}={v} is not supported yet (only 1)")));
                        }
                    }
                    if x.shape.len() != 2 || wdims.len() != 2 {
                        return Err(fail(format!("expects 2-D input and weights, got {:?} and {wdims:?}", x.shape)));
                    }
                    let (k, nout) = if trans_b { (wdims[1], wdims[0]) } else { (wdims[0], wdims[1]) };
                    if x.shape[1] != k {
                        return Err(fail(format!("input {:?} does not match weights {wdims:?}", x.shape)));
                    }
                    if let Some((_, bdims)) = &b {
                        if bdims.iter().product::<usize>() != nout {
                            return Err(fail(format!("bias {bdims:?} must have {nout} elements (per-output bias only)")));
                        }
                    }
                    let batch = x.shape[0];
                    let x = x.buffer;
                    let y = plan.new_buffer(batch * nout);
                    let b = b.map(|(b, _)| b);
                    plan.layers.push(Layer::Gemm { x, w, b, y, batch, k, nout, trans_b, relu: false });
                    (y, vec![batch, nout])
                }
                "Relu" => {
                    let x = input(0)?;
                    let shape = x.shape.clone();
                    let len = shape.iter().product();
                    let x = x.buffer;
                    // A Relu right after a Conv or Gemm whose output nothing else reads is fused.
                    let sole_reader = nodes.iter().filter(|n| n.input.contains(&node.input[0])).count() == 1;
                    if let Some(Layer::Conv { y, relu, .. } | Layer::Gemm { y, relu, .. }) = plan.layers.last_mut() {
                        if *y == x && sole_reader && !model.graph().output.iter().any(|o| o.name == node.input[0]) {
                            *relu = true;
                            values.insert(node.output[0].clone(), Value { buffer: x, shape });
                            continue;
                        }
                    }
                    let y = plan.new_buffer(len);
                    plan.layers.push(Layer::Relu { x, y, len });
                    (y, shape)
                }
                "MaxPool" => {
                    let x = input(0)?;
                    if ints(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1))
                        || attr_int(node, "ceil_mode").unwrap_or(0) != 0
                    {
                        return Err(fail("dilations and ceil_mode are not supported yet".into()));
                    }
                    let kernel = ints(node, "kernel_shape").ok_or_else(|| fail("no kernel_shape".into()))?;
                    let c = x.shape.get(1).copied().unwrap_or(0);
                    let g = window(node, &x.shape, &kernel, c).map_err(fail)?;
                    let x = x.buffer;
                    let y = plan.new_buffer(g.n * g.c * g.oh * g.ow);
                    plan.layers.push(Layer::MaxPool { x, y, g });
                    (y, vec![g.n, g.c, g.oh, g.ow])
                }
                "Reshape" | "Flatten" => {
                    let x = input(0)?;
                    let total: usize = x.shape.iter().product();
                    let shape = if node.op_type == "Flatten" {
                        let axis = attr_int(node, "axis").unwrap_or(1);
                        let axis = if axis < 0 { axis + x.shape.len() as i64 } else { axis } as usize;
                        let head: usize = x.shape[..axis.min(x.shape.len())].iter().product();
                        vec![head, total / head.max(1)]
                    } else {
                        let name = node.input.get(1).cloned().unwrap_or_default();
                        let proto = model
                            .constant(&name)
                            .ok_or_else(|| fail("the target shape must be a constant initializer".into()))?;
                        reshape(&x.shape, &int64s(proto)).map_err(fail)?
                    };
                    (x.buffer, shape)
                }
                other => {
                    return Err(fail(format!(
                        "operator {other} is not supported by the cuda backend yet \
                         (it runs Conv, Gemm, Relu, MaxPool, Reshape, Flatten; fix: use the reference backend for this model)"
                    )))
                }
            };
            let output = node.output.first().cloned().unwrap_or_default();
            values.insert(output, Value { buffer, shape });
        }
        for output in model.outputs() {
            let v = values
                .get(&output.name)
                .ok_or_else(|| format!("graph output {} is never computed", output.name))?;
            plan.outputs.push(PlanIo {
                spec: TensorSpec {
                    name: output.name.clone(),
                    shape: v.shape.clone(),
                },
                buffer: v.buffer,
            });
        }
        Ok(plan)
    }

    fn new_buffer(&mut self, len: usize) -> usize {
        self.buffer_sizes.push(len);
        self.buffer_sizes.len() - 1
    }
}

fn int64s(t: &pb::TensorProto) -> Vec<i64> {
    if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    } else {
        t.int64_data.clone()
    }
}

/// ONNX Reshape semantics: 0 copies the input dimension, one -1 takes the rest.
fn reshape(input: &[usize], target: &[i64]) -> Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    let mut shape: Vec<usize> = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            0 => shape.push(*input.get(i).ok_or("0 in the shape past the input's rank")?),
            -1 if infer.is_none() => {
                infer = Some(i);
                shape.push(1);
            }
            d if d > 0 => shape.push(d as usize),
            d => {
                return Err(format!(
                    "invalid dimension {d} in the target shape {target:?}"
                ))
            }
        }
    }
    let known: usize = shape.iter().product();
    if let Some(i) = infer {
        if known == 0 || total % known != 0 {
            return Err(format!("cannot reshape {input:?} to {target:?}"));
        }
        shape[i] = total / known;
    }
    if shape.iter().product::<usize>() != total {
        return Err(format!("cannot reshape {input:?} to {target:?}"));
    }
    Ok(shape)
}

/// Window geometry from kernel_shape/strides/pads (explicit pads only).
fn window(
    node: &pb::NodeProto,
    x: &[usize],
    kernel: &[usize],
    cout: usize,
) -> Result<Window, String> {
    if x.len() != 4 || kernel.len() != 2 {
        return Err(format!(
            "expects a 4-D NCHW input and a 2-D window, got {x:?} and {kernel:?}"
        ));
    }
    let auto_pad = node
        .attribute
        .iter()
        .find(|a| a.name == "auto_pad")
        .map(|a| String::from_utf8_lossy(&a.s).to_string());
    if auto_pad
        .as_deref()
        .is_some_and(|p| p != "NOTSET" && p != "VALID")
    {
        return Err("auto_pad SAME_* is not supported yet (export with explicit pads)".into());
    }
    let strides = ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
    let pads = ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
    if pads.len() != 4 || pads[0] != pads[2] || pads[1] != pads[3] {
        return Err(format!("asymmetric pads {pads:?} are not supported yet"));
    }
    let out = |size: usize, k: usize, s: usize, p: usize| -> Result<usize, String> {
        (size + 2 * p)
            .checked_sub(k)
            .map(|v| v / s.max(1) + 1)
            .ok_or_else(|| format!("window {kernel:?} larger than input {x:?}"))
    };
    Ok(Window {
        n: x[0],
        c: x[1],
        h: x[2],
        w: x[3],
        cout,
        kh: kernel[0],
        kw: kernel[1],
        sh: strides[0],
        sw: strides[1],
        ph: pads[0],
        pw: pads[1],
        oh: out(x[2], kernel[0], strides[0], pads[0])?,
        ow: out(x[3], kernel[1], strides[1], pads[1])?,
    })
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
    fn plans_the_demo_model_with_fused_relus() {
        let plan = Plan::from_model(&digits(), 4).unwrap();
        let kinds: Vec<&str> = plan
            .layers
            .iter()
            .map(|l| match l {
                Layer::Conv { relu: true, .. } => "conv+relu",
                Layer::Gemm { relu: true, .. } => "gemm+relu",
                Layer::Gemm { .. } => "gemm",
                Layer::MaxPool { .. } => "maxpool",
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            ["conv+relu", "maxpool", "conv+relu", "gemm+relu", "gemm"]
        );
        assert_eq!(plan.inputs[0].spec.shape, [4, 1, 8, 8]);
        assert_eq!(plan.outputs[0].spec.shape, [4, 10]);
        let Layer::Conv { g, .. } = &plan.layers[2] else {
            unreachable!()
        };
        assert_eq!((g.c, g.h, g.cout, g.oh), (8, 4, 16, 4));
        assert_eq!(plan.max_cols, 8 * 9 * 4 * 4 * 4);
    }

    #[test]
    fn plan_round_trips_through_its_stored_form() {
        let plan = Plan::from_model(&digits(), 2).unwrap();
        let bytes = serde_json::to_vec(&plan).unwrap();
        let back: Plan = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, plan, "weights must come back bit for bit");
    }

    #[test]
    fn reshape_follows_onnx_rules() {
        assert_eq!(reshape(&[2, 16, 4, 4], &[0, -1]).unwrap(), [2, 256]);
        assert_eq!(reshape(&[2, 3], &[3, 2]).unwrap(), [3, 2]);
        assert!(reshape(&[2, 3], &[4, -1]).is_err());
        assert!(reshape(&[2, 3], &[-2]).is_err());
    }

    #[test]
    fn unsupported_operator_names_the_node() {
        let mut model = digits();
        model.graph_mut().node[1].op_type = "Sigmoid".into();
        let err = Plan::from_model(&model, 1).unwrap_err();
        assert!(
            err.contains("Sigmoid") && err.contains("reference backend"),
            "{err}"
        );
    }
}
