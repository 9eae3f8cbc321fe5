//! The versioned record written for every finished cell: one JSON object per line of
//! `results.jsonl`. Readers accept older records of the same major schema: every block
//! added after version 1 is optional.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::matrix::Cell;

/// Version of the record schema written by this calibench.
pub const RECORD_SCHEMA: u32 = 1;

/// How a cell ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Built, measured, and every gate passed.
    Ok,
    /// An error stopped the cell, or a gate (accuracy tolerance) failed.
    Failed,
    /// Not run, for a reason that is not a failure (e.g. its GPU is not on this host).
    Skipped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        })
    }
}

/// Which matrix a record belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixInfo {
    /// The spec's `name`.
    pub name: String,
    /// sha256 of the spec file.
    pub sha256: String,
}

/// A file the cell used: a model or a cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Id from the spec.
    pub id: String,
    /// Path as resolved when the run started.
    pub path: String,
    /// sha256 of the file's bytes.
    pub sha256: String,
    /// For caches: the GPU (or `cpu`) it was calibrated on, from its provenance sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_gpu: Option<String>,
}

/// Where and why a cell failed or was skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellError {
    /// Phase: `setup`, `build`, `accuracy` or `latency`.
    pub phase: String,
    /// The error with its causes, and the fix where one is known.
    pub message: String,
}

/// Everything calibench records about one GPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// NVML index.
    pub index: u32,
    /// Product name.
    pub name: String,
    /// UUID, `GPU-…`.
    pub uuid: String,
    /// Serial number, where the board reports one.
    pub serial: Option<String>,
    /// Board part number, where available.
    pub board_part_number: Option<String>,
    /// VBIOS version.
    pub vbios: Option<String>,
    /// PCI bus id.
    pub pci_bus_id: Option<String>,
    /// Compute capability, e.g. "9.0".
    pub compute_capability: Option<String>,
    /// Architecture name, e.g. "Hopper".
    pub architecture: Option<String>,
    /// Total memory, MiB.
    pub memory_total_mib: Option<u64>,
    /// Whether MIG mode is on.
    pub mig_mode: Option<bool>,
    /// Whether persistence mode is on.
    pub persistence_mode: Option<bool>,
    /// Power management limit, W.
    pub power_limit_w: Option<f64>,
    /// Maximum SM clock, MHz.
    pub max_sm_clock_mhz: Option<u32>,
    /// Maximum memory clock, MHz.
    pub max_mem_clock_mhz: Option<u32>,
    /// Application SM clock, MHz.
    pub app_sm_clock_mhz: Option<u32>,
    /// Application memory clock, MHz.
    pub app_mem_clock_mhz: Option<u32>,
    /// Whether ECC is enabled.
    pub ecc_enabled: Option<bool>,
    /// What identified the GPU: `nvml`, or `cuda-driver` where NVML is absent or switched off
    /// (Jetson boards have no NVML). Absent in records from before the field existed (NVML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_source: Option<String>,
    /// Streaming multiprocessors (CUDA driver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sm_count: Option<u32>,
    /// Whether the GPU is integrated with the host memory (Jetson).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrated: Option<bool>,
    /// The board, from /proc/device-tree/model on Tegra (e.g. "NVIDIA Jetson AGX Orin Developer Kit").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board: Option<String>,
    /// The L4T release on Tegra, from /etc/nv_tegra_release (e.g. "R36 (release), REVISION: 4.3").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l4t_release: Option<String>,
}

/// Minimum, median and maximum of a sampled quantity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Smallest sample.
    pub min: f64,
    /// Median sample.
    pub median: f64,
    /// Largest sample.
    pub max: f64,
}

