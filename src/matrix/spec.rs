//! The matrix spec: a versioned TOML file naming models, caches and the axes to cross.
//!
//! Parsing happens in two steps: [`Spec::parse_str`] checks the TOML schema (unknown keys,
//! types) and the relations between entries; [`Spec::load`] also resolves every path
//! relative to the spec file and checks that it exists. Every problem names the key and
//! the fix, and all problems of a file are reported together.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{BackendKind, DeviceSelector, Precision};
use crate::measure::accuracy::{CheckStat, Tolerance};

/// The only spec version this calibench reads.
pub const SPEC_VERSION: u32 = 1;

/// A model of the matrix.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Short id used in cell keys and reports (letters, digits, `.`, `_`, `-`).
    pub id: String,
    /// Path of the ONNX file, relative to the spec file.
    pub path: PathBuf,
    /// Evaluation inputs (`.npy` for one input, `.npz` named by input, or a TensorProto `.pb`),
    /// samples on axis 0. Without it, the model's cells measure latency only.
    #[serde(default)]
    pub eval_inputs: Option<PathBuf>,
    /// Class labels of the evaluation samples (1-D `.npy`), for top-1 accuracy.
    #[serde(default)]
    pub eval_labels: Option<PathBuf>,
    /// Reference outputs for the evaluation inputs; computed by the reference backend at
    /// fp32 (and cached) when absent.
    #[serde(default)]
    pub reference: Option<PathBuf>,
    /// Accuracy tolerances.
    #[serde(default)]
    pub tolerance: ToleranceSpec,
    /// The backend that computes the reference outputs when `reference` is not given:
    /// `reference` (tract, the default) or `onnxruntime`.
    #[serde(default = "default_reference_backend")]
    pub reference_backend: BackendKind,
    /// Shapes of inputs with symbolic dimensions (`[models.inputs.x] shape = [1, 3, 48, 192]`,
    /// trtexec's `--shapes`); axis 0 takes each cell's batch size.
    #[serde(default)]
    pub inputs: std::collections::BTreeMap<String, InputSpec>,
}

fn default_reference_backend() -> BackendKind {
    BackendKind::Reference
}

/// Settings of one model input.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Its full shape; axis 0 is replaced by each cell's batch size.
    pub shape: Vec<usize>,
}

impl ModelSpec {
    /// The input shapes the spec gives, by input name.
    pub fn input_shapes(&self) -> crate::model::onnx::InputShapes {
        self.inputs
            .iter()
            .map(|(k, v)| (k.clone(), v.shape.clone()))
            .collect()
    }
}

/// Tolerance settings; every field is optional and overrides the one above it.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToleranceFields {
    /// Absolute tolerance (Polygraphy's --atol).
    #[serde(default)]
    pub atol: Option<f64>,
    /// Relative tolerance (Polygraphy's --rtol).
    #[serde(default)]
    pub rtol: Option<f64>,
    /// `elementwise`, `max`, `mean`, `median` or `quantile=Q` (Polygraphy's --check-error-stat).
    #[serde(default)]
    pub check: Option<CheckStat>,
    /// Minimum cosine similarity of each output with its reference.
    #[serde(default)]
    pub min_cosine: Option<f64>,
    /// Maximum top-1 accuracy drop against the reference (fraction: 0.01 = one point).
    #[serde(default)]
    pub max_top1_drop: Option<f64>,
}

/// A model's tolerances: defaults for every cell, with overrides per precision and per output.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToleranceSpec {
    /// Settings for every output and precision.
    #[serde(flatten)]
    pub all: ToleranceFields,
    /// Overrides for one precision (`[models.tolerance.precision.int8]`).
    #[serde(default)]
    pub precision: std::collections::BTreeMap<Precision, ToleranceFields>,
    /// Overrides for one output (`[models.tolerance.outputs.logits]`).
    #[serde(default)]
    pub outputs: std::collections::BTreeMap<String, ToleranceFields>,
}

