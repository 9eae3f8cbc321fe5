//! Reports and exports: golden files of every export format, escaping of hostile strings in
//! the HTML report, and merge/compare end to end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use calibench::matrix::{BackendKind, Cell, Precision};
use calibench::measure::accuracy::{OutputMetrics, Tolerance};
use calibench::report::{render_html, ReportOptions};
use calibench::results::export::ExportFormat;
use calibench::results::schema::*;

fn record(
    model: &str,
    cache: Option<&str>,
    precision: Precision,
    top1: f64,
    median: f64,
    status: Status,
) -> Record {
    let cell = Cell {
        model: model.into(),
        cache: cache.map(String::from),
        device: "cpu".into(),
        precision,
        backend: BackendKind::Reference,
        batch: 1,
    };
    Record {
        schema: RECORD_SCHEMA,
        run_id: "golden".into(),
        matrix: MatrixInfo {
            name: "golden".into(),
            sha256: "ab".repeat(32),
        },
        key: cell.key(),
        cell,
        status,
        error: (status == Status::Failed).then(|| CellError {
            phase: "accuracy".into(),
            message: "logits: top-1 drop 2.00 points > 1.00".into(),
        }),
        model: Artifact {
            id: model.into(),
            path: "m.onnx".into(),
            sha256: "00".repeat(32),
            origin_gpu: None,
        },
        cache: cache.map(|c| Artifact {
            id: c.into(),
            path: "c.cache".into(),
            sha256: "11".repeat(32),
            origin_gpu: Some("NVIDIA L4".into()),
        }),
        gpu: None,
        telemetry: None,
        diagnostics: Vec::new(),
        engine: Some(EngineInfo {
            build_s: 0.25,
            cached: false,
            layer_precisions: [(
                if precision.needs_cache() {
                    "int8"
                } else {
                    precision.as_str()
                }
                .to_string(),
                8,
            )]
            .into(),
            layers: Vec::new(),
            build_path: None,
        }),
        end_to_end: None,
        latency: Some(Latency {
            clock: "wall".into(),
            iterations: 100,
            min_ms: median * 0.9,
            mean_ms: median * 1.05,
            median_ms: median,
            p90_ms: median * 1.1,
            p95_ms: median * 1.2,
            p99_ms: median * 1.5,
            max_ms: median * 2.0,
            std_ms: median * 0.1,
            inferences_per_s: 1000.0 / median,
            samples_per_s: 1000.0 / median,
            estimate: None,
            outliers: None,
        }),
        accuracy: Some(Accuracy {
            passed: status == Status::Ok,
            reason: None,
            samples: 400,
            reference: "eval_ref.npy".into(),
            outputs: vec![OutputMetrics {
                name: "logits".into(),
                elements: 4000,
                cosine: 0.9995,
                top1_accuracy: Some(top1),
                reference_top1_accuracy: Some(0.9875),
                top1_agreement: Some(0.99),
                tolerance: Tolerance::default(),
                passed: status == Status::Ok,
                ..Default::default()
            }],
        }),
        cross_check: Vec::new(),
        expected: None,
        thresholds: None,
        calibench: ToolInfo {
            version: "0.1.0".into(),
            git_commit: "0123456789ab".into(),
        },
        environment: Environment {
            hostname: "ci".into(),
            os: "linux x86_64".into(),
            cpu: "test cpu".into(),
            ..Default::default()
        },
        started_at: "2026-11-25T10:00:00Z".parse().unwrap(),
        finished_at: "2026-11-25T10:00:02Z".parse().unwrap(),
    }
}

fn records() -> Vec<Record> {
    // A GPU engine's record: compute time from CUDA events, end-to-end time beside it.
    let mut gpu_fp32 = record("m", None, Precision::Fp32, 0.9875, 1.0, Status::Ok);
    let compute = gpu_fp32.latency.as_mut().unwrap();
    compute.clock = "cuda-event".into();
    compute.estimate = Some(calibench::results::schema::Estimate {
        mean_ms: 1.0,
        mean_lower_ms: 0.99,
        mean_upper_ms: 1.01,
        ..Default::default()
    });
    let mut end_to_end = compute.clone();
    end_to_end.clock = "wall".into();
    end_to_end.median_ms = 1.25;
    end_to_end.p99_ms = 2.5;
    gpu_fp32.end_to_end = Some(end_to_end);
    let engine = gpu_fp32.engine.as_mut().unwrap();
    engine.build_path = Some("TensorRT 11: fp32 network".into());
    engine.layers = vec![calibench::model::precision::LayerPrecision {
        layer: "conv1".into(),
        op: "Conv".into(),
        precision: "fp32".into(),
        tactic: None,
    }];
    vec![
        gpu_fp32,
        record("m", None, Precision::Fp16, 0.9875, 0.8, Status::Ok),
        record(
            "m",
            Some("l4-cache"),
            Precision::Int8,
            0.985,
            0.5,
            Status::Ok,
        ),
        record(
            "m",
            Some("l4-cache"),
            Precision::Best,
            0.9675,
            0.45,
            Status::Failed,
        ),
    ]
}

