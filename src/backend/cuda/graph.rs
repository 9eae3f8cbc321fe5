//! The cuda backend's plan: an ONNX graph turned into layers over numbered buffers, with shapes
//! fixed at the cell's batch size, weights laid out for cuBLASLt, and the precision plan's
//! choices made concrete: per-tensor int8 scales become fake-quantization in the producing
//! layer's epilogue, and Conv/Gemm/MatMul layers whose input is quantized get int8 weights
//! (per output channel, max-abs / 127, as the reference backend and TensorRT do). CPU-only, so
//! it is tested without a GPU.

use std::collections::HashMap;

use crate::matrix::Precision;
use crate::model::onnx::{attr_int, float_data, node_label, OnnxModel};
use crate::model::precision::{LayerPrecision, PrecisionPlan, TensorPrecision};
use crate::model::qdq::per_channel_scales;
use crate::model::tensor::TensorSpec;
use tract_onnx::pb;

/// Largest tensor or scratch buffer, in elements (kernels index with 32-bit integers).
pub const MAX_ELEMENTS: usize = 1 << 30;

/// Operators the cuda backend runs.
pub const SUPPORTED_OPS: &str = "Conv, Gemm, MatMul, Add, Mul, Relu, Clip, Sigmoid, MaxPool, \
AveragePool, GlobalAveragePool, BatchNormalization, Flatten, Reshape, Concat, Softmax";

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
    fn dense(batch: usize, k: usize, nout: usize) -> Window {
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
}

impl UnaryOp {
    /// Code and bounds for the `unary` kernel.
    pub fn code(self) -> (i32, f32, f32) {
        match self {
            UnaryOp::Identity => (0, 0.0, 0.0),
            UnaryOp::Relu => (1, 0.0, 0.0),
            UnaryOp::Clip(lo, hi) => (2, lo, hi),
            UnaryOp::Sigmoid => (3, 0.0, 0.0),
        }
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
    /// Elementwise.
    Unary {
        x: usize,
        y: usize,
        len: usize,
        op: UnaryOp,
        q: f32,
    },
    /// Add or Mul with numpy broadcasting over at most 4 dimensions.
    Binary {
        a: Operand,
        b: Operand,
        y: usize,
        mul: bool,
        dims: [usize; 4],
        a_strides: [usize; 4],
        b_strides: [usize; 4],
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
            Layer::Gemm { .. } => "gemm",
            Layer::Unary { .. } => "elementwise",
            Layer::Binary { .. } => "binary",
            Layer::Pool { avg: true, .. } => "avgpool",
            Layer::Pool { .. } => "maxpool",
            Layer::Affine { .. } => "affine",
            Layer::Concat { .. } => "concat",
            Layer::Softmax { .. } => "softmax",
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

#[derive(Clone)]
struct Value {
    buffer: usize,
    shape: Vec<usize>,
    /// Fake-quantization scale already applied to the buffer (0: none).
    q: f32,
}

fn ints(node: &pb::NodeProto, name: &str) -> Option<Vec<usize>> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.ints.iter().map(|&v| v.max(0) as usize).collect())
}

fn attr_float(node: &pb::NodeProto, name: &str) -> Option<f32> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.f)
}

fn round_up(v: usize, to: usize) -> usize {
    v.div_ceil(to) * to
}

