//! The cuda backend's plan: an ONNX graph turned into layers over numbered buffers, with shapes
//! fixed at the cell's batch size, weights laid out for cuBLASLt, and the precision plan's
//! choices made concrete: per-tensor int8 scales become fake-quantization in the producing
//! layer's epilogue, and Conv/Gemm/MatMul layers whose input is quantized get int8 weights
//! (per output channel, max-abs / 127, as the reference backend and TensorRT do). CPU-only, so
//! it is tested without a GPU.
//!
//! This file holds the plan's types and the planner's graph-level state (values, weights, folded
//! constants); each operator family plans its nodes in `ops/`, and `layout.rs` decides the
//! tensor-core layouts.

use std::collections::HashMap;

use super::ops::{self, ConstTensor, NodeCtx};
use crate::model::onnx::{node_label, OnnxModel};
use crate::model::precision::{LayerPrecision, PrecisionPlan, TensorPrecision};
use crate::model::qdq::per_channel_scales;
use crate::model::tensor::TensorSpec;
use tract_onnx::pb;

/// Largest tensor or scratch buffer, in elements (kernels index with 32-bit integers).
pub const MAX_ELEMENTS: usize = 1 << 30;

/// Geometry of a convolution or pooling window over an NCHW tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// Batch size.
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

impl Window {
    /// Output positions (n · oh · ow), the GEMM's long side.
    pub fn positions(&self) -> usize {
        self.n * self.oh * self.ow
    }
    /// Output positions padded to a multiple of 4 (cuBLASLt's int8 kernels need it).
    pub fn positions_padded(&self) -> usize {
        round_up(self.positions(), 4)
    }
    /// Patch length (c · kh · kw), the GEMM's inner dimension.
    pub fn patch(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// A Gemm seen as a 1×1 convolution over `[batch, k, 1, 1]`.
    pub(crate) fn dense(batch: usize, k: usize, nout: usize) -> Window {
        Window {
            n: batch,
            c: k,
            h: 1,
            w: 1,
            cout: nout,
            kh: 1,
            kw: 1,
            sh: 1,
            sw: 1,
            ph: 0,
            pw: 0,
            oh: 1,
            ow: 1,
        }
    }
}

/// The int8 form of a Conv/Gemm: activations quantized with the input tensor's scale into
/// `[positions, kp]` int8 patches, weights `[cout, kp]` int8, int32 accumulation into
/// `[cout, positions padded to 4]`, then dequantized per output channel.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Int8Gemm {
    /// Scale of the input tensor (from the cache).
    pub x_scale: f32,
    /// Patch length padded to a multiple of 32 (one tensor-core k step).
    pub kp: usize,
    /// Index into [`Plan::int8_weights`].
    pub wq: usize,
    /// Index into [`Plan::scales`]: x_scale · weight scale, per output channel.
    pub dq: usize,
}

/// Element type of the tensor-core convolutions and of the NHWC tensors kept between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MmaKind {
    /// int8 × int8 → int32 (`int8`); NHWC tensors hold int8 codes of their cache scale.
    Int8,
    /// fp16 × fp16 → fp32 (`fp16`); NHWC tensors hold fp16.
    Fp16,
}

impl MmaKind {
    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            MmaKind::Int8 => 1,
            MmaKind::Fp16 => 2,
        }
    }
}

/// The tensor-core form of a convolution: an implicit GEMM over an NHWC input, or over im2col
/// patches `[positions, kp]` when the input is an NCHW tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MmaConv {
    /// Weights, `[cout][kh][kw][c]` for an NHWC input or `[cout][kp]` for patches: an index
    /// into [`Plan::int8_weights`] (int8) or [`Plan::weights`] (fp16).
    pub w: usize,
    /// Patch length padded to 32 bytes (patches only; 0 for an NHWC input).
    pub kp: usize,
}

/// Elementwise single-input operation.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum UnaryOp {
    /// Copy (with the layer's fake quantization).
    Identity,
    /// max(x, 0).
    Relu,
    /// min(max(x, lo), hi).
    Clip(f32, f32),
    /// 1 / (1 + e^-x).
    Sigmoid,
    /// tanh(x).
    Tanh,
    /// x for x ≥ 0, alpha · x below.
    LeakyRelu(f32),
    /// max(0, min(1, alpha · x + beta)).
    HardSigmoid(f32, f32),
    /// x · max(0, min(1, x / 6 + 1/2)).
    HardSwish,
    /// erf(x).
    Erf,
    /// x · Φ(x) (exact, with erf).
    Gelu,
    /// Gelu's tanh approximation.
    GeluTanh,
    /// √x.
    Sqrt,
    /// e^x.
    Exp,
    /// −x.
    Neg,
    /// |x|.
    Abs,
    /// x rounded to the nearest float16 (a Cast to float16 on the data path).
    ToFp16,
}

