//! The `tensorrt` backend (cargo feature `tensorrt`): engines built by TensorRT from the ONNX
//! model and the cell's cache, as trtexec builds them (`fp16` → kFP16, `int8` → kINT8 + a
//! calibrator serving the cache, `best` → both; on TensorRT 11, which has neither flags nor
//! calibrators, int8/best build a strongly typed network from the cache's Q/DQ rewrite and fp16
//! from the fp16-typed model; the record says which), TensorRT's log classified into diagnostics, per-layer
//! precision from the engine inspector, and inference through enqueueV3 on a cudarc stream.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, DevicePtr};

use super::diagnostics::{build_config_diagnostics, classify, Severity};
use super::ffi::{header_major, BuildOptions, LoadedEngine, TensorRt};
use super::inspector;
use crate::backend::{
    check_inputs, Backend, BackendError, BuildRequest, Engine, EngineDiagnostic, StoredEngine,
};
use crate::cache::{CalibrationCache, TrtVersion};
use crate::gpu::cuda::GpuContext;
use crate::matrix::{BackendKind, Precision};
use crate::model::onnx::OnnxModel;
use crate::model::{fp16, precision, qdq, Tensor, TensorSpec};

/// Workspace given to the builder (trtexec's default is the whole device; 1 GiB keeps several
/// builds side by side on one GPU).
pub const WORKSPACE_BYTES: usize = 1 << 30;

/// The TensorRT backend: TensorRT opened once, shared by every engine.
pub struct TensorRtBackend {
    trt: Arc<TensorRt>,
}

impl TensorRtBackend {
    /// Opens TensorRT, or says what was searched.
    pub fn open() -> Result<TensorRtBackend, BackendError> {
        TensorRt::open()
            .map(|t| TensorRtBackend { trt: Arc::new(t) })
            .map_err(|e| BackendError::Unavailable {
                backend: "tensorrt",
                reason: e.to_string(),
                fix: "or drop tensorrt from axes.backends to skip these cells".into(),
            })
    }

    fn runtime_version(&self) -> TrtVersion {
        TrtVersion::from_code(self.trt.library_version as u32)
    }
}

fn build_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Build(e.to_string())
}

