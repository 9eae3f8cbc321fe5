//! Command-line definitions (clap). Nothing but argument parsing lives here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use calibench::matrix::{Filter, FilterError, Shard};
use calibench::results::export::ExportFormat;

/// calibench — can a TensorRT INT8 calibration cache made on one GPU be reused on another?
///
/// Crosses models × calibration caches × devices × precisions (fp32, fp16, int8, best) ×
/// backends × batch sizes from a matrix spec, builds an engine per cell, measures latency
/// and accuracy, and records every finished cell in <output>/<run-id>/results.jsonl.
#[derive(Debug, Parser)]
#[command(
    name = "calibench",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(
    after_help = "Exit codes: 0 all cells ok, 1 a cell or gate failed, 2 bad input or environment.\n\
Logging: set RUST_LOG (e.g. RUST_LOG=calibench=debug)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Expand a matrix spec into cells and print them, without running anything.
    Plan(PlanArgs),
    /// Run the cells of a matrix spec and record one result per cell.
    Run(RunArgs),
    /// One model and one cache, trtexec-style, without a spec: run fp32 and the precisions
    /// asked for, record them, write the report and print the verdict.
    #[command(
        after_help = "Examples:\n  calibench check --onnx m.onnx --calib m.cache --int8 --eval val.npz\n  calibench check --onnx ocr.onnx --shapes x:1x3x48x192 --fp16 --backend cuda --device 0\n  calibench check --onnx m.onnx --calib m.cache --best --print-spec > m.toml   # grow it into a matrix"
    )]
    Check(OneShotArgs),
    /// Write a run's records as CSV, JSON, JUnit XML or Markdown.
    Export(ExportArgs),
    /// Inspect, compare, convert and describe calibration caches.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Calibrate a model on data and write a TensorRT-format calibration cache.
    Calibrate(CalibrateArgs),
    /// List the GPUs (NVML identity, clocks, driver) and optionally sample their telemetry.
    Gpus(GpusArgs),
    /// Render the portability report (HTML, or a Markdown summary) of one or more runs.
    Report(ReportArgs),
    /// Merge shard results from several runners into one run folder.
    Merge(MergeArgs),
    /// Compare a run with a baseline run; exit 1 when a latency or accuracy gate fails.
    Compare(CompareArgs),
    /// Manage the engine store.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Write the fp16-typed copy of a model that strongly typed builders (TensorRT 11) run at
    /// fp16: float weights as float16, casts at the inputs and outputs. With --cache, the Q/DQ
    /// model in fp16: what TensorRT 11 builds `best` from.
    ToFp16(ToFp16Args),
    /// Per-layer GPU time of a model on the cuda backend, with each GEMM's own time and
    /// throughput beside it (as trtexec's --dumpProfile).
    Profile(ProfileArgs),
}

#[derive(Debug, Args)]
pub struct ToFp16Args {
    /// The ONNX model.
    #[arg(long, short = 'm', value_name = "MODEL.onnx")]
    pub model: PathBuf,
    /// A calibration cache: quantize with it first (int8 where it has scales, fp16 elsewhere).
    #[arg(long, short = 'c', value_name = "CACHE")]
    pub cache: Option<PathBuf>,
    /// Where to write the fp16 model.
    #[arg(long, short = 'o', value_name = "OUT.onnx")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// The ONNX model.
    #[arg(long, short = 'm', value_name = "MODEL.onnx")]
    pub model: PathBuf,
    /// Shapes of inputs with symbolic dimensions, as trtexec's `--shapes`:
    /// `x:1x3x48x192[,name:dims…]` (axis 0 is the batch).
    #[arg(long, value_name = "NAME:DIMS", value_parser = calibench::model::onnx::parse_shapes)]
    pub shapes: Option<calibench::model::onnx::InputShapes>,
    /// Calibration cache (int8 and best).
    #[arg(long, value_name = "CACHE")]
    pub cache: Option<PathBuf>,
    /// fp32, fp16, int8 or best.
    #[arg(long, default_value = "fp32", value_parser = |s: &str| s.parse::<calibench::matrix::Precision>())]
    pub precision: calibench::matrix::Precision,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// GPU (CUDA ordinal).
    #[arg(long, default_value_t = 0, value_name = "INDEX")]
    pub gpu: usize,
    /// Launches per timed repeat (each layer is timed over 5 repeats; the median is reported).
    #[arg(long, default_value_t = 50)]
    pub iterations: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Header, tensor count, scale statistics and suspicious entries of a cache.
    Inspect(InspectArgs),
    /// Check a cache against a model (coverage) and a TensorRT version (header).
    Check(CheckArgs),
    /// Compare two caches of one model (e.g. calibrated on two GPUs): per-tensor scale ratios.
    Diff(DiffArgs),
    /// Write an explicitly quantized (Q/DQ) model from a model and its cache, for TensorRT
    /// versions without implicit calibration.
    ToQdq(ToQdqArgs),
    /// Convert onnxruntime's calibration table or JSON to a TensorRT cache.
    Import(ImportArgs),
    /// Show or set where a cache came from (FILE.provenance.json).
    Provenance(ProvenanceArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The cache (TensorRT format; onnxruntime tables are recognized too).
    pub file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Remove stored engines older than an age.
    Gc(StoreGcArgs),
}

#[derive(Debug, Args)]
pub struct StoreGcArgs {
    /// The store.
    #[arg(long, value_name = "DIR", default_value = "reports/.cache/engines")]
    pub store: PathBuf,
    /// Remove engines last written longer ago than this: 30m, 12h, 7d, or 0 for all.
    #[arg(long, value_name = "AGE", value_parser = calibench::runner::engine_store::parse_age)]
    pub older_than: std::time::Duration,
}

/// A backend name.
fn backend_kind(s: &str) -> Result<calibench::matrix::BackendKind, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        format!("{s:?} is not a backend: use reference, onnxruntime, cuda, tensorrt or mock")
    })
}

