//! End-to-end tests of the `calibench` binary: plan, run, resume after a kill, export.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::mock_spec;

fn calibench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_calibench"));
    c.env_remove("RUST_LOG");
    c
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("calibench starts");
    assert!(
        out.status.success(),
        "calibench failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Keys recorded in a run folder's results.jsonl, with how often each appears.
fn recorded_keys(run_dir: &Path) -> HashMap<String, usize> {
    let text = std::fs::read_to_string(run_dir.join("results.jsonl")).unwrap_or_default();
    let mut keys = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("every line is a record");
        *keys
            .entry(v["key"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    keys
}

fn plan_keys(spec: &Path, args: &[&str]) -> Vec<String> {
    let out = run_ok(calibench().arg("plan").arg(spec).args(args).arg("--json"));
    let cells: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    cells
        .iter()
        .map(|c| c["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn plan_prints_table_json_filters_and_shards() {
    let dir = tempfile::tempdir().unwrap();
    let spec = mock_spec(dir.path(), "");
    let out = run_ok(calibench().arg("plan").arg(&spec));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.starts_with("#") && table.lines().next().unwrap().contains("MODEL"),
        "{table}"
    );
    assert!(table.contains("16 cell(s) selected of 16"), "{table}");

    let all = plan_keys(&spec, &[]);
    assert_eq!(all.len(), 16);
    let int8 = plan_keys(&spec, &["--only", "precision=int8,model=a"]);
    assert_eq!(int8, vec!["a/ca/cpu/int8/mock/b1", "a/ca/cpu/int8/mock/b2"]);

    let mut union: Vec<String> = (1..=3)
        .flat_map(|i| plan_keys(&spec, &["--shard", &format!("{i}/3")]))
        .collect();
    union.sort();
    let mut expected = all.clone();
    expected.sort();
    assert_eq!(union, expected, "3 shards cover every cell exactly once");
}

#[test]
fn bad_spec_exits_2_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let spec = mock_spec(dir.path(), "");
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("model = \"b\"", "model = \"zzz\"");
    std::fs::write(&spec, text).unwrap();
    let out = calibench().arg("plan").arg(&spec).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.toml") && err.contains("caches[1].model") && err.contains("zzz"),
        "{err}"
    );

    let out = calibench()
        .args(["plan", "no-such-spec.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-spec.toml"));

    let out = calibench()
        .arg("plan")
        .arg(&spec)
        .args(["--shard", "4/3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn demo_matrix_runs_and_exports() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = calibench()
        .args([
            "run",
            "--quiet",
            "--warmup-ms",
            "1",
            "--measurement-ms",
            "5",
            "--samples",
            "3",
            "--output",
        ])
        .arg(out_dir.path())
        .arg(repo().join("matrices/demo.toml"))
        .output()
        .unwrap();
    // The demo's failing cache is declared in an [[expect]] table: the run reports its
    // cells as expected failures and exits 0.
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("20 cell(s): 16 ok, 0 failed, 4 expected failure(s)"),
        "{stderr}"
    );
    let run_dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(run_dir.starts_with(out_dir.path()));
    let keys = recorded_keys(&run_dir);
    assert_eq!(keys.len(), 20, "{keys:?}");
    assert!(keys.values().all(|&n| n == 1));
    assert!(run_dir.join("matrix.toml").is_file());

    // The run leaves its report and summary in the run folder and says what to do next.
    assert!(run_dir.join("report.html").is_file() && run_dir.join("summary.md").is_file());
    assert!(
        stderr.contains("report:  ") && stderr.contains("next:    calibench compare"),
        "{stderr}"
    );
    // Its cache section compares the caches tensor by tensor; the failing cache's ranges are
    // ~16× the others' (log2 ≈ 4), and its "recalibrate" verdict links there.
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(html.contains("id=\"caches-digits-cnn\""), "cache section");
    assert!(
        html.contains("href=\"#caches-digits-cnn\">compare this model's caches"),
        "link from the verdict"
    );
    let pair = html
        .split("<b>unnormalized</b> vs <b>minmax</b>: max |log2| <span class=\"pill bad\">")
        .nth(1)
        .unwrap_or_else(|| panic!("no unnormalized vs minmax pair"));
    let max_log2: f64 = pair.split('<').next().unwrap().parse().unwrap();
    assert!((3.0..5.0).contains(&max_log2), "max |log2| {max_log2}");
    let summary = std::fs::read_to_string(run_dir.join("summary.md")).unwrap();
    assert!(summary.contains("recalibrate"), "{summary}");

    // The format follows the output's extension; the CSV carries the accuracy metrics.
    let csv_path = out_dir.path().join("results.csv");
    run_ok(
        calibench()
            .arg("export")
            .arg(&run_dir)
            .arg("-o")
            .arg(&csv_path),
    );
    let mut rd = csv::Reader::from_path(&csv_path).unwrap();
    let headers = rd.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).expect(name);
    let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 20, "one row per cell");
    for row in &rows {
        let cosine: f64 = row[col("cosine")].parse().unwrap();
        let top1: f64 = row[col("top1_accuracy")].parse().unwrap();
        assert!(cosine > 0.9 && top1 > 0.5, "{row:?}");
        assert!(!row[col("max_abs")].is_empty() && !row[col("snr_db")].is_empty() || cosine == 1.0);
    }
    let unknown = calibench()
        .arg("export")
        .arg(&run_dir)
        .arg("-o")
        .arg(out_dir.path().join("results.parquet"))
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("results.parquet"));

    // `report -o r.pdf` is refused (exit 2), never silently written as HTML.
    let pdf = calibench()
        .arg("report")
        .arg(&run_dir)
        .arg("-o")
        .arg(out_dir.path().join("r.pdf"))
        .output()
        .unwrap();
    assert_eq!(pdf.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&pdf.stderr).contains(".pdf"));
    assert!(!out_dir.path().join("r.pdf").exists());
    // `report --json`: the verdicts for scripts.
    let json = run_ok(
        calibench()
            .arg("report")
            .arg(&run_dir)
            .arg("--json")
            .arg("-o")
            .arg(out_dir.path().join("r.md")),
    );
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["cells"], 20);
    assert_eq!(v["verdict_counts"]["recalibrate"], 2, "{v}");
    assert_eq!(
        v["verdicts"][0]["verdict"], "recalibrate",
        "worst first: {v}"
    );

    let json_path = out_dir.path().join("r.json");
    run_ok(
        calibench()
            .arg("export")
            .arg(run_dir.join("results.jsonl"))
            .args(["-f", "json", "-o"])
            .arg(&json_path),
    );
    let records: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(records.len(), 20);
    let r = &records[0];
    assert_eq!(r["schema"], 1);
    assert_eq!(r["matrix"]["name"], "demo");
    assert_eq!(r["model"]["sha256"].as_str().unwrap().len(), 64);
    assert!(r["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(r["calibench"]["version"], env!("CARGO_PKG_VERSION"));
    // The demo runs the real digits CNN on the reference backend and checks accuracy.
    assert_eq!(r["cell"]["backend"], "reference");
    for r in &records {
        let top1 = r["accuracy"]["outputs"][0]["top1_accuracy"]
            .as_f64()
            .unwrap();
        let failed = r["status"] == "failed";
        assert!(
            top1 > if failed { 0.5 } else { 0.9 },
            "{}: top-1 {top1}",
            r["key"]
        );
        // The cache calibrated on unnormalized pixels fails its gate; onnxruntime's entropy,
        // calibench's entropy (NVIDIA's algorithm) and minmax pass.
        assert_eq!(failed, r["cell"]["cache"] == "unnormalized", "{}", r["key"]);
        if failed {
            assert_eq!(r["error"]["phase"], "accuracy");
            assert_eq!(r["expected"]["status"], "failed");
        }
    }
    let int8 = records
        .iter()
        .find(|r| r["cell"]["precision"] == "int8")
        .unwrap();
    assert_eq!(int8["engine"]["layer_precisions"]["int8"], 8);
    assert!(
        int8["cache"]["origin_gpu"].as_str().is_some(),
        "the provenance sidecar is read"
    );
}

#[test]
fn failing_cells_are_recorded_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let spec = mock_spec(dir.path(), "[mock]\nfail = [\"precision=int8,model=b\"]\n");
    let out = calibench()
        .args(["run", "-q", "--output"])
        .arg(dir.path().join("out"))
        .arg(&spec)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed cell makes exit code 1"
    );
    let run_dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let text = std::fs::read_to_string(run_dir.join("results.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 16);
    let failed: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["status"] == "failed").collect();
    assert_eq!(failed.len(), 2);
    assert!(failed
        .iter()
        .all(|r| r["cell"]["model"] == "b" && r["cell"]["precision"] == "int8"));
    assert_eq!(failed[0]["error"]["phase"], "build");
    assert!(failed[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("[mock].fail"));

    // --retry-failed on resume runs only the failed cells again.
    // (--json: the summary and verdicts for scripts; the report is rewritten from every record.)
    let out = calibench()
        .args(["run", "-q", "--json", "--retry-failed", "--resume"])
        .arg(&run_dir)
        .arg(&spec)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["ran"], 2, "{summary}");
    assert_eq!(summary["failed"], 2, "{summary}");
    assert_eq!(summary["passed"], false);
    assert_eq!(summary["verdicts"]["cells"], 18, "{summary}");
    assert!(PathBuf::from(summary["report"].as_str().unwrap()).is_file());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("next:    open "),
        "a failed run points at its report: {stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(run_dir.join("results.jsonl"))
            .unwrap()
            .lines()
            .count(),
        18
    );
}

