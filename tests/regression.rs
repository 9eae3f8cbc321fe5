//! One named test per fixed defect of the gates, the run folder and bad input (as ripgrep's
//! tests/regression.rs). Each name says what used to go wrong.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{digits, mock_spec};

fn calibench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_calibench"));
    c.env_remove("RUST_LOG");
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn no_panic(o: &Output) {
    assert_ne!(o.status.code(), Some(101), "panicked:\n{}", stderr(o));
    assert!(!stderr(o).contains("panicked"), "{}", stderr(o));
}

fn run(spec: &Path, out: &Path, extra: &[&str]) -> Output {
    calibench()
        .args(["run", "-q", "--output"])
        .arg(out)
        .args(extra)
        .arg(spec)
        .output()
        .unwrap()
}

/// `calibench run -q` started in the background, its output piped.
fn spawn_run(spec: &Path, out: &Path, extra: &[&str]) -> std::process::Child {
    calibench()
        .args(["run", "-q", "--output"])
        .arg(out)
        .args(extra)
        .arg(spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn run_dir_of(o: &Output) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

fn lines(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("results.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A mock spec whose GPU cells can never find their GPU, beside CPU cells.
fn spec_with_absent_gpu(dir: &Path) -> PathBuf {
    let spec = mock_spec(dir, "");
    let text = std::fs::read_to_string(&spec).unwrap().replace(
        "devices = [\"cpu\"]",
        "devices = [\"cpu\", \"GPU-00000000-0000-0000-0000-calibenchnone\"]",
    );
    std::fs::write(&spec, text).unwrap();
    spec
}

#[test]
fn skipped_gpu_cells_no_longer_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_with_absent_gpu(dir.path());
    let o = run(&spec, &dir.path().join("out"), &["--only", "device=GPU-*"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("16 skipped (not measured"),
        "{}",
        stderr(&o)
    );
    let o = run(
        &spec,
        &dir.path().join("out"),
        &["--only", "device=GPU-*", "--allow-skipped"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn sign_off_is_not_ready_when_gpu_cells_were_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_with_absent_gpu(dir.path());
    let o = run(&spec, &dir.path().join("out"), &["--allow-skipped"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let md = dir.path().join("summary.md");
    let r = calibench()
        .arg("report")
        .arg(run_dir_of(&o))
        .args(["--sign-off", "-o"])
        .arg(&md)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", stderr(&r));
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(text.contains("**Not ready to sign:**"), "{text}");
    assert!(text.contains("not measured"), "{text}");
    assert!(
        text.contains("GPU-00000000-0000-0000-0000-calibenchnone"),
        "the missing target is listed: {text}"
    );
    let html = dir.path().join("report.html");
    calibench()
        .arg("report")
        .arg(run_dir_of(&o))
        .args(["--sign-off", "-o"])
        .arg(&html)
        .output()
        .unwrap();
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Not ready to sign:") && !page.contains("Ready to sign:</b>"));
}

#[test]
fn resume_of_a_run_with_failed_cells_no_longer_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let spec = mock_spec(dir.path(), "[mock]\nfail = [\"precision=int8,model=b\"]\n");
    let o = run(&spec, &dir.path().join("out"), &[]);
    assert_eq!(o.status.code(), Some(1));
    let again = run(
        &spec,
        &dir.path().join("out"),
        &["--resume", run_dir_of(&o).to_str().unwrap()],
    );
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("(0 run now, 16 recorded earlier): 14 ok, 2 failed"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn a_filter_that_selects_nothing_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let spec = mock_spec(dir.path(), "");
    let o = run(&spec, &dir.path().join("out"), &["--only", "cache=nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cache nope is none of the matrix's: ca, cb, none"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("out").exists(), "no run folder is made");
    let p = calibench()
        .arg("plan")
        .arg(&spec)
        .args(["--only", "precision=int9"])
        .output()
        .unwrap();
    assert_eq!(p.status.code(), Some(2));
    assert!(stderr(&p).contains("precision int9 is none of the matrix's"));
}

#[test]
fn expected_failures_pass_the_run_and_stale_expectations_fail_it() {
    let dir = tempfile::tempdir().unwrap();
    let expect = "[mock]\nfail = [\"precision=int8,model=b\"]\n\
                  [[expect]]\nonly = \"model=b,precision=int8\"\nstatus = \"failed\"\nreason = \"cache of the wrong model\"\n";
    let spec = mock_spec(dir.path(), expect);
    let o = run(&spec, &dir.path().join("out"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("14 ok, 0 failed, 2 expected failure(s)"),
        "{}",
        stderr(&o)
    );
    let records = lines(&run_dir_of(&o));
    let failed: Vec<_> = records.iter().filter(|r| r["status"] == "failed").collect();
    assert!(failed
        .iter()
        .all(|r| r["expected"]["reason"] == "cache of the wrong model"));

    // The defect is fixed but the expectation stays: the run says so and fails.
    let stale = mock_spec(
        dir.path(),
        &expect.replace("fail = [\"precision=int8,model=b\"]", "fail = []"),
    );
    let o = run(&stale, &dir.path().join("out"), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("2 passed although expected to fail or skip"),
        "{}",
        stderr(&o)
    );
}

/// A copy of the digits CNN whose first weight claims a zero-length dimension but keeps its
/// data (a malformed export).
fn zero_length_weight_model(dir: &Path) -> PathBuf {
    use calibench::model::onnx::OnnxModel;
    let mut m = OnnxModel::load(Path::new(&digits("digits_cnn.onnx"))).unwrap();
    let graph = m.graph_mut();
    let conv = graph.node.iter().find(|n| n.op_type == "Conv").unwrap();
    let weight = conv.input[1].clone();
    let init = graph
        .initializer
        .iter_mut()
        .find(|t| t.name == weight)
        .unwrap();
    init.dims[1] = 0;
    let path = dir.join("zero.onnx");
    std::fs::write(&path, m.to_bytes()).unwrap();
    path
}

#[test]
fn to_qdq_on_a_zero_length_initializer_no_longer_panics() {
    let dir = tempfile::tempdir().unwrap();
    let model = zero_length_weight_model(dir.path());
    let cache = digits("digits_cnn.entropy.cache");
    let o = calibench()
        .args(["cache", "to-qdq", "--model"])
        .arg(&model)
        .args(["--cache", &cache, "-o"])
        .arg(dir.path().join("q.onnx"))
        .output()
        .unwrap();
    no_panic(&o);
    let o = calibench()
        .args(["to-fp16", "--model"])
        .arg(&model)
        .args(["--cache", &cache, "-o"])
        .arg(dir.path().join("b.onnx"))
        .output()
        .unwrap();
    no_panic(&o);
}

#[test]
fn store_gc_ages_are_parsed_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("engines");
    std::fs::create_dir_all(&store).unwrap();
    let engine = store.join("a.engine");
    std::fs::write(&engine, b"x").unwrap();
    for age in ["7д", "213503982334602d", "-1d", "1.5d", "d", "7 d"] {
        let o = calibench()
            .args(["store", "gc", "--store"])
            .arg(&store)
            .args(["--older-than", age])
            .output()
            .unwrap();
        no_panic(&o);
        assert_eq!(o.status.code(), Some(2), "{age}: {}", stderr(&o));
        assert!(engine.exists(), "{age} deleted an engine");
    }
}

#[test]
fn a_closed_pipe_ends_quietly() {
    // ~1 MB of plan: far more than a pipe holds, so the writer meets the closed pipe.
    let dir = tempfile::tempdir().unwrap();
    let spec = mock_spec(dir.path(), "");
    let batches: Vec<String> = (1..=400).map(|b| b.to_string()).collect();
    let text = std::fs::read_to_string(&spec).unwrap().replace(
        "batch_sizes = [1, 2]",
        &format!("batch_sizes = [{}]", batches.join(", ")),
    );
    std::fs::write(&spec, text).unwrap();
    for args in [&["plan", "--json"][..], &["plan"][..]] {
        let mut child = calibench()
            .args(args)
            .arg(&spec)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        no_panic(&o);
        assert_eq!(
            stderr(&o),
            "",
            "{args:?}: a closed pipe is not an error to report"
        );
    }
}

#[test]
fn two_runs_with_one_run_id_no_longer_share_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let spec = mock_spec(dir.path(), "[mock]\ndelay_ms = 20\n");
    let out = dir.path().join("out");
    let start = || spawn_run(&spec, &out, &["--run-id", "R"]);
    let (a, b) = (start(), start());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut codes = [a.status.code(), b.status.code()];
    codes.sort();
    assert_eq!(codes, [Some(0), Some(2)], "{}\n{}", stderr(&a), stderr(&b));
    let loser = if a.status.code() == Some(2) { &a } else { &b };
    assert!(
        stderr(loser).contains("exists already"),
        "{}",
        stderr(loser)
    );
    let records = lines(&out.join("R"));
    let keys: std::collections::HashSet<_> = records.iter().map(|r| r["key"].to_string()).collect();
    assert_eq!((records.len(), keys.len()), (16, 16));
}

#[test]
fn runs_started_in_the_same_second_get_their_own_folders() {
    let dir = tempfile::tempdir().unwrap();
    let spec = mock_spec(dir.path(), "");
    let out = dir.path().join("out");
    let start = || spawn_run(&spec, &out, &["--only", "model=a"]);
    let children: Vec<_> = (0..3).map(|_| start()).collect();
    let mut dirs = Vec::new();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        dirs.push(run_dir_of(&o));
    }
    dirs.sort();
    dirs.dedup();
    assert_eq!(dirs.len(), 3);
    for d in &dirs {
        assert_eq!(lines(d).len(), 8, "{}", d.display());
    }
}

#[test]
fn a_second_writer_to_a_run_folder_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let spec = mock_spec(dir.path(), "[mock]\ndelay_ms = 200\n");
    let out = dir.path().join("out");
    let mut first = calibench()
        .args(["run", "-q", "--run-id", "held", "--output"])
        .arg(&out)
        .arg(&spec)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run_dir = out.join("held");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run_dir.join(".lock").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = run(&spec, &out, &["--resume", run_dir.to_str().unwrap()]);
    first.wait().unwrap();
    assert_eq!(second.status.code(), Some(2), "{}", stderr(&second));
    assert!(
        stderr(&second).contains(&format!("pid {}", first.id())),
        "{}",
        stderr(&second)
    );
    let records = lines(&run_dir);
    let keys: std::collections::HashSet<_> = records.iter().map(|r| r["key"].to_string()).collect();
    assert_eq!(records.len(), keys.len(), "no cell recorded twice");
}

#[test]
fn resume_refuses_replaced_model_or_cache_files() {
    let dir = tempfile::tempdir().unwrap();
    let spec = mock_spec(dir.path(), "");
    let out = dir.path().join("out");
    let o = run(&spec, &out, &["--only", "model=a,precision=fp32"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    std::fs::write(dir.path().join("a.cache"), "a cache made again").unwrap();
    let again = run(&spec, &out, &["--resume", run_dir_of(&o).to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("cache:a:ca: sha256"),
        "{}",
        stderr(&again)
    );
    let forced = run(
        &spec,
        &out,
        &["--resume", run_dir_of(&o).to_str().unwrap(), "--force"],
    );
    assert_eq!(forced.status.code(), Some(0), "{}", stderr(&forced));
}

#[test]
fn run_ids_are_single_path_components() {
    let dir = tempfile::tempdir().unwrap();
    let spec = mock_spec(dir.path(), "");
    let out = dir.path().join("out");
    for id in ["../x", "a/b", ".."] {
        let o = run(&spec, &out, &["--run-id", id]);
        assert_eq!(o.status.code(), Some(2), "{id}");
        assert!(stderr(&o).contains("--run-id"), "{}", stderr(&o));
    }
    assert!(!dir.path().join("x").exists());
}

/// A spec of the digits CNN on the reference backend at fp32, with its files in `dir`.
fn digits_spec(dir: &Path, model: &str, eval_inputs: &str) -> PathBuf {
    let text = format!(
        "version = 1\nname = \"digits\"\n[axes]\nprecisions = [\"fp32\"]\nbackends = [\"reference\"]\n\
         [[models]]\nid = \"digits\"\npath = \"{model}\"\neval_inputs = \"{eval_inputs}\"\n\
         reference = \"{reference}\"\n[models.tolerance]\natol = 1e-3\nrtol = 1e-3\n\
         [latency]\nwarmup_ms = 1\nmeasurement_ms = 5\nsamples = 3\n",
        reference = digits("eval_ref.npy")
    );
    let p = dir.join("digits.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn bad_files_named_by_a_spec_exit_2_before_any_cell() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(digits("digits_cnn.onnx")).unwrap();
    std::fs::write(dir.path().join("cut.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    let spec = digits_spec(dir.path(), "cut.onnx", &digits("eval_inputs.npy"));
    let o = run(&spec, &dir.path().join("out"), &["--no-criterion"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cut.onnx") && stderr(&o).contains("no cell was run"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("out").exists());
}

#[test]
fn nan_in_eval_inputs_is_a_diagnostic() {
    use calibench::model::data::{read_arrays, write_npz};
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = read_arrays(Path::new(&digits("eval_inputs.npy")))
        .unwrap()
        .remove(0)
        .1;
    inputs.data[3] = f32::NAN;
    let npz = dir.path().join("inputs.npz");
    write_npz(&npz, &[("input".into(), inputs)]).unwrap();
    let spec = digits_spec(
        dir.path(),
        &digits("digits_cnn.onnx"),
        npz.to_str().unwrap(),
    );
    let o = run(&spec, &dir.path().join("out"), &["--no-criterion"]);
    no_panic(&o);
    let records = lines(&run_dir_of(&o));
    let kinds: Vec<&str> = records[0]["diagnostics"]
        .as_array()
        .map(|d| d.iter().filter_map(|d| d["kind"].as_str()).collect())
        .unwrap_or_default();
    assert!(kinds.contains(&"non_finite_eval_data"), "{:?}", records[0]);
}

#[test]
fn a_damaged_stored_engine_is_rebuilt_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let spec = digits_spec(
        dir.path(),
        &digits("digits_cnn.onnx"),
        &digits("eval_inputs.npy"),
    );
    let out = dir.path().join("out");
    let first = run(&spec, &out, &["--no-criterion"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let store = out.join(".cache/engines");
    let engine = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "engine"))
        .expect("the engine was stored");
    let mut bytes = std::fs::read(&engine).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&engine, &bytes).unwrap();
    let second = run(&spec, &out, &["--no-criterion"]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let r = &lines(&run_dir_of(&second))[0];
    assert_eq!(r["engine"]["cached"], false, "{r}");
    assert!(r["diagnostics"]
        .to_string()
        .contains("stored_engine_damaged"));
}

#[test]
fn compare_takes_top1_drop_as_a_fraction_like_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let o = calibench()
        .arg("compare")
        .arg(dir.path())
        .arg(dir.path())
        .args(["--max-top1-drop", "50"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a fraction"), "{}", stderr(&o));
}

/// Re-tagging a TensorRT cache for another TensorRT (the fix calibench's tensorrt backend names
/// when a header's version would make TensorRT ignore the cache) keeps every scale bit for bit
/// and the calibrator the cache was made with; it used to round-trip through amax (scale × 127)
/// and write EntropyCalibration2 over a MinMaxCalibration header.
#[test]
fn import_retags_a_tensorrt_cache_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let src = digits("digits_cnn.minmax.cache");
    let out = dir.path().join("retagged.cache");
    let o = calibench()
        .args(["cache", "import", &src, "--trt-version", "10.16.0", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("scales unchanged"), "{}", stderr(&o));
    let before = std::fs::read_to_string(&src).unwrap();
    let after = std::fs::read_to_string(&out).unwrap();
    let (head_before, body_before) = before.split_once('\n').unwrap();
    let (head_after, body_after) = after.split_once('\n').unwrap();
    assert!(head_before.ends_with("-MinMaxCalibration"), "{head_before}");
    assert_eq!(head_after, "TRT-101600-MinMaxCalibration");
    assert_eq!(body_after, body_before);
}

#[test]
fn criterion_console_output_no_longer_reaches_the_user() {
    // criterion printed "Gnuplot not found, using plotters backend" and its "Benchmarking …"
    // analysis into calibench's stderr, and its silencing could swallow calibench's own lines.
    let dir = tempfile::tempdir().unwrap();
    let spec = mock_spec(dir.path(), "");
    let o = calibench()
        .args(["run", "--output"])
        .arg(dir.path().join("out"))
        .arg(&spec)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    for leak in [
        "Gnuplot",
        "Benchmarking",
        "Analyzing",
        "Warming up",
        "time:   [",
    ] {
        assert!(
            !err.contains(leak),
            "criterion's {leak:?} reached stderr:\n{err}"
        );
    }
    // Every cell's line and the closing lines still reach the user.
    let cell_lines = err.lines().filter(|l| l.starts_with('[')).count();
    assert_eq!(cell_lines, 16, "{err}");
    assert!(
        err.contains("16 cell(s): 16 ok") && err.contains("report:  "),
        "{err}"
    );
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout is the run folder only: {stdout:?}"
    );
    assert!(Path::new(stdout.trim()).join("results.jsonl").is_file());
}

/// The digits CNN with its batch axis fixed to `batch`, as `torch.onnx.export` writes models
/// exported without dynamic axes.
fn fixed_batch_model(dir: &Path, batch: i64) -> PathBuf {
    use calibench::model::onnx::{pb, OnnxModel};
    use pb::tensor_shape_proto::dimension::Value;
    let mut m = OnnxModel::load(Path::new(&digits("digits_cnn.onnx"))).unwrap();
    let input = &mut m.graph_mut().input[0];
    match input.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        Some(pb::type_proto::Value::TensorType(t)) => {
            t.shape.as_mut().unwrap().dim[0].value = Some(Value::DimValue(batch));
        }
        other => panic!("unexpected input type {other:?}"),
    }
    let path = dir.join(format!("fixed{batch}.onnx"));
    std::fs::write(&path, m.to_bytes()).unwrap();
    path
}

#[test]
fn a_model_with_a_fixed_batch_axis_now_calibrates_and_runs() {
    // torchvision models exported by torch 2.11 fix the batch at 1; calibrate fed them batches
    // of 8 and failed ("input … has shape [8, 3, 224, 224], the engine takes [1, 3, 224, 224]").
    let dir = tempfile::tempdir().unwrap();
    let calibrate = |model: &Path| {
        calibench()
            .args(["calibrate", "--method", "minmax", "-m"])
            .arg(model)
            .args(["-d", &digits("calib.npy"), "-o"])
            .arg(dir.path().join("c.cache"))
            .output()
            .unwrap()
    };
    let o = calibrate(&fixed_batch_model(dir.path(), 1));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("fixed batch of 1: calibrating in batches of 1"),
        "{}",
        stderr(&o)
    );
    // The same ranges as calibrating the dynamic-batch model (minmax does not depend on batching).
    let fixed = std::fs::read_to_string(dir.path().join("c.cache")).unwrap();
    let o = calibrate(Path::new(&digits("digits_cnn.onnx")));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let dynamic = std::fs::read_to_string(dir.path().join("c.cache")).unwrap();
    assert_eq!(fixed, dynamic);
    // And it runs: its evaluation samples are fed one batch of 1 at a time (the preflight
    // took the fixed batch axis for a sample dimension and refused them).
    let fixed1 = fixed_batch_model(dir.path(), 1);
    let spec = digits_spec(
        dir.path(),
        fixed1.to_str().unwrap(),
        &digits("eval_inputs.npy"),
    );
    let o = run(&spec, &dir.path().join("out"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let records = lines(&run_dir_of(&o));
    assert_eq!(records.len(), 1);
    assert!(
        records[0]["accuracy"]["outputs"][0]["cosine"]
            .as_f64()
            .unwrap()
            > 0.99999
    );
    // Reference outputs computed for it (none given) run at its batch too (they were computed
    // in batches of 8 and every cell was "not measured").
    let o = calibench()
        .args([
            "check",
            "--no-criterion",
            "--samples",
            "3",
            "--measurement-ms",
            "5",
            "--onnx",
        ])
        .arg(&fixed1)
        .args(["--eval", &digits("eval_inputs.npy"), "-o"])
        .arg(dir.path().join("check"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A fixed batch the samples do not split into is refused with the fix.
    let o = calibrate(&fixed_batch_model(dir.path(), 3));
    no_panic(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("fixed batch of 3") && stderr(&o).contains("dynamic batch axis"),
        "{}",
        stderr(&o)
    );
}