#[test]
fn exports_match_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for (format, file) in [
        (ExportFormat::Csv, "export.csv"),
        (ExportFormat::Json, "export.json"),
        (ExportFormat::Junit, "export.junit.xml"),
        (ExportFormat::Markdown, "export.md"),
    ] {
        let mut out = Vec::new();
        format.exporter().export(&records(), &mut out).unwrap();
        let path = dir.join(file);
        if std::env::var_os("CALIBENCH_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &out).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "{} missing: run with CALIBENCH_UPDATE_GOLDEN=1",
                path.display()
            )
        });
        assert_eq!(
            String::from_utf8(out).unwrap(),
            expected,
            "{file} differs from its golden file"
        );
    }
}

#[test]
fn hostile_strings_are_escaped_in_the_html_report() {
    let mut rs = records();
    let hostile = "<script>alert('tensor')</script>";
    rs[3].error.as_mut().unwrap().message =
        format!("Missing scale and zero-point for tensor {hostile}");
    rs[2].cache.as_mut().unwrap().origin_gpu = Some("<img src=x onerror=alert(1)>".into());
    rs[2].cell.cache = Some("c\"><b>bold</b>".into());
    rs[2].key = rs[2].cell.key();
    rs[1].diagnostics.push(Diagnostic {
        kind: "missing_scale".into(),
        message: format!("tensor {hostile} has no scale"),
        fix: "<b>recalibrate</b>".into(),
    });
    let opts = ReportOptions {
        title: "t <i>x</i>".into(),
        sources: vec!["<run>".into()],
        sign_off: true,
        baseline: None,
    };
    let html = render_html(&rs, &opts).unwrap();
    assert!(!html.contains("<script>alert"), "script tag leaked");
    assert!(!html.contains("<img src=x"), "img tag leaked");
    assert!(!html.contains("<b>bold</b>"), "markup in a cache id leaked");
    assert!(
        !html.contains("<b>recalibrate</b>"),
        "markup in a diagnostic leaked"
    );
    assert!(html.contains("has no scale"), "diagnostics are shown");
    assert!(!html.contains("<i>x</i>"), "markup in the title leaked");
    assert!(
        html.contains("&lt;script&gt;alert("),
        "the text is still shown, escaped"
    );
    // The report is one self-contained file.
    assert!(
        !html.contains("http://")
            || html
                .matches("http://")
                .all(|_| html.contains("xmlns=\"http://www.w3.org/2000/svg\""))
    );
    // One inline script of the template's own (sorting), none from the records, no file.
    assert_eq!(
        html.matches("<script").count(),
        1,
        "only the report's own script"
    );
    assert!(
        !html.contains("<script src") && !html.contains("<link"),
        "no external scripts or styles"
    );
}

#[test]
fn html_report_has_every_section() {
    let html = render_html(
        &records(),
        &ReportOptions {
            title: "golden".into(),
            sources: vec!["r".into()],
            sign_off: true,
            baseline: None,
        },
    )
    .unwrap();
    for section in [
        "Release sign-off",
        "Verdicts",
        "Portability matrices",
        "Caches",
        "Layers",
        "Charts",
        "Cells",
        "Environment",
    ] {
        assert!(html.contains(section), "{section} missing");
    }
    assert_eq!(html.matches("<svg").count(), 3, "three inline charts");
    assert!(
        html.contains("recalibrate"),
        "the failed best cell makes the verdict recalibrate"
    );
    assert!(html.contains("NVIDIA L4"), "the cache's origin is shown");
    assert!(html.contains("0123456789ab"), "the commit is shown");
    assert!(
        html.contains("1.2500 &#x2F; 2.5000"),
        "a GPU cell shows end-to-end median / p99 beside compute time"
    );
    assert!(
        html.contains("TensorRT 11: fp32 network") && html.contains("</summary>conv1 fp32"),
        "the build path and the per-layer precisions are shown"
    );
    assert!(
        html.contains("criterion 1.0000 [0.9900, 1.0100]"),
        "criterion's estimate with its interval is shown"
    );
}