/// Builds a [`Plan`] node by node.
struct Planner<'m> {
    model: &'m OnnxModel,
    plan: Plan,
    values: HashMap<String, Value>,
    weight_ids: HashMap<String, (usize, Vec<usize>)>,
    /// Fake-quantization scale of each int8 tensor.
    scales: HashMap<String, f32>,
    /// Nodes whose GEMM runs int8.
    int8_nodes: std::collections::HashSet<usize>,
    opset: i64,
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
            weight_ids: HashMap::new(),
            scales,
            int8_nodes: precision.int8_weight_nodes.clone(),
            opset,
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

    fn new_buffer(&mut self, len: usize) -> usize {
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

    /// Moves convolutions onto tensor cores (`mma.sync`; compute capability 8.0 or newer):
    /// every Conv with an int8 form (`Int8`) or every Conv (`Fp16`) runs the implicit-GEMM
    /// kernel, and a tensor written by such a convolution (or by a pool or a same-shape
    /// elementwise layer of such tensors) and read only by such convolutions, pools and
    /// elementwise layers stays NHWC in the kernel's element type between them: int8 codes of
    /// its cache scale, exact since that scale already rounds it, or fp16. Every other tensor
    /// keeps the engine's NCHW layout and type.
    pub fn use_tensor_cores(&mut self, kind: MmaKind) {
        let bytes = kind.bytes();
        let capable = |layer: &Layer| match layer {
            Layer::Conv { int8, g, .. } => {
                g.cout % 2 == 0 && (kind == MmaKind::Fp16 || int8.is_some())
            }
            _ => false,
        };
        let mut readers: Vec<Vec<usize>> = vec![Vec::new(); self.buffer_sizes.len()];
        for (i, layer) in self.layers.iter().enumerate() {
            for b in layer.reads() {
                readers[b].push(i);
            }
        }
        let io: Vec<usize> = self
            .inputs
            .iter()
            .chain(&self.outputs)
            .map(|io| io.buffer)
            .collect();
        // Candidates: each tensor a convolution writes, and (in layer order) what a pool or a
        // same-shape elementwise layer makes of candidates, as ([n, c, h, w], scale).
        let mut candidate: Vec<Option<([usize; 4], f32)>> = vec![None; self.buffer_sizes.len()];
        for layer in &self.layers {
            let written = match layer {
                Layer::Conv { y, g, q, .. } if capable(layer) => {
                    Some((*y, [g.n, g.cout, g.oh, g.ow], *q))
                }
                Layer::Pool { x, y, g, q, .. } if candidate[*x].is_some() => {
                    Some((*y, [g.n, g.c, g.oh, g.ow], *q))
                }
                _ => elementwise_nhwc(layer, &candidate),
            };
            if let Some((y, shape, q)) = written {
                let exact = kind == MmaKind::Fp16 || q > 0.0;
                if exact && (shape[1] * bytes).is_multiple_of(32) && !io.contains(&y) {
                    candidate[y] = Some((shape, q));
                }
            }
        }
        // A candidate stays NHWC when its writer's inputs did and every reader reads NHWC:
        // a tensor-core convolution or a pool of its shape (which may write either layout),
        // or an elementwise layer whose output (and other input) stays NHWC too. Dropping one
        // can drop others, so repeat until nothing changes.
        let mut nhwc: Vec<bool> = candidate.iter().map(Option::is_some).collect();
        loop {
            let mut changed = false;
            for y in 0..nhwc.len() {
                let Some((shape, q)) = candidate[y] else {
                    continue;
                };
                if !nhwc[y] {
                    continue;
                }
                let writer_ok = self.layers.iter().all(|l| match l {
                    Layer::Pool { x, y: py, .. } if *py == y => nhwc[*x],
                    Layer::Unary { y: uy, .. } | Layer::Binary { y: uy, .. } if *uy == y => {
                        l.reads().iter().all(|&x| nhwc[x])
                    }
                    _ => true,
                });
                let reader_ok = |&r: &usize| match &self.layers[r] {
                    Layer::Conv { x, g, int8, .. } if capable(&self.layers[r]) => {
                        *x == y
                            && [g.n, g.c, g.h, g.w] == shape
                            && int8.as_ref().is_none_or(|f| f.x_scale == q)
                    }
                    Layer::Pool { x, g, .. } => *x == y && [g.n, g.c, g.h, g.w] == shape,
                    l @ (Layer::Unary { y: out, .. } | Layer::Binary { y: out, .. }) => {
                        nhwc[*out] && l.reads().iter().all(|&x| nhwc[x])
                    }
                    _ => false,
                };
                if !writer_ok || readers[y].is_empty() || !readers[y].iter().all(reader_ok) {
                    nhwc[y] = false;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let scales: Vec<Option<f32>> = candidate
            .iter()
            .zip(&nhwc)
            .map(|(c, &keep)| c.filter(|_| keep).map(|(_, q)| q))
            .collect();
        for i in 0..self.layers.len() {
            if !capable(&self.layers[i]) {
                continue;
            }
            let Layer::Conv { x, w, g, int8, .. } = &self.layers[i] else {
                continue;
            };
            let (x, w, g, int8) = (*x, *w, *g, *int8);
            let patch = g.patch();
            let taps_last = |stride: usize, at: &dyn Fn(usize) -> usize| -> Vec<usize> {
                // Source index of each [o][kh][kw][c] entry in an [o][c][kh][kw] row of `stride`.
                let taps = g.kh * g.kw;
                (0..g.cout * patch)
                    .map(|j| {
                        let (o, r) = (j / patch, j % patch);
                        let (tap, c) = (r / g.c, r % g.c);
                        at(o * stride + c * taps + tap)
                    })
                    .collect()
            };
            let form = match (kind, int8) {
                (MmaKind::Int8, Some(f)) if nhwc[x] => {
                    let wq = &self.int8_weights[f.wq];
                    let order = taps_last(f.kp, &|i| i);
                    self.int8_weights
                        .push(order.iter().map(|&i| wq[i]).collect());
                    MmaConv {
                        w: self.int8_weights.len() - 1,
                        kp: 0,
                    }
                }
                (MmaKind::Int8, Some(f)) => MmaConv { w: f.wq, kp: f.kp },
                (MmaKind::Fp16, _) if nhwc[x] => {
                    let wf = &self.weights[w];
                    let order = taps_last(patch, &|i| i);
                    self.weights.push(order.iter().map(|&i| wf[i]).collect());
                    MmaConv {
                        w: self.weights.len() - 1,
                        kp: 0,
                    }
                }
                (MmaKind::Fp16, _) => self.push_fp16_patch_weights(w, g),
                (MmaKind::Int8, None) => continue,
            };
            if let Layer::Conv { mma, .. } = &mut self.layers[i] {
                *mma = Some(form);
            }
        }
        self.mma = Some(kind);
        self.nhwc = scales;
        self.drop_redundant_quantization();
    }

    /// Convolutions on tensor cores as a precision runs them: those with an int8 form at int8
    /// (the others stay cuBLASLt fp32), all at fp16, and at best those with an int8 form at
    /// int8 and the others at fp16 over NCHW tensors. fp32 keeps strict cuBLASLt fp32.
    pub fn use_tensor_cores_at(&mut self, precision: Precision) {
        match precision {
            Precision::Int8 => self.use_tensor_cores(MmaKind::Int8),
            Precision::Best => {
                self.use_tensor_cores(MmaKind::Int8);
                self.use_fp16_tensor_cores_for_float_convolutions();
            }
            Precision::Fp16 => self.use_tensor_cores(MmaKind::Fp16),
            Precision::Fp32 => {}
        }
    }

    /// best (an int8 tensor-core plan on an fp16 engine): each convolution left without an int8
    /// form runs the fp16 tensor-core kernel, gathering its patches from the NCHW fp16 tensor it
    /// reads and writing NCHW. Runs after [`Plan::use_tensor_cores`]`(Int8)`, which keeps every
    /// tensor such a convolution touches NCHW (it is neither a writer nor a reader of codes).
    fn use_fp16_tensor_cores_for_float_convolutions(&mut self) {
        for i in 0..self.layers.len() {
            let Layer::Conv {
                w,
                g,
                int8: None,
                mma: None,
                ..
            } = self.layers[i]
            else {
                continue;
            };
            if g.cout % 2 != 0 {
                continue;
            }
            let form = self.push_fp16_patch_weights(w, g);
            if let Layer::Conv { mma, .. } = &mut self.layers[i] {
                *mma = Some(form);
            }
        }
    }

    /// Precision layer `i` computes at: `int8` for an int8 GEMM or convolution and for a layer
    /// over int8 codes (pools and elementwise layers between tensor-core convolutions), else
    /// `float` (the engine's type).
    pub fn layer_precision<'a>(&self, i: usize, float: &'a str) -> &'a str {
        let layer = &self.layers[i];
        let on_codes = layer.reads().first().is_some_and(|&x| self.holds_codes(x));
        if on_codes || layer.int8().is_some() {
            "int8"
        } else {
            float
        }
    }

    /// Bytes of the largest patch matrix a tensor-core convolution over an NCHW input needs:
    /// one row of its padded patch per output position.
    pub fn max_patch_bytes(&self) -> usize {
        (0..self.layers.len())
            .filter_map(|i| match &self.layers[i] {
                Layer::Conv {
                    g, mma: Some(m), ..
                } if m.kp > 0 => Some(g.positions() * m.kp * self.conv_kind(i).bytes()),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Element type tensor-core convolution `i` computes in: int8 in an int8 plan when it has
    /// an int8 form, fp16 otherwise (fp16 plans, and best's float convolutions).
    pub fn conv_kind(&self, i: usize) -> MmaKind {
        match (self.mma, self.layers[i].int8()) {
            (Some(MmaKind::Int8), Some(_)) => MmaKind::Int8,
            _ => MmaKind::Fp16,
        }
    }

    /// best: layer `name` runs its float form (its int8 form was slower); the report says so.
    pub fn drop_int8_of(&mut self, name: &str) {
        for (layer, _) in self
            .layers
            .iter_mut()
            .zip(&self.layer_names)
            .filter(|(_, n)| *n == name)
        {
            layer.drop_int8();
        }
        for entry in self.report.iter_mut().filter(|l| l.layer == name) {
            entry.precision = "fp16".into();
        }
    }

    /// Adds the fp16 weights of convolution weights `w` for gathered patches, `[cout][kp]` with
    /// the patch padded to 16 elements (32 bytes), and returns that tensor-core form.
    fn push_fp16_patch_weights(&mut self, w: usize, g: Window) -> MmaConv {
        let patch = g.patch();
        let kp = round_up(patch, 16);
        let wf = &self.weights[w];
        let mut padded = vec![0f32; g.cout * kp];
        for o in 0..g.cout {
            padded[o * kp..o * kp + patch].copy_from_slice(&wf[o * patch..(o + 1) * patch]);
        }
        self.weights.push(padded);
        MmaConv {
            w: self.weights.len() - 1,
            kp,
        }
    }

    /// Removes an elementwise layer that only quantizes a tensor (the graph input's Q/DQ) when
    /// every reader is an int8 tensor-core convolution that gathers its patches: they quantize
    /// with the same scale as they read, so they read the unquantized tensor instead.
    fn drop_redundant_quantization(&mut self) {
        let outputs: Vec<usize> = self.outputs.iter().map(|o| o.buffer).collect();
        let mut i = 0;
        while i < self.layers.len() {
            let Layer::Unary {
                x,
                y,
                op: UnaryOp::Identity,
                q,
                ..
            } = self.layers[i]
            else {
                i += 1;
                continue;
            };
            let readers: Vec<usize> = (0..self.layers.len())
                .filter(|&r| self.layers[r].reads().contains(&y))
                .collect();
            let gathers_at = |layer: &Layer| match layer {
                Layer::Conv {
                    x: cx,
                    int8: Some(f),
                    mma: Some(_),
                    ..
                } => *cx == y && f.x_scale == q && !self.is_nhwc(y),
                _ => false,
            };
            if q > 0.0
                && !outputs.contains(&y)
                && !readers.is_empty()
                && readers.iter().all(|&r| gathers_at(&self.layers[r]))
            {
                for &r in &readers {
                    if let Layer::Conv { x: cx, .. } = &mut self.layers[r] {
                        *cx = x;
                    }
                }
                self.buffer_sizes[y] = 0;
                self.layers.remove(i);
                self.layer_names.remove(i);
                continue;
            }
            i += 1;
        }
    }
}

/// The output of an elementwise layer over NHWC candidates, as (buffer, shape, scale): a Unary,
/// or a Binary of two activations of the same shape (no broadcasting), all of them candidates.
fn elementwise_nhwc(
    layer: &Layer,
    candidate: &[Option<([usize; 4], f32)>],
) -> Option<(usize, [usize; 4], f32)> {
    match layer {
        Layer::Unary { x, y, q, .. } => candidate[*x].map(|(shape, _)| (*y, shape, *q)),
        Layer::Binary {
            a: Operand::Act(a),
            b: Operand::Act(b),
            y,
            a_strides,
            b_strides,
            q,
            ..
        } if a_strides == b_strides => {
            let (sa, _) = candidate[*a]?;
            let (sb, _) = candidate[*b]?;
            (sa == sb).then_some((*y, sa, *q))
        }
        _ => None,
    }
}

impl Layer {
    /// The activation buffers this layer reads.
    pub fn reads(&self) -> Vec<usize> {
        match self {
            Layer::Conv { x, .. }
            | Layer::Gemm { x, .. }
            | Layer::Unary { x, .. }
            | Layer::Pool { x, .. }
            | Layer::Affine { x, .. }
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
    fn scale(&self, tensor: &str) -> f32 {
        self.scales.get(tensor).copied().unwrap_or(0.0)
    }

    fn push(&mut self, name: String, layer: Layer) {
        self.plan.layers.push(layer);
        self.plan.layer_names.push(name);
    }

    fn input(&self, node: &pb::NodeProto, i: usize) -> Result<Value, String> {
        let name = node
            .input
            .get(i)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("input {i} missing"))?;
        self.values
            .get(name)
            .cloned()
            .ok_or_else(|| format!("input {name} is not computed by the graph (constant folding is not supported; fix: fold constants, e.g. with onnxsim)"))
    }

    fn is_constant(&self, node: &pb::NodeProto, i: usize) -> bool {
        node.input
            .get(i)
            .is_some_and(|n| self.model.constant(n).is_some())
    }

    /// Float data and dims of a constant input.
    fn constant(&self, node: &pb::NodeProto, i: usize) -> Result<(Vec<f32>, Vec<usize>), String> {
        let name = node.input.get(i).cloned().unwrap_or_default();
        let proto = self
            .model
            .constant(&name)
            .ok_or_else(|| format!("{name} must be a constant initializer"))?;
        let data = float_data(proto).ok_or_else(|| format!("{name} must be a float32 tensor"))?;
        Ok((data, proto.dims.iter().map(|&d| d as usize).collect()))
    }

    /// Weight buffer of a constant input (uploaded once, shared between readers).
    fn weight(
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

    fn add_weight(&mut self, data: Vec<f32>) -> usize {
        self.plan.weights.push(data);
        self.plan.weights.len() - 1
    }

    /// Whether `tensor` is read by exactly one node and is not a graph output.
    fn sole_reader(&self, tensor: &str) -> bool {
        let g = self.model.graph();
        g.node
            .iter()
            .filter(|n| n.input.iter().any(|i| i == tensor))
            .count()
            == 1
            && !g.output.iter().any(|o| o.name == tensor)
    }

    /// The int8 form of a GEMM with float weights `w` laid out `[nout][k]` (`nk`) or `[k][nout]`.
    fn int8_gemm(&mut self, x_scale: f32, w: &[f32], k: usize, nout: usize, nk: bool) -> Int8Gemm {
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
    fn reserve(&mut self, g: &Window, conv: bool) {
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
        let q = self.scale(&out_name);
        let name = label.to_string();
        let value = match node.op_type.as_str() {
            "Conv" => self.conv(index, node, name, q)?,
            "Gemm" | "MatMul" => self.gemm(index, node, name, q)?,
            "Relu" | "Clip" | "Sigmoid" => {
                let x = self.input(node, 0)?;
                let op = match node.op_type.as_str() {
                    "Relu" => UnaryOp::Relu,
                    "Sigmoid" => UnaryOp::Sigmoid,
                    _ => self.clip_bounds(node)?,
                };
                if op == UnaryOp::Relu && self.fuse_relu(&x, &node.input[0], q) {
                    self.values.insert(out_name, Value { q, ..x });
                    return Ok(());
                }
                self.unary(name, x.buffer, x.shape, op, q)
            }
            "Add" | "Mul" => self.binary(node, name, q)?,
            "MaxPool" | "AveragePool" | "GlobalAveragePool" => self.pool(node, name, q)?,
            "BatchNormalization" => self.batch_norm(node, name, q)?,
            "Reshape" | "Flatten" => {
                let x = self.input(node, 0)?;
                let shape = self.reshaped(node, &x.shape)?;
                if q > 0.0 && q != x.q {
                    self.unary(name, x.buffer, shape, UnaryOp::Identity, q)
                } else {
                    Value { shape, ..x }
                }
            }
            "Concat" => self.concat(node, name, q)?,
            "Softmax" => {
                let x = self.input(node, 0)?;
                let rank = x.shape.len() as i64;
                let default = if self.opset >= 13 { -1 } else { 1 };
                let axis = attr_int(node, "axis").unwrap_or(default);
                let axis = if axis < 0 { axis + rank } else { axis } as usize;
                if axis >= x.shape.len() {
                    return Err(format!("axis {axis} out of range for {:?}", x.shape));
                }
                let outer: usize = x.shape[..axis].iter().product();
                let (len, inner) = if self.opset >= 13 {
                    (x.shape[axis], x.shape[axis + 1..].iter().product())
                } else {
                    // Before opset 13 Softmax flattens everything from `axis` into one row.
                    (x.shape[axis..].iter().product(), 1)
                };
                let y = self.plan.new_buffer(outer * len * inner);
                self.push(
                    name,
                    Layer::Softmax {
                        x: x.buffer,
                        y,
                        outer,
                        len,
                        inner,
                        q,
                    },
                );
                Value {
                    buffer: y,
                    shape: x.shape,
                    q,
                }
            }
            other => {
                return Err(format!(
                "operator {other} is not supported by the cuda backend (it runs {SUPPORTED_OPS}; \
                     fix: use the reference backend for this model)"
            ))
            }
        };
        self.values.insert(out_name, value);
        Ok(())
    }

    /// An elementwise layer from buffer `x` into a new buffer of the same shape.
    fn unary(&mut self, name: String, x: usize, shape: Vec<usize>, op: UnaryOp, q: f32) -> Value {
        let len = shape.iter().product();
        let y = self.plan.new_buffer(len);
        self.push(name, Layer::Unary { x, y, len, op, q });
        Value {
            buffer: y,
            shape,
            q,
        }
    }

    /// Fuses a Relu into the Conv/Gemm just planned when that layer's output is read only here.
    fn fuse_relu(&mut self, x: &Value, tensor: &str, q: f32) -> bool {
        if !self.sole_reader(tensor) {
            return false;
        }
        if let Some(
            Layer::Conv {
                y,
                relu,
                q_pre,
                q: lq,
                ..
            }
            | Layer::Gemm {
                y,
                relu,
                q_pre,
                q: lq,
                ..
            },
        ) = self.plan.layers.last_mut()
        {
            if *y == x.buffer && !*relu {
                *relu = true;
                *q_pre = *lq;
                *lq = q;
                return true;
            }
        }
        false
    }

    fn clip_bounds(&self, node: &pb::NodeProto) -> Result<UnaryOp, String> {
        let bound = |slot: usize, attr: &str, default: f32| -> Result<f32, String> {
            if self.opset >= 11 {
                match node.input.get(slot).filter(|n| !n.is_empty()) {
                    None => Ok(default),
                    Some(_) => self
                        .constant(node, slot)
                        .map(|(d, _)| d.first().copied().unwrap_or(default)),
                }
            } else {
                Ok(attr_float(node, attr).unwrap_or(default))
            }
        };
        Ok(UnaryOp::Clip(
            bound(1, "min", f32::MIN)?,
            bound(2, "max", f32::MAX)?,
        ))
    }

    fn conv(
        &mut self,
        index: usize,
        node: &pb::NodeProto,
        name: String,
        q: f32,
    ) -> Result<Value, String> {
        let x = self.input(node, 0)?;
        let (w, wdims) = self.weight(node, 1)?.ok_or("no weights")?;
        let b = self.weight(node, 2)?.map(|(b, _)| b);
        if attr_int(node, "group").unwrap_or(1) != 1 {
            return Err("grouped convolutions are not supported yet".into());
        }
        if ints(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
            return Err("dilated convolutions are not supported yet".into());
        }
        if wdims.len() != 4 {
            return Err(format!("expects 4-D weights, got {wdims:?}"));
        }
        let g = window(node, &x.shape, &wdims[2..], wdims[0])?;
        if wdims[1] != g.c {
            return Err(format!(
                "weights {wdims:?} do not match input {:?}",
                x.shape
            ));
        }
        check_grid(&g)?;
        self.reserve(&g, true);
        let int8 = self.int8_nodes.contains(&index).then(|| {
            let data = self.plan.weights[w].clone();
            self.int8_gemm(self.scale(&node.input[0]), &data, g.patch(), g.cout, true)
        });
        let y = self.plan.new_buffer(g.cout * g.positions());
        let conv = Layer::Conv {
            x: x.buffer,
            w,
            b,
            y,
            g,
            relu: false,
            q_pre: 0.0,
            q,
            int8,
            mma: None,
        };
        self.push(name, conv);
        Ok(Value {
            buffer: y,
            shape: vec![g.n, g.cout, g.oh, g.ow],
            q,
        })
    }

    fn gemm(
        &mut self,
        index: usize,
        node: &pb::NodeProto,
        name: String,
        q: f32,
    ) -> Result<Value, String> {
        let x = self.input(node, 0)?;
        if !self.is_constant(node, 1) {
            return Err("the second input must be a constant weight (activation × activation products are not supported yet)".into());
        }
        let (mut w, wdims) = self.weight(node, 1)?.ok_or("no weights")?;
        let matmul = node.op_type == "MatMul";
        let mut b = if matmul { None } else { self.weight(node, 2)? };
        let trans_b = !matmul && attr_int(node, "transB").unwrap_or(0) == 1;
        if !matmul && attr_int(node, "transA").unwrap_or(0) != 0 {
            return Err("transA=1 is not supported yet".into());
        }
        // alpha·A·B + beta·C: alpha and beta are folded into the weights and the bias.
        let alpha = attr_float(node, "alpha").filter(|_| !matmul).unwrap_or(1.0);
        let beta = attr_float(node, "beta").filter(|_| !matmul).unwrap_or(1.0);
        if alpha != 1.0 {
            let scaled = self.plan.weights[w].iter().map(|v| v * alpha).collect();
            w = self.add_weight(scaled);
        }
        if let Some((bias, dims)) = b.as_ref().filter(|_| beta != 1.0) {
            let scaled = self.plan.weights[*bias].iter().map(|v| v * beta).collect();
            b = Some((self.add_weight(scaled), dims.clone()));
        }
        let rank_ok = if matmul {
            x.shape.len() >= 2
        } else {
            x.shape.len() == 2
        };
        if !rank_ok || wdims.len() != 2 {
            return Err(format!(
                "weights {wdims:?} with input {:?} are not supported (2-D weights and a {} input only)",
                x.shape,
                if matmul { "≥2-D" } else { "2-D" }
            ));
        }
        let (k, nout) = if trans_b {
            (wdims[1], wdims[0])
        } else {
            (wdims[0], wdims[1])
        };
        if x.shape[x.shape.len() - 1] != k {
            return Err(format!(
                "input {:?} does not match weights {wdims:?}",
                x.shape
            ));
        }
        if let Some((_, bdims)) = &b {
            if bdims.iter().product::<usize>() != nout {
                return Err(format!(
                    "bias {bdims:?} must have {nout} elements (per-output bias only)"
                ));
            }
        }
        let batch: usize = x.shape[..x.shape.len() - 1].iter().product();
        let mut shape = x.shape.clone();
        *shape.last_mut().expect("rank ≥ 2") = nout;
        self.reserve(&Window::dense(batch, k, nout), false);
        if self.int8_nodes.contains(&index) {
            // The int8 epilogue puts output channels and rows on the grid's y and z axes.
            check_grid(&Window::dense(batch, k, nout))?;
        }
        let int8 = self.int8_nodes.contains(&index).then(|| {
            let data = self.plan.weights[w].clone();
            self.int8_gemm(self.scale(&node.input[0]), &data, k, nout, trans_b)
        });
        let y = self.plan.new_buffer(batch * nout);
        let b = b.map(|(b, _)| b);
        let layer = Layer::Gemm {
            x: x.buffer,
            w,
            b,
            y,
            batch,
            k,
            nout,
            trans_b,
            relu: false,
            q_pre: 0.0,
            q,
            int8,
        };
        self.push(name, layer);
        Ok(Value {
            buffer: y,
            shape,
            q,
        })
    }

    fn operand(&mut self, node: &pb::NodeProto, i: usize) -> Result<(Operand, Vec<usize>), String> {
        if self.is_constant(node, i) {
            let (w, dims) = self.weight(node, i)?.ok_or("missing input")?;
            Ok((Operand::Weight(w), dims))
        } else {
            let v = self.input(node, i)?;
            Ok((Operand::Act(v.buffer), v.shape))
        }
    }

    fn binary(&mut self, node: &pb::NodeProto, name: String, q: f32) -> Result<Value, String> {
        let (a, ashape) = self.operand(node, 0)?;
        let (b, bshape) = self.operand(node, 1)?;
        if matches!((a, b), (Operand::Weight(_), Operand::Weight(_))) {
            return Err(
                "both inputs are constants (fix: fold constants, e.g. with onnxsim)".into(),
            );
        }
        let shape = broadcast(&ashape, &bshape)?;
        if shape.len() > 4 {
            return Err(format!(
                "broadcasting over {} dimensions is not supported (at most 4)",
                shape.len()
            ));
        }
        let dims = pad4(&shape);
        let (a_strides, b_strides) = (strides4(&ashape), strides4(&bshape));
        let y = self.plan.new_buffer(shape.iter().product());
        let mul = node.op_type == "Mul";
        self.push(
            name,
            Layer::Binary {
                a,
                b,
                y,
                mul,
                dims,
                a_strides,
                b_strides,
                q,
            },
        );
        Ok(Value {
            buffer: y,
            shape,
            q,
        })
    }

    fn pool(&mut self, node: &pb::NodeProto, name: String, q: f32) -> Result<Value, String> {
        let x = self.input(node, 0)?;
        if ints(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1))
            || attr_int(node, "ceil_mode").unwrap_or(0) != 0
        {
            return Err("dilations and ceil_mode are not supported yet".into());
        }
        let c = x.shape.get(1).copied().unwrap_or(0);
        let g = if node.op_type == "GlobalAveragePool" {
            if x.shape.len() != 4 {
                return Err(format!("expects a 4-D NCHW input, got {:?}", x.shape));
            }
            let (h, w) = (x.shape[2], x.shape[3]);
            Window {
                n: x.shape[0],
                c,
                h,
                w,
                cout: c,
                kh: h,
                kw: w,
                sh: 1,
                sw: 1,
                ph: 0,
                pw: 0,
                oh: 1,
                ow: 1,
            }
        } else {
            let kernel = ints(node, "kernel_shape").ok_or("no kernel_shape")?;
            window(node, &x.shape, &kernel, c)?
        };
        check_grid(&g)?;
        let avg = node.op_type != "MaxPool";
        let count_include_pad = attr_int(node, "count_include_pad").unwrap_or(0) == 1;
        let y = self.plan.new_buffer(g.n * g.c * g.oh * g.ow);
        self.push(
            name,
            Layer::Pool {
                x: x.buffer,
                y,
                g,
                avg,
                count_include_pad,
                q,
            },
        );
        Ok(Value {
            buffer: y,
            shape: vec![g.n, g.c, g.oh, g.ow],
            q,
        })
    }

    /// BatchNormalization (inference form): folded into the Conv before it when that Conv's
    /// output is read only here and is not quantized; a per-channel affine layer otherwise.
    fn batch_norm(&mut self, node: &pb::NodeProto, name: String, q: f32) -> Result<Value, String> {
        let x = self.input(node, 0)?;
        let eps = attr_float(node, "epsilon").unwrap_or(1e-5);
        let param = |i: usize| self.constant(node, i).map(|(d, _)| d);
        let (gamma, beta, mean, var) = (param(1)?, param(2)?, param(3)?, param(4)?);
        let channels = x.shape.get(1).copied().unwrap_or(0);
        if [&gamma, &beta, &mean, &var]
            .iter()
            .any(|p| p.len() != channels)
        {
            return Err(format!(
                "parameters must have {channels} elements (input {:?})",
                x.shape
            ));
        }
        let scale: Vec<f32> = gamma
            .iter()
            .zip(&var)
            .map(|(g, v)| g / (v + eps).sqrt())
            .collect();
        let shift: Vec<f32> = (0..channels)
            .map(|c| beta[c] - mean[c] * scale[c])
            .collect();
        let sole = self.sole_reader(&node.input[0]);
        if let Some(Layer::Conv {
            y,
            w,
            b,
            relu: false,
            q: conv_q,
            int8: None,
            g,
            ..
        }) = self.plan.layers.last()
        {
            if *y == x.buffer && sole && g.cout == channels && *conv_q == 0.0 {
                let (w_old, b_old, per) = (*w, *b, g.patch());
                let weights = &self.plan.weights;
                let folded: Vec<f32> = weights[w_old]
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v * scale[i / per])
                    .collect();
                let bias: Vec<f32> = (0..channels)
                    .map(|c| b_old.map_or(0.0, |b| weights[b][c]) * scale[c] + shift[c])
                    .collect();
                let (nw, nb) = (self.add_weight(folded), self.add_weight(bias));
                if let Some(Layer::Conv { w, b, q: lq, .. }) = self.plan.layers.last_mut() {
                    (*w, *b, *lq) = (nw, Some(nb), q);
                }
                return Ok(Value { q, ..x });
            }
        }
        let len: usize = x.shape.iter().product();
        let inner = x.shape[2..].iter().product();
        let (scale, shift) = (self.add_weight(scale), self.add_weight(shift));
        let y = self.plan.new_buffer(len);
        self.push(
            name,
            Layer::Affine {
                x: x.buffer,
                y,
                scale,
                shift,
                channels,
                inner,
                len,
                q,
            },
        );
        Ok(Value {
            buffer: y,
            shape: x.shape,
            q,
        })
    }

    fn concat(&mut self, node: &pb::NodeProto, name: String, q: f32) -> Result<Value, String> {
        let first = self.input(node, 0)?;
        let rank = first.shape.len() as i64;
        let axis = attr_int(node, "axis").ok_or("no axis")?;
        let axis = if axis < 0 { axis + rank } else { axis } as usize;
        if axis >= first.shape.len() {
            return Err(format!("axis {axis} out of range for {:?}", first.shape));
        }
        let outer: usize = first.shape[..axis].iter().product();
        let inner: usize = first.shape[axis + 1..].iter().product();
        let mut shape = first.shape.clone();
        shape[axis] = 0;
        let mut parts = Vec::new();
        for i in 0..node.input.len() {
            let v = self.input(node, i)?;
            let same = v.shape.len() == shape.len()
                && v.shape
                    .iter()
                    .zip(&shape)
                    .enumerate()
                    .all(|(d, (a, b))| d == axis || a == b);
            if !same {
                return Err(format!(
                    "input {i} {:?} does not match {:?} outside axis {axis}",
                    v.shape, first.shape
                ));
            }
            shape[axis] += v.shape[axis];
            parts.push((v.buffer, v.shape[axis] * inner));
        }
        let total = shape[axis] * inner;
        let y = self.plan.new_buffer(outer * total);
        self.push(
            name,
            Layer::Concat {
                parts,
                y,
                outer,
                total,
                q,
            },
        );
        Ok(Value {
            buffer: y,
            shape,
            q,
        })
    }

    fn reshaped(&self, node: &pb::NodeProto, shape: &[usize]) -> Result<Vec<usize>, String> {
        let total: usize = shape.iter().product();
        if node.op_type == "Flatten" {
            let axis = attr_int(node, "axis").unwrap_or(1);
            let axis = if axis < 0 {
                axis + shape.len() as i64
            } else {
                axis
            } as usize;
            let head: usize = shape[..axis.min(shape.len())].iter().product();
            return Ok(vec![head, total / head.max(1)]);
        }
        let name = node.input.get(1).cloned().unwrap_or_default();
        let proto = self
            .model
            .constant(&name)
            .ok_or("the target shape must be a constant initializer")?;
        reshape(shape, &int64s(proto))
    }
}

/// The convolution and pooling kernels put patch rows, channels and images on the y and z axes of
/// the CUDA grid, which hold at most 65535 blocks.
fn check_grid(g: &Window) -> Result<(), String> {
    let largest = g.patch().max(g.cout).max(g.c).max(g.n);
    if largest > 65_535 {
        return Err(format!(
            "{} input channels × {}×{} window, {} output channels, {} rows: more than the cuda \
             backend's grid takes (65535 per axis) — this shape is not supported; fix: a smaller \
             batch, or the reference backend",
            g.c, g.kh, g.kw, g.cout, g.n
        ));
    }
    Ok(())
}

/// Numpy broadcasting of two shapes.
fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

/// A shape left-padded with 1s to rank 4.
fn pad4(shape: &[usize]) -> [usize; 4] {
    let mut out = [1; 4];
    out[4 - shape.len()..].copy_from_slice(shape);
    out
}

/// Strides of `shape` padded to rank 4 (0 along its size-1 dimensions, which broadcast).
fn strides4(shape: &[usize]) -> [usize; 4] {
    let own = pad4(shape);
    let mut strides = [0; 4];
    let mut step = 1;
    for i in (0..4).rev() {
        strides[i] = if own[i] == 1 { 0 } else { step };
        step *= own[i];
    }
    strides
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
        if known == 0 || !total.is_multiple_of(known) {
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
    use crate::cache::CalibrationCache;
    use crate::matrix::Precision;
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
        model.graph_mut().node[1].op_type = "Tanh".into();
        let err = fp32(&model, 1).unwrap_err();
        assert!(
            err.contains("Tanh") && err.contains("reference backend"),
            "{err}"
        );
    }
}
