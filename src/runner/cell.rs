//! One cell: build its engine, check its accuracy, measure its latency, make its record.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use chrono::Utc;

use super::engine_store::{EngineKey, EngineStore};
use super::eval::{run_dataset, EvalSet};
use crate::backend::{Backend, BackendError, BuildRequest};
use crate::gpu::cuda::CudaEventTimer;
use crate::gpu::nvml::GpuInfo;
use crate::gpu::GpuError;
use crate::matrix::spec::{LatencySpec, ModelSpec};
use crate::matrix::Cell;
use crate::measure::{accuracy, latency};
use crate::model::Tensor;
use crate::results::schema::{
    Accuracy, Artifact, CellError, Diagnostic, EngineInfo, Environment, MatrixInfo, Record, Status,
    ToolInfo, RECORD_SCHEMA,
};

/// What every cell of a run shares.
pub struct CellContext<'a> {
    /// Run id.
    pub run_id: &'a str,
    /// Matrix name and sha256.
    pub matrix: MatrixInfo,
    /// Hashes of models (`model:ID`) and caches (`cache:MODEL:ID`), or why a file is unreadable.
    pub artifacts: BTreeMap<String, Result<Artifact, String>>,
    /// Latency settings.
    pub latency: LatencySpec,
    /// The host.
    pub environment: Environment,
    /// Telemetry sampling period for GPU cells.
    pub telemetry_period: Option<std::time::Duration>,
    /// Where criterion writes its estimates and HTML (`None`: criterion is not used).
    pub criterion_dir: Option<std::path::PathBuf>,
    /// Whether criterion also draws its HTML report.
    pub criterion_html: bool,
    /// The engine store, if used.
    pub engine_store: Option<EngineStore>,
}

fn error(phase: &str, message: impl Into<String>) -> CellError {
    CellError {
        phase: phase.to_string(),
        message: message.into(),
    }
}

impl CellContext<'_> {
    /// A model's or cache's artifact.
    pub fn artifact(&self, kind: &str, id: &str) -> Result<Artifact, String> {
        self.artifacts
            .get(&format!("{kind}:{id}"))
            .cloned()
            .unwrap_or_else(|| Err(format!("{kind} {id:?} is not in the matrix")))
    }

    fn cache(&self, cell: &Cell, id: &str) -> Result<Artifact, String> {
        self.artifact("cache", &format!("{}:{id}", cell.model))
    }

    /// A record with the cell's identity filled in and no measurements.
    pub fn record(
        &self,
        cell: &Cell,
        started: chrono::DateTime<Utc>,
        status: Status,
        err: Option<CellError>,
    ) -> Record {
        let model = self
            .artifact("model", &cell.model)
            .unwrap_or_else(|_| Artifact {
                id: cell.model.clone(),
                path: String::new(),
                sha256: String::new(),
                origin_gpu: None,
            });
        let cache = cell.cache.as_ref().and_then(|c| self.cache(cell, c).ok());
        Record {
            schema: RECORD_SCHEMA,
            run_id: self.run_id.to_string(),
            matrix: self.matrix.clone(),
            key: cell.key(),
            cell: cell.clone(),
            status,
            error: err,
            model,
            cache,
            gpu: None,
            telemetry: None,
            diagnostics: Vec::new(),
            engine: None,
            latency: None,
            end_to_end: None,
            accuracy: None,
            cross_check: Vec::new(),
            expected: None,
            thresholds: None,
            calibench: ToolInfo::current(),
            environment: self.environment.clone(),
            started_at: started,
            finished_at: Utc::now(),
        }
    }

    /// A skipped record: planned, not measured (its GPU or backend is not on this host).
    pub fn skipped(&self, cell: &Cell, reason: String) -> Record {
        self.record(
            cell,
            Utc::now(),
            Status::Skipped,
            Some(error("setup", reason)),
        )
    }

    /// A failed record for a cell whose run panicked.
    pub fn panicked(&self, cell: &Cell, what: String) -> Record {
        self.record(
            cell,
            Utc::now(),
            Status::Failed,
            Some(error(
                "internal",
                format!("calibench panicked while running this cell: {what}\nfix: this is a calibench bug; please report it with the cell key"),
            )),
        )
    }
}

/// Another backend that runs the same cell for the cross-check, or why it cannot exist here.
pub type OtherBackend<'a> = (
    crate::matrix::BackendKind,
    &'a Result<Box<dyn Backend>, String>,
);

