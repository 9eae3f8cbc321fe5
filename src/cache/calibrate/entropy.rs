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
//!   range is kept.
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
pub fn best_threshold_bin(hist: &[u64]) -> usize {
    let n = hist.len();
    if n <= LEVELS {
        return n;
    }
    let mut bins: Vec<f64> = hist.iter().map(|&h| h as f64).collect();
    bins[0] = bins[1];
    let mut tail = vec![0f64; n + 1];
    for j in (0..n).rev() {
        tail[j] = tail[j + 1] + bins[j];
    }
    let total = tail[0];
    if total == 0.0 {
        return n;
    }
    let mut best = (f64::INFINITY, n);
    let mut level_sum = [0f64; LEVELS];
    let mut level_bins = [0usize; LEVELS];
    for i in LEVELS..=n {
        level_sum.fill(0.0);
        level_bins.fill(0);
        for (j, &b) in bins[..i].iter().enumerate() {
            if b > 0.0 {
                let k = j * LEVELS / i;
                level_sum[k] += b;
                level_bins[k] += 1;
            }
        }
        // Q's total is P's minus the tail beyond i.
        let q_total = total - tail[i];
        let mut kl = 0.0;
        for (j, &b) in bins[..i].iter().enumerate() {
            let p = if j == i - 1 { b + tail[i] } else { b };
            if p == 0.0 {
                continue;
            }
            if b == 0.0 {
                kl = f64::INFINITY;
                break;
            }
            let k = j * LEVELS / i;
            let q = level_sum[k] / level_bins[k] as f64;
            let (p, q) = (p / total, q / q_total);
            kl += p * (p / q).ln();
        }
        if kl <= best.0 {
            best = (kl, i);
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
