//! Evaluation sets: a model's inputs, labels and reference outputs, loaded once per run.
//! Reference outputs come from the spec's `reference` file, or are computed by the reference
//! backend at fp32 and cached on disk (keyed by the sha256 of model and inputs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::reference::ReferenceEngine;
use crate::backend::{BackendError, Engine};
use crate::matrix::spec::ModelSpec;
use crate::matrix::Precision;
use crate::model::data::{read_labels, write_npz, Dataset};
use crate::model::onnx::OnnxModel;
use crate::model::{precision, Tensor};

/// What a model is evaluated on.
#[derive(Debug, Clone)]
pub struct EvalSet {
    /// Inputs, named after the model's inputs.
    pub inputs: Dataset,
    /// Class labels, if given.
    pub labels: Option<Vec<i64>>,
    /// Reference outputs, named after the model's outputs.
    pub reference: Dataset,
    /// Where the reference outputs came from.
    pub reference_origin: String,
    /// NaN or Inf found in the inputs or reference outputs: each "tensor: N NaN, M Inf of E".
    pub non_finite: Vec<String>,
}

/// "name (what): N NaN, M Inf of E elements" for each tensor that holds non-finite values.
fn non_finite(what: &str, set: &Dataset) -> Vec<String> {
    set.names
        .iter()
        .zip(&set.tensors)
        .filter_map(|(name, t)| {
            let nan = t.data.iter().filter(|v| v.is_nan()).count();
            let inf = t.data.iter().filter(|v| v.is_infinite()).count();
            (nan + inf > 0).then(|| {
                format!(
                    "{what} {name:?}: {nan} NaN, {inf} Inf of {} elements",
                    t.data.len()
                )
            })
        })
        .collect()
}

/// Evaluation sets of a run, loaded on first use.
#[derive(Debug)]
pub struct EvalSets {
    cache_dir: PathBuf,
    loaded: HashMap<String, Result<Option<Arc<EvalSet>>, String>>,
}

impl EvalSets {
    /// Evaluation sets whose computed references are cached under `cache_dir`.
    pub fn new(cache_dir: PathBuf) -> EvalSets {
        EvalSets {
            cache_dir,
            loaded: HashMap::new(),
        }
    }

    /// The evaluation set of a model (`None` when the spec gives no `eval_inputs`).
    pub fn get(
        &mut self,
        model: &ModelSpec,
        model_sha256: &str,
    ) -> Result<Option<Arc<EvalSet>>, String> {
        self.loaded
            .entry(model.id.clone())
            .or_insert_with(|| load(model, model_sha256, &self.cache_dir).map(|o| o.map(Arc::new)))
            .clone()
    }
}

/// Reads a model's evaluation inputs and checks them against its input shapes (the run's
/// preflight calls it before any cell runs).
pub fn read_inputs(model: &ModelSpec, onnx: &OnnxModel) -> Result<Dataset, String> {
    let Some(inputs_path) = &model.eval_inputs else {
        return Ok(Dataset {
            names: Vec::new(),
            tensors: Vec::new(),
        });
    };
    let input_names: Vec<String> = onnx.inputs().into_iter().map(|i| i.name).collect();
    let inputs = Dataset::read(inputs_path, &input_names).map_err(|e| e.to_string())?;
    for (io, t) in onnx.inputs().iter().zip(&inputs.tensors) {
        let wanted = io
            .shape_at_batch(t.shape[0])
            .map_err(|e| format!("{}: {e}", model.path.display()))?;
        // Per sample: a fixed batch axis (a model exported without dynamic axes) takes the
        // evaluation samples one batch at a time like a symbolic one.
        if !io.dims.is_empty() && (wanted.len() != t.shape.len() || wanted[1..] != t.shape[1..]) {
            return Err(format!(
                "{}: input {:?} is {:?} ({} samples of {:?}), but model {:?} takes {:?} per batch\nfix: save the evaluation inputs with the model's input shape, samples on axis 0",
                inputs_path.display(),
                io.name,
                t.shape,
                t.shape[0],
                &t.shape[1..],
                model.id,
                io.dims
                    .iter()
                    .map(|d| match d {
                        crate::model::onnx::Dim::Fixed(n) => n.to_string(),
                        crate::model::onnx::Dim::Symbolic(s) => s.clone(),
                    })
                    .collect::<Vec<_>>()
            ));
        }
    }
    Ok(inputs)
}

