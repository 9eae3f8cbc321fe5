//! TensorRT's calibration cache text format: read and write, exactly.
//!
//! ```text
//! TRT-101401-EntropyCalibration2
//! input: 3c010204
//! /conv1/Conv_output_0: 3d242853
//! ```
//!
//! The first line names the TensorRT version (major·1000+minor·100+patch up to TensorRT 8,
//! major·10000+minor·100+patch from TensorRT 10) and the calibrator. Each further line is a
//! tensor name, a colon, and the IEEE-754 bits of the float32 scale (amax / 127) in hex.
//! Names may hold spaces, colons, slashes and dots: a line splits on its *last* colon.
//!
//! What is accepted as TensorRT accepts it (and noted): hex values shorter than 8 digits
//! (`0`), CRLF line endings, blank lines, and scales of 0, Inf or NaN. What is an error, with
//! the line number: an empty or binary file, a missing or garbled header, a line without a
//! colon, a value that is not hex or longer than 8 digits, and a tensor named twice.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A TensorRT version, as a cache header encodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TrtVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl TrtVersion {
    /// Decodes a header's version code: `8601` → 8.6.1, `101401` → 10.14.1.
    pub fn from_code(code: u32) -> TrtVersion {
        if code >= 10_000 {
            TrtVersion {
                major: code / 10_000,
                minor: code / 100 % 100,
                patch: code % 100,
            }
        } else {
            TrtVersion {
                major: code / 1000,
                minor: code / 100 % 10,
                patch: code % 100,
            }
        }
    }

    /// The header's version code for this version.
    pub fn code(self) -> u32 {
        if self.major >= 10 {
            self.major * 10_000 + self.minor * 100 + self.patch
        } else {
            self.major * 1000 + self.minor * 100 + self.patch
        }
    }
}

impl fmt::Display for TrtVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl std::str::FromStr for TrtVersion {
    type Err = String;
    /// Parses `10.14.1` (or `10.14`, patch 0).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("TensorRT version {s:?} is not of the form MAJOR.MINOR[.PATCH], e.g. 10.14.1")
        };
        let parts: Vec<u32> = s
            .trim()
            .split('.')
            .map(|p| p.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        match parts.as_slice() {
            [major, minor] => Ok(TrtVersion {
                major: *major,
                minor: *minor,
                patch: 0,
            }),
            [major, minor, patch] => Ok(TrtVersion {
                major: *major,
                minor: *minor,
                patch: *patch,
            }),
            _ => Err(bad()),
        }
    }
}

/// The calibrator that wrote a cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Calibrator {
    /// `EntropyCalibration` (IInt8EntropyCalibrator).
    EntropyCalibration,
    /// `EntropyCalibration2` (IInt8EntropyCalibrator2, the usual one).
    EntropyCalibration2,
    /// `MinMaxCalibration` (IInt8MinMaxCalibrator).
    MinMaxCalibration,
    /// `LegacyCalibration` (IInt8LegacyCalibrator, percentile).
    LegacyCalibration,
    /// A name this calibench does not know.
    Other(String),
}

impl Calibrator {
    /// The name as written in the header.
    pub fn as_str(&self) -> &str {
        match self {
            Calibrator::EntropyCalibration => "EntropyCalibration",
            Calibrator::EntropyCalibration2 => "EntropyCalibration2",
            Calibrator::MinMaxCalibration => "MinMaxCalibration",
            Calibrator::LegacyCalibration => "LegacyCalibration",
            Calibrator::Other(s) => s,
        }
    }

    /// A known calibrator if the name is one, else `Other`.
    pub fn normalized(self) -> Calibrator {
        match self {
            Calibrator::Other(name) => Calibrator::from_name(&name),
            known => known,
        }
    }

    /// The calibrator of a header name.
    pub fn from_name(s: &str) -> Calibrator {
        match s {
            "EntropyCalibration" => Calibrator::EntropyCalibration,
            "EntropyCalibration2" => Calibrator::EntropyCalibration2,
            "MinMaxCalibration" => Calibrator::MinMaxCalibration,
            "LegacyCalibration" => Calibrator::LegacyCalibration,
            other => Calibrator::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Calibrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cache's first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The version code as written (`8601`, `101401`).
    pub version_code: u32,
    /// The calibrator.
    pub calibrator: Calibrator,
}

impl Header {
    /// The decoded TensorRT version.
    pub fn version(&self) -> TrtVersion {
        TrtVersion::from_code(self.version_code)
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TRT-{}-{}", self.version_code, self.calibrator)
    }
}

/// One tensor's scale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Tensor name.
    pub name: String,
    /// IEEE-754 bits of the float32 scale.
    pub bits: u32,
}

impl Entry {
    /// An entry from a scale.
    pub fn from_scale(name: impl Into<String>, scale: f32) -> Entry {
        Entry {
            name: name.into(),
            bits: scale.to_bits(),
        }
    }

