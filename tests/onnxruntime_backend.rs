//! The onnxruntime backend and the cross-check between CPU backends. onnxruntime is found as
//! calibench finds it (ORT_DYLIB_PATH, or python3's onnxruntime); without it the tests that
//! need it say they were skipped, unless CALIBENCH_REQUIRE_ONNXRUNTIME=1 (set by .ci/run).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::digits;

fn calibench(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_calibench"));
    c.env_remove("RUST_LOG").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn onnxruntime_present() -> bool {
    match calibench::backend::onnxruntime::find_library() {
        Ok(_) => true,
        Err(why) => {
            assert!(
                std::env::var("CALIBENCH_REQUIRE_ONNXRUNTIME").map_or(true, |v| v != "1"),
                "CALIBENCH_REQUIRE_ONNXRUNTIME=1 but onnxruntime is not found: {why}"
            );
            calibench::corpus::say_skipped(&format!(
                "skipped: onnxruntime not found ({why}); pip install onnxruntime"
            ));
            false
        }
    }
}

/// The digits CNN on `backends`, every precision, with the entropy cache.
fn spec(dir: &Path, backends: &str, extra: &str) -> PathBuf {
    let text = format!(
        "version = 1\nname = \"ort\"\n[axes]\nprecisions = [\"fp32\", \"fp16\", \"int8\", \"best\"]\n\
         backends = [{backends}]\n[[models]]\nid = \"digits\"\npath = \"{}\"\neval_inputs = \"{}\"\n\
         eval_labels = \"{}\"\nreference = \"{}\"\n[models.tolerance]\natol = 0.05\nrtol = 0.05\n\
         check = \"quantile=0.99\"\n[models.tolerance.precision.int8]\natol = 10.0\nmin_cosine = 0.99\n\
         [models.tolerance.precision.best]\natol = 10.0\nmin_cosine = 0.99\n\
         [[caches]]\nid = \"entropy\"\nmodel = \"digits\"\npath = \"{}\"\n\
         [latency]\nwarmup_ms = 1\nmeasurement_ms = 5\nsamples = 3\n{extra}",
        digits("digits_cnn.onnx"),
        digits("eval_inputs.npy"),
        digits("eval_labels.npy"),
        digits("eval_ref.npy"),
        digits("digits_cnn.entropy.cache"),
    );
    let p = dir.join("ort.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn records(o: &Output) -> Vec<serde_json::Value> {
    let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    std::fs::read_to_string(dir.join("results.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn run(spec: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec![
        "run",
        "-q",
        "--no-criterion",
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(spec.to_str().unwrap());
    calibench(&args, env)
}

#[test]
fn onnxruntime_runs_every_precision_and_agrees_with_the_reference_backend() {
    if !onnxruntime_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        dir.path(),
        "\"reference\", \"onnxruntime\"",
        "[cross_check]\nbackends = [\"reference\", \"onnxruntime\"]\n",
    );
    let o = run(&s, &dir.path().join("out"), &[], &[]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let recs = records(&o);
    assert_eq!(recs.len(), 8);
    for r in &recs {
        let top1 = r["accuracy"]["outputs"][0]["top1_accuracy"]
            .as_f64()
            .unwrap();
        assert!(top1 > 0.98, "{}: {top1}", r["key"]);
        let check = &r["cross_check"][0];
        assert_eq!(check["agree"], true, "{}: {check}", r["key"]);
        // Same rewritten model, two engines: fp32 agrees to float rounding; int8 to a step of
        // the quantized logits (onnxruntime fuses Q/DQ into int8 kernels, whose rounding can
        // land one step apart).
        let (max_abs, cosine) = (
            check["max_abs"].as_f64().unwrap(),
            check["cosine"].as_f64().unwrap(),
        );
        match r["cell"]["precision"].as_str().unwrap() {
            "fp32" => assert!(max_abs < 1e-3, "{}: {check}", r["key"]),
            // best: true fp16 arithmetic there, fp16-rounded tensors here.
            "best" => assert!(cosine > 0.999, "{}: {check}", r["key"]),
            _ => assert!(cosine > 0.9999, "{}: {check}", r["key"]),
        }
    }
    let ort: Vec<_> = recs
        .iter()
        .filter(|r| r["cell"]["backend"] == "onnxruntime")
        .collect();
    assert_eq!(ort.len(), 4);
    assert_eq!(ort[0]["cross_check"][0]["backend"], "reference");
}

#[test]
fn the_cross_check_catches_a_planted_disagreement() {
    // The mock backend takes the digits model's input and output shapes but computes
    // something else: the reference cells must fail their cross-check, saying by how much.
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "\"reference\"", "");
    let o = run(
        &s,
        &dir.path().join("out"),
        &[
            "--only",
            "precision=fp32",
            "--cross-check",
            "reference,mock",
        ],
        &[],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r = &records(&o)[0];
    assert_eq!(r["status"], "failed");
    assert_eq!(r["error"]["phase"], "cross_check");
    let check = &r["cross_check"][0];
    assert_eq!(
        (check["backend"].as_str(), check["agree"].as_bool()),
        (Some("mock"), Some(false))
    );
    let diag = r["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "engines_disagree")
        .expect("an engines_disagree diagnostic");
    let msg = diag["message"].as_str().unwrap();
    assert!(
        msg.contains("reference vs mock") && msg.contains("max |Δ|") && msg.contains("cosine"),
        "{msg}"
    );
}

#[test]
fn without_onnxruntime_its_cells_are_skipped_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "\"reference\", \"onnxruntime\"", "");
    let o = run(
        &s,
        &dir.path().join("out"),
        &["--only", "precision=fp32"],
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1")],
    );
    assert_eq!(o.status.code(), Some(1), "skipped cells fail the run");
    let recs = records(&o);
    let ort = recs
        .iter()
        .find(|r| r["cell"]["backend"] == "onnxruntime")
        .unwrap();
    assert_eq!(ort["status"], "skipped");
    let msg = ort["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("ORT_DYLIB_PATH=/nonexistent") && msg.contains("pip install onnxruntime"),
        "{msg}"
    );
    assert_eq!(
        recs.iter()
            .find(|r| r["cell"]["backend"] == "reference")
            .unwrap()["status"],
        "ok"
    );
}

#[test]
fn onnxruntime_can_compute_the_reference_outputs() {
    if !onnxruntime_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "\"reference\"", "");
    let text = std::fs::read_to_string(&s).unwrap().replace(
        &format!("reference = \"{}\"\n", digits("eval_ref.npy")),
        "reference_backend = \"onnxruntime\"\n",
    );
    std::fs::write(&s, text).unwrap();
    let o = run(
        &s,
        &dir.path().join("out"),
        &["--only", "precision=fp32"],
        &[],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r = &records(&o)[0];
    let origin = r["accuracy"]["reference"].as_str().unwrap();
    assert!(origin.starts_with("onnxruntime backend fp32"), "{origin}");
    assert!(r["accuracy"]["outputs"][0]["max_abs"].as_f64().unwrap() < 1e-4);
}

#[test]
fn tract_still_computes_softmax_between_qdq_pairs_wrongly() {
    // Why the reference backend refuses the pattern (src/backend/tract_defects.rs): the five-node
    // reproducer on tract and on onnxruntime (Q/DQ evaluated as written). If a tract upgrade
    // fixes it, this test fails and the refusal can go.
    use calibench::backend::onnxruntime::OnnxRuntimeBackend;
    use calibench::backend::reference::ReferenceEngine;
    use calibench::backend::Engine;
    if !onnxruntime_present() {
        return;
    }
    let model = calibench::backend::tract_defects::qdq_softmax_model(Path::new("qdq_softmax.onnx"));
    let x = calibench::model::Tensor::new(
        vec![8, 2],
        common::uniform(5, 16)
            .iter()
            .map(|v| v * 6.0 - 3.0)
            .collect(),
    )
    .unwrap();
    let mut tract = ReferenceEngine::compile(&model, 8, Default::default()).unwrap();
    let mut ort = OnnxRuntimeBackend::open()
        .unwrap()
        .literal()
        .compile(&model, 8, Default::default(), Vec::new())
        .unwrap();
    let (a, b) = (
        tract.infer(std::slice::from_ref(&x)).unwrap(),
        ort.infer(std::slice::from_ref(&x)).unwrap(),
    );
    let worst = a[0]
        .data
        .iter()
        .zip(&b[0].data)
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max);
    assert!(
        worst > 0.1,
        "tract and onnxruntime agree now (max |Δ| {worst}): drop the refusal"
    );
}

/// `calibench calibrate --method minmax` of a model on the digits calibration data into `out`.
fn calibrate_minmax(model: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec!["calibrate", "--method", "minmax"];
    args.extend_from_slice(extra);
    let (model, data, out) = (
        model.to_str().unwrap(),
        digits("calib.npy"),
        out.to_str().unwrap(),
    );
    args.extend(["-m", model, "-d", &data, "-o", out]);
    let o = calibench(&args, &[]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The digits CNN with one fc1 unit made constant: its weights scaled by 1e-4 and its bias set
/// to 5 (the dead-weight, live-bias channels BatchNorm folding leaves in real nets, such as
/// torchvision's MobileNetV2 and ResNet-50). Its int32 bias `5 / (x_scale · w_scale)` is far
/// beyond fp16's 65504.
fn constant_unit_model(dir: &Path) -> PathBuf {
    use calibench::model::onnx::{float_data, float_tensor, OnnxModel};
    let mut m = OnnxModel::load(Path::new(&digits("digits_cnn.onnx"))).unwrap();
    for t in m.graph_mut().initializer.iter_mut() {
        if !t.name.starts_with("fc1.") {
            continue;
        }
        let mut data = float_data(t).unwrap();
        match t.name.as_str() {
            "fc1.weight" => data[..256].iter_mut().for_each(|w| *w *= 1e-4),
            "fc1.bias" => data[0] = 5.0,
            _ => continue,
        }
        *t = float_tensor(&t.name, &t.dims, &data);
    }
    let path = dir.join("constant_unit.onnx");
    std::fs::write(&path, m.to_bytes()).unwrap();
    path
}

#[test]
fn best_no_longer_loses_a_bias_onnxruntime_quantizes_in_fp16() {
    // onnxruntime's WeightBiasQuantization computed the int32 bias of best's fp16 Q/DQ model
    // in fp16: beyond 65504 it became inf and then garbage. torchvision MobileNetV2's best had
    // cosine 0.27 to fp32 (ResNet-50 0.87), and `check` said "recalibrate", blaming the cache.
    if !onnxruntime_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = constant_unit_model(dir.path());
    let cache = dir.path().join("c.cache");
    calibrate_minmax(&model, &cache, &[]);
    let o = calibench(
        &[
            "check",
            "--no-criterion",
            "--samples",
            "3",
            "--measurement-ms",
            "5",
            "--backend",
            "onnxruntime",
            "--best",
            "--onnx",
            model.to_str().unwrap(),
            "--calib",
            cache.to_str().unwrap(),
            "--eval",
            &digits("eval_inputs.npy"),
            "-o",
            dir.path().join("check").to_str().unwrap(),
        ],
        &[],
    );
    let r = records(&o);
    let best = r
        .iter()
        .find(|r| r["cell"]["precision"] == "best")
        .expect("a best record");
    let cosine = best["accuracy"]["outputs"][0]["cosine"].as_f64().unwrap();
    assert!(cosine > 0.999, "best cosine {cosine} (was 0.9786)");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn calibration_on_onnxruntime_no_longer_reads_a_freed_input() {
    // Calibration exposes the graph input as an output too; onnxruntime returns the input's own
    // buffer for it, which calibench had already freed: the input's amax came out as 2e36.
    if !onnxruntime_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.cache");
    calibrate_minmax(
        Path::new(&digits("digits_cnn.onnx")),
        &out,
        &["--backend", "onnxruntime"],
    );
    let ours = calibench::cache::CalibrationCache::read(&out).unwrap();
    let reference =
        calibench::cache::CalibrationCache::read(Path::new(&digits("digits_cnn.minmax.cache")))
            .unwrap();
    for e in &reference.entries {
        let got = ours.get(&e.name).map_or(f32::NAN, |g| g.scale());
        assert!(
            (got / e.scale() - 1.0).abs() < 1e-5,
            "{}: {got} vs the reference backend's {}",
            e.name,
            e.scale()
        );
    }
}
