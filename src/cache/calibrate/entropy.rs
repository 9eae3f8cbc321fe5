//! Entropy calibration, as TensorRT's IInt8EntropyCalibrator2 describes it: a histogram of
//! |x| in 2048 bins over [0, max|x|]; for every candidate threshold bin i in 128..=2048, the
//! reference distribution P is the first i bins with everything beyond folded into the last,
//! the candidate Q is the same i bins quantized to 128 levels and expanded back (each level's
//! count spread evenly over its non-empty bins); the threshold minimizing KL(P‖Q) wins, and
//! amax = (i + 0.5) · bin width.
//!
//! Empty bins are smoothed before the divergence (a small count moved onto them from the
//! non-empty bins, as MXNet's and onnxruntime's implementations of this search do); without
//! it, any threshold below an isolated outlier would have an infinite divergence and rare
//! outliers could never be clipped.

use super::{RangeMethod, Reduced, Statistic, TwoPass, HISTOGRAM_BINS};

/// Quantized levels of int8's positive half.
pub const LEVELS: usize = 128;

/// Entropy (KL-divergence) calibration of one tensor.
#[derive(Debug, Default)]
pub struct Entropy {
    data: TwoPass,
}

impl RangeMethod for Entropy {
    fn passes(&self) -> usize {
        2
    }

    fn observe(&mut self, pass: usize, values: &[f32]) {
        self.data.observe(pass, values);
    }

    fn statistic(&self, pass: usize) -> Option<Statistic> {
        self.data.statistic(pass)
    }

    fn observe_reduced(&mut self, pass: usize, reduced: &Reduced) {
        self.data.observe_reduced(pass, reduced);
    }

    fn amax(&self) -> f32 {
        match &self.data.histogram {
            Some(h) if self.data.amax > 0.0 => {
                let i = best_threshold_bin(&h.bins);
                ((i as f32 + 0.5) * h.bin_width()).min(self.data.amax)
            }
            _ => self.data.amax,
        }
    }
}

/// The number of bins (128..=2048) whose threshold minimizes KL(P‖Q).
pub fn best_threshold_bin(hist: &[u64]) -> usize {
    let n = hist.len();
    let mut best = (f64::INFINITY, n);
    let mut p = vec![0f64; n];
    let mut q = vec![0f64; n];
    let suffix: Vec<u64> = {
        let mut s = vec![0u64; n + 1];
        for j in (0..n).rev() {
            s[j] = s[j + 1] + hist[j];
        }
        s
    };
    for i in LEVELS..=n {
        for j in 0..i {
            p[j] = hist[j] as f64;
        }
        p[i - 1] += suffix[i] as f64;
        // Quantize bins [0, i) into LEVELS levels and expand back over the non-empty bins.
        for k in 0..LEVELS {
            let (start, end) = (k * i / LEVELS, (k + 1) * i / LEVELS);
            let (sum, nonzero) = hist[start..end]
                .iter()
                .fold((0u64, 0usize), |(s, c), &h| (s + h, c + (h > 0) as usize));
            let each = if nonzero > 0 {
                sum as f64 / nonzero as f64
            } else {
                0.0
            };
            for j in start..end {
                q[j] = if hist[j] > 0 { each } else { 0.0 };
            }
        }
        smooth(&mut p[..i]);
        smooth(&mut q[..i]);
        let kl = kl_divergence(&p[..i], &q[..i]);
        if kl < best.0 {
            best = (kl, i);
        }
    }
    best.1.min(HISTOGRAM_BINS)
}

/// Count moved onto each empty bin.
const SMOOTHING: f64 = 1e-4;

/// Gives empty bins a count of [`SMOOTHING`], taken evenly from the non-empty bins.
fn smooth(counts: &mut [f64]) {
    let zeros = counts.iter().filter(|&&c| c == 0.0).count();
    let nonzeros = counts.len() - zeros;
    if zeros == 0 || nonzeros == 0 {
        return;
    }
    let take = SMOOTHING * zeros as f64 / nonzeros as f64;
    for c in counts.iter_mut() {
        *c = if *c == 0.0 {
            SMOOTHING
        } else {
            (*c - take).max(SMOOTHING)
        };
    }
}

/// KL(P‖Q) of two unnormalized distributions; infinite where P has mass and Q has none.
fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    if sp == 0.0 || sq == 0.0 {
        return f64::INFINITY;
    }
    let mut kl = 0.0;
    for (&a, &b) in p.iter().zip(q) {
        if a > 0.0 {
            if b == 0.0 {
                return f64::INFINITY;
            }
            let (a, b) = (a / sp, b / sq);
            kl += a * (a / b).ln();
        }
    }
    kl
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calibrate(values: &[f32]) -> f32 {
        let mut e = Entropy::default();
        e.observe(0, values);
        e.observe(1, values);
        e.amax()
    }

    #[test]
    fn uniform_data_keeps_its_full_range() {
        let values: Vec<f32> = (0..200_000).map(|i| (i % 1000) as f32 / 1000.0).collect();
        let a = calibrate(&values);
        assert!(a > 0.95 && a <= 0.999, "{a}");
    }

    #[test]
    fn rare_outliers_are_clipped() {
        // A Gaussian-like bulk in [-1, 1] and a handful of outliers at 20.
        let mut values: Vec<f32> = (0..100_000)
            .map(|i| {
                let u = (i as f32 + 0.5) / 100_000.0;
                let s: f32 = (0..6)
                    .map(|k| (u * (k as f32 + 1.7) * 7919.0).fract())
                    .sum::<f32>()
                    - 3.0;
                s / 3.0
            })
            .collect();
        values.extend([20.0; 5]);
        let a = calibrate(&values);
        assert!(a < 5.0, "outliers at 20 must be clipped, got {a}");
        assert!(a > 0.5, "the bulk must be kept, got {a}");
    }

    #[test]
    fn kl_basics() {
        assert_eq!(kl_divergence(&[1.0, 1.0], &[2.0, 2.0]), 0.0);
        assert!(kl_divergence(&[1.0, 1.0], &[1.0, 0.0]).is_infinite());
        assert!(kl_divergence(&[1.0, 3.0], &[3.0, 1.0]) > 0.0);
    }

    #[test]
    fn zero_tensor_has_zero_range() {
        assert_eq!(calibrate(&[0.0; 100]), 0.0);
    }
}
