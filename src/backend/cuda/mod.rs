//! The `cuda` backend: runs ONNX models on the GPU itself — convolutions on tensor cores
//! (`mma.sync`, compute capability 8.0+) as implicit GEMMs, cuBLASLt for Gemm/MatMul (and for
//! convolutions via im2col on older GPUs and at fp32), or cuDNN where it was timed faster for a
//! layer (`conv_tactics.rs`), nvrtc-compiled kernels (`kernels.cu`) for the rest.
//!
//! Precisions follow trtexec's flags and the reference backend's semantics (`model::precision`):
//! - `fp32`: fp32 storage and strict fp32 GEMMs;
//! - `fp16`: fp16 storage, fp16 GEMMs with fp32 accumulation;
//! - `int8`: each tensor with a cache scale is fake-quantized by the layer that writes it, and
//!   Conv/Gemm/MatMul layers whose input is quantized run int8 × int8 → int32 with weights
//!   quantized per output channel, dequantized (+ bias, Relu, requantized) in the epilogue.
//!   Tensors that pass only between convolutions, max pools and elementwise layers stay NHWC
//!   as int8 codes of their scale; the rest are fp32 NCHW;
//! - `best`: fp16 storage, convolutions with an int8 form on int8 tensor cores, and for each
//!   other layer with an int8 form the faster of int8 and fp16, timed on the GPU at build (as
//!   TensorRT's builder times tactics).
//!
//! The tensor-core layout decisions are made by [`graph::Plan::use_tensor_cores`] and stored
//! with the engine; `tensor_cores.rs` enqueues those layers.

mod conv_tactics;
mod cudnn;
mod gemm;
pub mod graph;
mod layout;
mod ops;
mod profile;
mod statistics;
mod tensor_cores;

use std::collections::BTreeMap;
use std::sync::Arc;

use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg,
    ValidAsZeroBits,
};

use super::{check_inputs, Backend, BackendError, BuildRequest, Engine, StoredEngine};
use crate::cache::CalibrationCache;
use crate::gpu::cuda::{nvrtc_present, GpuContext};
use crate::gpu::GpuError;
use crate::matrix::{BackendKind, Precision};
use crate::model::onnx::OnnxModel;
use crate::model::precision::{self, LayerPrecision};
use crate::model::tensor::{Tensor, TensorSpec};
use gemm::{Epilogue, Gemm, GemmKind, GemmShape, Lt};
use graph::{Layer, Operand, Plan};

pub use ops::supported_ops;
pub use profile::{profile_model, GemmProfile, LayerProfile};

const KERNELS: &str = include_str!("kernels.cu");

fn build_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Build(e.to_string())
}

/// The planner's refusals: what the cuda backend does not run (operators, shapes, patterns).
fn unsupported(e: impl std::fmt::Display) -> BackendError {
    BackendError::Unsupported(e.to_string())
}

fn infer_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Infer(e.to_string())
}

/// The cuda backend (no state: each build opens a context on the cell's GPU).
#[derive(Debug, Default)]
pub struct CudaBackend;

/// What the engine store keeps of a cuda engine: the plan (with best's choices made) and
/// calibench's diagnostics of the cache.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredPlan {
    plan: Plan,
}

/// Version of the stored plan's form; a new form never loads engines stored in an old one.
const PLAN_FORM: u32 = 2;

impl Backend for CudaBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cuda
    }

    fn version(&self) -> String {
        format!(
            "cuda/calibench-{}/plan-{PLAN_FORM}",
            env!("CARGO_PKG_VERSION")
        )
    }

    fn build(&self, request: &BuildRequest<'_>) -> Result<Box<dyn Engine>, BackendError> {
        let ctx = context_for(request)?;
        let precision = request.cell.precision;
        let (plan, diagnostics) = engine_plan(
            &request.load_model()?,
            request.cache_path,
            precision,
            request.cell.batch,
        )?;
        build_engine(&ctx, precision, plan, diagnostics)
    }

    fn load(
        &self,
        request: &BuildRequest<'_>,
        bytes: &[u8],
        origin: &std::path::Path,
    ) -> Result<Box<dyn Engine>, BackendError> {
        let ctx = context_for(request)?;
        let (header, payload) = StoredEngine::decode(bytes, origin, "cuda")?;
        let stored: StoredPlan = serde_json::from_slice(payload).map_err(|e| {
            build_err(format!(
                "{}: not a calibench cuda engine of this version ({e})\nfix: delete it; it is rebuilt on the next run",
                origin.display()
            ))
        })?;
        engine_for(
            &ctx,
            request.cell.precision,
            stored.plan,
            header.diagnostics,
        )
    }
}

/// An fp32 engine of `model` at `batch` on GPU `ordinal`, for calibration
/// (`cache::calibrate::EngineActivations`): activations are computed on the GPU.
pub fn fp32_engine(
    model: &OnnxModel,
    batch: usize,
    ordinal: usize,
) -> Result<Box<dyn Engine>, BackendError> {
    let ctx = context_for_ordinal(ordinal)?;
    let pplan = precision::plan(model, Precision::Fp32, None);
    let plan = Plan::from_model(model, batch, &pplan).map_err(unsupported)?;
    engine_for(&ctx, Precision::Fp32, plan, Vec::new())
}

/// The engine of a finished plan (tensor-core and best choices made, as a stored engine holds
/// it) on GPU `ordinal`: no timing, no re-planning.
pub fn engine_of_plan(
    plan: Plan,
    precision: Precision,
    ordinal: usize,
) -> Result<Box<dyn Engine>, BackendError> {
    engine_for(&context_for_ordinal(ordinal)?, precision, plan, Vec::new())
}

/// The cell's GPU context.
fn context_for(request: &BuildRequest<'_>) -> Result<GpuContext, BackendError> {
    let ordinal = request
        .gpu_ordinal
        .ok_or_else(|| build_err("the cuda backend runs on a GPU; this cell has none"))?;
    context_for_ordinal(ordinal)
}

/// Whether the GPU runs the tensor-core convolutions (`mma.sync`: compute capability 8.0+).
fn has_tensor_cores(ctx: &GpuContext) -> bool {
    ctx.ctx
        .compute_capability()
        .is_ok_and(|(major, _)| major >= 8)
}

