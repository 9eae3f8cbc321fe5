//! GPU selection in runs, with fake GPU inventories (no GPU needed): selectors resolve to the
//! GPUs present, absent GPUs are skipped with a recorded reason, and records name their GPU.

use std::path::Path;
use std::process::Command;

use calibench::gpu::nvml::{GpuInfo, GpuInventory};
use calibench::matrix::Spec;
use calibench::results::read_results;
use calibench::runner::{run, RunOptions};

mod common;
use common::digits;

fn spec(dir: &Path, devices: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("m.onnx"), "m").unwrap();
    let text = format!(
        "version = 1\nname = \"gpus\"\n[axes]\nprecisions = [\"fp32\"]\nbackends = [\"mock\"]\ndevices = [{devices}]\n\
         [[models]]\nid = \"m\"\npath = \"m.onnx\"\n[latency]\nwarmup_ms = 1\nmeasurement_ms = 2\nsamples = 3\n"
    );
    let p = dir.join("spec.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn fake(names: &[&str]) -> GpuInventory {
    GpuInventory {
        driver: "580.0".into(),
        cuda_driver: "13.0".into(),
        gpus: names
            .iter()
            .enumerate()
            .map(|(i, n)| GpuInfo {
                index: i as u32,
                name: n.to_string(),
                uuid: format!("GPU-fake-{i}"),
                ..Default::default()
            })
            .collect(),
    }
}

fn options(dir: &Path, gpus: GpuInventory) -> RunOptions {
    RunOptions {
        output_dir: dir.join("out"),
        run_id: None,
        resume: None,
        retry_failed: false,
        force: false,
        filter: Default::default(),
        shard: None,
        latency: Default::default(),
        progress: false,
        gpus: Some(gpus),
        telemetry_period: None,
        criterion: false,
        criterion_html: false,
        engine_store: None,
        serial: false,
        allow_skipped: false,
        cross_check: Vec::new(),
    }
}

#[test]
fn selectors_resolve_to_present_gpus_and_absent_ones_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = Spec::load(&spec(
        dir.path(),
        "\"all\", \"name~L4\", \"name~A100\", \"cpu\"",
    ))
    .unwrap();
    let mut opts = options(dir.path(), fake(&["NVIDIA H100 80GB HBM3", "NVIDIA L4"]));
    opts.latency = loaded.spec.latency;
    let summary = run(&loaded, &opts).unwrap();
    let mut records = read_results(&summary.run_dir).unwrap().records;
    // Workers append in the order their cells finish; compare in key order.
    let order = ["GPU-fake-0", "GPU-fake-1", "name~A100", "cpu"];
    records.sort_by_key(|r| order.iter().position(|d| *d == r.cell.device));
    let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
    // "all" gives both GPUs; "name~L4" names GPU 1 again (one cell, not two); A100 is absent.
    assert_eq!(
        keys,
        [
            "m/none/GPU-fake-0/fp32/mock/b1",
            "m/none/GPU-fake-1/fp32/mock/b1",
            "m/none/name~A100/fp32/mock/b1",
            "m/none/cpu/fp32/mock/b1"
        ]
    );
    assert_eq!(
        records[0].gpu.as_ref().unwrap().name,
        "NVIDIA H100 80GB HBM3"
    );
    assert_eq!(records[1].gpu.as_ref().unwrap().uuid, "GPU-fake-1");
    assert_eq!(records[2].status.to_string(), "skipped");
    let why = &records[2].error.as_ref().unwrap().message;
    assert!(
        why.contains("not present") && why.contains("NVIDIA L4"),
        "{why}"
    );
    assert!(records[3].gpu.is_none());
    assert_eq!(records[0].environment.driver.as_deref(), Some("580.0"));
    assert_eq!(
        (summary.ok, summary.skipped_count(), summary.failed),
        (3, 1, 0)
    );
    assert!(
        summary.any_failed(),
        "a planned GPU cell that was not measured fails the run"
    );
    assert!(summary.line().contains("1 skipped"), "{}", summary.line());
}

