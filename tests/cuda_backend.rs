//! The cuda backend on a real GPU: onnx's operator test cases at fp32, the digits CNN at fp32
//! and fp16 against onnxruntime's fp32 reference outputs, and at int8 and best against the
//! reference backend running the same cache. Skips, saying why, where no GPU driver is
//! present (CI).

mod common;

use std::path::Path;
use std::process::Command;

use calibench::backend::cuda::CudaBackend;
use calibench::backend::reference::ReferenceBackend;
use calibench::backend::{Backend, BuildRequest, Engine};
use calibench::matrix::{BackendKind, Cell, Precision};
use calibench::model::data::read_arrays;
use calibench::model::Tensor;
use calibench::results::schema::Record;
use calibench::results::store::read_results;

// GPU tests are `#[ignore = "needs a GPU"]`: `cargo test -- --ignored` runs them on a GPU
// machine, where each checks first that a GPU is really there.

/// Fails the test when it was asked to run (`--ignored`) on a machine without a GPU.
fn require_gpu() {
    assert!(
        calibench::gpu::cuda::driver_present(),
        "this test needs a GPU (libcuda.so): run `cargo test -- --ignored` on a machine with one"
    );
}

/// Builds an engine of `backend` for a model file (GPU 0 for cuda).
fn build(
    backend: &dyn Backend,
    model: &Path,
    cache: Option<&Path>,
    precision: Precision,
    batch: usize,
) -> Result<Box<dyn Engine>, String> {
    let cell = Cell {
        model: "m".into(),
        cache: cache.map(|_| "c".into()),
        device: "0".into(),
        precision,
        backend: backend.kind(),
        batch,
    };
    let request = BuildRequest {
        cell: &cell,
        model_path: model,
        cache_path: cache,
        gpu_ordinal: (backend.kind() == BackendKind::Cuda).then_some(0),
        input_shapes: &Default::default(),
    };
    backend.build(&request).map_err(|e| e.to_string())
}

/// Cases of the operators the cuda backend runs; each must match onnx's expected outputs.
const MUST_PASS: &[&str] = &[
    "test_add",
    "test_add_bcast",
    "test_mul",
    "test_mul_bcast",
    "test_relu",
    "test_conv_with_strides_padding",
    "test_conv_with_strides_no_padding",
    "test_conv_with_strides_and_asymmetric_padding",
    "test_averagepool_2d_default",
    "test_averagepool_2d_pads",
    "test_averagepool_2d_pads_count_include_pad",
    "test_averagepool_2d_strides",
    "test_globalaveragepool",
    "test_globalaveragepool_precomputed",
    "test_batchnorm_epsilon",
    "test_batchnorm_example",
    "test_concat_2d_axis_0",
    "test_concat_3d_axis_1",
    "test_flatten_axis1",
    "test_flatten_default_axis",
    "test_flatten_negative_axis1",
    "test_gemm_alpha",
    "test_gemm_beta",
    "test_gemm_default_vector_bias",
    "test_gemm_transposeB",
    "test_matmul_2d",
    "test_maxpool_2d_default",
    "test_maxpool_2d_pads",
    "test_maxpool_2d_strides",
    "test_reshape_negative_dim",
    "test_reshape_reordered_all_dims",
    "test_reshape_zero_dim",
    "test_softmax_axis_1",
    "test_softmax_default_axis",
    "test_softmax_large_number",
    "test_basic_conv_with_padding",
    "test_basic_conv_without_padding",
    "test_sigmoid",
    "test_sigmoid_example",
    "test_tanh",
    "test_tanh_example",
    "test_leakyrelu",
    "test_leakyrelu_default",
    "test_leakyrelu_example",
    "test_hardsigmoid",
    "test_hardsigmoid_default",
    "test_hardsigmoid_example",
    "test_hardswish",
    "test_erf",
    "test_gelu_default_1",
    "test_gelu_default_2",
    "test_gelu_tanh_1",
    "test_gelu_tanh_2",
    "test_sqrt",
    "test_sqrt_example",
    "test_exp",
    "test_exp_example",
    "test_neg",
    "test_neg_example",
    "test_abs",
    "test_clip",
    "test_clip_example",
    "test_clip_default_min",
    "test_clip_default_max",
    "test_clip_inbounds",
    "test_clip_outbounds",
    "test_clip_splitbounds",
    "test_sub",
    "test_sub_bcast",
    "test_sub_example",
    "test_div",
    "test_div_bcast",
    "test_div_example",
    "test_pow",
    "test_pow_bcast_array",
    "test_pow_bcast_scalar",
    "test_pow_example",
    "test_max_two_inputs",
    "test_min_two_inputs",
    "test_identity",
    "test_unsqueeze_axis_0",
    "test_unsqueeze_axis_1",
    "test_unsqueeze_negative_axes",
    "test_unsqueeze_two_axes",
    "test_unsqueeze_unsorted_axes",
    "test_squeeze",
    "test_squeeze_negative_axes",
    "test_cast_FLOAT_to_FLOAT16",
    "test_transpose_default",
    "test_transpose_all_permutations_0",
    "test_transpose_all_permutations_1",
    "test_transpose_all_permutations_2",
    "test_transpose_all_permutations_3",
    "test_transpose_all_permutations_4",
    "test_transpose_all_permutations_5",
    "test_split_1d_uneven_split_opset18",
    "test_split_2d_uneven_split_opset18",
    "test_split_equal_parts_1d_opset13",
    "test_split_equal_parts_1d_opset18",
    "test_split_equal_parts_2d_opset13",
    "test_split_equal_parts_default_axis_opset13",
    "test_split_variable_parts_1d_opset13",
    "test_split_variable_parts_2d_opset13",
    "test_split_variable_parts_default_axis_opset13",
    "test_slice",
    "test_slice_default_axes",
    "test_slice_default_steps",
    "test_slice_end_out_of_bounds",
    "test_slice_neg",
    "test_slice_neg_steps",
    "test_slice_negative_axes",
    "test_slice_start_out_of_bounds",
    "test_resize_upsample_scales_nearest",
    "test_resize_downsample_scales_nearest",
    "test_resize_upsample_sizes_nearest",
    "test_resize_downsample_sizes_nearest",
    "test_resize_upsample_scales_linear",
    "test_resize_upsample_scales_linear_align_corners",
    "test_resize_downsample_scales_linear",
    "test_resize_downsample_scales_linear_align_corners",
    "test_resize_downsample_sizes_linear_pytorch_half_pixel",
    "test_resize_upsample_sizes_nearest_ceil_half_pixel",
    "test_resize_upsample_sizes_nearest_floor_align_corners",
    "test_resize_upsample_sizes_nearest_round_prefer_ceil_asymmetric",
];