fn calibench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_calibench"))
        .args(args)
        .output()
        .unwrap()
}

/// The run folder a `calibench run` printed; exit 1 (a gate failed) still recorded every cell.
fn run_dir(o: &Output) -> PathBuf {
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

#[test]
fn shards_merge_and_compare_gates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("matrices/demo.toml");
    let demo = demo.to_str().unwrap();
    let fast = [
        "--warmup-ms",
        "1",
        "--measurement-ms",
        "2",
        "--samples",
        "3",
        "-q",
        "--output",
        out,
    ];
    let s1 = run_dir(&calibench(
        &[&["run", demo, "--shard", "1/2"][..], &fast[..]].concat(),
    ));
    let s2 = run_dir(&calibench(
        &[&["run", demo, "--shard", "2/2"][..], &fast[..]].concat(),
    ));
    let merged = dir.path().join("merged");
    let o = calibench(&[
        "merge",
        s1.to_str().unwrap(),
        s2.to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("missing:"),
        "both shards together cover the matrix"
    );
    let merged_records = calibench::results::read_results(&merged).unwrap().records;
    assert_eq!(merged_records.len(), 20);
    // One shard alone misses cells.
    let half = dir.path().join("half");
    let o = calibench(&["merge", s1.to_str().unwrap(), "-o", half.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing:"));

    // Comparing a run with itself passes; a baseline twice as fast fails the latency gate.
    assert_eq!(
        calibench(&[
            "compare",
            merged.to_str().unwrap(),
            merged.to_str().unwrap()
        ])
        .status
        .code(),
        Some(0)
    );
    let faster = dir.path().join("faster");
    std::fs::create_dir(&faster).unwrap();
    let text: String = std::fs::read_to_string(merged.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let m = v["latency"]["median_ms"].as_f64().unwrap();
            v["latency"]["median_ms"] = (m / 2.0).into();
            format!("{v}\n")
        })
        .collect();
    std::fs::write(faster.join("results.jsonl"), text).unwrap();
    let o = calibench(&[
        "compare",
        faster.to_str().unwrap(),
        merged.to_str().unwrap(),
        "--markdown",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAILED"));
    let html = dir.path().join("r.html");
    let o = calibench(&[
        "report",
        merged.to_str().unwrap(),
        "-o",
        html.to_str().unwrap(),
        "--baseline",
        faster.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "report --baseline gates too");
    assert!(std::fs::read_to_string(&html)
        .unwrap()
        .contains("Baseline gate"));
}

/// A cuda cell on one GPU, so that speed counts (the reference backend only simulates).
fn gpu_record(precision: Precision, cache: Option<&str>, median: f64, batch: usize) -> Record {
    let mut r = record("m", cache, precision, 0.98, median, Status::Ok);
    r.cell.backend = BackendKind::Cuda;
    r.cell.device = "GPU-1".into();
    r.cell.batch = batch;
    r.key = r.cell.key();
    r.gpu = Some(GpuInfo {
        name: "NVIDIA H200".into(),
        uuid: "GPU-1".into(),
        ..Default::default()
    });
    r
}

#[test]
fn verdict_speed_figures_equal_the_matrix_and_stand_apart_from_accuracy() {
    use calibench::report::portability::{analyze, Verdict};
    // int8 b1 slower than fp16, int8 b64 faster: the verdict and the matrix quote one range.
    let records = vec![
        gpu_record(Precision::Fp16, None, 1.0, 1),
        gpu_record(Precision::Int8, Some("c"), 1.0 / 0.72, 1),
        gpu_record(Precision::Fp16, None, 1.12, 64),
        gpu_record(Precision::Int8, Some("c"), 1.0, 64),
    ];
    let a = analyze(&records);
    let v = &a.verdicts[0];
    assert_eq!(
        v.verdict,
        Verdict::ReuseOk,
        "speed does not change the accuracy verdict"
    );
    assert!(v.speed.contains("0.72–1.12×"), "{}", v.speed);
    assert_eq!(a.matrices[0].rows[0].cells[0].speedup, "0.72–1.12×");
}

#[test]
fn caution_comes_from_the_spec_and_names_its_threshold() {
    use calibench::report::portability::{analyze, Verdict};
    let mut int8 = gpu_record(Precision::Int8, Some("c"), 1.0, 1);
    int8.accuracy.as_mut().unwrap().outputs[0].cosine = 0.99727;
    // No caution band in the spec: the gate (0.99) alone decides, and it passed.
    int8.thresholds = Some(VerdictThresholds {
        min_cosine: Some(0.99),
        ..Default::default()
    });
    let a = analyze(std::slice::from_ref(&int8));
    assert_eq!(
        a.verdicts[0].verdict,
        Verdict::ReuseOk,
        "{:?}",
        a.verdicts[0]
    );
    // With `[gate] caution_min_cosine = 0.999` the same cell is "with caution", saying why.
    int8.thresholds.as_mut().unwrap().caution_min_cosine = Some(0.999);
    let a = analyze(&[int8]);
    let v = &a.verdicts[0];
    assert_eq!(v.verdict, Verdict::ReuseWithCaution);
    assert!(
        v.reasons[0].contains("cosine 0.99727 < caution threshold 0.999")
            && v.reasons[0].contains("gate is 0.99"),
        "{:?}",
        v.reasons
    );
}

#[test]
fn skipped_targets_are_not_measured_and_block_the_sign_off() {
    use calibench::report::portability::{analyze, sign_off, Verdict};
    let mut skipped = gpu_record(Precision::Int8, Some("c"), 1.0, 1);
    skipped.status = Status::Skipped;
    skipped.latency = None;
    skipped.accuracy = None;
    skipped.gpu = None;
    skipped.cell.device = "name~L4".into();
    skipped.key = skipped.cell.key();
    skipped.error = Some(CellError {
        phase: "setup".into(),
        message: "GPU name~L4 is not present on this host".into(),
    });
    let ok = record("m", Some("c"), Precision::Int8, 0.98, 1.0, Status::Ok);
    let a = analyze(&[ok.clone(), skipped]);
    let missing = a
        .verdicts
        .iter()
        .find(|v| v.target.contains("name~L4"))
        .expect("the skipped target keeps its verdict row");
    assert_eq!(missing.verdict, Verdict::NotMeasured);
    let so = sign_off(&a);
    assert!(!so.ready);
    assert!(
        so.blockers.iter().any(|b| b.contains("name~L4")),
        "{:?}",
        so.blockers
    );
    let m = &a.matrices[0];
    let col = m
        .targets
        .iter()
        .position(|t| t.contains("name~L4"))
        .unwrap();
    assert_eq!(m.rows[0].cells[col].accuracy, "not measured");
    // Nothing measured at all is never ready either.
    assert!(!sign_off(&analyze(&[])).ready);
    assert!(sign_off(&analyze(&[ok])).ready);
}

/// A headless Chromium (chromium, chromium-browser or google-chrome on PATH).
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|n| std::env::split_paths(&path).map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

#[test]
fn html_report_renders_in_chromium_at_800_px_with_working_links() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("CALIBENCH_REQUIRE_CHROMIUM").map_or(true, |v| v != "1"),
            "CALIBENCH_REQUIRE_CHROMIUM=1 but no chromium is on PATH"
        );
        eprintln!("skipped: no chromium on PATH (.ci/run installs Debian's chromium)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let html = render_html(
        &records(),
        &ReportOptions {
            title: "layout".into(),
            sources: vec!["r".into()],
            sign_off: true,
            baseline: None,
        },
    )
    .unwrap();
    let file = dir.path().join("report.html");
    std::fs::write(&file, &html).unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=800,1000",
            "--virtual-time-budget=2000",
            "--dump-dom",
        ])
        .arg(format!("file://{}", file.display()))
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    // The inline script ran (it records the page's width) and the page does not overflow.
    let width: u32 = dom
        .split("data-page-width=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no page width in the DOM:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(width <= 800, "the page is {width} px wide at 800 px");
    // Every in-page link lands on an element of the page.
    let ids: std::collections::HashSet<&str> = dom
        .split(" id=\"")
        .skip(1)
        .filter_map(|r| r.split('"').next())
        .collect();
    let links: Vec<&str> = dom
        .split("href=\"#")
        .skip(1)
        .filter_map(|r| r.split('"').next())
        .collect();
    assert!(
        links.len() > 8,
        "the table of contents and verdict links: {links:?}"
    );
    for l in &links {
        assert!(ids.contains(l), "link #{l} goes nowhere");
    }
    for section in [
        "verdicts",
        "portability",
        "caches",
        "charts",
        "cells",
        "environment",
    ] {
        assert!(
            links.contains(&section),
            "the table of contents lacks {section}"
        );
    }
}