impl ToleranceFields {
    fn over(&self, mut t: Tolerance) -> Tolerance {
        t.atol = self.atol.unwrap_or(t.atol);
        t.rtol = self.rtol.unwrap_or(t.rtol);
        t.check = self.check.unwrap_or(t.check);
        t.min_cosine = self.min_cosine.or(t.min_cosine);
        t.max_top1_drop = self.max_top1_drop.or(t.max_top1_drop);
        t
    }

    fn problems(&self, key: &str, out: &mut Vec<SpecProblem>) {
        let bad = |v: Option<f64>, ok: fn(f64) -> bool| v.is_some_and(|v| !ok(v));
        for (name, v, ok, range) in [
            ("atol", self.atol, (|v| v >= 0.0) as fn(f64) -> bool, ">= 0"),
            ("rtol", self.rtol, |v| v >= 0.0, ">= 0"),
            (
                "min_cosine",
                self.min_cosine,
                |v| (-1.0..=1.0).contains(&v),
                "between -1 and 1",
            ),
            (
                "max_top1_drop",
                self.max_top1_drop,
                |v| (0.0..=1.0).contains(&v),
                "between 0 and 1 (a fraction)",
            ),
        ] {
            if bad(v, ok) {
                out.push(SpecProblem {
                    key: format!("{key}.{name}"),
                    message: format!("{name} = {} is out of range", v.unwrap_or_default()),
                    fix: format!("use a value {range}"),
                });
            }
        }
    }
}

impl ToleranceSpec {
    /// The tolerance of one output at one precision: Polygraphy's defaults, then the model's
    /// settings, then its precision override, then its output override.
    pub fn resolve(&self, precision: Precision, output: &str) -> Tolerance {
        let mut t = self.all.over(Tolerance::default());
        if let Some(p) = self.precision.get(&precision) {
            t = p.over(t);
        }
        if let Some(o) = self.outputs.get(output) {
            t = o.over(t);
        }
        t
    }
}

/// A calibration cache of the matrix, tied to one model.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    /// Short id used in cell keys and reports; unique per model, so one cache file can be
    /// listed under the same id for several models (e.g. reused on a fine-tune).
    pub id: String,
    /// Id of the model this cache is used with.
    pub model: String,
    /// Path of the TensorRT calibration cache, relative to the spec file.
    pub path: PathBuf,
}

/// The axes crossed for every model.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Axes {
    /// Precision flags, as trtexec names them.
    pub precisions: Vec<Precision>,
    /// Backends that build and run the engines.
    pub backends: Vec<BackendKind>,
    /// Devices: `cpu`, `all`, a GPU index, a UUID, or `name~PATTERN`.
    #[serde(default = "default_devices")]
    pub devices: Vec<String>,
    /// Batch sizes.
    #[serde(default = "default_batches")]
    pub batch_sizes: Vec<usize>,
}

fn default_devices() -> Vec<String> {
    vec!["cpu".to_string()]
}

fn default_batches() -> Vec<usize> {
    vec![1]
}

/// How long latency is measured per cell.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LatencySpec {
    /// Warm-up time before sampling, in milliseconds.
    #[serde(default = "default_warmup_ms")]
    pub warmup_ms: u64,
    /// Target measurement time, in milliseconds.
    #[serde(default = "default_measurement_ms")]
    pub measurement_ms: u64,
    /// Number of samples (criterion's sample size, at least 10 for criterion) and the minimum
    /// number of single-iteration timings.
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// Untimed iterations before anything is measured (trtexec's warm-up, in iterations).
    #[serde(default)]
    pub warmup_iterations: usize,
    /// GPU engines: capture one inference in a CUDA graph and time graph launches
    /// (trtexec's `--useCudaGraph`).
    #[serde(default)]
    pub cuda_graph: bool,
    /// GPU engines: how the host waits for timed work, `spin` (trtexec's `--useSpinWait`) or
    /// `blocking`.
    #[serde(default)]
    pub sync: crate::gpu::cuda::SyncMode,
}