/// Without a GPU (CI), the planner still sees every operator case: the cases the backend runs
/// plan, the others are refused with the node and the reason.
#[test]
fn onnx_node_cases_plan_or_are_refused_clearly() {
    use calibench::backend::cuda::graph::Plan;
    let mut planned = Vec::new();
    for case in common::cases(&[common::PARAMETERS, common::WEIGHTS]) {
        let pplan = calibench::model::precision::plan(&case.model, Precision::Fp32, None);
        match Plan::from_model(&case.model, case.batch(), &pplan) {
            Ok(plan) => {
                assert_eq!(plan.outputs.len(), case.expected.len(), "{}", case.name);
                for (io, want) in plan.outputs.iter().zip(&case.expected) {
                    assert_eq!(io.spec.shape, want.shape, "{}: output shape", case.name);
                }
                planned.push(case.name);
            }
            Err(e) => assert!(
                e.contains("node ") && e.contains("not supported"),
                "{}: unclear refusal: {e}",
                case.name
            ),
        }
    }
    let missing: Vec<&&str> = MUST_PASS
        .iter()
        .filter(|c| !planned.iter().any(|p| p == **c))
        .collect();
    assert!(missing.is_empty(), "not planned: {missing:?}");
}

#[test]
#[ignore = "needs a GPU"]
fn onnx_node_cases_pass_on_the_cuda_backend() {
    require_gpu();
    let dir = tempfile::tempdir().unwrap();
    let (mut passed, mut refused, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for case in common::cases(&[common::PARAMETERS, common::WEIGHTS]) {
        let path = dir.path().join(format!("{}.onnx", case.name));
        std::fs::write(&path, case.model.to_bytes()).unwrap();
        match build(&CudaBackend, &path, None, Precision::Fp32, case.batch()) {
            Err(e) => refused.push(format!("{}: {}", case.name, e.lines().next().unwrap_or(""))),
            Ok(mut engine) => {
                // fp32 on the GPU: the same arithmetic up to summation order (no TF32).
                let result = engine
                    .infer(&case.inputs)
                    .map_err(|e| e.to_string())
                    .and_then(|out| common::compare(&out, &case.expected, 1e-5, 1e-4));
                match result {
                    Ok(()) => passed.push(case.name),
                    Err(e) => failed.push(format!("{}: {e}", case.name)),
                }
            }
        }
    }
    eprintln!(
        "{} passed; refused at build:\n  {}",
        passed.len(),
        refused.join("\n  ")
    );
    assert!(failed.is_empty(), "wrong results:\n{}", failed.join("\n"));
    let missing: Vec<&&str> = MUST_PASS
        .iter()
        .filter(|c| !passed.iter().any(|p| p == **c))
        .collect();
    assert!(
        missing.is_empty(),
        "not run: {missing:?}\nrefused:\n{}",
        refused.join("\n")
    );
    for r in &refused {
        assert!(
            r.contains("node ") && r.contains("not supported"),
            "unclear refusal: {r}"
        );
    }
}

fn eval_inputs(batch: usize) -> Tensor {
    let (_, all) = read_arrays(&fixtures().join("eval_inputs.npy"))
        .unwrap()
        .remove(0);
    let per: usize = all.shape[1..].iter().product();
    let mut shape = all.shape.clone();
    shape[0] = batch;
    Tensor::new(shape, all.data[..batch * per].to_vec()).unwrap()
}

/// Differences between two outputs: (max, p99) of |a − b|, and rows whose argmax agrees.
fn compare_logits(a: &Tensor, b: &Tensor) -> (f32, f32, usize) {
    let mut diffs: Vec<f32> = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .collect();
    diffs.sort_by(f32::total_cmp);
    let classes = a.shape[1];
    let argmax = |t: &Tensor, r: usize| {
        (0..classes)
            .max_by(|&i, &j| t.data[r * classes + i].total_cmp(&t.data[r * classes + j]))
            .unwrap()
    };
    let agree = (0..a.shape[0])
        .filter(|&r| argmax(a, r) == argmax(b, r))
        .count();
    (diffs[diffs.len() - 1], diffs[diffs.len() * 99 / 100], agree)
}

/// int8 and best on the GPU against the reference backend with the same cache.
#[test]
#[ignore = "needs a GPU"]
fn int8_and_best_agree_with_the_reference_backend() {
    require_gpu();
    let (model, cache) = (
        fixtures().join("digits_cnn.onnx"),
        fixtures().join("digits_cnn.entropy.cache"),
    );
    let batch = 256;
    let input = eval_inputs(batch);
    let input = std::slice::from_ref(&input);
    let infer = |backend: &dyn Backend, precision: Precision| {
        let cache = precision.needs_cache().then_some(cache.as_path());
        let mut engine = build(backend, &model, cache, precision, batch).unwrap();
        let out = engine.infer(input).unwrap().remove(0);
        (out, engine)
    };
    let (fp32, _) = infer(&ReferenceBackend, Precision::Fp32);
    let (int8_ref, int8_ref_engine) = infer(&ReferenceBackend, Precision::Int8);
    let (int8_gpu, int8_gpu_engine) = infer(&CudaBackend, Precision::Int8);
    let (best_ref, _) = infer(&ReferenceBackend, Precision::Best);
    let (best_gpu, best_gpu_engine) = infer(&CudaBackend, Precision::Best);
    let (quant_max, quant_p99, _) = compare_logits(&int8_ref, &fp32);

    // int8: the same fake-quantized tensors on both sides, so they differ only where float
    // summation order moves a value across a rounding boundary of its int8 grid (rare; one
    // step of the last hidden tensor moves a logit by about step · max|w| ≈ 0.05).
    let (max, p99, agree) = compare_logits(&int8_gpu, &int8_ref);
    eprintln!("int8 vs reference int8: max |Δ| {max:.3e}, p99 {p99:.3e}, top-1 agreement {agree}/{batch}; int8 vs fp32 max |Δ| {quant_max:.3}, p99 {quant_p99:.3}");
    assert_eq!(
        int8_gpu_engine.layer_precisions(),
        int8_ref_engine.layer_precisions()
    );
    assert!(p99 < 1e-3 && max < 0.5, "p99 {p99}, max {max}");
    assert!(agree >= batch * 99 / 100, "top-1 agreement {agree}/{batch}");

    // best: fp16 storage, and each layer keeps int8 or fp16, whichever ran faster; a layer that
    // kept fp16 skips its int8 rounding, so best differs from the reference's all-int8 best by
    // at most what int8 itself changes (int8 vs fp32), at the maximum and at p99.
    let (max, p99, agree) = compare_logits(&best_gpu, &best_ref);
    let layers = best_gpu_engine.layers();
    eprintln!("best vs reference best: max |Δ| {max:.3e}, p99 {p99:.3e}, top-1 agreement {agree}/{batch}, layers {:?}",
        layers.iter().map(|l| format!("{}={}", l.layer, l.precision)).collect::<Vec<_>>());
    assert!(
        layers
            .iter()
            .all(|l| l.precision == "int8" || l.precision == "fp16"),
        "{layers:?}"
    );
    assert!(
        max <= quant_max && p99 <= quant_p99,
        "p99 {p99}, max {max} (int8 vs fp32: p99 {quant_p99}, max {quant_max})"
    );
    assert!(agree >= batch * 97 / 100, "top-1 agreement {agree}/{batch}");
}

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/digits")
}

