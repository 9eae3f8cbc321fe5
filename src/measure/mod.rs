//! Measurements of a built engine: latency (and, later, accuracy).

pub mod latency;
