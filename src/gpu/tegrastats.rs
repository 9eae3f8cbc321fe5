//! Telemetry on Jetson (Tegra) boards, which have no NVML: `tegrastats --interval MS` is spawned
//! for the measurement and each line it prints is parsed into the same [`Sample`] the NVML
//! sampler takes (GPU clock and load from `GR3D_FREQ`, memory clock from `EMC_FREQ`, the GPU
//! temperature, the GPU power rail).
//!
//! The line format changed across JetPack releases (`fixtures/tegrastats/` holds real lines from
//! L4T 28 to JetPack 7): `GR3D 39%@76` / `GR3D_FREQ 0%@114` / `GR3D_FREQ 0%@[0,0]` (per GPC) /
//! `GR3D_FREQ @[1000,1000,1000]` (Thor, no load); rails as `VDD_SYS_GPU 182/182` (no unit),
//! `VDD_GPU_SOC 2340mW/2340mW` or `…mW/…mW/…mW`; temperatures as `GPU@39.5C` or `gpu@47.6C/47.6C`,
//! `-256C` for a sensor that is off.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use super::telemetry::{summarize, Sample};
use super::GpuError;
use crate::results::schema::Telemetry;

/// What one tegrastats line says about the GPU.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TegraReading {
    /// GPU (GR3D) load, % (absent on Thor).
    pub gpu_load_pct: Option<f64>,
    /// GPU clock, MHz (the highest GPC clock where several are given).
    pub gpu_clock_mhz: Option<f64>,
    /// External memory controller load, %.
    pub emc_load_pct: Option<f64>,
    /// External memory controller clock, MHz.
    pub emc_clock_mhz: Option<f64>,
    /// Temperatures by sensor name, °C (sensors reading -256 °C are off and left out).
    pub temperatures_c: BTreeMap<String, f64>,
    /// Power rails by name: the current reading, mW.
    pub rails_mw: BTreeMap<String, f64>,
}

/// Rails that carry the GPU, most specific first (Orin, Thor, TX2/Xavier, Nano, AGX Xavier).
const GPU_RAILS: &[&str] = &["VDD_GPU_SOC", "VDD_GPU", "VDD_SYS_GPU", "POM_5V_GPU", "GPU"];

impl TegraReading {
    /// The GPU temperature (sensor `GPU` or `gpu`).
    pub fn gpu_temperature_c(&self) -> Option<f64> {
        self.temperatures_c
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("gpu"))
            .map(|(_, v)| *v)
    }

    /// The GPU's power rail and its reading in W (on Orin the rail also feeds the SoC).
    pub fn gpu_power(&self) -> Option<(&'static str, f64)> {
        GPU_RAILS
            .iter()
            .find_map(|r| self.rails_mw.get(*r).map(|mw| (*r, mw / 1000.0)))
    }

    /// As the telemetry sample the NVML sampler takes (absent values are NaN).
    pub fn to_sample(&self) -> Sample {
        Sample {
            sm_clock_mhz: self.gpu_clock_mhz.unwrap_or(f64::NAN),
            mem_clock_mhz: self.emc_clock_mhz.unwrap_or(f64::NAN),
            power_w: self.gpu_power().map_or(f64::NAN, |(_, w)| w),
            temperature_c: self.gpu_temperature_c().unwrap_or(f64::NAN),
            utilization_pct: self.gpu_load_pct.unwrap_or(f64::NAN),
            reasons: Vec::new(),
        }
    }
}

/// `12%@1300`, `0%@[0,0]`, `@[1000,1000]`, `@2133`, `3%@76` → (load, clock).
fn load_at_clock(v: &str) -> (Option<f64>, Option<f64>) {
    let (load, clock) = match v.split_once('@') {
        Some((l, c)) => (l, c),
        None => (v, ""),
    };
    let load = load.strip_suffix('%').and_then(|l| l.parse().ok());
    let clock = clock
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .filter_map(|c| c.parse::<f64>().ok())
        .reduce(f64::max);
    (load, clock)
}

