//! Measurements of a built engine: latency and accuracy.

pub mod accuracy;
pub mod latency;