/// A fraction between 0 and 1.
fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Ok(v) => Err(format!(
            "{v} is not a fraction between 0 and 1 (0.01 = one point of top-1)"
        )),
        Err(_) => Err(format!("{s:?} is not a number")),
    }
}

/// Thresholds of the baseline gate.
#[derive(Debug, Args, Clone, Copy)]
pub struct GateArgs {
    /// Largest allowed median-latency increase per cell, percent.
    #[arg(long, value_name = "PCT", default_value_t = 10.0)]
    pub max_latency_regression: f64,
    /// Largest allowed top-1 accuracy drop per cell, as a fraction like the spec's
    /// `max_top1_drop` (0.005 = half a point of top-1).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.005, value_parser = fraction)]
    pub max_top1_drop: f64,
    /// Largest allowed cosine-similarity drop per cell.
    #[arg(long, value_name = "DROP", default_value_t = 0.001)]
    pub max_cosine_drop: f64,
}

impl GateArgs {
    pub fn thresholds(&self) -> calibench::report::Thresholds {
        calibench::report::Thresholds {
            max_latency_regression_pct: self.max_latency_regression,
            max_top1_drop_points: self.max_top1_drop * 100.0,
            max_cosine_drop: self.max_cosine_drop,
        }
    }
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run folders (or results.jsonl files); several are read as one (e.g. shards).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Output file: .html for the report, .md for a Markdown summary (by its extension).
    #[arg(long, short = 'o', value_name = "FILE", default_value = "report.html")]
    pub output: PathBuf,
    /// Title [default: calibench portability report — <matrix>].
    #[arg(long)]
    pub title: Option<String>,
    /// Add a release sign-off summary on top.
    #[arg(long)]
    pub sign_off: bool,
    /// Compare with a baseline run and show the gate (exit 1 when it fails).
    #[arg(long, value_name = "RUN")]
    pub baseline: Option<PathBuf>,
    #[command(flatten)]
    pub gate: GateArgs,
    /// Also print the verdicts (and the baseline gate) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Run folders of the shards.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// The new run folder to write.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: PathBuf,
    /// Merge even if the runs come from different matrix specs.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The baseline run folder.
    pub baseline: PathBuf,
    /// The current run folder.
    pub current: PathBuf,
    #[command(flatten)]
    pub gate: GateArgs,
    /// Print Markdown instead of a table.
    #[arg(long, conflicts_with = "json")]
    pub markdown: bool,
    /// Print the comparison as JSON (every cell, the missing ones, `passed`).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GpusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Sample telemetry of every GPU for this many ms and print min/median/max.
    #[arg(long, value_name = "MS")]
    pub sample_ms: Option<u64>,
    /// Sampling period, in ms.
    #[arg(long, value_name = "MS", default_value_t = 50)]
    pub period_ms: u64,
    /// While sampling, keep every GPU busy with a spin kernel (shows clocks and power under load).
    #[arg(long, requires = "sample_ms")]
    pub busy: bool,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// The ONNX model (run at fp32).
    #[arg(long, short = 'm', value_name = "MODEL.onnx")]
    pub model: PathBuf,
    /// Shapes of inputs with symbolic dimensions, as trtexec's `--shapes`:
    /// `x:1x3x48x192[,name:dims…]` (axis 0 is the batch). Without it, symbolic
    /// dimensions take the calibration data's own sizes.
    #[arg(long, value_name = "NAME:DIMS", value_parser = calibench::model::onnx::parse_shapes)]
    pub shapes: Option<calibench::model::onnx::InputShapes>,
    /// Calibration inputs: .npy (one input), .npz (named by input) or TensorProto .pb,
    /// samples on axis 0.
    #[arg(long, short = 'd', value_name = "CALIB")]
    pub data: PathBuf,
    /// entropy (TensorRT's EntropyCalibration2, as NVIDIA's ModelOpt computes it),
    /// entropy-onnxruntime (onnxruntime's variant, to match caches made with
    /// onnxruntime.quantization), minmax, or percentile[=99.99].
    #[arg(long, default_value = "entropy", value_parser = |s: &str| s.parse::<calibench::cache::calibrate::Method>())]
    pub method: calibench::cache::calibrate::Method,
    /// entropy-onnxruntime: bins of its histogram (default 2048). onnxruntime.quantization's
    /// own defaults are --num-bins 128 --num-quantized-bins 128 (symmetric False): pass those to
    /// match a cache made with its defaults.
    #[arg(long, value_name = "N")]
    pub num_bins: Option<usize>,
    /// entropy-onnxruntime: quantized levels of the threshold search (default 128).
    #[arg(long, value_name = "N")]
    pub num_quantized_bins: Option<usize>,
    /// entropy-onnxruntime: onnxruntime's `symmetric` option (recorded; it changes the zero
    /// points onnxruntime writes, not the threshold calibench's cache holds).
    #[arg(long, value_name = "BOOL")]
    pub symmetric: Option<bool>,
    /// Where to write the cache (a provenance sidecar FILE.provenance.json is written beside it).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
    /// Backend that runs the model at fp32: auto (onnxruntime when it is installed, else the
    /// reference backend), onnxruntime (CPU, all cores), reference (CPU, tract) or cuda (GPU)
    #[arg(long, default_value = "auto", value_parser = ["auto", "onnxruntime", "reference", "cuda"])]
    pub backend: String,
    /// GPU (CUDA ordinal) that runs the model with `--backend cuda`.
    #[arg(long, default_value_t = 0, value_name = "INDEX")]
    pub gpu: usize,
    /// Samples per batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// TensorRT version for the header (TensorRT rejects a cache whose header differs).
    #[arg(long, value_name = "X.Y.Z", default_value = "10.14.1")]
    pub trt_version: calibench::cache::TrtVersion,
    /// Id of the calibration data set for the provenance [default: file name and sha256 prefix].
    #[arg(long, value_name = "ID")]
    pub dataset_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The calibration cache.
    pub file: PathBuf,
    /// The ONNX model the cache is meant for.
    #[arg(long, short = 'm', value_name = "MODEL.onnx")]
    pub model: PathBuf,
    /// The TensorRT version that will read the cache (e.g. 10.14.1): a different header version
    /// makes TensorRT reject the cache.
    #[arg(long, value_name = "X.Y.Z")]
    pub trt_version: Option<calibench::cache::TrtVersion>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ToQdqArgs {
    /// The ONNX model.
    #[arg(long, short = 'm', value_name = "MODEL.onnx")]
    pub model: PathBuf,
    /// Its calibration cache.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub cache: PathBuf,
    /// Where to write the Q/DQ model.
    #[arg(long, short = 'o', value_name = "OUT.onnx")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// First cache (A).
    pub a: PathBuf,
    /// Second cache (B); ratios are B / A.
    pub b: PathBuf,
    /// Exit 1 if any common tensor's |log2(B/A)| exceeds this (1.0 = a factor of 2).
    #[arg(long, value_name = "LOG2")]
    pub fail_above: Option<f64>,
    /// Rows to show.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Print JSON (every tensor).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// onnxruntime's calibration.cache table, calibration.json, or a TensorRT cache.
    pub file: PathBuf,
    /// Where to write the TensorRT cache.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
    /// TensorRT version for the header: TensorRT rejects a cache whose header differs from it.
    #[arg(long, value_name = "X.Y.Z", default_value = "10.14.1")]
    pub trt_version: calibench::cache::TrtVersion,
    /// Calibrator name for the header [default: the input's for a TensorRT cache, else
    /// EntropyCalibration2]. A TensorRT cache keeps its scales bit for bit (a re-tag).
    #[arg(long, value_name = "NAME")]
    pub calibrator: Option<String>,
}

#[derive(Debug, Args)]
pub struct ProvenanceArgs {
    /// The cache whose sidecar (FILE.provenance.json) to show or change.
    pub file: PathBuf,
    /// Set a field, e.g. --set origin_gpu="NVIDIA L4" --set dataset_size=500. Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Which cells: filters and sharding, shared by `plan` and `run`.
#[derive(Debug, Args)]
pub struct Selection {
    /// Keep only cells matching key=value conditions, comma-separated; keys: model, cache,
    /// device (or gpu), precision, backend, batch. Several values of one key mean "any of";
    /// `*` is a wildcard; fp32/fp16 cells have cache=none. Repeatable.
    #[arg(long, value_name = "KEY=VALUE,...", value_parser = parse_filter)]
    pub only: Vec<Filter>,

