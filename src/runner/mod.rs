//! The runner: executes a matrix's cells (build → accuracy → latency), appends one record per
//! finished cell, resumes interrupted runs and shows progress.

mod cell;
pub mod engine_store;
pub mod eval;
mod progress;
pub mod run_dir;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context};

use crate::backend::{self, Backend};
use crate::gpu::nvml::{GpuInfo, GpuInventory};
use crate::gpu::GpuError;
use crate::matrix::spec::LatencySpec;
use crate::matrix::{
    select_checked, BackendKind, Cell, DeviceSelector, ExpectedStatus, Filter, LoadedSpec, Shard,
};
use crate::results::schema::{Artifact, Environment, MatrixInfo, Status, VerdictThresholds};
use crate::results::{read_results, ResultsWriter};
use cell::{run_cell, CellContext, CellInputs};
use eval::EvalSets;
use progress::Progress;

/// Name of the copy of the matrix spec kept in every run folder.
pub const MATRIX_COPY: &str = "matrix.toml";

/// How to run a matrix.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Folder under which the run folder is made.
    pub output_dir: PathBuf,
    /// Run id; generated from the matrix name and the time when `None`.
    pub run_id: Option<String>,
    /// An earlier run folder to continue: its recorded cells are skipped.
    pub resume: Option<PathBuf>,
    /// With `resume`: run failed cells again.
    pub retry_failed: bool,
    /// With `resume`: continue even if the matrix spec changed.
    pub force: bool,
    /// Which cells to run.
    pub filter: Filter,
    /// Which shard of the cells to run.
    pub shard: Option<Shard>,
    /// Latency settings (the spec's, with CLI overrides applied).
    pub latency: LatencySpec,
    /// Show a progress bar (only drawn on a terminal; otherwise one line per cell).
    pub progress: bool,
    /// The GPUs to run on: `None` reads them from NVML when a cell needs a GPU; tests pass
    /// fake inventories.
    pub gpus: Option<GpuInventory>,
    /// Telemetry sampling period for GPU cells (`None`: no sampling).
    pub telemetry_period: Option<std::time::Duration>,
    /// Drive latency with criterion (estimates under `<run>/criterion/`).
    pub criterion: bool,
    /// Also let criterion draw its HTML report there.
    pub criterion_html: bool,
    /// Run every cell on one worker, one after another (default: one worker per GPU at once).
    pub serial: bool,
    /// Where built engines are kept and looked up (`None`: always build).
    pub engine_store: Option<PathBuf>,
    /// Planned cells that could not be measured leave the run passing.
    pub allow_skipped: bool,
    /// CPU backends whose cells are cross-checked against each other (`[cross_check]`,
    /// `--cross-check`).
    pub cross_check: Vec<BackendKind>,
}

/// A selected cell with its device resolved: the GPU it runs on, or why it is skipped.
#[derive(Debug, Clone)]
struct PlannedCell {
    cell: Cell,
    gpu: Option<GpuInfo>,
    skip: Option<String>,
}

/// Resolves GPU selectors: a cell whose selector matches k GPUs becomes k cells whose device is
/// the GPU's UUID (so keys stay unique when shards from several hosts are merged); a cell whose
/// GPU is not present is kept, to be recorded as skipped with the reason.
fn resolve_devices(
    cells: Vec<Cell>,
    inventory: Option<&Result<GpuInventory, GpuError>>,
) -> Vec<PlannedCell> {
    let mut out: Vec<PlannedCell> = Vec::new();
    let mut seen = HashSet::new();
    for cell in cells {
        let selector: DeviceSelector = cell.device.parse().expect("validated in the spec");
        if selector == DeviceSelector::Cpu {
            out.push(PlannedCell {
                cell,
                gpu: None,
                skip: None,
            });
            continue;
        }
        let gpus = match inventory {
            Some(Ok(inv)) => &inv.gpus,
            Some(Err(e)) => {
                let skip = Some(format!("no GPU can be used on this host: {e}"));
                out.push(PlannedCell {
                    cell,
                    gpu: None,
                    skip,
                });
                continue;
            }
            None => unreachable!("the inventory is read when a cell needs a GPU"),
        };
        let matches = crate::gpu::resolve(&selector, gpus);
        if matches.is_empty() {
            let present: Vec<String> = gpus
                .iter()
                .map(|g| format!("{} {} ({})", g.index, g.name, g.uuid))
                .collect();
            let skip = Some(format!(
                "GPU {} is not present on this host (GPUs here: {})",
                cell.device,
                if present.is_empty() {
                    "none".to_string()
                } else {
                    present.join("; ")
                }
            ));
            out.push(PlannedCell {
                cell,
                gpu: None,
                skip,
            });
            continue;
        }
        for g in matches {
            let resolved = Cell {
                device: g.uuid.clone(),
                ..cell.clone()
            };
            if seen.insert(resolved.key()) {
                out.push(PlannedCell {
                    cell: resolved,
                    gpu: Some(g.clone()),
                    skip: None,
                });
            }
        }
    }
    out
}