#[test]
fn killed_run_resumes_without_losing_or_repeating_cells() {
    let dir = tempfile::tempdir().unwrap();
    let spec = mock_spec(dir.path(), "[mock]\ndelay_ms = 150\n");
    let out_dir = dir.path().join("out");
    let mut child = calibench()
        .args(["run", "-q", "--run-id", "killed", "--output"])
        .arg(&out_dir)
        .arg(&spec)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run_dir = out_dir.join("killed");
    let deadline = Instant::now() + Duration::from_secs(60);
    while recorded_keys(&run_dir).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the run recorded nothing in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = recorded_keys(&run_dir);
    assert!(
        before.len() >= 3 && before.len() < 16,
        "killed mid-run: {} cells",
        before.len()
    );

    // Starting the same run id again is refused, with the fix.
    let out = calibench()
        .args(["run", "-q", "--run-id", "killed", "--output"])
        .arg(&out_dir)
        .arg(&spec)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));

    let out = run_ok(
        calibench()
            .args(["run", "--resume"])
            .arg(&run_dir)
            .arg(&spec),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{} recorded earlier", before.len())),
        "{stderr}"
    );
    let after = recorded_keys(&run_dir);
    assert_eq!(after.len(), 16, "every cell recorded");
    assert!(after.values().all(|&n| n == 1), "no cell twice: {after:?}");
    for k in before.keys() {
        assert!(after.contains_key(k));
    }
}