/// Runs the digits CNN on GPU 0 with the cuda backend through the CLI.
fn run_digits(
    dir: &Path,
    run_id: &str,
    precisions: &str,
    batches: &str,
    extra: &[&str],
) -> Vec<Record> {
    run_digits_with(dir, run_id, precisions, batches, extra, &[])
}

/// [`run_digits`] with environment variables set for calibench.
fn run_digits_with(
    dir: &Path,
    run_id: &str,
    precisions: &str,
    batches: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Vec<Record> {
    require_gpu();
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
        .envs(env.iter().copied())
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
    records
}

#[test]
#[ignore = "needs a GPU"]
fn cuda_graph_launches_are_timed_when_asked() {
    let records = run_digits(
        tempfile::tempdir().unwrap().path(),
        "graph",
        "\"fp32\"",
        "8",
        &["--use-cuda-graph", "--sync", "blocking"],
    );
    let latency = records[0].latency.as_ref().unwrap();
    assert_eq!(latency.clock, "cuda-event (graph)");
    eprintln!("graph launch median {:.4} ms", latency.median_ms);
    assert!(latency.median_ms > 0.0);
}

/// The tactic each convolution of a record kept, and whether the record says cuDNN was absent.
fn conv_tactics(record: &Record) -> (Vec<String>, bool) {
    let engine = record.engine.as_ref().unwrap();
    let tactics = engine
        .layers
        .iter()
        .filter(|l| l.op == "Conv")
        .map(|l| l.tactic.clone().unwrap_or_default())
        .collect();
    let absent = record
        .diagnostics
        .iter()
        .any(|d| d.kind == "cudnn_unavailable");
    (tactics, absent)
}

#[test]
#[ignore = "needs a GPU"]
fn convolutions_name_the_tactic_they_were_timed_to_run_on() {
    let dir = tempfile::tempdir().unwrap();
    for record in run_digits(dir.path(), "found", "\"fp32\", \"fp16\"", "64", &[]) {
        let (tactics, absent) = conv_tactics(&record);
        eprintln!(
            "{}: {tactics:?}, cuDNN absent: {absent}",
            record.cell.precision
        );
        assert_eq!(tactics.len(), 2, "both convolutions name a tactic");
        for t in &tactics {
            assert!(
                t.starts_with("cudnn ") || t.starts_with("calibench "),
                "{t}"
            );
            assert!(!absent || t.starts_with("calibench "), "{t} without cuDNN");
        }
    }
    // cuDNN pointed at a file that is not there: calibench's own kernels, said in a diagnostic,
    // and the cells still agree with the reference (run_digits_with asserts they are ok).
    let env = [("CALIBENCH_CUDNN", "/nonexistent/libcudnn.so.9")];
    let records = run_digits_with(dir.path(), "absent", "\"fp32\"", "64", &[], &env);
    let (tactics, absent) = conv_tactics(&records[0]);
    assert!(absent, "{:?}", records[0].diagnostics);
    assert!(
        tactics.iter().all(|t| t.starts_with("calibench ")),
        "{tactics:?}"
    );
    let diagnostic = records[0]
        .diagnostics
        .iter()
        .find(|d| d.kind == "cudnn_unavailable")
        .unwrap();
    assert!(
        diagnostic.message.contains("/nonexistent/libcudnn.so.9"),
        "{}",
        diagnostic.message
    );
    assert!(
        diagnostic.fix.contains("CALIBENCH_CUDNN"),
        "{}",
        diagnostic.fix
    );
}

#[test]
#[ignore = "needs a GPU"]
fn digits_cnn_on_the_gpu_agrees_with_the_fp32_reference() {
    let records = run_digits(
        tempfile::tempdir().unwrap().path(),
        "cuda",
        "\"fp32\", \"fp16\"",
        "1, 64",
        &[],
    );
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
        // Conv, Relu, MaxPool, Conv, Relu, Gemm, Relu, Gemm, as the reference backend counts.
        assert_eq!(engine.layer_precisions.get(&precision), Some(&8));
    }
}

