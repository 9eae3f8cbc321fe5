//! The TensorRT backend. This folder holds what does not need the TensorRT library: the
//! classification of TensorRT's log lines into diagnostics with fixes. The FFI shim, the
//! run-time loader and the engine inspector land here next (issue 8); until then the backend
//! reports itself unavailable and its cells are recorded as failed in the setup phase.

pub mod diagnostics;