fn default_warmup_ms() -> u64 {
    500
}
fn default_measurement_ms() -> u64 {
    2000
}
fn default_samples() -> usize {
    50
}

impl Default for LatencySpec {
    fn default() -> Self {
        LatencySpec {
            warmup_ms: default_warmup_ms(),
            measurement_ms: default_measurement_ms(),
            samples: default_samples(),
            warmup_iterations: 0,
            cuda_graph: false,
            sync: Default::default(),
        }
    }
}

/// Settings of the `mock` backend, which exists for tests of calibench itself.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MockSpec {
    /// Time each mock build sleeps, in milliseconds (lets tests interrupt a run).
    #[serde(default)]
    pub delay_ms: u64,
    /// Cells (filter conditions such as `precision=int8`) whose build fails on purpose.
    #[serde(default)]
    pub fail: Vec<String>,
}

/// The matrix spec as written in the TOML file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Schema version; must be 1.
    pub version: u32,
    /// Name of the matrix, used in run ids and reports.
    pub name: String,
    /// Free text shown in reports.
    #[serde(default)]
    pub description: Option<String>,
    /// The axes to cross.
    pub axes: Axes,
    /// Models.
    #[serde(default)]
    pub models: Vec<ModelSpec>,
    /// Calibration caches.
    #[serde(default)]
    pub caches: Vec<CacheSpec>,
    /// Latency measurement settings.
    #[serde(default)]
    pub latency: LatencySpec,
    /// Mock backend settings.
    #[serde(default)]
    pub mock: MockSpec,
    /// What makes the run pass beyond each cell's gates (skipped cells, caution band).
    #[serde(default)]
    pub gate: super::gate::GateSpec,
    /// Cells known to fail or be skipped, with why (pytest's xfail).
    #[serde(default)]
    pub expect: Vec<super::gate::ExpectSpec>,
    /// CPU backends that check each other's outputs on every CPU cell.
    #[serde(default)]
    pub cross_check: super::gate::CrossCheckSpec,
}

/// One thing wrong with a spec: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// The key, e.g. `caches[1].model`.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (fix: {})", self.key, self.message, self.fix)
    }
}

/// Why a spec could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read matrix spec {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or does not follow the schema.
    #[error("{path}: {message}\nfix: see matrices/README.md for every key of a matrix spec")]
    Parse { path: PathBuf, message: String },
    /// The TOML follows the schema but its content is inconsistent.
    #[error("{path}: {} problem(s) in the matrix spec:\n{}", problems.len(), render_problems(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<SpecProblem>,
    },
}