#[test]
fn absent_gpu_cells_are_skipped_and_fail_the_run_unless_allowed() {
    // No host has this GPU: the cell is skipped with or without NVML.
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        "\"GPU-00000000-0000-0000-0000-calibenchnone\", \"cpu\"",
    );
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_calibench"))
            .args(["run", "-q", "--output"])
            .arg(dir.path().join("out"))
            .args(extra)
            .arg(&spec)
            .output()
            .unwrap()
    };
    let o = run(&[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("1 skipped (not measured"), "{stderr}");
    let run_dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let records = read_results(Path::new(&run_dir)).unwrap().records;
    assert_eq!(records.len(), 2);
    let gpu_cell = records.iter().find(|r| r.cell.device != "cpu").unwrap();
    assert_eq!(gpu_cell.status.to_string(), "skipped");
    let why = &gpu_cell.error.as_ref().unwrap().message;
    assert!(
        why.contains("NVML is not available") || why.contains("not present"),
        "{why}"
    );
    let o = run(&["--allow-skipped"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn gpus_without_nvml_exits_2_naming_nvml() {
    let o = Command::new(env!("CARGO_BIN_EXE_calibench"))
        .arg("gpus")
        .output()
        .unwrap();
    if calibench::gpu::nvml::inventory().is_ok() {
        assert_eq!(o.status.code(), Some(0));
    } else {
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("NVML is not available"));
    }
}

#[test]
fn unavailable_gpu_backends_are_skipped_with_the_reason_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(spec(dir.path(), "\"0\", \"cpu\""))
        .unwrap()
        .replace("m.onnx", &digits("digits_cnn.onnx"))
        .replace(
            "backends = [\"mock\"]",
            "backends = [\"tensorrt\", \"cuda\", \"mock\"]",
        );
    let path = dir.path().join("gpu-backends.toml");
    std::fs::write(&path, text).unwrap();
    let loaded = Spec::load(&path).unwrap();
    let mut opts = options(dir.path(), fake(&["NVIDIA H100 80GB HBM3"]));
    opts.latency = loaded.spec.latency;
    let summary = run(&loaded, &opts).unwrap();
    let records = read_results(&summary.run_dir).unwrap().records;
    let by = |backend: &str| {
        records
            .iter()
            .find(|r| r.cell.backend.to_string() == backend)
            .unwrap()
    };
    let trt = by("tensorrt");
    assert_eq!(trt.status.to_string(), "skipped");
    assert_eq!(trt.error.as_ref().unwrap().phase, "setup");
    let msg = &trt.error.as_ref().unwrap().message;
    if cfg!(feature = "tensorrt") {
        assert!(
            msg.contains("TensorRT not found") || msg.contains("TensorRT"),
            "{msg}"
        );
    } else {
        assert!(
            msg.contains("built without the tensorrt feature") && msg.contains("TENSORRT_ROOT"),
            "{msg}"
        );
    }
    // The cuda backend needs libcuda: without it each cuda cell fails naming it; int8/best
    // cells fail because the cuda backend runs fp32/fp16 only so far.
    for record in records
        .iter()
        .filter(|r| r.cell.backend.to_string() == "cuda")
    {
        if let Some(error) = &record.error {
            assert!(
                error.message.contains("libcuda")
                    || error.message.contains("not implemented yet")
                    || error.message.contains("m.onnx"),
                "{}",
                error.message
            );
        } else {
            assert!(calibench::gpu::cuda::driver_present());
        }
    }
    assert!(
        records
            .iter()
            .any(|r| r.cell.backend.to_string() == "mock" && r.status.to_string() == "ok"),
        "the run goes on"
    );
}

/// Whether a cell of one GPU ran while a cell of the other was running.
fn ran_at_once(records: &[calibench::results::Record], a: &str, b: &str) -> bool {
    records.iter().filter(|r| r.cell.device == a).any(|x| {
        records
            .iter()
            .filter(|r| r.cell.device == b)
            .any(|y| x.started_at < y.finished_at && y.started_at < x.finished_at)
    })
}

#[test]
fn one_worker_per_gpu_runs_gpus_at_once_into_one_results_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(spec(dir.path(), "\"all\""))
        .unwrap()
        .replace(
            "precisions = [\"fp32\"]",
            "precisions = [\"fp32\", \"fp16\"]",
        )
        .replace(
            "devices = [\"all\"]",
            "devices = [\"all\"]\nbatch_sizes = [1, 2, 3]",
        )
        + "[mock]\ndelay_ms = 150\n";
    let path = dir.path().join("multi.toml");
    std::fs::write(&path, text).unwrap();
    let loaded = Spec::load(&path).unwrap();
    for serial in [false, true] {
        let mut opts = options(
            dir.path(),
            fake(&["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"]),
        );
        opts.latency = loaded.spec.latency;
        opts.serial = serial;
        let summary = run(&loaded, &opts).unwrap();
        let records = read_results(&summary.run_dir).unwrap().records;
        assert_eq!(records.len(), 12, "6 cells per GPU, each recorded once");
        let keys: std::collections::HashSet<&str> =
            records.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys.len(), 12);
        for r in &records {
            assert_eq!(
                r.gpu.as_ref().unwrap().uuid,
                r.cell.device,
                "a GPU's cells ran on that GPU"
            );
        }
        assert_eq!(
            ran_at_once(&records, "GPU-fake-0", "GPU-fake-1"),
            !serial,
            "serial={serial}"
        );
    }
}
