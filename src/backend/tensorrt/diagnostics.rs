//! TensorRT's diagnostics: every log line parsed into a severity and a message (whichever tool
//! printed it), and the lines that matter for calibration caches classified into diagnostics
//! with a fix. Some conditions TensorRT does not log at all (a cache given without int8 is
//! silently ignored; a cache from another TensorRT version is silently recalibrated), so
//! calibench checks those itself before building ([`build_config_diagnostics`]).

use serde::{Deserialize, Serialize};

use crate::matrix::Precision;

/// A log line's severity, as TensorRT's `ILogger::Severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// kINTERNAL_ERROR.
    InternalError,
    /// kERROR.
    Error,
    /// kWARNING.
    Warning,
    /// kINFO.
    Info,
    /// kVERBOSE.
    Verbose,
}

/// A parsed log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Severity (from the line's prefix; `Info` when it has none).
    pub severity: Severity,
    /// The message without timestamps and tags.
    pub message: String,
}

/// What a diagnostic is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DiagnosticKind {
    /// A cache was given, but int8 is not enabled: TensorRT ignores it without a word.
    CacheIgnoredWithoutInt8,
    /// The model asks for fp16 layers but the builder has no fp16 flag.
    Fp16NotConfigured,
    /// A tensor has no scale in the cache.
    MissingScale {
        /// The tensor.
        tensor: String,
    },
    /// TensorRT set default quantization parameters for lack of data.
    DefaultQuantizationParams,
    /// int8 without a calibrator or ranges: TensorRT uses placeholder ranges.
    NoCalibrationData,
    /// Calibration produced no scales.
    CalibrationFailed,
    /// A TensorRT error calibench has no fix of its own for.
    TensorrtError,
    /// A TensorRT warning calibench has no fix of its own for.
    TensorrtWarning,
    /// Implicit quantization (calibrators, dynamic ranges, weakly typed networks) is deprecated.
    DeprecatedImplicitQuantization,
    /// The ONNX parser has no importer for an operator.
    UnsupportedOperator {
        /// The operator.
        op: String,
    },
}

/// A classified line with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// What it is.
    #[serde(flatten)]
    pub kind: DiagnosticKind,
    /// Severity of the line (or of calibench's own check).
    pub severity: Severity,
    /// The message it came from.
    pub message: String,
    /// What to do.
    pub fix: String,
}

/// Strips the prefixes TensorRT's loggers put before a message and reads the severity.
pub fn parse_line(line: &str) -> LogLine {
    let mut rest = line.trim();
    let mut severity = None;
    // onnxruntime's TensorRT EP wraps TensorRT's own line: keep the inner one.
    if let Some(i) = rest.find("] [") {
        if rest.contains("tensorrt_execution_provider") {
            rest = &rest[i + 2..];
        }
    }
    while let Some((stripped, end)) = rest
        .strip_prefix('[')
        .and_then(|s| s.find(']').map(|e| (s, e)))
    {
        let tag = &stripped[..end];
        let tag_severity = match tag {
            "W" | "WARNING" => Some(Severity::Warning),
            "E" | "ERROR" => Some(Severity::Error),
            "F" | "INTERNAL_ERROR" => Some(Severity::InternalError),
            "I" | "INFO" => Some(Severity::Info),
            "V" | "VERBOSE" => Some(Severity::Verbose),
            _ => tag.rsplit(' ').next().and_then(|last| match last {
                "WARNING" => Some(Severity::Warning),
                "ERROR" => Some(Severity::Error),
                "INTERNAL_ERROR" => Some(Severity::InternalError),
                "INFO" => Some(Severity::Info),
                "VERBOSE" => Some(Severity::Verbose),
                _ => None,
            }),
        };
        let is_timestamp_or_tag = tag_severity.is_some()
            || tag == "TRT"
            || tag.chars().next().is_some_and(|c| c.is_ascii_digit())
                && (tag.contains('/') || tag.contains('-') || tag.contains(':'));
        if !is_timestamp_or_tag {
            break;
        }
        severity = severity.or(tag_severity);
        rest = stripped[end + 1..].trim_start();
    }
    if let Some(r) = rest.strip_prefix("[TensorRT] ") {
        rest = r;
    }
    for (word, s) in [
        ("WARNING: ", Severity::Warning),
        ("ERROR: ", Severity::Error),
        ("INFO: ", Severity::Info),
    ] {
        if let Some(r) = rest.strip_prefix(word) {
            severity = severity.or(Some(s));
            rest = r;
        }
    }
    LogLine {
        severity: severity.unwrap_or(Severity::Info),
        message: rest.to_string(),
    }
}

