//! Activations for calibration from any backend's fp32 engine: the model with every tensor to
//! calibrate exposed as an output, run batch by batch over the calibration data.

use super::{ActivationSource, Reduced, Statistic};
use crate::backend::{BackendError, Engine};
use crate::model::data::Dataset;
use crate::model::onnx::{pb, OnnxModel};

/// Builds an fp32 engine of a model at a batch size.
pub type EngineBuilder<'a> =
    dyn Fn(&OnnxModel, usize) -> Result<Box<dyn Engine>, BackendError> + 'a;

/// Activations of every tensor TensorRT would quantize, computed at fp32 batch by batch.
pub struct EngineActivations {
    tensors: Vec<String>,
    data: Dataset,
    batch: usize,
    full: Box<dyn Engine>,
    /// An engine for the last, smaller batch, so no padding enters the statistics.
    remainder: Option<Box<dyn Engine>>,
}

impl EngineActivations {
    /// Prepares `model` to expose `tensors` as outputs, with engines from `build` at `batch`.
    pub fn new(
        model: &OnnxModel,
        tensors: Vec<String>,
        data: Dataset,
        batch: usize,
        build: &EngineBuilder<'_>,
    ) -> Result<EngineActivations, BackendError> {
        let mut exposed = model.clone();
        exposed.graph_mut().output = tensors
            .iter()
            .map(|t| pb::ValueInfoProto {
                name: t.clone(),
                ..Default::default()
            })
            .collect();
        let samples = data.samples();
        if samples == 0 {
            return Err(BackendError::Build(
                "the calibration data holds no samples".into(),
            ));
        }
        let batch = batch.clamp(1, samples);
        let full = build(&exposed, batch)?;
        let remainder = match samples % batch {
            0 => None,
            r => Some(build(&exposed, r)?),
        };
        Ok(EngineActivations {
            tensors,
            data,
            batch,
            full,
            remainder,
        })
    }
}

impl ActivationSource for EngineActivations {
    fn tensors(&self) -> &[String] {
        &self.tensors
    }

    fn batches(&self) -> usize {
        self.data.samples().div_ceil(self.batch)
    }

    fn run(&mut self, index: usize) -> Result<Vec<Vec<f32>>, String> {
        let (engine, inputs) = self.batch_of(index);
        let outs = engine.infer(&inputs).map_err(|e| e.to_string())?;
        Ok(outs.into_iter().map(|t| t.data).collect())
    }

    fn run_reduced(
        &mut self,
        index: usize,
        stats: &[Statistic],
    ) -> Option<Result<Vec<Reduced>, String>> {
        let (engine, inputs) = self.batch_of(index);
        engine
            .reduce_outputs(&inputs, stats)
            .map(|r| r.map_err(|e| e.to_string()))
    }
}

impl EngineActivations {
    /// The engine for batch `index` and that batch's inputs.
    fn batch_of(&mut self, index: usize) -> (&mut Box<dyn Engine>, Vec<crate::model::Tensor>) {
        let start = index * self.batch;
        let count = self.batch.min(self.data.samples() - start);
        let inputs = self.data.batch(start, count, count);
        let engine = if count == self.batch {
            &mut self.full
        } else {
            self.remainder.as_mut().expect("made for the last batch")
        };
        (engine, inputs)
    }
}