fn context_for_ordinal(ordinal: usize) -> Result<GpuContext, BackendError> {
    GpuContext::new(ordinal).map_err(build_err)
}

/// The plan of a model file at a precision (with its cache) and batch, before any tensor-core
/// choice, and calibench's diagnostics of the cache against the model.
fn engine_plan(
    model: &OnnxModel,
    cache: Option<&std::path::Path>,
    precision: Precision,
    batch: usize,
) -> Result<(Plan, Vec<super::EngineDiagnostic>), BackendError> {
    let cache = cache
        .map(CalibrationCache::read)
        .transpose()
        .map_err(build_err)?;
    let pplan = precision::plan(model, precision, cache.as_ref());
    let diagnostics = super::reference::plan_diagnostics(&pplan);
    let plan = Plan::from_model(model, batch, &pplan).map_err(unsupported)?;
    Ok((plan, diagnostics))
}

/// `plan` with its convolutions on tensor cores when the GPU has them (`tensor_cores`): those
/// with an int8 form at int8 and best (best's others at fp16), all of them at fp16. fp32 keeps
/// strict cuBLASLt fp32.
fn with_tensor_cores(mut plan: Plan, precision: Precision, tensor_cores: bool) -> Plan {
    if tensor_cores {
        plan.use_tensor_cores_at(precision);
    }
    plan
}

/// Builds the engine of a fresh plan (from [`engine_plan`]): best times its layers first
/// ([`best_engine`]).
fn build_engine(
    ctx: &GpuContext,
    precision: Precision,
    plan: Plan,
    diagnostics: Vec<super::EngineDiagnostic>,
) -> Result<Box<dyn Engine>, BackendError> {
    let tensor_cores = has_tensor_cores(ctx);
    if precision == Precision::Best {
        return Ok(Box::new(best_engine(ctx, plan, diagnostics, tensor_cores)?));
    }
    let plan = with_tensor_cores(plan, precision, tensor_cores);
    engine_for(ctx, precision, plan, diagnostics)
}

/// best, as TensorRT's builder chooses: every layer that has an int8 form is timed in an engine
/// where all of them run int8 and in one where all run fp16 (3 warm-up runs, then 20 between
/// CUDA events, each layer on its own). A layer whose fp16 form was faster keeps fp16 at once
/// when that leaves every tensor's layout as it was (a Gemm, a convolution between NCHW
/// tensors); one whose fp16 form would turn NHWC codes around it back to NCHW (its neighbours
/// then gather their patches) keeps fp16 only if the whole network gets faster, tried one at a
/// time, largest per-layer gain first. The record's per-layer precision says what each kept.
fn best_engine(
    ctx: &GpuContext,
    plan: Plan,
    diagnostics: Vec<super::EngineDiagnostic>,
    tensor_cores: bool,
) -> Result<CudaEngine<half::f16>, BackendError> {
    let planned = |fp16: &[String]| {
        let mut p = plan.clone();
        fp16.iter().for_each(|name| p.drop_int8_of(name));
        with_tensor_cores(p, Precision::Best, tensor_cores)
    };
    let engine = |plan: Plan| CudaEngine::<half::f16>::new(ctx, plan, diagnostics.clone());
    let int8_plan = planned(&[]);
    let mut best = engine(int8_plan.clone())?;
    let candidates: Vec<String> = int8_plan
        .layers
        .iter()
        .zip(&int8_plan.layer_names)
        .filter(|(layer, _)| layer.int8().is_some())
        .map(|(_, name)| name.clone())
        .collect();
    if candidates.is_empty() {
        return Ok(best);
    }
    let int8_ms = best.layer_times(&candidates)?;
    let float_ms = engine(planned(&candidates))?.layer_times(&candidates)?;
    let mut faster_at_fp16: Vec<(f64, String)> = Vec::new();
    for name in candidates {
        let (Some(&t_int8), Some(&t_float)) = (int8_ms.get(&name), float_ms.get(&name)) else {
            continue;
        };
        tracing::debug!(layer = %name, t_int8, t_float, "best: int8 vs fp16 (ms)");
        if t_float < t_int8 {
            faster_at_fp16.push((t_int8 - t_float, name));
        }
    }
    faster_at_fp16.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (same_layouts, moving): (Vec<_>, Vec<_>) = faster_at_fp16
        .into_iter()
        .map(|(_, name)| name)
        .partition(|name| planned(std::slice::from_ref(name)).nhwc == int8_plan.nhwc);
    let mut kept_fp16 = same_layouts;
    if !kept_fp16.is_empty() {
        best = engine(planned(&kept_fp16))?;
    }
    if moving.is_empty() {
        return Ok(best);
    }
    let mut best_ms = best.network_time()?;
    for name in moving {
        let mut trial = kept_fp16.clone();
        trial.push(name.clone());
        let mut candidate = engine(planned(&trial))?;
        let ms = candidate.network_time()?;
        tracing::debug!(layer = %name, ms, best_ms, "best: whole network with this layer at fp16 (ms)");
        // 1 % margin: the int8 layouts stay unless fp16 clearly wins.
        if ms < 0.99 * best_ms {
            (best, best_ms, kept_fp16) = (candidate, ms, trial);
        }
    }
    Ok(best)
}

/// The engine of a finished plan (tensor-core choices and best's choices made): a stored one,
/// or one [`build_engine`] planned.
fn engine_for(
    ctx: &GpuContext,
    precision: Precision,
    plan: Plan,
    diagnostics: Vec<super::EngineDiagnostic>,
) -> Result<Box<dyn Engine>, BackendError> {
    Ok(match precision {
        Precision::Fp16 | Precision::Best => {
            Box::new(CudaEngine::<half::f16>::new(ctx, plan, diagnostics)?)
        }
        Precision::Fp32 | Precision::Int8 => {
            Box::new(CudaEngine::<f32>::new(ctx, plan, diagnostics)?)
        }
    })
}

