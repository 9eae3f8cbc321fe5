//! TensorRT's log lines attributed to the call that caused them.
//!
//! TensorRT has one logger per process and calls it on the thread that makes the TensorRT call.
//! Each call calibench makes (build, inspect, engine load, enqueue) runs inside [`capture`], which
//! collects the lines logged on its thread during the call and hands them back with its result,
//! so every line lands in the record of the cell that caused it and nothing piles up between
//! cells. A line logged outside any call (on a thread of TensorRT's own) is written to calibench's
//! log at once, never attributed to a later cell. Only lines of severity warning or worse are
//! forwarded by the shim, unless `RUST_LOG` enables calibench's debug level (then info and
//! verbose lines go to calibench's debug log; they are never recorded).

use std::cell::RefCell;

use super::diagnostics::{classify, parse_line, Diagnostic, DiagnosticKind, LogLine, Severity};

thread_local! {
    static LINES: RefCell<Option<Vec<LogLine>>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's TensorRT log lines collected; returns its result and the lines.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Vec<LogLine>) {
    let outer = LINES.with(|l| l.borrow_mut().replace(Vec::new()));
    let result = f();
    let lines = LINES.with(|l| {
        let mut slot = l.borrow_mut();
        let mine = slot.take().unwrap_or_default();
        *slot = outer;
        mine
    });
    (result, lines)
}

/// Where the shim's logger sends a line: to the call running on this thread, else to
/// calibench's log. Info and verbose lines only reach calibench's debug log.
pub fn record(severity: Severity, message: &str) {
    if severity > Severity::Warning {
        tracing::debug!(target: "calibench::tensorrt", "[{severity:?}] {message}");
        return;
    }
    let mut line = parse_line(message);
    line.severity = severity;
    let unattributed = LINES.with(|l| match l.borrow_mut().as_mut() {
        Some(lines) => {
            lines.push(line);
            None
        }
        None => Some(line),
    });
    if let Some(line) = unattributed {
        tracing::warn!(
            target: "calibench::tensorrt",
            "TensorRT (outside any calibench call) [{:?}]: {}",
            line.severity,
            line.message
        );
    }
}

/// The most detailed severity the shim should forward (as `ILogger::Severity`): kWARNING, or
/// kVERBOSE when calibench's debug log is on.
pub fn forwarded_severity() -> i32 {
    if tracing::enabled!(target: "calibench::tensorrt", tracing::Level::DEBUG) {
        4
    } else {
        2
    }
}

/// A failed call's message: TensorRT's own errors first (they say why), then calibench's
/// description of the call, then its warnings.
pub fn failure_message(what_failed: &str, lines: &[LogLine]) -> String {
    let errors: Vec<&str> = lines
        .iter()
        .filter(|l| l.severity <= Severity::Error)
        .map(|l| l.message.as_str())
        .collect();
    let warnings: Vec<&str> = lines
        .iter()
        .filter(|l| l.severity == Severity::Warning)
        .map(|l| l.message.as_str())
        .collect();
    let mut out = String::new();
    if !errors.is_empty() {
        out.push_str("TensorRT: ");
        out.push_str(&errors.join("\nTensorRT: "));
        out.push('\n');
    }
    out.push_str(what_failed);
    if errors.is_empty() {
        out.push_str(" (TensorRT logged no error)");
    }
    for w in warnings {
        out.push_str("\nTensorRT warning: ");
        out.push_str(w);
    }
    out
}

/// Every recorded line as a diagnostic: the ones calibench knows with their fix, the others as
/// `tensorrt_error` / `tensorrt_warning` with TensorRT's message. Repeats are dropped.
pub fn diagnostics(lines: &[LogLine]) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = Vec::new();
    for line in lines.iter().filter(|l| l.severity <= Severity::Warning) {
        let d = classify(line).unwrap_or_else(|| Diagnostic {
            kind: if line.severity <= Severity::Error {
                DiagnosticKind::TensorrtError
            } else {
                DiagnosticKind::TensorrtWarning
            },
            severity: line.severity,
            message: line.message.clone(),
            fix: "TensorRT's own message; see TensorRT's documentation for it".into(),
        });
        if !out
            .iter()
            .any(|o| o.kind == d.kind && o.message == d.message)
        {
            out.push(d);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_go_to_the_call_that_caused_them() {
        let ((), first) = capture(|| {
            record(
                Severity::Error,
                "[E] [TRT] IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error",
            );
            record(
                Severity::Info,
                "[I] [TRT] Detected 1 inputs and 1 output network tensors.",
            );
        });
        assert_eq!(first.len(), 1, "info lines are not recorded: {first:?}");
        assert_eq!(first[0].severity, Severity::Error);
        assert!(first[0]
            .message
            .starts_with("IBuilder::buildSerializedNetwork"));
        // A line outside any call is not kept for the next one.
        record(Severity::Warning, "stray");
        let ((), second) = capture(|| record(Severity::Warning, "[W] second"));
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].message, "second");
    }

    #[test]
    fn each_thread_keeps_its_own_lines() {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                std::thread::spawn(move || {
                    capture(|| {
                        for _ in 0..100 {
                            record(Severity::Warning, &format!("thread {i}"));
                        }
                    })
                    .1
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let lines = h.join().unwrap();
            assert_eq!(lines.len(), 100);
            assert!(lines.iter().all(|l| l.message == format!("thread {i}")));
        }
    }

    #[test]
    fn a_failure_puts_tensorrt_errors_first() {
        let lines = vec![
            LogLine {
                severity: Severity::Warning,
                message: "Missing scale and zero-point for tensor conv1, expect fall back to non-int8 implementation".into(),
            },
            LogLine {
                severity: Severity::Error,
                message: "4: [network.cpp::validate::3100] Error Code 4: Internal Error (input: kOPT dimensions in profile 0 are [2,3,224,224] but input has static dimensions [1,3,224,224].)".into(),
            },
        ];
        let m = failure_message("TensorRT could not build the engine", &lines);
        assert!(
            m.starts_with("TensorRT: 4: [network.cpp::validate::3100]"),
            "{m}"
        );
        assert!(m.contains("\nTensorRT could not build the engine\n"), "{m}");
        assert!(
            m.ends_with("expect fall back to non-int8 implementation"),
            "{m}"
        );
        let m = failure_message("enqueueV3 failed", &[]);
        assert_eq!(m, "enqueueV3 failed (TensorRT logged no error)");
    }

    #[test]
    fn every_warning_becomes_a_diagnostic() {
        let lines = vec![
            LogLine {
                severity: Severity::Warning,
                message: "Missing scale and zero-point for tensor a, expect fall back".into(),
            },
            LogLine {
                severity: Severity::Warning,
                message: "Unused Input: mask".into(),
            },
            LogLine {
                severity: Severity::Warning,
                message: "Unused Input: mask".into(),
            },
        ];
        let d = diagnostics(&lines);
        assert_eq!(d.len(), 2);
        assert!(matches!(d[0].kind, DiagnosticKind::MissingScale { .. }));
        assert_eq!(d[1].kind, DiagnosticKind::TensorrtWarning);
        assert_eq!(d[1].message, "Unused Input: mask");
    }
}
