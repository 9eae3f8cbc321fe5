//! calibench: can a TensorRT INT8 calibration cache made on one GPU be reused on another,
//! and at what cost in accuracy and latency?
//!
//! A matrix spec ([`matrix`]) crosses models × caches × devices × precisions × backends ×
//! batch sizes into cells; the [`runner`] builds each cell's engine through a
//! [`backend::Backend`], measures it ([`measure`]) and appends a record to the
//! [`results`] store.

pub mod backend;
pub mod cache;
pub mod gpu;
pub mod hash;
pub mod matrix;
pub mod measure;
pub mod model;
pub mod report;
pub mod results;
pub mod runner;
