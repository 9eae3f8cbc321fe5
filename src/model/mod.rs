//! Models: ONNX loading and inspection, precision plans, Q/DQ rewriting, and the plain
//! tensor type every backend shares.

pub mod data;
pub mod fp16;
pub mod onnx;
pub mod opset;
pub mod precision;
pub mod qdq;
pub mod tensor;
pub mod types;

pub use tensor::{Tensor, TensorSpec};
