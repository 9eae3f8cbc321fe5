//! GPU identity through the CUDA driver API, for hosts without NVML (Jetson boards, whose GPU is
//! integrated) or with `CALIBENCH_NVML=off`: name, UUID, compute capability, SM count, memory,
//! clocks, PCI bus id and the integrated flag of each CUDA device, the driver's CUDA version,
//! and on Tegra the board (`/proc/device-tree/model`) and L4T release (`/etc/nv_tegra_release`).

use cudarc::driver::result;
use cudarc::driver::sys::CUdevice_attribute as A;

use super::cuda::{driver_present, format_uuid};
use super::nvml::{GpuInfo, GpuInventory};
use super::GpuError;

fn cuda_err(e: impl std::fmt::Display) -> GpuError {
    GpuError::Cuda(e.to_string())
}

/// The first line of a text file, trimmed of NULs and whitespace (device-tree strings end in NUL).
fn first_line(path: &str) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text);
    let line = text
        .lines()
        .next()?
        .trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!line.is_empty()).then(|| line.to_string())
}

/// `# R36 (release), REVISION: 4.3, GCID: …, BOARD: generic, EABI: aarch64, DATE: …` →
/// `R36 (release), REVISION: 4.3`.
pub fn l4t_release(line: &str) -> Option<String> {
    let line = line.trim_start_matches('#').trim();
    let mut parts = line.split(", ");
    let release = parts.next()?.trim();
    if !release.starts_with('R') {
        return None;
    }
    Some(match parts.next().filter(|p| p.starts_with("REVISION")) {
        Some(rev) => format!("{release}, {rev}"),
        None => release.to_string(),
    })
}

/// The driver's version string where the kernel module says it (`/proc/driver/nvidia/version`:
/// "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  …").
fn kernel_module_version() -> Option<String> {
    let line = first_line("/proc/driver/nvidia/version")?;
    line.split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()) && w.contains('.'))
        .map(str::to_string)
}

/// NVML's architecture name for a compute capability (the CUDA driver has no name for it).
pub fn architecture(major: i32, minor: i32) -> Option<&'static str> {
    Some(match (major, minor) {
        (6, _) => "Pascal",
        (7, 0) | (7, 2) => "Volta",
        (7, 5) => "Turing",
        (8, 0) | (8, 6) | (8, 7) | (8, 8) => "Ampere",
        (8, 9) => "Ada",
        (9, 0) => "Hopper",
        (10, _) | (11, _) | (12, _) => "Blackwell",
        _ => return None,
    })
}

