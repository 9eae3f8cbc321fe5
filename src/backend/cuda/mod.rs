//! The `cuda` backend: runs ONNX models on the GPU itself, cuBLASLt for convolutions (im2col)
//! and GEMMs, nvrtc-compiled kernels (`kernels.cu`) for the rest.
//!
//! This step runs fp32 and fp16 (weights converted once at build, activations stored in fp16,
//! fp32 accumulation) for Conv, Gemm, Relu, MaxPool, Reshape and Flatten. int8 and best are
//! refused at build with a clear error until the int8 GEMM path lands.

mod graph;

use std::collections::BTreeMap;
use std::sync::Arc;

use cudarc::cublaslt::{sys as lt, CudaBlasLT, Matmul, MatmulConfig, MatmulShared, Workspace};
use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};

use super::{check_inputs, Backend, BackendError, BuildRequest, Engine, StoredEngine};
use crate::gpu::cuda::{nvrtc_present, GpuContext};
use crate::matrix::{BackendKind, Precision};
use crate::model::onnx::OnnxModel;
use crate::model::tensor::{Tensor, TensorSpec};
use graph::{Layer, Plan};

const KERNELS: &str = include_str!("kernels.cu");

fn build_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Build(e.to_string())
}

fn infer_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Infer(e.to_string())
}

/// The cuda backend (no state: each build opens a context on the cell's GPU).
#[derive(Debug, Default)]
pub struct CudaBackend;

impl Backend for CudaBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cuda
    }

    fn build(&self, request: &BuildRequest<'_>) -> Result<Box<dyn Engine>, BackendError> {
        let (ctx, precision) = context_for(request)?;
        let model = OnnxModel::load(request.model_path).map_err(build_err)?;
        let plan = Plan::from_model(&model, request.cell.batch).map_err(build_err)?;
        engine_for(&ctx, precision, plan)
    }

    fn load(
        &self,
        request: &BuildRequest<'_>,
        bytes: &[u8],
        origin: &std::path::Path,
    ) -> Result<Box<dyn Engine>, BackendError> {
        let (ctx, precision) = context_for(request)?;
        let (_, payload) = StoredEngine::decode(bytes, origin, "cuda")?;
        let plan: Plan = serde_json::from_slice(payload).map_err(|e| {
            build_err(format!(
                "{}: not a calibench cuda engine ({e})\nfix: delete it; it is rebuilt on the next run",
                origin.display()
            ))
        })?;
        engine_for(&ctx, precision, plan)
    }
}

/// The cell's GPU context and precision, once the precision is one this backend runs.
fn context_for(request: &BuildRequest<'_>) -> Result<(GpuContext, Precision), BackendError> {
    let ordinal = request
        .gpu_ordinal
        .ok_or_else(|| build_err("the cuda backend runs on a GPU; this cell has none"))?;
    let ctx = GpuContext::new(ordinal).map_err(build_err)?;
    let precision = request.cell.precision;
    check_precision(precision)?;
    Ok((ctx, precision))
}

fn check_precision(precision: Precision) -> Result<(), BackendError> {
    if matches!(precision, Precision::Int8 | Precision::Best) {
        return Err(build_err(format!(
                "the cuda backend runs fp32 and fp16 so far; {precision} is not implemented yet \
                 (fix: use the reference backend for int8/best, or drop {precision} from this cell)"
            )));
    }
    Ok(())
}

fn engine_for(
    ctx: &GpuContext,
    precision: Precision,
    plan: Plan,
) -> Result<Box<dyn Engine>, BackendError> {
    if !nvrtc_present() {
        return Err(BackendError::Unavailable {
            backend: "cuda",
            reason: "libnvrtc.so could not be loaded".into(),
            fix: "install the CUDA toolkit's nvrtc (libnvrtc.so) or add it to LD_LIBRARY_PATH"
                .into(),
        });
    }
    match precision {
        Precision::Fp16 => Ok(Box::new(CudaEngine::<half::f16>::new(ctx, plan)?)),
        _ => Ok(Box::new(CudaEngine::<f32>::new(ctx, plan)?)),
    }
}