#[test]
fn resume_refuses_a_changed_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let spec = mock_spec(dir.path(), "");
    let out = run_ok(
        calibench()
            .args(["run", "-q", "--only", "model=a", "--output"])
            .arg(dir.path().join("o"))
            .arg(&spec),
    );
    let run_dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let changed = mock_spec(dir.path(), "# changed\n");
    let out = calibench()
        .args(["run", "-q", "--resume"])
        .arg(&run_dir)
        .arg(&changed)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    run_ok(
        calibench()
            .args(["run", "-q", "--force", "--resume"])
            .arg(&run_dir)
            .arg(&changed),
    );
    assert_eq!(recorded_keys(&run_dir).len(), 16);
}

#[test]
fn help_reads_like_a_benchmarking_tool() {
    let out = run_ok(calibench().arg("--help"));
    let help = String::from_utf8(out.stdout).unwrap();
    for word in ["plan", "run", "export", "Exit codes"] {
        assert!(help.contains(word), "{help}");
    }
    let out = run_ok(calibench().args(["run", "--help"]));
    let help = String::from_utf8(out.stdout).unwrap();
    for word in [
        "--only",
        "--shard",
        "--resume",
        "--output",
        "--measurement-ms",
    ] {
        assert!(help.contains(word), "{help}");
    }
}

#[test]
fn shipped_matrices_are_valid() {
    for m in ["demo", "nightly", "release-qualification", "edge"] {
        let out = run_ok(
            calibench()
                .arg("plan")
                .arg(repo().join(format!("matrices/{m}.toml")))
                .arg("--json"),
        );
        let cells: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert!(!cells.is_empty(), "{m}");
    }
}

