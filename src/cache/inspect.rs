//! `cache inspect`: what a cache holds, its scale statistics, and entries worth a look.

use serde::Serialize;

use super::format::{CalibrationCache, Entry};

/// Ranges above this cannot be represented in fp16 (65504): a calibration that saw such
/// values almost always saw a broken input or an overflow.
pub const LARGE_AMAX: f32 = 65504.0;

/// Why an entry is flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// Scale 0: TensorRT quantizes the tensor to all zeros.
    Zero,
    /// A negative scale.
    Negative,
    /// NaN.
    Nan,
    /// +Inf or -Inf: the range is unbounded; int8 is meaningless there.
    Infinite,
    /// A denormal float: the range is practically zero.
    Denormal,
    /// amax beyond fp16's range (65504).
    Large,
}

impl Flag {
    /// What the flag means for the user.
    pub fn meaning(self) -> &'static str {
        match self {
            Flag::Zero => "scale 0: the tensor quantizes to all zeros (constant or dead activation, or a broken calibration)",
            Flag::Negative => "negative scale: not a valid dynamic range",
            Flag::Nan => "NaN scale: calibration saw NaN activations",
            Flag::Infinite => "infinite scale: calibration saw Inf activations (e.g. log(0), division by 0)",
            Flag::Denormal => "denormal scale: the range is practically zero",
            Flag::Large => "range beyond fp16's 65504: likely an overflow or a broken calibration input",
        }
    }

    /// The flag of a scale, if any.
    pub fn of(scale: f32) -> Option<Flag> {
        if scale.is_nan() {
            Some(Flag::Nan)
        } else if scale.is_infinite() {
            Some(Flag::Infinite)
        } else if scale == 0.0 {
            Some(Flag::Zero)
        } else if scale < 0.0 {
            Some(Flag::Negative)
        } else if scale.is_subnormal() {
            Some(Flag::Denormal)
        } else if f64::from(scale) * 127.0 > f64::from(LARGE_AMAX) {
            Some(Flag::Large)
        } else {
            None
        }
    }
}

/// A flagged entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flagged {
    /// Tensor name.
    pub name: String,
    /// The scale as hex bits.
    pub bits: String,
    /// The scale.
    pub scale: f32,
    /// Why.
    pub flag: Flag,
}

/// Statistics of the finite, positive scales, as dynamic ranges (amax = scale × 127).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RangeStats {
    /// Entries counted.
    pub count: usize,
    /// Smallest amax.
    pub min_amax: f64,
    /// Median amax.
    pub median_amax: f64,
    /// Largest amax.
    pub max_amax: f64,
}

/// The result of `cache inspect`.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// Header as written.
    pub header: String,
    /// Decoded TensorRT version.
    pub tensorrt_version: String,
    /// Calibrator.
    pub calibrator: String,
    /// Number of tensors.
    pub tensors: usize,
    /// Statistics of usable scales.
    pub ranges: Option<RangeStats>,
    /// Entries worth a look.
    pub flagged: Vec<Flagged>,
    /// Format notes (CRLF, short hex values).
    pub notes: Vec<String>,
}

/// Inspects a cache.
pub fn inspect(cache: &CalibrationCache) -> Inspection {
    let flagged = cache
        .entries
        .iter()
        .filter_map(|e: &Entry| {
            Flag::of(e.scale()).map(|flag| Flagged {
                name: e.name.clone(),
                bits: format!("{:08x}", e.bits),
                scale: e.scale(),
                flag,
            })
        })
        .collect();
    let mut amax: Vec<f64> = cache
        .entries
        .iter()
        .map(Entry::scale)
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| f64::from(s) * 127.0)
        .collect();
    amax.sort_by(f64::total_cmp);
    let ranges = (!amax.is_empty()).then(|| RangeStats {
        count: amax.len(),
        min_amax: amax[0],
        median_amax: if amax.len() % 2 == 1 {
            amax[amax.len() / 2]
        } else {
            (amax[amax.len() / 2 - 1] + amax[amax.len() / 2]) / 2.0
        },
        max_amax: amax[amax.len() - 1],
    });
    Inspection {
        header: cache.header.to_string(),
        tensorrt_version: cache.header.version().to_string(),
        calibrator: cache.header.calibrator.to_string(),
        tensors: cache.entries.len(),
        ranges,
        flagged,
        notes: cache.notes.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::format::tests::fixture;

    #[test]
    fn flags() {
        assert_eq!(Flag::of(0.0), Some(Flag::Zero));
        assert_eq!(Flag::of(-1.0), Some(Flag::Negative));
        assert_eq!(Flag::of(f32::NAN), Some(Flag::Nan));
        assert_eq!(Flag::of(f32::INFINITY), Some(Flag::Infinite));
        assert_eq!(Flag::of(f32::from_bits(1)), Some(Flag::Denormal));
        assert_eq!(Flag::of(1000.0), Some(Flag::Large));
        assert_eq!(Flag::of(0.01), None);
    }

    #[test]
    fn mpnet_cache_flags_its_zero_and_inf_scales() {
        let Some(_corpus) = crate::corpus::trt_caches() else {
            return; // said why on stderr; CI requires the corpus
        };
        let c = CalibrationCache::read(&fixture(
            "isaid22__TensorRT-Optimization-MPNet__calibration.cache",
        ))
        .unwrap();
        let i = inspect(&c);
        assert_eq!(i.tensorrt_version, "10.13.3");
        assert_eq!(i.calibrator, "MinMaxCalibration");
        let zero = i.flagged.iter().filter(|f| f.flag == Flag::Zero).count();
        let inf = i
            .flagged
            .iter()
            .filter(|f| f.flag == Flag::Infinite)
            .count();
        let expected_zero = c.entries.iter().filter(|e| e.bits == 0).count();
        let expected_inf = c.entries.iter().filter(|e| e.bits == 0x7f800000).count();
        assert!(expected_zero > 0 && expected_inf > 0);
        assert_eq!((zero, inf), (expected_zero, expected_inf));
        assert!(i
            .flagged
            .iter()
            .any(|f| f.name == "/encoder/Log_output_0" && f.flag == Flag::Infinite));
        let r = i.ranges.unwrap();
        assert!(r.min_amax > 0.0 && r.min_amax <= r.median_amax && r.median_amax <= r.max_amax);
    }

    #[test]
    fn clean_cache_has_no_flags() {
        let c = CalibrationCache::parse(
            "TRT-8601-EntropyCalibration2\na: 3c010204\nb: 3d000000\nc: 3e000000\n",
        )
        .unwrap();
        let i = inspect(&c);
        assert!(i.flagged.is_empty());
        let r = i.ranges.unwrap();
        assert_eq!(r.count, 3);
        assert!((r.median_amax - 0.03125 * 127.0).abs() < 1e-4);
    }
}
