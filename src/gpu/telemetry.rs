//! A telemetry sampler: a background thread reads a GPU's clocks, power, temperature,
//! utilization and clock-event (throttle) reasons through NVML every period while a cell is
//! measured, and summarizes them into the record's telemetry block.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};

use super::GpuError;
use crate::results::schema::{GpuInfo, Stat, Telemetry};

/// Default sampling period.
pub const DEFAULT_PERIOD: Duration = Duration::from_millis(50);

/// An SM clock below this share of its first sample marks the measurement noisy.
pub const CLOCK_DROP_LIMIT: f64 = 0.95;

/// One reading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// SM clock, MHz.
    pub sm_clock_mhz: f64,
    /// Memory clock, MHz.
    pub mem_clock_mhz: f64,
    /// Power draw, W.
    pub power_w: f64,
    /// GPU temperature, °C.
    pub temperature_c: f64,
    /// GPU utilization, %.
    pub utilization_pct: f64,
    /// Clock-event reasons active at this reading.
    pub reasons: Vec<String>,
}

/// Reasons that mean the GPU slowed itself down (power or thermal), not merely idled.
const THROTTLING: &[&str] = &[
    "sw_power_cap",
    "hw_slowdown",
    "hw_power_brake",
    "sw_thermal",
    "hw_thermal",
];

fn reason_names(r: ThrottleReasons) -> Vec<String> {
    [
        (ThrottleReasons::GPU_IDLE, "gpu_idle"),
        (
            ThrottleReasons::APPLICATIONS_CLOCKS_SETTING,
            "applications_clocks",
        ),
        (ThrottleReasons::SW_POWER_CAP, "sw_power_cap"),
        (ThrottleReasons::HW_SLOWDOWN, "hw_slowdown"),
        (ThrottleReasons::SYNC_BOOST, "sync_boost"),
        (ThrottleReasons::SW_THERMAL_SLOWDOWN, "sw_thermal"),
        (ThrottleReasons::HW_THERMAL_SLOWDOWN, "hw_thermal"),
        (ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN, "hw_power_brake"),
        (ThrottleReasons::DISPLAY_CLOCK_SETTING, "display_clocks"),
    ]
    .into_iter()
    .filter(|(flag, _)| r.contains(*flag))
    .map(|(_, n)| n.to_string())
    .collect()
}

/// A sampler running beside a measurement, whichever source it reads (NVML or tegrastats).
pub trait RunningSampler: Send {
    /// Stops sampling and summarizes.
    fn finish(self: Box<Self>) -> Result<Telemetry, GpuError>;
}

impl RunningSampler for Sampler {
    fn finish(self: Box<Self>) -> Result<Telemetry, GpuError> {
        self.stop()
    }
}

impl RunningSampler for super::tegrastats::TegrastatsSampler {
    fn finish(self: Box<Self>) -> Result<Telemetry, GpuError> {
        self.stop()
    }
}

/// Starts the sampler for a GPU: NVML where NVML identified it, `tegrastats` for an integrated
/// GPU identified by the CUDA driver (Jetson), else an error saying there is no source.
pub fn start(gpu: &GpuInfo, period: Duration) -> Result<Box<dyn RunningSampler>, GpuError> {
    match (gpu.identity_source.as_deref(), gpu.integrated) {
        (Some("cuda-driver"), Some(true)) => Ok(Box::new(
            super::tegrastats::TegrastatsSampler::start(period)?,
        )),
        (Some("cuda-driver"), _) => Err(GpuError::NvmlUnavailable(
            "telemetry of a discrete GPU needs NVML, which is absent or off (CALIBENCH_NVML=off)"
                .into(),
        )),
        _ => Ok(Box::new(Sampler::start(gpu.index, period)?)),
    }
}

/// A running sampler; [`Sampler::stop`] ends it and returns the summary.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Vec<Sample>, GpuError>>,
    period: Duration,
}

impl Sampler {
    /// Starts sampling GPU `index` every `period`.
    pub fn start(index: u32, period: Duration) -> Result<Sampler, GpuError> {
        let nvml = super::nvml::open()?;
        // Fail early (not in the thread) if the GPU cannot be read.
        nvml.device_by_index(index)
            .map_err(|e| GpuError::Nvml(e.to_string()))?;
        drop(nvml);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("telemetry-gpu{index}"))
            .spawn(move || {
                let nvml = super::nvml::open()?;
                let d = nvml
                    .device_by_index(index)
                    .map_err(|e| GpuError::Nvml(e.to_string()))?;
                let mut samples = Vec::new();
                loop {
                    samples.push(Sample {
                        sm_clock_mhz: d.clock_info(Clock::SM).map_or(f64::NAN, f64::from),
                        mem_clock_mhz: d.clock_info(Clock::Memory).map_or(f64::NAN, f64::from),
                        power_w: d
                            .power_usage()
                            .map_or(f64::NAN, |mw| f64::from(mw) / 1000.0),
                        temperature_c: d
                            .temperature(TemperatureSensor::Gpu)
                            .map_or(f64::NAN, f64::from),
                        utilization_pct: d
                            .utilization_rates()
                            .map_or(f64::NAN, |u| f64::from(u.gpu)),
                        reasons: d
                            .current_throttle_reasons()
                            .map(reason_names)
                            .unwrap_or_default(),
                    });
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(period);
                }
                Ok(samples)
            })
            .map_err(|e| GpuError::Nvml(format!("cannot start the telemetry thread: {e}")))?;
        Ok(Sampler {
            stop,
            thread,
            period,
        })
    }

    /// Stops sampling and summarizes.
    pub fn stop(self) -> Result<Telemetry, GpuError> {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self
            .thread
            .join()
            .map_err(|_| GpuError::Nvml("the telemetry thread panicked".into()))??;
        Ok(summarize(&samples, self.period))
    }
}