#[test]
#[ignore = "needs a GPU"]
fn a_rerun_loads_the_stored_engines_instead_of_building() {
    let dir = tempfile::tempdir().unwrap();
    let first = run_digits(dir.path(), "first", "\"fp32\", \"fp16\"", "4", &[]);
    let again = run_digits(dir.path(), "again", "\"fp32\", \"fp16\"", "4", &[]);
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

/// `calibrate --backend cuda` computes the activations on the GPU; its ranges match the
/// reference backend's (fp32 on both sides: minmax exactly up to rounding, entropy's
/// histogram thresholds within a bin).
#[test]
#[ignore = "needs a GPU"]
fn calibration_on_the_gpu_matches_the_reference_backend() {
    require_gpu();
    let dir = tempfile::tempdir().unwrap();
    let f = fixtures();
    let read = |method: &str, backend: &str| {
        let out = dir.path().join(format!("{method}.{backend}.cache"));
        let status = Command::new(env!("CARGO_BIN_EXE_calibench"))
            .args([
                "calibrate",
                "--method",
                method,
                "--backend",
                backend,
                "--model",
            ])
            .arg(f.join("digits_cnn.onnx"))
            .arg("--data")
            .arg(f.join("calib.npy"))
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        calibench::cache::CalibrationCache::read(&out).unwrap()
    };
    for (method, bound) in [("minmax", 1e-5), ("entropy", 1e-2)] {
        let (gpu, cpu) = (read(method, "cuda"), read(method, "reference"));
        assert_eq!(gpu.entries.len(), cpu.entries.len());
        let mut worst = 0f32;
        for (a, b) in gpu.entries.iter().zip(&cpu.entries) {
            assert_eq!(a.name, b.name);
            worst = worst.max((a.scale() / b.scale() - 1.0).abs());
        }
        eprintln!("{method}: largest relative scale difference GPU vs CPU {worst:.2e}");
        assert!(worst <= bound, "{method}: {worst}");
    }
}

/// `calibench profile`: every layer with its time, GEMM layers with their GEMM's shape and
/// throughput; without a GPU, an error that says what is missing and the fix.
#[test]
fn profile_prints_every_layer_or_says_why_not() {
    let model = fixtures().join("digits_cnn.onnx");
    let cache = fixtures().join("digits_cnn.entropy.cache");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_calibench"))
            .arg("profile")
            .arg("--model")
            .arg(&model)
            .args(extra)
            .output()
            .unwrap()
    };
    let no_cache = run(&["--precision", "int8"]);
    assert!(!no_cache.status.success());
    assert!(String::from_utf8_lossy(&no_cache.stderr).contains("--cache"));
    let out = run(&[
        "--precision",
        "int8",
        "--batch",
        "64",
        "--cache",
        cache.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    if !calibench::gpu::cuda::driver_present() {
        assert!(!out.status.success());
        assert!(stderr.contains("fix:"), "{stderr}");
        return;
    }
    eprintln!("{stdout}");
    assert!(out.status.success(), "{stderr}");
    for layer in ["conv1", "pool1", "conv2", "fc1", "fc2"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(layer)),
            "{layer} missing:\n{stdout}"
        );
    }
    let conv1 = stdout.lines().find(|l| l.starts_with("conv1")).unwrap();
    // conv1 at batch 64: 64·8·8 positions, 8 output channels, 9 taps padded to 32; it runs
    // on tensor cores (compute capability 8.0+), beside cuBLASLt's time for the same GEMM.
    assert!(
        conv1.contains("int8") && conv1.contains("4096×8×32") && conv1.contains("conv(tc)"),
        "{conv1}"
    );
}

/// The cnn32 model written to `dir`, random inputs for it, and a minmax cache calibrated by
/// the reference backend on 64 of them.
fn cnn32_fixture(dir: &Path, batch: usize) -> (std::path::PathBuf, std::path::PathBuf, Tensor) {
    model_fixture(&common::cnn32(), dir, batch)
}

/// cnn32 at a batch size with its minmax cache and random inputs, in a temporary folder.
struct Cnn32 {
    _dir: tempfile::TempDir,
    model: std::path::PathBuf,
    cache: std::path::PathBuf,
    input: Tensor,
}

impl Cnn32 {
    fn new(batch: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (model, cache, input) = cnn32_fixture(dir.path(), batch);
        Cnn32 {
            _dir: dir,
            model,
            cache,
            input,
        }
    }

    /// Output of `backend`'s engine at `precision` (the cache where it needs one), and the engine.
    fn infer(&self, backend: &dyn Backend, precision: Precision) -> (Tensor, Box<dyn Engine>) {
        let cache = precision.needs_cache().then_some(self.cache.as_path());
        let batch = self.input.shape[0];
        let mut engine = build(backend, &self.model, cache, precision, batch).unwrap();
        let out = engine
            .infer(std::slice::from_ref(&self.input))
            .unwrap()
            .remove(0);
        (out, engine)
    }
}

/// `model` (input `[N, 3, 16, 16]`) written to `dir`, with random inputs and a minmax cache.
fn model_fixture(
    model: &calibench::model::onnx::OnnxModel,
    dir: &Path,
    batch: usize,
) -> (std::path::PathBuf, std::path::PathBuf, Tensor) {
    use prost::Message;
    let path = dir.join("cnn32.onnx");
    std::fs::write(&path, model.proto.encode_to_vec()).unwrap();
    let model = path;
    let calib = Tensor::new(vec![64, 3, 16, 16], common::uniform(7, 64 * 3 * 256)).unwrap();
    let data = dir.join("calib.npz");
    calibench::model::data::write_npz(&data, &[("input".into(), calib)]).unwrap();
    let cache = dir.join("cnn32.cache");
    let out = Command::new(env!("CARGO_BIN_EXE_calibench"))
        .args(["calibrate", "--method", "minmax", "--backend", "reference"])
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("-o")
        .arg(&cache)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let input = Tensor::new(vec![batch, 3, 16, 16], common::uniform(8, batch * 3 * 256)).unwrap();
    (model, cache, input)
}

