//! The engine store: built engines kept on disk so a rerun builds nothing. Entries are keyed by
//! sha256 of model + cache + precision + batch + backend + backend version + GPU UUID, written
//! to a temporary file and renamed into place (two runs sharing a store never read a
//! half-written engine), and removed by age with `calibench store gc`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::matrix::Cell;

/// File extension of stored engines.
pub const EXTENSION: &str = "engine";

/// A folder of stored engines.
#[derive(Debug, Clone)]
pub struct EngineStore {
    dir: PathBuf,
}

/// First word of every stored engine file's header line.
const MAGIC: &str = "calibench-engine-v1";

/// The payload of a stored engine file, if its header's sha256 matches it.
fn verify(bytes: &[u8]) -> Result<&[u8], String> {
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .filter(|&i| i < 200)
        .ok_or("has no calibench header (written by an older calibench, or damaged)")?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "has a damaged header")?;
    let want = header
        .strip_prefix(MAGIC)
        .and_then(|h| h.trim().strip_prefix("sha256="))
        .ok_or("has no calibench header (written by an older calibench, or damaged)")?;
    let payload = &bytes[newline + 1..];
    let got = crate::hash::sha256_bytes(payload);
    if got == want {
        Ok(payload)
    } else {
        Err(format!(
            "is damaged (payload sha256 {} but its header says {})",
            &got[..12],
            &want[..12.min(want.len())]
        ))
    }
}

/// What identifies an engine.
#[derive(Debug, Clone)]
pub struct EngineKey<'a> {
    /// The cell (precision, batch, backend).
    pub cell: &'a Cell,
    /// sha256 of the model.
    pub model_sha256: &'a str,
    /// sha256 of the cache, if any.
    pub cache_sha256: Option<&'a str>,
    /// The backend's version.
    pub backend_version: &'a str,
    /// The GPU's UUID (`cpu` for CPU backends).
    pub device: &'a str,
    /// Shapes given for the model's inputs.
    pub input_shapes: &'a crate::model::onnx::InputShapes,
}

impl EngineKey<'_> {
    /// The key's sha256.
    pub fn digest(&self) -> String {
        let shapes: String = self
            .input_shapes
            .iter()
            .map(|(k, v)| format!("shape {k}={v:?}\n"))
            .collect();
        crate::hash::sha256_bytes(
            format!(
                "model={}\ncache={}\nprecision={}\nbatch={}\nbackend={}\nbackend_version={}\ndevice={}\n{shapes}",
                self.model_sha256,
                self.cache_sha256.unwrap_or("none"),
                self.cell.precision,
                self.cell.batch,
                self.cell.backend,
                self.backend_version,
                self.device
            )
            .as_bytes(),
        )
    }
}

impl EngineStore {
    /// A store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> EngineStore {
        EngineStore { dir: dir.into() }
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where an engine lives.
    pub fn path(&self, key: &EngineKey<'_>) -> PathBuf {
        self.dir.join(format!("{}.{EXTENSION}", key.digest()))
    }

    /// A stored engine's bytes: `Ok(None)` when none is stored, `Err` (and the file removed)
    /// when the stored payload does not match the sha256 written with it.
    pub fn get(&self, key: &EngineKey<'_>) -> Result<Option<(PathBuf, Vec<u8>)>, String> {
        let path = self.path(key);
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(None);
        };
        match verify(&bytes) {
            Ok(payload) => Ok(Some((path, payload.to_vec()))),
            Err(why) => {
                let _ = std::fs::remove_file(&path);
                Err(format!(
                    "stored engine {} {why}; it was removed and the engine is rebuilt",
                    path.display()
                ))
            }
        }
    }

    /// Stores an engine atomically (written to a unique temporary file, then renamed), behind
    /// a header with the payload's sha256 that [`EngineStore::get`] checks.
    pub fn put(&self, key: &EngineKey<'_>, payload: &[u8]) -> std::io::Result<PathBuf> {
        let mut bytes =
            format!("{MAGIC} sha256={}\n", crate::hash::sha256_bytes(payload)).into_bytes();
        bytes.extend_from_slice(payload);
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(key);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let tmp = self.dir.join(format!(
            ".{}.{}-{nanos}.tmp",
            key.digest(),
            std::process::id()
        ));
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Removes entries (and stray temporary files) last written more than `age` ago; returns
    /// how many files and bytes were removed.
    pub fn gc(&self, age: Duration) -> std::io::Result<(usize, u64)> {
        let now = SystemTime::now();
        let mut removed = (0, 0);
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name.ends_with(&format!(".{EXTENSION}")) || name.ends_with(".tmp")) {
                continue;
            }
            let meta = entry.metadata()?;
            let old = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|d| d > age);
            if old {
                std::fs::remove_file(entry.path())?;
                removed.0 += 1;
                removed.1 += meta.len();
            }
        }
        Ok(removed)
    }
}