impl Backend for TensorRtBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Tensorrt
    }

    fn version(&self) -> String {
        format!(
            "tensorrt-{}/calibench-{}",
            self.trt.library_version,
            env!("CARGO_PKG_VERSION")
        )
    }

    fn build(&self, request: &BuildRequest<'_>) -> Result<Box<dyn Engine>, BackendError> {
        let ordinal = request
            .gpu_ordinal
            .ok_or_else(|| build_err("the tensorrt backend runs on a GPU; this cell has none"))?;
        let ctx = GpuContext::new(ordinal).map_err(build_err)?;
        let model = request.load_model()?;
        let cache = request
            .cache_path
            .map(CalibrationCache::read)
            .transpose()
            .map_err(build_err)?;
        let precision = request.cell.precision;
        let mut options = BuildOptions {
            workspace_bytes: WORKSPACE_BYTES,
            detailed_profiling: true,
            shapes: input_shapes(&model, request.cell.batch)?,
            ..Default::default()
        };
        let cache_text = cache.as_ref().map(|c| c.to_text().into_bytes());
        let (onnx, build_path) = if header_major() >= 11 {
            // TensorRT 11: no builder flags or calibrators; precision lives in the model.
            match precision {
                Precision::Fp32 => (model.to_bytes(), "TensorRT 11: fp32 network".to_string()),
                Precision::Fp16 => (
                    fp16::apply(&model).to_bytes(),
                    "TensorRT 11: strongly typed network from the fp16-typed model (calibench to-fp16)"
                        .to_string(),
                ),
                Precision::Int8 | Precision::Best => {
                    let plan = precision::plan(&model, Precision::Int8, cache.as_ref());
                    let quantized = qdq::apply(&model, &plan);
                    if precision == Precision::Best {
                        (
                            fp16::apply(&quantized).to_bytes(),
                            "TensorRT 11: strongly typed network from the cache's Q/DQ rewrite in fp16 (calibench to-fp16 --cache): int8 where the cache has scales, fp16 elsewhere"
                                .to_string(),
                        )
                    } else {
                        (
                            quantized.to_bytes(),
                            "TensorRT 11: strongly typed network from the cache's Q/DQ rewrite (calibench cache to-qdq): int8 where the cache has scales, fp32 elsewhere"
                                .to_string(),
                        )
                    }
                }
            }
        } else {
            options.fp16 = matches!(precision, Precision::Fp16 | Precision::Best);
            options.int8 = precision.needs_cache();
            options.cache = cache_text.as_deref();
            let flags = match precision {
                Precision::Fp32 => "no precision flags",
                Precision::Fp16 => "kFP16",
                Precision::Int8 => "kINT8 + a calibrator serving the cache",
                Precision::Best => "kFP16 + kINT8 + a calibrator serving the cache",
            };
            (
                model.to_bytes(),
                format!("TensorRT 10: builder flags, {flags}"),
            )
        };
        let built = self.trt.build(&onnx, &options);
        let mut diagnostics: Vec<EngineDiagnostic> = build_config_diagnostics(
            precision,
            cache.as_ref().map(|c| c.header.version()),
            Some(self.runtime_version()),
        )
        .into_iter()
        .chain(
            self.trt
                .take_log()
                .iter()
                .filter(|l| l.severity <= Severity::Warning)
                .filter_map(classify),
        )
        .map(|d| EngineDiagnostic {
            kind: serde_json::to_value(&d.kind)
                .ok()
                .and_then(|v| v["kind"].as_str().map(str::to_string))
                .unwrap_or_default(),
            message: d.message,
            fix: d.fix,
        })
        .collect();
        diagnostics.dedup_by(|a, b| a.kind == b.kind && a.message == b.message);
        let bytes = built.map_err(|e| {
            let notes: Vec<String> = diagnostics
                .iter()
                .map(|d| format!("{} (fix: {})", d.message, d.fix))
                .collect();
            build_err(format!(
                "{e}{}{}",
                if notes.is_empty() { "" } else { "\n" },
                notes.join("\n")
            ))
        })?;
        let layer_counts = self
            .trt
            .inspect(&bytes)
            .ok()
            .and_then(|json| inspector::parse(&json).ok())
            .map(|layers| inspector::precision_counts(&layers))
            .unwrap_or_default();
        Ok(Box::new(TrtEngine::new(
            &self.trt,
            ctx,
            &model,
            request.cell.batch,
            bytes,
            StoredEngine {
                layer_counts,
                diagnostics,
                build_path: Some(build_path),
            },
        )?))
    }

    fn load(
        &self,
        request: &BuildRequest<'_>,
        bytes: &[u8],
        origin: &Path,
    ) -> Result<Box<dyn Engine>, BackendError> {
        let (header, plan) = StoredEngine::decode(bytes, origin, "TensorRT")?;
        let ordinal = request
            .gpu_ordinal
            .ok_or_else(|| build_err("the tensorrt backend runs on a GPU; this cell has none"))?;
        let ctx = GpuContext::new(ordinal).map_err(build_err)?;
        let model = request.load_model()?;
        Ok(Box::new(TrtEngine::new(
            &self.trt,
            ctx,
            &model,
            request.cell.batch,
            plan.to_vec(),
            header,
        )?))
    }
}

fn input_shapes(model: &OnnxModel, batch: usize) -> Result<Vec<(String, Vec<i64>)>, BackendError> {
    model
        .inputs()
        .into_iter()
        .map(|io| {
            let shape = io.shape_at_batch(batch).map_err(build_err)?;
            Ok((io.name, shape.into_iter().map(|d| d as i64).collect()))
        })
        .collect()
}

/// A TensorRT engine with device buffers bound to its I/O tensors (float32 I/O).
struct TrtEngine {
    engine: LoadedEngine,
    ctx: GpuContext,
    inputs: Vec<TensorSpec>,
    input_buffers: Vec<CudaSlice<f32>>,
    outputs: Vec<String>,
    output_shapes: Vec<Vec<usize>>,
    output_buffers: Vec<CudaSlice<f32>>,
    layer_counts: BTreeMap<String, usize>,
    diagnostics: Vec<EngineDiagnostic>,
    build_path: Option<String>,
    plan: Vec<u8>,
}