fn render_problems(problems: &[SpecProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A spec that was read from a file and checked, with its paths resolved.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    /// The spec, with model and cache paths made absolute (or relative to the working dir).
    pub spec: Spec,
    /// Path of the spec file.
    pub path: PathBuf,
    /// sha256 of the spec file's bytes.
    pub sha256: String,
    /// The file's text, kept so a run can store a copy next to its results.
    pub text: String,
}

impl Spec {
    /// Parses and checks a spec from TOML text; `origin` names the file in errors.
    /// Paths are not touched.
    pub fn parse_str(text: &str, origin: &Path) -> Result<Spec, SpecError> {
        let spec: Spec = toml::from_str(text).map_err(|e| SpecError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let problems = spec.problems();
        if problems.is_empty() {
            Ok(spec)
        } else {
            Err(SpecError::Invalid {
                path: origin.to_path_buf(),
                problems,
            })
        }
    }

    /// Reads, parses and checks a spec file, resolving paths relative to it.
    pub fn load(path: &Path) -> Result<LoadedSpec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut spec = Spec::parse_str(&text, path)?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let mut problems = Vec::new();
        for (i, m) in spec.models.iter_mut().enumerate() {
            m.path = resolve(base, &m.path, &format!("models[{i}].path"), &mut problems);
            for (key, p) in [
                ("eval_inputs", &mut m.eval_inputs),
                ("eval_labels", &mut m.eval_labels),
                ("reference", &mut m.reference),
            ] {
                if let Some(p) = p {
                    *p = resolve(base, p, &format!("models[{i}].{key}"), &mut problems);
                }
            }
        }
        for (i, c) in spec.caches.iter_mut().enumerate() {
            c.path = resolve(base, &c.path, &format!("caches[{i}].path"), &mut problems);
        }
        if !problems.is_empty() {
            return Err(SpecError::Invalid {
                path: path.to_path_buf(),
                problems,
            });
        }
        let sha256 = crate::hash::sha256_bytes(text.as_bytes());
        Ok(LoadedSpec {
            spec,
            path: path.to_path_buf(),
            sha256,
            text,
        })
    }

    /// Caches that belong to a model.
    pub fn caches_of<'a>(&'a self, model: &'a str) -> impl Iterator<Item = &'a CacheSpec> + 'a {
        self.caches.iter().filter(move |c| c.model == model)
    }

    /// Every problem of the spec's content (not its paths).
    pub fn problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        macro_rules! push {
            ($key:expr, $message:expr, $fix:expr $(,)?) => {
                out.push(SpecProblem {
                    key: $key,
                    message: $message,
                    fix: $fix,
                })
            };
        }
        if self.version != SPEC_VERSION {
            push!(
                "version".into(),
                format!("spec version {} is not supported", self.version),
                format!("write `version = {SPEC_VERSION}`; this calibench reads version {SPEC_VERSION} only"),
            );
        }
        if let Some(why) = id_problem(&self.name) {
            push!(
                "name".into(),
                format!("matrix name {:?} {why}", self.name),
                ID_FIX.into(),
            );
        }
        if self.models.is_empty() {
            push!(
                "models".into(),
                "the matrix has no models".into(),
                "add a [[models]] table with `id` and `path`".into(),
            );
        }
        let mut model_ids = BTreeSet::new();
        for (i, m) in self.models.iter().enumerate() {
            if let Some(why) = id_problem(&m.id) {
                push!(
                    format!("models[{i}].id"),
                    format!("model id {:?} {why}", m.id),
                    ID_FIX.into(),
                );
            }
            m.tolerance
                .all
                .problems(&format!("models[{i}].tolerance"), &mut out);
            for (p, t) in &m.tolerance.precision {
                t.problems(&format!("models[{i}].tolerance.precision.{p}"), &mut out);
            }
            for (o, t) in &m.tolerance.outputs {
                t.problems(&format!("models[{i}].tolerance.outputs.{o}"), &mut out);
            }
            if !matches!(
                m.reference_backend,
                BackendKind::Reference | BackendKind::Onnxruntime
            ) {
                push!(
                    format!("models[{i}].reference_backend"),
                    format!(
                        "reference outputs are computed on the CPU; {} is not a CPU backend",
                        m.reference_backend
                    ),
                    "use \"reference\" (tract) or \"onnxruntime\"".into(),
                );
            }
            for (name, input) in &m.inputs {
                if input.shape.is_empty() || input.shape.contains(&0) {
                    push!(
                        format!("models[{i}].inputs.{name}.shape"),
                        format!("shape {:?} of input {name:?} is not a list of positive sizes", input.shape),
                        "give every dimension, e.g. shape = [1, 3, 48, 192] (axis 0 takes each cell's batch)".into(),
                    );
                }
            }
            if (m.eval_labels.is_some() || m.reference.is_some()) && m.eval_inputs.is_none() {
                out.push(SpecProblem {
                    key: format!("models[{i}].eval_inputs"),
                    message: format!(
                        "model {:?} has labels or reference outputs but no eval_inputs",
                        m.id
                    ),
                    fix: "add eval_inputs = \"PATH.npy\" with the samples they belong to".into(),
                });
            }
            if !model_ids.insert(m.id.as_str()) {
                push!(
                    format!("models[{i}].id"),
                    format!("model id {:?} is used twice", m.id),
                    "give every model its own id".into(),
                );
            }
        }
        let mut cache_ids = BTreeSet::new();
        for (i, c) in self.caches.iter().enumerate() {
            if let Some(why) = id_problem(&c.id) {
                push!(
                    format!("caches[{i}].id"),
                    format!("cache id {:?} {why}", c.id),
                    ID_FIX.into(),
                );
            }
            if !cache_ids.insert((c.model.as_str(), c.id.as_str())) {
                push!(
                    format!("caches[{i}].id"),
                    format!("cache id {:?} is used twice for model {:?}", c.id, c.model),
                    "give every cache of a model its own id".into(),
                );
            }
            if !model_ids.contains(c.model.as_str()) {
                let known = model_ids.iter().copied().collect::<Vec<_>>().join(", ");
                push!(
                    format!("caches[{i}].model"),
                    format!(
                        "cache {:?} names model {:?}, which is not in [[models]]",
                        c.id, c.model
                    ),
                    format!("use one of the model ids: {known}"),
                );
            }
        }
        let axes = &self.axes;
        if axes.precisions.is_empty() {
            push!(
                "axes.precisions".into(),
                "no precision to run".into(),
                "list at least one of \"fp32\", \"fp16\", \"int8\", \"best\"".into(),
            );
        }
        if let Some(p) = axes.precisions.iter().find(|p| p.needs_cache()) {
            for m in &self.models {
                if self.caches_of(&m.id).next().is_none() {
                    push!(
                        "axes.precisions".into(),
                        format!(
                            "{p} needs a calibration cache (as trtexec --int8 --calib=FILE does), but model {:?} has none",
                            m.id
                        ),
                        format!(
                            "add a [[caches]] table with model = {:?}, or drop int8/best from axes.precisions",
                            m.id
                        ),
                    );
                }
            }
        }
        if axes.backends.is_empty() {
            push!(
                "axes.backends".into(),
                "no backend to run".into(),
                "list at least one of \"reference\", \"cuda\", \"tensorrt\"".into(),
            );
        }
        let mut selectors = Vec::new();
        for (i, d) in axes.devices.iter().enumerate() {
            match d.parse::<DeviceSelector>() {
                Ok(s) => selectors.push(s),
                Err(e) => push!(format!("axes.devices[{i}]"), e, DEVICE_FIX.into()),
            }
        }
        if axes.devices.is_empty() {
            push!(
                "axes.devices".into(),
                "no device to run on".into(),
                DEVICE_FIX.into(),
            );
        }
        for b in &axes.backends {
            if !axes.devices.is_empty() && !selectors.iter().any(|s| b.runs_on(s)) {
                let fix = if b.is_gpu() {
                    format!("add a GPU to axes.devices (e.g. \"all\") for backend {b}")
                } else {
                    format!("add \"cpu\" to axes.devices for backend {b}")
                };
                push!(
                    "axes.backends".into(),
                    format!("backend {b} runs on none of the devices listed"),
                    fix,
                );
            }
        }
        if axes.batch_sizes.is_empty() || axes.batch_sizes.contains(&0) {
            push!(
                "axes.batch_sizes".into(),
                "batch sizes must be a non-empty list of positive integers".into(),
                "e.g. batch_sizes = [1, 8]".into(),
            );
        }
        for (key, dup) in [
            ("axes.precisions", has_duplicates(&axes.precisions)),
            ("axes.backends", has_duplicates(&axes.backends)),
            ("axes.devices", has_duplicates(&axes.devices)),
            ("axes.batch_sizes", has_duplicates(&axes.batch_sizes)),
        ] {
            if dup {
                push!(
                    key.into(),
                    "a value is listed twice".into(),
                    "list each value once".into(),
                );
            }
        }
        if self.latency.samples < 2 {
            push!(
                "latency.samples".into(),
                "at least 2 samples are needed for a spread".into(),
                "set latency.samples = 10 or more".into(),
            );
        }
        if self.latency.measurement_ms == 0 {
            push!(
                "latency.measurement_ms".into(),
                "measurement time must be positive".into(),
                "set latency.measurement_ms = 1000, for example".into(),
            );
        }
        if out.is_empty() {
            out.extend(super::gate::problems(
                &self.gate,
                &self.expect,
                &super::expand(self),
            ));
        }
        for b in &self.cross_check.backends {
            if b.is_gpu() {
                push!(
                    "cross_check.backends".into(),
                    format!("{b} runs on GPUs; the cross-check compares CPU backends"),
                    "list CPU backends: \"reference\", \"onnxruntime\"".into(),
                );
            }
        }
        if self.cross_check.backends.len() == 1 {
            push!(
                "cross_check.backends".into(),
                "a cross-check needs two backends".into(),
                "e.g. backends = [\"reference\", \"onnxruntime\"]".into(),
            );
        }
        for (i, cond) in self.mock.fail.iter().enumerate() {
            if let Err(e) = super::Filter::parse(cond) {
                push!(
                    format!("mock.fail[{i}]"),
                    e.to_string(),
                    "write conditions as key=value".into(),
                );
            }
        }
        out
    }
}