/// GPU telemetry sampled while a cell was measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    /// Samples taken.
    pub samples: usize,
    /// Sampling period, ms.
    pub period_ms: f64,
    /// SM clock, MHz.
    pub sm_clock_mhz: Option<Stat>,
    /// Memory clock, MHz.
    pub mem_clock_mhz: Option<Stat>,
    /// Power draw, W.
    pub power_w: Option<Stat>,
    /// Temperature, °C.
    pub temperature_c: Option<Stat>,
    /// GPU utilization, %.
    pub utilization_pct: Option<Stat>,
    /// Clock-event (throttle) reasons seen.
    pub reasons: Vec<String>,
    /// Whether the measurement is suspect (throttling, or a falling SM clock).
    pub noisy: bool,
    /// Why it is flagged noisy.
    #[serde(default)]
    pub noisy_because: Vec<String>,
}

/// What was learnt about the engine of a cell.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineInfo {
    /// Seconds spent building (0 when loaded from the engine store).
    pub build_s: f64,
    /// Whether the engine came from the engine store instead of a build.
    #[serde(default)]
    pub cached: bool,
    /// Layers per precision they actually ran at, e.g. {"int8": 12, "fp32": 2}.
    #[serde(default)]
    pub layer_precisions: std::collections::BTreeMap<String, usize>,
    /// How the engine was built, where the backend has several ways (TensorRT 10 flags vs
    /// TensorRT 11 strongly typed networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_path: Option<String>,
    /// Precision of each layer (node name, operator, precision), where the backend reports it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<crate::model::precision::LayerPrecision>,
}

/// Something the build found, with the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Kind, e.g. `missing_scale`.
    pub kind: String,
    /// What happened.
    pub message: String,
    /// What to do.
    pub fix: String,
}

/// Latency of one cell.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Clock that timed it: `wall` (CPU) or `cuda-event` (GPU compute time).
    pub clock: String,
    /// Timed iterations.
    pub iterations: u64,
    /// Fastest iteration, ms.
    pub min_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// Median, ms.
    pub median_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest iteration, ms.
    pub max_ms: f64,
    /// Standard deviation, ms.
    pub std_ms: f64,
    /// Inferences per second (1 / mean).
    pub inferences_per_s: f64,
    /// Samples per second (batch / mean).
    pub samples_per_s: f64,
    /// criterion's estimate with its bootstrap confidence interval.
    #[serde(default)]
    pub estimate: Option<Estimate>,
    /// Tukey outliers among the single-iteration samples.
    #[serde(default)]
    pub outliers: Option<Outliers>,
}

/// criterion's estimates of the time per iteration, with confidence intervals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Mean, ms.
    pub mean_ms: f64,
    /// Lower bound of the mean's interval, ms.
    pub mean_lower_ms: f64,
    /// Upper bound of the mean's interval, ms.
    pub mean_upper_ms: f64,
    /// Median, ms.
    pub median_ms: f64,
    /// Lower bound of the median's interval, ms.
    pub median_lower_ms: f64,
    /// Upper bound of the median's interval, ms.
    pub median_upper_ms: f64,
    /// Standard deviation, ms.
    pub std_dev_ms: f64,
    /// Slope of the linear regression of time on iterations, ms (when criterion computes one).
    pub slope_ms: Option<f64>,
    /// Confidence level of the intervals (0.95).
    pub confidence_level: f64,
}

/// Tukey's outlier classes among single-iteration samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outliers {
    /// Below Q1 − 3 IQR.
    pub low_severe: usize,
    /// Below Q1 − 1.5 IQR.
    pub low_mild: usize,
    /// Above Q3 + 1.5 IQR.
    pub high_mild: usize,
    /// Above Q3 + 3 IQR.
    pub high_severe: usize,
}

/// Accuracy of one cell against its reference outputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Whether every tolerance held.
    pub passed: bool,
    /// Why it failed, when it did.
    #[serde(default)]
    pub reason: Option<String>,
    /// Samples evaluated.
    #[serde(default)]
    pub samples: usize,
    /// Where the reference outputs came from: a file, or `reference backend fp32`.
    #[serde(default)]
    pub reference: String,
    /// Per output metrics.
    #[serde(default)]
    pub outputs: Vec<crate::measure::accuracy::OutputMetrics>,
}