impl TrtEngine {
    fn new(
        trt: &Arc<TensorRt>,
        ctx: GpuContext,
        model: &OnnxModel,
        batch: usize,
        plan: Vec<u8>,
        header: StoredEngine,
    ) -> Result<TrtEngine, BackendError> {
        let mut engine = trt.load(&plan).map_err(build_err)?;
        let inputs: Vec<TensorSpec> = input_shapes(model, batch)?
            .into_iter()
            .map(|(name, dims)| TensorSpec {
                name,
                shape: dims.into_iter().map(|d| d as usize).collect(),
            })
            .collect();
        let outs = model.outputs();
        let output_shapes: Vec<Vec<usize>> = outs
            .iter()
            .map(|o| o.shape_at_batch(batch).map_err(build_err))
            .collect::<Result<_, _>>()?;
        let alloc = |n: usize| ctx.stream.alloc_zeros::<f32>(n.max(1)).map_err(build_err);
        let input_buffers: Vec<CudaSlice<f32>> = inputs
            .iter()
            .map(|s| alloc(s.shape.iter().product()))
            .collect::<Result<_, _>>()?;
        let output_buffers: Vec<CudaSlice<f32>> = output_shapes
            .iter()
            .map(|s| alloc(s.iter().product()))
            .collect::<Result<_, _>>()?;
        for (spec, buf) in inputs.iter().zip(&input_buffers) {
            let (ptr, _sync) = buf.device_ptr(&ctx.stream);
            // SAFETY: the buffer lives in this engine as long as the binding is used.
            unsafe { engine.set_tensor(&spec.name, ptr as *mut std::ffi::c_void) }
                .map_err(build_err)?;
        }
        for (o, buf) in outs.iter().zip(&output_buffers) {
            let (ptr, _sync) = buf.device_ptr(&ctx.stream);
            // SAFETY: as above.
            unsafe { engine.set_tensor(&o.name, ptr as *mut std::ffi::c_void) }
                .map_err(build_err)?;
        }
        Ok(TrtEngine {
            engine,
            ctx,
            inputs,
            input_buffers,
            outputs: outs.into_iter().map(|o| o.name).collect(),
            output_shapes,
            output_buffers,
            layer_counts: header.layer_counts,
            diagnostics: header.diagnostics,
            build_path: header.build_path,
            plan,
        })
    }
}

impl Engine for TrtEngine {
    fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    fn outputs(&self) -> &[String] {
        &self.outputs
    }

    fn infer(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError> {
        check_inputs(&self.inputs, inputs)?;
        let stream = self.ctx.stream.clone();
        for (t, buf) in inputs.iter().zip(&mut self.input_buffers) {
            stream
                .memcpy_htod(&t.data, buf)
                .map_err(|e| BackendError::Infer(e.to_string()))?;
        }
        Engine::enqueue(self)?;
        let mut outs = Vec::with_capacity(self.output_buffers.len());
        for (buf, shape) in self.output_buffers.iter().zip(&self.output_shapes) {
            let mut host = vec![0f32; shape.iter().product()];
            stream
                .memcpy_dtoh(buf, &mut host)
                .map_err(|e| BackendError::Infer(e.to_string()))?;
            outs.push(Tensor {
                shape: shape.clone(),
                data: host,
            });
        }
        stream
            .synchronize()
            .map_err(|e| BackendError::Infer(e.to_string()))?;
        Ok(outs)
    }

    fn layer_precisions(&self) -> BTreeMap<String, usize> {
        self.layer_counts.clone()
    }

    fn gpu_context(&self) -> Option<GpuContext> {
        Some(self.ctx.clone())
    }

    fn enqueue(&mut self) -> Result<(), BackendError> {
        // SAFETY: every I/O tensor was bound to a live buffer of its size on this device.
        unsafe {
            self.engine
                .enqueue(self.ctx.stream.cu_stream() as *mut std::ffi::c_void)
        }
        .map_err(|e| BackendError::Infer(e.to_string()))
    }

    fn diagnostics(&self) -> Vec<EngineDiagnostic> {
        self.diagnostics.clone()
    }

    fn build_path(&self) -> Option<String> {
        self.build_path.clone()
    }

    fn serialize(&self) -> Option<Vec<u8>> {
        StoredEngine {
            layer_counts: self.layer_counts.clone(),
            diagnostics: self.diagnostics.clone(),
            build_path: self.build_path.clone(),
        }
        .encode(&self.plan)
    }
}