/// What a run did, over every selected cell of its run folder (resumed or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// The run folder.
    pub run_dir: PathBuf,
    /// Cells selected by the matrix, filter and shard.
    pub selected: usize,
    /// Cells this invocation ran (the rest were recorded earlier).
    pub ran: usize,
    /// Cells skipped because an earlier run recorded them.
    pub already_recorded: usize,
    /// Cells that ended ok.
    pub ok: usize,
    /// Cells that failed, not expected to.
    pub failed: usize,
    /// Cells that failed as an `[[expect]]` table says they do.
    pub expected_failures: usize,
    /// Cells an `[[expect]]` table says fail or skip, which passed: the expectation is stale.
    pub unexpected_passes: Vec<String>,
    /// Cells planned but not measured, by reason (first line), not expected to be.
    pub skipped: BTreeMap<String, usize>,
    /// Cells skipped as an `[[expect]]` table says they are.
    pub expected_skips: usize,
    /// Whether skipped cells leave the run passing (`--allow-skipped`, `[gate] allow_skipped`).
    pub allow_skipped: bool,
}

impl RunSummary {
    /// Skipped cells that were not expected to be.
    pub fn skipped_count(&self) -> usize {
        self.skipped.values().sum()
    }

    /// Whether the run fails its gates: a cell failed, an expected failure passed, or a planned
    /// cell was not measured (unless allowed).
    pub fn any_failed(&self) -> bool {
        self.failed > 0
            || !self.unexpected_passes.is_empty()
            || (self.skipped_count() > 0 && !self.allow_skipped)
    }

    /// The one-line summary, e.g. `16 cell(s): 12 ok, 2 failed, 2 expected failures`.
    pub fn line(&self) -> String {
        let mut parts = vec![format!("{} ok", self.ok), format!("{} failed", self.failed)];
        if self.expected_failures > 0 {
            parts.push(format!("{} expected failure(s)", self.expected_failures));
        }
        if !self.unexpected_passes.is_empty() {
            parts.push(format!(
                "{} passed although expected to fail or skip ({})",
                self.unexpected_passes.len(),
                self.unexpected_passes.join(", ")
            ));
        }
        let skipped = self.skipped_count();
        if skipped > 0 || self.expected_skips > 0 {
            let why: Vec<String> = self
                .skipped
                .iter()
                .map(|(reason, n)| format!("{n} × {reason}"))
                .collect();
            parts.push(format!(
                "{skipped} skipped{}{}",
                if skipped > 0 && !self.allow_skipped {
                    " (not measured, so the run fails; --allow-skipped accepts them)"
                } else {
                    ""
                },
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {}", why.join("; "))
                }
            ));
            if self.expected_skips > 0 {
                parts.push(format!("{} expected skip(s)", self.expected_skips));
            }
        }
        let earlier = if self.already_recorded > 0 {
            format!(
                " ({} run now, {} recorded earlier)",
                self.ran, self.already_recorded
            )
        } else {
            String::new()
        };
        format!("{} cell(s){earlier}: {}", self.selected, parts.join(", "))
    }
}

