//! Calibration statistics reduced on the GPU (`calibrate --backend cuda`): each exposed
//! tensor's largest |x| or |x| histogram is computed where the activations are, and only those
//! few numbers come back to the host — the same numbers the host would compute from the values
//! (`cache::calibrate::Statistic::reduce`).

use super::{launch, launch_cfg, ptr, Arg, CudaEngine, Element};
use crate::backend::BackendError;
use crate::cache::calibrate::{Reduced, Statistic, HISTOGRAM_BINS};
use crate::model::Tensor;

impl<T: Element> CudaEngine<T> {
    /// Runs one inference and reduces output i to `stats[i]` on the GPU.
    pub(super) fn reduce_on_device(
        &mut self,
        inputs: &[Tensor],
        stats: &[Statistic],
    ) -> Result<Vec<Reduced>, BackendError> {
        if stats.len() != self.plan.outputs.len() {
            return Err(super::infer_err(format!(
                "{} statistics asked of {} outputs",
                stats.len(),
                self.plan.outputs.len()
            )));
        }
        self.upload_inputs(inputs)?;
        self.enqueue_layers()?;
        let stream = self.ctx.stream.clone();
        let s = stream.as_ref();
        let mut reduced = Vec::with_capacity(stats.len());
        for (io, stat) in self.plan.outputs.iter().zip(stats) {
            if self.plan.holds_codes(io.buffer) {
                return Err(super::infer_err("an output holds int8 codes"));
            }
            let n: usize = io.spec.shape.iter().product();
            let x = Arg::P(ptr(&self.activations[io.buffer], s));
            let len = Arg::I(n as i32);
            reduced.push(match *stat {
                Statistic::MaxAbs => {
                    let out = stream.alloc_zeros::<u32>(1).map_err(super::infer_err)?;
                    let args = [x, len, Arg::P(ptr(&out, s))];
                    launch(s, &self.kernels.max_abs, launch_cfg(n), &args)?;
                    let bits = stream.clone_dtoh(&out).map_err(super::infer_err)?;
                    Reduced::MaxAbs(f32::from_bits(bits[0]))
                }
                Statistic::AbsHistogram { range } if range <= 0.0 => {
                    let mut bins = vec![0u64; HISTOGRAM_BINS];
                    bins[0] = n as u64;
                    Reduced::AbsHistogram(bins)
                }
                Statistic::AbsHistogram { range } => {
                    let bins = stream
                        .alloc_zeros::<u32>(HISTOGRAM_BINS)
                        .map_err(super::infer_err)?;
                    // The host's bin of |x| is ⌊|x| · (bins / range)⌋ in f64; the same scale
                    // goes to the kernel.
                    let scale = HISTOGRAM_BINS as f64 / f64::from(range);
                    let args = [x, len, Arg::D(scale), Arg::P(ptr(&bins, s))];
                    launch(s, &self.kernels.abs_histogram, launch_cfg(n), &args)?;
                    let counts = stream.clone_dtoh(&bins).map_err(super::infer_err)?;
                    Reduced::AbsHistogram(counts.into_iter().map(u64::from).collect())
                }
            });
        }
        Ok(reduced)
    }
}
