//! Conformance: onnx's own operator test cases (fixtures/onnx-node, copied from onnx 1.22.0 by
//! fixtures/copy_onnx_node_tests.py) run through the reference backend's engine and match
//! their reference outputs within the onnx backend tests' tolerances (rtol 1e-3, atol 1e-7).
//!
//! The node tests feed operator parameters (BatchNormalization statistics, Q/DQ scales and
//! zero points, Reshape's shape) as graph inputs; exported models hold them as initializers,
//! and that is what calibench runs, so the harness embeds them as initializers first.

use std::path::{Path, PathBuf};

use calibench::backend::reference::ReferenceEngine;
use calibench::backend::Engine;
use calibench::matrix::Precision;
use calibench::model::data::read_arrays;
use calibench::model::onnx::{pb, OnnxModel};
use calibench::model::{precision, Tensor};
use prost::Message;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/onnx-node");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    v.sort();
    v
}

/// Inputs of these operators that are parameters, not activations.
const PARAMETER_INPUTS: &[(&str, &[usize])] = &[
    ("BatchNormalization", &[1, 2, 3, 4]),
    ("QuantizeLinear", &[1, 2]),
    ("DequantizeLinear", &[1, 2]),
    ("Reshape", &[1]),
];

/// Moves parameter inputs into initializers; returns the data files still to feed.
fn embed_parameters(model: &mut OnnxModel, files: Vec<PathBuf>) -> Vec<PathBuf> {
    let graph = model.graph_mut();
    let mut params = Vec::new();
    for node in &graph.node {
        for (op, slots) in PARAMETER_INPUTS {
            if node.op_type == *op {
                params.extend(slots.iter().filter_map(|&i| node.input.get(i).cloned()));
            }
        }
    }
    let mut keep = Vec::new();
    let inputs = std::mem::take(&mut graph.input);
    for (info, file) in inputs.into_iter().zip(files) {
        if params.contains(&info.name) {
            let mut t = pb::TensorProto::decode(std::fs::read(&file).unwrap().as_slice()).unwrap();
            t.name = info.name.clone();
            graph.initializer.push(t);
        } else {
            graph.input.push(info);
            keep.push(file);
        }
    }
    keep
}

fn pb_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    files.sort_by_key(|p| {
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        name.trim_start_matches(prefix).parse::<usize>().unwrap()
    });
    files
}

fn read_all(files: &[PathBuf]) -> Vec<Tensor> {
    files
        .iter()
        .map(|f| read_arrays(f).unwrap().remove(0).1)
        .collect()
}

fn run_case(dir: &Path) -> Result<(), String> {
    let mut model = OnnxModel::load(&dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let data = dir.join("test_data_set_0");
    let inputs = read_all(&embed_parameters(&mut model, pb_files(&data, "input_")));
    let expected = read_all(&pb_files(&data, "output_"));
    let batch = inputs
        .first()
        .and_then(|t| t.shape.first().copied())
        .unwrap_or(1);
    let plan = precision::plan(&model, Precision::Fp32, None);
    let mut engine = ReferenceEngine::compile(&model, batch, plan).map_err(|e| e.to_string())?;
    let outputs = engine.infer(&inputs).map_err(|e| e.to_string())?;
    if outputs.len() != expected.len() {
        return Err(format!(
            "{} outputs, expected {}",
            outputs.len(),
            expected.len()
        ));
    }
    for (i, (a, b)) in outputs.iter().zip(&expected).enumerate() {
        let shape_b = if b.shape.is_empty() {
            vec![]
        } else {
            b.shape.clone()
        };
        if a.data.len() != b.data.len() || (a.shape != shape_b && a.data.len() > 1) {
            return Err(format!(
                "output {i}: shape {:?}, expected {:?}",
                a.shape, b.shape
            ));
        }
        for (j, (x, y)) in a.data.iter().zip(&b.data).enumerate() {
            let (x, y) = (f64::from(*x), f64::from(*y));
            if (x - y).abs() > 1e-7 + 1e-3 * y.abs() {
                return Err(format!("output {i} element {j}: {x} vs {y}"));
            }
        }
    }
    Ok(())
}

#[test]
fn onnx_node_cases_pass_on_the_reference_backend() {
    let cases = cases();
    assert!(
        cases.len() >= 40,
        "fixtures/onnx-node holds {} cases",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = run_case(case) {
            failures.push(format!(
                "{}: {e}",
                case.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
