//! Other tools' calibration tables, recognized and converted to TensorRT's format.
//!
//! onnxruntime's quantization tool (`write_calibration_table`) writes
//! - `calibration.cache`: `tensor_name value` lines, decimal, no header. The value is
//!   max(highest, lowest), not max(|highest|, |lowest|): a tensor ranging over [-5.53, 2.24] is
//!   written as 2.24, so a negative-dominated range is understated. Prefer the JSON.
//! - `calibration.json`: `{"CLS": "TensorsData", "data": {name: {"lowest": l, "highest": h}}}`
//!   (older versions: `{name: [l, h]}`), which keeps both ends. Newer versions wrap each value
//!   as a numpy array, `{"CLS": "numpy.array", "dtype": "float32", "data": [l]}` (or a scalar
//!   `data`), add `hist`/`hist_edges` for entropy and percentile, and name the method in
//!   `calibration_method` / `calibrate_method`; all of these are read.
//! - `calibration.flatbuffers`: a binary table, recognized and refused with the fix (export the
//!   JSON or text table instead).

use std::path::Path;

use serde_json::Value;

use super::format::{
    looks_like_onnxruntime_table, CalibrationCache, Calibrator, Entry, Header, TrtVersion,
};

/// What a calibration file turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Detected {
    /// A TensorRT calibration cache.
    TensorRt(CalibrationCache),
    /// onnxruntime's `name value` table: tensor names and the value it wrote.
    OnnxruntimeTable(Vec<(String, f64)>),
    /// onnxruntime's calibration JSON: tensor names with (lowest, highest).
    OnnxruntimeJson(Vec<(String, f64, f64)>),
}

impl Detected {
    /// A one-line description for `cache inspect`.
    pub fn describe(&self) -> String {
        match self {
            Detected::TensorRt(c) => format!("TensorRT calibration cache ({}, TensorRT {})", c.header.calibrator, c.header.version()),
            Detected::OnnxruntimeTable(t) => format!(
                "onnxruntime calibration table (`name value` lines, {} tensors), not TensorRT's format; \
                 its values are max(highest, lowest), which understates negative ranges. Convert with `calibench cache import`",
                t.len()
            ),
            Detected::OnnxruntimeJson(t) => format!(
                "onnxruntime calibration JSON ({} tensors with lowest/highest), not TensorRT's format. Convert with `calibench cache import`",
                t.len()
            ),
        }
    }

    /// The dynamic range (amax) per tensor, in file order.
    pub fn ranges(&self) -> Vec<(String, f64)> {
        match self {
            Detected::TensorRt(c) => c
                .entries
                .iter()
                .map(|e| (e.name.clone(), e.amax() as f64))
                .collect(),
            Detected::OnnxruntimeTable(t) => t.clone(),
            Detected::OnnxruntimeJson(t) => t
                .iter()
                .map(|(n, lo, hi)| (n.clone(), lo.abs().max(hi.abs())))
                .collect(),
        }
    }
}

/// Why a file is none of the known formats.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Unreadable.
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Not any known format.
    #[error("{path}: {message}")]
    Format { path: String, message: String },
}

/// Reads a calibration file of any known format.
pub fn read_any(path: &Path) -> Result<Detected, ImportError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ImportError::Read {
        path: shown.clone(),
        source,
    })?;
    detect(&bytes).map_err(|message| ImportError::Format {
        path: shown,
        message,
    })
}

/// Recognizes a calibration file from its bytes.
pub fn detect(bytes: &[u8]) -> Result<Detected, String> {
    let trt_error = match CalibrationCache::parse_bytes(bytes) {
        Ok(c) => return Ok(Detected::TensorRt(c)),
        Err(e) => e,
    };
    if looks_like_flatbuffers_table(bytes) {
        return Err("this is onnxruntime's flatbuffers calibration table (calibration.flatbuffers), a binary format calibench does not read\nfix: export JSON or text instead (onnxruntime's write_calibration_table writes calibration.json and calibration.cache beside it) and import that".into());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| trt_error.to_string())?;
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if first.trim_start().starts_with('{') {
        return parse_json(text).map(Detected::OnnxruntimeJson);
    }
    if looks_like_onnxruntime_table(first) {
        return parse_table(text).map(Detected::OnnxruntimeTable);
    }
    Err(trt_error.to_string())
}