/// Counts the latest record of every planned cell in the run folder against the spec's
/// expectations.
fn summarize(
    loaded: &LoadedSpec,
    run_dir: &std::path::Path,
    planned: &[PlannedCell],
    ran: usize,
    allow_skipped: bool,
) -> anyhow::Result<RunSummary> {
    let records = if run_dir.join(crate::results::store::RESULTS_FILE).is_file() {
        read_results(run_dir)?.records
    } else {
        Vec::new()
    };
    let mut latest: HashMap<&str, &crate::results::schema::Record> = HashMap::new();
    for r in &records {
        latest.insert(r.key.as_str(), r);
    }
    let mut s = RunSummary {
        run_dir: run_dir.to_path_buf(),
        selected: planned.len(),
        ran,
        already_recorded: planned.len().saturating_sub(ran),
        ok: 0,
        failed: 0,
        expected_failures: 0,
        unexpected_passes: Vec::new(),
        skipped: BTreeMap::new(),
        expected_skips: 0,
        allow_skipped,
    };
    for p in planned {
        let key = p.cell.key();
        let expected =
            crate::matrix::gate::expectation_for(&loaded.spec.expect, &p.cell).map(|e| e.status);
        let Some(r) = latest.get(key.as_str()) else {
            // Planned, never recorded (the run was stopped): not measured.
            *s.skipped.entry("not run".into()).or_default() += 1;
            continue;
        };
        match (r.status, expected) {
            (Status::Ok, None) => s.ok += 1,
            (Status::Ok, Some(_)) => {
                s.ok += 1;
                s.unexpected_passes.push(key);
            }
            (Status::Failed, Some(ExpectedStatus::Failed)) => s.expected_failures += 1,
            (Status::Failed, _) => s.failed += 1,
            (Status::Skipped, Some(ExpectedStatus::Skipped)) => s.expected_skips += 1,
            (Status::Skipped, _) => {
                let why = r
                    .error
                    .as_ref()
                    .and_then(|e| e.message.lines().next())
                    .unwrap_or("no reason recorded")
                    .to_string();
                *s.skipped.entry(why).or_default() += 1;
            }
        }
    }
    Ok(s)
}