fn load(
    model: &ModelSpec,
    model_sha256: &str,
    cache_dir: &Path,
) -> Result<Option<EvalSet>, String> {
    let Some(inputs_path) = &model.eval_inputs else {
        return Ok(None);
    };
    let onnx = crate::model::onnx::load_with_shapes(&model.path, &model.input_shapes())
        .map_err(|e| e.to_string())?;
    let output_names: Vec<String> = onnx.outputs().into_iter().map(|o| o.name).collect();
    let inputs = read_inputs(model, &onnx)?;
    let samples = inputs.samples();
    let labels = match &model.eval_labels {
        Some(p) => {
            let l = read_labels(p).map_err(|e| e.to_string())?;
            if l.len() != samples {
                return Err(format!(
                    "{}: {} labels for {samples} evaluation samples\nfix: labels and eval_inputs must describe the same samples",
                    p.display(),
                    l.len()
                ));
            }
            Some(l)
        }
        None => None,
    };
    let (reference, reference_origin) = match &model.reference {
        Some(p) => (
            Dataset::read(p, &output_names).map_err(|e| e.to_string())?,
            p.display().to_string(),
        ),
        None => {
            let inputs_sha = crate::hash::sha256_file(inputs_path)
                .map_err(|e| format!("cannot read {}: {e}", inputs_path.display()))?;
            let by = model.reference_backend;
            let shapes: String = model
                .input_shapes()
                .iter()
                .map(|(k, v)| format!("-{k}{v:?}"))
                .collect();
            let key = crate::hash::sha256_bytes(format!("{by}{shapes}").as_bytes());
            let cached = cache_dir.join(format!(
                "{}-{}-{}.npz",
                &model_sha256[..16],
                &inputs_sha[..16],
                &key[..8]
            ));
            let origin = format!("{by} backend fp32 (cached in {})", cached.display());
            if cached.is_file() {
                if let Ok(d) = Dataset::read(&cached, &output_names) {
                    return finish(inputs, labels, d, origin, model).map(Some);
                }
            }
            let computed = compute_reference(&onnx, &inputs, by)
                .map_err(|e| format!("computing reference outputs: {e}"))?;
            let named: Vec<(String, Tensor)> = output_names
                .iter()
                .cloned()
                .zip(computed.tensors.iter().cloned())
                .collect();
            if std::fs::create_dir_all(cache_dir).is_ok() {
                let tmp = cached.with_extension("npz.tmp");
                if write_npz(&tmp, &named).is_ok() {
                    let _ = std::fs::rename(&tmp, &cached);
                }
            }
            (computed, origin)
        }
    };
    finish(inputs, labels, reference, reference_origin, model).map(Some)
}

fn finish(
    inputs: Dataset,
    labels: Option<Vec<i64>>,
    reference: Dataset,
    origin: String,
    model: &ModelSpec,
) -> Result<EvalSet, String> {
    if reference.samples() != inputs.samples() {
        return Err(format!(
            "model {:?}: the reference outputs hold {} samples but eval_inputs {}\nfix: regenerate the reference outputs from these inputs, or drop `reference` to compute them",
            model.id,
            reference.samples(),
            inputs.samples()
        ));
    }
    let mut bad = non_finite("eval input", &inputs);
    bad.extend(non_finite("reference output", &reference));
    Ok(EvalSet {
        inputs,
        labels,
        reference,
        reference_origin: origin,
        non_finite: bad,
    })
}

/// fp32 outputs for every sample, from the model's `reference_backend` (tract by default, or
/// onnxruntime).
fn compute_reference(
    onnx: &OnnxModel,
    inputs: &Dataset,
    by: crate::matrix::BackendKind,
) -> Result<Dataset, BackendError> {
    // A model with a fixed batch axis runs only at that batch.
    let batch = onnx
        .fixed_batch()
        .map_or(inputs.samples().clamp(1, 64), |(_, n)| n);
    let plan = precision::plan(onnx, Precision::Fp32, None);
    let mut engine: Box<dyn Engine> = match by {
        crate::matrix::BackendKind::Onnxruntime => Box::new(
            crate::backend::onnxruntime::OnnxRuntimeBackend::open()?.compile(
                onnx,
                batch,
                plan.layer_counts(),
                Vec::new(),
            )?,
        ),
        _ => Box::new(ReferenceEngine::compile(onnx, batch, plan)?),
    };
    let tensors = run_dataset(engine.as_mut(), inputs, batch)?;
    Ok(Dataset {
        names: engine.outputs().to_vec(),
        tensors,
    })
}

/// Runs every sample of a data set through an engine at its batch size (the last batch is
/// padded with zeros, and the padding's outputs dropped); returns each output for all samples.
pub fn run_dataset(
    engine: &mut dyn Engine,
    inputs: &Dataset,
    batch: usize,
) -> Result<Vec<Tensor>, BackendError> {
    let n = inputs.samples();
    let mut outputs: Vec<Tensor> = Vec::new();
    let mut start = 0;
    while start < n {
        let count = batch.min(n - start);
        let outs = engine.infer(&inputs.batch(start, count, batch))?;
        if outputs.is_empty() {
            outputs = outs
                .iter()
                .map(|o| Tensor {
                    shape: [vec![0], o.shape.get(1..).unwrap_or(&[]).to_vec()].concat(),
                    data: Vec::new(),
                })
                .collect();
        }
        for (acc, o) in outputs.iter_mut().zip(outs) {
            if o.shape.first() != Some(&batch) {
                return Err(BackendError::Infer(format!(
                    "an output has shape {:?}; calibench expects the batch on axis 0 ({batch})",
                    o.shape
                )));
            }
            let per = o.data.len() / batch;
            acc.data.extend_from_slice(&o.data[..count * per]);
            acc.shape[0] += count;
        }
        start += count;
    }
    Ok(outputs)
}