impl UnaryOp {
    /// Code and bounds for the `unary` kernel.
    pub fn code(self) -> (i32, f32, f32) {
        match self {
            UnaryOp::Identity => (0, 0.0, 0.0),
            UnaryOp::Relu => (1, 0.0, 0.0),
            UnaryOp::Clip(lo, hi) => (2, lo, hi),
            UnaryOp::Sigmoid => (3, 0.0, 0.0),
            UnaryOp::Tanh => (4, 0.0, 0.0),
            UnaryOp::LeakyRelu(alpha) => (5, alpha, 0.0),
            UnaryOp::HardSigmoid(alpha, beta) => (6, alpha, beta),
            UnaryOp::HardSwish => (7, 0.0, 0.0),
            UnaryOp::Erf => (8, 0.0, 0.0),
            UnaryOp::Gelu => (9, 0.0, 0.0),
            UnaryOp::GeluTanh => (10, 0.0, 0.0),
            UnaryOp::Sqrt => (11, 0.0, 0.0),
            UnaryOp::Exp => (12, 0.0, 0.0),
            UnaryOp::Neg => (13, 0.0, 0.0),
            UnaryOp::Abs => (14, 0.0, 0.0),
            UnaryOp::ToFp16 => (15, 0.0, 0.0),
        }
    }
}

/// Elementwise binary operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BinaryOp {
    Add,
    Mul,
    Sub,
    Div,
    Pow,
    Max,
    Min,
}

impl BinaryOp {
    /// The operation of an ONNX operator.
    pub fn of(op_type: &str) -> Option<BinaryOp> {
        Some(match op_type {
            "Add" => BinaryOp::Add,
            "Mul" => BinaryOp::Mul,
            "Sub" => BinaryOp::Sub,
            "Div" => BinaryOp::Div,
            "Pow" => BinaryOp::Pow,
            "Max" => BinaryOp::Max,
            "Min" => BinaryOp::Min,
            _ => return None,
        })
    }

    /// Code for the `binary` kernels.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// An input of an elementwise binary layer: an activation or a weight buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Operand {
    /// Activation buffer.
    Act(usize),
    /// Weight buffer.
    Weight(usize),
}

/// One step of the plan; `x`/`y` index activation buffers, `w`/`b` weight buffers. `q` is the
/// fake-quantization scale of the layer's output (0: none); `q_pre` that of a Conv/Gemm output
/// before its fused Relu.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Layer {
    /// im2col + GEMM (float), or int8 patches + int8 GEMM, then bias (+ Relu) into NCHW.
    Conv {
        x: usize,
        w: usize,
        b: Option<usize>,
        y: usize,
        g: Window,
        relu: bool,
        q_pre: f32,
        q: f32,
        int8: Option<Int8Gemm>,
        /// Set when the convolution runs on the tensor-core kernel ([`Plan::use_tensor_cores`]).
        #[serde(default)]
        mma: Option<MmaConv>,
    },
    /// `y[batch, nout] = x[batch, k] · W (+ b)` (Gemm and MatMul with constant weights).
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
        q_pre: f32,
        q: f32,
        int8: Option<Int8Gemm>,
    },
    /// A grouped (depthwise) or dilated convolution, computed directly at the engine's float
    /// type (bias, then the fused Relu and fake quantization as [`Layer::Conv`]).
    DirectConv {
        x: usize,
        w: usize,
        b: Option<usize>,
        y: usize,
        g: Window,
        groups: usize,
        dil: [usize; 2],
        relu: bool,
        q_pre: f32,
        q: f32,
    },
    /// Elementwise.
    Unary {
        x: usize,
        y: usize,
        len: usize,
        op: UnaryOp,
        q: f32,
    },
    /// Binary arithmetic with numpy broadcasting over at most 4 dimensions (then a fused Relu
    /// when `relu`: a residual Add's).
    Binary {
        a: Operand,
        b: Operand,
        y: usize,
        op: BinaryOp,
        dims: [usize; 4],
        a_strides: [usize; 4],
        b_strides: [usize; 4],
        #[serde(default)]
        relu: bool,
        q: f32,
    },
    /// Max or average pooling (GlobalAveragePool is a full-size window).
    Pool {
        x: usize,
        y: usize,
        g: Window,
        avg: bool,
        count_include_pad: bool,
        q: f32,
    },
    /// Per-channel `x · scale[c] + shift[c]` (a BatchNormalization that could not be folded).
    Affine {
        x: usize,
        y: usize,
        scale: usize,
        shift: usize,
        channels: usize,
        inner: usize,
        len: usize,
        q: f32,
    },
    /// Concatenation: each part `(buffer, chunk)` is copied into `y` at its offset within each
    /// of `outer` rows of `total` elements.
    Concat {
        parts: Vec<(usize, usize)>,
        y: usize,
        outer: usize,
        total: usize,
        q: f32,
    },
    /// A strided view copied out (Transpose, Slice, Split): output element at index
    /// `(i0..i5)` of `dims` reads `x[offset + Σ ik · strides[k]]`.
    Strided {
        x: usize,
        y: usize,
        len: usize,
        dims: [usize; 6],
        strides: [i64; 6],
        offset: usize,
        q: f32,
    },
    /// Resize of the two spatial axes of an NCHW tensor (nearest or bilinear).
    Resize {
        x: usize,
        y: usize,
        /// [n · c, h, w, oh, ow]
        dims: [usize; 5],
        /// Per axis (h, w): source coordinate = a · o + b.
        coord: [f32; 4],
        /// 0 nearest, 1 linear.
        linear: bool,
        /// Nearest rounding: 0 round_prefer_floor, 1 round_prefer_ceil, 2 floor, 3 ceil.
        rounding: i32,
        q: f32,
    },
    /// Softmax over `len` elements spaced `inner` apart, for each of `outer · inner` rows.
    Softmax {
        x: usize,
        y: usize,
        outer: usize,
        len: usize,
        inner: usize,
        q: f32,
    },
}

