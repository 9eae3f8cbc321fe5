//! Entropy calibration: TensorRT's IInt8EntropyCalibrator2 as NVIDIA's own open
//! implementation computes it (TensorRT itself is closed; NVIDIA ModelOpt's
//! `HistogramCalibrator.compute_amax("entropy")`, ported from pytorch-quantization, is the
//! reference this module follows step by step on the same histogram).
//!
//! A histogram of |x| in 2048 bins over [0, max|x|]; then, for every candidate threshold of
//! i = 128..=2048 bins:
//! - **The zero bin takes the next bin's count** before anything else (`bins[0] = bins[1]`).
//!   ReLU, HardSigmoid and padding make a quarter to a half of many activations exactly 0;
//!   left in, that spike dominates both distributions and the search clips far too tight.
//! - **P** (reference) is bins [0, i) with every count beyond added to bin i − 1.
//! - **Q** (candidate) quantizes bins [0, i) to 128 levels: bin j belongs to level
//!   ⌊128·j / i⌋ (`np.digitize(range(i), np.linspace(0, i, 129)) − 1`), each level's count is
//!   spread evenly over its non-empty bins, and empty bins stay empty. Q does not get the tail.
//! - **KL(P‖Q)** of the two normalized distributions, unsmoothed (scipy's `entropy`): a bin
//!   where P has mass and Q none makes that threshold infinitely bad.
//! - **Ties keep the last (largest) threshold**; if every threshold is infinite, the full
//!   range is kept. One deliberate difference from ModelOpt: where bins [0, i) are all empty
//!   once the zero bin took its neighbour's count (a discrete input such as the digits CNN's
//!   pixels in steps of 1/16: bins 1..127 empty), ModelOpt normalizes an all-zero Q, its KL is
//!   NaN, and numpy's argmin returns that NaN's threshold — amax 1/16 for inputs up to 1,
//!   clipping almost every value. calibench counts such a threshold as infinitely bad.
//! - **amax is the bin edge i · width**, not the bin's centre.

use super::{RangeMethod, Reduced, Statistic, TwoPass};

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
                (i as f32 * h.bin_width()).min(self.data.amax)
            }
            _ => self.data.amax,
        }
    }
}

