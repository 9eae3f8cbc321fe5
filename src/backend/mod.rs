//! Backends build an [`Engine`] for a cell and run it. Each backend is one file behind the
//! [`Backend`] trait; the runner only sees the trait.

pub mod cuda;
pub mod mock;
pub mod onnxruntime;
pub mod pip;
pub mod reference;
pub mod tensorrt;
pub mod tract_defects;

use std::collections::BTreeMap;
use std::path::Path;

use crate::matrix::{BackendKind, Cell, Spec};
use crate::model::{Tensor, TensorSpec};

/// Everything a backend needs to build one cell's engine.
#[derive(Debug, Clone, Copy)]
pub struct BuildRequest<'a> {
    /// The cell (model id, cache id, precision, batch, device).
    pub cell: &'a Cell,
    /// Path of the ONNX model.
    pub model_path: &'a Path,
    /// Path of the calibration cache, for int8/best cells.
    pub cache_path: Option<&'a Path>,
    /// CUDA ordinal of the cell's GPU (GPU backends).
    pub gpu_ordinal: Option<usize>,
    /// Shapes given for inputs with symbolic dimensions (axis 0 is the batch).
    pub input_shapes: &'a crate::model::onnx::InputShapes,
}

impl BuildRequest<'_> {
    /// The cell's calibration cache (int8/best cells), read.
    pub fn load_cache(&self) -> Result<Option<crate::cache::CalibrationCache>, BackendError> {
        self.cache_path
            .map(crate::cache::CalibrationCache::read)
            .transpose()
            .map_err(|e| BackendError::Build(e.to_string()))
    }

    /// The model, with the given input shapes fixed.
    pub fn load_model(&self) -> Result<crate::model::onnx::OnnxModel, BackendError> {
        crate::model::onnx::load_with_shapes(self.model_path, self.input_shapes)
            .map_err(|e| BackendError::Build(e.to_string()))
    }
}

/// Why a backend could not build or run.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot run on this machine or in this build.
    #[error("backend {backend} is not available: {reason}\nfix: {fix}")]
    Unavailable {
        /// Backend name.
        backend: &'static str,
        /// What is missing.
        reason: String,
        /// What the user can do.
        fix: String,
    },
    /// The backend cannot run this model as written (an operator, shape or pattern it does
    /// not support, or computes wrongly): the cell says nothing about the cache.
    #[error("{0}")]
    Unsupported(String),
    /// Building the engine failed.
    #[error("{0}")]
    Build(String),
    /// Running the engine failed.
    #[error("{0}")]
    Infer(String),
}

/// Something a build found that the user should know, with what to do about it (a TensorRT
/// log line classified, or calibench's own check of the cache against the model).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngineDiagnostic {
    /// Kind, e.g. `missing_scale`, `fp16_not_configured`.
    pub kind: String,
    /// What happened.
    pub message: String,
    /// What to do.
    pub fix: String,
}

/// What a stored engine carries besides the backend's own bytes: one JSON line, then the
/// payload (a rewritten ONNX model, a TensorRT plan).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredEngine {
    /// Layers per precision.
    pub layer_counts: BTreeMap<String, usize>,
    /// Diagnostics of the build.
    pub diagnostics: Vec<EngineDiagnostic>,
    /// How the engine was built, where the backend has several ways (TensorRT 10 builder
    /// flags vs TensorRT 11 strongly typed networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_path: Option<String>,
}

impl StoredEngine {
    /// The header line followed by `payload`.
    pub fn encode(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let mut out = serde_json::to_vec(self).ok()?;
        out.push(b'\n');
        out.extend_from_slice(payload);
        Some(out)
    }

    /// Splits stored bytes into the header and the payload; `origin` names the file in errors.
    pub fn decode<'b>(
        bytes: &'b [u8],
        origin: &Path,
        what: &str,
    ) -> Result<(StoredEngine, &'b [u8]), BackendError> {
        let bad = |why: &str| {
            BackendError::Build(format!(
                "{}: not a calibench {what} engine ({why})\nfix: delete it; it is rebuilt on the next run",
                origin.display()
            ))
        };
        let newline = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("no header"))?;
        let header = serde_json::from_slice(&bytes[..newline]).map_err(|_| bad("bad header"))?;
        Ok((header, &bytes[newline + 1..]))
    }
}

/// Checks inputs against what an engine takes: their number and each shape.
pub fn check_inputs(specs: &[TensorSpec], inputs: &[Tensor]) -> Result<(), BackendError> {
    if inputs.len() != specs.len() {
        return Err(BackendError::Infer(format!(
            "the engine takes {} input(s), got {}",
            specs.len(),
            inputs.len()
        )));
    }
    for (t, spec) in inputs.iter().zip(specs) {
        if t.shape != spec.shape {
            return Err(BackendError::Infer(format!(
                "input {:?} has shape {:?}, the engine takes {:?}",
                spec.name, t.shape, spec.shape
            )));
        }
    }
    Ok(())
}

