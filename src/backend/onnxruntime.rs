//! The onnxruntime backend (CPU): the engine Polygraphy users compare against
//! (`polygraphy run --onnxrt`), run on the same rewritten models calibench makes for TensorRT:
//! fp32 the model itself, fp16 the fp16-typed model (`calibench to-fp16`), int8 the cache's
//! Q/DQ model (`cache to-qdq`), best the Q/DQ model in fp16 (`to-fp16 --cache`).
//!
//! onnxruntime is opened at run time with the `ort` crate, nothing is linked or downloaded at
//! build time: the library is `ORT_DYLIB_PATH` (a file), or the one inside a pip-installed
//! `onnxruntime` that `python3` finds (`onnxruntime/capi/libonnxruntime.so.<version>`).
//! Sessions run single-threaded (`CALIBENCH_ORT_THREADS` changes it), as the reference backend.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor as OrtTensor;

use super::{Backend, BackendError, BuildRequest, Engine, EngineDiagnostic, StoredEngine};
use crate::cache::CalibrationCache;
use crate::matrix::{BackendKind, Precision};
use crate::model::onnx::OnnxModel;
use crate::model::{fp16, precision, qdq, Tensor, TensorSpec};

/// onnxruntime as opened once per process: its environment, library and version.
#[derive(Clone)]
struct Runtime {
    env: ort::environment::Environment,
    library: PathBuf,
    version: String,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// Where the onnxruntime library is: `ORT_DYLIB_PATH`, else a pip-installed onnxruntime's.
pub fn find_library() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("ORT_DYLIB_PATH={} is not a file", p.display()))
        };
    }
    static PIP: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PIP.get_or_init(pip_library).clone()
}

/// The library inside python3's onnxruntime package, found without importing it (an import
/// takes half a second).
fn pip_library() -> Result<PathBuf, String> {
    let capi = super::pip::package_dir("onnxruntime")?.join("capi");
    let mut libs: Vec<PathBuf> = std::fs::read_dir(&capi)
        .map_err(|e| format!("{}: {e}", capi.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so.") || n == "onnxruntime.dll")
        })
        .collect();
    libs.sort();
    libs.pop().ok_or_else(|| {
        format!(
            "{} holds no libonnxruntime.so.* (onnxruntime wheels before 1.20 ship none)",
            capi.display()
        )
    })
}

fn open() -> Result<Runtime, String> {
    let library = find_library()?;
    let env = ort::init_from(&library)
        .map_err(|e| format!("{} could not be loaded: {e:?}", library.display()))?
        .with_name("calibench")
        .build()
        .map_err(|e| format!("{}: {e}", library.display()))?;
    let version = library
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("libonnxruntime.so."))
        .unwrap_or("unknown")
        .to_string();
    Ok(Runtime {
        env,
        library,
        version,
    })
}

fn unavailable(reason: String) -> BackendError {
    BackendError::Unavailable {
        backend: "onnxruntime",
        reason,
        fix: "pip install onnxruntime (1.20 or later), or set ORT_DYLIB_PATH to libonnxruntime.so.<version>; or drop onnxruntime from axes.backends".into(),
    }
}

fn build_err(path: &Path, e: impl std::fmt::Display) -> BackendError {
    BackendError::Build(format!(
        "{}: onnxruntime could not load the model: {e}\nfix: run the same file with `python3 -c \"import onnxruntime as o; o.InferenceSession('MODEL')\"` to see onnxruntime's own error",
        path.display()
    ))
}

/// The onnxruntime backend.
#[derive(Clone)]
pub struct OnnxRuntimeBackend {
    runtime: Runtime,
    threads: usize,
    level: GraphOptimizationLevel,
    /// Whether onnxruntime may rewrite Q/DQ pairs (its QDQ fusions and weight/bias
    /// quantization); off for best's fp16 Q/DQ model.
    qdq_transforms: bool,
}

impl std::fmt::Debug for OnnxRuntimeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OnnxRuntimeBackend({})", self.runtime.library.display())
    }
}

impl OnnxRuntimeBackend {
    /// Opens onnxruntime (once per process), or says why it cannot be.
    pub fn open() -> Result<OnnxRuntimeBackend, BackendError> {
        let runtime = RUNTIME.get_or_init(open).clone().map_err(unavailable)?;
        let threads = std::env::var("CALIBENCH_ORT_THREADS")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(1);
        Ok(OnnxRuntimeBackend {
            runtime,
            threads,
            level: GraphOptimizationLevel::All,
            qdq_transforms: true,
        })
    }

    /// The same backend with onnxruntime's graph optimizations off: Q/DQ pairs and float
    /// operators are evaluated as written, without fused int8 kernels (the literal meaning of
    /// the rewritten model, for comparing engines operator by operator).
    pub fn literal(mut self) -> OnnxRuntimeBackend {
        self.level = GraphOptimizationLevel::Disable;
        self
    }

