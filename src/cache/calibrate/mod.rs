//! Calibration: run a model at fp32 on calibration data, collect statistics of every tensor
//! TensorRT would quantize, and compute a dynamic range (amax) per tensor. One method per
//! file behind [`RangeMethod`]; [`calibrate`] drives them over the data.

mod engines;
mod entropy;
mod entropy_onnxruntime;
mod minmax;
mod percentile;

pub use engines::{EngineActivations, EngineBuilder};

use std::collections::BTreeMap;

pub use entropy::Entropy;
pub use entropy_onnxruntime::{EntropyOnnxruntime, OrtEntropySettings};
pub use minmax::MinMax;
pub use percentile::Percentile;

use super::format::{CalibrationCache, Calibrator, Entry, Header, TrtVersion};

/// Number of histogram bins over [0, amax], as TensorRT's entropy calibration uses.
pub const HISTOGRAM_BINS: usize = 2048;

/// Collects statistics of one tensor and turns them into a dynamic range.
pub trait RangeMethod: Send {
    /// Passes over the data it needs: 1 (running max) or 2 (max, then a histogram).
    fn passes(&self) -> usize;
    /// Observes the tensor's values from one batch during `pass` (0-based).
    fn observe(&mut self, pass: usize, values: &[f32]);
    /// The dynamic range: the cache stores amax / 127.
    fn amax(&self) -> f32;
    /// The one statistic `pass` needs of each batch, when that is all it needs, so a source
    /// can reduce the tensor where its values are (on the GPU); `None`: the values themselves.
    fn statistic(&self, _pass: usize) -> Option<Statistic> {
        None
    }
    /// Observes a batch's statistic, as [`RangeMethod::statistic`] asked for it.
    fn observe_reduced(&mut self, _pass: usize, _reduced: &Reduced) {}
}

/// A statistic of one tensor over one batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Statistic {
    /// The largest |x| of the finite values.
    MaxAbs,
    /// Counts of |x| in [`HISTOGRAM_BINS`] bins over [0, range]: bin ⌊|x| · bins / range⌋ in
    /// f64, values at or beyond the range in the last bin, non-finite values dropped (all
    /// values in bin 0 when range is 0).
    AbsHistogram {
        /// Upper end of the histogram.
        range: f32,
    },
}

/// A statistic's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Reduced {
    /// [`Statistic::MaxAbs`].
    MaxAbs(f32),
    /// [`Statistic::AbsHistogram`]: the bin counts.
    AbsHistogram(Vec<u64>),
}

impl Statistic {
    /// The statistic of `values`, on the host.
    pub fn reduce(self, values: &[f32]) -> Reduced {
        match self {
            Statistic::MaxAbs => Reduced::MaxAbs(max_abs(values)),
            Statistic::AbsHistogram { range } => {
                let mut h = AbsHistogram::new(range);
                h.add(values);
                Reduced::AbsHistogram(h.bins)
            }
        }
    }
}

/// A calibration method as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// KL-divergence threshold search over a 2048-bin histogram of |x| (128 levels).
    Entropy,
    /// onnxruntime's variant of the entropy search (signed, growing histogram), to reproduce
    /// caches made with `onnxruntime.quantization`.
    EntropyOnnxruntime(OrtEntropySettings),
    /// Largest |x| seen.
    MinMax,
    /// The given percentile of |x| (e.g. 99.99).
    Percentile(f64),
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "entropy" => Ok(Method::Entropy),
            "entropy-onnxruntime" => Ok(Method::EntropyOnnxruntime(Default::default())),
            "minmax" => Ok(Method::MinMax),
            "percentile" => Ok(Method::Percentile(99.99)),
            p => p
                .strip_prefix("percentile=")
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| *v > 0.0 && *v <= 100.0)
                .map(Method::Percentile)
                .ok_or_else(|| format!("method {p:?} is not entropy, entropy-onnxruntime, minmax, percentile or percentile=P (0 < P <= 100)")),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::Entropy => f.write_str("entropy"),
            Method::EntropyOnnxruntime(s) if *s == OrtEntropySettings::default() => {
                f.write_str("entropy-onnxruntime")
            }
            Method::EntropyOnnxruntime(s) => write!(
                f,
                "entropy-onnxruntime(num_bins={}, num_quantized_bins={}, symmetric={})",
                s.bins, s.quantized_bins, s.symmetric
            ),
            Method::MinMax => f.write_str("minmax"),
            Method::Percentile(p) => write!(f, "percentile={p}"),
        }
    }
}