fn stat(values: impl Iterator<Item = f64>) -> Option<Stat> {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(Stat {
        min: v[0],
        median: crate::measure::latency::percentile(&v, 50.0),
        max: v[v.len() - 1],
    })
}

/// Summarizes samples: min/median/max of each quantity, the reasons seen, and whether the
/// measurement is noisy (power or thermal throttling, or the SM clock falling below 95% of
/// its first reading).
pub fn summarize(samples: &[Sample], period: Duration) -> Telemetry {
    let mut reasons: Vec<String> = samples
        .iter()
        .flat_map(|s| s.reasons.iter().cloned())
        .collect();
    reasons.sort();
    reasons.dedup();
    let sm = stat(samples.iter().map(|s| s.sm_clock_mhz));
    let first_sm = samples
        .first()
        .map(|s| s.sm_clock_mhz)
        .filter(|c| c.is_finite());
    let mut noisy_because = Vec::new();
    let throttled: Vec<&String> = reasons
        .iter()
        .filter(|r| THROTTLING.contains(&r.as_str()))
        .collect();
    if !throttled.is_empty() {
        noisy_because.push(format!(
            "throttling seen: {}",
            throttled
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let (Some(first), Some(sm)) = (first_sm, &sm) {
        if sm.min < CLOCK_DROP_LIMIT * first {
            noisy_because.push(format!(
                "SM clock fell to {:.0} MHz from {:.0} MHz",
                sm.min, first
            ));
        }
    }
    Telemetry {
        samples: samples.len(),
        period_ms: period.as_secs_f64() * 1e3,
        sm_clock_mhz: sm,
        mem_clock_mhz: stat(samples.iter().map(|s| s.mem_clock_mhz)),
        power_w: stat(samples.iter().map(|s| s.power_w)),
        temperature_c: stat(samples.iter().map(|s| s.temperature_c)),
        utilization_pct: stat(samples.iter().map(|s| s.utilization_pct)),
        reasons,
        noisy: !noisy_because.is_empty(),
        noisy_because,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(sm: f64, reasons: &[&str]) -> Sample {
        Sample {
            sm_clock_mhz: sm,
            mem_clock_mhz: 2619.0,
            power_w: 300.0,
            temperature_c: 40.0,
            utilization_pct: 100.0,
            reasons: reasons.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn steady_run_is_not_noisy() {
        let t = summarize(
            &[s(1980.0, &[]), s(1980.0, &["gpu_idle"]), s(1965.0, &[])],
            DEFAULT_PERIOD,
        );
        assert!(!t.noisy, "{:?}", t.noisy_because);
        assert_eq!(t.sm_clock_mhz.unwrap().median, 1980.0);
        assert_eq!(t.reasons, vec!["gpu_idle"]);
        assert_eq!(t.samples, 3);
    }

    #[test]
    fn throttling_or_clock_drop_is_noisy() {
        let t = summarize(
            &[s(1980.0, &[]), s(1980.0, &["sw_power_cap"])],
            DEFAULT_PERIOD,
        );
        assert!(t.noisy && t.noisy_because[0].contains("sw_power_cap"));
        let t = summarize(&[s(1980.0, &[]), s(1700.0, &[])], DEFAULT_PERIOD);
        assert!(t.noisy && t.noisy_because[0].contains("1700"));
    }

    #[test]
    fn missing_readings_are_skipped() {
        let mut a = s(f64::NAN, &[]);
        a.power_w = f64::NAN;
        let t = summarize(&[a], DEFAULT_PERIOD);
        assert!(t.sm_clock_mhz.is_none() && t.power_w.is_none());
        assert!(!t.noisy);
    }

    #[test]
    fn reason_bits_are_named() {
        let names =
            reason_names(ThrottleReasons::SW_POWER_CAP | ThrottleReasons::HW_THERMAL_SLOWDOWN);
        assert_eq!(names, vec!["sw_power_cap", "hw_thermal"]);
    }
}