/// Everything one cell needs beyond the shared context.
pub struct CellInputs<'a> {
    /// The cell.
    pub cell: &'a Cell,
    /// Its model's spec (for tolerances).
    pub model: &'a ModelSpec,
    /// Its backend, or why it is unavailable.
    pub backend: &'a Result<Box<dyn Backend>, String>,
    /// Its evaluation set, none, or why it could not be loaded.
    pub eval: Result<Option<std::sync::Arc<EvalSet>>, String>,
    /// The GPU it runs on (GPU cells).
    pub gpu: Option<&'a GpuInfo>,
    /// Other backends that run the same cell to cross-check its outputs.
    pub cross: Vec<OtherBackend<'a>>,
}

/// Builds, evaluates and measures one cell. Every failure becomes a failed record.
pub fn run_cell(ctx: &CellContext<'_>, input: CellInputs<'_>) -> Record {
    let cell = input.cell;
    let started = Utc::now();
    let fail = |phase: &str, message: String| {
        ctx.record(cell, started, Status::Failed, Some(error(phase, message)))
    };
    let backend = match input.backend {
        Ok(b) => b,
        // The backend is not installed here: the cell is planned but not measured.
        Err(e) => {
            return ctx.skipped(
                cell,
                format!("backend {} is unavailable: {e}", cell.backend),
            )
        }
    };
    let model = match ctx.artifact("model", &cell.model) {
        Ok(m) => m,
        Err(e) => return fail("setup", e),
    };
    let cache = match cell.cache.as_ref().map(|c| ctx.cache(cell, c)).transpose() {
        Ok(c) => c,
        Err(e) => return fail("setup", e),
    };
    let eval = match input.eval {
        Ok(e) => e,
        Err(e) => {
            return fail(
                "setup",
                format!("evaluation data of model {:?}: {e}", cell.model),
            )
        }
    };
    let input_shapes = input.model.input_shapes();
    let request = BuildRequest {
        cell,
        model_path: Path::new(&model.path),
        cache_path: cache.as_ref().map(|c| Path::new(c.path.as_str())),
        // CUDA's ordinal of the cell's GPU, found by UUID (NVML's index can differ).
        gpu_ordinal: input
            .gpu
            .map(|g| crate::gpu::cuda::ordinal_for_uuid(&g.uuid).unwrap_or(g.index as usize)),
        input_shapes: &input_shapes,
    };
    let build_start = Instant::now();
    let backend_version = backend.version();
    let key = EngineKey {
        cell,
        model_sha256: &model.sha256,
        cache_sha256: cache.as_ref().map(|c| c.sha256.as_str()),
        backend_version: &backend_version,
        device: input.gpu.map_or("cpu", |g| g.uuid.as_str()),
        input_shapes: &input_shapes,
    };
    let mut store_problem = None;
    let stored = ctx
        .engine_store
        .as_ref()
        .and_then(|s| match s.get(&key) {
            Ok(found) => found,
            Err(why) => {
                tracing::warn!("{}: {why}", cell.key());
                store_problem = Some(why);
                None
            }
        })
        .and_then(|(path, bytes)| {
            backend
                .load(&request, &bytes, &path)
                .map_err(|e| {
                    tracing::warn!("{}: stored engine unusable, rebuilding: {e}", cell.key())
                })
                .ok()
        });
    let cached = stored.is_some();
    let mut engine = match stored.map(Ok).unwrap_or_else(|| backend.build(&request)) {
        Ok(e) => e,
        Err(e) => {
            // A backend that cannot run the model says nothing about the cache: "unsupported"
            // cells are not measured, where a failed build (e.g. a rejected cache) is a verdict.
            let phase = match e {
                BackendError::Unsupported(_) => "unsupported",
                _ => "build",
            };
            return fail(
                phase,
                format!("model {:?} ({}): {e}", cell.model, model.path),
            );
        }
    };
    if let (false, Some(store), Some(bytes)) = (cached, &ctx.engine_store, engine.serialize()) {
        if let Err(e) = store.put(&key, &bytes) {
            tracing::warn!(
                "cannot store the engine of {} in {}: {e}",
                cell.key(),
                store.dir().display()
            );
        }
    }
    let mut record = ctx.record(cell, started, Status::Ok, None);
    record.gpu = input.gpu.cloned();
    record.diagnostics = engine
        .diagnostics()
        .into_iter()
        .map(|d| Diagnostic {
            kind: d.kind,
            message: d.message,
            fix: d.fix,
        })
        .collect();
    if let Some(why) = store_problem {
        record.diagnostics.push(Diagnostic {
            kind: "stored_engine_damaged".into(),
            message: why,
            fix: "nothing to do: the engine was rebuilt; check the disk of the engine store if this repeats".into(),
        });
    }
    record.engine = Some(EngineInfo {
        build_s: build_start.elapsed().as_secs_f64(),
        cached,
        layer_precisions: engine.layer_precisions(),
        layers: engine.layers(),
        build_path: engine.build_path(),
    });

    if let Some(set) = eval.as_ref().filter(|s| !s.non_finite.is_empty()) {
        record.diagnostics.push(Diagnostic {
            kind: "non_finite_eval_data".into(),
            message: format!(
                "the evaluation data of model {:?} holds non-finite values, so its accuracy figures are not meaningful: {}",
                cell.model,
                set.non_finite.join("; ")
            ),
            fix: "clean the eval_inputs / reference files (NaN usually means a failed export or a division by zero in preprocessing)".into(),
        });
    }
    let latency_inputs: Vec<Tensor> = match &eval {
        Some(set) => {
            let (accuracy, outputs) = match evaluate(engine.as_mut(), set, cell, input.model) {
                Ok(a) => a,
                Err(e) => {
                    record.status = Status::Failed;
                    record.error = Some(error("accuracy", e.to_string()));
                    record.finished_at = Utc::now();
                    return record;
                }
            };
            if !accuracy.passed {
                record.status = Status::Failed;
                record.error = Some(error(
                    "accuracy",
                    accuracy.reason.clone().unwrap_or_default(),
                ));
            }
            record.accuracy = Some(accuracy);
            record.cross_check = cross_check(&request, &input.cross, set, &outputs, input.model);
            let disagree: Vec<String> = record
                .cross_check
                .iter()
                .filter(|c| !c.agree)
                .map(|c| {
                    format!(
                        "{} vs {}: {}",
                        cell.backend,
                        c.backend,
                        c.reason.clone().unwrap_or_default()
                    )
                })
                .collect();
            if !disagree.is_empty() {
                let message = format!(
                    "the engines disagree, so this cell's accuracy cannot be trusted: {}",
                    disagree.join("; ")
                );
                record.diagnostics.push(Diagnostic {
                    kind: "engines_disagree".into(),
                    message: message.clone(),
                    fix: "one of the engines computes the model wrongly: compare with `polygraphy run MODEL --onnxrt`, report the node to calibench, and trust the backend that agrees with onnxruntime".into(),
                });
                if record.status == Status::Ok {
                    record.status = Status::Failed;
                    record.error = Some(error("cross_check", message));
                }
            }
            set.inputs
                .batch(0, cell.batch.min(set.inputs.samples()), cell.batch)
        }
        None => engine
            .inputs()
            .iter()
            .enumerate()
            .map(|(i, s)| Tensor::pseudo_random(&s.shape, i as u64 + 1))
            .collect(),
    };
    let sampler = match (input.gpu, ctx.telemetry_period) {
        (Some(gpu), Some(period)) => match crate::gpu::telemetry::start(gpu, period) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("no telemetry for {}: {e}", cell.key());
                None
            }
        },
        _ => None,
    };
    let criterion_out = ctx
        .criterion_dir
        .as_deref()
        .map(|dir| latency::CriterionOutput {
            dir,
            html: ctx.criterion_html,
        });
    let measured = match engine.gpu_context() {
        // GPU engines: criterion on GPU compute time (CUDA events around enqueues of the inputs
        // loaded by one `infer`), then end-to-end wall time per inference beside it.
        Some(gpu) => engine.infer(&latency_inputs).and_then(|_| {
            let compute = {
                let mut timer =
                    CudaEventTimer::new(&gpu, ctx.latency.sync, ctx.latency.cuda_graph, || {
                        engine.enqueue().map_err(|e| GpuError::Cuda(e.to_string()))
                    })
                    .map_err(gpu_err)?;
                measure_latency(ctx, cell, criterion_out, &mut timer).map_err(gpu_err)?
            };
            record.end_to_end = Some(latency::measure_wall(&ctx.latency, cell.batch, || {
                engine.infer(&latency_inputs).map(drop)
            })?);
            Ok(compute)
        }),
        None => {
            let mut timer = latency::WallTimer(|| engine.infer(&latency_inputs).map(drop));
            measure_latency(ctx, cell, criterion_out, &mut timer)
        }
    };
    if let Some(s) = sampler {
        match s.finish() {
            Ok(t) => record.telemetry = Some(t),
            Err(e) => tracing::warn!("telemetry of {} lost: {e}", cell.key()),
        }
    }
    record.diagnostics.extend(
        engine
            .runtime_diagnostics()
            .into_iter()
            .map(|d| Diagnostic {
                kind: d.kind,
                message: d.message,
                fix: d.fix,
            }),
    );
    match measured {
        Ok(l) => record.latency = Some(l),
        Err(e) => {
            let e: BackendError = e;
            record.status = Status::Failed;
            record.error = Some(error("latency", e.to_string()));
        }
    }
    record.finished_at = Utc::now();
    record
}

