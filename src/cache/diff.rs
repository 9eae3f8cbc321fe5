//! `cache diff`: two caches of one model side by side (calibrated on two GPUs, or before and
//! after a fine-tune): per-tensor scale ratios, largest differences first.

use serde::Serialize;

use super::format::CalibrationCache;

/// One tensor present in both caches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorDiff {
    /// Tensor name.
    pub name: String,
    /// Scale in A.
    pub scale_a: f32,
    /// Scale in B.
    pub scale_b: f32,
    /// scale_b / scale_a.
    pub ratio: f64,
    /// log2(ratio): +1 means B's range is twice A's.
    pub log2_ratio: f64,
}

/// Summary of a diff.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffSummary {
    /// Tensors in both caches.
    pub common: usize,
    /// Tensors whose scales are bit-identical.
    pub identical: usize,
    /// Median |log2 ratio| over tensors with comparable (finite, positive) scales.
    pub median_abs_log2: f64,
    /// Largest |log2 ratio| (infinite when a scale is 0 or Inf in one cache only).
    pub max_abs_log2: f64,
}

/// The result of `cache diff`.
#[derive(Debug, Clone, Serialize)]
pub struct CacheDiff {
    /// Header of A.
    pub header_a: String,
    /// Header of B.
    pub header_b: String,
    /// Summary.
    pub summary: DiffSummary,
    /// Common tensors, largest |log2 ratio| first.
    pub tensors: Vec<TensorDiff>,
    /// Tensors only in A.
    pub only_in_a: Vec<String>,
    /// Tensors only in B.
    pub only_in_b: Vec<String>,
}

/// Compares two caches.
pub fn diff(a: &CalibrationCache, b: &CalibrationCache) -> CacheDiff {
    let in_b: std::collections::HashMap<&str, &super::Entry> =
        b.entries.iter().map(|e| (e.name.as_str(), e)).collect();
    let in_a: std::collections::HashSet<&str> = a.entries.iter().map(|e| e.name.as_str()).collect();
    let mut tensors = Vec::new();
    let mut identical = 0;
    for ea in &a.entries {
        let Some(eb) = in_b.get(ea.name.as_str()) else {
            continue;
        };
        if ea.bits == eb.bits {
            identical += 1;
        }
        let (sa, sb) = (ea.scale() as f64, eb.scale() as f64);
        let ratio = if ea.bits == eb.bits { 1.0 } else { sb / sa };
        let log2_ratio = if ratio.is_nan() {
            f64::INFINITY
        } else {
            ratio.log2()
        };
        tensors.push(TensorDiff {
            name: ea.name.clone(),
            scale_a: ea.scale(),
            scale_b: eb.scale(),
            ratio,
            log2_ratio,
        });
    }
    tensors.sort_by(|x, y| {
        y.log2_ratio
            .abs()
            .total_cmp(&x.log2_ratio.abs())
            .then_with(|| x.name.cmp(&y.name))
    });
    let mut finite: Vec<f64> = tensors
        .iter()
        .map(|t| t.log2_ratio.abs())
        .filter(|v| v.is_finite())
        .collect();
    finite.sort_by(f64::total_cmp);
    let median_abs_log2 = crate::measure::latency::percentile(&finite, 50.0);
    let max_abs_log2 = tensors.first().map_or(0.0, |t| t.log2_ratio.abs());
    CacheDiff {
        header_a: a.header.to_string(),
        header_b: b.header.to_string(),
        summary: DiffSummary {
            common: tensors.len(),
            identical,
            median_abs_log2: if median_abs_log2.is_nan() {
                0.0
            } else {
                median_abs_log2
            },
            max_abs_log2,
        },
        tensors,
        only_in_a: a
            .entries
            .iter()
            .filter(|e| !in_b.contains_key(e.name.as_str()))
            .map(|e| e.name.clone())
            .collect(),
        only_in_b: b
            .entries
            .iter()
            .filter(|e| !in_a.contains(e.name.as_str()))
            .map(|e| e.name.clone())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(lines: &[(&str, f32)]) -> CalibrationCache {
        let mut t = String::from("TRT-8601-EntropyCalibration2\n");
        for (n, s) in lines {
            t.push_str(&format!("{n}: {:08x}\n", s.to_bits()));
        }
        CalibrationCache::parse(&t).unwrap()
    }

    #[test]
    fn ratios_sorted_largest_first() {
        let a = cache(&[("x", 1.0), ("y", 1.0), ("z", 0.5), ("only_a", 1.0)]);
        let b = cache(&[("x", 1.0), ("y", 4.0), ("z", 0.25), ("only_b", 2.0)]);
        let d = diff(&a, &b);
        assert_eq!(
            d.tensors
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["y", "z", "x"]
        );
        assert_eq!(d.tensors[0].log2_ratio, 2.0);
        assert_eq!(d.tensors[1].log2_ratio, -1.0);
        assert_eq!(d.summary.common, 3);
        assert_eq!(d.summary.identical, 1);
        assert_eq!(d.summary.median_abs_log2, 1.0);
        assert_eq!(d.summary.max_abs_log2, 2.0);
        assert_eq!(d.only_in_a, ["only_a"]);
        assert_eq!(d.only_in_b, ["only_b"]);
    }

    #[test]
    fn zero_against_nonzero_is_infinitely_different() {
        let d = diff(
            &cache(&[("x", 0.0), ("y", 0.0)]),
            &cache(&[("x", 1.0), ("y", 0.0)]),
        );
        assert!(d.summary.max_abs_log2.is_infinite());
        assert_eq!(
            d.tensors[1].log2_ratio, 0.0,
            "identical zeros are identical"
        );
    }

    #[test]
    fn a_cache_against_itself() {
        let Some(_corpus) = crate::corpus::trt_caches() else {
            return; // said why on stderr; CI requires the corpus
        };
        let c = crate::cache::CalibrationCache::read(&crate::cache::format::tests::fixture(
            "dnth__DEIMKit__calibration.cache",
        ))
        .unwrap();
        let d = diff(&c, &c);
        assert_eq!(d.summary.identical, c.entries.len());
        assert_eq!(d.summary.max_abs_log2, 0.0);
    }
}
