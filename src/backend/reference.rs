//! The `reference` backend: ONNX on the CPU with tract. fp32 is the truth every other result
//! is compared with; fp16, int8 and best are simulated by rewriting the graph (fp16 rounding
//! casts, Q/DQ pairs with the cache's scales; see `model::precision` and `model::qdq`).

use std::collections::BTreeMap;

use tract_onnx::prelude::*;

use super::{Backend, BackendError, BuildRequest, Engine};
use crate::matrix::BackendKind;
use crate::model::onnx::OnnxModel;
use crate::model::precision::{self, PrecisionPlan};
use crate::model::{qdq, Tensor, TensorSpec};

/// The CPU reference backend.
#[derive(Debug, Default)]
pub struct ReferenceBackend;

type State = tract_onnx::tract_core::plan::SimpleState<TypedFact, Box<dyn TypedOp>>;

/// A compiled tract plan at a fixed batch size.
pub struct ReferenceEngine {
    state: State,
    inputs: Vec<TensorSpec>,
    input_types: Vec<DatumType>,
    outputs: Vec<String>,
    layer_counts: BTreeMap<String, usize>,
    model_bytes: Vec<u8>,
    diagnostics: Vec<super::EngineDiagnostic>,
}

impl ReferenceEngine {
    /// Compiles a model (already rewritten for its precision) at a batch size.
    pub fn compile(
        model: &OnnxModel,
        batch: usize,
        precision_plan: PrecisionPlan,
    ) -> Result<ReferenceEngine, BackendError> {
        let path = model.path.display().to_string();
        let build_err = |what: &str, e: TractError| {
            BackendError::Build(format!(
                "{path}: the reference backend (tract) could not {what} the model: {e:#}\nfix: tract does not support an operator or shape of this model (the message above names the node); run it on onnxruntime instead (backends = [\"onnxruntime\"], and reference_backend = \"onnxruntime\" for its reference outputs)"
            ))
        };
        let mut inputs = Vec::new();
        let mut input_types = Vec::new();
        for io in model.inputs() {
            let dt = datum_type(io.elem_type).ok_or_else(|| {
                BackendError::Build(format!(
                    "{path}: input {:?} has ONNX element type {}, which calibench cannot feed",
                    io.name, io.elem_type
                ))
            })?;
            input_types.push(dt);
            let shape = io
                .shape_at_batch(batch)
                .map_err(|e| BackendError::Build(format!("{path}: {e}")))?;
            inputs.push(TensorSpec {
                name: io.name,
                shape,
            });
        }
        let outputs = model.outputs().into_iter().map(|o| o.name).collect();
        let mut inference = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .with_ignore_output_shapes(true)
            .with_ignore_output_types(true)
            .model_for_proto_model(&model.proto)
            .map_err(|e| build_err("load", e))?;
        for (i, spec) in inputs.iter().enumerate() {
            inference
                .set_input_fact(i, input_types[i].fact(spec.shape.clone()).into())
                .map_err(|e| build_err("set the input shape of", e))?;
        }
        let plan = inference
            .into_optimized()
            .map_err(|e| build_err("analyse and optimize", e))?
            .into_runnable()
            .map_err(|e| build_err("plan", e))?;
        let state = plan.spawn().map_err(|e| build_err("start", e))?;
        Ok(ReferenceEngine {
            state,
            inputs,
            input_types,
            outputs,
            layer_counts: precision_plan.layer_counts(),
            diagnostics: plan_diagnostics(&precision_plan),
            model_bytes: model.to_bytes(),
        })
    }