/// The number of bins (128..=2048) whose threshold minimizes KL(P‖Q), the last of equals.
///
/// Each threshold costs O(128), not O(bins): within a level Q is constant, so
/// KL = Σ p ln p − Σ_levels (Σ_level p) · ln q_level, and both sums come from prefix sums of
/// b and b·ln b. (A direct loop over the bins, as NVIDIA's code does, is the test's reference:
/// 235 tensors of an OCR classifier took 60 s that way.)
pub fn best_threshold_bin(hist: &[u64]) -> usize {
    let n = hist.len();
    if n <= LEVELS {
        return n;
    }
    let mut bins: Vec<f64> = hist.iter().map(|&h| h as f64).collect();
    bins[0] = bins[1];
    // Prefix sums: counts, counts·ln(counts), non-empty bins.
    let mut sum_b = vec![0f64; n + 1];
    let mut sum_blnb = vec![0f64; n + 1];
    let mut nonzero = vec![0usize; n + 1];
    for (j, &b) in bins.iter().enumerate() {
        sum_b[j + 1] = sum_b[j] + b;
        sum_blnb[j + 1] = sum_blnb[j] + if b > 0.0 { b * b.ln() } else { 0.0 };
        nonzero[j + 1] = nonzero[j] + (b > 0.0) as usize;
    }
    let total = sum_b[n];
    if total == 0.0 {
        return n;
    }
    let mut best = (f64::INFINITY, n);
    for i in LEVELS..=n {
        let tail = total - sum_b[i];
        let last = bins[i - 1];
        if last == 0.0 && tail > 0.0 {
            continue; // P has mass where Q has none: infinitely bad
        }
        let q_total = total - tail;
        // Σ p ln p: every non-empty bin before the last, then the last with the tail.
        let p_last = (last + tail) / total;
        let mut kl = (sum_blnb[i - 1] - sum_b[i - 1] * total.ln()) / total;
        if p_last > 0.0 {
            kl += p_last * p_last.ln();
        }
        // − Σ_levels (Σ p over the level) · ln q; level k holds bins ⌈k·i/128⌉ .. ⌈(k+1)·i/128⌉.
        for k in 0..LEVELS {
            let (start, end) = ((k * i).div_ceil(LEVELS), ((k + 1) * i).div_ceil(LEVELS));
            let members = nonzero[end] - nonzero[start];
            if members == 0 {
                continue;
            }
            let level = sum_b[end] - sum_b[start];
            let mass = if end == i { level + tail } else { level };
            let q = level / members as f64 / q_total;
            kl -= mass / total * q.ln();
        }
        // Ties (to rounding) keep the later threshold, as the reversed argmin does.
        if kl <= best.0 + 1e-12 * best.0.abs() {
            best = (kl.min(best.0), i);
        }
    }
    best.1
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
    fn a_long_tail_is_clipped_and_the_bulk_kept() {
        // |x| exponentially distributed (a Laplace activation): the rarest values are clipped.
        let values: Vec<f32> = (0..200_000)
            .map(|i| -((i as f32 + 0.5) / 200_000.0).ln())
            .collect();
        let max = values.iter().cloned().fold(0.0, f32::max);
        let a = calibrate(&values);
        assert!(a < 0.9 * max, "the tail must be clipped: {a} of {max}");
        assert!(a > 4.0, "the bulk must be kept: {a}");
    }

    /// The search of NVIDIA's implementation written out literally (numpy's linspace and
    /// digitize, scipy's entropy, the reversed argmin), to check the fast search against.
    fn reference_search(hist: &[u64]) -> usize {
        let mut bins: Vec<f64> = hist.iter().map(|&h| h as f64).collect();
        bins[0] = bins[1];
        let mut divergences = Vec::new();
        for i in LEVELS..=bins.len() {
            let space: Vec<f64> = (0..=LEVELS)
                .map(|k| k as f64 * (i as f64 / 128.0))
                .collect();
            let level: Vec<Option<usize>> = (0..i)
                .map(|j| {
                    (bins[j] != 0.0).then(|| space.iter().filter(|&&e| e <= j as f64).count() - 1)
                })
                .collect();
            let mut counts = vec![0f64; LEVELS];
            let mut members = vec![0f64; LEVELS];
            for (j, l) in level.iter().enumerate() {
                if let Some(l) = l {
                    counts[*l] += bins[j];
                    members[*l] += 1.0;
                }
            }
            let q: Vec<f64> = level
                .iter()
                .map(|l| l.map_or(0.0, |l| counts[l] / members[l]))
                .collect();
            let mut p: Vec<f64> = bins[..i].to_vec();
            p[i - 1] += bins[i..].iter().sum::<f64>();
            let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
            let mut e = 0.0;
            for (a, b) in p.iter().zip(&q) {
                let (a, b) = (a / sp, b / sq);
                if a > 0.0 {
                    e += if b > 0.0 {
                        a * (a / b).ln()
                    } else {
                        f64::INFINITY
                    };
                }
            }
            divergences.push(e);
        }
        let min = divergences.iter().cloned().fold(f64::INFINITY, f64::min);
        LEVELS + divergences.iter().rposition(|&d| d == min).unwrap()
    }

    #[test]
    fn the_search_is_nvidias() {
        // A ReLU-like histogram: a spike of exact zeros, a decaying bulk, rare outliers.
        let mut relu: Vec<u64> = (0..2048)
            .map(|j| (50_000.0 * (-(j as f64) / 90.0).exp()) as u64)
            .collect();
        relu[0] = 400_000;
        relu[1500] = 3;
        relu[2047] = 1;
        // Sparse, gappy counts (small calibration sets) and a flat one.
        let gappy: Vec<u64> = (0..2048u64)
            .map(|j| if j % 7 == 0 { 1 + j % 5 } else { 0 })
            .collect();
        let flat = vec![10u64; 2048];
        for (name, h) in [("relu", &relu), ("gappy", &gappy), ("flat", &flat)] {
            assert_eq!(best_threshold_bin(h), reference_search(h), "{name}");
        }
        assert_eq!(best_threshold_bin(&flat), 2048);
    }

    #[test]
    fn a_spike_of_zeros_no_longer_clips_the_bulk() {
        // 45 % exact zeros (a ReLU output) over a bulk up to bin ~600: the zero bin takes bin
        // 1's count, so the threshold follows the bulk instead of the spike.
        let mut relu: Vec<u64> = (0..2048)
            .map(|j| if j < 600 { 1000 - j as u64 } else { 0 })
            .collect();
        relu[0] = 500_000;
        relu[2047] = 1;
        let i = best_threshold_bin(&relu);
        assert!(i >= 500, "clipped to {i} of 600 bins of bulk");
    }

    #[test]
    fn zero_tensor_has_zero_range() {
        assert_eq!(calibrate(&[0.0; 100]), 0.0);
    }
}
