//! The cuda backend on a real GPU: the digits CNN at fp32 and fp16 against onnxruntime's fp32
//! reference outputs. Skips, saying why, where no GPU driver is present (CI).

use std::path::Path;
use std::process::Command;

use calibench::results::schema::Record;
use calibench::results::store::read_results;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/digits")
}

/// Runs the digits CNN on GPU 0 with the cuda backend through the CLI; `None` without a GPU.
fn run_digits(
    dir: &Path,
    run_id: &str,
    precisions: &str,
    batches: &str,
    extra: &[&str],
) -> Option<Vec<Record>> {
    if !calibench::gpu::cuda::driver_present() {
        eprintln!("skipped: no CUDA driver (libcuda.so) on this machine");
        return None;
    }
    let f = fixtures();
    let spec = format!(
        "version = 1\nname = \"cuda\"\n[axes]\nprecisions = [{precisions}]\nbackends = [\"cuda\"]\n\
         devices = [\"0\"]\nbatch_sizes = [{batches}]\n[[models]]\nid = \"digits\"\npath = \"{}\"\n\
         eval_inputs = \"{}\"\neval_labels = \"{}\"\nreference = \"{}\"\n[models.tolerance]\n\
         atol = 0.05\nrtol = 0.05\ncheck = \"quantile=0.99\"\nmin_cosine = 0.999\nmax_top1_drop = 0.01\n\
         [latency]\nwarmup_ms = 10\nmeasurement_ms = 50\nsamples = 10\n",
        f.join("digits_cnn.onnx").display(),
        f.join("eval_inputs.npy").display(),
        f.join("eval_labels.npy").display(),
        f.join("eval_ref.npy").display(),
    );
    let spec_path = dir.join("cuda.toml");
    std::fs::write(&spec_path, spec).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_calibench"))
        .args(["run", "--no-criterion", "--run-id", run_id, "--output"])
        .arg(dir)
        .arg(&spec_path)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let records = read_results(&dir.join(run_id)).unwrap().records;
    for record in &records {
        assert_eq!(
            record.status.to_string(),
            "ok",
            "{:?}: {:?}\n{stderr}",
            record.cell,
            record.error
        );
    }
    Some(records)
}

#[test]
fn cuda_graph_launches_are_timed_when_asked() {
    let Some(records) = run_digits(
        tempfile::tempdir().unwrap().path(),
        "graph",
        "\"fp32\"",
        "8",
        &["--use-cuda-graph", "--sync", "blocking"],
    ) else {
        return;
    };
    let latency = records[0].latency.as_ref().unwrap();
    assert_eq!(latency.clock, "cuda-event (graph)");
    eprintln!("graph launch median {:.4} ms", latency.median_ms);
    assert!(latency.median_ms > 0.0);
}

#[test]
fn digits_cnn_on_the_gpu_agrees_with_the_fp32_reference() {
    let Some(records) = run_digits(
        tempfile::tempdir().unwrap().path(),
        "cuda",
        "\"fp32\", \"fp16\"",
        "1, 64",
        &[],
    ) else {
        return;
    };
    assert_eq!(records.len(), 4);
    for record in &records {
        let accuracy = record.accuracy.as_ref().unwrap();
        let logits = &accuracy.outputs[0];
        let precision = record.cell.precision.to_string();
        eprintln!(
            "{precision} b{}: max |Δ| {:.2e}, cosine {:.6}, top-1 agreement {:?}",
            record.cell.batch, logits.max_abs, logits.cosine, logits.top1_agreement
        );
        assert!(accuracy.passed, "{precision}: {:?}", accuracy.reason);
        // fp32: same arithmetic as the reference up to summation order.
        // fp16: 11-bit mantissas on every activation and weight; logits of a few units move by
        // a few 1e-3 (half an ulp at 4.0 is 2e-3 per rounding, a handful of roundings per path).
        let bound = if precision == "fp32" { 1e-4 } else { 5e-2 };
        assert!(
            logits.max_abs < bound,
            "{precision}: max |Δ| {}",
            logits.max_abs
        );
        // Latency is GPU compute time from CUDA events; end-to-end (copies + sync) beside it.
        let compute = record.latency.as_ref().unwrap();
        let end_to_end = record.end_to_end.as_ref().unwrap();
        assert_eq!(compute.clock, "cuda-event");
        assert_eq!(end_to_end.clock, "wall");
        eprintln!(
            "  GPU compute median {:.4} ms, end-to-end median {:.4} ms",
            compute.median_ms, end_to_end.median_ms
        );
        // On a launch-bound model the two are close (both include the host's launch gaps), so only
        // their presence and sanity are asserted here; the figures go to the notes.
        assert!(compute.median_ms > 0.0 && end_to_end.median_ms > 0.0);
        assert!(compute.iterations > 0 && end_to_end.iterations > 0);
        let engine = record.engine.as_ref().unwrap();
        assert_eq!(engine.layer_precisions.get(&precision), Some(&5));
    }
}

#[test]
fn a_rerun_loads_the_stored_engines_instead_of_building() {
    let dir = tempfile::tempdir().unwrap();
    let Some(first) = run_digits(dir.path(), "first", "\"fp32\", \"fp16\"", "4", &[]) else {
        return;
    };
    let again = run_digits(dir.path(), "again", "\"fp32\", \"fp16\"", "4", &[]).unwrap();
    for (a, b) in first.iter().zip(&again) {
        assert!(!a.engine.as_ref().unwrap().cached);
        assert!(b.engine.as_ref().unwrap().cached, "{:?}", b.cell);
        let (x, y) = (
            &a.accuracy.as_ref().unwrap().outputs[0],
            &b.accuracy.as_ref().unwrap().outputs[0],
        );
        assert_eq!(
            x.max_abs, y.max_abs,
            "a loaded engine computes what the built one did"
        );
    }
}
