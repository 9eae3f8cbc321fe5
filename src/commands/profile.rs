//! `calibench profile`: per-layer GPU time of a model on the cuda backend.

use anyhow::bail;
use calibench::backend::cuda::profile_model;

use super::Outcome;
use crate::cli::ProfileArgs;

pub fn profile(args: &ProfileArgs) -> anyhow::Result<Outcome> {
    if args.precision.needs_cache() && args.cache.is_none() {
        bail!(
            "{} needs a calibration cache to quantize with\nfix: pass --cache FILE (calibench calibrate writes one)",
            args.precision
        );
    }
    let model = calibench::model::onnx::load_with_shapes(
        &args.model,
        &args.shapes.clone().unwrap_or_default(),
    )?;
    let layers = profile_model(
        &model,
        args.cache.as_deref(),
        args.precision,
        args.batch,
        args.gpu,
        args.iterations,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&layers)?);
        return Ok(Outcome::Ok);
    }
    let total: f64 = layers.iter().map(|l| l.ms).sum();
    println!(
        "{:<24} {:<14} {:<6} {:>10} {:>6} {:>11}  {:>28} {:>11} {:>10}",
        "layer",
        "kind",
        "prec",
        "ms",
        "%",
        "layer TOP/s",
        "GEMM m×n×k",
        "cuBLASLt ms",
        "cuBLASLt TOP/s"
    );
    for l in &layers {
        let (shape, gemm_ms, tops) =
            l.gemm
                .as_ref()
                .map_or(("-".to_string(), "-".to_string(), "-".to_string()), |g| {
                    (
                        format!("{}×{}×{}", g.m, g.n, g.k),
                        format!("{:.4}", g.ms),
                        format!("{:.1}", g.tops),
                    )
                });
        let layer_tops = l.layer_tops.map_or("-".to_string(), |t| format!("{t:.1}"));
        println!(
            "{:<24} {:<14} {:<6} {:>10.4} {:>5.1}% {:>11}  {:>28} {:>11} {:>10}",
            l.name,
            l.kind,
            l.precision,
            l.ms,
            100.0 * l.ms / total.max(f64::MIN_POSITIVE),
            layer_tops,
            shape,
            gemm_ms,
            tops
        );
    }
    let gemm: f64 = layers
        .iter()
        .filter_map(|l| l.gemm.as_ref())
        .map(|g| g.ms)
        .sum();
    println!(
        "total {:.4} ms over {} layers; cuBLASLt alone on the same GEMM shapes: {:.4} ms",
        total,
        layers.len(),
        gemm,
    );
    Ok(Outcome::Ok)
}