/// Parses an age such as `7d`, `12h`, `30m`, `45s` or `0`. Anything else (other units,
/// signs, spaces inside, ages beyond 100 years) is refused rather than guessed at, since the
/// age decides what is deleted.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    const MAX_SECS: u64 = 100 * 365 * 86_400;
    let s = s.trim();
    let bad = || format!("age {s:?} is not a whole number followed by s, m, h or d (e.g. 7d)");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let unit = s.chars().last().ok_or_else(bad)?;
    let digits = &s[..s.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("age {s:?} is too large (at most 100 years)"))?;
    let per = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(per) {
        Some(secs) if secs <= MAX_SECS => Ok(Duration::from_secs(secs)),
        _ => Err(format!("age {s:?} is too large (at most 100 years)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::{BackendKind, Precision};

    fn cell(p: Precision) -> Cell {
        Cell {
            model: "m".into(),
            cache: None,
            device: "cpu".into(),
            precision: p,
            backend: BackendKind::Reference,
            batch: 1,
        }
    }

    #[test]
    fn keys_change_with_every_part() {
        let c = cell(Precision::Fp32);
        let k = EngineKey {
            cell: &c,
            model_sha256: "a",
            cache_sha256: None,
            backend_version: "v1",
            device: "cpu",
            input_shapes: &Default::default(),
        };
        let base = k.digest();
        assert_ne!(
            EngineKey {
                model_sha256: "b",
                ..k.clone()
            }
            .digest(),
            base
        );
        assert_ne!(
            EngineKey {
                cache_sha256: Some("c"),
                ..k.clone()
            }
            .digest(),
            base
        );
        assert_ne!(
            EngineKey {
                backend_version: "v2",
                ..k.clone()
            }
            .digest(),
            base
        );
        assert_ne!(
            EngineKey {
                device: "GPU-1",
                ..k.clone()
            }
            .digest(),
            base
        );
        let c16 = cell(Precision::Fp16);
        assert_ne!(
            EngineKey {
                cell: &c16,
                ..k.clone()
            }
            .digest(),
            base
        );
        assert_eq!(k.digest(), base, "deterministic");
    }

    #[test]
    fn put_get_and_gc() {
        let dir = tempfile::tempdir().unwrap();
        let store = EngineStore::new(dir.path().join("engines"));
        let c = cell(Precision::Int8);
        let k = EngineKey {
            cell: &c,
            model_sha256: "a",
            cache_sha256: Some("b"),
            backend_version: "v",
            device: "cpu",
            input_shapes: &Default::default(),
        };
        assert!(store.get(&k).unwrap().is_none());
        let path = store.put(&k, b"engine bytes").unwrap();
        assert_eq!(store.get(&k).unwrap().unwrap().1, b"engine bytes");
        let leftovers: Vec<_> = std::fs::read_dir(store.dir()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
        assert_eq!(
            store.gc(Duration::from_secs(3600)).unwrap(),
            (0, 0),
            "young entries stay"
        );
        assert_eq!(store.gc(Duration::ZERO).unwrap().0, 1);
        assert!(!path.exists());
    }

    #[test]
    fn concurrent_writers_never_expose_partial_engines() {
        let dir = tempfile::tempdir().unwrap();
        let store = EngineStore::new(dir.path());
        let c = cell(Precision::Fp32);
        let big = vec![7u8; 4 << 20];
        let k = EngineKey {
            cell: &c,
            model_sha256: "a",
            cache_sha256: None,
            backend_version: "v",
            device: "cpu",
            input_shapes: &Default::default(),
        };
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..5 {
                        store.put(&k, &big).unwrap();
                    }
                });
            }
            s.spawn(|| {
                for _ in 0..50 {
                    if let Some((_, b)) = store.get(&k).unwrap() {
                        assert_eq!(b.len(), big.len(), "a reader saw a partial engine");
                    }
                }
            });
        });
    }

    #[test]
    fn ages() {
        assert_eq!(parse_age("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse_age("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_age("0").unwrap(), Duration::ZERO);
        assert!(parse_age("7 days").is_err());
        assert!(parse_age("").is_err());
    }

    #[test]
    fn a_damaged_engine_is_refused_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = EngineStore::new(dir.path());
        let c = cell(Precision::Fp32);
        let k = EngineKey {
            cell: &c,
            model_sha256: "a",
            cache_sha256: None,
            backend_version: "v",
            device: "cpu",
            input_shapes: &Default::default(),
        };
        let path = store.put(&k, b"payload of an engine").unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = store.get(&k).unwrap_err();
        assert!(err.contains("damaged"), "{err}");
        assert!(!path.exists(), "the damaged file is removed");
        // A file of an older calibench (no header) is not trusted either.
        std::fs::write(&path, b"raw engine").unwrap();
        assert!(store.get(&k).unwrap_err().contains("no calibench header"));
    }
}
