//! GPUs: identity and telemetry through NVML ([`nvml`]), or without NVML through the CUDA
//! driver ([`driver`]) and on Jetson `tegrastats` ([`tegrastats`]), selection of the matrix's device
//! entries ([`select`]), and CUDA contexts, streams and event timing through cudarc ([`cuda`]).
//! Everything is loaded at run time: on a machine without a driver, [`GpuError`] says so and
//! CPU-only work is unaffected.

pub mod cuda;
pub mod driver;
pub mod nvml;
pub mod select;
pub mod tegrastats;
pub mod telemetry;

pub use select::resolve;

/// Why GPU facts could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GpuError {
    /// NVML could not be loaded or initialized.
    #[error("NVML is not available ({0})\nfix: GPU cells need an NVIDIA driver (libnvidia-ml.so.1); CPU cells (the reference backend) run without it")]
    NvmlUnavailable(String),
    /// An NVML call failed.
    #[error("NVML: {0}")]
    Nvml(String),
    /// A CUDA library could not be loaded.
    #[error("CUDA: {0}\nfix: GPU execution needs the NVIDIA driver's libcuda.so.1 (and libnvrtc/libcublasLt from a CUDA toolkit or the nvidia-*-cu* wheels)")]
    CudaUnavailable(String),
    /// A CUDA call failed.
    #[error("CUDA: {0}")]
    Cuda(String),
}