/// Tensor cores (planner side, no GPU needed): tensors between convolutions and max pools stay
/// NHWC — int8 codes of their own cache scale at int8, fp16 at fp16 — while a tensor that
/// anything else reads (here the Flatten → Gemm) keeps NCHW; a convolution over an NCHW input
/// gathers im2col-ordered patches (weights `[cout][kp]`), one over an NHWC input reads it
/// directly with its weights reordered to `[cout][kh][kw][c]`.
#[test]
fn tensor_core_plans_keep_nhwc_only_between_convolutions_and_max_pools() {
    use calibench::backend::cuda::graph::{Layer, MmaKind, Plan};
    use calibench::cache::CalibrationCache;
    use calibench::model::onnx::OnnxModel;
    use calibench::model::precision;
    let dir = tempfile::tempdir().unwrap();
    let (model_path, cache_path, _) = cnn32_fixture(dir.path(), 4);
    let model = OnnxModel::load(&model_path).unwrap();
    let cache = CalibrationCache::read(&cache_path).unwrap();
    for (p, kind) in [
        (Precision::Int8, MmaKind::Int8),
        (Precision::Fp16, MmaKind::Fp16),
    ] {
        let pplan = precision::plan(&model, p, Some(&cache));
        let mut plan = Plan::from_model(&model, 4, &pplan).unwrap();
        let before = plan.clone();
        plan.use_tensor_cores(kind);
        assert!(
            !plan
                .layers
                .iter()
                .any(|l| matches!(l, Layer::Conv { mma: None, .. })),
            "{p}: every conv on tensor cores"
        );
        assert_eq!(layouts(&plan), cnn32_tensor_core_layouts(p), "{p}");
        // What `calibench profile` says each layer computes at: the convolutions and the Gemm
        // (the cache covers its input), and the pools and elementwise layers between int8
        // tensor-core convolutions, which run on int8 codes.
        let precisions: Vec<&str> = (0..plan.layers.len())
            .map(|i| plan.layer_precision(i, "float"))
            .collect();
        let expected = match kind {
            MmaKind::Int8 => vec!["int8"; 8],
            MmaKind::Fp16 => vec!["float"; 7],
        };
        assert_eq!(precisions, expected, "{p}");
        // At int8 the graph input's quantization goes: the first convolution gathers its
        // patches from the input itself, quantizing them with the same scale.
        let dropped = usize::from(kind == MmaKind::Int8);
        assert_eq!(plan.layers.len(), before.layers.len() - dropped, "{p}");
        assert!(
            matches!(plan.layers[0], Layer::Conv { x, .. } if x == plan.inputs[0].buffer),
            "{p}: {:?}",
            plan.layers[0]
        );
        let convs: Vec<_> = plan
            .layers
            .iter()
            .filter_map(|l| match l {
                Layer::Conv {
                    mma: Some(m),
                    g,
                    int8,
                    w,
                    x,
                    ..
                } => Some((*m, *g, *int8, *w, *x)),
                _ => None,
            })
            .collect();
        let (first, second) = (convs[0], convs[2]);
        assert_eq!(first.0.kp, 32, "{p}: 27 patch entries padded to 32");
        assert_eq!(second.0.kp, 0, "{p}: NHWC input, no patches");
        // The NHWC weights are the patch-ordered ones, reordered: entry [o][kh][kw][c].
        let (g, taps) = (second.1, 9);
        for (o, c, tap) in [(0, 0, 0), (5, 17, 4), (63, 31, 8)] {
            let nhwc_at = o * g.c * taps + tap * g.c + c;
            match kind {
                MmaKind::Int8 => {
                    let f = second.2.unwrap();
                    let patch = &plan.int8_weights[f.wq];
                    assert_eq!(
                        plan.int8_weights[second.0.w][nhwc_at],
                        patch[o * f.kp + c * taps + tap]
                    );
                    // Codes between tensors carry their writer's scale, which is the reader's
                    // input scale.
                    assert_eq!(plan.nhwc_scale(second.4), f.x_scale);
                }
                MmaKind::Fp16 => assert_eq!(
                    plan.weights[second.0.w][nhwc_at],
                    plan.weights[second.3][(o * g.c + c) * taps + tap]
                ),
            }
        }
        let stored: Plan = serde_json::from_slice(&serde_json::to_vec(&plan).unwrap()).unwrap();
        assert_eq!(
            stored, plan,
            "{p}: the layout decisions are stored with the engine"
        );
    }
}

/// cnn32's layouts with every convolution on tensor cores at `precision`, as (kind, reads NHWC,
/// writes NHWC): NHWC from the first convolution's output through the residual block to the
/// last pool. At fp16 the block's Relu runs inside its Add (the sum is not fake-quantized there).
fn cnn32_tensor_core_layouts(precision: Precision) -> Vec<(&'static str, bool, bool)> {
    let mut layouts = vec![
        ("conv", false, true),
        ("maxpool", true, true),
        ("conv", true, true),
        ("binary", true, true),
        ("elementwise", true, true),
        ("conv", true, true),
        ("maxpool", true, false),
        ("gemm", false, false),
    ];
    if precision == Precision::Fp16 {
        layouts.remove(4);
    }
    layouts
}

/// (kind, reads NHWC, writes NHWC) of each layer of a plan.
fn layouts(plan: &calibench::backend::cuda::graph::Plan) -> Vec<(&'static str, bool, bool)> {
    use calibench::backend::cuda::graph::Layer;
    plan.layers
        .iter()
        .map(|l| {
            let y = match l {
                Layer::Conv { y, .. }
                | Layer::Pool { y, .. }
                | Layer::Unary { y, .. }
                | Layer::Binary { y, .. }
                | Layer::Gemm { y, .. } => *y,
                other => panic!("{other:?}"),
            };
            (l.kind(), plan.is_nhwc(l.reads()[0]), plan.is_nhwc(y))
        })
        .collect()
}

/// The tensor-core plan of a model at a precision, from its fixture's cache.
fn tensor_core_plan(
    model: &calibench::model::onnx::OnnxModel,
    precision: Precision,
) -> calibench::backend::cuda::graph::Plan {
    use calibench::backend::cuda::graph::{MmaKind, Plan};
    let dir = tempfile::tempdir().unwrap();
    let (_, cache, _) = model_fixture(model, dir.path(), 4);
    let cache = calibench::cache::CalibrationCache::read(&cache).unwrap();
    let pplan = calibench::model::precision::plan(model, precision, Some(&cache));
    let mut plan = Plan::from_model(model, 4, &pplan).unwrap();
    plan.use_tensor_cores(match precision {
        Precision::Fp16 => MmaKind::Fp16,
        _ => MmaKind::Int8,
    });
    plan
}

/// Where one reader cannot read NHWC — here a per-channel Mul by a constant (broadcast) after
/// the residual block — the layout falls back to NCHW through everything that must share it:
/// the Relu and the Add before it and both of the Add's inputs, so elementwise layers never
/// change layout; the convolutions around adapt (gathering from NCHW, writing NCHW).
#[test]
fn tensor_core_layouts_fall_back_to_nchw_around_a_reader_that_needs_it() {
    use calibench::model::onnx::float_tensor;
    let mut model = common::cnn32();
    let g = model.graph_mut();
    let conv1 = g.node.iter().position(|n| n.name == "conv1").unwrap();
    g.node[conv1].input[0] = "scaled".into();
    g.initializer.push(float_tensor(
        "chan",
        &[1, 32, 1, 1],
        &common::uniform(41, 32),
    ));
    g.node.insert(
        conv1,
        tract_onnx::pb::NodeProto {
            op_type: "Mul".into(),
            name: "scaled".into(),
            input: vec!["block".into(), "chan".into()],
            output: vec!["scaled".into()],
            ..Default::default()
        },
    );
    for precision in [Precision::Int8, Precision::Fp16] {
        let plan = tensor_core_plan(&model, precision);
        // At fp16 the block's Relu runs inside its Add.
        let relu = (precision == Precision::Int8).then_some(("elementwise", false, false));
        let expected: Vec<_> = [
            ("conv", false, true),
            ("maxpool", true, false),
            ("conv", false, false),
            ("binary", false, false),
        ]
        .into_iter()
        .chain(relu)
        .chain([
            ("binary", false, false),
            ("conv", false, true),
            ("maxpool", true, false),
            ("gemm", false, false),
        ])
        .collect();
        assert_eq!(layouts(&plan), expected, "{precision}");
        for io in plan.inputs.iter().chain(&plan.outputs) {
            assert!(
                !plan.is_nhwc(io.buffer),
                "{precision}: graph inputs and outputs stay NCHW"
            );
        }
    }
}