const ID_FIX: &str =
    "use letters, digits, '.', '_' and '-' only (ids appear in cell keys and file names)";
const DEVICE_FIX: &str =
    "use \"cpu\", \"all\", a GPU index such as \"0\", a UUID such as \"GPU-3f…\", or \"name~H100\"";

/// Whether ids take this character: letters, digits, `.`, `_` and `-`.
pub fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// `text` with every character ids do not take replaced by `with`.
pub fn to_id_chars(text: &str, with: char) -> String {
    text.chars()
        .map(|c| if id_char(c) { c } else { with })
        .collect()
}

fn id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("is empty")
    } else if !id.chars().all(id_char) {
        Some("has characters other than letters, digits, '.', '_' and '-'")
    } else {
        None
    }
}

fn has_duplicates<T: PartialEq>(items: &[T]) -> bool {
    items
        .iter()
        .enumerate()
        .any(|(i, a)| items[..i].contains(a))
}

fn resolve(base: &Path, path: &Path, key: &str, problems: &mut Vec<SpecProblem>) -> PathBuf {
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    if !full.is_file() {
        problems.push(SpecProblem {
            key: key.to_string(),
            message: format!(
                "{} does not exist (resolved to {})",
                path.display(),
                full.display()
            ),
            fix:
                "paths are relative to the spec file's folder; correct the path or create the file"
                    .into(),
        });
    }
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const GOOD: &str = r#"
version = 1
name = "t"
[axes]
precisions = ["fp32", "int8"]
backends = ["mock"]
devices = ["cpu", "0"]
batch_sizes = [1, 4]
[[models]]
id = "m"
path = "m.onnx"
[[caches]]
id = "c"
model = "m"
path = "c.cache"
"#;

    fn problems_of(text: &str) -> Vec<SpecProblem> {
        match Spec::parse_str(text, Path::new("x.toml")) {
            Err(SpecError::Invalid { problems, .. }) => problems,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn good_spec_parses() {
        let spec = Spec::parse_str(GOOD, Path::new("x.toml")).unwrap();
        assert_eq!(spec.models.len(), 1);
        assert_eq!(spec.axes.batch_sizes, vec![1, 4]);
        assert_eq!(spec.latency, LatencySpec::default());
    }

    #[test]
    fn gpu_timing_options_parse_and_bad_sync_modes_are_named() {
        let text = format!("{GOOD}[latency]\ncuda_graph = true\nsync = \"blocking\"\n");
        let spec = Spec::parse_str(&text, Path::new("x.toml")).unwrap();
        assert!(spec.latency.cuda_graph);
        assert_eq!(spec.latency.sync, crate::gpu::cuda::SyncMode::Blocking);
        let bad = format!("{GOOD}[latency]\nsync = \"busy\"\n");
        let msg = Spec::parse_str(&bad, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("busy") && msg.contains("spin"), "{msg}");
    }

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let text = GOOD.replace("name = \"t\"", "name = \"t\"\nprecison = 3");
        let err = Spec::parse_str(&text, Path::new("x.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("x.toml"), "{msg}");
        assert!(msg.contains("precison"), "{msg}");
        assert!(msg.contains("line 4"), "{msg}");
        assert!(msg.contains("matrices/README.md"), "{msg}");
    }

    #[test]
    fn unknown_precision_is_rejected() {
        let text = GOOD.replace("\"fp32\", \"int8\"", "\"fp32\", \"int4\"");
        let msg = Spec::parse_str(&text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("int4"), "{msg}");
    }

    #[test]
    fn cache_for_missing_model() {
        let text = GOOD.replace("model = \"m\"", "model = \"nope\"");
        let p = problems_of(&text);
        assert!(
            p.iter()
                .any(|p| p.key == "caches[0].model" && p.message.contains("nope")),
            "{p:?}"
        );
    }

    #[test]
    fn int8_without_cache_says_so() {
        let text = GOOD.split("[[caches]]").next().unwrap();
        let p = problems_of(text);
        let p = p
            .iter()
            .find(|p| p.key == "axes.precisions")
            .expect("a precision problem");
        assert!(p.message.contains("int8 needs a calibration cache"), "{p}");
        assert!(p.message.contains("--int8 --calib"), "{p}");
    }

    #[test]
    fn wrong_version() {
        let p = problems_of(&GOOD.replace("version = 1", "version = 2"));
        assert_eq!(p[0].key, "version");
    }

    #[test]
    fn bad_ids_devices_and_batches() {
        let text = GOOD
            .replace("id = \"m\"", "id = \"m/x\"")
            .replace("\"cpu\", \"0\"", "\"cpu\", \"gpu zero\"")
            .replace("[1, 4]", "[0]");
        let keys: Vec<String> = problems_of(&text).into_iter().map(|p| p.key).collect();
        assert!(keys.contains(&"models[0].id".to_string()), "{keys:?}");
        assert!(keys.contains(&"axes.devices[1]".to_string()), "{keys:?}");
        assert!(keys.contains(&"axes.batch_sizes".to_string()), "{keys:?}");
    }

    #[test]
    fn gpu_backend_without_gpu_device() {
        let text = GOOD
            .replace("[\"mock\"]", "[\"cuda\"]")
            .replace("\"cpu\", \"0\"", "\"cpu\"");
        let p = problems_of(&text);
        assert!(
            p.iter()
                .any(|p| p.key == "axes.backends" && p.fix.contains("\"all\"")),
            "{p:?}"
        );
    }

    #[test]
    fn duplicate_ids() {
        let text = format!("{GOOD}\n[[models]]\nid = \"m\"\npath = \"b.onnx\"\n");
        let p = problems_of(&text);
        assert!(p.iter().any(|p| p.message.contains("used twice")), "{p:?}");
    }

    #[test]
    fn load_resolves_paths_relative_to_spec() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.onnx"), b"x").unwrap();
        std::fs::write(dir.path().join("spec.toml"), GOOD).unwrap();
        let err = Spec::load(&dir.path().join("spec.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("caches[0].path") && msg.contains("c.cache"),
            "{msg}"
        );
        std::fs::write(dir.path().join("c.cache"), b"x").unwrap();
        let loaded = Spec::load(&dir.path().join("spec.toml")).unwrap();
        assert_eq!(loaded.spec.models[0].path, dir.path().join("m.onnx"));
        assert_eq!(loaded.sha256.len(), 64);
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = Spec::load(Path::new("/nonexistent/spec.toml")).unwrap_err();
        assert!(matches!(err, SpecError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/spec.toml"));
    }
}
