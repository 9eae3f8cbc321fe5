//! The TensorRT backend. This folder holds what does not need the TensorRT library: the
//! classification of TensorRT's log lines into diagnostics with fixes, and the parsing of the
//! engine inspector's JSON into per-layer precision. The FFI shim and the run-time loader land
//! here next (issue 8); until then the backend reports itself unavailable and its cells are
//! recorded as failed in the setup phase.

pub mod diagnostics;
pub mod inspector;