/// cuBLASLt with calibench's compute types: strict fp32 for fp32 engines (cudarc's default for
/// f32 is TF32, which rounds inputs to 10-bit mantissas), fp32 accumulation for fp16 engines.
pub struct Blas(CudaBlasLT);

impl MatmulShared for Blas {
    fn handle(&self) -> &lt::cublasLtHandle_t {
        self.0.handle()
    }
    fn workspace(&self) -> &Workspace {
        self.0.workspace()
    }
    fn stream(&self) -> &Arc<CudaStream> {
        self.0.stream()
    }
}

impl Matmul<f32> for Blas {
    fn matrix_type() -> lt::cudaDataType {
        lt::cudaDataType_t::CUDA_R_32F
    }
    fn compute_type() -> lt::cublasComputeType_t {
        lt::cublasComputeType_t::CUBLAS_COMPUTE_32F
    }
}

impl Matmul<half::f16> for Blas {
    fn matrix_type() -> lt::cudaDataType {
        lt::cudaDataType_t::CUDA_R_16F
    }
    fn compute_type() -> lt::cublasComputeType_t {
        lt::cublasComputeType_t::CUBLAS_COMPUTE_32F
    }
}

/// An element type the engine stores tensors in.
pub trait Element: DeviceRepr + ValidAsZeroBits + Copy + Unpin + 'static {
    /// Suffix of the kernels for this type in `kernels.cu`.
    const SUFFIX: &'static str;
    /// Precision name for the per-layer report.
    const PRECISION: &'static str;
    /// From a host float.
    fn from_f32(v: f32) -> Self;
    /// To a host float.
    fn to_f32(self) -> f32;
}