/// Every CUDA device's identity from the CUDA driver. Its memory is what CUDA contexts can use
/// (`cuDeviceTotalMem`): on the H200, 143155 MiB where NVML counts the whole framebuffer,
/// 143771 MiB (the difference is memory the driver reserves).
pub fn inventory() -> Result<GpuInventory, GpuError> {
    if !driver_present() {
        return Err(GpuError::CudaUnavailable(
            "libcuda.so could not be loaded (and NVML is absent or off)".into(),
        ));
    }
    result::init().map_err(cuda_err)?;
    let mut version = 0i32;
    // SAFETY: writes one int.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(cuda_err)?;
    let board = first_line("/proc/device-tree/model");
    let l4t = first_line("/etc/nv_tegra_release").and_then(|l| l4t_release(&l));
    let count = result::device::get_count().map_err(cuda_err)?;
    let mut gpus = Vec::new();
    for ordinal in 0..count {
        let dev = result::device::get(ordinal).map_err(cuda_err)?;
        // SAFETY: `dev` came from `get`.
        let attr = |a: A| unsafe { result::device::get_attribute(dev, a) }.ok();
        let uuid = result::device::get_uuid(dev).map_err(cuda_err)?;
        let integrated = attr(A::CU_DEVICE_ATTRIBUTE_INTEGRATED).map(|v| v != 0);
        let cc = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
            .zip(attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR));
        let pci = match (
            attr(A::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID),
            attr(A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID),
            attr(A::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID),
        ) {
            (Some(d), Some(b), Some(s)) if integrated != Some(true) => {
                Some(format!("{d:08X}:{b:02X}:{s:02X}.0"))
            }
            _ => None,
        };
        gpus.push(GpuInfo {
            index: ordinal as u32,
            name: result::device::get_name(dev).map_err(cuda_err)?,
            uuid: format_uuid(&uuid.bytes.map(|b| b as u8)),
            pci_bus_id: pci,
            compute_capability: cc.map(|(a, b)| format!("{a}.{b}")),
            architecture: cc.and_then(|(a, b)| architecture(a, b)).map(str::to_string),
            // SAFETY: as above.
            memory_total_mib: unsafe { result::device::total_mem(dev) }
                .ok()
                .map(|b| b as u64 / (1024 * 1024)),
            max_sm_clock_mhz: attr(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE).map(|k| k as u32 / 1000),
            max_mem_clock_mhz: attr(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE)
                .map(|k| k as u32 / 1000),
            sm_count: attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).map(|v| v as u32),
            integrated,
            board: board.clone().filter(|_| integrated == Some(true)),
            l4t_release: l4t.clone(),
            identity_source: Some("cuda-driver".into()),
            ..Default::default()
        });
    }
    Ok(GpuInventory {
        driver: kernel_module_version()
            .or_else(|| l4t.clone())
            .unwrap_or_else(|| "unknown".into()),
        cuda_driver: format!("{}.{}", version / 1000, (version % 1000) / 10),
        gpus,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l4t_release_lines() {
        // /etc/nv_tegra_release of JetPack 6.2 (L4T 36.4.3) and JetPack 4.6 (L4T 32.6.1).
        assert_eq!(
            l4t_release("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025").as_deref(),
            Some("R36 (release), REVISION: 4.3")
        );
        assert_eq!(
            l4t_release("# R32 (release), REVISION: 6.1, GCID: 27863751, BOARD: t210ref, EABI: aarch64, DATE: Mon Jul 26 19:20:30 UTC 2021").as_deref(),
            Some("R32 (release), REVISION: 6.1")
        );
        assert_eq!(l4t_release("garbage"), None);
    }

    #[test]
    fn without_a_driver_the_error_says_so() {
        match inventory() {
            Ok(inv) => assert!(inv
                .gpus
                .iter()
                .all(|g| g.identity_source.as_deref() == Some("cuda-driver"))),
            Err(e) => assert!(e.to_string().contains("libcuda"), "{e}"),
        }
    }

    /// On the device machine: the CUDA driver's identity matches NVML's for every GPU.
    #[test]
    #[ignore = "needs a GPU"]
    fn cuda_driver_identity_matches_nvml() {
        let nvml = super::super::nvml::nvml_inventory().expect("NVML");
        let cuda = inventory().expect("CUDA driver");
        assert_eq!(nvml.gpus.len(), cuda.gpus.len());
        assert_eq!(nvml.cuda_driver, cuda.cuda_driver);
        assert_eq!(
            nvml.driver, cuda.driver,
            "driver version from /proc/driver/nvidia/version"
        );
        for n in &nvml.gpus {
            let c = cuda
                .gpus
                .iter()
                .find(|c| c.uuid == n.uuid)
                .unwrap_or_else(|| panic!("no CUDA device with UUID {}", n.uuid));
            eprintln!(
                "{}: nvml {:?} cc {:?} {:?} MiB | cuda-driver {:?} cc {:?} {:?} MiB, {:?} SMs, integrated {:?}, pci {:?}/{:?}",
                n.uuid, n.name, n.compute_capability, n.memory_total_mib, c.name,
                c.compute_capability, c.memory_total_mib, c.sm_count, c.integrated, n.pci_bus_id, c.pci_bus_id
            );
            assert_eq!(c.name, n.name);
            assert_eq!(c.compute_capability, n.compute_capability);
            assert_eq!(c.architecture, n.architecture);
            // CUDA counts what contexts can use, NVML the whole framebuffer: CUDA's figure is
            // at most NVML's and within 1 % of it (H200: 143155 vs 143771 MiB).
            let (cm, nm) = (c.memory_total_mib.unwrap(), n.memory_total_mib.unwrap());
            assert!(
                cm <= nm && (nm - cm) as f64 <= 0.01 * nm as f64,
                "{cm} vs {nm} MiB"
            );
            assert_eq!(c.max_sm_clock_mhz, n.max_sm_clock_mhz);
            assert_eq!(c.pci_bus_id, n.pci_bus_id);
            assert_eq!(c.integrated, Some(false));
        }
    }
}
