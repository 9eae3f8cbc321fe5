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

use super::calibrator::calibrator_for;
use super::call_log;
use super::diagnostics::{build_config_diagnostics, Diagnostic, DiagnosticKind, LogLine, Severity};
use super::ffi::{header_major, BuildOptions, LoadedEngine, Logged, TensorRt};
use super::inspector;
use super::io::{self, Binding};
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
        let runtime = self.runtime_version();
        let mut options = BuildOptions {
            workspace_bytes: WORKSPACE_BYTES,
            detailed_profiling: true,
            shapes: input_shapes(&model, request.cell.batch)?,
            ..Default::default()
        };
        let cache_text = cache.as_ref().map(|c| c.to_text().into_bytes());
        let (onnx, build_path) = if header_major() >= 11 {
            // TensorRT 11: no builder flags or calibrators; precision lives in the model, and
            // the cache reaches TensorRT only as the model's Q/DQ nodes.
            tensorrt11_model(&model, precision, cache.as_ref())
        } else {
            options.fp16 = matches!(precision, Precision::Fp16 | Precision::Best);
            options.int8 = precision.needs_cache();
            if let (true, Some(cache), Some(path)) = (options.int8, &cache, request.cache_path) {
                options.calibrator =
                    calibrator_for(&cache.header, path, runtime).map_err(build_err)?;
                options.cache = cache_text.as_deref();
            }
            let flags = match precision {
                Precision::Fp32 => "no precision flags".to_string(),
                Precision::Fp16 => "kFP16".to_string(),
                Precision::Int8 => format!(
                    "kINT8 + {} serving the cache",
                    options.calibrator.class_name()
                ),
                Precision::Best => format!(
                    "kFP16 + kINT8 + {} serving the cache",
                    options.calibrator.class_name()
                ),
            };
            (
                model.to_bytes(),
                format!("TensorRT 10: builder flags, {flags}"),
            )
        };
        let (built, log) = self.trt.build(&onnx, &options);
        let mut diagnostics: Vec<Diagnostic> = build_config_diagnostics(precision, cache.is_some());
        diagnostics.extend(call_log::diagnostics(&log));
        let bytes = built.map_err(|e| {
            let notes: Vec<String> = diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Warning)
                .filter(|d| d.kind != DiagnosticKind::TensorrtWarning)
                .map(|d| format!("{} (fix: {})", d.message, d.fix))
                .collect();
            let message = call_log::failure_message(&e.to_string(), &log);
            build_err(if notes.is_empty() {
                message
            } else {
                format!("{message}\n{}", notes.join("\n"))
            })
        })?;
        let (inspected, inspect_log) = self.trt.inspect(&bytes);
        diagnostics.extend(call_log::diagnostics(&inspect_log));
        let mut diagnostics: Vec<EngineDiagnostic> =
            diagnostics.into_iter().map(engine_diagnostic).collect();
        let layer_counts = match inspected
            .map_err(|e| e.to_string())
            .and_then(|json| inspector::parse(&json).map_err(|e| e.to_string()))
        {
            Ok(layers) => inspector::precision_counts(&layers),
            Err(why) => {
                diagnostics.push(EngineDiagnostic {
                    kind: "engine_inspector_failed".into(),
                    message: format!("per-layer precision is unknown: {why}"),
                    fix: "nothing to do for the measurement; the per-layer table stays empty for this cell".into(),
                });
                BTreeMap::new()
            }
        };
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