impl Layer {
    /// Short name of the layer's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Conv { .. } => "conv",
            Layer::DirectConv { groups: 1, .. } => "conv (dilated)",
            Layer::DirectConv { .. } => "conv (grouped)",
            Layer::Gemm { .. } => "gemm",
            Layer::Unary { .. } => "elementwise",
            Layer::Binary { .. } => "binary",
            Layer::Pool { avg: true, .. } => "avgpool",
            Layer::Pool { .. } => "maxpool",
            Layer::Affine { .. } => "affine",
            Layer::Concat { .. } => "concat",
            Layer::Softmax { .. } => "softmax",
            Layer::Strided { .. } => "copy",
            Layer::Resize { .. } => "resize",
        }
    }

    /// The int8 form of a GEMM layer, if it has one.
    pub fn int8(&self) -> Option<&Int8Gemm> {
        match self {
            Layer::Conv { int8, .. } | Layer::Gemm { int8, .. } => int8.as_ref(),
            _ => None,
        }
    }

    /// Drops the int8 form (best: the float GEMM was faster).
    pub fn drop_int8(&mut self) {
        if let Layer::Conv { int8, .. } | Layer::Gemm { int8, .. } = self {
            *int8 = None;
        }
    }

    /// The GEMM window of a Conv or Gemm layer.
    pub fn gemm_window(&self) -> Option<Window> {
        match self {
            Layer::Conv { g, .. } => Some(*g),
            Layer::Gemm { batch, k, nout, .. } => Some(Window::dense(*batch, *k, *nout)),
            _ => None,
        }
    }
}

/// A graph input or output and the buffer that holds it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlanIo {
    /// Name and shape at the cell's batch size.
    pub spec: TensorSpec,
    /// Activation buffer index.
    pub buffer: usize,
}

/// The whole plan. Serialized (JSON) as the cuda backend's stored engine: weights and layers,
/// no GPU state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// Layers in execution order.
    pub layers: Vec<Layer>,
    /// ONNX node label of each layer (for the per-layer report).
    pub layer_names: Vec<String>,
    /// Host copies of the float weights, one per weight buffer.
    pub weights: Vec<Vec<f32>>,
    /// Int8 weights of int8 GEMMs, `[mp, kp]` row-major.
    pub int8_weights: Vec<Vec<i8>>,
    /// fp32 vectors kept at fp32 whatever the engine's precision (dequantization scales).
    pub scales: Vec<Vec<f32>>,
    /// Element count of each activation buffer.
    pub buffer_sizes: Vec<usize>,
    /// Largest float im2col buffer any convolution needs.
    pub max_cols: usize,
    /// Largest float convolution GEMM output.
    pub max_gemm_out: usize,
    /// Largest int8 patch buffer.
    pub max_cols_i8: usize,
    /// Largest int32 accumulator buffer.
    pub max_acc: usize,
    /// Graph inputs.
    pub inputs: Vec<PlanIo>,
    /// Graph outputs.
    pub outputs: Vec<PlanIo>,
    /// Precision of each computing ONNX node, as reported in the record.
    pub report: Vec<LayerPrecision>,
    /// The tensor-core element type, when convolutions run on tensor cores.
    #[serde(default)]
    pub mma: Option<MmaKind>,
    /// Buffers stored NHWC in the tensor-core element type, with the scale of their int8
    /// codes (0 for fp16); `None` (or no entry) for the engine's NCHW layout.
    #[serde(default)]
    pub nhwc: Vec<Option<f32>>,
}