#[test]
fn rerun_builds_no_engine_and_gc_cleans_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let demo = repo().join("matrices/demo.toml");
    let fast = [
        "-q",
        "--no-criterion",
        "--warmup-ms",
        "1",
        "--measurement-ms",
        "2",
        "--samples",
        "3",
        "--only",
        "model=digits-cnn",
    ];
    let run = |id: &str| {
        let o = calibench()
            .args(["run", "--run-id", id, "--output"])
            .arg(&out)
            .args(fast)
            .arg(&demo)
            .output()
            .unwrap();
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = std::fs::read_to_string(out.join(id).join("results.jsonl")).unwrap();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let first = run("first");
    assert!(first.iter().all(|r| r["engine"]["cached"] == false));
    // A damaged stored engine is rebuilt, not trusted.
    let store = out.join(".cache/engines");
    let engines: Vec<PathBuf> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(engines.len(), first.len());
    std::fs::write(&engines[0], b"garbage").unwrap();
    let second = run("second");
    let cached = second
        .iter()
        .filter(|r| r["engine"]["cached"] == true)
        .count();
    assert_eq!(
        cached,
        second.len() - 1,
        "every engine but the damaged one comes from the store"
    );
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a["status"], b["status"]);
        assert_eq!(
            a["accuracy"]["outputs"][0]["top1_accuracy"],
            b["accuracy"]["outputs"][0]["top1_accuracy"]
        );
    }
    let o = calibench()
        .args(["store", "gc", "--older-than", "0", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 0);
}

#[test]
fn check_runs_one_model_and_cache_without_a_spec() {
    let dir = tempfile::tempdir().unwrap();
    let digits = |f: &str| repo().join("fixtures/digits").join(f);
    let check = |cache: &str, extra: &[&str]| {
        calibench()
            .args(["check", "--onnx"])
            .arg(digits("digits_cnn.onnx"))
            .arg("--calib")
            .arg(digits(cache))
            .args(["--int8", "--eval"])
            .arg(digits("eval_inputs.npy"))
            .arg("--labels")
            .arg(digits("eval_labels.npy"))
            .args([
                "--no-criterion",
                "--warmup-ms",
                "1",
                "--measurement-ms",
                "5",
                "--samples",
                "3",
                "-o",
            ])
            .arg(dir.path())
            .args(extra)
            .output()
            .unwrap()
    };
    // A good cache: fp32 and int8 run, the verdict says so, record and report are written.
    let good = check("digits_cnn.minmax.cache", &[]);
    let err = String::from_utf8_lossy(&good.stderr).into_owned();
    assert_eq!(good.status.code(), Some(0), "{err}");
    assert!(err.contains("2 cell(s): 2 ok"), "{err}");
    assert!(
        err.contains("verdict: digits_cnn · digits_cnn.minmax on cpu · reference: reuse OK"),
        "{err}"
    );
    let run_dir = PathBuf::from(String::from_utf8(good.stdout).unwrap().trim());
    assert!(run_dir.join("report.html").is_file());
    assert_eq!(recorded_keys(&run_dir).len(), 2);
    // The cache calibrated on unnormalized pixels: recalibrate, exit 1.
    let bad = check("digits_cnn.unnormalized.cache", &[]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(
        err.contains("recalibrate") && err.contains("cosine similarity 0.97"),
        "{err}"
    );
    // --atol/--rtol: Polygraphy's elementwise test at those tolerances, and nothing else.
    let loose = check(
        "digits_cnn.unnormalized.cache",
        &["--atol", "10", "--rtol", "10"],
    );
    assert_eq!(
        loose.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&loose.stderr)
    );
    // --print-spec prints a spec `plan` accepts: the one-shot grows into a matrix.
    let spec = check("digits_cnn.minmax.cache", &["--print-spec"]);
    let path = dir.path().join("grown.toml");
    std::fs::write(&path, &spec.stdout).unwrap();
    assert_eq!(plan_keys(&path, &[]).len(), 2);
    // --int8 without a cache is refused with the fix.
    let none = calibench()
        .args(["check", "--onnx"])
        .arg(digits("digits_cnn.onnx"))
        .arg("--int8")
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("calibench calibrate -m"));
}
