//! Measurement overhead on a GPU: calibench's reported GPU time for a fixed-duration kernel
//! (a clock64 spin of about 1 ms) against a raw CUDA-event loop around the same kernel, and the
//! run-to-run coefficient of variation of calibench's p50 over 5 repeats. Without a GPU it
//! prints why and exits 0.
//!
//!     cargo bench --bench gpu_timing

use std::time::Duration;

use calibench::gpu::cuda::{
    driver_present, nvrtc_present, CudaEventTimer, GpuContext, SpinKernel, SyncMode,
};
use calibench::matrix::spec::LatencySpec;
use calibench::measure::latency::{measure, CriterionOutput, IterationTimer};

const REPEATS: usize = 5;

fn main() {
    if !driver_present() || !nvrtc_present() {
        println!("gpu_timing: skipped (no CUDA driver or nvrtc on this machine)");
        return;
    }
    let ctx = GpuContext::new(0).expect("a CUDA context on GPU 0");
    let spin = SpinKernel::new(&ctx).expect("the spin kernel compiles");
    // About 1 ms at ~2 GHz; the raw loop below measures what it really is.
    let cycles: i64 = std::env::var("CALIBENCH_SPIN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);

    // Raw: one event pair around 200 back-to-back launches, per launch.
    let mut raw =
        CudaEventTimer::new(&ctx, SyncMode::Spin, false, || spin.enqueue(cycles)).unwrap();
    raw.time(20).unwrap();
    let raw_ms: Vec<f64> = (0..REPEATS)
        .map(|_| raw.time(200).unwrap().as_secs_f64() * 1e3 / 200.0)
        .collect();
    let raw_mean = raw_ms.iter().sum::<f64>() / raw_ms.len() as f64;
    println!(
        "raw CUDA-event loop: {raw_mean:.5} ms per launch ({:?})",
        raw_ms.iter().map(|v| format!("{v:.5}")).collect::<Vec<_>>()
    );

    let spec = LatencySpec {
        warmup_ms: 300,
        measurement_ms: 1500,
        samples: 100,
        warmup_iterations: 10,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    for (label, sync, graph) in [
        ("events, spin-wait", SyncMode::Spin, false),
        ("events, blocking sync", SyncMode::Blocking, false),
        ("CUDA graph", SyncMode::Spin, true),
    ] {
        let mut p50 = Vec::new();
        let mut mean = Vec::new();
        for r in 0..REPEATS {
            let mut timer =
                CudaEventTimer::new(&ctx, sync, graph, || spin.enqueue(cycles)).unwrap();
            let out = CriterionOutput {
                dir: dir.path(),
                html: false,
            };
            let l = measure(
                &spec,
                1,
                &format!("spin-{label}-{r}"),
                Some(out),
                &mut timer,
            )
            .unwrap();
            p50.push(l.median_ms);
            mean.push(l.estimate.map(|e| e.mean_ms).unwrap_or(f64::NAN));
            std::thread::sleep(Duration::from_millis(100));
        }
        let avg = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let cv = |v: &[f64]| {
            let m = avg(v);
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt() / m
        };
        println!(
            "{label:<22} p50 {:.5} ms (ratio to raw {:.4}, CV over {REPEATS} repeats {:.3}%) · criterion mean {:.5} ms (ratio {:.4}, CV {:.3}%)",
            avg(&p50),
            avg(&p50) / raw_mean,
            cv(&p50) * 100.0,
            avg(&mean),
            avg(&mean) / raw_mean,
            cv(&mean) * 100.0
        );
    }
}
