//! MinMax calibration: the largest |x| seen over all calibration data (TensorRT's
//! IInt8MinMaxCalibrator). Keeps outliers, so ranges are wide.

use super::{max_abs, RangeMethod, Reduced, Statistic};

/// Running max of |x|.
#[derive(Debug, Default)]
pub struct MinMax {
    amax: f32,
}

impl RangeMethod for MinMax {
    fn passes(&self) -> usize {
        1
    }

    fn observe(&mut self, _pass: usize, values: &[f32]) {
        self.amax = self.amax.max(max_abs(values));
    }

    fn amax(&self) -> f32 {
        self.amax
    }

    fn statistic(&self, _pass: usize) -> Option<Statistic> {
        Some(Statistic::MaxAbs)
    }

    fn observe_reduced(&mut self, _pass: usize, reduced: &Reduced) {
        if let Reduced::MaxAbs(m) = reduced {
            self.amax = self.amax.max(*m);
        }
    }
}