impl Method {
    /// A fresh collector for one tensor.
    pub fn collector(self) -> Box<dyn RangeMethod> {
        match self {
            Method::Entropy => Box::new(Entropy::default()),
            Method::EntropyOnnxruntime(s) => Box::new(EntropyOnnxruntime::new(s)),
            Method::MinMax => Box::new(MinMax::default()),
            Method::Percentile(p) => Box::new(Percentile::new(p)),
        }
    }

    /// The calibrator the cache header names: TensorRT's calibrator of the same algorithm
    /// (percentile is what IInt8LegacyCalibrator does).
    pub fn header_calibrator(self) -> Calibrator {
        match self {
            Method::Entropy | Method::EntropyOnnxruntime(_) => Calibrator::EntropyCalibration2,
            Method::MinMax => Calibrator::MinMaxCalibration,
            Method::Percentile(_) => Calibrator::LegacyCalibration,
        }
    }
}

/// Source of activations: runs one calibration batch and returns the value of every
/// requested tensor, in the order of `tensors`.
pub trait ActivationSource {
    /// Names of the tensors it returns.
    fn tensors(&self) -> &[String];
    /// Number of batches.
    fn batches(&self) -> usize;
    /// The tensors' values for batch `index`.
    fn run(&mut self, index: usize) -> Result<Vec<Vec<f32>>, String>;
    /// The statistic `stats[i]` of tensor i for batch `index`, computed where the values are
    /// (`None`: this source only returns values).
    fn run_reduced(
        &mut self,
        _index: usize,
        _stats: &[Statistic],
    ) -> Option<Result<Vec<Reduced>, String>> {
        None
    }
}

/// Runs the passes a method needs over every batch and returns amax per tensor. A method of
/// two passes runs the model once where the first pass's activations fit in
/// [`retention_budget`]: the second pass reads them back instead of running every batch again.
pub fn collect_ranges(
    source: &mut dyn ActivationSource,
    method: Method,
) -> Result<BTreeMap<String, f32>, String> {
    collect_ranges_within(source, method, retention_budget())
}

/// [`collect_ranges`], keeping at most `budget` bytes of activations between passes.
pub fn collect_ranges_within(
    source: &mut dyn ActivationSource,
    method: Method,
    budget: usize,
) -> Result<BTreeMap<String, f32>, String> {
    let names = source.tensors().to_vec();
    let mut collectors: Vec<Box<dyn RangeMethod>> =
        names.iter().map(|_| method.collector()).collect();
    let passes = collectors.first().map_or(1, |c| c.passes());
    // The first pass's values, batch by batch, while they fit in the budget.
    let mut kept: Option<Vec<Vec<Vec<f32>>>> = (passes > 1).then(Vec::new);
    let mut kept_bytes = 0usize;
    for pass in 0..passes {
        if pass > 0 {
            if let Some(batches) = kept.take() {
                for values in &batches {
                    for (c, v) in collectors.iter_mut().zip(values) {
                        c.observe(pass, v);
                    }
                }
                continue;
            }
        }
        // Statistics instead of values where every collector can take them and the source
        // can reduce them (the GPU's activations then never leave the GPU).
        let stats: Option<Vec<Statistic>> = collectors.iter().map(|c| c.statistic(pass)).collect();
        for b in 0..source.batches() {
            if let Some(reduced) = stats.as_ref().and_then(|s| source.run_reduced(b, s)) {
                for (c, r) in collectors.iter_mut().zip(&reduced?) {
                    c.observe_reduced(pass, r);
                }
                kept = None;
                continue;
            }
            let values = source.run(b)?;
            for (c, v) in collectors.iter_mut().zip(&values) {
                c.observe(pass, v);
            }
            if let Some(batches) = kept.as_mut() {
                let bytes: usize = values
                    .iter()
                    .map(|v| std::mem::size_of_val(v.as_slice()))
                    .sum();
                if kept_bytes + bytes <= budget {
                    kept_bytes += bytes;
                    batches.push(values);
                } else {
                    kept = None;
                }
            }
        }
    }
    Ok(names
        .into_iter()
        .zip(collectors.iter().map(|c| c.amax()))
        .collect())
}

/// Bytes of activations calibration keeps between passes: `CALIBENCH_CALIBRATION_MEMORY_MB`
/// when set, else half the memory available now (`MemAvailable`), at most 8 GiB; 0 (run
/// the model again) where neither can be read.
pub fn retention_budget() -> usize {
    const CAP: usize = 8 << 30;
    if let Some(mb) = std::env::var("CALIBENCH_CALIBRATION_MEMORY_MB")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return mb.saturating_mul(1 << 20);
    }
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        })
        .map_or(0, |kb| (kb.saturating_mul(1024) / 2).min(CAP))
}