    /// The scale (amax / 127).
    pub fn scale(&self) -> f32 {
        f32::from_bits(self.bits)
    }

    /// The dynamic range the scale stands for: scale × 127.
    pub fn amax(&self) -> f32 {
        self.scale() * 127.0
    }
}

/// A TensorRT calibration cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalibrationCache {
    /// First line.
    pub header: Header,
    /// Tensors in file order.
    pub entries: Vec<Entry>,
    /// Things TensorRT accepts but that are worth knowing (CRLF endings, short hex values).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Why a file is not a readable TensorRT calibration cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The file is empty.
    #[error("the file is empty\nfix: a TensorRT calibration cache starts with a line like TRT-101401-EntropyCalibration2; regenerate it")]
    Empty,
    /// The file holds NUL bytes or is not UTF-8.
    #[error("this is a binary file (at byte {offset}), not a TensorRT calibration cache (which is text)\nfix: pass the calibration cache, not the engine or the model")]
    Binary { offset: usize },
    /// The first line is not `TRT-<version>-<calibrator>`.
    #[error("line 1: {found:?} is not a calibration cache header (expected e.g. TRT-101401-EntropyCalibration2)\nfix: {fix}")]
    BadHeader { found: String, fix: String },
    /// A line is not `name: hex`.
    #[error("line {line}: {message}\nfix: each line after the header must be `tensor_name: XXXXXXXX` (8 hex digits); the file may be truncated or edited")]
    BadLine { line: usize, message: String },
    /// A tensor appears twice.
    #[error("line {line}: tensor {name:?} appears again (first on line {first})\nfix: a cache has one scale per tensor; the file was concatenated or edited")]
    Duplicate {
        line: usize,
        name: String,
        first: usize,
    },
}

/// A cache error with the file it came from.
#[derive(Debug, thiserror::Error)]
pub enum CacheFileError {
    /// The file could not be read.
    #[error("cannot read calibration cache {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid cache.
    #[error("{path}: {error}")]
    Format { path: String, error: CacheError },
}

impl CalibrationCache {
    /// Reads a cache file.
    pub fn read(path: &Path) -> Result<CalibrationCache, CacheFileError> {
        let bytes = std::fs::read(path).map_err(|source| CacheFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        CalibrationCache::parse_bytes(&bytes).map_err(|error| CacheFileError::Format {
            path: path.display().to_string(),
            error,
        })
    }

    /// Parses a cache from bytes.
    pub fn parse_bytes(bytes: &[u8]) -> Result<CalibrationCache, CacheError> {
        if let Some(offset) = bytes.iter().position(|&b| b == 0) {
            return Err(CacheError::Binary { offset });
        }
        let text = std::str::from_utf8(bytes).map_err(|e| CacheError::Binary {
            offset: e.valid_up_to(),
        })?;
        CalibrationCache::parse(text)
    }

    /// Parses a cache from text.
    pub fn parse(text: &str) -> Result<CalibrationCache, CacheError> {
        let mut notes = Vec::new();
        if text.contains("\r\n") {
            notes.push("CRLF line endings (TensorRT reads them; calibench writes LF)".to_string());
        }
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)));
        let Some((_, first)) = lines.find(|(_, l)| !l.trim().is_empty()) else {
            return Err(CacheError::Empty);
        };
        let header = parse_header(first.trim())?;
        let mut entries: Vec<Entry> = Vec::new();
        let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let mut short_hex = 0usize;
        for (number, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let (name, value) = line.rsplit_once(':').ok_or_else(|| CacheError::BadLine {
                line: number,
                message: format!("{:?} has no ':'", truncate(line)),
            })?;
            let value = value.trim();
            if value.is_empty() || value.len() > 8 || !value.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(CacheError::BadLine {
                    line: number,
                    message: format!(
                        "{:?} is not a scale in hex (up to 8 hex digits)",
                        truncate(value)
                    ),
                });
            }
            if name.is_empty() {
                return Err(CacheError::BadLine {
                    line: number,
                    message: "the tensor name is empty".into(),
                });
            }
            if let Some(&first) = seen.get(name) {
                return Err(CacheError::Duplicate {
                    line: number,
                    name: name.to_string(),
                    first,
                });
            }
            seen.insert(name, number);
            if value.len() < 8 {
                short_hex += 1;
            }
            let bits = u32::from_str_radix(value, 16).expect("checked hex of at most 8 digits");
            entries.push(Entry {
                name: name.to_string(),
                bits,
            });
        }
        if short_hex > 0 {
            notes.push(format!(
                "{short_hex} value(s) written with fewer than 8 hex digits (e.g. `0`); TensorRT reads them as hex"
            ));
        }
        Ok(CalibrationCache {
            header,
            entries,
            notes,
        })
    }

    /// The cache as TensorRT writes it: header, then `name: xxxxxxxx` per tensor, LF endings.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(32 + self.entries.len() * 48);
        out.push_str(&self.header.to_string());
        out.push('\n');
        for e in &self.entries {
            out.push_str(&e.name);
            out.push_str(": ");
            out.push_str(&format!("{:08x}", e.bits));
            out.push('\n');
        }
        out
    }

    /// Writes the cache to a file (through a temporary file and a rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("cache.tmp");
        std::fs::write(&tmp, self.to_text())?;
        std::fs::rename(&tmp, path)
    }

    /// The entry of a tensor.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s.to_string()
    }
}