/// criterion over one timer, with the cell's latency settings and key.
fn measure_latency<T: latency::IterationTimer>(
    ctx: &CellContext<'_>,
    cell: &Cell,
    criterion_out: Option<latency::CriterionOutput<'_>>,
    timer: &mut T,
) -> Result<crate::results::schema::Latency, T::Error> {
    latency::measure(&ctx.latency, cell.batch, &cell.key(), criterion_out, timer)
}

fn gpu_err(e: GpuError) -> BackendError {
    BackendError::Infer(format!("GPU timing: {e}"))
}

/// Runs the evaluation set and compares every output with its reference.
fn evaluate(
    engine: &mut dyn crate::backend::Engine,
    set: &EvalSet,
    cell: &Cell,
    model: &ModelSpec,
) -> Result<(Accuracy, Vec<Tensor>), BackendError> {
    let outputs = run_dataset(engine, &set.inputs, cell.batch)?;
    let names = engine.outputs().to_vec();
    let accuracy = accuracy_of(&names, &outputs, set, cell, model)?;
    Ok((accuracy, outputs))
}

/// Runs the cell on each other backend and compares its outputs with this engine's, with the
/// model's tolerance at the cell's precision (the other engine's outputs as the reference).
fn cross_check(
    request: &BuildRequest<'_>,
    others: &[OtherBackend<'_>],
    set: &EvalSet,
    outputs: &[Tensor],
    model: &ModelSpec,
) -> Vec<crate::results::schema::CrossCheck> {
    let mut out = Vec::new();
    for (kind, backend) in others {
        let not_run = |why: String| crate::results::schema::CrossCheck {
            backend: kind.to_string(),
            cosine: f64::NAN,
            max_abs: f64::NAN,
            agree: false,
            reason: Some(format!("the cross-check could not run: {why}")),
        };
        let cell = Cell {
            backend: *kind,
            ..request.cell.clone()
        };
        let other_request = BuildRequest {
            cell: &cell,
            ..*request
        };
        let theirs = match backend
            .as_ref()
            .map_err(|e| e.clone())
            .and_then(|b| b.build(&other_request).map_err(|e| e.to_string()))
            .and_then(|mut e| {
                run_dataset(e.as_mut(), &set.inputs, cell.batch)
                    .map(|o| (e.outputs().to_vec(), o))
                    .map_err(|e| e.to_string())
            }) {
            Ok(t) => t,
            Err(e) => {
                out.push(not_run(e));
                continue;
            }
        };
        let (names, values) = theirs;
        let Some((name, (mine, other))) = names.first().zip(outputs.first().zip(values.first()))
        else {
            out.push(not_run("no outputs to compare".into()));
            continue;
        };
        if mine.shape != other.shape {
            out.push(not_run(format!(
                "output {name:?} is {:?} here and {:?} there",
                mine.shape, other.shape
            )));
            continue;
        }
        let tol = model.tolerance.resolve(cell.precision, name);
        let m = accuracy::compare(name, mine, other, None, &tol);
        out.push(crate::results::schema::CrossCheck {
            backend: kind.to_string(),
            cosine: m.cosine,
            max_abs: m.max_abs,
            agree: m.reason.is_none(),
            reason: m
                .reason
                .map(|r| format!("{r} (max |Δ| {:.3e}, cosine {:.6})", m.max_abs, m.cosine)),
        });
    }
    out
}

/// The accuracy of an engine's outputs against the evaluation set's references.
fn accuracy_of(
    names: &[String],
    outputs: &[Tensor],
    set: &EvalSet,
    cell: &Cell,
    model: &ModelSpec,
) -> Result<Accuracy, BackendError> {
    let mut metrics = Vec::new();
    for (name, actual) in names.iter().zip(outputs) {
        let Some(i) = set.reference.names.iter().position(|n| n == name) else {
            return Err(BackendError::Infer(format!(
                "output {name:?} has no reference output"
            )));
        };
        let tol = model.tolerance.resolve(cell.precision, name);
        metrics.push(accuracy::compare(
            name,
            actual,
            &set.reference.tensors[i],
            set.labels.as_deref(),
            &tol,
        ));
    }
    let reasons: Vec<String> = metrics
        .iter()
        .filter_map(|m| m.reason.as_ref().map(|r| format!("{}: {r}", m.name)))
        .collect();
    Ok(Accuracy {
        passed: reasons.is_empty(),
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        samples: set.inputs.samples(),
        reference: set.reference_origin.clone(),
        outputs: metrics,
    })
}