/// Whether bytes look like onnxruntime's flatbuffers table: binary (NUL bytes) holding
/// NUL-terminated strings of which some are decimal numbers (its values) and some names.
fn looks_like_flatbuffers_table(bytes: &[u8]) -> bool {
    if !bytes.contains(&0) || bytes.len() < 16 {
        return false;
    }
    let strings: Vec<&str> = bytes
        .split(|&b| b == 0)
        .filter_map(|s| {
            // Each flatbuffers string is preceded by its 4-byte length; keep the printable tail.
            let start = s
                .iter()
                .rposition(|b| !b.is_ascii_graphic())
                .map_or(0, |i| i + 1);
            std::str::from_utf8(&s[start..]).ok()
        })
        .filter(|s| s.len() >= 2)
        .collect();
    // Its values are decimal strings ("3.1415…"), one per name: demand a dot and a balance, so
    // that digit runs in an ONNX model's or engine's bytes do not count.
    let numbers = strings
        .iter()
        .filter(|s| s.contains('.') && s.len() >= 3 && s.parse::<f64>().is_ok())
        .count();
    let names = strings.len() - numbers;
    numbers >= 2 && names >= numbers && names <= 2 * numbers + 2
}

fn parse_table(text: &str) -> Result<Vec<(String, f64)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (name, value) = line
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| format!("line {}: {line:?} is not `tensor_name value`", i + 1))?;
        let value: f64 = value
            .parse()
            .map_err(|_| format!("line {}: {value:?} is not a decimal number", i + 1))?;
        out.push((name.trim().to_string(), value));
    }
    Ok(out)
}

fn parse_json(text: &str) -> Result<Vec<(String, f64, f64)>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let data = v
        .get("data")
        .filter(|_| v.get("CLS").is_some())
        .unwrap_or(&v);
    let map = data
        .as_object()
        .ok_or_else(|| "JSON is not an object of tensor ranges".to_string())?;
    // A number, or a numpy array of one ({"CLS": "numpy.array", "data": [x] or x}).
    let num = |v: &Value| match v {
        Value::Object(o) => match o.get("data") {
            Some(Value::Array(a)) if a.len() == 1 => a[0].as_f64(),
            Some(d) => d.as_f64(),
            None => None,
        },
        Value::Array(a) if a.len() == 1 => a[0].as_f64(),
        _ => v.as_f64(),
    };
    let mut out = Vec::new();
    for (name, range) in map {
        let pair = match range {
            Value::Object(o) => o
                .get("lowest")
                .and_then(num)
                .zip(o.get("highest").and_then(num)),
            Value::Array(a) if a.len() == 2 => num(&a[0]).zip(num(&a[1])),
            _ => None,
        };
        let (lo, hi) = pair.ok_or_else(|| {
            format!("tensor {name:?}: expected {{\"lowest\": x, \"highest\": y}} or [x, y]")
        })?;
        out.push((name.clone(), lo, hi));
    }
    Ok(out)
}

