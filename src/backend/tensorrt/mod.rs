//! The TensorRT backend. This folder holds what does not need the TensorRT library: the
//! classification of TensorRT's log lines into diagnostics with fixes, and the parsing of the
//! engine inspector's JSON into per-layer precision. With the `tensorrt` cargo feature, the C++
//! shim in `shim/` (compiled by build.rs against the user's TensorRT headers) and its safe
//! wrapper in `ffi` open TensorRT at run time, build engines from ONNX + cache, inspect and run
//! them, and `engine` is the runner's `Backend`. Without the feature, the backend reports
//! itself unavailable and its cells are recorded as failed in the setup phase.

pub mod calibrator;
pub mod call_log;
pub mod diagnostics;
#[cfg(feature = "tensorrt")]
pub mod engine;
#[cfg(feature = "tensorrt")]
pub mod ffi;
pub mod inspector;
pub mod io;