fn diag(kind: DiagnosticKind, line: &LogLine, fix: impl Into<String>) -> Diagnostic {
    Diagnostic {
        kind,
        severity: line.severity,
        message: line.message.clone(),
        fix: fix.into(),
    }
}

/// Classifies one parsed line; `None` for lines calibench has nothing to say about.
pub fn classify(line: &LogLine) -> Option<Diagnostic> {
    let m = line.message.as_str();
    if let Some(rest) = m.strip_prefix("Missing scale and zero-point for tensor ") {
        let tensor = rest
            .split(", expect fall back")
            .next()
            .unwrap_or(rest)
            .to_string();
        return Some(diag(
            DiagnosticKind::MissingScale { tensor },
            line,
            "the cache does not cover this tensor (wrong cache, re-exported model with new tensor names, or a corrupt cache): its layers fall back from int8; run `calibench cache check CACHE --model MODEL` and check accuracy",
        ));
    }
    if m.contains("Setting a default quantization params because quantization data is missing") {
        return Some(diag(
            DiagnosticKind::DefaultQuantizationParams,
            line,
            "some tensors have no quantization data and got a meaningless default range: accuracy must be checked; run `calibench cache check`",
        ));
    }
    if m.contains("fp16 precision has been set for a layer or layer output, but fp16 is not configured in the builder") {
        return Some(diag(
            DiagnosticKind::Fp16NotConfigured,
            line,
            "the model asks for fp16 layers: build with fp16 enabled too (precision `best`, trtexec --best)",
        ));
    }
    if m.contains("Calibrator is not being used. Users must provide dynamic range") {
        return Some(diag(
            DiagnosticKind::NoCalibrationData,
            line,
            "int8 was enabled without a calibrator or ranges: TensorRT uses placeholder ranges, so latency is real but accuracy is meaningless; give a cache (trtexec --int8 --calib=FILE)",
        ));
    }
    if m.contains("Calibration failure occurred with no scaling factors detected") {
        return Some(diag(
            DiagnosticKind::CalibrationFailed,
            line,
            "calibration produced no scales: check the calibration data reaches the network (batch size, input names) or give an existing cache",
        ));
    }
    if let Some(i) = m.find("No importer registered for op: ") {
        let op = m[i + "No importer registered for op: ".len()..]
            .split(|c: char| c == '.' || c.is_whitespace())
            .next()
            .unwrap_or("")
            .to_string();
        return Some(diag(
            DiagnosticKind::UnsupportedOperator { op },
            line,
            "TensorRT's ONNX parser cannot import this operator: load a plugin that implements it, or export the model without it",
        ));
    }
    let lower = m.to_ascii_lowercase();
    if lower.contains("deprecated")
        && (lower.contains("calibrator")
            || lower.contains("implicit quantization")
            || lower.contains("weakly typed")
            || lower.contains("setdynamicrange")
            || lower.contains("dynamic range"))
    {
        return Some(diag(
            DiagnosticKind::DeprecatedImplicitQuantization,
            line,
            "implicit quantization (calibrators, dynamic ranges, weakly typed networks) is deprecated since TensorRT 10.1 and removed in 11: convert the cache with `calibench cache to-qdq` and build a strongly typed network",
        ));
    }
    None
}

/// Classifies a whole log.
pub fn classify_log(text: &str) -> Vec<Diagnostic> {
    text.lines()
        .map(parse_line)
        .filter_map(|l| classify(&l))
        .collect()
}

