//! The matrix: what to run. A spec ([`spec`]) names models, caches and axes; [`expand`]
//! crosses them into [`Cell`]s, filtered and sharded. This module knows cells, not how they run.

pub mod expand;
pub mod gate;
pub mod spec;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use expand::{expand, select, select_checked, Cell, Filter, FilterError, Shard};
pub use gate::{ExpectSpec, Expectation, ExpectedStatus, GateSpec};
pub use spec::{LoadedSpec, Spec, SpecError};

/// A precision flag, with trtexec's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Full precision (trtexec's default).
    Fp32,
    /// `--fp16`.
    Fp16,
    /// `--int8 --calib=CACHE`.
    Int8,
    /// `--best`: int8 + fp16 + fp32, fastest per layer.
    Best,
}

impl Precision {
    /// All precisions in axis order.
    pub const ALL: [Precision; 4] = [
        Precision::Fp32,
        Precision::Fp16,
        Precision::Int8,
        Precision::Best,
    ];

    /// Whether this precision uses a calibration cache.
    pub fn needs_cache(self) -> bool {
        matches!(self, Precision::Int8 | Precision::Best)
    }

    /// The name used in specs, keys and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
            Precision::Best => "best",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Precision::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown precision {s:?}: use fp32, fp16, int8 or best"))
    }
}

/// Which backend builds and runs a cell's engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// CPU reference (tract): fp32 truth and simulated fp16/int8.
    Reference,
    /// onnxruntime on the CPU, opened at run time: the same rewritten models.
    Onnxruntime,
    /// Real GPU execution through CUDA (cudarc, cuBLASLt, nvrtc).
    Cuda,
    /// TensorRT through FFI.
    Tensorrt,
    /// Deterministic fake backend for testing calibench itself.
    Mock,
}

impl BackendKind {
    /// The name used in specs, keys and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Reference => "reference",
            BackendKind::Onnxruntime => "onnxruntime",
            BackendKind::Cuda => "cuda",
            BackendKind::Tensorrt => "tensorrt",
            BackendKind::Mock => "mock",
        }
    }

    /// Whether the backend needs a GPU.
    pub fn is_gpu(self) -> bool {
        matches!(self, BackendKind::Cuda | BackendKind::Tensorrt)
    }

    /// Whether a cell of this backend exists for a device selector.
    pub fn runs_on(self, device: &DeviceSelector) -> bool {
        match self {
            BackendKind::Mock => true,
            BackendKind::Reference | BackendKind::Onnxruntime => *device == DeviceSelector::Cpu,
            BackendKind::Cuda | BackendKind::Tensorrt => *device != DeviceSelector::Cpu,
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device entry of the matrix: the CPU, or a rule that selects GPUs at run time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceSelector {
    /// The host CPU.
    Cpu,
    /// Every GPU present.
    AllGpus,
    /// A GPU by NVML index.
    Index(u32),
    /// A GPU (or MIG instance) by UUID, `GPU-…` or `MIG-…`.
    Uuid(String),
    /// GPUs whose name contains the pattern (case-insensitive).
    NameContains(String),
}

impl FromStr for DeviceSelector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "cpu" {
            Ok(DeviceSelector::Cpu)
        } else if s == "all" {
            Ok(DeviceSelector::AllGpus)
        } else if let Ok(i) = s.parse::<u32>() {
            Ok(DeviceSelector::Index(i))
        } else if s.starts_with("GPU-") || s.starts_with("MIG-") {
            Ok(DeviceSelector::Uuid(s.to_string()))
        } else if let Some(p) = s.strip_prefix("name~") {
            if p.is_empty() {
                Err("device \"name~\" has an empty name pattern".to_string())
            } else {
                Ok(DeviceSelector::NameContains(p.to_string()))
            }
        } else {
            Err(format!("device {s:?} is not a device selector"))
        }
    }
}

impl fmt::Display for DeviceSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSelector::Cpu => f.write_str("cpu"),
            DeviceSelector::AllGpus => f.write_str("all"),
            DeviceSelector::Index(i) => write!(f, "{i}"),
            DeviceSelector::Uuid(u) => f.write_str(u),
            DeviceSelector::NameContains(p) => write!(f, "name~{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_selectors_round_trip() {
        for s in ["cpu", "all", "3", "GPU-3f2a", "MIG-1", "name~H100"] {
            assert_eq!(s.parse::<DeviceSelector>().unwrap().to_string(), s);
        }
        assert!("gpu0".parse::<DeviceSelector>().is_err());
        assert!("name~".parse::<DeviceSelector>().is_err());
    }

    #[test]
    fn backends_run_on_their_devices() {
        assert!(BackendKind::Reference.runs_on(&DeviceSelector::Cpu));
        assert!(!BackendKind::Reference.runs_on(&DeviceSelector::AllGpus));
        assert!(BackendKind::Cuda.runs_on(&DeviceSelector::Index(0)));
        assert!(!BackendKind::Tensorrt.runs_on(&DeviceSelector::Cpu));
        assert!(BackendKind::Mock.runs_on(&DeviceSelector::Cpu));
    }

    #[test]
    fn precision_names() {
        for p in Precision::ALL {
            assert_eq!(p.as_str().parse::<Precision>().unwrap(), p);
        }
        assert!(Precision::Int8.needs_cache() && Precision::Best.needs_cache());
        assert!(!Precision::Fp16.needs_cache());
    }
}