/// Builds a TensorRT cache from dynamic ranges: scale = amax / 127 as float32.
pub fn to_trt(
    ranges: &[(String, f64)],
    version: TrtVersion,
    calibrator: Calibrator,
) -> CalibrationCache {
    CalibrationCache {
        header: Header {
            version_code: version.code(),
            calibrator,
        },
        entries: ranges
            .iter()
            .map(|(n, amax)| Entry::from_scale(n.clone(), *amax as f32 / 127.0))
            .collect(),
        notes: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::format::tests::fixture;

    #[test]
    fn real_onnxruntime_table_is_detected_and_converted() {
        let Some(_corpus) = crate::corpus::trt_caches() else {
            return; // said why on stderr; CI requires the corpus
        };
        let d = read_any(&fixture("shiyongming__onnxrt_trt_ep__calibration.cache")).unwrap();
        let Detected::OnnxruntimeTable(t) = &d else {
            panic!("{d:?}")
        };
        assert_eq!(t.len(), 175);
        assert_eq!(t[0], ("data".to_string(), 2.640000104904175));
        assert!(d.describe().contains("understates"));
        let c = to_trt(
            &d.ranges(),
            "10.14.1".parse().unwrap(),
            Calibrator::EntropyCalibration2,
        );
        assert_eq!(c.header.to_string(), "TRT-101401-EntropyCalibration2");
        assert!((c.entries[0].amax() - 2.64).abs() < 1e-5);
        let back = CalibrationCache::parse(&c.to_text()).unwrap();
        assert_eq!(back.entries, c.entries);
    }

    #[test]
    fn onnxruntime_json_keeps_both_ends() {
        // As written by onnxruntime 1.32's write_calibration_table.
        let json = r#"{"CLS": "TensorsData", "data": {"a/b:0": {"lowest": -5.53000020980835, "highest": 2.240000009536743, "CLS": "TensorData"}, "x": {"lowest": 0.0, "highest": 3.5, "CLS": "TensorData"}}, "calibration_method": {"CLS": "CalibrationMethod", "value": "CalibrationMethod.MinMax"}}"#;
        let d = detect(json.as_bytes()).unwrap();
        let r = d.ranges();
        assert_eq!(r.len(), 2);
        assert!((r[0].1 - 5.53).abs() < 1e-6, "the negative end wins: {r:?}");
        let old = detect(br#"{"t": [-1.0, 0.5]}"#).unwrap();
        assert_eq!(old.ranges(), vec![("t".to_string(), 1.0)]);
    }

    #[test]
    fn trt_cache_passes_through_and_garbage_keeps_trt_error() {
        let Some(_corpus) = crate::corpus::trt_caches() else {
            return; // said why on stderr; CI requires the corpus
        };
        let d = read_any(&fixture("nt4sth__Torch-TensorRT-VGG16__calibration.cache")).unwrap();
        assert!(matches!(d, Detected::TensorRt(_)));
        assert!(d.describe().contains("8.4.0"));
        let e = detect(b"hello world again\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        assert!(detect(b"{\"t\": 3}").unwrap_err().contains("lowest"));
    }

    #[test]
    fn numpy_wrapped_json_values_are_read() {
        let json = r#"{"CLS": "TensorsData", "calibration_method": "MinMax", "data": {
            "conv1_out": {"CLS": "TensorData",
                "lowest": {"CLS": "numpy.array", "dtype": "float32", "data": [-5.53]},
                "highest": {"CLS": "numpy.array", "dtype": "float32", "data": [2.24]},
                "hist": {"CLS": "numpy.array", "dtype": "int64", "data": [1, 2, 3]}},
            "relu1_out": {"lowest": {"CLS": "numpy.array", "dtype": "float32", "data": 0.0},
                          "highest": {"CLS": "numpy.array", "dtype": "float32", "data": 4.5}}}}"#;
        let Detected::OnnxruntimeJson(t) = detect(json.as_bytes()).unwrap() else {
            panic!("not read as onnxruntime JSON");
        };
        let names: Vec<&str> = t.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["conv1_out", "relu1_out"]);
        assert!((t[0].1 + 5.53).abs() < 1e-6 && (t[0].2 - 2.24).abs() < 1e-6);
        assert_eq!((t[1].1, t[1].2), (0.0, 4.5));
    }

    #[test]
    fn the_flatbuffers_table_is_named_and_refused_and_a_model_is_not_taken_for_it() {
        // The layout of onnxruntime's TrtTable: length-prefixed, NUL-terminated strings.
        let mut fb = vec![12u8, 0, 0, 0, 8, 0, 12, 0, 4, 0, 8, 0];
        for (k, v) in [
            ("conv1_out", "5.362141"),
            ("relu1_out", "5.362141"),
            ("logits", "37.05397"),
        ] {
            for s in [k, v] {
                fb.extend((s.len() as u32).to_le_bytes());
                fb.extend(s.as_bytes());
                fb.push(0);
            }
        }
        let err = detect(&fb).unwrap_err();
        assert!(
            err.contains("onnxruntime's flatbuffers calibration table"),
            "{err}"
        );
        assert!(err.contains("export JSON or text"), "{err}");
        let model = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/digits/digits_cnn.onnx"),
        )
        .unwrap();
        assert!(!detect(&model).unwrap_err().contains("flatbuffers"));
    }
}