/// A planned tensor: its buffer, shape, and the int8 scale its values already carry.
#[derive(Clone)]
pub(crate) struct Value {
    pub buffer: usize,
    pub shape: Vec<usize>,
    /// Fake-quantization scale already applied to the buffer (0: none).
    pub q: f32,
}

/// An ints attribute as non-negative sizes.
pub(crate) fn ints(node: &pb::NodeProto, name: &str) -> Option<Vec<usize>> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.ints.iter().map(|&v| v.max(0) as usize).collect())
}

/// An ints attribute as written.
pub(crate) fn ints_i64(node: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.ints.clone())
}

/// A string attribute.
pub(crate) fn attr_str(node: &pb::NodeProto, name: &str) -> Option<String> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

/// A float attribute.
pub(crate) fn attr_float(node: &pb::NodeProto, name: &str) -> Option<f32> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.f)
}

pub(crate) fn round_up(v: usize, to: usize) -> usize {
    v.div_ceil(to) * to
}

/// Builds a [`Plan`] node by node.
pub(crate) struct Planner<'m> {
    pub model: &'m OnnxModel,
    pub plan: Plan,
    values: HashMap<String, Value>,
    /// Tensors folded at plan time.
    folded: HashMap<String, ConstTensor>,
    weight_ids: HashMap<String, (usize, Vec<usize>)>,
    /// Fake-quantization scale of each int8 tensor.
    scales: HashMap<String, f32>,
    /// Nodes whose GEMM runs int8.
    pub int8_nodes: std::collections::HashSet<usize>,
    pub opset: i64,
    /// The float type of the engine's layers, as the report names it.
    float: &'static str,
}

impl Plan {
    /// Plans `model` at batch size `batch` with the precision plan's tensor treatments; names
    /// the node of any operator or attribute this backend does not run.
    pub fn from_model(
        model: &OnnxModel,
        batch: usize,
        precision: &PrecisionPlan,
    ) -> Result<Plan, String> {
        let scales = precision
            .tensors
            .iter()
            .filter_map(|(name, t)| match t {
                TensorPrecision::Int8(s) => Some((name.clone(), *s)),
                _ => None,
            })
            .collect();
        let opset = model
            .proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(13, |o| o.version);
        let mut p = Planner {
            model,
            plan: Plan {
                layers: Vec::new(),
                layer_names: Vec::new(),
                weights: Vec::new(),
                int8_weights: Vec::new(),
                scales: Vec::new(),
                buffer_sizes: Vec::new(),
                max_cols: 0,
                max_gemm_out: 0,
                max_cols_i8: 0,
                max_acc: 0,
                inputs: Vec::new(),
                outputs: Vec::new(),
                report: precision.layers.clone(),
                mma: None,
                nhwc: Vec::new(),
            },
            values: HashMap::new(),
            folded: HashMap::new(),
            weight_ids: HashMap::new(),
            scales,
            int8_nodes: precision.int8_weight_nodes.clone(),
            opset,
            float: if precision.fp16_weights {
                "fp16"
            } else {
                "fp32"
            },
        };
        for input in model.inputs() {
            let shape = input
                .shape_at_batch(batch)
                .map_err(|e| format!("input {}: {e}", input.name))?;
            let len = shape.iter().product();
            let buffer = p.plan.new_buffer(len);
            p.plan.inputs.push(PlanIo {
                spec: TensorSpec {
                    name: input.name.clone(),
                    shape: shape.clone(),
                },
                buffer,
            });
            let mut value = Value {
                buffer,
                shape,
                q: 0.0,
            };
            let q = p.scale(&input.name);
            if q > 0.0 {
                // The graph input is quantized on entry, as its Q/DQ pair does in the reference.
                let name = format!("{}(quantize)", input.name);
                value = p.unary(name, buffer, value.shape, UnaryOp::Identity, q);
            }
            p.values.insert(input.name, value);
        }
        for (index, node) in model.graph().node.iter().enumerate() {
            let label = node_label(node, index);
            p.node(index, node, &label)
                .map_err(|what| format!("node {label} ({}): {what}", node.op_type))?;
        }
        let plan = &p.plan;
        let largest = plan
            .buffer_sizes
            .iter()
            .chain([
                &plan.max_cols,
                &plan.max_gemm_out,
                &plan.max_cols_i8,
                &plan.max_acc,
            ])
            .max()
            .copied()
            .unwrap_or(0);
        if largest >= MAX_ELEMENTS {
            return Err(format!(
                "a tensor of {largest} elements at batch {batch} exceeds the cuda backend's limit of {MAX_ELEMENTS} (32-bit indexing)\nfix: use a smaller batch size"
            ));
        }
        for output in model.outputs() {
            let v = p
                .values
                .get(&output.name)
                .ok_or_else(|| format!("graph output {} is never computed", output.name))?;
            p.plan.outputs.push(PlanIo {
                spec: TensorSpec {
                    name: output.name.clone(),
                    shape: v.shape.clone(),
                },
                buffer: v.buffer,
            });
        }
        Ok(p.plan)
    }

