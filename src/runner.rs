//! The runner: executes a matrix's cells (build → accuracy → latency), appends one record per
//! finished cell, resumes interrupted runs and shows progress.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::IsTerminal;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::{self, Backend, BackendError, BuildRequest};
use crate::matrix::spec::LatencySpec;
use crate::matrix::{select, BackendKind, Cell, Filter, LoadedSpec, Shard};
use crate::measure::latency;
use crate::model::Tensor;
use crate::results::schema::{
    Artifact, CellError, EngineInfo, Environment, MatrixInfo, Record, Status, ToolInfo,
    RECORD_SCHEMA,
};
use crate::results::{read_results, ResultsWriter};

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
    let cells = select(spec, &opts.filter, opts.shard);
    let (run_dir, run_id, done) = prepare_run_dir(loaded, opts)?;
    let mut writer = ResultsWriter::open(&run_dir)?;
    let todo: Vec<&Cell> = cells.iter().filter(|c| !done.contains(&c.key())).collect();
    let mut summary = RunSummary {
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

    let context = CellContext {
        run_id: &run_id,
        matrix: MatrixInfo {
            name: spec.name.clone(),
            sha256: loaded.sha256.clone(),
        },
        artifacts: hash_artifacts(loaded),
        latency: opts.latency,
        environment: Environment::current(),
    };
    let mut backends: HashMap<BackendKind, Result<Box<dyn Backend>, String>> = HashMap::new();
    let progress = Progress::new(todo.len(), opts.progress);
    for (i, cell) in todo.iter().enumerate() {
        progress.start(cell);
        let backend = backends
            .entry(cell.backend)
            .or_insert_with(|| backend::create(cell.backend, spec).map_err(|e| e.to_string()));
        let record = catch_unwind(AssertUnwindSafe(|| run_cell(&context, cell, backend)))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                let started = Utc::now();
                context.record(cell, started, Status::Failed, Some(error("internal", format!(
                    "calibench panicked while running this cell: {what}\nfix: this is a calibench bug; please report it with the cell key"
                ))))
            });
        writer
            .append(&record)
            .with_context(|| format!("cannot record cell {}", cell.key()))?;
        match record.status {
            Status::Ok => summary.ok += 1,
            Status::Failed => summary.failed += 1,
            Status::Skipped => summary.skipped += 1,
        }
        progress.finish_cell(i + 1, todo.len(), &record);
    }
    progress.done();
    Ok(summary)
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
        let artifact = crate::hash::sha256_file(path)
            .map(|sha256| Artifact {
                id: id.clone(),
                path: path.display().to_string(),
                sha256,
            })
            .map_err(|e| format!("cannot read {}: {e}", path.display()));
        out.insert(key, artifact);
    }
    out
}

/// What every cell of a run shares.
struct CellContext<'a> {
    run_id: &'a str,
    matrix: MatrixInfo,
    artifacts: BTreeMap<String, Result<Artifact, String>>,
    latency: LatencySpec,
    environment: Environment,
}

fn error(phase: &str, message: impl Into<String>) -> CellError {
    CellError {
        phase: phase.to_string(),
        message: message.into(),
    }
}

impl CellContext<'_> {
    fn artifact(&self, kind: &str, id: &str) -> Result<Artifact, String> {
        self.artifacts
            .get(&format!("{kind}:{id}"))
            .cloned()
            .unwrap_or_else(|| Err(format!("{kind} {id:?} is not in the matrix")))
    }

    fn cache(&self, cell: &Cell, id: &str) -> Result<Artifact, String> {
        self.artifact("cache", &format!("{}:{id}", cell.model))
    }

    /// A record with the cell's identity filled in and no measurements.
    fn record(
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
            engine: None,
            latency: None,
            accuracy: None,
            calibench: ToolInfo::current(),
            environment: self.environment.clone(),
            started_at: started,
            finished_at: Utc::now(),
        }
    }
}

/// Builds and measures one cell. Every failure becomes a failed record.
fn run_cell(
    ctx: &CellContext<'_>,
    cell: &Cell,
    backend: &Result<Box<dyn Backend>, String>,
) -> Record {
    let started = Utc::now();
    let fail = |phase: &str, message: String| {
        ctx.record(cell, started, Status::Failed, Some(error(phase, message)))
    };
    let backend = match backend {
        Ok(b) => b,
        Err(e) => return fail("setup", e.clone()),
    };
    let model = match ctx.artifact("model", &cell.model) {
        Ok(m) => m,
        Err(e) => return fail("setup", e),
    };
    let cache = match cell.cache.as_ref().map(|c| ctx.cache(cell, c)).transpose() {
        Ok(c) => c,
        Err(e) => return fail("setup", e),
    };
    let request = BuildRequest {
        cell,
        model_path: Path::new(&model.path),
        cache_path: cache.as_ref().map(|c| Path::new(c.path.as_str())),
    };
    let build_start = Instant::now();
    let mut engine = match backend.build(&request) {
        Ok(e) => e,
        Err(e) => return fail("build", e.to_string()),
    };
    let engine_info = EngineInfo {
        build_s: build_start.elapsed().as_secs_f64(),
        cached: false,
        layer_precisions: engine.layer_precisions(),
    };
    let inputs: Vec<Tensor> = engine
        .inputs()
        .iter()
        .enumerate()
        .map(|(i, s)| Tensor::pseudo_random(&s.shape, i as u64 + 1))
        .collect();
    let latency =
        latency::measure_wall(&ctx.latency, cell.batch, || engine.infer(&inputs).map(drop));
    let mut record = ctx.record(cell, started, Status::Ok, None);
    record.engine = Some(engine_info);
    match latency {
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

/// Progress: a bar on a terminal, one line per finished cell elsewhere (CI logs).
struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
}

impl Progress {
    fn new(total: usize, enabled: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (enabled && terminal).then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} cells  eta {eta}  {msg}",
                )
                .expect("valid template"),
            );
            bar
        });
        Progress {
            bar,
            lines: enabled && !terminal,
        }
    }

    fn start(&self, cell: &Cell) {
        if let Some(bar) = &self.bar {
            bar.set_message(cell.key());
        }
    }

    fn finish_cell(&self, done: usize, total: usize, record: &Record) {
        let what = match (&record.latency, &record.error) {
            (_, Some(e)) => format!(
                "{} ({})",
                record.status,
                e.message.lines().next().unwrap_or("")
            ),
            (Some(l), None) => format!(
                "{}  median {:.3} ms  p99 {:.3} ms",
                record.status, l.median_ms, l.p99_ms
            ),
            (None, None) => record.status.to_string(),
        };
        let line = format!("[{done}/{total}] {}  {what}", record.key);
        if let Some(bar) = &self.bar {
            bar.println(line);
            bar.inc(1);
        } else if self.lines {
            eprintln!("{line}");
        }
    }

    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