    /// Run only shard I of N (1-based). Cells are sorted by key and dealt round-robin, so N
    /// runners given 1/N … N/N cover every cell exactly once.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
}

impl Selection {
    /// All `--only` flags joined.
    pub fn filter(&self) -> Filter {
        self.only
            .iter()
            .cloned()
            .fold(Filter::default(), Filter::and)
    }
}

fn parse_filter(s: &str) -> Result<Filter, FilterError> {
    Filter::parse(s)
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The matrix spec (TOML; see matrices/README.md).
    pub matrix: PathBuf,

    #[command(flatten)]
    pub selection: Selection,

    /// Print the cells as a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The matrix spec (TOML; see matrices/README.md).
    pub matrix: PathBuf,

    #[command(flatten)]
    pub selection: Selection,

    /// Name of the run folder [default: <matrix name>-<UTC date-time>].
    #[arg(long, value_name = "ID", conflicts_with = "resume")]
    pub run_id: Option<String>,

    /// Continue an interrupted run: skip the cells recorded in RUN_DIR/results.jsonl and
    /// append the rest there.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,

    /// With --resume: run cells that failed before again.
    #[arg(long, requires = "resume")]
    pub retry_failed: bool,

    /// With --resume: continue even though the matrix spec changed since the run began.
    #[arg(long, requires = "resume")]
    pub force: bool,

    #[command(flatten)]
    pub exec: ExecArgs,
}

/// How cells are run and measured, shared by `run` and `check`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Folder under which the run folder <run-id>/ is made.
    #[arg(long, short = 'o', value_name = "DIR", default_value = "reports")]
    pub output: PathBuf,

