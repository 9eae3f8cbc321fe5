//! GPU identity through NVML (nvml-wrapper, loading libnvidia-ml.so.1 at run time).

use nvml_wrapper::enum_wrappers::device::Clock;
use nvml_wrapper::Nvml;
use serde::{Deserialize, Serialize};

use super::GpuError;

pub use crate::results::schema::GpuInfo;

/// The GPUs of this host with the driver's versions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuInventory {
    /// Driver version, e.g. "580.159.04".
    pub driver: String,
    /// CUDA version the driver supports, e.g. "13.0".
    pub cuda_driver: String,
    /// Every GPU.
    pub gpus: Vec<GpuInfo>,
}

fn nvml_err(e: nvml_wrapper::error::NvmlError) -> GpuError {
    GpuError::Nvml(e.to_string())
}

/// Opens NVML.
pub fn open() -> Result<Nvml, GpuError> {
    Nvml::init().map_err(|e| GpuError::NvmlUnavailable(e.to_string()))
}

/// Every GPU's identity: through NVML, or through the CUDA driver where NVML is absent or
/// `CALIBENCH_NVML=off` ([`super::driver::inventory`]); each GPU's `identity_source` says which.
pub fn inventory() -> Result<GpuInventory, GpuError> {
    if std::env::var("CALIBENCH_NVML").is_ok_and(|v| v.eq_ignore_ascii_case("off")) {
        return super::driver::inventory();
    }
    match nvml_inventory() {
        Err(GpuError::NvmlUnavailable(why)) => super::driver::inventory().map_err(|e| {
            GpuError::NvmlUnavailable(format!(
                "{why}; the CUDA driver cannot list GPUs either: {e}"
            ))
        }),
        other => other,
    }
}

/// Every GPU's identity through NVML.
pub fn nvml_inventory() -> Result<GpuInventory, GpuError> {
    let nvml = open()?;
    let cuda = nvml.sys_cuda_driver_version().map_err(nvml_err)?;
    let mut gpus = Vec::new();
    for index in 0..nvml.device_count().map_err(nvml_err)? {
        let d = nvml.device_by_index(index).map_err(nvml_err)?;
        gpus.push(GpuInfo {
            index,
            name: d.name().map_err(nvml_err)?,
            uuid: d.uuid().map_err(nvml_err)?,
            serial: d.serial().ok(),
            board_part_number: d.board_part_number().ok(),
            vbios: d.vbios_version().ok(),
            pci_bus_id: d.pci_info().ok().map(|p| p.bus_id),
            compute_capability: d
                .cuda_compute_capability()
                .ok()
                .map(|c| format!("{}.{}", c.major, c.minor)),
            architecture: d.architecture().ok().map(|a| a.to_string()),
            memory_total_mib: d.memory_info().ok().map(|m| m.total / (1024 * 1024)),
            mig_mode: d.mig_mode().ok().map(|m| m.current == 1),
            persistence_mode: d.is_in_persistent_mode().ok(),
            power_limit_w: d
                .power_management_limit()
                .ok()
                .map(|mw| f64::from(mw) / 1000.0),
            max_sm_clock_mhz: d.max_clock_info(Clock::SM).ok(),
            max_mem_clock_mhz: d.max_clock_info(Clock::Memory).ok(),
            app_sm_clock_mhz: d.applications_clock(Clock::SM).ok(),
            app_mem_clock_mhz: d.applications_clock(Clock::Memory).ok(),
            ecc_enabled: d.is_ecc_enabled().ok().map(|e| e.currently_enabled),
            identity_source: Some("nvml".into()),
            sm_count: None,
            integrated: None,
            board: None,
            l4t_release: None,
        });
    }
    Ok(GpuInventory {
        driver: nvml.sys_driver_version().map_err(nvml_err)?,
        cuda_driver: format!("{}.{}", cuda / 1000, (cuda % 1000) / 10),
        gpus,
    })
}

/// The nvidia-smi commands that lock a GPU's clocks for stable measurements (calibench never
/// changes clocks itself).
pub fn lock_clocks_advice(gpu: &GpuInfo) -> String {
    let sm = gpu
        .max_sm_clock_mhz
        .map_or("<MHz>".to_string(), |c| c.to_string());
    format!(
        "sudo nvidia-smi -i {i} -pm 1 && sudo nvidia-smi -i {i} --lock-gpu-clocks={sm},{sm}   # undo: sudo nvidia-smi -i {i} --reset-gpu-clocks",
        i = gpu.index
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_nvml_the_error_says_so() {
        // On a machine with a driver this reads the real GPUs instead.
        match inventory() {
            Ok(inv) => assert!(!inv.driver.is_empty()),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("NVML is not available") && msg.contains("fix:"),
                    "{msg}"
                );
            }
        }
    }

    #[test]
    fn lock_clock_advice_names_the_gpu() {
        let g = GpuInfo {
            index: 3,
            max_sm_clock_mhz: Some(1980),
            ..Default::default()
        };
        let a = lock_clocks_advice(&g);
        assert!(a.contains("-i 3") && a.contains("--lock-gpu-clocks=1980,1980"));
    }
}