/// `NAME@42.5C` or `name@47.6C/47.6C` → (name, °C).
fn temperature(token: &str) -> Option<(String, f64)> {
    let (name, rest) = token.split_once('@')?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let value = rest.split('/').next()?.strip_suffix('C')?;
    Some((name.to_string(), value.parse().ok()?))
}

/// `2340mW/2340mW`, `5139mW/5139mW/5139mW`, `182/182` → the current mW (not `3607/3983MB`,
/// the RAM field).
fn rail_reading(token: &str) -> Option<f64> {
    let parts: Vec<f64> = token
        .split('/')
        .map(|p| p.trim_end_matches("mW").parse::<f64>().ok())
        .collect::<Option<_>>()?;
    (parts.len() >= 2).then(|| parts[0])
}

/// Parses one tegrastats line; `None` if it is not one (no RAM field).
pub fn parse_line(line: &str) -> Option<TegraReading> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    if !tokens.contains(&"RAM") {
        return None;
    }
    let mut r = TegraReading::default();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        let next = tokens.get(i + 1).copied().unwrap_or("");
        match t {
            "GR3D_FREQ" | "GR3D" if next.contains('@') || next.ends_with('%') => {
                (r.gpu_load_pct, r.gpu_clock_mhz) = load_at_clock(next);
                i += 2;
                continue;
            }
            "EMC_FREQ" | "EMC" if next.contains('@') || next.ends_with('%') => {
                (r.emc_load_pct, r.emc_clock_mhz) = load_at_clock(next);
                i += 2;
                continue;
            }
            _ => {}
        }
        if let Some((name, c)) = temperature(t) {
            if c > -256.0 {
                r.temperatures_c.insert(name, c);
            }
        } else if t
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && t.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        {
            if let Some(mw) = rail_reading(next) {
                r.rails_mw.insert(t.to_string(), mw);
                i += 2;
                continue;
            }
        }
        i += 1;
    }
    Some(r)
}

/// A running `tegrastats`; [`TegrastatsSampler::stop`] ends it and summarizes what it printed.
pub struct TegrastatsSampler {
    child: Child,
    reader: JoinHandle<Vec<Sample>>,
    period: Duration,
}