    pub(crate) fn new_buffer(&mut self, len: usize) -> usize {
        self.buffer_sizes.push(len);
        self.buffer_sizes.len() - 1
    }

    /// Whether buffer `b` is stored NHWC in the tensor-core element type.
    pub fn is_nhwc(&self, b: usize) -> bool {
        self.nhwc.get(b).is_some_and(Option::is_some)
    }

    /// Whether buffer `b` holds int8 codes (an NHWC tensor of an int8 tensor-core plan).
    pub fn holds_codes(&self, b: usize) -> bool {
        self.mma == Some(MmaKind::Int8) && self.is_nhwc(b)
    }

    /// Scale of the int8 codes of NHWC buffer `b` (0 for fp16 or an NCHW buffer).
    pub fn nhwc_scale(&self, b: usize) -> f32 {
        self.nhwc.get(b).copied().flatten().unwrap_or(0.0)
    }
}

impl Layer {
    /// The activation buffers this layer reads.
    pub fn reads(&self) -> Vec<usize> {
        match self {
            Layer::Conv { x, .. }
            | Layer::DirectConv { x, .. }
            | Layer::Gemm { x, .. }
            | Layer::Unary { x, .. }
            | Layer::Pool { x, .. }
            | Layer::Affine { x, .. }
            | Layer::Strided { x, .. }
            | Layer::Resize { x, .. }
            | Layer::Softmax { x, .. } => vec![*x],
            Layer::Binary { a, b, .. } => [a, b]
                .into_iter()
                .filter_map(|o| match o {
                    Operand::Act(x) => Some(*x),
                    Operand::Weight(_) => None,
                })
                .collect(),
            Layer::Concat { parts, .. } => parts.iter().map(|(x, _)| *x).collect(),
        }
    }
}

