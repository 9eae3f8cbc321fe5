//! `calibench calibrate`: ranges from data, written as a TensorRT cache with its provenance.

use std::time::Instant;

use anyhow::{bail, Context};
use calibench::backend::{cuda, onnxruntime, reference};
use calibench::cache::calibrate::{cache_from_ranges, collect_ranges, EngineActivations, Method};
use calibench::cache::provenance::Provenance;
use calibench::model::data::Dataset;
use calibench::model::onnx::OnnxModel;

use super::Outcome;
use crate::cli::CalibrateArgs;

/// The method with the entropy-onnxruntime options applied (refused for other methods).
fn method(args: &CalibrateArgs) -> anyhow::Result<Method> {
    let given =
        args.num_bins.is_some() || args.num_quantized_bins.is_some() || args.symmetric.is_some();
    match args.method {
        Method::EntropyOnnxruntime(mut s) => {
            s.bins = args.num_bins.unwrap_or(s.bins);
            s.quantized_bins = args.num_quantized_bins.unwrap_or(s.quantized_bins);
            s.symmetric = args.symmetric.unwrap_or(s.symmetric);
            if let Some(p) = s.problem() {
                bail!("{p}\nfix: e.g. --num-bins 128 --num-quantized-bins 128 (onnxruntime's defaults)");
            }
            Ok(Method::EntropyOnnxruntime(s))
        }
        m if given => bail!(
            "--num-bins, --num-quantized-bins and --symmetric are onnxruntime's entropy settings; method {m} has none\nfix: add --method entropy-onnxruntime, or drop them"
        ),
        m => Ok(m),
    }
}

/// The batch calibration runs at: `--batch`, unless the model fixes its batch axis (as
/// `torch.onnx.export` does without `dynamic_axes`/`dynamic_shapes`), which it must then use.
fn calibration_batch(model: &OnnxModel, asked: usize, samples: usize) -> anyhow::Result<usize> {
    let Some((name, n)) = model.fixed_batch() else {
        return Ok(asked);
    };
    if !samples.is_multiple_of(n) {
        bail!(
            "input {name:?} has a fixed batch of {n}, and {samples} calibration samples do not split into batches of {n}\nfix: give a multiple of {n} samples, or export the model with a dynamic batch axis"
        );
    }
    if asked != n {
        eprintln!(
            "note: input {name:?} has a fixed batch of {n}: calibrating in batches of {n} (--batch {asked} needs a model exported with a dynamic batch axis)"
        );
    }
    Ok(n)
}

pub fn calibrate(args: &CalibrateArgs) -> anyhow::Result<Outcome> {
    let method = method(args)?;
    let mut model = OnnxModel::load(&args.model)?;
    let input_names: Vec<String> = model.inputs().into_iter().map(|i| i.name).collect();
    let data = Dataset::read(&args.data, &input_names)?;
    // Symbolic dimensions: the shapes given, else the calibration data's own sizes.
    let shapes = args.shapes.clone().unwrap_or_else(|| {
        data.names
            .iter()
            .cloned()
            .zip(data.tensors.iter().map(|t| t.shape.clone()))
            .collect()
    });
    model.set_input_shapes(&shapes)?;
    let tensors = model.quantizable_tensors();
    let samples = data.samples();
    let batch = calibration_batch(&model, args.batch, samples)?;
    let gpu = args.gpu;
    let backend = match args.backend.as_str() {
        "auto" if onnxruntime::find_library().is_ok() => "onnxruntime",
        "auto" => "reference",
        other => other,
    };
    let (mut source, origin) = match backend {
        "onnxruntime" => {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let build = move |m: &OnnxModel, b: usize| onnxruntime::fp32_engine(m, b, threads);
            let source = EngineActivations::new(&model, tensors.clone(), data, batch, &build)?;
            (source, "cpu (onnxruntime backend)".to_string())
        }
        "reference" => (
            EngineActivations::new(&model, tensors.clone(), data, batch, &reference::fp32_engine)?,
            "cpu (reference backend)".to_string(),
        ),
        "cuda" => {
            let build = move |m: &OnnxModel, b: usize| cuda::fp32_engine(m, b, gpu);
            let source = EngineActivations::new(&model, tensors.clone(), data, batch, &build)?;
            (source, gpu_name(gpu))
        }
        other => bail!(
            "calibration on the {other} backend is not available\nfix: use --backend onnxruntime, reference or cuda"
        ),
    };
    let start = Instant::now();
    let ranges = collect_ranges(&mut source, method).map_err(anyhow::Error::msg)?;
    let cache = cache_from_ranges(&tensors, &ranges, method, args.trt_version);
    cache
        .write(&args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let data_sha = calibench::hash::sha256_file(&args.data)?;
    let provenance = Provenance {
        cache_sha256: Some(calibench::hash::sha256_file(&args.output)?),
        model_sha256: Some(calibench::hash::sha256_file(&args.model)?),
        calibrator: Some(method.to_string()),
        dataset_id: Some(args.dataset_id.clone().unwrap_or_else(|| {
            format!(
                "{}@{}",
                args.data
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                &data_sha[..12]
            )
        })),
        dataset_size: Some(samples as u64),
        batch: Some(batch.min(samples) as u64),
        origin_gpu: Some(origin),
        tensorrt_version: Some(args.trt_version.to_string()),
        calibench_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        created_at: Some(chrono::Utc::now().to_rfc3339()),
        ..Default::default()
    };
    let sidecar = provenance.write_for(&args.output)?;
    eprintln!(
        "wrote {} ({} tensors, {}, {samples} samples, {:.2} s) and {}",
        args.output.display(),
        cache.entries.len(),
        cache.header,
        start.elapsed().as_secs_f64(),
        sidecar.display()
    );
    Ok(Outcome::Ok)
}

/// "NVIDIA H100 80GB HBM3 (GPU-…, driver 580.…)" (NVML, or the CUDA driver where NVML is
/// absent; on a Jetson with its board and L4T release), or the ordinal where neither answers.
fn gpu_name(ordinal: usize) -> String {
    calibench::gpu::nvml::inventory()
        .ok()
        .and_then(|inv| {
            let driver = inv.driver;
            inv.gpus
                .into_iter()
                // CUDA's ordinal and NVML's index can differ; the UUID is what both agree on.
                .find(|g| {
                    calibench::gpu::cuda::ordinal_for_uuid(&g.uuid)
                        .map_or(g.index as usize == ordinal, |o| o == ordinal)
                })
                .map(|g| {
                    let board = match (&g.board, &g.l4t_release) {
                        (Some(b), Some(l)) => format!(", {b}, L4T {l}"),
                        (Some(b), None) => format!(", {b}"),
                        _ => String::new(),
                    };
                    format!("{} ({}, driver {driver}{board})", g.name, g.uuid)
                })
        })
        .unwrap_or_else(|| format!("GPU {ordinal} (cuda backend)"))
}
