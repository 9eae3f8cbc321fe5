//! Latency. criterion drives every cell's measurement (warm-up, sampling, bootstrap confidence
//! intervals, outlier classification; its HTML and estimates go under the run's folder), timed
//! by an [`IterationTimer`]: wall clock for CPU engines, CUDA events for GPU engines. Because
//! criterion reports no tail percentiles, single iterations are also timed one by one for
//! min/median/p90/p95/p99/max.

use std::cell::RefCell;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::matrix::spec::LatencySpec;
use crate::results::schema::{Estimate, Latency, Outliers};

/// Hard cap on single-iteration samples per cell.
pub const MAX_ITERATIONS: usize = 100_000;

/// Bootstrap resamples for criterion's confidence intervals.
pub const BOOTSTRAP_RESAMPLES: usize = 20_000;

/// criterion needs at least this many samples.
pub const CRITERION_MIN_SAMPLES: usize = 10;

/// Times engine iterations.
pub trait IterationTimer {
    /// The error a failed iteration gives.
    type Error;
    /// The clock's name in records: `wall` or `cuda-event`.
    fn clock(&self) -> &'static str;
    /// Runs `iters` iterations back to back and returns their total time.
    fn time(&mut self, iters: u64) -> Result<Duration, Self::Error>;
}

/// Wall-clock timing of a closure (CPU engines).
pub struct WallTimer<F>(pub F);

impl<E, F: FnMut() -> Result<(), E>> IterationTimer for WallTimer<F> {
    type Error = E;
    fn clock(&self) -> &'static str {
        "wall"
    }
    fn time(&mut self, iters: u64) -> Result<Duration, E> {
        let start = Instant::now();
        for _ in 0..iters {
            (self.0)()?;
        }
        Ok(start.elapsed())
    }
}

/// Where criterion writes, and how chatty it is.
#[derive(Debug, Clone, Copy)]
pub struct CriterionOutput<'a> {
    /// criterion's output folder (estimates, HTML).
    pub dir: &'a Path,
    /// Let criterion draw its HTML report (slow: seconds per cell).
    pub html: bool,
}

/// Measures one cell: `warmup_iterations` untimed iterations, criterion's sampling, then
/// single-iteration timings for percentiles.
pub fn measure<T: IterationTimer>(
    spec: &LatencySpec,
    batch: usize,
    id: &str,
    criterion_out: Option<CriterionOutput<'_>>,
    timer: &mut T,
) -> Result<Latency, T::Error> {
    for _ in 0..spec.warmup_iterations {
        timer.time(1)?;
    }
    let estimate = match criterion_out {
        Some(out) => run_criterion(spec, id, out, timer)?,
        None => None,
    };
    // Per-iteration samples: at least `samples`, for at most the measurement time.
    let budget = Duration::from_millis(spec.measurement_ms);
    let mut times_ms = Vec::new();
    let start = Instant::now();
    if criterion_out.is_none() {
        // Without criterion, warm up here.
        let warm = Duration::from_millis(spec.warmup_ms);
        while start.elapsed() < warm {
            timer.time(1)?;
        }
    }
    let start = Instant::now();
    while times_ms.len() < MAX_ITERATIONS
        && (times_ms.len() < spec.samples || start.elapsed() < budget)
    {
        times_ms.push(timer.time(1)?.as_secs_f64() * 1e3);
    }
    let mut latency = summarize(&times_ms, batch, timer.clock());
    latency.estimate = estimate;
    latency.outliers = Some(tukey(&times_ms));
    Ok(latency)
}

fn run_criterion<T: IterationTimer>(
    spec: &LatencySpec,
    id: &str,
    out: CriterionOutput<'_>,
    timer: &mut T,
) -> Result<Option<Estimate>, T::Error> {
    let failure: RefCell<Option<T::Error>> = RefCell::new(None);
    let timer = RefCell::new(timer);
    let bench_id = criterion_id(id);
    // Built inside the redirection: criterion's first construction probes for gnuplot and
    // prints "Gnuplot not found, using plotters backend", which must not reach the terminal.
    crate::console::silenced(|| {
        let mut c = criterion::Criterion::default()
            .output_directory(out.dir)
            .warm_up_time(Duration::from_millis(spec.warmup_ms.max(1)))
            .measurement_time(Duration::from_millis(spec.measurement_ms.max(1)))
            .sample_size(spec.samples.max(CRITERION_MIN_SAMPLES))
            .nresamples(BOOTSTRAP_RESAMPLES)
            .with_output_color(false);
        if !out.html {
            c = c.without_plots();
        }
        c.bench_function(&bench_id, |b| {
            b.iter_custom(|iters| {
                if failure.borrow().is_some() {
                    return Duration::from_nanos(iters.max(1));
                }
                match timer.borrow_mut().time(iters) {
                    Ok(d) => d,
                    Err(e) => {
                        *failure.borrow_mut() = Some(e);
                        Duration::from_nanos(iters.max(1))
                    }
                }
            })
        });
    });
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    Ok(read_estimates(
        &out.dir.join(&bench_id).join("new").join("estimates.json"),
    ))
}