    /// The library in use.
    pub fn library(&self) -> &Path {
        &self.runtime.library
    }

    /// The backend a precision's sessions use. best's model is the Q/DQ model in fp16, and
    /// onnxruntime's Q/DQ transformers are wrong on it: its int8 fusions reject the fp16
    /// scales (QLinearConcat: "Type 'tensor(float16)' … is invalid", PaddleOCR's detector),
    /// and its WeightBiasQuantization (graph level 1) computes `bias / (x_scale · w_scale)` in
    /// fp16, which overflows 65504 and turns the int32 bias into garbage (torchvision
    /// MobileNetV2: cosine 0.27 to fp32; ResNet-50: 0.87). So best runs with Q/DQ as written
    /// (`session.disable_quant_qdq`) and onnxruntime's float optimizations.
    fn for_precision(&self, p: Precision) -> OnnxRuntimeBackend {
        match p {
            Precision::Best => OnnxRuntimeBackend {
                qdq_transforms: false,
                ..self.clone()
            },
            _ => self.clone(),
        }
    }

    /// The model onnxruntime runs for a precision, with the plan that describes it.
    pub fn rewrite(
        model: &OnnxModel,
        p: Precision,
        cache: Option<&CalibrationCache>,
    ) -> (OnnxModel, precision::PrecisionPlan) {
        match p {
            Precision::Fp32 => (model.clone(), precision::plan(model, p, None)),
            Precision::Fp16 => (fp16::apply(model), precision::plan(model, p, None)),
            Precision::Int8 => {
                let plan = precision::plan(model, p, cache);
                (qdq::apply(model, &plan), plan)
            }
            Precision::Best => {
                let int8 = precision::plan(model, Precision::Int8, cache);
                let q = qdq::apply(model, &int8);
                (fp16::apply(&q), precision::plan(model, p, cache))
            }
        }
    }

    /// An engine of an already rewritten model at a batch size.
    pub fn compile(
        &self,
        model: &OnnxModel,
        batch: usize,
        layer_counts: BTreeMap<String, usize>,
        diagnostics: Vec<EngineDiagnostic>,
    ) -> Result<OrtEngine, BackendError> {
        let bytes = model.to_bytes();
        let session = Session::builder(&self.runtime.env)
            .map_err(|e| build_err(&model.path, e))?
            .with_optimization_level(self.level)
            .map_err(|e| build_err(&model.path, e))?
            .with_quant_qdq(self.qdq_transforms)
            .map_err(|e| build_err(&model.path, e))?
            .with_intra_threads(self.threads)
            .map_err(|e| build_err(&model.path, e))?
            // On x86-64 CPUs without VNNI (AVX2, AVX-512 without VNNI) onnxruntime's default
            // u8×s8 int8 kernels saturate their 16-bit pair sums, and int8 outputs are wrong
            // (digits CNN: cosine 0.971 for 0.997; PP-OCR classifier: top-1 18.8 % for 96.9 %).
            // This selects its exact u8×u8 kernels there; other CPUs are left as they are.
            .with_precise_qmm()
            .map_err(|e| build_err(&model.path, e))?
            .commit_from_memory(&bytes)
            .map_err(|e| build_err(&model.path, e))?;
        let mut inputs = Vec::new();
        let mut types = Vec::new();
        for io in model.inputs() {
            let shape = io
                .shape_at_batch(batch)
                .map_err(|e| BackendError::Build(format!("{}: {e}", model.path.display())))?;
            types.push(InputType::of(io.elem_type).ok_or_else(|| {
                BackendError::Build(format!(
                    "{}: input {:?} has ONNX element type {}, which calibench cannot feed to onnxruntime",
                    model.path.display(),
                    io.name,
                    crate::model::types::type_name(io.elem_type)
                ))
            })?);
            inputs.push(TensorSpec {
                name: io.name,
                shape,
            });
        }
        Ok(OrtEngine {
            session,
            inputs,
            types,
            outputs: model.outputs().into_iter().map(|o| o.name).collect(),
            layer_counts,
            diagnostics,
            model_bytes: bytes,
        })
    }
}

/// An fp32 engine of a model at a batch size for calibration: every graph output computed as
/// written, on `threads` intra-op threads (`CALIBENCH_ORT_THREADS` overrides).
pub fn fp32_engine(
    model: &OnnxModel,
    batch: usize,
    threads: usize,
) -> Result<Box<dyn Engine>, BackendError> {
    let mut backend = OnnxRuntimeBackend::open()?;
    if std::env::var_os("CALIBENCH_ORT_THREADS").is_none() {
        backend.threads = threads.max(1);
    }
    Ok(Box::new(backend.compile(
        model,
        batch,
        BTreeMap::new(),
        Vec::new(),
    )?))
}

/// How an input is fed: calibench's data is f32, converted to the model's type.
#[derive(Debug, Clone, Copy)]
enum InputType {
    F32,
    I64,
    I32,
}

