//! Per-layer GPU time of a cuda engine (trtexec's `--dumpProfile`), and for each GEMM layer the
//! time of its bare cuBLASLt GEMM alone, so the cost of the layer's own kernels (patch
//! extraction, epilogue) shows against cuBLASLt's throughput for the same shape.

use std::path::Path;

use serde::Serialize;

use super::{
    best_engine, build_err, context_for_ordinal, engine_plan, graph, has_tensor_cores,
    with_tensor_cores, CudaEngine, Element,
};
use crate::backend::BackendError;
use crate::matrix::Precision;

/// The bare GEMM of a layer.
#[derive(Debug, Clone, Serialize)]
pub struct GemmProfile {
    /// `int8` or the float type.
    pub precision: String,
    /// Rows, columns and inner dimension of the product.
    pub m: usize,
    /// Columns.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Median GPU time of one GEMM, ms.
    pub ms: f64,
    /// Throughput: 2·m·n·k / time, in tera-operations per second.
    pub tops: f64,
}

/// One layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerProfile {
    /// ONNX node label.
    pub name: String,
    /// Layer kind (conv, gemm, pool, …).
    pub kind: String,
    /// Precision it ran at.
    pub precision: String,
    /// Median GPU time of the whole layer, ms.
    pub ms: f64,
    /// cuBLASLt's GEMM of the same shape alone, for Conv/Gemm/MatMul layers (for a
    /// convolution on tensor cores, what the im2col + cuBLASLt path would spend on its GEMM).
    pub gemm: Option<GemmProfile>,
    /// The whole layer's throughput: 2·positions·cout·patch / its time, in TOP/s.
    pub layer_tops: Option<f64>,
}

/// Builds the cuda engine of a model and times each layer: `iterations` launches between two
/// CUDA events, repeated `repeats` times, median of the repeats.
pub fn profile_model(
    model: &crate::model::onnx::OnnxModel,
    cache: Option<&Path>,
    precision: Precision,
    batch: usize,
    ordinal: usize,
    iterations: usize,
) -> Result<Vec<LayerProfile>, BackendError> {
    let ctx = context_for_ordinal(ordinal)?;
    let (plan, diagnostics) = engine_plan(model, cache, precision, batch)?;
    let tensor_cores = has_tensor_cores(&ctx);
    match precision {
        Precision::Best => best_engine(&ctx, plan, diagnostics, tensor_cores)?.profile(iterations),
        Precision::Fp16 => {
            let plan = with_tensor_cores(plan, precision, tensor_cores);
            CudaEngine::<half::f16>::new(&ctx, plan, diagnostics)?.profile(iterations)
        }
        Precision::Fp32 | Precision::Int8 => {
            let plan = with_tensor_cores(plan, precision, tensor_cores);
            CudaEngine::<f32>::new(&ctx, plan, diagnostics)?.profile(iterations)
        }
    }
}

const REPEATS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

impl<T: Element> CudaEngine<T> {
    /// Times every layer, and the GEMM of every GEMM layer.
    fn profile(&mut self, iterations: usize) -> Result<Vec<LayerProfile>, BackendError> {
        let iterations = iterations.max(1);
        let timer = self.ctx.timer().map_err(build_err)?;
        let time = |engine: &mut Self, what: &dyn Fn(&mut Self) -> Result<(), BackendError>| {
            what(engine)?; // warm-up
            let mut samples = Vec::with_capacity(REPEATS);
            for _ in 0..REPEATS {
                let ms = timer
                    .time(|| {
                        for _ in 0..iterations {
                            what(engine).map_err(|e| crate::gpu::GpuError::Cuda(e.to_string()))?;
                        }
                        Ok::<(), crate::gpu::GpuError>(())
                    })
                    .map_err(build_err)?;
                samples.push(ms / iterations as f64);
            }
            Ok::<f64, BackendError>(median(samples))
        };
        let mut out = Vec::with_capacity(self.plan.layers.len());
        for i in 0..self.plan.layers.len() {
            let layer = self.plan.layers[i].clone();
            let int8 = layer.int8().is_some();
            let ms = time(self, &|e: &mut Self| e.enqueue_layer(i, int8))?;
            let gemm = match layer.gemm_window() {
                Some(g) => {
                    let (m, n, k) = match layer.int8() {
                        Some(f) => (g.positions_padded(), g.cout, f.kp),
                        None => (g.positions(), g.cout, g.patch()),
                    };
                    let gemm_ms = time(self, &|e: &mut Self| e.launch_gemm(i, int8))?;
                    Some(GemmProfile {
                        precision: if int8 {
                            "int8".into()
                        } else {
                            T::PRECISION.into()
                        },
                        m,
                        n,
                        k,
                        ms: gemm_ms,
                        tops: 2.0 * (m * n * k) as f64 / (gemm_ms * 1e-3) / 1e12,
                    })
                }
                None => None,
            };
            let precision = self.plan.layer_precision(i, T::PRECISION);
            let layer_tops = layer
                .gemm_window()
                .map(|g| 2.0 * (g.positions() * g.cout * g.patch()) as f64 / (ms * 1e-3) / 1e12);
            let kind = match &layer {
                graph::Layer::Conv { mma: Some(_), .. } => "conv(tc)".to_string(),
                graph::Layer::Pool { x, .. } if self.plan.is_nhwc(*x) => {
                    format!("{}(nhwc)", layer.kind())
                }
                _ => layer.kind().to_string(),
            };
            out.push(LayerProfile {
                name: self.plan.layer_names[i].clone(),
                kind,
                precision: precision.to_string(),
                ms,
                gemm,
                layer_tops,
            });
        }
        Ok(out)
    }
}