/// criterion's folder name for a cell key: no path separators, and at most 64 characters,
/// since criterion cuts longer names (cells keyed by a GPU UUID would otherwise share a folder);
/// long keys keep their start and end in a hash of the whole key.
pub fn criterion_id(key: &str) -> String {
    const MAX: usize = 64;
    let safe = crate::matrix::spec::to_id_chars(key, '_');
    if safe.len() <= MAX {
        return safe;
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(key.as_bytes());
    let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    let tail = &safe[safe.len() - 20..];
    format!("{}~{hex}~{tail}", &safe[..MAX - 22 - hex.len()])
}

#[derive(Deserialize)]
struct Interval {
    lower_bound: f64,
    upper_bound: f64,
    confidence_level: f64,
}

#[derive(Deserialize)]
struct PointEstimate {
    point_estimate: f64,
    confidence_interval: Interval,
}

#[derive(Deserialize)]
struct Estimates {
    mean: PointEstimate,
    median: PointEstimate,
    std_dev: PointEstimate,
    slope: Option<PointEstimate>,
}

/// criterion's estimates (ns) as milliseconds.
fn read_estimates(path: &Path) -> Option<Estimate> {
    let e: Estimates = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let ms = |v: f64| v / 1e6;
    Some(Estimate {
        mean_ms: ms(e.mean.point_estimate),
        mean_lower_ms: ms(e.mean.confidence_interval.lower_bound),
        mean_upper_ms: ms(e.mean.confidence_interval.upper_bound),
        median_ms: ms(e.median.point_estimate),
        median_lower_ms: ms(e.median.confidence_interval.lower_bound),
        median_upper_ms: ms(e.median.confidence_interval.upper_bound),
        std_dev_ms: ms(e.std_dev.point_estimate),
        slope_ms: e.slope.as_ref().map(|s| ms(s.point_estimate)),
        confidence_level: e.mean.confidence_interval.confidence_level,
    })
}

/// Times `iteration` with the wall clock and no criterion: warm-up, then samples.
pub fn measure_wall<E>(
    spec: &LatencySpec,
    batch: usize,
    iteration: impl FnMut() -> Result<(), E>,
) -> Result<Latency, E> {
    measure(spec, batch, "", None, &mut WallTimer(iteration))
}

/// Tukey's fences on per-iteration samples: mild beyond 1.5 IQR, severe beyond 3 IQR.
pub fn tukey(times_ms: &[f64]) -> Outliers {
    let mut v = times_ms.to_vec();
    v.sort_by(f64::total_cmp);
    let (q1, q3) = (percentile(&v, 25.0), percentile(&v, 75.0));
    let iqr = q3 - q1;
    let mut o = Outliers::default();
    for &t in &v {
        if t < q1 - 3.0 * iqr {
            o.low_severe += 1;
        } else if t < q1 - 1.5 * iqr {
            o.low_mild += 1;
        } else if t > q3 + 3.0 * iqr {
            o.high_severe += 1;
        } else if t > q3 + 1.5 * iqr {
            o.high_mild += 1;
        }
    }
    o
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
        estimate: None,
        outliers: None,
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
            warmup_iterations: 3,
            ..Default::default()
        };
        let mut calls = 0;
        let l = measure_wall::<()>(&spec, 1, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert!(l.iterations >= 25);
        assert_eq!(
            calls as u64,
            l.iterations + 3,
            "3 warm-up iterations, then the timed ones"
        );
        assert!(l.outliers.is_some());
    }

    #[test]
    fn errors_stop_the_measurement() {
        let spec = LatencySpec {
            warmup_ms: 0,
            measurement_ms: 1,
            samples: 5,
            warmup_iterations: 0,
            ..Default::default()
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

    #[test]
    fn criterion_estimates_land_under_the_given_folder() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LatencySpec {
            warmup_ms: 20,
            measurement_ms: 100,
            samples: 10,
            warmup_iterations: 0,
            ..Default::default()
        };
        let mut timer = WallTimer(|| -> Result<(), ()> {
            std::hint::black_box((0..200).sum::<u64>());
            Ok(())
        });
        let out = CriterionOutput {
            dir: dir.path(),
            html: false,
        };
        let _serial = crate::console::TEST_LOCK
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let l = measure(
            &spec,
            4,
            "m/none/cpu/fp32/reference/b4",
            Some(out),
            &mut timer,
        )
        .unwrap();
        let e = l.estimate.expect("criterion's estimate");
        assert!(
            e.mean_lower_ms <= e.mean_ms && e.mean_ms <= e.mean_upper_ms,
            "{e:?}"
        );
        assert!((e.confidence_level - 0.95).abs() < 1e-9);
        assert!(dir
            .path()
            .join("m_none_cpu_fp32_reference_b4/new/estimates.json")
            .is_file());
    }

    #[test]
    fn criterion_ids_of_long_keys_stay_short_and_distinct() {
        let a = "digits/none/GPU-80aab29b-12cc-ec6b-2a36-2363ebe173ad/fp32/cuda/b1";
        let b = "digits/none/GPU-80aab29b-12cc-ec6b-2a36-2363ebe173ad/fp32/cuda/b256";
        let (ia, ib) = (criterion_id(a), criterion_id(b));
        assert!(ia.len() <= 64 && ib.len() <= 64, "{ia} {ib}");
        assert_ne!(ia, ib);
        assert!(
            ia.starts_with("digits_none_GPU-80aab29b") && ia.ends_with("fp32_cuda_b1"),
            "{ia}"
        );
        assert_eq!(
            criterion_id("m/none/cpu/fp32/reference/b4"),
            "m_none_cpu_fp32_reference_b4"
        );
    }

    #[test]
    fn tukey_fences() {
        let mut v: Vec<f64> = (0..100).map(|i| 1.0 + (i % 10) as f64 * 0.01).collect();
        v.push(5.0);
        v.push(1.2);
        let o = tukey(&v);
        assert_eq!(o.high_severe, 1);
        assert_eq!(o.low_severe + o.low_mild, 0);
    }
}
