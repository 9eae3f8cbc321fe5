//! End-to-end tests of `calibench cache …` on real caches from ../shared/fixtures/trt-caches.

mod common;

use common::digits;

use std::path::PathBuf;
use std::process::{Command, Output};

fn calibench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_calibench"))
        .args(args)
        .output()
        .expect("calibench starts")
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/trt-caches")
        .join(name)
        .display()
        .to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn inspect_reports_header_counts_and_flags() {
    let Some(_corpus) = calibench::corpus::trt_caches() else {
        return; // said why on stderr; CI requires the corpus
    };
    let o = calibench(&[
        "cache",
        "inspect",
        &fixture("isaid22__TensorRT-Optimization-MPNet__calibration.cache"),
    ]);
    assert!(o.status.success());
    let s = stdout(&o);
    assert!(s.contains("TensorRT 10.13.3, MinMaxCalibration"), "{s}");
    assert!(s.contains("tensors:     842"), "{s}");
    assert!(
        s.contains("/encoder/Log_output_0") && s.contains("infinite"),
        "{s}"
    );

    let o = calibench(&[
        "cache",
        "inspect",
        "--json",
        &fixture("zxm97__Pytorch_Retina_License_Plate_trt__calibration.cache"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["inspection"]["tensorrt_version"], "8.5.1");
    assert_eq!(v["inspection"]["tensors"], 126);
}

#[test]
fn inspect_recognizes_onnxruntime_tables() {
    let Some(_corpus) = calibench::corpus::trt_caches() else {
        return; // said why on stderr; CI requires the corpus
    };
    let o = calibench(&[
        "cache",
        "inspect",
        &fixture("shiyongming__onnxrt_trt_ep__calibration.cache"),
    ]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("onnxruntime calibration table"));
}

#[test]
fn bad_cache_exits_2_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.cache");
    std::fs::write(
        &p,
        "TRT-8601-EntropyCalibration2\ninput: 3c010204\ninput: zz\n",
    )
    .unwrap();
    let o = calibench(&["cache", "inspect", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("bad.cache") && e.contains("line 3"), "{e}");
}

#[test]
fn import_then_diff_with_a_gate() {
    let Some(_corpus) = calibench::corpus::trt_caches() else {
        return; // said why on stderr; CI requires the corpus
    };
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.cache");
    let o = calibench(&[
        "cache",
        "import",
        &fixture("shiyongming__onnxrt_trt_ep__calibration.cache"),
        "-o",
        a.to_str().unwrap(),
        "--trt-version",
        "8.6.1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&a).unwrap();
    assert!(text.starts_with("TRT-8601-EntropyCalibration2\ndata: "));
    // B: every scale doubled except the first.
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    for l in lines.iter_mut().skip(2) {
        let (n, v) = l.rsplit_once(": ").unwrap();
        let s = f32::from_bits(u32::from_str_radix(v, 16).unwrap()) * 2.0;
        *l = format!("{n}: {:08x}", s.to_bits());
    }
    let b = dir.path().join("b.cache");
    std::fs::write(&b, lines.join("\n") + "\n").unwrap();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let o = calibench(&["cache", "diff", a, b, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["summary"]["identical"], 1);
    assert_eq!(v["summary"]["max_abs_log2"], 1.0);
    assert_eq!(
        calibench(&["cache", "diff", a, b, "--fail-above", "0.5"])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        calibench(&["cache", "diff", a, b, "--fail-above", "1.5"])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn provenance_set_and_show() {
    let Some(_corpus) = calibench::corpus::trt_caches() else {
        return; // said why on stderr; CI requires the corpus
    };
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("x.cache");
    std::fs::copy(
        fixture("nt4sth__Torch-TensorRT-VGG16__calibration.cache"),
        &c,
    )
    .unwrap();
    let c = c.to_str().unwrap();
    let o = calibench(&[
        "cache",
        "provenance",
        c,
        "--set",
        "origin_gpu=NVIDIA A10G",
        "--set",
        "tensorrt_version=8.4.0",
    ]);
    assert!(o.status.success());
    let o = calibench(&["cache", "provenance", c, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["origin_gpu"], "NVIDIA A10G");
    assert_eq!(v["cache_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(
        calibench(&["cache", "provenance", c, "--set", "colour=red"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn check_reports_coverage_version_and_gates() {
    let (cache, model) = (
        digits("digits_cnn.entropy.cache"),
        digits("digits_cnn.onnx"),
    );
    let o = calibench(&[
        "cache",
        "check",
        &cache,
        "--model",
        &model,
        "--trt-version",
        "10.14.1",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("10 of 10"));
    let o = calibench(&[
        "cache",
        "check",
        &cache,
        "--model",
        &model,
        "--trt-version",
        "8.6.1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("REJECTED"));

    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("partial.cache");
    let text: String = std::fs::read_to_string(&cache)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("conv2_out"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&partial, text).unwrap();
    let o = calibench(&[
        "cache",
        "check",
        partial.to_str().unwrap(),
        "-m",
        &model,
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"], "incomplete");
    assert_eq!(v["missing"][0]["tensor"], "conv2_out");
    assert_eq!(v["missing"][0]["produced_by"], "conv2");
    assert_eq!(v["missing"][0]["read_by"][0], "relu2");
}

#[test]
fn to_qdq_writes_a_model_that_runs_close_to_fp32() {
    use calibench::backend::reference::ReferenceEngine;
    use calibench::backend::Engine;
    use calibench::model::data::Dataset;
    use calibench::model::onnx::OnnxModel;
    use calibench::model::precision;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("digits.qdq.onnx");
    let o = calibench(&[
        "cache",
        "to-qdq",
        "-m",
        &digits("digits_cnn.onnx"),
        "-c",
        &digits("digits_cnn.entropy.cache"),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = OnnxModel::load(&out).unwrap();
    let ops: Vec<&str> = model
        .graph()
        .node
        .iter()
        .map(|n| n.op_type.as_str())
        .collect();
    assert_eq!(
        ops.iter().filter(|o| **o == "QuantizeLinear").count(),
        9 + 4,
        "9 activations + 4 weights"
    );
    // Run it as a plain fp32 model: the Q/DQ nodes do the quantization.
    let plan = precision::plan(&model, calibench::matrix::Precision::Fp32, None);
    let mut engine = ReferenceEngine::compile(&model, 400, plan).unwrap();
    let x = Dataset::read(
        std::path::Path::new(&digits("eval_inputs.npy")),
        &["input".into()],
    )
    .unwrap();
    let r = Dataset::read(
        std::path::Path::new(&digits("eval_ref.npy")),
        &["logits".into()],
    )
    .unwrap();
    let y = engine.infer(&x.tensors).unwrap();
    let (a, b) = (&y[0].data, &r.tensors[0].data);
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let cosine = dot / (na * nb);
    assert!(cosine > 0.99, "cosine {cosine}");
    assert!(a != b, "quantization changed the outputs");
}

/// `--method entropy-onnxruntime` reproduces onnxruntime's entropy calibrator: the fixture
/// cache digits_cnn.entropy.cache was written by onnxruntime 1.32 (fixtures/make_digits.py,
/// 2048 bins, 128 levels, symmetric) from the same 200 calibration images. The issue asks for
/// 1 %; the two agree to the last bit or two of a float32.
#[test]
fn entropy_onnxruntime_matches_onnxruntimes_own_cache() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ort-variant.cache");
    let o = calibench(&[
        "calibrate",
        "--method",
        "entropy-onnxruntime",
        "--batch",
        "37", // batch size must not matter: onnxruntime histograms all outputs at once
        "-m",
        &digits("digits_cnn.onnx"),
        "-d",
        &digits("calib.npy"),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours = calibench::cache::CalibrationCache::read(&out).unwrap();
    let ort = calibench::cache::CalibrationCache::read(std::path::Path::new(&digits(
        "digits_cnn.entropy.cache",
    )))
    .unwrap();
    assert_eq!(ours.entries.len(), ort.entries.len());
    for e in &ort.entries {
        let mine = ours.entries.iter().find(|m| m.name == e.name).unwrap();
        let rel = (mine.scale() / e.scale() - 1.0).abs();
        assert!(
            rel < 1e-5,
            "{}: {} vs onnxruntime {} ({rel:e})",
            e.name,
            mine.scale(),
            e.scale()
        );
    }
}

#[test]
fn entropy_onnxruntime_with_onnxruntimes_defaults_matches_a_live_onnxruntime() {
    // onnxruntime's own defaults are 128 bins and 128 quantized bins, not the 2048 calibench
    // uses by default: with those flags the caches agree.
    if !common::python_has("onnxruntime.quantization, numpy, onnx") {
        return;
    }
    let theirs = common::onnxruntime_ranges(&[]);
    assert!(theirs.len() >= 9, "{theirs:?}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ort-defaults.cache");
    let args = [
        "calibrate",
        "--method",
        "entropy-onnxruntime",
        "--num-bins",
        "128",
        "--num-quantized-bins",
        "128",
        "--symmetric",
        "false",
        "-m",
        &digits("digits_cnn.onnx"),
        "-d",
        &digits("calib.npy"),
        "-o",
        out.to_str().unwrap(),
    ];
    let c = calibench(&args);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let ours = calibench::cache::CalibrationCache::read(&out).unwrap();
    for (name, amax) in &theirs {
        let mine = ours
            .get(name)
            .unwrap_or_else(|| panic!("{name} has no entry"));
        let rel = (mine.amax() / amax - 1.0).abs();
        assert!(
            rel < 1e-5,
            "{name}: {} vs onnxruntime {amax} ({rel:e})",
            mine.amax()
        );
    }
    // The option is refused where it means nothing.
    let wrong = calibench(&[
        "calibrate",
        "--method",
        "minmax",
        "--num-bins",
        "128",
        "-m",
        &digits("digits_cnn.onnx"),
        "-d",
        &digits("calib.npy"),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(wrong.status.code(), Some(2));
}

#[test]
fn percentile_matches_a_live_onnxruntime_where_both_histograms_start_at_zero() {
    // onnxruntime's percentile histogram spans [min|x|, max|x|], NVIDIA ModelOpt's and
    // calibench's [0, max|x|]: on tensors with exact zeros (ReLU outputs, pools of them, the
    // image input) the two coincide, and so must the percentiles (lower bin edge).
    if !common::python_has("onnxruntime.quantization, numpy, onnx") {
        return;
    }
    let theirs = common::onnxruntime_ranges(&["percentile", "99.9"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.cache");
    let c = calibench(&[
        "calibrate",
        "--method",
        "percentile=99.9",
        "--batch",
        "200",
        "-m",
        &digits("digits_cnn.onnx"),
        "-d",
        &digits("calib.npy"),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let ours = calibench::cache::CalibrationCache::read(&out).unwrap();
    let mut compared = 0;
    let zero_based = [
        "input",
        "relu1_out",
        "pool1_out",
        "relu2_out",
        "flat_out",
        "relu3_out",
    ];
    for (name, amax) in theirs
        .iter()
        .filter(|(n, _)| zero_based.contains(&n.as_str()))
    {
        let mine = ours.get(name).unwrap().amax();
        let rel = (mine / amax - 1.0).abs();
        assert!(rel < 1e-6, "{name}: {mine} vs onnxruntime {amax} ({rel:e})");
        compared += 1;
    }
    assert_eq!(compared, 6);
}