/// Which calibench wrote the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolInfo {
    /// Crate version.
    pub version: String,
    /// Git commit it was built from (`unknown` outside a git checkout).
    pub git_commit: String,
}

impl ToolInfo {
    /// This calibench.
    pub fn current() -> ToolInfo {
        ToolInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: env!("CALIBENCH_GIT_COMMIT").to_string(),
        }
    }
}

/// The host a record was made on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// Host name.
    pub hostname: String,
    /// Operating system and architecture, e.g. "linux x86_64".
    pub os: String,
    /// CPU model name.
    pub cpu: String,
    /// NVIDIA driver version, when NVML is available.
    #[serde(default)]
    pub driver: Option<String>,
    /// CUDA version the driver supports.
    #[serde(default)]
    pub cuda_driver: Option<String>,
    /// sha256 of the Cargo.lock calibench was built with.
    #[serde(default)]
    pub cargo_lock_sha256: Option<String>,
    /// sha256 of the flake.lock calibench was built with (absent where the project has none).
    #[serde(default)]
    pub flake_lock_sha256: Option<String>,
}

/// The thresholds a cell's verdict is judged by, recorded with it so that a report of merged
/// runs judges every cell by its own spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct VerdictThresholds {
    /// The gate's minimum cosine similarity (first output), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cosine: Option<f64>,
    /// The gate's maximum top-1 drop (fraction), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_top1_drop: Option<f64>,
    /// Cosine below which a passing cell is "reuse with caution".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caution_min_cosine: Option<f64>,
    /// Top-1 drop against fp32 (fraction) beyond which a passing cell is "with caution".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caution_max_top1_drop: Option<f64>,
}

/// A comparison of a cell's outputs with another backend's engine of the same cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossCheck {
    /// The other backend.
    pub backend: String,
    /// Cosine similarity of the first outputs.
    pub cosine: f64,
    /// Largest absolute difference of the first outputs.
    pub max_abs: f64,
    /// Whether they agree within the model's tolerance at this precision.
    pub agree: bool,
    /// Why not, or why the check could not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One finished cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Record schema version.
    pub schema: u32,
    /// Run id.
    pub run_id: String,
    /// Matrix the cell belongs to.
    pub matrix: MatrixInfo,
    /// The cell's key (see [`Cell::key`]).
    pub key: String,
    /// The cell.
    pub cell: Cell,
    /// How it ended.
    pub status: Status,
    /// Why it failed or was skipped.
    #[serde(default)]
    pub error: Option<CellError>,
    /// Model used.
    pub model: Artifact,
    /// Cache used, if any.
    #[serde(default)]
    pub cache: Option<Artifact>,
    /// GPU it ran on, if any.
    #[serde(default)]
    pub gpu: Option<GpuInfo>,
    /// Telemetry during the latency measurement (GPU cells).
    #[serde(default)]
    pub telemetry: Option<Telemetry>,
    /// Engine facts.
    #[serde(default)]
    pub engine: Option<EngineInfo>,
    /// Diagnostics of the build, with fixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<Diagnostic>,
    /// Latency, when measured: GPU compute time (CUDA events) for GPU engines, wall time on CPU.
    #[serde(default)]
    pub latency: Option<Latency>,
    /// GPU engines: end-to-end wall time per inference (host→device copy, compute,
    /// device→host copy, synchronize), as trtexec's "Latency" beside its "GPU Compute Time".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_to_end: Option<Latency>,
    /// Accuracy, when measured.
    #[serde(default)]
    pub accuracy: Option<Accuracy>,
    /// The other CPU backends this cell's outputs were compared with (`[cross_check]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cross_check: Vec<CrossCheck>,
    /// How the spec's `[[expect]]` tables say this cell ends, if one names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<crate::matrix::Expectation>,
    /// The thresholds its verdict is judged by (the gates and the spec's caution band).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<VerdictThresholds>,
    /// calibench version and commit.
    pub calibench: ToolInfo,
    /// Host.
    pub environment: Environment,
    /// When the cell started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
}

