//! Provenance sidecars: `FILE.provenance.json` says where a cache came from (model, data,
//! calibrator, GPU, driver, TensorRT and calibench versions), so reports can say so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a cache came from. Every field is optional: caches made elsewhere are described
/// with `calibench cache provenance FILE --set key=value`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// sha256 of the cache this describes (to notice a stale sidecar).
    #[serde(default)]
    pub cache_sha256: Option<String>,
    /// sha256 of the model it was calibrated on.
    #[serde(default)]
    pub model_sha256: Option<String>,
    /// Calibration method, e.g. `entropy`, `minmax`, `percentile=99.99`.
    #[serde(default)]
    pub calibrator: Option<String>,
    /// Id of the calibration data set.
    #[serde(default)]
    pub dataset_id: Option<String>,
    /// Number of calibration samples.
    #[serde(default)]
    pub dataset_size: Option<u64>,
    /// Calibration batch size.
    #[serde(default)]
    pub batch: Option<u64>,
    /// The GPU the cache was made on (name or UUID), `cpu` for the reference backend.
    #[serde(default)]
    pub origin_gpu: Option<String>,
    /// Driver version of that machine.
    #[serde(default)]
    pub driver: Option<String>,
    /// TensorRT version that made it.
    #[serde(default)]
    pub tensorrt_version: Option<String>,
    /// calibench version that made it.
    #[serde(default)]
    pub calibench_version: Option<String>,
    /// When it was made (RFC 3339).
    #[serde(default)]
    pub created_at: Option<String>,
    /// Anything else.
    #[serde(default)]
    pub notes: Option<String>,
}

/// Keys `--set` accepts.
pub const KEYS: &[&str] = &[
    "model_sha256",
    "calibrator",
    "dataset_id",
    "dataset_size",
    "batch",
    "origin_gpu",
    "driver",
    "tensorrt_version",
    "calibench_version",
    "created_at",
    "notes",
];

/// Why provenance could not be read, written or set.
#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    /// I/O.
    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Malformed JSON.
    #[error("{path}: not a provenance sidecar: {message}\nfix: delete it and set the fields again with `calibench cache provenance CACHE --set key=value`")]
    Parse { path: PathBuf, message: String },
    /// A bad `--set`.
    #[error("{0}")]
    Set(String),
}

/// The sidecar path of a cache: `model.cache` → `model.cache.provenance.json`.
pub fn sidecar_path(cache: &Path) -> PathBuf {
    let mut name = cache.file_name().unwrap_or_default().to_os_string();
    name.push(".provenance.json");
    cache.with_file_name(name)
}

impl Provenance {
    /// Reads a cache's sidecar; `None` if there is none.
    pub fn read_for(cache: &Path) -> Result<Option<Provenance>, ProvenanceError> {
        let path = sidecar_path(cache);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ProvenanceError::Io { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ProvenanceError::Parse {
                path,
                message: e.to_string(),
            })
    }

    /// Writes the sidecar of a cache.
    pub fn write_for(&self, cache: &Path) -> Result<PathBuf, ProvenanceError> {
        let path = sidecar_path(cache);
        let text = serde_json::to_string_pretty(self).expect("provenance serializes") + "\n";
        std::fs::write(&path, text).map_err(|source| ProvenanceError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// Applies `key=value`.
    pub fn set(&mut self, assignment: &str) -> Result<(), ProvenanceError> {
        let (key, value) = assignment.split_once('=').ok_or_else(|| {
            ProvenanceError::Set(format!(
                "{assignment:?} is not key=value (e.g. origin_gpu=\"NVIDIA L4\")"
            ))
        })?;
        let value = value.trim().to_string();
        let number = |v: &str| {
            v.parse::<u64>().map_err(|_| {
                ProvenanceError::Set(format!("{key} must be a whole number, got {v:?}"))
            })
        };
        let slot = match key.trim() {
            "dataset_size" => return number(&value).map(|n| self.dataset_size = Some(n)),
            "batch" => return number(&value).map(|n| self.batch = Some(n)),
            "model_sha256" => &mut self.model_sha256,
            "calibrator" => &mut self.calibrator,
            "dataset_id" => &mut self.dataset_id,
            "origin_gpu" => &mut self.origin_gpu,
            "driver" => &mut self.driver,
            "tensorrt_version" => &mut self.tensorrt_version,
            "calibench_version" => &mut self.calibench_version,
            "created_at" => &mut self.created_at,
            "notes" => &mut self.notes,
            other => {
                return Err(ProvenanceError::Set(format!(
                    "unknown provenance key {other:?}; known keys: {}",
                    KEYS.join(", ")
                )))
            }
        };
        *slot = Some(value);
        Ok(())
    }

    /// The fields that are set, as key → value, for printing.
    pub fn fields(&self) -> BTreeMap<String, String> {
        let v = serde_json::to_value(self).expect("provenance serializes");
        v.as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_string),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_round_trip_and_set() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("m.cache");
        std::fs::write(&cache, "TRT-8601-EntropyCalibration2\n").unwrap();
        assert_eq!(
            sidecar_path(&cache),
            dir.path().join("m.cache.provenance.json")
        );
        assert_eq!(Provenance::read_for(&cache).unwrap(), None);
        let mut p = Provenance::default();
        p.set("origin_gpu=NVIDIA L4").unwrap();
        p.set("dataset_size=500").unwrap();
        assert!(p
            .set("dataset_size=many")
            .unwrap_err()
            .to_string()
            .contains("whole number"));
        assert!(p
            .set("colour=red")
            .unwrap_err()
            .to_string()
            .contains("origin_gpu"));
        assert!(p.set("nokey").is_err());
        p.write_for(&cache).unwrap();
        let back = Provenance::read_for(&cache).unwrap().unwrap();
        assert_eq!(back, p);
        assert_eq!(back.fields()["origin_gpu"], "NVIDIA L4");
        assert_eq!(back.fields()["dataset_size"], "500");
    }

    #[test]
    fn broken_sidecar_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("m.cache");
        std::fs::write(sidecar_path(&cache), "{ nope").unwrap();
        let e = Provenance::read_for(&cache).unwrap_err().to_string();
        assert!(
            e.contains("m.cache.provenance.json") && e.contains("fix:"),
            "{e}"
        );
    }
}
