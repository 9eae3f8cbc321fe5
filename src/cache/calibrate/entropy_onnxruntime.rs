//! onnxruntime's variant of entropy calibration (`onnxruntime.quantization`, CalibrationMethod.
//! Entropy, symmetric), for caches that must match ones made with onnxruntime.
//!
//! It differs from TensorRT's published algorithm ([`super::Entropy`]) in three ways that move
//! thresholds by several percent on small models: the histogram is signed, over
//! [-max|x|, max|x|]; the candidate window is centred on zero and widened one bin per side; and
//! the expanded quantized distribution is truncated to integers and spread over empty bins as
//! well. onnxruntime histograms all calibration outputs at once, which two passes reproduce
//! batch by batch (the range first, then the histogram). Binning follows numpy's
//! (`np.histogram` on float32 data).

use super::RangeMethod;

/// onnxruntime's settings of its entropy calibrator (`create_calibrator(…, extra_options=
/// {"num_bins": …, "num_quantized_bins": …, "symmetric": …})`).
///
/// onnxruntime's own defaults are `num_bins = 128, num_quantized_bins = 128, symmetric = False`
/// (`EntropyCalibrater.__init__`); calibench's default is 2048 bins (TensorRT's resolution),
/// which is what fixtures/make_digits.py passes. `symmetric` changes the zero points
/// onnxruntime writes, not the threshold: its entropy histogram is over [-max|x|, max|x|] and
/// the window is centred on zero either way, so calibench's amax is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrtEntropySettings {
    /// Bins of the signed histogram (`num_bins`).
    pub bins: usize,
    /// Quantized levels (`num_quantized_bins`).
    pub quantized_bins: usize,
    /// `symmetric` (recorded; no effect on amax, see above).
    pub symmetric: bool,
}

impl Default for OrtEntropySettings {
    fn default() -> Self {
        OrtEntropySettings {
            bins: 2048,
            quantized_bins: 128,
            symmetric: true,
        }
    }
}

impl OrtEntropySettings {
    /// onnxruntime.quantization's defaults.
    pub const ONNXRUNTIME_DEFAULTS: OrtEntropySettings = OrtEntropySettings {
        bins: 128,
        quantized_bins: 128,
        symmetric: false,
    };

    /// Why these settings cannot run, if they cannot.
    pub fn problem(&self) -> Option<String> {
        (self.quantized_bins < 2 || self.bins < self.quantized_bins).then(|| {
            format!(
                "num_bins = {} and num_quantized_bins = {}: num_bins must be at least num_quantized_bins (>= 2)",
                self.bins, self.quantized_bins
            )
        })
    }
}

/// The range of a tensor (first pass), then its signed histogram (second pass).
#[derive(Debug)]
pub struct EntropyOnnxruntime {
    hist: Vec<u64>,
    quantized_bins: usize,
    min: f32,
    max: f32,
}

impl Default for EntropyOnnxruntime {
    fn default() -> Self {
        EntropyOnnxruntime::new(OrtEntropySettings::default())
    }
}

impl EntropyOnnxruntime {
    /// A collector with onnxruntime's settings.
    pub fn new(settings: OrtEntropySettings) -> EntropyOnnxruntime {
        EntropyOnnxruntime {
            hist: vec![0; settings.bins],
            quantized_bins: settings.quantized_bins,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        }
    }
}

/// numpy's `linspace(-t, t, n + 1)` in float32 (computed in float64, then rounded).
fn edges(threshold: f32, n: usize) -> Vec<f32> {
    let (lo, hi) = (-f64::from(threshold), f64::from(threshold));
    let step = (hi - lo) / n as f64;
    let mut e: Vec<f32> = (0..=n).map(|k| (lo + k as f64 * step) as f32).collect();
    e[n] = hi as f32;
    e
}

/// numpy's `histogram(values, n, range=(-t, t))` for float32 values.
fn histogram(values: &[f32], n: usize, threshold: f32) -> Vec<u64> {
    let mut hist = vec![0u64; n];
    let (lo, hi) = (-threshold, threshold);
    if hi <= lo {
        // numpy widens an empty range to (lo - 0.5, hi + 0.5): every value lands mid-range.
        hist[n / 2] += values.iter().filter(|v| v.abs() <= 0.5).count() as u64;
        return hist;
    }
    let e = edges(threshold, n);
    let denom = hi - lo;
    for &x in values {
        if !(x >= lo && x <= hi) {
            continue;
        }
        let mut i = (((x - lo) / denom) * n as f32) as usize;
        if i >= n {
            i = n - 1;
        }
        if x < e[i] && i > 0 {
            i -= 1;
        } else if i + 1 < n && x >= e[i + 1] {
            i += 1;
        }
        hist[i] += 1;
    }
    hist
}