fn parse_header(line: &str) -> Result<Header, CacheError> {
    let bad = |fix: &str| CacheError::BadHeader {
        found: truncate(line),
        fix: fix.to_string(),
    };
    if looks_like_onnxruntime_table(line) {
        return Err(bad(
            "this looks like onnxruntime's `tensor_name dynamic_range` table; convert it with `calibench cache import`",
        ));
    }
    if line.starts_with('{') {
        return Err(bad("this looks like JSON (onnxruntime's calibration.json?); convert it with `calibench cache import`"));
    }
    let rest = line
        .strip_prefix("TRT-")
        .ok_or_else(|| bad("the first line must start with TRT-; the file is not a TensorRT cache or its header was lost"))?;
    let (code, calibrator) = rest
        .split_once('-')
        .ok_or_else(|| bad("the header must be TRT-<version code>-<calibrator>"))?;
    let version_code: u32 = code
        .parse()
        .map_err(|_| bad("the version code must be digits, e.g. 8601 or 101401"))?;
    if calibrator.is_empty()
        || !calibrator
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(bad(
            "the calibrator name must be a word such as EntropyCalibration2",
        ));
    }
    Ok(Header {
        version_code,
        calibrator: Calibrator::from_name(calibrator),
    })
}

/// Whether a line looks like onnxruntime's `name value` table (decimal, no colon).
pub fn looks_like_onnxruntime_table(line: &str) -> bool {
    let mut parts = line.split_whitespace();
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(_), Some(v), None) if !line.contains(':') && v.parse::<f64>().is_ok()
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/trt-caches")
            .join(name)
    }

    #[test]
    fn version_codes() {
        for (code, v) in [
            (8601, "8.6.1"),
            (8501, "8.5.1"),
            (8400, "8.4.0"),
            (100300, "10.3.0"),
            (101401, "10.14.1"),
            (101303, "10.13.3"),
            (7103, "7.1.3"),
        ] {
            assert_eq!(TrtVersion::from_code(code).to_string(), v);
            assert_eq!(TrtVersion::from_code(code).code(), code);
            assert_eq!(v.parse::<TrtVersion>().unwrap().code(), code);
        }
        assert_eq!(
            "10.14".parse::<TrtVersion>().unwrap().to_string(),
            "10.14.0"
        );
        assert!("ten".parse::<TrtVersion>().is_err());
    }

    #[test]
    fn reads_every_real_trt_cache() {
        let Some(_corpus) = crate::corpus::trt_caches() else {
            return; // said why on stderr; CI requires the corpus
        };
        let expect = [
            (
                "Data-Prodigy__cpp_chicken_tracking__calibration.cache",
                100300,
                "EntropyCalibration2",
                343,
            ),
            (
                "Hanner123__radioml-transformer__calibration.cache",
                101000,
                "EntropyCalibration2",
                140,
            ),
            (
                "zxm97__Pytorch_Retina_License_Plate_trt__calibration.cache",
                8501,
                "EntropyCalibration2",
                126,
            ),
            (
                "nt4sth__Torch-TensorRT-VGG16__calibration.cache",
                8400,
                "MinMaxCalibration",
                67,
            ),
            (
                "isaid22__TensorRT-Optimization-MPNet__calibration.cache",
                101303,
                "MinMaxCalibration",
                842,
            ),
            (
                "dnth__DEIMKit__calibration.cache",
                100900,
                "EntropyCalibration2",
                1907,
            ),
        ];
        for (file, code, calibrator, n) in expect {
            let c = CalibrationCache::read(&fixture(file)).unwrap();
            assert_eq!(c.header.version_code, code, "{file}");
            assert_eq!(c.header.calibrator.as_str(), calibrator, "{file}");
            assert_eq!(c.entries.len(), n, "{file}");
        }
    }

    #[test]
    fn real_values_decode() {
        let Some(_corpus) = crate::corpus::trt_caches() else {
            return; // said why on stderr; CI requires the corpus
        };
        let c = CalibrationCache::read(&fixture(
            "isaid22__TensorRT-Optimization-MPNet__calibration.cache",
        ))
        .unwrap();
        assert_eq!(
            c.get("/Sub_output_0").unwrap().bits,
            0,
            "bare 0 is a zero scale"
        );
        assert!(c
            .get("/encoder/Log_output_0")
            .unwrap()
            .scale()
            .is_infinite());
        assert!(c
            .notes
            .iter()
            .any(|n| n.contains("fewer than 8 hex digits")));
        let yolo = CalibrationCache::read(&fixture(
            "Data-Prodigy__cpp_chicken_tracking__calibration.cache",
        ))
        .unwrap();
        // 3c010a14 = 0.0078747 ≈ 1/127: the sigmoid output's range is [0, 1].
        let s = yolo.get("/model.0/act/Sigmoid_output_0").unwrap().amax();
        assert!((s - 1.0).abs() < 1e-3, "{s}");
        let vgg =
            CalibrationCache::read(&fixture("nt4sth__Torch-TensorRT-VGG16__calibration.cache"))
                .unwrap();
        assert!(vgg
            .entries
            .iter()
            .any(|e| e.name.starts_with("(Unnamed Layer*")));
    }

    #[test]
    fn write_then_read_is_exact_for_real_caches() {
        let Some(_corpus) = crate::corpus::trt_caches() else {
            return; // said why on stderr; CI requires the corpus
        };
        for file in [
            "Data-Prodigy__cpp_chicken_tracking__calibration.cache",
            "isaid22__TensorRT-Optimization-MPNet__calibration.cache",
            "dnth__DEIMKit__calibration.cache",
            "nt4sth__Torch-TensorRT-VGG16__calibration.cache",
        ] {
            let c = CalibrationCache::read(&fixture(file)).unwrap();
            let back = CalibrationCache::parse(&c.to_text()).unwrap();
            assert_eq!(back.header, c.header);
            assert_eq!(back.entries, c.entries, "{file}");
        }
        // A file TensorRT wrote with 8 hex digits everywhere is reproduced byte for byte.
        let original = std::fs::read_to_string(fixture(
            "Data-Prodigy__cpp_chicken_tracking__calibration.cache",
        ))
        .unwrap();
        assert_eq!(
            CalibrationCache::parse(&original).unwrap().to_text(),
            original
        );
    }

    #[test]
    fn names_split_on_the_last_colon() {
        let c = CalibrationCache::parse(
            "TRT-8601-EntropyCalibration2\nonnx::MatMul_1472_output: 3c010204\na b/c.d: 0\n",
        )
        .unwrap();
        assert_eq!(c.entries[0].name, "onnx::MatMul_1472_output");
        assert_eq!(c.entries[1].name, "a b/c.d");
    }

    #[test]
    fn onnxruntime_table_is_recognized() {
        let Some(_corpus) = crate::corpus::trt_caches() else {
            return; // said why on stderr; CI requires the corpus
        };
        let err = CalibrationCache::read(&fixture("shiyongming__onnxrt_trt_ep__calibration.cache"))
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("onnxruntime") && msg.contains("cache import"),
            "{msg}"
        );
        assert!(msg.contains("shiyongming"), "names the file: {msg}");
    }

    #[test]
    fn bad_input_errors_name_the_line() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"\n\n", "empty"),
            (b"TRT-8601-EntropyCalibration2\ninput: 3c01020\0", "binary"),
            (b"\xff\xfe\x00", "binary"),
            (b"input: 3c010204\n", "line 1"),
            (b"TRT-abc-EntropyCalibration2\n", "version code"),
            (b"TRT-8601\n", "TRT-<version code>-<calibrator>"),
            (b"TRT-8601-EntropyCalibration2\ninput: xyz\n", "line 2"),
            (
                b"TRT-8601-EntropyCalibration2\ninput: 3c0102040\n",
                "line 2",
            ),
            (
                b"TRT-8601-EntropyCalibration2\na: 1\nb: 2\na: 3\n",
                "line 4",
            ),
            (
                b"TRT-8601-EntropyCalibration2\na: 1\ngarbage at the end\n",
                "line 3",
            ),
            (
                b"TRT-8601-EntropyCalibration2\n: 3c010204\n",
                "name is empty",
            ),
        ];
        for (bytes, expect) in cases {
            let err = CalibrationCache::parse_bytes(bytes)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(expect),
                "{:?}: {err}",
                String::from_utf8_lossy(bytes)
            );
            assert!(err.contains("fix:"), "{err}");
        }
    }

    #[test]
    fn crlf_and_blank_lines_are_accepted() {
        let c = CalibrationCache::parse(
            "TRT-8601-EntropyCalibration2\r\ninput: 3c010204\r\n\r\nout: 3d000000\r\n",
        )
        .unwrap();
        assert_eq!(c.entries.len(), 2);
        assert_eq!(c.entries[0].bits, 0x3c010204);
        assert!(c.notes[0].contains("CRLF"));
    }

    #[test]
    fn unknown_calibrator_is_kept() {
        let c = CalibrationCache::parse("TRT-8601-PercentileCalibration\nx: 1\n").unwrap();
        assert_eq!(
            c.header.calibrator,
            Calibrator::Other("PercentileCalibration".into())
        );
        assert_eq!(c.to_text(), "TRT-8601-PercentileCalibration\nx: 00000001\n");
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: the parser never panics on any input, and writing then reading any
    //! cache is exact. `PROPTEST_CASES=1000000 cargo test --release cache::format::fuzz` runs
    //! a million cases.
    use super::*;
    use proptest::prelude::*;

    fn line_soup() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"TRT-8601-EntropyCalibration2\n".to_vec()),
            Just(b"TRT-101401-MinMaxCalibration\r\n".to_vec()),
            Just(b": ".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            "[a-z/.:_ ]{0,12}".prop_map(String::into_bytes),
            "[0-9a-fA-F]{0,10}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..6),
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in line_soup()) {
            let _ = CalibrationCache::parse_bytes(&bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = CalibrationCache::parse_bytes(&bytes);
        }

        #[test]
        fn write_then_read_is_exact(
            code in prop_oneof![1000u32..9999, 100000u32..129999],
            calibrator in "(EntropyCalibration2|MinMaxCalibration|LegacyCalibration|EntropyCalibration)",
            entries in proptest::collection::btree_map("[ -~]{1,24}", any::<u32>(), 0..40),
        ) {
            let cache = CalibrationCache {
                header: Header { version_code: code, calibrator: Calibrator::from_name(&calibrator) },
                entries: entries.into_iter().map(|(name, bits)| Entry { name, bits }).collect(),
                notes: vec![],
            };
            let back = CalibrationCache::parse(&cache.to_text()).unwrap();
            prop_assert_eq!(back, cache);
        }
    }
}

#[cfg(test)]
mod large {
    use super::*;

    /// A 100 MB cache parses (TensorRT reads caches of any size). Slow in debug builds:
    /// `cargo test --release -- --ignored cache::format::large`.
    #[test]
    #[ignore]
    fn hundred_megabyte_cache_parses() {
        let mut text = String::from("TRT-101401-EntropyCalibration2\n");
        let mut n = 0;
        while text.len() < 100 * 1024 * 1024 {
            text.push_str(&format!(
                "/model/encoder/layers.{}/attention/MatMul_{}_output_0: 3c010204\n",
                n / 1000,
                n % 1000
            ));
            n += 1;
        }
        let start = std::time::Instant::now();
        let cache = CalibrationCache::parse(&text).unwrap();
        eprintln!(
            "parsed {} MB, {} tensors in {:.2} s",
            text.len() / (1024 * 1024),
            cache.entries.len(),
            start.elapsed().as_secs_f64()
        );
        assert_eq!(cache.entries.len(), n);
    }
}