/// The plan of a model at best with the int8 forms of the layers in `fp16` dropped (as if
/// best's timing had found fp16 faster there), convolutions on tensor cores.
fn best_plan_keeping_fp16(
    model: &Path,
    cache: &Path,
    batch: usize,
    fp16: &[&str],
) -> calibench::backend::cuda::graph::Plan {
    use calibench::backend::cuda::graph::Plan;
    let model = calibench::model::onnx::OnnxModel::load(model).unwrap();
    let cache = calibench::cache::CalibrationCache::read(cache).unwrap();
    let pplan = calibench::model::precision::plan(&model, Precision::Best, Some(&cache));
    let mut plan = Plan::from_model(&model, batch, &pplan).unwrap();
    for name in fp16 {
        assert!(plan.layer_names.iter().any(|n| n == name), "{name}");
        plan.drop_int8_of(name);
    }
    plan.use_tensor_cores_at(Precision::Best);
    plan
}

/// best's re-plan after timing (planner side, no GPU needed): a convolution that kept fp16 still
/// runs on tensor cores, at fp16 over NCHW tensors, and the int8 convolutions beside it read and
/// write NCHW there while NHWC codes stay between the others; the graph input's quantization
/// stays when the first convolution keeps fp16; the report says fp16 for exactly those layers;
/// a Gemm kept at fp16 moves no layout (best keeps such a choice without timing the network).
#[test]
fn best_runs_a_convolution_that_kept_fp16_on_tensor_cores_over_nchw() {
    use calibench::backend::cuda::graph::{Layer, MmaKind};
    let dir = tempfile::tempdir().unwrap();
    let (model, cache, _) = cnn32_fixture(dir.path(), 4);
    let all_int8 = best_plan_keeping_fp16(&model, &cache, 4, &[]);
    let mixed = best_plan_keeping_fp16(&model, &cache, 4, &["conv0", "convr"]);
    let kinds = |plan: &calibench::backend::cuda::graph::Plan| -> Vec<(String, MmaKind)> {
        (0..plan.layers.len())
            .filter(|&i| matches!(plan.layers[i], Layer::Conv { mma: Some(_), .. }))
            .map(|i| (plan.layer_names[i].clone(), plan.conv_kind(i)))
            .collect()
    };
    let named = |v: &[(&str, MmaKind)]| -> Vec<(String, MmaKind)> {
        v.iter().map(|(n, k)| (n.to_string(), *k)).collect()
    };
    use MmaKind::{Fp16, Int8};
    assert_eq!(
        kinds(&all_int8),
        named(&[("conv0", Int8), ("convr", Int8), ("conv1", Int8)])
    );
    assert_eq!(
        kinds(&mixed),
        named(&[("conv0", Fp16), ("convr", Fp16), ("conv1", Int8)])
    );
    assert_eq!(
        layouts(&all_int8),
        cnn32_tensor_core_layouts(Precision::Best)
    );
    // conv0 and convr at fp16: everything they read or write is NCHW, so the pool and the
    // residual Add around them are too; conv1 gathers its patches from the NCHW block output.
    assert_eq!(
        layouts(&mixed),
        [
            ("elementwise", false, false),
            ("conv", false, false),
            ("maxpool", false, false),
            ("conv", false, false),
            ("binary", false, false),
            ("elementwise", false, false),
            ("conv", false, true),
            ("maxpool", true, false),
            ("gemm", false, false),
        ]
    );
    let conv1 = mixed.layer_names.iter().position(|n| n == "conv1").unwrap();
    assert!(
        matches!(mixed.layers[conv1], Layer::Conv { mma: Some(m), int8: Some(f), .. } if m.kp == f.kp && m.kp > 0),
        "conv1 gathers int8 patches: {:?}",
        mixed.layers[conv1]
    );
    for l in &mixed.report {
        let fp16 = l.layer == "conv0" || l.layer == "convr";
        assert_eq!(l.precision == "fp16", fp16, "{l:?}");
    }
    // What best's timing uses to tell a free choice from one that moves layouts: the Gemm at
    // fp16 leaves every tensor's layout as it was, the first convolution at fp16 does not.
    let gemm_fp16 = best_plan_keeping_fp16(&model, &cache, 4, &["logits"]);
    assert_eq!(gemm_fp16.nhwc, all_int8.nhwc);
    let conv0_fp16 = best_plan_keeping_fp16(&model, &cache, 4, &["conv0"]);
    assert_ne!(conv0_fp16.nhwc, all_int8.nhwc);
}

/// best on the GPU with tensor cores (cnn32): the timed build records int8 or fp16 per layer, and
/// both it and a plan where two convolutions kept fp16 (fp16 tensor-core convolutions beside
/// int8 ones, NCHW between them) agree with the reference backend's best within what int8
/// itself changes (int8 vs fp32), as best does on the digits model.
#[test]
#[ignore = "needs a GPU"]
fn best_with_tensor_cores_agrees_with_the_reference_backend() {
    require_gpu();
    let batch = 256;
    let cnn = Cnn32::new(batch);
    let (fp32, _) = cnn.infer(&ReferenceBackend, Precision::Fp32);
    let (int8_ref, _) = cnn.infer(&ReferenceBackend, Precision::Int8);
    let (best_ref, _) = cnn.infer(&ReferenceBackend, Precision::Best);
    let (quant_max, quant_p99, _) = compare_logits(&int8_ref, &fp32);
    let (timed, timed_engine) = cnn.infer(&CudaBackend, Precision::Best);
    let layers = timed_engine.layers();
    let mixed_plan = best_plan_keeping_fp16(&cnn.model, &cnn.cache, batch, &["conv0", "convr"]);
    let mut engine =
        calibench::backend::cuda::engine_of_plan(mixed_plan, Precision::Best, 0).unwrap();
    let mixed = engine
        .infer(std::slice::from_ref(&cnn.input))
        .unwrap()
        .remove(0);
    for (what, out) in [("timed best", &timed), ("conv0, convr at fp16", &mixed)] {
        let (max, p99, agree) = compare_logits(out, &best_ref);
        eprintln!("cnn32 {what} vs reference best: max |Δ| {max:.3e}, p99 {p99:.3e}, top-1 {agree}/{batch}; int8 vs fp32 max {quant_max:.3}, p99 {quant_p99:.3}");
        assert!(
            max <= quant_max && p99 <= quant_p99,
            "{what}: p99 {p99}, max {max} (int8 vs fp32: p99 {quant_p99}, max {quant_max})"
        );
        assert!(agree >= batch * 97 / 100, "{what}: top-1 {agree}/{batch}");
    }
    eprintln!(
        "cnn32 timed best layers: {:?}",
        layers
            .iter()
            .map(|l| format!("{}={}", l.layer, l.precision))
            .collect::<Vec<_>>()
    );
    assert!(
        layers
            .iter()
            .all(|l| l.precision == "int8" || l.precision == "fp16"),
        "{layers:?}"
    );
    let mixed_layers = engine.layers();
    for l in &mixed_layers {
        let fp16 = l.layer == "conv0" || l.layer == "convr";
        assert_eq!(l.precision == "fp16", fp16, "{l:?}");
    }
}