    /// Loads an engine written by [`Engine::serialize`]: the rewritten model is compiled again
    /// (tract plans are not serializable), but no precision planning or rewriting is redone.
    pub fn deserialize(
        bytes: &[u8],
        origin: &std::path::Path,
        batch: usize,
    ) -> Result<ReferenceEngine, BackendError> {
        let (header, payload) = super::StoredEngine::decode(bytes, origin, "reference")?;
        let model = OnnxModel::from_bytes(origin, payload)
            .map_err(|e| BackendError::Build(e.to_string()))?;
        super::tract_defects::refuse_known_defects(&model)?;
        let mut engine = ReferenceEngine::compile(&model, batch, PrecisionPlan::default())?;
        engine.layer_counts = header.layer_counts;
        engine.diagnostics = header.diagnostics;
        Ok(engine)
    }
}

/// An fp32 engine of `model` at `batch`, for calibration (`cache::calibrate::EngineActivations`).
pub fn fp32_engine(model: &OnnxModel, batch: usize) -> Result<Box<dyn Engine>, BackendError> {
    let plan = precision::plan(model, crate::matrix::Precision::Fp32, None);
    Ok(Box::new(ReferenceEngine::compile(model, batch, plan)?))
}

/// calibench's own check of the cache against the model, as diagnostics: what TensorRT would
/// report as "Missing scale and zero-point", plus scales it could not use.
pub(crate) fn plan_diagnostics(plan: &PrecisionPlan) -> Vec<super::EngineDiagnostic> {
    let mut out = Vec::new();
    if !plan.uncovered.is_empty() {
        let shown: Vec<&str> = plan.uncovered.iter().take(5).map(String::as_str).collect();
        out.push(super::EngineDiagnostic {
            kind: "missing_scale".into(),
            message: format!(
                "{} tensor(s) have no scale in the cache ({}{}); their layers run without int8",
                plan.uncovered.len(),
                shown.join(", "),
                if plan.uncovered.len() > shown.len() { ", …" } else { "" }
            ),
            fix: "the cache does not cover this model (wrong cache or a re-export with new tensor names): run `calibench cache check CACHE --model MODEL`, recalibrate on this model".into(),
        });
    }
    for (tensor, scale) in &plan.unusable {
        out.push(super::EngineDiagnostic {
            kind: "unusable_scale".into(),
            message: format!(
                "tensor {tensor} has scale {scale}, which cannot quantize; it stays float"
            ),
            fix:
                "recalibrate: a zero, negative or non-finite scale comes from a broken calibration"
                    .into(),
        });
    }
    if !plan.unused_entries.is_empty() {
        out.push(super::EngineDiagnostic {
            kind: "unknown_cache_entries".into(),
            message: format!("{} cache entries name no tensor of the model", plan.unused_entries.len()),
            fix: "the model was re-exported or changed structure since calibration: check with `calibench cache check`".into(),
        });
    }
    out
}

/// The tract type of an ONNX element type that calibench can feed from f32 data.
fn datum_type(elem_type: i32) -> Option<DatumType> {
    Some(match elem_type {
        1 => DatumType::F32,
        2 => DatumType::U8,
        3 => DatumType::I8,
        6 => DatumType::I32,
        7 => DatumType::I64,
        9 => DatumType::Bool,
        10 => DatumType::F16,
        11 => DatumType::F64,
        _ => return None,
    })
}

impl Backend for ReferenceBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Reference
    }

    fn build(&self, request: &BuildRequest<'_>) -> Result<Box<dyn Engine>, BackendError> {
        let model = request.load_model()?;
        let cache = request.load_cache()?;
        let plan = precision::plan(&model, request.cell.precision, cache.as_ref());
        let rewritten = qdq::apply(&model, &plan);
        super::tract_defects::refuse_known_defects(&rewritten)?;
        Ok(Box::new(ReferenceEngine::compile(
            &rewritten,
            request.cell.batch,
            plan,
        )?))
    }

    fn version(&self) -> String {
        format!(
            "reference/tract-onnx-0.23/calibench-{}",
            env!("CARGO_PKG_VERSION")
        )
    }

    fn load(
        &self,
        request: &BuildRequest<'_>,
        bytes: &[u8],
        origin: &std::path::Path,
    ) -> Result<Box<dyn Engine>, BackendError> {
        Ok(Box::new(ReferenceEngine::deserialize(
            bytes,
            origin,
            request.cell.batch,
        )?))
    }
}

