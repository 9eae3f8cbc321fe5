//! Real third-party models on the CPU path: PaddleOCR's orientation classifier
//! (fixtures/ppocr-cls: dynamic H×W, Constant-node weights, an int64 shape subgraph, opset 11)
//! through shapes, calibration, coverage, the Q/DQ and fp16 rewrites and the reference backend.
//! Rewritten models are also checked by onnx.checker and onnxruntime (tests/check_onnx.py)
//! where Python has them; `CALIBENCH_REQUIRE_ONNXRUNTIME=1` (set by .ci/run) makes their
//! absence a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use calibench::model::data::write_npz;
use calibench::model::onnx::OnnxModel;
use calibench::model::Tensor;

mod common;

const INPUT: [usize; 3] = [3, 48, 192];

fn cls() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/ppocr-cls/ch_ppocr_mobile_v2.0_cls_infer.onnx")
}

fn calibench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_calibench"))
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "exit {:?}\n{out}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// `n` text-line-sized inputs in PaddleOCR's [-1, 1] range, as an .npz named `x`.
fn inputs(dir: &Path, name: &str, n: usize, seed: u64) -> PathBuf {
    let len = n * INPUT.iter().product::<usize>();
    let data = common::uniform(seed, len)
        .iter()
        .map(|v| v * 2.0 - 1.0)
        .collect();
    let t = Tensor::new(vec![n, INPUT[0], INPUT[1], INPUT[2]], data).unwrap();
    let path = dir.join(name);
    write_npz(&path, &[("x".into(), t)]).unwrap();
    path
}

/// The shape-subgraph tensors of the classifier (int64, or float casts of sizes).
const SHAPE_TENSORS: &[&str] = &[
    "Shape@0",
    "shape_0.tmp_0",
    "shape_0.tmp_0_slice_0",
    "Cast@1",
    "Cast@2",
    "Concat@0",
];

fn calibrate(dir: &Path) -> PathBuf {
    let data = inputs(dir, "calib.npz", 2, 1);
    let cache = dir.join("cls.cache");
    ok(&calibench(&[
        "calibrate",
        "-m",
        cls().to_str().unwrap(),
        "-d",
        data.to_str().unwrap(),
        "--method",
        "minmax",
        "-o",
        cache.to_str().unwrap(),
    ]));
    cache
}

#[test]
fn calibration_takes_the_datas_shape_and_skips_the_shape_subgraph() {
    let dir = tempfile::tempdir().unwrap();
    let cache = calibrate(dir.path());
    let c = calibench::cache::CalibrationCache::read(&cache).unwrap();
    for t in SHAPE_TENSORS {
        assert!(c.get(t).is_none(), "{t} got a scale");
    }
    let model = OnnxModel::load(&cls()).unwrap();
    assert_eq!(c.entries.len(), model.quantizable_tensors().len());
    assert!(c.get("x").is_some() && c.get("reshape2_0.tmp_0").is_some());
}

#[test]
fn cache_check_reports_an_int64_entry_as_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let cache = calibrate(dir.path());
    let mut text = std::fs::read_to_string(&cache).unwrap();
    text.push_str("Concat@0: 3c010a14\n");
    std::fs::write(&cache, text).unwrap();
    let out = ok(&calibench(&[
        "cache",
        "check",
        cache.to_str().unwrap(),
        "--model",
        cls().to_str().unwrap(),
    ]));
    assert!(
        out.contains("Concat@0: ignored: TensorRT does not quantize int64 tensors"),
        "{out}"
    );
    assert!(out.contains("verdict:  Ok"), "{out}");
}