/// onnxruntime's `smooth_distribution` (eps 1e-4): zeros get eps, the rest give it back.
fn smooth(p: &[f64]) -> Option<Vec<f64>> {
    let zeros = p.iter().filter(|&&v| v == 0.0).count();
    let nonzeros = p.len() - zeros;
    if nonzeros == 0 {
        return None;
    }
    let eps = 1e-4f64;
    let eps1 = eps * zeros as f64 / nonzeros as f64;
    Some(
        p.iter()
            .map(|&v| if v == 0.0 { eps } else { v - eps1 })
            .collect(),
    )
}

/// scipy's `entropy(p, q)`: KL divergence of the normalized distributions.
fn kl(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    p.iter()
        .zip(q)
        .map(|(&a, &b)| {
            let (a, b) = (a / sp, b / sq);
            if a > 0.0 {
                a * (a / b).ln()
            } else {
                0.0
            }
        })
        .sum()
}

impl EntropyOnnxruntime {
    /// Half-width of the histogram: the largest |x| of the data.
    fn threshold(&self) -> f32 {
        if self.min > self.max {
            0.0
        } else {
            self.min.abs().max(self.max.abs())
        }
    }

    /// The KL-optimal window of the histogram, as (lower edge, upper edge).
    fn threshold_window(&self) -> (f32, f32) {
        let hist = &self.hist;
        let n = hist.len();
        let e = edges(self.threshold(), n);
        let zero = n / 2;
        let levels = self.quantized_bins;
        let half_q = levels / 2;
        let mut best = (f64::INFINITY, (e[0], e[n]));
        for i in half_q..=zero {
            let (start, end) = (zero - i, (zero + i + 1).min(n));
            let sliced = &hist[start..end];
            let mut p: Vec<f64> = sliced.iter().map(|&v| v as f64).collect();
            let last = p.len() - 1;
            p[0] += hist[..start].iter().sum::<u64>() as f64;
            p[last] += hist[end..].iter().sum::<u64>() as f64;
            let merged = sliced.len() / levels;
            let mut quantized: Vec<u64> = (0..levels)
                .map(|k| sliced[k * merged..(k + 1) * merged].iter().sum())
                .collect();
            quantized[levels - 1] += sliced[levels * merged..].iter().sum::<u64>();
            let mut q = vec![0f64; p.len()];
            for (k, &count) in quantized.iter().enumerate() {
                let range = k * merged..(k + 1) * merged;
                let norm = p[range.clone()].iter().filter(|&&v| v != 0.0).count();
                if norm != 0 {
                    // Integer division: onnxruntime stores the expanded bins in an int64 array.
                    let value = (count / norm as u64) as f64;
                    q[range].iter_mut().for_each(|v| *v = value);
                }
            }
            let div = match (smooth(&p), smooth(&q)) {
                (Some(p), Some(q)) => kl(&p, &q),
                _ => f64::INFINITY,
            };
            if div < best.0 {
                best = (div, (e[start], e[end]));
            }
        }
        best.1
    }
}

impl RangeMethod for EntropyOnnxruntime {
    fn passes(&self) -> usize {
        2
    }

    fn observe(&mut self, pass: usize, values: &[f32]) {
        if pass == 0 {
            for &v in values.iter().filter(|v| !v.is_nan()) {
                (self.min, self.max) = (self.min.min(v), self.max.max(v));
            }
        } else {
            let add = histogram(values, self.hist.len(), self.threshold());
            self.hist.iter_mut().zip(add).for_each(|(h, a)| *h += a);
        }
    }

    fn amax(&self) -> f32 {
        if self.min > self.max {
            return 0.0;
        }
        let (lo, hi) = self.threshold_window();
        let (lo, hi) = (lo.max(self.min), hi.min(self.max));
        lo.abs().max(hi.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_follows_numpy_binning() {
        // np.histogram([-1, -0.5, 0, 0.25, 1, 2], 4, range=(-1, 1)) -> [1, 1, 2, 1]; 2 is dropped.
        assert_eq!(
            histogram(&[-1.0, -0.5, 0.0, 0.25, 1.0, 2.0], 4, 1.0),
            [1, 1, 2, 1]
        );
    }

    #[test]
    fn batches_add_up_to_one_histogram_of_all_the_data() {
        let data: Vec<f32> = (0..1000)
            .map(|i| ((i * 37 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let run = |chunk: usize| {
            let mut e = EntropyOnnxruntime::default();
            for pass in 0..2 {
                data.chunks(chunk).for_each(|c| e.observe(pass, c));
            }
            (e.hist.clone(), e.amax())
        };
        assert_eq!(run(1000), run(7), "batch size must not change the result");
    }

    #[test]
    fn uniform_data_keeps_nearly_its_whole_range() {
        let values: Vec<f32> = (0..20_000)
            .map(|i| i as f32 / 20_000.0 * 2.0 - 1.0)
            .collect();
        let mut e = EntropyOnnxruntime::default();
        e.observe(0, &values);
        e.observe(1, &values);
        let amax = e.amax();
        assert!(amax > 0.9 && amax <= 1.0, "{amax}");
    }
}