/// A TensorRT cache from ranges, in the order of `order`.
pub fn cache_from_ranges(
    order: &[String],
    ranges: &BTreeMap<String, f32>,
    method: Method,
    version: TrtVersion,
) -> CalibrationCache {
    CalibrationCache {
        header: Header {
            version_code: version.code(),
            calibrator: method.header_calibrator(),
        },
        entries: order
            .iter()
            .filter_map(|n| {
                ranges
                    .get(n)
                    .map(|a| Entry::from_scale(n.clone(), a / 127.0))
            })
            .collect(),
        notes: vec![],
    }
}

/// Largest |x| of finite values.
pub(crate) fn max_abs(values: &[f32]) -> f32 {
    values
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f32, |m, v| m.max(v.abs()))
}

/// The two passes entropy and percentile share: the largest |x| first, then a histogram of
/// |x| over [0, that max].
#[derive(Debug, Default)]
pub(crate) struct TwoPass {
    pub amax: f32,
    pub histogram: Option<AbsHistogram>,
}

impl TwoPass {
    pub fn observe(&mut self, pass: usize, values: &[f32]) {
        if pass == 0 {
            self.amax = self.amax.max(max_abs(values));
        } else {
            let amax = self.amax;
            self.histogram
                .get_or_insert_with(|| AbsHistogram::new(amax))
                .add(values);
        }
    }

    /// The largest |x| first, then the histogram over [0, that max].
    pub fn statistic(&self, pass: usize) -> Option<Statistic> {
        Some(match pass {
            0 => Statistic::MaxAbs,
            _ => Statistic::AbsHistogram { range: self.amax },
        })
    }

    pub fn observe_reduced(&mut self, _pass: usize, reduced: &Reduced) {
        match reduced {
            Reduced::MaxAbs(m) => self.amax = self.amax.max(*m),
            Reduced::AbsHistogram(bins) => {
                let amax = self.amax;
                let h = self
                    .histogram
                    .get_or_insert_with(|| AbsHistogram::new(amax));
                for (total, n) in h.bins.iter_mut().zip(bins) {
                    *total += n;
                }
            }
        }
    }
}

/// A histogram of |x| over [0, range] in [`HISTOGRAM_BINS`] bins (values at or beyond the
/// range fall in the last bin).
#[derive(Debug, Clone)]
pub(crate) struct AbsHistogram {
    pub range: f32,
    pub bins: Vec<u64>,
}

impl AbsHistogram {
    pub fn new(range: f32) -> AbsHistogram {
        AbsHistogram {
            range,
            bins: vec![0; HISTOGRAM_BINS],
        }
    }

    pub fn add(&mut self, values: &[f32]) {
        if self.range <= 0.0 {
            self.bins[0] += values.len() as u64;
            return;
        }
        let scale = HISTOGRAM_BINS as f64 / f64::from(self.range);
        for v in values.iter().filter(|v| v.is_finite()) {
            let i = ((f64::from(v.abs()) * scale) as usize).min(HISTOGRAM_BINS - 1);
            self.bins[i] += 1;
        }
    }

    pub fn bin_width(&self) -> f32 {
        self.range / HISTOGRAM_BINS as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<String>, Vec<Vec<Vec<f32>>>);
    impl ActivationSource for Fixed {
        fn tensors(&self) -> &[String] {
            &self.0
        }
        fn batches(&self) -> usize {
            self.1.len()
        }
        fn run(&mut self, i: usize) -> Result<Vec<Vec<f32>>, String> {
            Ok(self.1[i].clone())
        }
    }

    #[test]
    fn methods_parse() {
        assert_eq!("entropy".parse::<Method>().unwrap(), Method::Entropy);
        assert_eq!(
            "percentile=99.9".parse::<Method>().unwrap(),
            Method::Percentile(99.9)
        );
        assert_eq!(
            "percentile".parse::<Method>().unwrap(),
            Method::Percentile(99.99)
        );
        assert!("percentile=0".parse::<Method>().is_err());
        assert!("kl".parse::<Method>().is_err());
    }