impl Environment {
    /// Reads the current host's facts (Linux `/proc`; `unknown` elsewhere).
    pub fn current() -> Environment {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let hostname = read("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let cpu = read("/proc/cpuinfo")
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let lock = |v: &str| (!v.is_empty()).then(|| v.to_string());
        Environment {
            hostname,
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            cpu,
            driver: None,
            cuda_driver: None,
            cargo_lock_sha256: lock(env!("CALIBENCH_CARGO_LOCK_SHA256")),
            flake_lock_sha256: lock(env!("CALIBENCH_FLAKE_LOCK_SHA256")),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use crate::matrix::{BackendKind, Precision};

    /// A filled-in record for tests.
    pub(crate) fn sample(key_model: &str, status: Status) -> Record {
        let cell = Cell {
            model: key_model.into(),
            cache: Some("c1".into()),
            device: "cpu".into(),
            precision: Precision::Int8,
            backend: BackendKind::Mock,
            batch: 4,
        };
        Record {
            schema: RECORD_SCHEMA,
            run_id: "r1".into(),
            matrix: MatrixInfo {
                name: "m".into(),
                sha256: "ab".repeat(32),
            },
            key: cell.key(),
            cell,
            status,
            error: (status == Status::Failed).then(|| CellError {
                phase: "build".into(),
                message: "boom, \"quoted\"".into(),
            }),
            model: Artifact {
                id: key_model.into(),
                path: "m.onnx".into(),
                sha256: "00".repeat(32),
                origin_gpu: None,
            },
            cache: Some(Artifact {
                id: "c1".into(),
                path: "c.cache".into(),
                sha256: "11".repeat(32),
                origin_gpu: Some("NVIDIA L4".into()),
            }),
            gpu: None,
            telemetry: None,
            diagnostics: Vec::new(),
            engine: Some(EngineInfo {
                build_s: 0.5,
                cached: false,
                layer_precisions: Default::default(),
                layers: Vec::new(),
                build_path: None,
            }),
            end_to_end: None,
            latency: Some(Latency {
                clock: "wall".into(),
                iterations: 10,
                min_ms: 0.1,
                mean_ms: 0.2,
                median_ms: 0.15,
                p90_ms: 0.3,
                p95_ms: 0.35,
                p99_ms: 0.4,
                max_ms: 0.5,
                std_ms: 0.01,
                inferences_per_s: 5000.0,
                samples_per_s: 20000.0,
                estimate: None,
                outliers: None,
            }),
            accuracy: None,
            cross_check: Vec::new(),
            expected: None,
            thresholds: None,
            calibench: ToolInfo::current(),
            environment: Environment::current(),
            started_at: "2026-11-25T10:00:00Z".parse().unwrap(),
            finished_at: "2026-11-25T10:00:01.5Z".parse().unwrap(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::sample;
    use super::*;

    #[test]
    fn record_round_trips_through_json() {
        for status in [Status::Ok, Status::Failed, Status::Skipped] {
            let r = sample("m", status);
            let line = serde_json::to_string(&r).unwrap();
            assert!(!line.contains('\n'));
            let back: Record = serde_json::from_str(&line).unwrap();
            assert_eq!(back, r);
        }
    }

    #[test]
    fn optional_blocks_may_be_absent() {
        let r = sample("m", Status::Ok);
        let mut v = serde_json::to_value(&r).unwrap();
        for k in ["error", "cache", "gpu", "engine", "latency", "accuracy"] {
            v.as_object_mut().unwrap().remove(k);
        }
        let back: Record = serde_json::from_value(v).unwrap();
        assert!(back.latency.is_none() && back.cache.is_none());
        assert_eq!(back.key, r.key);
    }

    #[test]
    fn tool_info_names_this_build() {
        let t = ToolInfo::current();
        assert_eq!(t.version, env!("CARGO_PKG_VERSION"));
        assert!(!t.git_commit.is_empty());
    }
}