    /// Warm-up time per cell before timing, in ms [default: the spec's latency.warmup_ms].
    #[arg(long, value_name = "MS")]
    pub warmup_ms: Option<u64>,

    /// Measurement time per cell, in ms [default: the spec's latency.measurement_ms].
    #[arg(long, value_name = "MS")]
    pub measurement_ms: Option<u64>,

    /// Minimum number of timed samples per cell [default: the spec's latency.samples].
    #[arg(long, value_name = "N")]
    pub samples: Option<usize>,

    /// Untimed warm-up iterations per cell before measuring [default: the spec's
    /// latency.warmup_iterations].
    #[arg(long, value_name = "N")]
    pub warmup_iterations: Option<usize>,

    /// GPU engines: capture one inference in a CUDA graph and time graph launches (trtexec's
    /// --useCudaGraph) [default: the spec's latency.cuda_graph].
    #[arg(long)]
    pub use_cuda_graph: bool,

    /// GPU engines: how the host waits for timed work [default: the spec's latency.sync, spin].
    #[arg(long, value_enum, value_name = "MODE")]
    pub sync: Option<calibench::gpu::cuda::SyncMode>,

    /// Time single iterations only, without criterion's sampling and bootstrap (faster; no
    /// confidence intervals).
    #[arg(long)]
    pub no_criterion: bool,

    /// Engine store: built engines are kept there and reused by later runs
    /// [default: <output>/.cache/engines].
    #[arg(long, value_name = "DIR")]
    pub engine_store: Option<PathBuf>,

    /// Build every engine, without reading or writing the engine store.
    #[arg(long, conflicts_with = "engine_store")]
    pub no_engine_store: bool,