/// The kernels' PTX for a compute capability, compiled once per process (nvrtc takes a
/// while; best builds three engines).
fn kernels_ptx(major: i32, minor: i32) -> Result<cudarc::nvrtc::Ptx, BackendError> {
    static COMPILED: std::sync::Mutex<BTreeMap<(i32, i32), cudarc::nvrtc::Ptx>> =
        std::sync::Mutex::new(BTreeMap::new());
    if !nvrtc_present() {
        return Err(BackendError::Unavailable {
            backend: "cuda",
            reason: "libnvrtc.so could not be loaded".into(),
            fix: "install the CUDA toolkit's nvrtc (libnvrtc.so) or add it to LD_LIBRARY_PATH"
                .into(),
        });
    }
    let mut compiled = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ptx) = compiled.get(&(major, minor)) {
        return Ok(ptx.clone());
    }
    let mut options = cudarc::nvrtc::CompileOptions::default();
    options.include_paths.extend(cuda_include_dirs());
    options
        .options
        .push(format!("--gpu-architecture=compute_{major}{minor}"));
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(KERNELS, options).map_err(|e| {
        build_err(format!(
            "compiling the cuda backend's kernels with nvrtc: {e}"
        ))
    })?;
    compiled.insert((major, minor), ptx.clone());
    Ok(ptx)
}

/// An element type the engine stores tensors in.
pub trait Element: DeviceRepr + ValidAsZeroBits + Copy + Unpin + 'static {
    /// Suffix of the kernels for this type in `kernels.cu`.
    const SUFFIX: &'static str;
    /// Precision name of float layers for the per-layer report.
    const PRECISION: &'static str;
    /// cuBLASLt types of a float GEMM on this type.
    const GEMM: GemmKind;
    /// From a host float.
    fn from_f32(v: f32) -> Self;
}