impl Planner<'_> {
    pub(crate) fn scale(&self, tensor: &str) -> f32 {
        self.scales.get(tensor).copied().unwrap_or(0.0)
    }

    pub(crate) fn push(&mut self, name: String, layer: Layer) {
        self.plan.layers.push(layer);
        self.plan.layer_names.push(name);
    }

    /// The planned value of a node's input `i`.
    pub(crate) fn input(&self, node: &pb::NodeProto, i: usize) -> Result<Value, String> {
        let name = node
            .input
            .get(i)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("input {i} missing"))?;
        self.values.get(name).cloned().ok_or_else(|| {
            if self.folded.contains_key(name) || self.model.constant(name).is_some() {
                format!("input {name} is a constant where this operator takes an activation")
            } else {
                format!("input {name} is not computed by the graph")
            }
        })
    }

    /// Records `value` as tensor `name`.
    pub(crate) fn set_value(&mut self, name: String, value: Value) {
        self.values.insert(name, value);
    }

    /// The constant a tensor holds: folded at plan time, or a weight.
    fn const_tensor(&self, name: &str) -> Option<ConstTensor> {
        if let Some(c) = self.folded.get(name) {
            return Some(c.clone());
        }
        self.model.constant(name).and_then(ConstTensor::from_proto)
    }

    pub(crate) fn is_constant(&self, node: &pb::NodeProto, i: usize) -> bool {
        node.input.get(i).is_some_and(|n| {
            !n.is_empty() && (self.folded.contains_key(n) || self.model.constant(n).is_some())
        })
    }

    /// Constant input `i` of a node.
    pub(crate) fn const_input(
        &self,
        node: &pb::NodeProto,
        i: usize,
    ) -> Result<ConstTensor, String> {
        let name = node.input.get(i).cloned().unwrap_or_default();
        self.const_tensor(&name).ok_or_else(|| {
            format!("{name} must be a constant (a weight, or computed from weights and shapes)")
        })
    }

    /// Records a node's first output as a constant folded at plan time.
    pub(crate) fn fold(&mut self, node: &pb::NodeProto, value: ConstTensor) {
        if let Some(out) = node.output.first() {
            self.folded.insert(out.clone(), value);
        }
    }

    /// The report says layer `name` ran at the engine's float type.
    pub(crate) fn report_float(&mut self, name: &str) {
        for entry in self.plan.report.iter_mut().filter(|l| l.layer == name) {
            entry.precision = self.float.into();
        }
    }

    /// Float data and dims of a constant input.
    pub(crate) fn constant(
        &self,
        node: &pb::NodeProto,
        i: usize,
    ) -> Result<(Vec<f32>, Vec<usize>), String> {
        let c = self.const_input(node, i)?;
        let data = match &c.data {
            ops::ConstData::F32(v) => v.clone(),
            ops::ConstData::I64(_) => {
                let name = node.input.get(i).cloned().unwrap_or_default();
                return Err(format!("{name} must be a float tensor"));
            }
        };
        Ok((data, c.dims))
    }

    /// Weight buffer of a constant input (uploaded once, shared between readers).
    pub(crate) fn weight(
        &mut self,
        node: &pb::NodeProto,
        i: usize,
    ) -> Result<Option<(usize, Vec<usize>)>, String> {
        let Some(name) = node.input.get(i).filter(|n| !n.is_empty()).cloned() else {
            return Ok(None);
        };
        if let Some(w) = self.weight_ids.get(&name) {
            return Ok(Some(w.clone()));
        }
        let (data, dims) = self.constant(node, i)?;
        let entry = (self.add_weight(data), dims);
        self.weight_ids.insert(name, entry.clone());
        Ok(Some(entry))
    }

    pub(crate) fn add_weight(&mut self, data: Vec<f32>) -> usize {
        self.plan.weights.push(data);
        self.plan.weights.len() - 1
    }

    /// Whether `tensor` is read by exactly one node and is not a graph output.
    pub(crate) fn sole_reader(&self, tensor: &str) -> bool {
        let g = self.model.graph();
        g.node
            .iter()
            .filter(|n| n.input.iter().any(|i| i == tensor))
            .count()
            == 1
            && !g.output.iter().any(|o| o.name == tensor)
    }

    /// The int8 form of a GEMM with float weights `w` laid out `[nout][k]` (`nk`) or `[k][nout]`.
    pub(crate) fn int8_gemm(
        &mut self,
        x_scale: f32,
        w: &[f32],
        k: usize,
        nout: usize,
        nk: bool,
    ) -> Int8Gemm {
        let kp = round_up(k, 32);
        let at = |o: usize, i: usize| if nk { w[o * k + i] } else { w[i * nout + o] };
        let rows: Vec<f32> = (0..nout * k).map(|j| at(j / k, j % k)).collect();
        let w_scales = per_channel_scales(&[nout as i64, k as i64], &rows, 0);
        let mut q = vec![0i8; nout * kp];
        for o in 0..nout {
            for i in 0..k {
                let v = (rows[o * k + i] / w_scales[o]).round_ties_even();
                q[o * kp + i] = v.clamp(-128.0, 127.0) as i8;
            }
        }
        let dq: Vec<f32> = w_scales.iter().map(|s| s * x_scale).collect();
        self.plan.int8_weights.push(q);
        self.plan.scales.push(dq);
        Int8Gemm {
            x_scale,
            kp,
            wq: self.plan.int8_weights.len() - 1,
            dq: self.plan.scales.len() - 1,
        }
    }

    /// Scratch sizes of a GEMM layer (both forms, so best can pick either).
    pub(crate) fn reserve(&mut self, g: &Window, conv: bool) {
        let (p, ck) = (g.positions(), g.patch());
        if conv {
            self.plan.max_cols = self.plan.max_cols.max(ck * p);
            self.plan.max_gemm_out = self.plan.max_gemm_out.max(g.cout * p);
        }
        let pp = g.positions_padded();
        self.plan.max_cols_i8 = self.plan.max_cols_i8.max(round_up(ck, 32) * pp);
        self.plan.max_acc = self.plan.max_acc.max(g.cout * pp);
    }

    fn node(&mut self, index: usize, node: &pb::NodeProto, label: &str) -> Result<(), String> {
        let out_name = node.output.first().cloned().unwrap_or_default();
        let n = NodeCtx {
            index,
            node,
            name: label.to_string(),
            q: self.scale(&out_name),
        };
        let family = ops::family_of(&node.op_type).ok_or_else(|| {
            format!(
                "operator {} is not supported by the cuda backend (it runs {}; fix: use the \
                 reference backend for this model)",
                node.op_type,
                ops::supported_ops()
            )
        })?;
        if let Some(value) = family.plan(self, &n)? {
            self.values.insert(out_name, value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ops::{broadcast, pad4, reshape, strides4};
    use super::*;
    use crate::cache::CalibrationCache;
    use crate::matrix::Precision;
    use crate::model::onnx::float_data;
    use crate::model::onnx::float_tensor;
    use crate::model::precision::plan as precision_plan;
    use std::path::{Path, PathBuf};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/digits")
            .join(name)
    }

    fn digits() -> OnnxModel {
        OnnxModel::load(&fixture("digits_cnn.onnx")).unwrap()
    }

    fn fp32(model: &OnnxModel, batch: usize) -> Result<Plan, String> {
        Plan::from_model(model, batch, &precision_plan(model, Precision::Fp32, None))
    }

    #[test]
    fn plans_the_demo_model_with_fused_relus() {
        let plan = fp32(&digits(), 4).unwrap();
        let kinds: Vec<&str> = plan
            .layers
            .iter()
            .map(|l| match l {
                Layer::Conv { relu: true, .. } => "conv+relu",
                Layer::Gemm { relu: true, .. } => "gemm+relu",
                Layer::Gemm { .. } => "gemm",
                Layer::Pool { avg: false, .. } => "maxpool",
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
        assert!(plan.layers.iter().all(|l| l.int8().is_none()));
    }

    #[test]
    fn int8_plans_take_the_cache_scales_and_quantize_weights_per_channel() {
        let model = digits();
        let cache = CalibrationCache::read(&fixture("digits_cnn.entropy.cache")).unwrap();
        let scale = |name: &str| {
            cache
                .entries
                .iter()
                .find(|e| e.name == name)
                .unwrap()
                .scale()
        };
        let pplan = precision_plan(&model, Precision::Int8, Some(&cache));
        let plan = Plan::from_model(&model, 2, &pplan).unwrap();
        // The graph input is quantized on entry with its own scale.
        assert!(
            matches!(plan.layers[0], Layer::Unary { op: UnaryOp::Identity, q, .. } if q == scale("input"))
        );
        let Layer::Conv {
            int8: Some(f),
            q_pre,
            q,
            relu: true,
            w,
            ..
        } = &plan.layers[1]
        else {
            panic!("{:?}", plan.layers[1])
        };
        assert_eq!(f.x_scale, scale("input"));
        assert_eq!((*q_pre, *q), (scale("conv1_out"), scale("relu1_out")));
        assert_eq!(f.kp, 32, "9 taps padded to 32");
        // Each int8 weight dequantizes to within half a step of the float weight.
        let (wq, dq, wf) = (
            &plan.int8_weights[f.wq],
            &plan.scales[f.dq],
            &plan.weights[*w],
        );
        let k = 9; // 1 input channel × 3 × 3
        for o in 0..8 {
            let step = dq[o] / f.x_scale;
            for i in 0..k {
                let back = f32::from(wq[o * f.kp + i]) * step;
                assert!(
                    (back - wf[o * k + i]).abs() <= step / 2.0 + 1e-7,
                    "channel {o}"
                );
            }
            assert!(
                wq[o * f.kp + k..(o + 1) * f.kp].iter().all(|&v| v == 0),
                "padding is zero"
            );
        }
        // The last Gemm writes the graph output: int8 GEMM, float output.
        let Layer::Gemm {
            int8: Some(_), q, ..
        } = plan.layers.last().unwrap()
        else {
            panic!()
        };
        assert_eq!(*q, 0.0);
        let stored: Plan = serde_json::from_slice(&serde_json::to_vec(&plan).unwrap()).unwrap();
        assert_eq!(
            stored, plan,
            "int8 weights and scales come back bit for bit"
        );
    }

    /// x → Conv(w, b) → BatchNormalization → y.
    fn conv_bn() -> OnnxModel {
        let mut model = digits();
        let g = model.graph_mut();
        g.node.truncate(1);
        let conv_out = g.node[0].output[0].clone();
        let c = 8;
        for (name, v) in [("gamma", 2.0), ("beta", 0.5), ("mean", 0.25), ("var", 4.0)] {
            g.initializer
                .push(float_tensor(name, &[c], &vec![v; c as usize]));
        }
        g.node.push(pb::NodeProto {
            op_type: "BatchNormalization".into(),
            name: "bn".into(),
            input: vec![
                conv_out,
                "gamma".into(),
                "beta".into(),
                "mean".into(),
                "var".into(),
            ],
            output: vec!["bn_out".into()],
            ..Default::default()
        });
        g.output[0].name = "bn_out".into();
        model
    }

    /// x → Conv → Add(conv, conv) → Relu → y, a residual block's tail.
    fn conv_add_relu() -> OnnxModel {
        let mut model = digits();
        let g = model.graph_mut();
        g.node.truncate(1);
        let conv_out = g.node[0].output[0].clone();
        let node = |op: &str, input: Vec<String>, output: &str| pb::NodeProto {
            op_type: op.into(),
            name: output.into(),
            input,
            output: vec![output.into()],
            ..Default::default()
        };
        g.node
            .push(node("Add", vec![conv_out.clone(), conv_out], "sum"));
        g.node.push(node("Relu", vec!["sum".into()], "y"));
        g.output[0].name = "y".into();
        model
    }

    #[test]
    fn a_relu_after_an_add_runs_in_the_add() {
        let model = conv_add_relu();
        let plan = fp32(&model, 2).unwrap();
        assert_eq!(plan.layers.len(), 2, "{:?}", plan.layers);
        assert!(
            matches!(plan.layers[1], Layer::Binary { relu: true, q, .. } if q == 0.0),
            "{:?}",
            plan.layers[1]
        );
        // int8 with a scale for the Add's output: the Relu reads the fake-quantized sum, so it
        // stays its own layer.
        let mut cache = CalibrationCache::read(&fixture("digits_cnn.entropy.cache")).unwrap();
        cache
            .entries
            .push(crate::cache::format::Entry::from_scale("sum", 0.05));
        let pplan = precision_plan(&model, Precision::Int8, Some(&cache));
        let plan = Plan::from_model(&model, 2, &pplan).unwrap();
        let tail = &plan.layers[plan.layers.len() - 2..];
        assert!(
            matches!(tail[0], Layer::Binary { relu: false, .. }),
            "{:?}",
            plan.layers
        );
        assert!(matches!(
            tail[1],
            Layer::Unary {
                op: UnaryOp::Relu,
                ..
            }
        ));
    }

    #[test]
    fn batch_norm_folds_into_the_convolution_before_it() {
        let model = conv_bn();
        let plan = fp32(&model, 1).unwrap();
        assert_eq!(plan.layers.len(), 1, "{:?}", plan.layers);
        let Layer::Conv { w, b: Some(b), .. } = &plan.layers[0] else {
            panic!()
        };
        let original = &plan.weights[0];
        // scale = gamma / sqrt(var + eps) ≈ 1, shift = beta - mean · scale.
        let a = 2.0 / (4.0f32 + 1e-5).sqrt();
        assert!((plan.weights[*w][3] - original[3] * a).abs() < 1e-6);
        let bias0 = model.constant("conv1.bias").and_then(float_data);
        let expect = bias0.map_or(0.0, |b| b[0]) * a + 0.5 - 0.25 * a;
        assert!(
            (plan.weights[*b][0] - expect).abs() < 1e-6,
            "{} vs {expect}",
            plan.weights[*b][0]
        );
    }

    #[test]
    fn batch_norm_on_a_quantized_conv_output_stays_a_separate_layer() {
        let model = conv_bn();
        let cache = CalibrationCache::read(&fixture("digits_cnn.entropy.cache")).unwrap();
        let pplan = precision_plan(&model, Precision::Int8, Some(&cache));
        let plan = Plan::from_model(&model, 1, &pplan).unwrap();
        assert!(
            matches!(
                plan.layers.last().unwrap(),
                Layer::Affine {
                    channels: 8,
                    inner: 64,
                    ..
                }
            ),
            "{:?}",
            plan.layers
        );
    }

    #[test]
    fn shapes_beyond_the_grid_are_refused_clearly() {
        // 70 000 rows through an int8 Gemm: its epilogue would need 70 000 blocks along z.
        let model = digits();
        let cache = CalibrationCache::read(&fixture("digits_cnn.entropy.cache")).unwrap();
        let pplan = precision_plan(&model, Precision::Int8, Some(&cache));
        let err = Plan::from_model(&model, 70_000, &pplan).unwrap_err();
        assert!(
            err.contains("not supported") && err.contains("65535"),
            "{err}"
        );
        assert!(
            err.starts_with("node conv1"),
            "names the first node that cannot run: {err}"
        );
    }

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast(&[2, 3, 4], &[4]).unwrap(), [2, 3, 4]);
        assert_eq!(broadcast(&[2, 1, 4], &[3, 1]).unwrap(), [2, 3, 4]);
        assert!(broadcast(&[2, 3], &[4]).is_err());
        let dims = pad4(&[2, 3, 4]);
        assert_eq!(dims, [1, 2, 3, 4]);
        assert_eq!(strides4(&[2, 3, 4]), [0, 12, 4, 1]);
        assert_eq!(strides4(&[4]), [0, 0, 0, 1]);
        assert_eq!(strides4(&[3, 1]), [0, 0, 1, 0]);
    }

    #[test]
    fn plan_round_trips_through_its_stored_form() {
        let plan = fp32(&digits(), 2).unwrap();
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
        model.graph_mut().node[1].op_type = "Hardmax".into();
        let err = fp32(&model, 1).unwrap_err();
        assert!(
            err.contains("Hardmax") && err.contains("reference backend"),
            "{err}"
        );
    }
}
