//! End-to-end runs of the reference backend on the digits fixtures: accuracy gates,
//! reference outputs computed and cached, and bad inputs recorded per cell.

mod common;

use common::digits;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(spec: &Path, out: &Path) -> (Output, Vec<serde_json::Value>) {
    let o = Command::new(env!("CARGO_BIN_EXE_calibench"))
        .args([
            "run",
            "-q",
            "--warmup-ms",
            "1",
            "--measurement-ms",
            "2",
            "--samples",
            "3",
            "--output",
        ])
        .arg(out)
        .arg(spec)
        .output()
        .unwrap();
    let run_dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let records = std::fs::read_to_string(run_dir.join("results.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (o, records)
}

fn spec(dir: &Path, model_extra: &str, precisions: &str) -> PathBuf {
    let text = format!(
        r#"version = 1
name = "ref"
[axes]
precisions = [{precisions}]
backends = ["reference"]
batch_sizes = [7]
[[models]]
id = "digits"
path = "{model}"
eval_inputs = "{inputs}"
eval_labels = "{labels}"
{model_extra}
[[caches]]
id = "entropy"
model = "digits"
path = "{cache}"
"#,
        model = digits("digits_cnn.onnx"),
        inputs = digits("eval_inputs.npy"),
        labels = digits("eval_labels.npy"),
        cache = digits("digits_cnn.entropy.cache"),
    );
    let p = dir.join("spec.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn computed_reference_is_cached_and_fp32_matches_it_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        dir.path(),
        "[models.tolerance]\natol = 0.0\nrtol = 0.0",
        "\"fp32\"",
    );
    let (o, records) = run(&s, dir.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let acc = &records[0]["accuracy"];
    assert_eq!(acc["samples"], 400);
    assert!(acc["reference"]
        .as_str()
        .unwrap()
        .contains("reference backend fp32"));
    assert_eq!(
        acc["outputs"][0]["max_abs"], 0.0,
        "batch 7 (with a padded last batch) equals the batch-64 reference"
    );
    let cached: Vec<_> = std::fs::read_dir(dir.path().join(".cache/reference"))
        .unwrap()
        .collect();
    assert_eq!(cached.len(), 1, "the computed reference is cached on disk");
    assert_eq!(acc["outputs"][0]["top1_accuracy"], 0.9875);
}

#[test]
fn accuracy_gate_failure_is_recorded_with_the_passing_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "reference = \"{}\"\n[models.tolerance]\natol = 1e-3\nrtol = 1e-3",
        digits("eval_ref.npy")
    );
    let (o, records) = run(&spec(dir.path(), &extra, "\"fp32\", \"int8\""), dir.path());
    assert_eq!(o.status.code(), Some(1), "an accuracy gate failed");
    assert_eq!(records.len(), 2);
    let fp32 = records
        .iter()
        .find(|r| r["cell"]["precision"] == "fp32")
        .unwrap();
    assert_eq!(fp32["status"], "ok");
    let int8 = records
        .iter()
        .find(|r| r["cell"]["precision"] == "int8")
        .unwrap();
    assert_eq!(int8["status"], "failed");
    assert_eq!(int8["error"]["phase"], "accuracy");
    let out = &int8["accuracy"]["outputs"][0];
    assert!(out["min_passing_atol"].as_f64().unwrap() > 1e-3);
    assert!(out["reason"]
        .as_str()
        .unwrap()
        .contains("would pass with atol="));
    assert_eq!(int8["engine"]["layer_precisions"]["int8"], 8);
    assert!(
        int8["latency"]["median_ms"].as_f64().unwrap() > 0.0,
        "latency is still measured"
    );
}

#[test]
fn bad_model_and_bad_data_exit_2_before_any_cell_naming_each_file() {
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.onnx");
    let bytes = std::fs::read(digits("digits_cnn.onnx")).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let wrong = dir.path().join("wrong.npy");
    // A [400, 10] array where the model wants [N, 1, 8, 8].
    std::fs::copy(digits("eval_ref.npy"), &wrong).unwrap();
    let text = format!(
        r#"version = 1
name = "bad"
[axes]
precisions = ["fp32"]
backends = ["reference"]
[[models]]
id = "cut"
path = "{cut}"
[[models]]
id = "wrong-data"
path = "{model}"
eval_inputs = "{wrong}"
[[models]]
id = "good"
path = "{model}"
"#,
        cut = cut.display(),
        model = digits("digits_cnn.onnx"),
        wrong = wrong.display()
    );
    let s = dir.path().join("bad.toml");
    std::fs::write(&s, text).unwrap();
    let (o, records) = run(&s, dir.path());
    // Bad input named by the spec is exit 2 before any cell runs, naming every bad file.
    assert_eq!(o.status.code(), Some(2));
    assert!(records.is_empty(), "no cell ran");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("2 input file(s) cannot be used"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cut.onnx") && stderr.contains("not a valid ONNX model"),
        "{stderr}"
    );
    assert!(
        stderr.contains("wrong.npy") && stderr.contains("[400, 10]"),
        "{stderr}"
    );
}

#[test]
fn a_partial_cache_is_diagnosed_in_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("partial.cache");
    let text: String = std::fs::read_to_string(digits("digits_cnn.entropy.cache"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("relu1_out") && !l.starts_with("conv2_out"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&partial, text).unwrap();
    let spec_text = std::fs::read_to_string(spec(dir.path(), "", "\"int8\""))
        .unwrap()
        .replace(
            &digits("digits_cnn.entropy.cache"),
            partial.to_str().unwrap(),
        );
    let s = dir.path().join("partial.toml");
    std::fs::write(&s, spec_text).unwrap();
    let (_, records) = run(&s, dir.path());
    let d = &records[0]["diagnostics"];
    assert_eq!(d[0]["kind"], "missing_scale", "{d}");
    assert!(
        d[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("2 tensor(s) have no scale"),
        "{d}"
    );
    assert!(d[0]["fix"]
        .as_str()
        .unwrap()
        .contains("calibench cache check"));
    assert!(
        records[0]["engine"]["layer_precisions"]["fp32"]
            .as_u64()
            .unwrap()
            > 0
    );
}

/// `calibench to-fp16` writes the fp16-typed model TensorRT 11 builds fp16 engines from: weights
/// in float16, the fp32 interface kept. Checked by hand in onnxruntime 1.32 (onnx.checker with
/// full shape inference passes): fp16 max |Δ| 8.5e-3 from fp32 on the digits logits, top-1
/// 98.75 %; with the cache (best) cosine 0.99722, top-1 99.00 % (int8 alone: 0.99727, 99.00 %).
/// tract cannot run fp16 Gemm, so there is no runtime check here.
#[test]
fn to_fp16_keeps_the_interface_and_halves_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("digits.fp16.onnx");
    let o = Command::new(env!("CARGO_BIN_EXE_calibench"))
        .args(["to-fp16", "-m", &digits("digits_cnn.onnx"), "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let original = std::fs::metadata(digits("digits_cnn.onnx")).unwrap().len();
    let half = std::fs::metadata(&out).unwrap().len();
    assert!(
        half * 10 < original * 6,
        "{half} bytes vs {original}: the weights should take half the space"
    );
    let model = calibench::model::onnx::OnnxModel::load(&out).unwrap();
    assert_eq!(model.inputs()[0].name, "input");
    assert_eq!(model.outputs()[0].name, "logits");
    // With a cache: the Q/DQ model in fp16 (TensorRT 11's `best`), raised to opset 19.
    let best = dir.path().join("digits.best.onnx");
    let o = Command::new(env!("CARGO_BIN_EXE_calibench"))
        .args(["to-fp16", "-m", &digits("digits_cnn.onnx"), "-c"])
        .arg(digits("digits_cnn.entropy.cache"))
        .arg("-o")
        .arg(&best)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = calibench::model::onnx::OnnxModel::load(&best).unwrap();
    assert!(model
        .graph()
        .node
        .iter()
        .any(|n| n.op_type == "QuantizeLinear"));
    assert_eq!(model.proto.opset_import[0].version, 19);
    let missing = Command::new(env!("CARGO_BIN_EXE_calibench"))
        .args(["to-fp16", "-m", "/nonexistent.onnx", "-o"])
        .arg(dir.path().join("x.onnx"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.onnx"));
}