impl InputType {
    fn of(elem_type: i32) -> Option<InputType> {
        Some(match elem_type {
            1 => InputType::F32,
            7 => InputType::I64,
            6 => InputType::I32,
            _ => return None,
        })
    }
}

/// An onnxruntime session of one cell.
pub struct OrtEngine {
    session: Session,
    inputs: Vec<TensorSpec>,
    types: Vec<InputType>,
    outputs: Vec<String>,
    layer_counts: BTreeMap<String, usize>,
    diagnostics: Vec<EngineDiagnostic>,
    model_bytes: Vec<u8>,
}

impl Backend for OnnxRuntimeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Onnxruntime
    }

    fn build(&self, request: &BuildRequest<'_>) -> Result<Box<dyn Engine>, BackendError> {
        let model = request.load_model()?;
        let cache = request.load_cache()?;
        let (rewritten, plan) = Self::rewrite(&model, request.cell.precision, cache.as_ref());
        Ok(Box::new(
            self.for_precision(request.cell.precision).compile(
                &rewritten,
                request.cell.batch,
                plan.layer_counts(),
                super::reference::plan_diagnostics(&plan),
            )?,
        ))
    }

    fn version(&self) -> String {
        format!(
            "onnxruntime-{}/calibench-{}",
            self.runtime.version,
            env!("CARGO_PKG_VERSION")
        )
    }

    fn load(
        &self,
        request: &BuildRequest<'_>,
        bytes: &[u8],
        origin: &Path,
    ) -> Result<Box<dyn Engine>, BackendError> {
        let (header, payload) = StoredEngine::decode(bytes, origin, "onnxruntime")?;
        let model = OnnxModel::from_bytes(origin, payload)
            .map_err(|e| BackendError::Build(e.to_string()))?;
        Ok(Box::new(
            self.for_precision(request.cell.precision).compile(
                &model,
                request.cell.batch,
                header.layer_counts,
                header.diagnostics,
            )?,
        ))
    }
}

fn infer_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Infer(format!("onnxruntime failed while running: {e}"))
}

impl Engine for OrtEngine {
    fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    fn outputs(&self) -> &[String] {
        &self.outputs
    }

    fn infer(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError> {
        super::check_inputs(&self.inputs, inputs)?;
        let mut feeds: Vec<(String, ort::value::DynValue)> = Vec::new();
        for ((t, spec), ty) in inputs.iter().zip(&self.inputs).zip(&self.types) {
            let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
            let value = match ty {
                InputType::F32 => {
                    OrtTensor::from_array((shape, t.data.clone())).map(|v| v.into_dyn())
                }
                InputType::I64 => OrtTensor::from_array((
                    shape,
                    t.data.iter().map(|&v| v as i64).collect::<Vec<_>>(),
                ))
                .map(|v| v.into_dyn()),
                InputType::I32 => OrtTensor::from_array((
                    shape,
                    t.data.iter().map(|&v| v as i32).collect::<Vec<_>>(),
                ))
                .map(|v| v.into_dyn()),
            }
            .map_err(infer_err)?;
            feeds.push((spec.name.clone(), value));
        }
        // The feeds are lent, not moved: a graph output that is also a graph input (calibration
        // exposes the input as an output) is the input's own value, read after the run (moved
        // feeds were freed first, and that output read freed memory: an input amax of 1e36).
        let views: Vec<(&str, &ort::value::DynValue)> =
            feeds.iter().map(|(n, v)| (n.as_str(), v)).collect();
        let outputs = self.session.run(views).map_err(infer_err)?;
        let mut out = Vec::with_capacity(self.outputs.len());
        for name in &self.outputs {
            let v = &outputs[name.as_str()];
            let (shape, data): (Vec<usize>, Vec<f32>) = if let Ok((shape, data)) =
                v.try_extract_tensor::<f32>()
            {
                (shape.iter().map(|&d| d as usize).collect(), data.to_vec())
            } else if let Ok((shape, data)) = v.try_extract_tensor::<i64>() {
                (
                    shape.iter().map(|&d| d as usize).collect(),
                    data.iter().map(|&x| x as f32).collect(),
                )
            } else {
                return Err(BackendError::Infer(format!(
                        "output {name:?} is neither float32 nor int64; calibench compares float outputs"
                    )));
            };
            out.push(Tensor { shape, data });
        }
        Ok(out)
    }

    fn layer_precisions(&self) -> BTreeMap<String, usize> {
        self.layer_counts.clone()
    }

    fn diagnostics(&self) -> Vec<EngineDiagnostic> {
        self.diagnostics.clone()
    }

    fn serialize(&self) -> Option<Vec<u8>> {
        StoredEngine {
            layer_counts: self.layer_counts.clone(),
            diagnostics: self.diagnostics.clone(),
            build_path: None,
        }
        .encode(&self.model_bytes)
    }
}