    /// Run all cells one after another on one worker (default: one worker per GPU, in parallel).
    #[arg(long)]
    pub serial: bool,

    /// Run every CPU cell on these backends too and fail it when their outputs disagree
    /// beyond the model's tolerance, e.g. `--cross-check reference,onnxruntime` (overrides
    /// the spec's `[cross_check] backends`).
    #[arg(long, value_name = "BACKENDS", value_delimiter = ',', value_parser = backend_kind)]
    pub cross_check: Option<Vec<calibench::matrix::BackendKind>>,

    /// Let planned cells that could not be measured (no GPU, backend not installed) leave the
    /// run passing; by default they make it exit 1 (also `[gate] allow_skipped = true`).
    #[arg(long)]
    pub allow_skipped: bool,

    /// Let criterion draw its HTML report per cell under <run>/criterion/ (seconds per cell).
    #[arg(long, conflicts_with = "no_criterion")]
    pub criterion_html: bool,

    /// No progress bar and no per-cell lines on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Print the run's summary and verdicts as JSON on stdout (instead of the run folder).
    #[arg(long)]
    pub json: bool,

    /// GPU telemetry sampling period while a GPU cell is measured, in ms (0: off).
    #[arg(long, value_name = "MS", default_value_t = 50)]
    pub telemetry_ms: u64,

    /// Print the nvidia-smi commands that lock each GPU's clocks for stable timings
    /// (calibench never changes clocks itself).
    #[arg(long)]
    pub lock_clocks: bool,

    /// Absolute tolerance for every model's outputs (Polygraphy's --atol), over the spec's.
    #[arg(long, value_name = "ATOL")]
    pub atol: Option<f64>,

    /// Relative tolerance for every model's outputs (Polygraphy's --rtol), over the spec's.
    #[arg(long, value_name = "RTOL")]
    pub rtol: Option<f64>,
}

/// `calibench check`: the one-cell matrix from trtexec/Polygraphy-style flags.
#[derive(Debug, Args)]
pub struct OneShotArgs {
    /// The ONNX model.
    #[arg(long, value_name = "MODEL.onnx")]
    pub onnx: PathBuf,
    /// Its calibration cache (TensorRT format), for --int8 and --best.
    #[arg(long, value_name = "CACHE")]
    pub calib: Option<PathBuf>,
    /// Run an int8 engine (with the cache's scales) beside fp32.
    #[arg(long)]
    pub int8: bool,
    /// Run an fp16 engine beside fp32 (with --int8: `best`, int8 or fp16 per layer).
    #[arg(long)]
    pub fp16: bool,
    /// Run a `best` engine (int8 where the cache covers, else fp16).
    #[arg(long)]
    pub best: bool,
    /// Shapes of inputs with symbolic dimensions: `x:1x3x224x224[,name:dims…]`; axis 0 is the
    /// batch unless --batch is given.
    #[arg(long, value_name = "NAME:DIMS", value_parser = calibench::model::onnx::parse_shapes)]
    pub shapes: Option<calibench::model::onnx::InputShapes>,
    /// Batch size [default: axis 0 of --shapes, else 1].
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    /// Backend: reference (CPU), onnxruntime (CPU), cuda (GPU) or tensorrt.
    #[arg(long, default_value = "reference", value_parser = backend_kind)]
    pub backend: calibench::matrix::BackendKind,
    /// Device: cpu, a GPU index, a UUID or name~TEXT [default: cpu, or GPU 0 for cuda and
    /// tensorrt].
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// Evaluation inputs (.npy, .npz by input name, or .pb); without them, latency only.
    #[arg(long, value_name = "DATA")]
    pub eval: Option<PathBuf>,
    /// Reference outputs for --eval (.npy/.npz) [default: computed at fp32 by the reference
    /// backend].
    #[arg(long, value_name = "REF")]
    pub reference: Option<PathBuf>,
    /// Class labels for --eval (1-D .npy), for top-1 accuracy.
    #[arg(long, value_name = "LABELS.npy")]
    pub labels: Option<PathBuf>,
    /// Print the matrix spec these flags make, and exit (to grow it into a matrix).
    #[arg(long)]
    pub print_spec: bool,
    #[command(flatten)]
    pub exec: ExecArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A run folder (reports/<run-id>) or its results.jsonl.
    pub run: PathBuf,

    /// Output format [default: from the output's extension: .csv, .json, .xml (JUnit), .md].
    #[arg(long, short = 'f', value_enum)]
    pub format: Option<ExportFormat>,

    /// Write to FILE instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
