//! Percentile calibration: the P-th percentile of |x|, read off a 2048-bin histogram (what
//! TensorRT's legacy calibrator starts from). Clips the rarest outliers.

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
        let target = (self.percentile / 100.0 * total as f64).ceil() as u64;
        let mut seen = 0;
        for (i, &n) in h.bins.iter().enumerate() {
            seen += n;
            if seen >= target {
                return ((i + 1) as f32 * h.bin_width()).min(amax);
            }
        }
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
        assert_eq!(full.amax(), 100.0);
    }
}