    #[test]
    fn minmax_over_batches_and_cache_order() {
        let mut src = Fixed(
            vec!["b".into(), "a".into()],
            vec![
                vec![vec![1.0, -3.0], vec![0.5]],
                vec![vec![2.0], vec![-0.25, f32::NAN]],
            ],
        );
        let r = collect_ranges(&mut src, Method::MinMax).unwrap();
        assert_eq!(r["b"], 3.0);
        assert_eq!(r["a"], 0.5, "NaN is ignored");
        let c = cache_from_ranges(
            &["b".into(), "a".into()],
            &r,
            Method::MinMax,
            "10.14.1".parse().unwrap(),
        );
        assert_eq!(
            c.to_text(),
            format!(
                "TRT-101401-MinMaxCalibration\nb: {:08x}\na: {:08x}\n",
                (3.0f32 / 127.0).to_bits(),
                (0.5f32 / 127.0).to_bits()
            )
        );
    }

    /// A source that reduces its tensors itself (as the GPU does) from the same values.
    struct Reducing(Fixed, usize);
    impl ActivationSource for Reducing {
        fn tensors(&self) -> &[String] {
            self.0.tensors()
        }
        fn batches(&self) -> usize {
            self.0.batches()
        }
        fn run(&mut self, i: usize) -> Result<Vec<Vec<f32>>, String> {
            self.0.run(i)
        }
        fn run_reduced(
            &mut self,
            i: usize,
            stats: &[Statistic],
        ) -> Option<Result<Vec<Reduced>, String>> {
            self.1 += 1;
            let values = self.0.run(i).ok()?;
            Some(Ok(stats
                .iter()
                .zip(&values)
                .map(|(s, v)| s.reduce(v))
                .collect()))
        }
    }

    #[test]
    fn reduced_statistics_give_the_same_ranges_as_values() {
        let batches: Vec<Vec<Vec<f32>>> = (0..3)
            .map(|b| {
                let a = (0..500).map(|i| ((i * 37 + b * 11) % 101) as f32 / 7.0 - 6.0);
                let c = (0..300).map(|i| (i as f32 * 0.013 + b as f32).sin() * 3.0);
                vec![a.collect(), c.collect()]
            })
            .collect();
        let names = vec!["a".to_string(), "c".to_string()];
        for method in [
            Method::MinMax,
            Method::Entropy,
            Method::Percentile(99.0),
            Method::EntropyOnnxruntime(Default::default()),
        ] {
            let by_values =
                collect_ranges(&mut Fixed(names.clone(), batches.clone()), method).unwrap();
            let mut reducing = Reducing(Fixed(names.clone(), batches.clone()), 0);
            let by_stats = collect_ranges(&mut reducing, method).unwrap();
            assert_eq!(by_values, by_stats, "{method}");
            let passes = method.collector().passes();
            let expected = if matches!(method, Method::EntropyOnnxruntime(_)) {
                0 // needs the values themselves
            } else {
                3 * passes
            };
            assert_eq!(
                reducing.1, expected,
                "{method}: batches reduced by the source"
            );
        }
    }

    /// A source of values that counts the batches it ran.
    struct Counting(Fixed, usize);

    impl ActivationSource for Counting {
        fn tensors(&self) -> &[String] {
            self.0.tensors()
        }
        fn batches(&self) -> usize {
            self.0.batches()
        }
        fn run(&mut self, i: usize) -> Result<Vec<Vec<f32>>, String> {
            self.1 += 1;
            self.0.run(i)
        }
    }

    #[test]
    fn two_pass_methods_run_the_model_once_when_the_activations_fit() {
        let batches: Vec<Vec<Vec<f32>>> = (0..4)
            .map(|b| {
                vec![(0..250)
                    .map(|i| ((i * 13 + b * 7) % 89) as f32 / 5.0)
                    .collect()]
            })
            .collect();
        let names = vec!["t".to_string()];
        // One batch is 1000 bytes: all four fit in 4000, three in 3000.
        for method in [Method::Entropy, Method::Percentile(99.0)] {
            let mut runs = Vec::new();
            let mut ranges = Vec::new();
            for budget in [usize::MAX, 4000, 3000, 0] {
                let mut src = Counting(Fixed(names.clone(), batches.clone()), 0);
                ranges.push(collect_ranges_within(&mut src, method, budget).unwrap());
                runs.push(src.1);
            }
            assert_eq!(runs, [4, 4, 8, 8], "{method}: batches run per budget");
            assert!(
                ranges.windows(2).all(|w| w[0] == w[1]),
                "{method}: {ranges:?}"
            );
        }
    }

    #[test]
    fn histogram_bins() {
        let mut h = AbsHistogram::new(2.0);
        h.add(&[0.0, -0.0005, 1.0, -2.0, 5.0]);
        assert_eq!(h.bins[0], 2);
        assert_eq!(h.bins[1024], 1);
        assert_eq!(
            h.bins[2047], 2,
            "the range's end and beyond go to the last bin"
        );
    }
}
