//! The `mock` backend: deterministic and instant, for testing calibench itself (runner,
//! store, exports). It never runs a model; its numbers mean nothing about any GPU.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Backend, BackendError, BuildRequest, Engine};
use crate::matrix::spec::MockSpec;
use crate::matrix::{BackendKind, Filter, Precision};
use crate::model::{Tensor, TensorSpec};

/// The mock backend, configured by the spec's `[mock]` table.
#[derive(Debug)]
pub struct MockBackend {
    delay: Duration,
    fail: Vec<Filter>,
}

impl MockBackend {
    /// A mock backend from the spec's settings.
    pub fn new(spec: &MockSpec) -> Result<MockBackend, BackendError> {
        let fail = spec
            .fail
            .iter()
            .map(|f| Filter::parse(f).map_err(|e| BackendError::Build(e.to_string())))
            .collect::<Result<_, _>>()?;
        Ok(MockBackend {
            delay: Duration::from_millis(spec.delay_ms),
            fail,
        })
    }
}

impl Backend for MockBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Mock
    }

    fn build(&self, request: &BuildRequest<'_>) -> Result<Box<dyn Engine>, BackendError> {
        std::thread::sleep(self.delay);
        if self.fail.iter().any(|f| f.matches(request.cell)) {
            return Err(BackendError::Build(format!(
                "mock build of {} failed because [mock].fail asks for it",
                request.cell
            )));
        }
        Ok(Box::new(MockEngine {
            inputs: vec![TensorSpec {
                name: "input".into(),
                shape: vec![request.cell.batch, 1, 8, 8],
            }],
            precision: request.cell.precision,
            outputs: vec!["logits".into()],
        }))
    }
}

/// A mock engine: 10 outputs per sample, each a weighted sum of the input, rounded the way
/// the cell's precision would round it.
struct MockEngine {
    inputs: Vec<TensorSpec>,
    precision: Precision,
    outputs: Vec<String>,
}

impl Engine for MockEngine {
    fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    fn outputs(&self) -> &[String] {
        &self.outputs
    }

    fn infer(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError> {
        let [x] = inputs else {
            return Err(BackendError::Infer(format!(
                "mock engine takes 1 input, got {}",
                inputs.len()
            )));
        };
        if x.shape != self.inputs[0].shape {
            return Err(BackendError::Infer(format!(
                "input shape {:?} does not match the engine's {:?}",
                x.shape, self.inputs[0].shape
            )));
        }
        let batch = x.shape[0];
        let per = x.data.len() / batch.max(1);
        let round = |v: f32| match self.precision {
            Precision::Fp32 => v,
            Precision::Fp16 => (v * 1024.0).round() / 1024.0,
            Precision::Int8 | Precision::Best => (v * 16.0).round() / 16.0,
        };
        let mut out = Vec::with_capacity(batch * 10);
        for sample in x.data.chunks(per) {
            for k in 0..10 {
                let w = (k + 1) as f32 / 10.0;
                out.push(round(sample.iter().map(|v| v * w).sum::<f32>()));
            }
        }
        Ok(vec![Tensor {
            shape: vec![batch, 10],
            data: out,
        }])
    }

    fn layer_precisions(&self) -> BTreeMap<String, usize> {
        BTreeMap::from([(self.precision.to_string(), 1)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Cell;
    use std::path::Path;

    fn cell(p: Precision) -> Cell {
        Cell {
            model: "m".into(),
            cache: p.needs_cache().then(|| "c".into()),
            device: "cpu".into(),
            precision: p,
            backend: BackendKind::Mock,
            batch: 2,
        }
    }

    #[test]
    fn deterministic_outputs_differ_by_precision() {
        let backend = MockBackend::new(&MockSpec::default()).unwrap();
        let x = Tensor::pseudo_random(&[2, 1, 8, 8], 1);
        let run = |p| {
            let c = cell(p);
            let req = BuildRequest {
                cell: &c,
                model_path: Path::new("m"),
                cache_path: None,
                gpu_ordinal: None,
                input_shapes: &Default::default(),
            };
            backend
                .build(&req)
                .unwrap()
                .infer(std::slice::from_ref(&x))
                .unwrap()
        };
        assert_eq!(run(Precision::Fp32), run(Precision::Fp32));
        assert_ne!(run(Precision::Fp32), run(Precision::Int8));
        assert_eq!(run(Precision::Int8)[0].shape, vec![2, 10]);
    }

    #[test]
    fn fail_conditions_fail_the_build() {
        let spec = MockSpec {
            delay_ms: 0,
            fail: vec!["precision=int8".into()],
        };
        let backend = MockBackend::new(&spec).unwrap();
        let c = cell(Precision::Int8);
        let req = BuildRequest {
            cell: &c,
            model_path: Path::new("m"),
            cache_path: None,
            gpu_ordinal: None,
            input_shapes: &Default::default(),
        };
        let err = backend.build(&req).err().unwrap().to_string();
        assert!(err.contains("[mock].fail"), "{err}");
        let c = cell(Precision::Fp16);
        let req = BuildRequest {
            cell: &c,
            model_path: Path::new("m"),
            cache_path: None,
            gpu_ordinal: None,
            input_shapes: &Default::default(),
        };
        assert!(backend.build(&req).is_ok());
    }

    #[test]
    fn wrong_input_shape_is_an_error() {
        let backend = MockBackend::new(&MockSpec::default()).unwrap();
        let c = cell(Precision::Fp32);
        let req = BuildRequest {
            cell: &c,
            model_path: Path::new("m"),
            cache_path: None,
            gpu_ordinal: None,
            input_shapes: &Default::default(),
        };
        let mut e = backend.build(&req).unwrap();
        let err = e
            .infer(&[Tensor::pseudo_random(&[1, 1, 8, 8], 1)])
            .unwrap_err();
        assert!(err.to_string().contains("does not match"));
    }
}
