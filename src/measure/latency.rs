//! Latency: warm up, time iterations, and summarize them into percentiles and throughput.

use std::time::{Duration, Instant};

use crate::matrix::spec::LatencySpec;
use crate::results::schema::Latency;

/// Hard cap on timed iterations per cell, so a sub-microsecond engine cannot fill memory.
pub const MAX_ITERATIONS: usize = 1_000_000;

/// Times `iteration` with the wall clock: warm-up for `warmup_ms` (at least one call), then
/// timed calls until `measurement_ms` has passed and at least `samples` were taken.
pub fn measure_wall<E>(
    spec: &LatencySpec,
    batch: usize,
    mut iteration: impl FnMut() -> Result<(), E>,
) -> Result<Latency, E> {
    let warmup = Duration::from_millis(spec.warmup_ms);
    let start = Instant::now();
    loop {
        iteration()?;
        if start.elapsed() >= warmup {
            break;
        }
    }
    let budget = Duration::from_millis(spec.measurement_ms);
    let mut times_ms = Vec::new();
    let start = Instant::now();
    while times_ms.len() < MAX_ITERATIONS
        && (times_ms.len() < spec.samples || start.elapsed() < budget)
    {
        let t = Instant::now();
        iteration()?;
        times_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(summarize(&times_ms, batch, "wall"))
}

/// Summarizes per-iteration latencies (ms) into a [`Latency`] block.
///
/// Percentiles interpolate linearly between order statistics (numpy's default).
pub fn summarize(times_ms: &[f64], batch: usize, clock: &str) -> Latency {
    if times_ms.is_empty() {
        return Latency {
            clock: clock.to_string(),
            ..Latency::default()
        };
    }
    let mut sorted = times_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let mean = sorted.iter().sum::<f64>() / n;
    let var = if sorted.len() > 1 {
        sorted.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    let q = |p: f64| percentile(&sorted, p);
    Latency {
        clock: clock.to_string(),
        iterations: sorted.len() as u64,
        min_ms: sorted[0],
        mean_ms: mean,
        median_ms: q(50.0),
        p90_ms: q(90.0),
        p95_ms: q(95.0),
        p99_ms: q(99.0),
        max_ms: sorted[sorted.len() - 1],
        std_ms: var.sqrt(),
        inferences_per_s: if mean > 0.0 { 1e3 / mean } else { 0.0 },
        samples_per_s: if mean > 0.0 {
            batch as f64 * 1e3 / mean
        } else {
            0.0
        },
    }
}

/// The p-th percentile (0..=100) of sorted values, linearly interpolated.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        // numpy.percentile(range(1, 11), [50, 90, 95, 99]) = 5.5, 9.1, 9.55, 9.91
        assert!((percentile(&v, 50.0) - 5.5).abs() < 1e-12);
        assert!((percentile(&v, 90.0) - 9.1).abs() < 1e-12);
        assert!((percentile(&v, 95.0) - 9.55).abs() < 1e-12);
        assert!((percentile(&v, 99.0) - 9.91).abs() < 1e-12);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 100.0), 10.0);
    }

    #[test]
    fn summary_fields() {
        let l = summarize(&[4.0, 2.0, 2.0, 4.0], 8, "wall");
        assert_eq!(l.iterations, 4);
        assert_eq!(
            (l.min_ms, l.max_ms, l.mean_ms, l.median_ms),
            (2.0, 4.0, 3.0, 3.0)
        );
        // sample standard deviation of [2, 2, 4, 4] = sqrt(4/3)
        assert!((l.std_ms - (4.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((l.inferences_per_s - 1000.0 / 3.0).abs() < 1e-9);
        assert!((l.samples_per_s - 8000.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn measure_takes_at_least_the_samples_asked_for() {
        let spec = LatencySpec {
            warmup_ms: 0,
            measurement_ms: 1,
            samples: 25,
        };
        let mut calls = 0;
        let l = measure_wall::<()>(&spec, 1, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert!(l.iterations >= 25);
        assert_eq!(calls as u64, l.iterations + 1, "one warm-up call");
    }

    #[test]
    fn errors_stop_the_measurement() {
        let spec = LatencySpec {
            warmup_ms: 0,
            measurement_ms: 1,
            samples: 5,
        };
        let mut calls = 0;
        let r = measure_wall(&spec, 1, || {
            calls += 1;
            if calls == 3 {
                Err("boom")
            } else {
                Ok(())
            }
        });
        assert_eq!(r.unwrap_err(), "boom");
    }
}