impl Element for f32 {
    const SUFFIX: &'static str = "f32";
    const PRECISION: &'static str = "fp32";
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl Element for half::f16 {
    const SUFFIX: &'static str = "f16";
    const PRECISION: &'static str = "fp16";
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
}

struct Kernels {
    im2col: CudaFunction,
    to_nchw: CudaFunction,
    relu: CudaFunction,
    maxpool: CudaFunction,
}

/// A built engine: the plan's weights and activations resident on one GPU.
struct CudaEngine<T: Element> {
    ctx: GpuContext,
    blas: Blas,
    kernels: Kernels,
    plan: Plan,
    weights: Vec<CudaSlice<T>>,
    /// One buffer per activation of the plan (reshapes alias their input's buffer).
    activations: Vec<CudaSlice<T>>,
    /// im2col and GEMM scratch, sized for the largest convolution.
    cols: CudaSlice<T>,
    gemm_out: CudaSlice<T>,
    input_specs: Vec<TensorSpec>,
    output_names: Vec<String>,
}

fn launch_cfg(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 65_535) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl<T: Element> CudaEngine<T>
where
    Blas: Matmul<T>,
{
    fn new(ctx: &GpuContext, plan: Plan) -> Result<Self, BackendError> {
        let stream = &ctx.stream;
        let mut options = cudarc::nvrtc::CompileOptions::default();
        for dir in cuda_include_dirs() {
            options.include_paths.push(dir);
        }
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(KERNELS, options).map_err(|e| {
            build_err(format!(
                "compiling the cuda backend's kernels with nvrtc: {e}"
            ))
        })?;
        let module = ctx.ctx.load_module(ptx).map_err(build_err)?;
        let load = |name: &str| {
            module
                .load_function(&format!("{name}_{}", T::SUFFIX))
                .map_err(build_err)
        };
        let kernels = Kernels {
            im2col: load("im2col")?,
            to_nchw: load("to_nchw")?,
            relu: load("relu")?,
            maxpool: load("maxpool")?,
        };
        let weights = plan
            .weights
            .iter()
            .map(|w| {
                let host: Vec<T> = w.iter().map(|&v| T::from_f32(v)).collect();
                stream.clone_htod(&host).map_err(build_err)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let activations = plan
            .buffer_sizes
            .iter()
            .map(|&n| stream.alloc_zeros::<T>(n.max(1)).map_err(build_err))
            .collect::<Result<Vec<_>, _>>()?;
        let cols = stream
            .alloc_zeros::<T>(plan.max_cols.max(1))
            .map_err(build_err)?;
        let gemm_out = stream
            .alloc_zeros::<T>(plan.max_gemm_out.max(1))
            .map_err(build_err)?;
        let blas = Blas(CudaBlasLT::new(stream.clone()).map_err(build_err)?);
        Ok(CudaEngine {
            ctx: ctx.clone(),
            blas,
            kernels,
            input_specs: plan.inputs.iter().map(|i| i.spec.clone()).collect(),
            output_names: plan.outputs.iter().map(|o| o.spec.name.clone()).collect(),
            plan,
            weights,
            activations,
            cols,
            gemm_out,
        })
    }

    fn stream(&self) -> &Arc<CudaStream> {
        &self.ctx.stream
    }

    /// Enqueues every layer on the stream.
    fn enqueue_layers(&mut self) -> Result<(), BackendError> {
        let stream = self.ctx.stream.clone();
        for layer in &self.plan.layers {
            match layer {
                Layer::Conv {
                    x,
                    w,
                    b,
                    y,
                    g,
                    relu,
                } => {
                    let (n, p, ck) = (g.n, g.oh * g.ow, g.c * g.kh * g.kw);
                    let ints = [
                        g.n, g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.oh, g.ow,
                    ]
                    .map(|v| v as i32);
                    let mut launch = stream.launch_builder(&self.kernels.im2col);
                    launch.arg(&self.activations[*x]).arg(&mut self.cols);
                    for v in &ints {
                        launch.arg(v);
                    }
                    // SAFETY: cols holds ck * n * p elements (max_cols), x holds n*c*h*w.
                    unsafe { launch.launch(launch_cfg(ck * n * p)) }.map_err(infer_err)?;
                    let cfg = MatmulConfig {
                        transa: false,
                        transb: false,
                        transc: false,
                        m: (n * p) as u64,
                        n: g.cout as u64,
                        k: ck as u64,
                        alpha: 1.0,
                        lda: (n * p) as i64,
                        ldb: ck as i64,
                        beta: 0.0,
                        ldc: (n * p) as i64,
                        stride_a: None,
                        stride_b: None,
                        stride_c: None,
                        stride_bias: None,
                        batch_size: None,
                    };
                    // SAFETY: shapes as in cfg; gemm_out holds cout * n * p (max_gemm_out).
                    unsafe {
                        self.blas.matmul(
                            cfg,
                            &self.cols,
                            &self.weights[*w],
                            &mut self.gemm_out,
                            None,
                            None,
                        )
                    }
                    .map_err(infer_err)?;
                    let (ni, co, pi, r) = (n as i32, g.cout as i32, p as i32, *relu as i32);
                    let mut launch = stream.launch_builder(&self.kernels.to_nchw);
                    launch.arg(&self.gemm_out);
                    match b {
                        Some(b) => launch.arg(&self.weights[*b]),
                        None => launch.arg(&0u64),
                    };
                    launch
                        .arg(&mut self.activations[*y])
                        .arg(&ni)
                        .arg(&co)
                        .arg(&pi)
                        .arg(&r);
                    // SAFETY: y holds n * cout * p elements.
                    unsafe { launch.launch(launch_cfg(n * g.cout * p)) }.map_err(infer_err)?;
                }
                Layer::Gemm {
                    x,
                    w,
                    b,
                    y,
                    batch,
                    k,
                    nout,
                    trans_b,
                    relu,
                } => {
                    let cfg = MatmulConfig {
                        transa: *trans_b,
                        transb: false,
                        transc: false,
                        m: *nout as u64,
                        n: *batch as u64,
                        k: *k as u64,
                        alpha: 1.0,
                        lda: if *trans_b { *k } else { *nout } as i64,
                        ldb: *k as i64,
                        beta: 0.0,
                        ldc: *nout as i64,
                        stride_a: None,
                        stride_b: None,
                        stride_c: None,
                        stride_bias: None,
                        batch_size: None,
                    };
                    let act = relu.then_some(cudarc::cublaslt::Activation::Relu);
                    let (xs, ys) = pair(&mut self.activations, *x, *y);
                    // SAFETY: w is [nout, k] (trans_b) or [k, nout]; x [batch, k]; y [batch, nout].
                    unsafe {
                        self.blas.matmul(
                            cfg,
                            &self.weights[*w],
                            xs,
                            ys,
                            b.map(|b| &self.weights[b]),
                            act.as_ref(),
                        )
                    }
                    .map_err(infer_err)?;
                }
                Layer::Relu { x, y, len } => {
                    let n = *len as i64;
                    let (xs, ys) = pair(&mut self.activations, *x, *y);
                    let mut launch = stream.launch_builder(&self.kernels.relu);
                    launch.arg(xs).arg(ys).arg(&n);
                    // SAFETY: x and y hold len elements.
                    unsafe { launch.launch(launch_cfg(*len)) }.map_err(infer_err)?;
                }
                Layer::MaxPool { x, y, g } => {
                    let ints = [
                        g.n * g.c,
                        1,
                        g.h,
                        g.w,
                        g.kh,
                        g.kw,
                        g.sh,
                        g.sw,
                        g.ph,
                        g.pw,
                        g.oh,
                        g.ow,
                    ]
                    .map(|v| v as i32);
                    let (xs, ys) = pair(&mut self.activations, *x, *y);
                    let mut launch = stream.launch_builder(&self.kernels.maxpool);
                    launch.arg(xs).arg(ys);
                    for v in &ints {
                        launch.arg(v);
                    }
                    // SAFETY: y holds n*c*oh*ow elements, x n*c*h*w.
                    unsafe { launch.launch(launch_cfg(g.n * g.c * g.oh * g.ow)) }
                        .map_err(infer_err)?;
                }
            }
        }
        Ok(())
    }
}

/// `x` shared and `y` mutable from one vector (`x != y`, checked by the planner).
fn pair<S>(v: &mut [S], x: usize, y: usize) -> (&S, &mut S) {
    assert_ne!(x, y, "a layer reads and writes the same buffer");
    if x < y {
        let (lo, hi) = v.split_at_mut(y);
        (&lo[x], &mut hi[0])
    } else {
        let (lo, hi) = v.split_at_mut(x);
        (&hi[0], &mut lo[y])
    }
}

impl<T: Element> Engine for CudaEngine<T>
where
    Blas: Matmul<T>,
{
    fn inputs(&self) -> &[TensorSpec] {
        &self.input_specs
    }

    fn outputs(&self) -> &[String] {
        &self.output_names
    }

    fn infer(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError> {
        check_inputs(&self.input_specs, inputs)?;
        let stream = self.stream().clone();
        for (io, tensor) in self.plan.inputs.iter().zip(inputs) {
            let host: Vec<T> = tensor.data.iter().map(|&v| T::from_f32(v)).collect();
            stream
                .memcpy_htod(&host, &mut self.activations[io.buffer])
                .map_err(infer_err)?;
        }
        self.enqueue_layers()?;
        let mut outputs = Vec::with_capacity(self.plan.outputs.len());
        for io in &self.plan.outputs {
            let host = stream
                .clone_dtoh(&self.activations[io.buffer])
                .map_err(infer_err)?;
            let len: usize = io.spec.shape.iter().product();
            let data = host[..len].iter().map(|v| v.to_f32()).collect();
            outputs.push(
                Tensor::new(io.spec.shape.clone(), data)
                    .ok_or_else(|| infer_err("output shape and data disagree"))?,
            );
        }
        Ok(outputs)
    }

    fn layer_precisions(&self) -> BTreeMap<String, usize> {
        BTreeMap::from([(T::PRECISION.to_string(), self.plan.layers.len())])
    }

    fn gpu_context(&self) -> Option<GpuContext> {
        Some(self.ctx.clone())
    }

    fn serialize(&self) -> Option<Vec<u8>> {
        let header = StoredEngine {
            layer_counts: self.layer_precisions(),
            diagnostics: Vec::new(),
        };
        header.encode(&serde_json::to_vec(&self.plan).ok()?)
    }

    fn enqueue(&mut self) -> Result<(), BackendError> {
        self.enqueue_layers()
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
