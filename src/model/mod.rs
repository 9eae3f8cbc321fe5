//! Models: the tensors they take and give, and (later) ONNX loading and Q/DQ rewriting.

pub mod tensor;

pub use tensor::{Tensor, TensorSpec};
