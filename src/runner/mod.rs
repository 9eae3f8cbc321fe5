//! The runner: executes a matrix's cells (build → accuracy → latency), appends one record per
//! finished cell, resumes interrupted runs and shows progress.

mod cell;
pub mod engine_store;
pub mod eval;
mod progress;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context};
use chrono::Utc;

use crate::backend::{self, Backend};
use crate::gpu::nvml::{GpuInfo, GpuInventory};
use crate::gpu::GpuError;
use crate::matrix::spec::LatencySpec;
use crate::matrix::{select, BackendKind, Cell, DeviceSelector, Filter, LoadedSpec, Shard};
use crate::results::schema::{Artifact, Environment, MatrixInfo, Status};
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

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// The run folder.
    pub run_dir: PathBuf,
    /// Cells selected by the matrix, filter and shard.
    pub selected: usize,
    /// Cells skipped because an earlier run recorded them.
    pub already_recorded: usize,
    /// Cells that ended ok.
    pub ok: usize,
    /// Cells that failed.
    pub failed: usize,
    /// Cells skipped for a recorded reason.
    pub skipped: usize,
}

impl RunSummary {
    /// Whether any cell of this run failed.
    pub fn any_failed(&self) -> bool {
        self.failed > 0
    }
}

/// Runs the selected cells of a loaded spec and returns the summary.
pub fn run(loaded: &LoadedSpec, opts: &RunOptions) -> anyhow::Result<RunSummary> {
    let spec = &loaded.spec;
    let selected = select(spec, &opts.filter, opts.shard);
    let inventory = selected.iter().any(|c| c.device != "cpu").then(|| {
        opts.gpus
            .clone()
            .map(Ok)
            .unwrap_or_else(crate::gpu::nvml::inventory)
    });
    let cells = resolve_devices(selected, inventory.as_ref());
    let (run_dir, run_id, done) = prepare_run_dir(loaded, opts)?;
    let writer = ResultsWriter::open(&run_dir)?;
    let todo: Vec<&PlannedCell> = cells
        .iter()
        .filter(|c| !done.contains(&c.cell.key()))
        .collect();
    let summary = RunSummary {
        run_dir: run_dir.clone(),
        selected: cells.len(),
        already_recorded: cells.len() - todo.len(),
        ok: 0,
        failed: 0,
        skipped: 0,
    };
    tracing::info!(
        "run {run_id}: {} cells selected, {} already recorded, {} to run",
        cells.len(),
        summary.already_recorded,
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
        artifacts: hash_artifacts(loaded),
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
        summary: Mutex::new(summary),
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
    let summary = shared
        .summary
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    Ok(summary)
}

/// What the workers of a run share.
struct Shared {
    writer: Mutex<ResultsWriter>,
    summary: Mutex<RunSummary>,
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
        let backend = backends
            .entry(cell.backend)
            .or_insert_with(|| backend::create(cell.backend, spec).map_err(|e| e.to_string()));
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
        shared
            .writer
            .lock()
            .map_err(|_| anyhow::anyhow!("the results writer is poisoned"))?
            .append(&record)
            .with_context(|| format!("cannot record cell {}", cell.key()))?;
        if let Ok(mut s) = shared.summary.lock() {
            match record.status {
                Status::Ok => s.ok += 1,
                Status::Failed => s.failed += 1,
                Status::Skipped => s.skipped += 1,
            }
        }
        let done = shared.finished.fetch_add(1, Ordering::SeqCst) + 1;
        shared
            .progress
            .finish_cell(done, shared.total, &record, label);
    }
    Ok(())
}

/// Decides the run folder and which cells it has recorded already.
fn prepare_run_dir(
    loaded: &LoadedSpec,
    opts: &RunOptions,
) -> anyhow::Result<(PathBuf, String, HashSet<String>)> {
    if let Some(dir) = &opts.resume {
        if !dir.is_dir() {
            bail!(
                "{}: no such run folder\nfix: pass the folder an earlier `calibench run` printed (e.g. reports/<run-id>)",
                dir.display()
            );
        }
        let copy = std::fs::read(dir.join(MATRIX_COPY)).with_context(|| {
            format!(
                "{}: not a calibench run folder (no {MATRIX_COPY})",
                dir.display()
            )
        })?;
        let recorded_sha = crate::hash::sha256_bytes(&copy);
        if recorded_sha != loaded.sha256 && !opts.force {
            bail!(
                "{} was run with a different matrix spec than {} (sha256 {} vs {})\nfix: start a new run, or pass --force to resume anyway",
                dir.display(),
                loaded.path.display(),
                &recorded_sha[..12],
                &loaded.sha256[..12]
            );
        }
        let previous = if dir.join(crate::results::store::RESULTS_FILE).is_file() {
            read_results(dir)?.records
        } else {
            Vec::new()
        };
        let done = previous
            .iter()
            .filter(|r| !(opts.retry_failed && r.status == Status::Failed))
            .map(|r| r.key.clone())
            .collect();
        let run_id = previous
            .first()
            .map(|r| r.run_id.clone())
            .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "run".into());
        return Ok((dir.clone(), run_id, done));
    }
    let base_id = opts.run_id.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            loaded.spec.name,
            Utc::now().format("%Y%m%d-%H%M%S")
        )
    });
    if opts.run_id.is_some() && opts.output_dir.join(&base_id).exists() {
        bail!(
            "{}: this run folder exists already\nfix: pass --resume {} to continue it, or choose another --run-id",
            opts.output_dir.join(&base_id).display(),
            opts.output_dir.join(&base_id).display()
        );
    }
    let mut run_id = base_id.clone();
    let mut n = 2;
    while opts.output_dir.join(&run_id).exists() {
        run_id = format!("{base_id}-{n}");
        n += 1;
    }
    let dir = opts.output_dir.join(&run_id);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create run folder {}", dir.display()))?;
    std::fs::write(dir.join(MATRIX_COPY), &loaded.text)
        .with_context(|| format!("cannot write {}", dir.join(MATRIX_COPY).display()))?;
    Ok((dir, run_id, HashSet::new()))
}

/// The hashes of every model and cache of the spec, or why a file could not be read.
fn hash_artifacts(loaded: &LoadedSpec) -> BTreeMap<String, Result<Artifact, String>> {
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
        let artifact = crate::hash::sha256_file(path)
            .map(|sha256| Artifact {
                id: id.clone(),
                path: path.display().to_string(),
                sha256,
                origin_gpu,
            })
            .map_err(|e| format!("cannot read {}: {e}", path.display()));
        out.insert(key, artifact);
    }
    out
}