/// Tensor cores on the GPU: cnn32's NHWC chain (gathered patches → conv → pool → residual block
/// → strided conv on the NHWC tensor → pool back to NCHW) at int8 agrees with the reference
/// backend's int8 (the same fake-quantized tensors; float summation order differs, so a few
/// samples move by one rounding step somewhere), and at fp16 with the fp32 reference within
/// fp16's own error.
#[test]
#[ignore = "needs a GPU"]
fn tensor_core_convolutions_agree_with_the_reference_backend() {
    require_gpu();
    let batch = 256;
    let cnn = Cnn32::new(batch);
    let infer = |backend: &dyn Backend, precision: Precision| cnn.infer(backend, precision).0;
    let fp32 = infer(&ReferenceBackend, Precision::Fp32);
    let int8_ref = infer(&ReferenceBackend, Precision::Int8);
    let (quant_max, quant_p99, _) = compare_logits(&int8_ref, &fp32);
    let int8_gpu = infer(&CudaBackend, Precision::Int8);
    let (max, p99, agree) = compare_logits(&int8_gpu, &int8_ref);
    // Samples whose logits differ at all: where the two sides' float rounding puts a value on
    // different sides of an int8 rounding boundary, that sample moves by one step of that
    // tensor; a wrong scale or layout would move every sample.
    let classes = int8_ref.shape[1];
    let moved = (0..batch)
        .filter(|&r| {
            (0..classes).any(|c| {
                let i = r * classes + c;
                (int8_gpu.data[i] - int8_ref.data[i]).abs() > 1e-4
            })
        })
        .count();
    eprintln!("cnn32 int8 (tensor cores) vs reference int8: max |Δ| {max:.3e}, p99 {p99:.3e}, top-1 {agree}/{batch}, samples that differ {moved}/{batch}; int8 vs fp32: max {quant_max:.3}, p99 {quant_p99:.3}");
    assert!(moved <= batch / 10, "{moved} of {batch} samples differ");
    assert!(
        p99 < 0.1 * quant_p99 && max < 0.25 * quant_max,
        "p99 {p99}, max {max}"
    );
    assert!(agree >= batch * 99 / 100, "top-1 agreement {agree}/{batch}");
    let scale = fp32.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (max, p99, agree) = compare_logits(&infer(&CudaBackend, Precision::Fp16), &fp32);
    eprintln!("cnn32 fp16 (tensor cores) vs fp32: max |Δ| {max:.3e}, p99 {p99:.3e} (logits up to {scale:.2}), top-1 {agree}/{batch}");
    // fp16 keeps 11 significant bits: each stored tensor is within 2^-11 relative, a few
    // roundings deep here; 1 % of the largest logit bounds that with margin.
    assert!(max < 0.01 * scale, "max {max} vs largest logit {scale}");
    assert!(agree >= batch * 98 / 100, "top-1 agreement {agree}/{batch}");
    let fp32_gpu = infer(&CudaBackend, Precision::Fp32);
    let (max, _, _) = compare_logits(&fp32_gpu, &fp32);
    assert!(
        max < 1e-4 * scale.max(1.0),
        "fp32 path unchanged: max {max}"
    );
}

/// `calibrate --backend cuda` reduces each exposed tensor on the GPU: its largest |x| and its
/// |x| histogram equal, bit for bit and count for count, what the host computes from the same
/// engine's values (so the caches are the ones host statistics would give).
#[test]
#[ignore = "needs a GPU"]
fn calibration_statistics_reduced_on_the_gpu_equal_the_hosts() {
    use calibench::cache::calibrate::{ActivationSource, EngineActivations, Reduced, Statistic};
    use calibench::model::data::Dataset;
    use calibench::model::onnx::OnnxModel;
    require_gpu();
    let model = OnnxModel::load(&fixtures().join("digits_cnn.onnx")).unwrap();
    let tensors = model.quantizable_tensors();
    let data = Dataset::read(&fixtures().join("calib.npy"), &["input".to_string()]).unwrap();
    let build = |m: &OnnxModel, b: usize| calibench::backend::cuda::fp32_engine(m, b, 0);
    // Batches of 37: the last one runs on the engine made for the remainder.
    let mut source = EngineActivations::new(&model, tensors.clone(), data, 37, &build).unwrap();
    let mut compared = 0;
    for b in 0..source.batches() {
        let values = source.run(b).unwrap();
        let max = vec![Statistic::MaxAbs; tensors.len()];
        let gpu = source
            .run_reduced(b, &max)
            .expect("the cuda engine reduces on the GPU")
            .unwrap();
        let host: Vec<Reduced> = values.iter().map(|v| Statistic::MaxAbs.reduce(v)).collect();
        assert_eq!(gpu, host, "batch {b}: max |x|");
        // A range below the max, so the last bin also collects what lies beyond it.
        let hist: Vec<Statistic> = host
            .iter()
            .map(|r| match r {
                Reduced::MaxAbs(m) => Statistic::AbsHistogram { range: m * 0.7 },
                other => panic!("{other:?}"),
            })
            .collect();
        let gpu = source.run_reduced(b, &hist).unwrap().unwrap();
        let host: Vec<Reduced> = hist.iter().zip(&values).map(|(s, v)| s.reduce(v)).collect();
        assert_eq!(gpu, host, "batch {b}: histograms");
        compared += tensors.len();
    }
    eprintln!("{compared} tensor-batches: GPU max |x| and histograms equal the host's");
}