/// What calibench knows before building that TensorRT would not say: a cache given without
/// int8 is ignored. (A cache whose header the running TensorRT would not use is refused before
/// the build: [`super::calibrator::calibrator_for`]; on TensorRT 11 the cache never reaches
/// TensorRT, it becomes the model's Q/DQ nodes.)
pub fn build_config_diagnostics(precision: Precision, cache_given: bool) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if cache_given && !precision.needs_cache() {
        out.push(Diagnostic {
            kind: DiagnosticKind::CacheIgnoredWithoutInt8,
            severity: Severity::Warning,
            message: format!("a calibration cache was given for a {precision} build"),
            fix: "TensorRT ignores a cache unless int8 is enabled (trtexec --calib without --int8): use precision int8 or best".into(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_lines() -> Vec<String> {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/trt-logs/lines.log");
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(String::from)
            .collect()
    }

    #[test]
    fn prefixes_of_every_tool_are_stripped() {
        let cases = [
            (
                "[08/07/2024-07:04:41] [TRT] [W] Missing scale",
                Severity::Warning,
                "Missing scale",
            ),
            (
                "[05/03/2023-16:06:39] [I] [TRT] No importer",
                Severity::Info,
                "No importer",
            ),
            ("[W] Missing scale", Severity::Warning, "Missing scale"),
            (
                "[2022-11-08 06:01:58 WARNING] Missing",
                Severity::Warning,
                "Missing",
            ),
            (
                "[03/02/2022-08:37:37] [TRT] [E] 4: [network.cpp::validate::2787] Error Code 4",
                Severity::Error,
                "4: [network.cpp::validate::2787] Error Code 4",
            ),
            (
                "[TensorRT] ERROR: Network must have at least one output",
                Severity::Error,
                "Network must have at least one output",
            ),
            ("plain text", Severity::Info, "plain text"),
        ];
        for (line, sev, msg) in cases {
            let l = parse_line(line);
            assert_eq!((l.severity, l.message.as_str()), (sev, msg), "{line}");
        }
    }

    #[test]
    fn real_lines_are_classified() {
        let lines = fixture_lines();
        let d: Vec<Option<Diagnostic>> = lines.iter().map(|l| classify(&parse_line(l))).collect();
        let kinds: Vec<Option<&DiagnosticKind>> =
            d.iter().map(|d| d.as_ref().map(|d| &d.kind)).collect();
        assert_eq!(
            kinds[0],
            Some(&DiagnosticKind::MissingScale {
                tensor: "input_ids".into()
            })
        );
        assert_eq!(
            kinds[1],
            Some(&DiagnosticKind::MissingScale {
                tensor: "/global_pool/flatten/Flatten_output_0".into()
            })
        );
        assert_eq!(
            kinds[2],
            Some(&DiagnosticKind::MissingScale {
                tensor: "(Unnamed Layer* 269) [Shuffle]_output".into()
            })
        );
        assert_eq!(
            kinds[3],
            Some(&DiagnosticKind::MissingScale {
                tensor: "768".into()
            })
        );
        assert_eq!(kinds[4], Some(&DiagnosticKind::Fp16NotConfigured));
        assert_eq!(d[4].as_ref().unwrap().severity, Severity::Error);
        assert_eq!(kinds[5], Some(&DiagnosticKind::NoCalibrationData));
        assert_eq!(
            d[5].as_ref().unwrap().severity,
            Severity::Warning,
            "the inner TensorRT line's severity"
        );
        assert_eq!(
            kinds[6],
            Some(&DiagnosticKind::UnsupportedOperator {
                op: "SoftmaxCrossEntropyLoss".into()
            })
        );
        assert_eq!(
            kinds[7],
            Some(&DiagnosticKind::UnsupportedOperator { op: "Mish".into() })
        );
        assert_eq!(kinds[8], Some(&DiagnosticKind::CalibrationFailed));
        assert_eq!(kinds[9], None, "informational lines are not diagnostics");
        assert_eq!(kinds[10], None);
        assert!(d.iter().flatten().all(|d| !d.fix.is_empty()));
    }

    #[test]
    fn design_wording_and_deprecations() {
        let l = parse_line("[W] [TRT] Setting a default quantization params because quantization data is missing for tensor x");
        assert_eq!(
            classify(&l).unwrap().kind,
            DiagnosticKind::DefaultQuantizationParams
        );
        let l = parse_line("[W] [TRT] IInt8EntropyCalibrator2 is deprecated and superseded by explicit quantization");
        assert_eq!(
            classify(&l).unwrap().kind,
            DiagnosticKind::DeprecatedImplicitQuantization
        );
        assert_eq!(
            classify_log(
                "[I] hello\n[W] Missing scale and zero-point for tensor a, expect fall back\n"
            )
            .len(),
            1
        );
    }

    #[test]
    fn checks_tensorrt_does_not_log() {
        let d = build_config_diagnostics(Precision::Fp16, true);
        assert_eq!(d[0].kind, DiagnosticKind::CacheIgnoredWithoutInt8);
        assert!(build_config_diagnostics(Precision::Fp16, false).is_empty());
        // int8/best: nothing to say before the build (on TensorRT 11 in particular: the cache
        // becomes Q/DQ nodes and never reaches TensorRT, so no "TensorRT rejects the cache").
        assert!(build_config_diagnostics(Precision::Int8, true).is_empty());
        assert!(build_config_diagnostics(Precision::Best, true).is_empty());
    }
}