impl TegrastatsSampler {
    /// Spawns `tegrastats --interval MS` (the program on PATH, or CALIBENCH_TEGRASTATS).
    pub fn start(period: Duration) -> Result<TegrastatsSampler, GpuError> {
        let program = std::env::var("CALIBENCH_TEGRASTATS").unwrap_or_else(|_| "tegrastats".into());
        let ms = period.as_millis().max(1).to_string();
        let mut child = Command::new(&program)
            .args(["--interval", &ms])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                GpuError::Nvml(format!(
                    "cannot run {program} --interval {ms}: {e} (Jetson telemetry comes from tegrastats; \
                     set CALIBENCH_TEGRASTATS to its path, or run with --telemetry-ms 0)"
                ))
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| GpuError::Nvml("tegrastats has no stdout".into()))?;
        let reader = std::thread::Builder::new()
            .name("telemetry-tegrastats".into())
            .spawn(move || {
                BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                    .filter_map(|l| parse_line(&l))
                    .map(|r| r.to_sample())
                    .collect()
            })
            .map_err(|e| GpuError::Nvml(format!("cannot start the tegrastats reader: {e}")))?;
        Ok(TegrastatsSampler {
            child,
            reader,
            period,
        })
    }

    /// Stops tegrastats and summarizes its readings.
    pub fn stop(mut self) -> Result<Telemetry, GpuError> {
        // tegrastats runs until killed; its pipe then closes and the reader ends.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let samples = self
            .reader
            .join()
            .map_err(|_| GpuError::Nvml("the tegrastats reader panicked".into()))?;
        Ok(summarize(&samples, self.period))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> TegraReading {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/tegrastats")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        parse_line(text.trim()).unwrap_or_else(|| panic!("{} did not parse", path.display()))
    }

    #[test]
    fn tx1_l4t28() {
        let r = fixture("tx1_l4t28.txt");
        assert_eq!((r.gpu_load_pct, r.gpu_clock_mhz), (Some(39.0), Some(76.0)));
        assert_eq!((r.emc_load_pct, r.emc_clock_mhz), (Some(1.0), Some(1600.0)));
        assert!(r.rails_mw.is_empty() && r.gpu_power().is_none());
    }

    #[test]
    fn tx2_before_jetpack5() {
        let r = fixture("tx2_jetpack4.txt");
        assert_eq!((r.gpu_load_pct, r.gpu_clock_mhz), (Some(0.0), Some(114.0)));
        assert_eq!(r.emc_clock_mhz, Some(1866.0));
        assert_eq!(r.gpu_temperature_c(), Some(39.5));
        assert_eq!(r.gpu_power(), Some(("VDD_SYS_GPU", 0.182)));
        assert_eq!(r.rails_mw.get("VDD_IN"), Some(&5297.0));
        assert_eq!(r.rails_mw.len(), 6);
    }

    #[test]
    fn agx_orin_jetpack6() {
        let r = fixture("agx_orin_jetpack6.txt");
        assert_eq!((r.gpu_load_pct, r.gpu_clock_mhz), (Some(0.0), Some(0.0)));
        assert_eq!(r.emc_clock_mhz, Some(2133.0));
        // GPU@-256C: the sensor is off, so there is no GPU temperature.
        assert_eq!(r.gpu_temperature_c(), None);
        assert_eq!(r.temperatures_c.get("tj"), Some(&44.343));
        assert_eq!(r.gpu_power(), Some(("VDD_GPU_SOC", 2.34)));
        assert_eq!(r.rails_mw.get("VIN_SYS_5V0"), Some(&4025.0));
        // The timestamp and "VIC_FREQ 729" are not rails.
        assert!(!r.rails_mw.contains_key("VIC_FREQ"));
    }

    #[test]
    fn agx_orin_jetpack7() {
        let r = fixture("agx_orin_jetpack7.txt");
        assert_eq!(
            (r.gpu_load_pct, r.gpu_clock_mhz),
            (Some(12.0), Some(1300.0))
        );
        assert_eq!((r.emc_load_pct, r.emc_clock_mhz), (Some(3.0), Some(3199.0)));
        assert_eq!(r.gpu_temperature_c(), Some(47.625));
        assert_eq!(r.gpu_power(), Some(("VDD_GPU_SOC", 5.139)));
        let s = r.to_sample();
        assert_eq!(
            (s.sm_clock_mhz, s.utilization_pct, s.power_w),
            (1300.0, 12.0, 5.139)
        );
    }

    #[test]
    fn thor_jetpack7() {
        let r = fixture("thor_jetpack7.txt");
        assert_eq!((r.gpu_load_pct, r.gpu_clock_mhz), (None, Some(1000.0)));
        assert_eq!(r.emc_clock_mhz, Some(1866.0));
        assert!(r.to_sample().utilization_pct.is_nan());
    }

    #[test]
    fn other_text_is_not_a_reading() {
        assert_eq!(parse_line(""), None);
        assert_eq!(parse_line("tegrastats: command not found"), None);
    }

    #[test]
    fn the_sampler_summarizes_what_tegrastats_prints() {
        // A stand-in tegrastats that prints the JetPack 7 Orin line every interval.
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("tegrastats");
        let line = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/tegrastats/agx_orin_jetpack7.txt"),
        )
        .unwrap();
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n[ \"$1\" = --interval ] || exit 3\nwhile true; do echo '{}'; sleep 0.01; done\n",
                line.trim()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::env::set_var("CALIBENCH_TEGRASTATS", &script);
        let s = TegrastatsSampler::start(Duration::from_millis(10)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let t = s.stop().unwrap();
        std::env::remove_var("CALIBENCH_TEGRASTATS");
        assert!(t.samples >= 2, "{t:?}");
        assert_eq!(t.sm_clock_mhz.unwrap().median, 1300.0);
        assert_eq!(t.power_w.unwrap().median, 5.139);
    }
}