/// A model of torch's export patterns (fixtures/torch-patterns), or a real model from
/// fixtures/real when `python3 fixtures/real_models.py --torchvision` made it.
fn plan_at(
    model: &Path,
    precision: Precision,
    cache: Option<&Path>,
    batch: usize,
) -> Result<calibench::backend::cuda::graph::Plan, String> {
    use calibench::backend::cuda::graph::Plan;
    use calibench::cache::CalibrationCache;
    let m = calibench::model::onnx::OnnxModel::load(model).unwrap();
    let cache = cache.map(|c| CalibrationCache::read(c).unwrap());
    let pplan = calibench::model::precision::plan(&m, precision, cache.as_ref());
    Plan::from_model(&m, batch, &pplan)
}

fn minmax_cache(model: &Path, data: &Path, dir: &Path) -> std::path::PathBuf {
    let out = dir.join("c.cache");
    let o = Command::new(env!("CARGO_BIN_EXE_calibench"))
        .args(["calibrate", "--method", "minmax", "-m"])
        .arg(model)
        .arg("-d")
        .arg(data)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

#[test]
fn torch_export_patterns_plan_at_every_precision() {
    // mobile: Constant and Identity nodes, Shape → Gather → Unsqueeze → Concat → Reshape,
    // Sub/Div normalization, depthwise and dilated convolutions, HardSwish, HardSigmoid, SiLU,
    // LeakyRelu, a squeeze-excite Mul (a raw torch.onnx.export, no constant folding). yolo:
    // Slice of activations, Concat, nearest and bilinear Resize with sizes computed from
    // shapes, Transpose.
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/torch-patterns");
    for (name, out) in [("mobile", vec![10]), ("yolo", vec![256, 7])] {
        let model = root.join(format!("{name}.onnx"));
        let cache = minmax_cache(&model, &root.join(format!("{name}.calib.npy")), dir.path());
        for precision in [
            Precision::Fp32,
            Precision::Fp16,
            Precision::Int8,
            Precision::Best,
        ] {
            for batch in [1, 8, 1024] {
                let c = precision.needs_cache().then_some(cache.as_path());
                let plan = plan_at(&model, precision, c, batch)
                    .unwrap_or_else(|e| panic!("{name} {precision:?} b{batch}: {e}"));
                let mut want = vec![batch];
                want.extend(&out);
                assert_eq!(plan.outputs[0].spec.shape, want);
                let kinds: Vec<&str> = plan.layers.iter().map(|l| l.kind()).collect();
                let expected: &[&str] = match name {
                    "mobile" => &["conv (grouped)", "conv (dilated)"],
                    _ => &["resize", "copy"],
                };
                assert!(
                    expected.iter().all(|k| kinds.contains(k)),
                    "{name}: {kinds:?}"
                );
                if name == "mobile" && precision == Precision::Int8 {
                    // The depthwise convolution has int8 scales but runs on the direct
                    // kernel: the per-layer list says fp32, not int8.
                    let dw = plan
                        .report
                        .iter()
                        .find(|l| l.layer.contains("depthwise"))
                        .expect("the depthwise layer in the report");
                    assert_eq!(dw.precision, "fp32", "{:?}", plan.report);
                }
            }
        }
    }
}

#[test]
fn torchvision_models_plan_at_batch_1_to_256() {
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/real");
    let present: Vec<&str> = ["resnet50", "mobilenet_v2"]
        .into_iter()
        .filter(|m| real.join(format!("{m}.onnx")).exists())
        .collect();
    if present.is_empty() {
        calibench::corpus::say_skipped(
            "skipped: no torchvision exports in fixtures/real (python3 fixtures/real_models.py --torchvision; needs torch)",
        );
        return;
    }
    for name in present {
        let model = real.join(format!("{name}.onnx"));
        for batch in [1, 2, 16, 256] {
            let plan = plan_at(&model, Precision::Fp32, None, batch)
                .unwrap_or_else(|e| panic!("{name} b{batch}: {e}"));
            assert_eq!(plan.outputs[0].spec.shape, [batch, 1000]);
        }
        // Not yet: im2col's scratch of the first convolution at batch 1024 passes 2^30
        // elements (convolutions are not split over the batch); refused, saying so.
        if name == "resnet50" {
            let e = plan_at(&model, Precision::Fp32, None, 1024).unwrap_err();
            assert!(e.contains("smaller batch"), "{e}");
        }
    }
}

/// The torch export patterns on the GPU: fp32 and fp16 against the reference backend's fp32,
/// int8 and best against the reference backend's int8 and best with the same cache.
#[test]
#[ignore = "needs a GPU"]
fn torch_export_patterns_agree_with_the_reference_backend() {
    require_gpu();
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/torch-patterns");
    for name in ["mobile", "yolo"] {
        let model = root.join(format!("{name}.onnx"));
        let cache = minmax_cache(&model, &root.join(format!("{name}.calib.npy")), dir.path());
        let (_, x) = read_arrays(&root.join(format!("{name}.eval.npy")))
            .unwrap()
            .remove(0);
        let batch = x.shape[0];
        let input = std::slice::from_ref(&x);
        let infer = |backend: &dyn Backend, precision: Precision| {
            let c = precision.needs_cache().then_some(cache.as_path());
            let mut engine = build(backend, &model, c, precision, batch)
                .unwrap_or_else(|e| panic!("{name} {precision:?} on {:?}: {e}", backend.kind()));
            engine.infer(input).unwrap().remove(0)
        };
        let scale = |t: &Tensor| t.data.iter().fold(0f32, |m, v| m.max(v.abs()));
        let fp32 = infer(&ReferenceBackend, Precision::Fp32);
        let s = scale(&fp32);
        for (precision, against, tolerance) in [
            (Precision::Fp32, Precision::Fp32, 1e-4),
            (Precision::Fp16, Precision::Fp32, 2e-2),
            (Precision::Int8, Precision::Int8, 2e-2),
            (Precision::Best, Precision::Best, 5e-2),
        ] {
            let want = if against == Precision::Fp32 {
                fp32.clone()
            } else {
                infer(&ReferenceBackend, against)
            };
            let got = infer(&CudaBackend, precision);
            let (max, p99, _) = compare_logits(&got, &want);
            eprintln!(
                "{name} {precision:?}: max |Δ| {max:.3e} (relative {:.3e}), p99 {p99:.3e}",
                max / s
            );
            assert!(
                max / s < tolerance,
                "{name} {precision:?}: max |Δ| {max} of {s}"
            );
        }
    }
}