/// TensorRT 11's model for a precision: fp32 as is, fp16 typed, int8 from the cache's Q/DQ
/// rewrite (best: that in fp16), and the build path that says so.
fn tensorrt11_model(
    model: &OnnxModel,
    precision: Precision,
    cache: Option<&CalibrationCache>,
) -> (Vec<u8>, String) {
    match precision {
        Precision::Fp32 => (model.to_bytes(), "TensorRT 11: fp32 network".to_string()),
        Precision::Fp16 => (
            fp16::apply(model).to_bytes(),
            "TensorRT 11: strongly typed network from the fp16-typed model (calibench to-fp16)"
                .to_string(),
        ),
        Precision::Int8 | Precision::Best => {
            let plan = precision::plan(model, Precision::Int8, cache);
            let quantized = qdq::apply(model, &plan);
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
}

fn engine_diagnostic(d: Diagnostic) -> EngineDiagnostic {
    EngineDiagnostic {
        kind: serde_json::to_value(&d.kind)
            .ok()
            .and_then(|v| v["kind"].as_str().map(str::to_string))
            .unwrap_or_default(),
        message: d.message,
        fix: d.fix,
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

/// A call's result, its log's errors put first in the message of a failure.
fn logged<T>((result, log): Logged<T>, what: &str) -> Result<(T, Vec<LogLine>), String> {
    match result {
        Ok(v) => Ok((v, log)),
        Err(e) => Err(call_log::failure_message(&format!("{what}: {e}"), &log)),
    }
}

/// Distinct TensorRT lines logged while the engine ran (kept to a bounded number).
const RUNTIME_LOG_LIMIT: usize = 64;

/// A bound tensor: its binding and its device buffer.
struct Bound {
    binding: Binding,
    buffer: CudaSlice<u8>,
}

/// A TensorRT engine with device buffers bound to every I/O tensor, each sized for its type.
struct TrtEngine {
    engine: LoadedEngine,
    ctx: GpuContext,
    inputs: Vec<TensorSpec>,
    input_buffers: Vec<Bound>,
    outputs: Vec<String>,
    output_buffers: Vec<Bound>,
    /// Engine outputs the model does not list: bound (TensorRT requires it), never read.
    _extra_buffers: Vec<Bound>,
    layer_counts: BTreeMap<String, usize>,
    diagnostics: Vec<EngineDiagnostic>,
    runtime_log: Vec<LogLine>,
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
        mut header: StoredEngine,
    ) -> Result<TrtEngine, BackendError> {
        let mut log = Vec::new();
        let (mut engine, l) = logged(trt.load(&plan), "loading the engine").map_err(build_err)?;
        log.extend(l);
        let shapes = input_shapes(model, batch)?;
        let (io, l) =
            logged(engine.io_tensors(), "listing the engine's I/O tensors").map_err(build_err)?;
        log.extend(l);
        let dynamic: Vec<String> = io::dynamic_inputs(&io)
            .into_iter()
            .map(String::from)
            .collect();
        for name in &dynamic {
            if let Some((_, dims)) = shapes.iter().find(|(n, _)| n == name) {
                let ((), l) = logged(engine.set_shape(name, dims), "setting an input shape")
                    .map_err(build_err)?;
                log.extend(l);
            }
        }
        let io = if dynamic.is_empty() {
            io
        } else {
            let (io, l) = logged(engine.io_tensors(), "listing the engine's I/O tensors")
                .map_err(build_err)?;
            log.extend(l);
            io
        };
        let model_inputs: Vec<(String, Vec<usize>)> = shapes
            .iter()
            .map(|(n, d)| (n.clone(), d.iter().map(|v| *v as usize).collect()))
            .collect();
        let model_outputs: Vec<String> = model.outputs().into_iter().map(|o| o.name).collect();
        let io_plan = io::plan(&io, &model_inputs, &model_outputs).map_err(|e| {
            build_err(format!(
                "{e}\nfix: the engine and the model disagree about their I/O; rebuild the engine \
                 (delete it from the engine store) or check the model's inputs and outputs"
            ))
        })?;
        let mut bind = |binding: Binding| -> Result<Bound, BackendError> {
            let buffer = ctx
                .stream
                .alloc_zeros::<u8>(binding.bytes.max(1))
                .map_err(build_err)?;
            let ptr = {
                let (ptr, _sync) = buffer.device_ptr(&ctx.stream);
                ptr
            };
            // SAFETY: the buffer holds the tensor's bytes and lives in this engine as long as
            // the binding is used.
            let ((), l) = logged(
                unsafe { engine.set_tensor(&binding.engine_name, ptr as *mut std::ffi::c_void) },
                "binding a tensor",
            )
            .map_err(build_err)?;
            log.extend(l);
            Ok(Bound { binding, buffer })
        };
        let input_buffers: Vec<Bound> = io_plan
            .inputs
            .into_iter()
            .map(&mut bind)
            .collect::<Result<_, _>>()?;
        let output_buffers: Vec<Bound> = io_plan
            .outputs
            .into_iter()
            .map(&mut bind)
            .collect::<Result<_, _>>()?;
        let extra_buffers: Vec<Bound> = io_plan
            .extra_outputs
            .into_iter()
            .map(&mut bind)
            .collect::<Result<_, _>>()?;
        for d in call_log::diagnostics(&log)
            .into_iter()
            .map(engine_diagnostic)
        {
            if !header.diagnostics.contains(&d) {
                header.diagnostics.push(d);
            }
        }
        Ok(TrtEngine {
            engine,
            ctx,
            inputs: model_inputs
                .into_iter()
                .map(|(name, shape)| TensorSpec { name, shape })
                .collect(),
            input_buffers,
            outputs: model_outputs,
            output_buffers,
            _extra_buffers: extra_buffers,
            layer_counts: header.layer_counts,
            diagnostics: header.diagnostics,
            runtime_log: Vec::new(),
            build_path: header.build_path,
            plan,
        })
    }

    fn keep_runtime_log(&mut self, lines: Vec<LogLine>) {
        for line in lines {
            if self.runtime_log.len() < RUNTIME_LOG_LIMIT && !self.runtime_log.contains(&line) {
                self.runtime_log.push(line);
            }
        }
    }
}

fn infer_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Infer(e.to_string())
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
        for (t, bound) in inputs.iter().zip(&mut self.input_buffers) {
            let bytes = bound.binding.dtype.encode(&t.data);
            stream
                .memcpy_htod(bytes.as_ref(), &mut bound.buffer)
                .map_err(infer_err)?;
        }
        Engine::enqueue(self)?;
        let mut outs = Vec::with_capacity(self.output_buffers.len());
        for bound in &self.output_buffers {
            let mut host = vec![0u8; bound.binding.bytes];
            stream
                .memcpy_dtoh(&bound.buffer, &mut host)
                .map_err(infer_err)?;
            outs.push((bound.binding.dtype, bound.binding.shape.clone(), host));
        }
        stream.synchronize().map_err(infer_err)?;
        Ok(outs
            .into_iter()
            .map(|(dtype, shape, host)| Tensor {
                shape,
                data: dtype.decode(&host),
            })
            .collect())
    }

    fn layer_precisions(&self) -> BTreeMap<String, usize> {
        self.layer_counts.clone()
    }

    fn gpu_context(&self) -> Option<GpuContext> {
        Some(self.ctx.clone())
    }

    fn enqueue(&mut self) -> Result<(), BackendError> {
        // SAFETY: every I/O tensor was bound to a live buffer of its size on this device.
        let (result, log) = unsafe {
            self.engine
                .enqueue(self.ctx.stream.cu_stream() as *mut std::ffi::c_void)
        };
        match result {
            Ok(()) => {
                if !log.is_empty() {
                    self.keep_runtime_log(log);
                }
                Ok(())
            }
            Err(e) => Err(infer_err(call_log::failure_message(&e.to_string(), &log))),
        }
    }

    fn diagnostics(&self) -> Vec<EngineDiagnostic> {
        self.diagnostics.clone()
    }

    fn runtime_diagnostics(&mut self) -> Vec<EngineDiagnostic> {
        call_log::diagnostics(&std::mem::take(&mut self.runtime_log))
            .into_iter()
            .map(engine_diagnostic)
            .collect()
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