impl Element for f32 {
    const SUFFIX: &'static str = "f32";
    const PRECISION: &'static str = "fp32";
    const GEMM: GemmKind = GemmKind::F32;
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Element for half::f16 {
    const SUFFIX: &'static str = "f16";
    const PRECISION: &'static str = "fp16";
    const GEMM: GemmKind = GemmKind::F16;
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}

/// The kernels of `kernels.cu` for one element type.
struct Kernels {
    im2col: CudaFunction,
    strided: CudaFunction,
    resize: CudaFunction,
    conv_direct: CudaFunction,
    im2col_q8: CudaFunction,
    conv_mma_i8: CudaFunction,
    conv_mma_f16: CudaFunction,
    patches_i8: CudaFunction,
    patches_f16: CudaFunction,
    pool_nhwc_i8: CudaFunction,
    pool_nhwc_f16: CudaFunction,
    unary_q8: CudaFunction,
    binary_q8: CudaFunction,
    max_abs: CudaFunction,
    abs_histogram: CudaFunction,
    quantize_rows: CudaFunction,
    from_f32: CudaFunction,
    to_f32: CudaFunction,
    to_nchw: CudaFunction,
    dequant: CudaFunction,
    dequant_rows: CudaFunction,
    epilogue: CudaFunction,
    bias_nchw: CudaFunction,
    bias_nhwc: CudaFunction,
    unary: CudaFunction,
    binary: CudaFunction,
    binary_same: CudaFunction,
    pool: CudaFunction,
    affine: CudaFunction,
    concat: CudaFunction,
    softmax: CudaFunction,
}

/// The two forms a GEMM layer can run in.
struct GemmForms {
    float: Gemm,
    int8: Option<Gemm>,
}

/// A built engine: the plan's weights and activations resident on one GPU.
struct CudaEngine<T: Element> {
    ctx: GpuContext,
    lt: Lt,
    kernels: Kernels,
    plan: Plan,
    gemms: Vec<Option<GemmForms>>,
    weights: Vec<CudaSlice<T>>,
    int8_weights: Vec<CudaSlice<i8>>,
    scales: Vec<CudaSlice<f32>>,
    /// One buffer per activation of the plan (reshapes alias their input's buffer).
    activations: Vec<CudaSlice<T>>,
    /// Float im2col and GEMM scratch, sized for the largest convolution.
    cols: CudaSlice<T>,
    gemm_out: CudaSlice<T>,
    /// Int8 patches and int32 accumulators, sized for the largest int8 GEMM.
    cols_i8: CudaSlice<i8>,
    /// Patch rows of the tensor-core convolutions over NCHW inputs (`patches` in `kernels.cu`).
    patches: CudaSlice<u8>,
    acc: CudaSlice<i32>,
    /// fp32 inputs and outputs on their way to and from the engine's element type, converted
    /// on the GPU.
    staging: CudaSlice<f32>,
    input_specs: Vec<TensorSpec>,
    output_names: Vec<String>,
    diagnostics: Vec<super::EngineDiagnostic>,
    /// The convolutions cuDNN runs and what each layer was timed to run on (`conv_tactics.rs`).
    convs: conv_tactics::ConvTactics,
}

/// A 3-D grid: x over `x` elements (blocks of up to 256 threads), y and z one block row each.
fn grid3(x: usize, y: usize, z: usize) -> LaunchConfig {
    let threads = x.next_multiple_of(32).min(256);
    LaunchConfig {
        grid_dim: (x.div_ceil(threads) as u32, y as u32, z as u32),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn launch_cfg(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 65_535) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Raw device address of a buffer (the engine's stream is its only user, so no tracking).
fn ptr<S, B: DevicePtr<S>>(buffer: &B, stream: &CudaStream) -> u64 {
    buffer.device_ptr(stream).0
}

fn upload<S: DeviceRepr + ValidAsZeroBits + Copy>(
    stream: &Arc<CudaStream>,
    host: &[S],
) -> Result<CudaSlice<S>, BackendError> {
    if host.is_empty() {
        return stream.alloc_zeros::<S>(1).map_err(build_err);
    }
    stream.clone_htod(host).map_err(build_err)
}

impl<T: Element> CudaEngine<T> {
    fn new(
        ctx: &GpuContext,
        plan: Plan,
        diagnostics: Vec<super::EngineDiagnostic>,
    ) -> Result<Self, BackendError> {
        let stream = &ctx.stream;
        let (major, minor) = ctx.ctx.compute_capability().map_err(build_err)?;
        if plan.mma.is_some() && major < 8 {
            return Err(build_err(format!(
                "this plan runs convolutions on tensor cores (mma.sync), which need compute capability 8.0 or newer; this GPU has {major}.{minor}\nfix: delete the stored engine so it is rebuilt for this GPU"
            )));
        }
        let module = ctx
            .ctx
            .load_module(kernels_ptx(major, minor)?)
            .map_err(build_err)?;
        let load = |name: &str| {
            module
                .load_function(&format!("{name}_{}", T::SUFFIX))
                .map_err(build_err)
        };
        let kernels = Kernels {
            im2col: load("im2col")?,
            strided: load("strided")?,
            resize: load("resize")?,
            conv_direct: load("conv_direct")?,
            im2col_q8: load("im2col_q8")?,
            conv_mma_i8: load("conv_mma_i8")?,
            conv_mma_f16: load("conv_mma_f16")?,
            patches_i8: load("patches_i8")?,
            patches_f16: load("patches_f16")?,
            pool_nhwc_i8: load("pool_nhwc_i8")?,
            pool_nhwc_f16: load("pool_nhwc_f16")?,
            unary_q8: module.load_function("unary_q8").map_err(build_err)?,
            binary_q8: module.load_function("binary_q8").map_err(build_err)?,
            max_abs: load("max_abs")?,
            abs_histogram: load("abs_histogram")?,
            quantize_rows: load("quantize_rows")?,
            from_f32: load("from_f32")?,
            to_f32: load("to_f32")?,
            to_nchw: load("to_nchw")?,
            dequant: load("dequant")?,
            dequant_rows: load("dequant_rows")?,
            epilogue: load("epilogue")?,
            bias_nchw: load("bias_nchw")?,
            bias_nhwc: load("bias_nhwc")?,
            unary: load("unary")?,
            binary: load("binary")?,
            binary_same: load("binary_same")?,
            pool: load("pool")?,
            affine: load("affine")?,
            concat: load("concat")?,
            softmax: load("softmax")?,
        };
        let weights = plan
            .weights
            .iter()
            .map(|w| {
                upload(
                    stream,
                    &w.iter().map(|&v| T::from_f32(v)).collect::<Vec<T>>(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let int8_weights = plan
            .int8_weights
            .iter()
            .map(|w| upload(stream, w))
            .collect::<Result<Vec<_>, _>>()?;
        let scales = plan
            .scales
            .iter()
            .map(|s| upload(stream, s))
            .collect::<Result<Vec<_>, _>>()?;
        let zeros = |n: usize| stream.alloc_zeros::<T>(n.max(1)).map_err(build_err);
        let activations = plan
            .buffer_sizes
            .iter()
            .map(|&n| zeros(n))
            .collect::<Result<Vec<_>, _>>()?;
        let (cols, gemm_out) = (zeros(plan.max_cols)?, zeros(plan.max_gemm_out)?);
        let patches = stream
            .alloc_zeros::<u8>(plan.max_patch_bytes().max(16))
            .map_err(build_err)?;
        let cols_i8 = stream
            .alloc_zeros::<i8>(plan.max_cols_i8.max(1))
            .map_err(build_err)?;
        let acc = stream
            .alloc_zeros::<i32>(plan.max_acc.max(1))
            .map_err(build_err)?;
        let io_len = plan
            .inputs
            .iter()
            .chain(&plan.outputs)
            .map(|io| plan.buffer_sizes[io.buffer])
            .max()
            .unwrap_or(1);
        let staging = stream
            .alloc_zeros::<f32>(io_len.max(1))
            .map_err(build_err)?;
        let lt = Lt::new(stream.clone()).map_err(build_err)?;
        let mut gemms = Vec::with_capacity(plan.layers.len());
        for (layer, name) in plan.layers.iter().zip(&plan.layer_names) {
            let forms = gemm_forms::<T>(&lt, layer, &weights, stream)
                .map_err(|e| build_err(format!("layer {name}: {e}")))?;
            gemms.push(forms);
        }
        let mut engine = CudaEngine {
            ctx: ctx.clone(),
            lt,
            kernels,
            input_specs: plan.inputs.iter().map(|i| i.spec.clone()).collect(),
            output_names: plan.outputs.iter().map(|o| o.spec.name.clone()).collect(),
            plan,
            gemms,
            weights,
            int8_weights,
            scales,
            activations,
            cols,
            gemm_out,
            cols_i8,
            patches,
            acc,
            staging,
            diagnostics,
            convs: Default::default(),
        };
        engine.tune_gemms()?;
        engine.tune_convs()?;
        Ok(engine)
    }

    fn stream(&self) -> &Arc<CudaStream> {
        &self.ctx.stream
    }

    /// Enqueues every layer on the stream.
    fn enqueue_layers(&mut self) -> Result<(), BackendError> {
        for i in 0..self.plan.layers.len() {
            let int8 = self.plan.layers[i].int8().is_some();
            self.enqueue_layer(i, int8)?;
        }
        Ok(())
    }

    /// Enqueues layer `i`, a GEMM layer in its int8 form when `int8`.
    fn enqueue_layer(&mut self, i: usize, int8: bool) -> Result<(), BackendError> {
        let stream = self.ctx.stream.clone();
        let s = stream.as_ref();
        let layer = &self.plan.layers[i];
        let act = |b: usize| ptr(&self.activations[b], s);
        let wt = |b: usize| ptr(&self.weights[b], s);
        let launch = |f: &CudaFunction, cfg: LaunchConfig, args: &[Arg]| launch(s, f, cfg, args);
        use Arg::{F, I, P};
        if self.enqueue_cudnn_conv(i, int8)? {
            return Ok(());
        }
        match &layer {
            Layer::Conv {
                x,

                b,
                y,
                g,
                relu,
                q_pre,
                q,
                int8: form,
                mma,
                ..
            } => {
                if mma.is_some() {
                    return self.enqueue_tensor_core_conv(i);
                }
                let (n, p, bias) = (g.n as i32, (g.oh * g.ow) as i32, b.map_or(0, wt));
                let tail = [I(*relu as i32), F(*q_pre), F(*q)];
                match form.filter(|_| int8) {
                    Some(f) => {
                        let mut args = vec![P(act(*x)), P(ptr(&self.cols_i8, s))];
                        args.extend(window(g, g.c));
                        args.extend([I(f.kp as i32), F(f.x_scale)]);
                        launch(
                            &self.kernels.im2col_q8,
                            grid3(g.oh * g.ow, f.kp / 16, g.n),
                            &args,
                        )?;
                        self.launch_gemm(i, true)?;
                        let mut args = vec![
                            P(ptr(&self.acc, s)),
                            P(ptr(&self.scales[f.dq], s)),
                            P(bias),
                            P(act(*y)),
                        ];
                        let pp = g.positions_padded() as i32;
                        args.extend([I(n), I(g.cout as i32), I(p), I(pp)]);
                        args.extend(tail);
                        launch(
                            &self.kernels.dequant,
                            grid3(g.oh * g.ow, g.cout, g.n),
                            &args,
                        )?;
                    }
                    None => {
                        let mut args = vec![P(act(*x)), P(ptr(&self.cols, s))];
                        args.extend(window(g, g.c));
                        launch(
                            &self.kernels.im2col,
                            grid3(g.oh * g.ow, g.patch(), g.n),
                            &args,
                        )?;
                        self.launch_gemm(i, false)?;
                        let mut args = vec![P(ptr(&self.gemm_out, s)), P(bias), P(act(*y))];
                        args.extend([I(n), I(g.cout as i32), I(p)]);
                        args.extend(tail);
                        launch(
                            &self.kernels.to_nchw,
                            grid3(g.oh * g.ow, g.cout, g.n),
                            &args,
                        )?;
                    }
                }
            }
            Layer::DirectConv {
                x,
                w,
                b,
                y,
                g,
                groups,
                dil,
                relu,
                q_pre,
                q,
            } => {
                let mut args = vec![P(act(*x)), P(wt(*w)), P(b.map_or(0, wt)), P(act(*y))];
                args.extend(window(g, g.c));
                args.extend([g.cout, *groups, dil[0], dil[1]].map(|v| I(v as i32)));
                args.extend([I(*relu as i32), F(*q_pre), F(*q)]);
                launch(
                    &self.kernels.conv_direct,
                    grid3(g.oh * g.ow, g.cout, g.n),
                    &args,
                )?;
            }
            Layer::Gemm {
                x,
                b,
                y,
                batch,
                k,
                nout,
                relu,
                q_pre,
                q,
                int8: form,
                ..
            } => {
                let tail = [I(*relu as i32), F(*q_pre), F(*q)];
                match form.filter(|_| int8) {
                    Some(f) => {
                        let g = layer.gemm_window().expect("gemm window");
                        let args = [
                            P(act(*x)),
                            P(ptr(&self.cols_i8, s)),
                            I(*batch as i32),
                            I(*k as i32),
                            I(f.kp as i32),
                            F(f.x_scale),
                        ];
                        let cfg = launch_cfg(batch * f.kp / 16);
                        launch(&self.kernels.quantize_rows, cfg, &args)?;
                        self.launch_gemm(i, true)?;
                        let bias = b.map_or(0, wt);
                        let mut args = vec![
                            P(ptr(&self.acc, s)),
                            P(ptr(&self.scales[f.dq], s)),
                            P(bias),
                            P(act(*y)),
                        ];
                        let pp = g.positions_padded() as i32;
                        args.extend([I(*batch as i32), I(*nout as i32), I(pp)]);
                        args.extend(tail);
                        let cfg = launch_cfg(batch * nout);
                        launch(&self.kernels.dequant_rows, cfg, &args)?;
                    }
                    None => {
                        self.launch_gemm(i, false)?;
                        // A Relu after quantizing the raw output runs here, not in cuBLASLt.
                        if *q_pre > 0.0 || *q > 0.0 {
                            let args = [
                                P(act(*y)),
                                I((batch * nout) as i32),
                                tail[0],
                                tail[1],
                                tail[2],
                            ];
                            launch(&self.kernels.epilogue, launch_cfg(batch * nout), &args)?;
                        }
                    }
                }
            }
            Layer::Unary { x, .. } if self.plan.holds_codes(*x) => {
                return self.enqueue_q8_elementwise(i);
            }
            Layer::Binary { y, .. } if self.plan.holds_codes(*y) => {
                return self.enqueue_q8_elementwise(i);
            }
            Layer::Unary { x, y, len, op, q } => {
                let (code, lo, hi) = op.code();
                let args = [
                    P(act(*x)),
                    P(act(*y)),
                    I(*len as i32),
                    I(code),
                    F(lo),
                    F(hi),
                    F(*q),
                ];
                launch(&self.kernels.unary, launch_cfg(*len), &args)?;
            }
            Layer::Binary {
                a,
                b,
                y,
                op,
                dims,
                a_strides,
                b_strides,
                relu,
                q,
            } => {
                let operand = |o: &Operand| match o {
                    Operand::Act(b) => act(*b),
                    Operand::Weight(w) => wt(*w),
                };
                let n: usize = dims.iter().product();
                let mut args = vec![P(operand(a)), P(operand(b)), P(act(*y)), I(op.code())];
                // Equal strides: operands of one shape, which is the output's.
                if a_strides == b_strides {
                    args.extend([I(n as i32), I(*relu as i32), F(*q)]);
                    launch(&self.kernels.binary_same, launch_cfg(n), &args)?;
                } else {
                    args.extend([dims[1], dims[2], dims[3], n].map(|v| I(v as i32)));
                    args.extend(a_strides.iter().chain(b_strides).map(|&v| I(v as i32)));
                    args.extend([I(*relu as i32), F(*q)]);
                    launch(&self.kernels.binary, launch_cfg(n), &args)?;
                }
            }
            Layer::Pool {
                x,
                y,
                g,
                avg,
                count_include_pad,
                q,
            } => {
                if self.plan.is_nhwc(*x) {
                    return self.enqueue_nhwc_pool(i);
                }
                let mut args = vec![P(act(*x)), P(act(*y)), I(g.c as i32)];
                args.extend(window(g, 0)[2..].iter().cloned());
                args.extend([I(*avg as i32), I(*count_include_pad as i32), F(*q)]);
                launch(&self.kernels.pool, grid3(g.oh * g.ow, g.c, g.n), &args)?;
            }
            Layer::Affine {
                x,
                y,
                scale,
                shift,
                channels,
                inner,
                len,
                q,
            } => {
                let args = [
                    P(act(*x)),
                    P(act(*y)),
                    P(wt(*scale)),
                    P(wt(*shift)),
                    I(*channels as i32),
                    I(*inner as i32),
                    I(*len as i32),
                    F(*q),
                ];
                launch(&self.kernels.affine, launch_cfg(*len), &args)?;
            }
            Layer::Concat {
                parts,
                y,
                outer,
                total,
                q,
            } => {
                let mut offset = 0;
                for (x, chunk) in parts {
                    let args = [
                        P(act(*x)),
                        P(act(*y)),
                        I(*outer as i32),
                        I(*chunk as i32),
                        I(*total as i32),
                        I(offset as i32),
                        F(*q),
                    ];
                    launch(&self.kernels.concat, launch_cfg(outer * chunk), &args)?;
                    offset += chunk;
                }
            }
            Layer::Strided {
                x,
                y,
                len,
                dims,
                strides,
                offset,
                q,
            } => {
                let mut args = vec![P(act(*x)), P(act(*y)), I(*len as i32)];
                args.extend(dims[1..].iter().map(|&d| I(d as i32)));
                args.extend(strides.iter().map(|&s| I(s as i32)));
                args.extend([I(*offset as i32), F(*q)]);
                launch(&self.kernels.strided, launch_cfg(*len), &args)?;
            }
            Layer::Resize {
                x,
                y,
                dims,
                coord,
                linear,
                rounding,
                q,
            } => {
                let mut args = vec![P(act(*x)), P(act(*y))];
                args.extend(dims.iter().map(|&d| I(d as i32)));
                args.extend(coord.iter().map(|&c| F(c)));
                args.extend([I(*linear as i32), I(*rounding), F(*q)]);
                let n = dims[0] * dims[3] * dims[4];
                launch(&self.kernels.resize, launch_cfg(n), &args)?;
            }
            Layer::Softmax {
                x,
                y,
                outer,
                len,
                inner,
                q,
            } => {
                let args = [
                    P(act(*x)),
                    P(act(*y)),
                    I(*outer as i32),
                    I(*len as i32),
                    I(*inner as i32),
                    F(*q),
                ];
                launch(&self.kernels.softmax, launch_cfg(outer * inner), &args)?;
            }
        }
        Ok(())
    }

    /// Converts `n` elements between fp32 and the engine's type (`from_f32` / `to_f32`).
    fn convert(&self, f: &CudaFunction, x: u64, y: u64, n: usize) -> Result<(), BackendError> {
        let n32 = n as i32;
        let mut launch = self.ctx.stream.launch_builder(f);
        launch.arg(&x).arg(&y).arg(&n32);
        // SAFETY: x and y hold at least n elements (the staging buffer is sized for the
        // largest graph input or output).
        unsafe { launch.launch(launch_cfg(n)) }.map_err(infer_err)?;
        Ok(())
    }

    /// Device addresses of the A, B and D operands of GEMM layer `i` (its int8 form when
    /// `int8` and it has one).
    fn gemm_operands(&self, i: usize, int8: bool) -> Option<(u64, u64, u64)> {
        let s = self.ctx.stream.as_ref();
        let layer = &self.plan.layers[i];
        Some(match (layer, layer.int8().filter(|_| int8)) {
            (_, Some(f)) => (
                ptr(&self.cols_i8, s),
                ptr(&self.int8_weights[f.wq], s),
                ptr(&self.acc, s),
            ),
            (Layer::Conv { w, .. }, None) => (
                ptr(&self.cols, s),
                ptr(&self.weights[*w], s),
                ptr(&self.gemm_out, s),
            ),
            (Layer::Gemm { x, w, y, .. }, None) => (
                ptr(&self.weights[*w], s),
                ptr(&self.activations[*x], s),
                ptr(&self.activations[*y], s),
            ),
            _ => return None,
        })
    }

    /// The GEMM of layer `i` in the form chosen by `int8`.
    fn gemm_of(&self, i: usize, int8: bool) -> Option<&Gemm> {
        let forms = self.gemms[i].as_ref()?;
        match (int8 && self.plan.layers[i].int8().is_some(), &forms.int8) {
            (true, Some(g)) => Some(g),
            _ => Some(&forms.float),
        }
    }

    /// Enqueues only the GEMM of GEMM layer `i`, its int8 form when `int8` and it has one.
    fn launch_gemm(&self, i: usize, int8: bool) -> Result<(), BackendError> {
        let not_gemm = || infer_err("not a GEMM layer");
        let gemm = self.gemm_of(i, int8).ok_or_else(not_gemm)?;
        let (a, b, d) = self.gemm_operands(i, int8).ok_or_else(not_gemm)?;
        // SAFETY: int8: patches [positions padded, kp], weights [cout, kp], accumulators
        // [cout, positions padded]; conv: patches [patch, positions], weights [cout, patch],
        // output [cout, positions]; gemm: weights [nout, k] or [k, nout], x [batch, k],
        // y [batch, nout] — the shapes the GEMM was planned with.
        unsafe { gemm.launch(&self.lt, a, b, d) }.map_err(infer_err)
    }

    /// Times cuBLASLt's candidate algorithms of every GEMM on this GPU and keeps the fastest.
    fn tune_gemms(&mut self) -> Result<(), BackendError> {
        let timer = self.ctx.timer().map_err(build_err)?;
        let time = |run: &dyn Fn() -> Result<(), String>| -> Result<f64, String> {
            run()?; // warm-up
            timer
                .time(|| {
                    for _ in 0..5 {
                        run().map_err(crate::gpu::GpuError::Cuda)?;
                    }
                    Ok::<(), crate::gpu::GpuError>(())
                })
                .map_err(|e| e.to_string())
        };
        for i in 0..self.plan.layers.len() {
            for int8 in [false, true] {
                let Some(operands) = self.gemm_operands(i, int8) else {
                    continue;
                };
                let Some(forms) = self.gemms[i].as_mut() else {
                    continue;
                };
                let gemm = match (int8, forms.int8.as_mut()) {
                    (false, _) => &mut forms.float,
                    (true, Some(g)) => g,
                    (true, None) => continue,
                };
                // SAFETY: the operands are the layer's own buffers, of the planned shapes.
                let kept = unsafe { gemm.tune(&self.lt, operands, &time) }.map_err(build_err)?;
                tracing::debug!(layer = %self.plan.layer_names[i], int8, kept, "GEMM algorithm");
            }
        }
        Ok(())
    }

    /// GPU time of one pass over the whole network, ms: 3 warm-up passes, then the median of
    /// 5 timings of 5 passes each.
    fn network_time(&mut self) -> Result<f64, BackendError> {
        let timer = self.ctx.timer().map_err(build_err)?;
        for _ in 0..3 {
            self.enqueue_layers()?;
        }
        let mut samples = Vec::with_capacity(5);
        for _ in 0..5 {
            let ms = timer
                .time(|| {
                    for _ in 0..5 {
                        self.enqueue_layers()
                            .map_err(|e| GpuError::Cuda(e.to_string()))?;
                    }
                    Ok::<(), GpuError>(())
                })
                .map_err(build_err)?;
            samples.push(ms / 5.0);
        }
        samples.sort_by(f64::total_cmp);
        Ok(samples[2])
    }

    /// GPU time of each layer named in `names`, ms, in the form its plan gives it: 3 warm-up
    /// runs, then 20 between CUDA events.
    fn layer_times(&mut self, names: &[String]) -> Result<BTreeMap<String, f64>, BackendError> {
        let timer = self.ctx.timer().map_err(build_err)?;
        let mut times = BTreeMap::new();
        for i in 0..self.plan.layers.len() {
            let name = self.plan.layer_names[i].clone();
            if !names.contains(&name) {
                continue;
            }
            let int8 = self.plan.layers[i].int8().is_some();
            for _ in 0..3 {
                self.enqueue_layer(i, int8)?;
            }
            let ms = timer
                .time(|| {
                    for _ in 0..20 {
                        self.enqueue_layer(i, int8)
                            .map_err(|e| GpuError::Cuda(e.to_string()))?;
                    }
                    Ok::<(), GpuError>(())
                })
                .map_err(build_err)?;
            times.insert(name, ms / 20.0);
        }
        Ok(times)
    }

    /// The per-layer report: the precision plan's, with fp16 for best's float layers and the
    /// storage precision for layers the plan ran at float.
    fn report(&self) -> Vec<LayerPrecision> {
        self.plan
            .report
            .iter()
            .map(|l| LayerPrecision {
                precision: if l.precision == "int8" {
                    l.precision.clone()
                } else {
                    T::PRECISION.to_string()
                },
                tactic: self.tactic_of(&l.layer),
                ..l.clone()
            })
            .collect()
    }
}

/// The convolution window's arguments of a kernel (`WINDOW` in `kernels.cu`), `c` channels.
fn window(g: &graph::Window, c: usize) -> [Arg; 12] {
    [
        g.n, c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.oh, g.ow,
    ]
    .map(|v| Arg::I(v as i32))
}

/// Launches kernel `f` on `stream` with `args`.
fn launch(
    stream: &CudaStream,
    f: &CudaFunction,
    cfg: LaunchConfig,
    args: &[Arg],
) -> Result<(), BackendError> {
    let mut builder = stream.launch_builder(f);
    for a in args {
        match a {
            Arg::P(v) => builder.arg(v),
            Arg::I(v) => builder.arg(v),
            Arg::F(v) => builder.arg(v),
            Arg::D(v) => builder.arg(v),
        };
    }
    // SAFETY: every kernel's arguments are its buffers' addresses and the sizes the planner
    // computed for them; each buffer holds what the kernel indexes.
    unsafe { builder.launch(cfg) }.map_err(infer_err)?;
    Ok(())
}

/// Kernel arguments of one launch.
#[derive(Clone, Copy)]
enum Arg {
    P(u64),
    I(i32),
    F(f32),
    D(f64),
}

/// The GEMM descriptors of a Conv/Gemm layer (none for other layers).
fn gemm_forms<T: Element>(
    lt: &Lt,
    layer: &Layer,
    weights: &[CudaSlice<T>],
    stream: &CudaStream,
) -> Result<Option<GemmForms>, String> {
    // int8: D[positions padded, cout] = patchesᵀ · weights in cuBLASLt's "TN" form; column-major
    // D is [cout][positions] in memory, which the dequantize kernel reads coalesced.
    let int8 = |f: &graph::Int8Gemm, g: &graph::Window| {
        let pp = g.positions_padded();
        let shape = GemmShape {
            m: pp,
            n: g.cout,
            k: f.kp,
            trans_a: true,
            lda: f.kp,
            ldb: f.kp,
            ldd: pp,
        };
        Gemm::new(lt, GemmKind::I8, shape, Epilogue::None)
    };
    Ok(Some(match layer {
        Layer::Conv { g, int8: form, .. } => {
            let (np, ck) = (g.positions(), g.patch());
            let shape = GemmShape {
                m: np,
                n: g.cout,
                k: ck,
                trans_a: false,
                lda: np,
                ldb: ck,
                ldd: np,
            };
            GemmForms {
                float: Gemm::new(lt, T::GEMM, shape, Epilogue::None)?,
                int8: form.as_ref().map(|f| int8(f, g)).transpose()?,
            }
        }
        Layer::Gemm {
            b,
            batch,
            k,
            nout,
            trans_b,
            relu,
            q_pre,
            int8: form,
            ..
        } => {
            let shape = GemmShape {
                m: *nout,
                n: *batch,
                k: *k,
                trans_a: *trans_b,
                lda: if *trans_b { *k } else { *nout },
                ldb: *k,
                ldd: *nout,
            };
            let bias = b.map(|b| ptr(&weights[b], stream));
            // A Relu that follows quantization of the raw output runs in the epilogue kernel.
            let epilogue = match (bias, *relu && *q_pre == 0.0) {
                (Some(p), true) => Epilogue::BiasRelu(p),
                (Some(p), false) => Epilogue::Bias(p),
                (None, true) => Epilogue::Relu,
                (None, false) => Epilogue::None,
            };
            GemmForms {
                float: Gemm::new(lt, T::GEMM, shape, epilogue)?,
                int8: form
                    .as_ref()
                    .map(|f| int8(f, &layer.gemm_window().expect("gemm window")))
                    .transpose()?,
            }
        }
        _ => return Ok(None),
    }))
}

impl<T: Element> Engine for CudaEngine<T> {
    fn inputs(&self) -> &[TensorSpec] {
        &self.input_specs
    }

    fn outputs(&self) -> &[String] {
        &self.output_names
    }

    fn infer(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError> {
        self.upload_inputs(inputs)?;
        let stream = self.stream().clone();
        let s = stream.as_ref();
        self.enqueue_layers()?;
        let mut outputs = Vec::with_capacity(self.plan.outputs.len());
        for io in &self.plan.outputs {
            let n: usize = io.spec.shape.iter().product();
            let (x, y) = (ptr(&self.activations[io.buffer], s), ptr(&self.staging, s));
            self.convert(&self.kernels.to_f32, x, y, n)?;
            let mut data = vec![0f32; n];
            stream
                .memcpy_dtoh(&self.staging.slice(..n), &mut data)
                .map_err(infer_err)?;
            stream.synchronize().map_err(infer_err)?;
            outputs.push(
                Tensor::new(io.spec.shape.clone(), data)
                    .ok_or_else(|| infer_err("output shape and data disagree"))?,
            );
        }
        Ok(outputs)
    }

    fn layer_precisions(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for l in self.report() {
            *counts.entry(l.precision).or_insert(0) += 1;
        }
        counts
    }

    fn layers(&self) -> Vec<LayerPrecision> {
        self.report()
    }

    fn diagnostics(&self) -> Vec<super::EngineDiagnostic> {
        self.diagnostics.clone()
    }

    fn gpu_context(&self) -> Option<GpuContext> {
        Some(self.ctx.clone())
    }

    fn serialize(&self) -> Option<Vec<u8>> {
        let header = StoredEngine {
            layer_counts: self.layer_precisions(),
            diagnostics: self.diagnostics.clone(),
            build_path: None,
        };
        let stored = StoredPlan {
            plan: self.plan.clone(),
        };
        header.encode(&serde_json::to_vec(&stored).ok()?)
    }

    fn enqueue(&mut self) -> Result<(), BackendError> {
        self.enqueue_layers()
    }

    fn reduce_outputs(
        &mut self,
        inputs: &[Tensor],
        stats: &[crate::cache::calibrate::Statistic],
    ) -> Option<Result<Vec<crate::cache::calibrate::Reduced>, BackendError>> {
        Some(self.reduce_on_device(inputs, stats))
    }
}

impl<T: Element> CudaEngine<T> {
    /// Checks the inputs and copies them into the engine's input buffers (via the fp32
    /// staging buffer, converted on the GPU).
    fn upload_inputs(&mut self, inputs: &[Tensor]) -> Result<(), BackendError> {
        check_inputs(&self.input_specs, inputs)?;
        let stream = self.stream().clone();
        let s = stream.as_ref();
        for (io, tensor) in self.plan.inputs.iter().zip(inputs) {
            let n = tensor.data.len();
            stream
                .memcpy_htod(&tensor.data, &mut self.staging.slice_mut(..n))
                .map_err(infer_err)?;
            let (x, y) = (ptr(&self.staging, s), ptr(&self.activations[io.buffer], s));
            self.convert(&self.kernels.from_f32, x, y, n)?;
        }
        Ok(())
    }
}

/// Where nvrtc looks for `cuda_fp16.h` (CUDA_HOME/CUDA_PATH, then /usr/local/cuda).
fn cuda_include_dirs() -> Vec<String> {
    ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .chain(["/usr/local/cuda".to_string()])
        .map(|root| format!("{root}/include"))
        .filter(|dir| std::path::Path::new(dir).join("cuda_fp16.h").exists())
        .collect()
}

/// The GPU architectures (`compute_XY` as XY) the loaded nvrtc can compile for.
pub fn nvrtc_supported_archs() -> Result<Vec<i32>, BackendError> {
    if !nvrtc_present() {
        return Err(build_err("libnvrtc.so could not be loaded"));
    }
    let mut n = 0i32;
    // SAFETY: writes one int.
    unsafe { cudarc::nvrtc::sys::nvrtcGetNumSupportedArchs(&mut n) }
        .result()
        .map_err(|e| build_err(format!("nvrtcGetNumSupportedArchs: {e:?}")))?;
    let mut archs = vec![0i32; n.max(0) as usize];
    // SAFETY: `archs` holds the number of entries nvrtc said.
    unsafe { cudarc::nvrtc::sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }
        .result()
        .map_err(|e| build_err(format!("nvrtcGetSupportedArchs: {e:?}")))?;
    Ok(archs)
}

#[cfg(test)]
mod arch_tests {
    use super::*;

    /// On the device machine: the kernels compile with nvrtc for Jetson's GPUs without one
    /// present — Orin (sm_87) always, Thor (sm_110) and Xavier (sm_72) exactly when this nvrtc
    /// lists them (CUDA 13 dropped sm_72).
    #[test]
    #[ignore = "needs nvrtc (the device machine)"]
    fn kernels_compile_for_jetson_architectures() {
        let archs = nvrtc_supported_archs().unwrap();
        eprintln!("nvrtc supports compute_{archs:?}");
        for (major, minor, board) in [
            (8, 7, "Orin"),
            (11, 0, "Thor"),
            (7, 2, "Xavier"),
            (9, 0, "H100/H200"),
        ] {
            let listed = archs.contains(&(major * 10 + minor));
            let compiled = kernels_ptx(major, minor);
            eprintln!(
                "sm_{major}{minor} ({board}): listed {listed}, {}",
                match &compiled {
                    Ok(ptx) => format!("compiled, {} bytes of PTX", ptx.to_src().len()),
                    Err(e) => format!(
                        "not compiled: {}",
                        e.to_string().lines().next().unwrap_or("")
                    ),
                }
            );
            assert_eq!(compiled.is_ok(), listed, "sm_{major}{minor}");
        }
        assert!(archs.contains(&87), "Orin must be supported");
    }
}
