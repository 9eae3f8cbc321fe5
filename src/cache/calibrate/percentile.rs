//! Percentile calibration: the P-th percentile of |x|, read off a 2048-bin histogram (what
//! TensorRT's legacy calibrator starts from). Clips the rarest outliers.
//!
//! As onnxruntime's and NVIDIA ModelOpt's percentile calibrators compute it: the cumulative
//! distribution `cumsum(hist / total)`, the first bin where it reaches P/100
//! (`np.searchsorted`), and that bin's **lower** edge.

use super::{RangeMethod, Reduced, Statistic, TwoPass};

/// Percentile of |x| from a histogram built in a second pass.
#[derive(Debug)]
pub struct Percentile {
    percentile: f64,
    data: TwoPass,
}

impl Percentile {
    /// A collector for the `percentile`-th percentile (0 < p <= 100).
    pub fn new(percentile: f64) -> Percentile {
        Percentile {
            percentile,
            data: TwoPass::default(),
        }
    }
}

impl RangeMethod for Percentile {
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
        let amax = self.data.amax;
        let Some(h) = &self.data.histogram else {
            return amax;
        };
        let total: u64 = h.bins.iter().sum();
        if total == 0 {
            return amax;
        }
        let target = self.percentile / 100.0;
        let mut cdf = 0f64;
        for (i, &n) in h.bins.iter().enumerate() {
            cdf += n as f64 / total as f64;
            if cdf >= target {
                return (i as f32 * h.bin_width()).min(amax);
            }
        }
        // Rounding left the sum short of P/100: searchsorted then points past the last bin,
        // at the upper edge of the range.
        amax
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_clips_outliers() {
        let mut values: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0).collect();
        values.push(100.0);
        let mut p = Percentile::new(99.0);
        p.observe(0, &values);
        p.observe(1, &values);
        let a = p.amax();
        // 99% of the values lie below ~0.99; one bin of 100/2048 ≈ 0.049 is the resolution.
        assert!(a > 0.9 && a < 1.1, "{a}");
        let mut full = Percentile::new(100.0);
        full.observe(0, &values);
        full.observe(1, &values);
        // The max's own bin: its lower edge, as onnxruntime and ModelOpt return.
        let top = full.amax();
        assert!((100.0 - 100.0 / 2048.0..=100.0).contains(&top), "{top}");
    }

    #[test]
    fn the_percentile_is_the_lower_edge_of_its_bin() {
        // 10 values in bin 0 and 10 in bin 1000 of [0, 2047]: the 50th percentile is reached
        // in bin 0 (edge 0), the 60th in bin 1000, whose lower edge is 1000 · width.
        let mut values = vec![0.1f32; 10];
        values.extend([1000.5f32; 10]);
        values.push(2048.0);
        let amax = |p: f64| {
            let mut c = Percentile::new(p);
            c.observe(0, &values);
            c.observe(1, &values);
            c.amax()
        };
        assert_eq!(amax(40.0), 0.0);
        assert_eq!(amax(60.0), 1000.0);
    }
}