#[test]
fn rewrites_of_the_ocr_classifier_are_valid_models() {
    use calibench::model::types::tensor_kinds;
    let dir = tempfile::tempdir().unwrap();
    let cache = calibrate(dir.path());
    let (model, cache) = (cls(), cache.to_str().unwrap().to_string());
    let out = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    ok(&calibench(&[
        "cache",
        "to-qdq",
        "--model",
        model.to_str().unwrap(),
        "--cache",
        &cache,
        "-o",
        &out("q.onnx"),
    ]));
    ok(&calibench(&[
        "to-fp16",
        "--model",
        model.to_str().unwrap(),
        "-o",
        &out("h.onnx"),
    ]));
    ok(&calibench(&[
        "to-fp16",
        "--model",
        model.to_str().unwrap(),
        "--cache",
        &cache,
        "-o",
        &out("b.onnx"),
    ]));
    for f in ["q.onnx", "b.onnx"] {
        let m = OnnxModel::load(Path::new(&out(f))).unwrap();
        let kinds = tensor_kinds(&m);
        let g = m.graph();
        // Topological order: every input is made before it is read.
        let mut known: std::collections::HashSet<&str> =
            g.initializer.iter().map(|t| t.name.as_str()).collect();
        known.extend(g.input.iter().map(|i| i.name.as_str()));
        for n in &g.node {
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                assert!(
                    known.contains(i.as_str()),
                    "{f}: {} reads {i} before it exists",
                    n.name
                );
            }
            known.extend(n.output.iter().map(String::as_str));
            if n.op_type == "QuantizeLinear" {
                let t = kinds.elem_type(&n.input[0]);
                assert!(
                    matches!(t, Some(1) | Some(10)),
                    "{f}: QuantizeLinear {} on a {t:?} tensor",
                    n.name
                );
            }
        }
    }
    if common::python_has("onnx, onnxruntime, numpy") {
        let feeds = inputs(dir.path(), "feeds.npz", 1, 3);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check_onnx.py");
        let o = Command::new("python3")
            .arg(script)
            .arg(&feeds)
            .args([out("q.onnx"), out("h.onnx"), out("b.onnx")])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// A matrix of the classifier on the reference backend, with or without its input shape.
fn spec(dir: &Path, with_shape: bool, cache: &Path, eval: &Path) -> PathBuf {
    let shape = if with_shape {
        "[models.inputs.x]\nshape = [1, 3, 48, 192]\n"
    } else {
        ""
    };
    let text = format!(
        "version = 1\nname = \"cls\"\n[axes]\nprecisions = [\"fp32\", \"fp16\", \"int8\", \"best\"]\n\
         backends = [\"reference\"]\n[[models]]\nid = \"ppocr-cls\"\npath = \"{}\"\neval_inputs = \"{}\"\n{shape}\
         [models.tolerance]\natol = 1e-2\nrtol = 1e-2\n[models.tolerance.precision.int8]\natol = 10.0\nmin_cosine = 0.5\n\
         [models.tolerance.precision.best]\natol = 10.0\nmin_cosine = 0.5\n\
         [[caches]]\nid = \"minmax\"\nmodel = \"ppocr-cls\"\npath = \"{}\"\n\
         [latency]\nwarmup_ms = 1\nmeasurement_ms = 5\nsamples = 3\n",
        cls().display(),
        eval.display(),
        cache.display()
    );
    let p = dir.join(if with_shape {
        "cls.toml"
    } else {
        "noshape.toml"
    });
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn the_ocr_classifier_runs_with_its_input_shape_and_tracts_int8_softmax_defect_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = calibrate(dir.path());
    let eval = inputs(dir.path(), "eval.npz", 2, 2);
    let run = |with_shape: bool| {
        calibench(&[
            "run",
            "-q",
            "--no-criterion",
            "--output",
            dir.path().join("out").to_str().unwrap(),
            spec(dir.path(), with_shape, &cache, &eval)
                .to_str()
                .unwrap(),
        ])
    };
    let refused = run(false);
    assert_eq!(refused.status.code(), Some(2));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("input \"x\" has a symbolic dimension \"?\" at axis 2")
            && why.contains("[models.inputs.x] shape = [1, 3, SIZE, SIZE]"),
        "{why}"
    );
    let o = run(true);
    let stderr = String::from_utf8_lossy(&o.stderr);
    // fp32 and fp16 run; int8 and best are refused on the reference backend, naming the final
    // Softmax between two Q/DQ pairs, which tract computes wrongly (src/backend/tract_defects.rs has the
    // story): a refusal, never a silently constant output.
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("4 cell(s): 2 ok, 2 failed"), "{stderr}");
    let dir_out = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let text = std::fs::read_to_string(dir_out.join("results.jsonl")).unwrap();
    for line in text.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        if r["status"] == "failed" {
            let msg = r["error"]["message"].as_str().unwrap();
            // A refusal of the engine, not a verdict on the cache: "not measured".
            assert_eq!(r["error"]["phase"], "unsupported");
            assert!(
                msg.contains("save_infer_model/scale_0") || msg.contains("Softmax"),
                "{msg}"
            );
            assert!(msg.contains("run this cell on onnxruntime"), "{msg}");
        }
    }
    // The refusal says nothing about the cache: its verdict is "not measured", never
    // "recalibrate" (which it was while the refusal counted as a failed build).
    let report = calibench(&[
        "report",
        dir_out.to_str().unwrap(),
        "--json",
        "-o",
        dir.path().join("r.md").to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(v["verdict_counts"]["not_measured"], 1, "{v}");
    assert_eq!(v["verdict_counts"]["recalibrate"], 0, "{v}");
}