/// Builds engines for cells.
pub trait Backend: Send {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// Builds the engine of one cell.
    fn build(&self, request: &BuildRequest<'_>) -> Result<Box<dyn Engine>, BackendError>;
    /// The backend's version, part of the engine-store key (an upgrade never reuses engines).
    fn version(&self) -> String {
        format!("{}/calibench-{}", self.kind(), env!("CARGO_PKG_VERSION"))
    }
    /// Loads an engine that [`Engine::serialize`] wrote; `origin` names the file in errors.
    fn load(
        &self,
        request: &BuildRequest<'_>,
        bytes: &[u8],
        origin: &Path,
    ) -> Result<Box<dyn Engine>, BackendError> {
        let _ = (request, bytes);
        Err(BackendError::Build(format!(
            "{}: the {} backend cannot load stored engines",
            origin.display(),
            self.kind()
        )))
    }
}

/// A built engine: takes inputs, gives outputs.
pub trait Engine {
    /// The inputs it takes, batch size applied.
    fn inputs(&self) -> &[TensorSpec];
    /// Names of the outputs `infer` returns, in order.
    fn outputs(&self) -> &[String];
    /// Runs one inference.
    fn infer(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError>;
    /// How many layers run at each precision (`int8`, `fp16`, `fp32`), where known.
    fn layer_precisions(&self) -> BTreeMap<String, usize> {
        BTreeMap::new()
    }
    /// How the engine was built, where the backend has several ways.
    fn build_path(&self) -> Option<String> {
        None
    }
    /// Precision of each layer, in execution order (empty where the backend does not say).
    fn layers(&self) -> Vec<crate::model::precision::LayerPrecision> {
        Vec::new()
    }
    /// What the build found worth telling (uncovered tensors, TensorRT warnings).
    fn diagnostics(&self) -> Vec<EngineDiagnostic> {
        Vec::new()
    }
    /// What running the engine logged (TensorRT's warnings during enqueue), taken once at the
    /// end of the cell.
    fn runtime_diagnostics(&mut self) -> Vec<EngineDiagnostic> {
        Vec::new()
    }
    /// GPU engines: the context their work runs on, so calibench can time `enqueue` with
    /// CUDA events (`None`: a CPU engine, timed by wall clock around `infer`).
    fn gpu_context(&self) -> Option<crate::gpu::cuda::GpuContext> {
        None
    }
    /// GPU engines: enqueues one inference on the context's stream over the inputs of the last
    /// `infer`, without copies or a synchronize (what GPU compute time measures).
    fn enqueue(&mut self) -> Result<(), BackendError> {
        Err(BackendError::Infer(
            "this engine does not run on a GPU stream".into(),
        ))
    }
    /// The engine as bytes for the engine store (`None`: this engine is not stored).
    fn serialize(&self) -> Option<Vec<u8>> {
        None
    }
    /// GPU engines: runs one inference and reduces output i to `stats[i]` on the device, for
    /// calibration (`None`: this engine returns values only).
    fn reduce_outputs(
        &mut self,
        _inputs: &[Tensor],
        _stats: &[crate::cache::calibrate::Statistic],
    ) -> Option<Result<Vec<crate::cache::calibrate::Reduced>, BackendError>> {
        None
    }
}

/// Creates the backend of a kind, or says why it cannot exist here.
pub fn create(kind: BackendKind, spec: &Spec) -> Result<Box<dyn Backend>, BackendError> {
    match kind {
        BackendKind::Mock => Ok(Box::new(mock::MockBackend::new(&spec.mock)?)),
        BackendKind::Reference => Ok(Box::new(reference::ReferenceBackend)),
        BackendKind::Onnxruntime => Ok(Box::new(onnxruntime::OnnxRuntimeBackend::open()?)),
        #[cfg(feature = "tensorrt")]
        BackendKind::Tensorrt => Ok(Box::new(tensorrt::engine::TensorRtBackend::open()?)),
        #[cfg(not(feature = "tensorrt"))]
        BackendKind::Tensorrt => Err(BackendError::Unavailable {
            backend: "tensorrt",
            reason: "this calibench was built without the tensorrt feature".into(),
            fix: "build it with TENSORRT_ROOT=/path/to/TensorRT CUDA_INCLUDE_DIR=/path/to/cuda/include cargo build --release --features tensorrt (see README), or drop tensorrt from axes.backends".into(),
        }),
        BackendKind::Cuda => Ok(Box::new(cuda::CudaBackend)),
    }
}
