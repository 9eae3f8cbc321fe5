//! Calibration caches: the TensorRT text format, statistics and flags, diffs, provenance,
//! import from other tools' tables, and (with a model) coverage and calibration.

pub mod calibrate;
pub mod coverage;
pub mod diff;
pub mod format;
pub mod import;
pub mod inspect;
pub mod provenance;

pub use format::{
    CacheError, CacheFileError, CalibrationCache, Calibrator, Entry, Header, TrtVersion,
};