/// Refuses, before any cell runs, input files of the selected cells that cannot be used:
/// unreadable files, and (for real backends) models that are not ONNX, caches that do not
/// parse, evaluation data that cannot be read.
fn preflight(loaded: &LoadedSpec, cells: &[Cell]) -> anyhow::Result<()> {
    let spec = &loaded.spec;
    let mut problems = Vec::new();
    let mut checked = HashSet::new();
    for cell in cells {
        let real = cell.backend != BackendKind::Mock;
        let Some(model) = spec.models.iter().find(|m| m.id == cell.model) else {
            continue;
        };
        if checked.insert(format!("model:{}:{real}", model.id)) {
            if let Err(e) = std::fs::File::open(&model.path) {
                problems.push(format!(
                    "model {:?}: cannot read {}: {e}",
                    model.id,
                    model.path.display()
                ));
            } else if real {
                match crate::model::onnx::load_with_shapes(&model.path, &model.input_shapes()) {
                    Err(e) => problems.push(format!("model {:?}: {e}", model.id)),
                    // Symbolic dimensions without a shape, and evaluation inputs of the
                    // wrong shape, are bad input too.
                    Ok(onnx) => {
                        let unshaped: Vec<String> = onnx
                            .inputs()
                            .iter()
                            .filter_map(|io| io.shape_at_batch(1).err())
                            .collect();
                        if !unshaped.is_empty() {
                            for e in unshaped {
                                problems.push(format!(
                                    "model {:?} ({}): {}",
                                    model.id,
                                    model.path.display(),
                                    e
                                ));
                            }
                        } else if let Err(e) = eval::read_inputs(model, &onnx) {
                            problems.push(format!("model {:?} eval_inputs: {e}", model.id));
                        }
                    }
                }
            }
            for (key, path) in [
                ("eval_inputs", &model.eval_inputs),
                ("eval_labels", &model.eval_labels),
                ("reference", &model.reference),
            ] {
                let Some(path) = path else { continue };
                let read = if real {
                    crate::model::data::read_arrays(path)
                        .map(drop)
                        .map_err(|e| e.to_string())
                } else {
                    std::fs::File::open(path)
                        .map(drop)
                        .map_err(|e| e.to_string())
                };
                if let Err(e) = read {
                    problems.push(format!(
                        "model {:?} {key}: {}: {e}",
                        model.id,
                        path.display()
                    ));
                }
            }
        }
        if let Some(id) = &cell.cache {
            let Some(cache) = spec.caches_of(&cell.model).find(|c| &c.id == id) else {
                continue;
            };
            if checked.insert(format!("cache:{}:{id}:{real}", cell.model)) {
                let read = if real {
                    crate::cache::format::CalibrationCache::read(&cache.path)
                        .map(drop)
                        .map_err(|e| e.to_string())
                } else {
                    std::fs::File::open(&cache.path)
                        .map(drop)
                        .map_err(|e| format!("cannot read {}: {e}", cache.path.display()))
                };
                if let Err(e) = read {
                    problems.push(format!("cache {id:?} of model {:?}: {e}", cell.model));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(
            "{}: {} input file(s) cannot be used, so no cell was run:\n  {}",
            loaded.path.display(),
            problems.len(),
            problems.join("\n  ")
        )
    }
}

/// Runs the selected cells of a loaded spec and returns the summary.
pub fn run(loaded: &LoadedSpec, opts: &RunOptions) -> anyhow::Result<RunSummary> {
    let spec = &loaded.spec;
    let selected = select_checked(spec, &opts.filter, opts.shard)
        .map_err(|e| anyhow::anyhow!("{}: {e}", loaded.path.display()))?;
    if selected.is_empty() {
        tracing::warn!("shard {:?} has no cells of this matrix", opts.shard);
    }
    preflight(loaded, &selected)?;
    let inventory = selected.iter().any(|c| c.device != "cpu").then(|| {
        opts.gpus
            .clone()
            .map(Ok)
            .unwrap_or_else(crate::gpu::nvml::inventory)
    });
    let cells = resolve_devices(selected, inventory.as_ref());
    // Every input file is hashed once: for the run folder's inputs.json (and the resume
    // check) and for the records' artifacts.
    let hashes = run_dir::input_hashes(loaded);
    let held = run_dir::prepare(loaded, opts, &hashes)?;
    let (run_dir, run_id, done) = (held.dir.clone(), held.run_id.clone(), &held.done);
    let writer = ResultsWriter::open(&run_dir)?;
    let todo: Vec<&PlannedCell> = cells
        .iter()
        .filter(|c| !done.contains(&c.cell.key()))
        .collect();
    tracing::info!(
        "run {run_id}: {} cells selected, {} already recorded, {} to run",
        cells.len(),
        cells.len() - todo.len(),
        todo.len()
    );

    let mut environment = Environment::current();
    if let Some(Ok(inv)) = &inventory {
        environment.driver = Some(inv.driver.clone());
        environment.cuda_driver = Some(inv.cuda_driver.clone());
    }
    let context = CellContext {
        run_id: &run_id,
        matrix: MatrixInfo {
            name: spec.name.clone(),
            sha256: loaded.sha256.clone(),
        },
        artifacts: hash_artifacts(loaded, &hashes),
        latency: opts.latency,
        environment,
        telemetry_period: opts.telemetry_period,
        criterion_dir: opts.criterion.then(|| run_dir.join("criterion")),
        criterion_html: opts.criterion_html,
        engine_store: opts
            .engine_store
            .clone()
            .map(engine_store::EngineStore::new),
    };
    // One worker per GPU (each with its own backends, so its own CUDA context), one for the
    // CPU; cells of a GPU run only on that GPU's worker. All append to the one results file.
    let mut lanes: Vec<(String, Vec<&PlannedCell>)> = Vec::new();
    for planned in &todo {
        let lane = match (&planned.gpu, planned.skip.is_some(), opts.serial) {
            (Some(g), false, false) => format!("gpu{} {}", g.index, g.uuid),
            _ => "cpu".to_string(),
        };
        match lanes.iter_mut().find(|(l, _)| *l == lane) {
            Some((_, cells)) => cells.push(planned),
            None => lanes.push((lane, vec![planned])),
        }
    }
    let shared = Shared {
        writer: Mutex::new(writer),
        finished: AtomicUsize::new(0),
        total: todo.len(),
        progress: Progress::new(
            todo.len(),
            opts.progress,
            &lanes
                .iter()
                .map(|(l, _)| l.split(' ').next().unwrap_or(l).to_string())
                .collect::<Vec<_>>(),
        ),
    };
    let results: Vec<anyhow::Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = lanes
            .iter()
            .enumerate()
            .map(|(index, (lane, cells))| {
                let (shared, context) = (&shared, &context);
                let label = if lanes.len() > 1 {
                    Some(lane.split(' ').next().unwrap_or(lane).to_string())
                } else {
                    None
                };
                std::thread::Builder::new()
                    .name(format!("calibench {lane}"))
                    .spawn_scoped(scope, move || {
                        run_lane(spec, opts, context, shared, cells, index, label.as_deref())
                    })
                    .expect("a worker thread starts")
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker thread panicked")))
            })
            .collect()
    });
    shared.progress.done();
    for r in results {
        r?;
    }
    let summary = summarize(
        loaded,
        &run_dir,
        &cells,
        todo.len(),
        opts.allow_skipped || spec.gate.allow_skipped,
    )?;
    drop(held);
    Ok(summary)
}

/// What the workers of a run share.
struct Shared {
    writer: Mutex<ResultsWriter>,
    finished: AtomicUsize,
    total: usize,
    progress: Progress,
}

/// Runs one worker's cells in order: its own backends and evaluation sets.
fn run_lane(
    spec: &crate::matrix::Spec,
    opts: &RunOptions,
    context: &CellContext<'_>,
    shared: &Shared,
    cells: &[&PlannedCell],
    worker: usize,
    label: Option<&str>,
) -> anyhow::Result<()> {
    let mut backends: HashMap<BackendKind, Result<Box<dyn Backend>, String>> = HashMap::new();
    let mut eval_sets = EvalSets::new(opts.output_dir.join(".cache").join("reference"));
    for planned in cells {
        let cell = &planned.cell;
        shared.progress.start(cell, worker);
        // The cell's backend, and the other backends that cross-check a CPU cell.
        let cross_kinds: Vec<BackendKind> =
            if opts.cross_check.contains(&cell.backend) && cell.device == "cpu" {
                opts.cross_check
                    .iter()
                    .copied()
                    .filter(|k| *k != cell.backend)
                    .collect()
            } else {
                Vec::new()
            };
        for kind in std::iter::once(cell.backend).chain(cross_kinds.iter().copied()) {
            backends
                .entry(kind)
                .or_insert_with(|| backend::create(kind, spec).map_err(|e| e.to_string()));
        }
        let backend = &backends[&cell.backend];
        let cross: Vec<cell::OtherBackend<'_>> =
            cross_kinds.iter().map(|k| (*k, &backends[k])).collect();
        let model = spec
            .models
            .iter()
            .find(|m| m.id == cell.model)
            .expect("cells come from the spec");
        let record = catch_unwind(AssertUnwindSafe(|| {
            if let Some(reason) = &planned.skip {
                return context.skipped(cell, reason.clone());
            }
            let eval = match context.artifact("model", &model.id) {
                Ok(a) => eval_sets.get(model, &a.sha256),
                Err(e) => Err(e),
            };
            let gpu = planned.gpu.as_ref();
            run_cell(
                context,
                CellInputs {
                    cell,
                    model,
                    backend,
                    eval,
                    gpu,
                    cross,
                },
            )
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            context.panicked(cell, what)
        });
        let mut record = record;
        record.expected = crate::matrix::gate::expectation_for(&spec.expect, cell);
        record.thresholds = Some(thresholds(spec, model, &record));
        shared
            .writer
            .lock()
            .map_err(|_| anyhow::anyhow!("the results writer is poisoned"))?
            .append(&record)
            .with_context(|| format!("cannot record cell {}", cell.key()))?;
        let done = shared.finished.fetch_add(1, Ordering::SeqCst) + 1;
        shared
            .progress
            .finish_cell(done, shared.total, &record, label);
    }
    Ok(())
}

/// The verdict thresholds of a record: its model's gate at its precision (first output) and
/// the spec's caution band.
fn thresholds(
    spec: &crate::matrix::Spec,
    model: &crate::matrix::spec::ModelSpec,
    record: &crate::results::schema::Record,
) -> VerdictThresholds {
    let output = record
        .accuracy
        .as_ref()
        .and_then(|a| a.outputs.first())
        .map(|o| o.name.clone())
        .unwrap_or_default();
    let gate = model.tolerance.resolve(record.cell.precision, &output);
    VerdictThresholds {
        min_cosine: gate.min_cosine,
        max_top1_drop: gate.max_top1_drop,
        caution_min_cosine: spec.gate.caution_min_cosine,
        caution_max_top1_drop: spec.gate.caution_max_top1_drop,
    }
}

/// The hashes of every model and cache of the spec, or why a file could not be read.
fn hash_artifacts(
    loaded: &LoadedSpec,
    hashes: &BTreeMap<String, String>,
) -> BTreeMap<String, Result<Artifact, String>> {
    let mut out = BTreeMap::new();
    let files = loaded
        .spec
        .models
        .iter()
        .map(|m| (format!("model:{}", m.id), &m.id, &m.path))
        .chain(
            loaded
                .spec
                .caches
                .iter()
                .map(|c| (format!("cache:{}:{}", c.model, c.id), &c.id, &c.path)),
        );
    for (key, id, path) in files {
        let origin_gpu = if key.starts_with("cache:") {
            match crate::cache::provenance::Provenance::read_for(path) {
                Ok(p) => p.and_then(|p| p.origin_gpu),
                Err(e) => {
                    tracing::warn!("{e}");
                    None
                }
            }
        } else {
            None
        };
        let artifact = hashes
            .get(&key)
            .map(|sha256| Artifact {
                id: id.clone(),
                path: path.display().to_string(),
                sha256: sha256.clone(),
                origin_gpu,
            })
            .ok_or_else(|| format!("cannot read {}", path.display()));
        out.insert(key, artifact);
    }
    out
}
