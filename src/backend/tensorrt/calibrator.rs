//! Which TensorRT calibrator class serves a cache (TensorRT 10's implicit quantization).
//!
//! TensorRT uses a cache only when its header (`TRT-<version>-<calibrator>`) names the running
//! TensorRT and the calibrator class the build was given; otherwise it calibrates, and since
//! calibench's calibrator has no data (`getBatch` returns false, as `trtexec --calib` does), the
//! build would quantize on no data at all. So the class follows the header, and a header the
//! running TensorRT would not use is refused before the build, with the command that re-tags it.

use std::path::Path;

use crate::cache::{Calibrator, Header, TrtVersion};

/// The calibrator class the shim instantiates (`CalibenchTrtBuildOptions.calibrator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum CalibratorClass {
    /// IInt8EntropyCalibrator2 (header `EntropyCalibration2`).
    Entropy2 = 0,
    /// IInt8EntropyCalibrator (header `EntropyCalibration`).
    Entropy = 1,
    /// IInt8MinMaxCalibrator (header `MinMaxCalibration`).
    MinMax = 2,
    /// IInt8LegacyCalibrator (header `LegacyCalibration`).
    Legacy = 3,
}

impl CalibratorClass {
    /// TensorRT's class name.
    pub fn class_name(self) -> &'static str {
        match self {
            CalibratorClass::Entropy2 => "IInt8EntropyCalibrator2",
            CalibratorClass::Entropy => "IInt8EntropyCalibrator",
            CalibratorClass::MinMax => "IInt8MinMaxCalibrator",
            CalibratorClass::Legacy => "IInt8LegacyCalibrator",
        }
    }
}

/// The class that serves a cache with this header to the running TensorRT, or why TensorRT
/// would not use the cache (the message names the file and the fix).
pub fn calibrator_for(
    header: &Header,
    cache_path: &Path,
    runtime: TrtVersion,
) -> Result<CalibratorClass, String> {
    let class = match header.calibrator.clone().normalized() {
        Calibrator::EntropyCalibration2 => CalibratorClass::Entropy2,
        Calibrator::EntropyCalibration => CalibratorClass::Entropy,
        Calibrator::MinMaxCalibration => CalibratorClass::MinMax,
        Calibrator::LegacyCalibration => CalibratorClass::Legacy,
        Calibrator::Other(name) => {
            return Err(format!(
                "{}: its header {header} names the calibrator {name:?}, which TensorRT does not have \
                 (EntropyCalibration2, EntropyCalibration, MinMaxCalibration, LegacyCalibration), so \
                 TensorRT would not use the cache and would calibrate on no data\n\
                 fix: re-tag it with the calibrator that computed the scales: calibench cache import {} \
                 --trt-version {runtime} --calibrator EntropyCalibration2 -o retagged.cache",
                cache_path.display(),
                cache_path.display()
            ))
        }
    };
    let cache_version = header.version();
    if cache_version != runtime {
        return Err(format!(
            "{}: the cache was written for TensorRT {cache_version} (header {header}) but the running \
             TensorRT is {runtime}; TensorRT does not use a cache whose header names another version \
             and would calibrate on no data instead\n\
             fix: if its scales are still right for this model (they are per tensor, not per TensorRT \
             version), re-tag it: calibench cache import {} --trt-version {runtime} -o {}; \
             or recalibrate with this TensorRT",
            cache_path.display(),
            cache_path.display(),
            retagged_name(cache_path, runtime)
        ));
    }
    Ok(class)
}

fn retagged_name(path: &Path, runtime: TrtVersion) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "calibration".into());
    format!("{stem}.trt{}.cache", runtime.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text: &str) -> Header {
        crate::cache::CalibrationCache::parse(&format!("{text}\n"))
            .unwrap()
            .header
    }

    fn v(s: &str) -> TrtVersion {
        s.parse().unwrap()
    }

    #[test]
    fn the_class_follows_the_header() {
        let p = Path::new("m.cache");
        for (h, class) in [
            ("TRT-101600-EntropyCalibration2", CalibratorClass::Entropy2),
            ("TRT-101600-EntropyCalibration", CalibratorClass::Entropy),
            ("TRT-101600-MinMaxCalibration", CalibratorClass::MinMax),
            ("TRT-101600-LegacyCalibration", CalibratorClass::Legacy),
        ] {
            assert_eq!(
                calibrator_for(&header(h), p, v("10.16.0")),
                Ok(class),
                "{h}"
            );
        }
    }

    #[test]
    fn another_version_is_refused_with_the_retag_command() {
        let e = calibrator_for(
            &header("TRT-101401-MinMaxCalibration"),
            Path::new("caches/h100.cache"),
            v("10.16.0"),
        )
        .unwrap_err();
        assert!(e.starts_with("caches/h100.cache: "), "{e}");
        assert!(
            e.contains("TensorRT 10.14.1") && e.contains("is 10.16.0"),
            "{e}"
        );
        assert!(
            e.contains("calibench cache import caches/h100.cache --trt-version 10.16.0 -o h100.trt101600.cache"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_calibrator_is_refused() {
        let e = calibrator_for(
            &header("TRT-101600-PercentileCalibration"),
            Path::new("x.cache"),
            v("10.16.0"),
        )
        .unwrap_err();
        assert!(e.contains("\"PercentileCalibration\""), "{e}");
        assert!(e.contains("--calibrator EntropyCalibration2"), "{e}");
    }
}