impl Engine for ReferenceEngine {
    fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    fn outputs(&self) -> &[String] {
        &self.outputs
    }

    fn infer(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError> {
        super::check_inputs(&self.inputs, inputs)?;
        let mut values = TVec::new();
        for ((t, spec), dt) in inputs.iter().zip(&self.inputs).zip(&self.input_types) {
            let tensor = tract_ndarray::ArrayD::from_shape_vec(t.shape.clone(), t.data.clone())
                .map_err(|e| BackendError::Infer(e.to_string()))?;
            let tensor = tract_onnx::prelude::Tensor::from(tensor)
                .cast_to_dt(*dt)
                .map_err(|e| {
                    BackendError::Infer(format!(
                        "input {:?} cannot be converted to {dt:?}: {e}",
                        spec.name
                    ))
                })?
                .into_owned();
            values.push(tensor.into());
        }
        let outs = self
            .state
            .run(values)
            .map_err(|e| BackendError::Infer(format!("tract failed while running: {e:#}")))?;
        outs.into_iter()
            .map(|v| {
                let v = v.cast_to::<f32>().map_err(|e| {
                    BackendError::Infer(format!("output is not convertible to float32: {e}"))
                })?;
                let view = v
                    .to_plain_array_view::<f32>()
                    .map_err(|e| BackendError::Infer(e.to_string()))?;
                Ok(Tensor {
                    shape: view.shape().to_vec(),
                    data: view.iter().copied().collect(),
                })
            })
            .collect()
    }

    fn layer_precisions(&self) -> BTreeMap<String, usize> {
        self.layer_counts.clone()
    }

    fn diagnostics(&self) -> Vec<super::EngineDiagnostic> {
        self.diagnostics.clone()
    }

    fn serialize(&self) -> Option<Vec<u8>> {
        super::StoredEngine {
            layer_counts: self.layer_counts.clone(),
            diagnostics: self.diagnostics.clone(),
            build_path: None,
        }
        .encode(&self.model_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::{Cell, Precision};
    use std::path::{Path, PathBuf};

    fn fixture(f: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/digits")
            .join(f)
    }

    fn build(p: Precision, batch: usize) -> Box<dyn Engine> {
        let cell = Cell {
            model: "digits".into(),
            cache: p.needs_cache().then(|| "c".into()),
            device: "cpu".into(),
            precision: p,
            backend: BackendKind::Reference,
            batch,
        };
        let cache = fixture("digits_cnn.entropy.cache");
        let model = fixture("digits_cnn.onnx");
        let req = BuildRequest {
            cell: &cell,
            model_path: &model,
            cache_path: p.needs_cache().then_some(cache.as_path()),
            gpu_ordinal: None,
            input_shapes: &Default::default(),
        };
        ReferenceBackend.build(&req).unwrap()
    }

    fn eval_batch(n: usize) -> (Tensor, Vec<f32>) {
        let x: tract_ndarray::ArrayD<f32> =
            ndarray_npy::read_npy(fixture("eval_inputs.npy")).unwrap();
        let r: tract_ndarray::ArrayD<f32> = ndarray_npy::read_npy(fixture("eval_ref.npy")).unwrap();
        let per_x = 64;
        let x = Tensor::new(
            vec![n, 1, 8, 8],
            x.iter().take(n * per_x).copied().collect(),
        )
        .unwrap();
        (x, r.iter().take(n * 10).copied().collect())
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    #[test]
    fn fp32_matches_onnxruntime_reference_outputs() {
        let (x, reference) = eval_batch(16);
        let out = build(Precision::Fp32, 16).infer(&[x]).unwrap();
        assert_eq!(out[0].shape, vec![16, 10]);
        let max = max_abs_diff(&out[0].data, &reference);
        assert!(max < 1e-4, "tract vs onnxruntime max abs diff {max}");
    }

    #[test]
    fn lower_precisions_differ_but_stay_close() {
        let (x, reference) = eval_batch(8);
        for p in [Precision::Fp16, Precision::Int8, Precision::Best] {
            let mut e = build(p, 8);
            let out = e.infer(std::slice::from_ref(&x)).unwrap();
            let max = max_abs_diff(&out[0].data, &reference);
            let range = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(max > 0.0, "{p}: simulation must change something");
            assert!(
                max < 0.1 * range,
                "{p}: max abs diff {max} vs output range {range}"
            );
            let counts = e.layer_precisions();
            let expected = if p == Precision::Fp16 { "fp16" } else { "int8" };
            assert_eq!(counts.get(expected), Some(&8), "{p}: {counts:?}");
        }
    }

    #[test]
    fn wrong_input_shape_is_a_clear_error() {
        let mut e = build(Precision::Fp32, 2);
        let err = e
            .infer(&[Tensor::pseudo_random(&[3, 1, 8, 8], 1)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[3, 1, 8, 8]") && err.contains("[2, 1, 8, 8]"),
            "{err}"
        );
    }

    #[test]
    fn truncated_model_is_a_build_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("cut.onnx");
        let bytes = std::fs::read(fixture("digits_cnn.onnx")).unwrap();
        std::fs::write(&bad, &bytes[..bytes.len() / 3]).unwrap();
        let cell = Cell {
            model: "m".into(),
            cache: None,
            device: "cpu".into(),
            precision: Precision::Fp32,
            backend: BackendKind::Reference,
            batch: 1,
        };
        let req = BuildRequest {
            cell: &cell,
            model_path: &bad,
            cache_path: None,
            gpu_ordinal: None,
            input_shapes: &Default::default(),
        };
        let err = ReferenceBackend.build(&req).err().unwrap().to_string();
        assert!(
            err.contains("cut.onnx") && err.contains("not a valid ONNX model"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod unsupported {
    use super::*;
    use crate::matrix::{Cell, Precision};
    use crate::model::onnx::pb;
    use prost::Message;

    fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
        use pb::tensor_shape_proto::{dimension::Value, Dimension};
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(pb::TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|d| Dimension {
                                value: Some(Value::DimValue(*d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_operator_tract_cannot_run_is_a_build_error_naming_the_node() {
        let model = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(pb::GraphProto {
                name: "g".into(),
                node: vec![
                    pb::NodeProto {
                        op_type: "Relu".into(),
                        name: "relu".into(),
                        input: vec!["x".into()],
                        output: vec!["r".into()],
                        ..Default::default()
                    },
                    pb::NodeProto {
                        op_type: "Det".into(),
                        name: "my_det_node".into(),
                        input: vec!["r".into()],
                        output: vec!["y".into()],
                        ..Default::default()
                    },
                ],
                input: vec![value_info("x", &[2, 3, 3])],
                output: vec![value_info("y", &[2])],
                ..Default::default()
            }),
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("det.onnx");
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        let cell = Cell {
            model: "det".into(),
            cache: None,
            device: "cpu".into(),
            precision: Precision::Fp32,
            backend: BackendKind::Reference,
            batch: 2,
        };
        let req = BuildRequest {
            cell: &cell,
            model_path: &path,
            cache_path: None,
            gpu_ordinal: None,
            input_shapes: &Default::default(),
        };
        let err = ReferenceBackend
            .build(&req)
            .err()
            .expect("Det is not supported")
            .to_string();
        assert!(err.contains("det.onnx"), "{err}");
        assert!(err.contains("my_det_node") && err.contains("Det"), "{err}");
        assert!(err.contains("run it on onnxruntime instead"), "{err}");
    }
}
