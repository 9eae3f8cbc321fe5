//! onnx's operator test cases (fixtures/onnx-node, copied from onnx 1.22.0 by
//! fixtures/copy_onnx_node_tests.py), loaded for the backends' conformance tests.
//!
//! The node tests feed operator parameters (weights, BatchNormalization statistics, Q/DQ
//! scales, Reshape's shape) as graph inputs; exported models hold them as initializers, and
//! that is what calibench runs, so the loader embeds them as initializers first.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use calibench::model::data::read_arrays;
use calibench::model::onnx::{pb, OnnxModel};
use calibench::model::Tensor;
use prost::Message;

/// Path of a file of the digits fixtures (fixtures/digits).
pub fn digits(f: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/digits")
        .join(f)
        .display()
        .to_string()
}

/// Parameter inputs of operators every backend takes as initializers.
pub const PARAMETERS: &[(&str, &[usize])] = &[
    ("BatchNormalization", &[1, 2, 3, 4]),
    ("QuantizeLinear", &[1, 2]),
    ("DequantizeLinear", &[1, 2]),
    ("Reshape", &[1]),
];

/// Weights, which exporters store as initializers too (backends that plan GEMMs need them).
pub const WEIGHTS: &[(&str, &[usize])] = &[("Conv", &[1, 2]), ("Gemm", &[1, 2]), ("MatMul", &[1])];

/// One case: the model with its parameters embedded, its inputs and expected outputs.
pub struct Case {
    pub name: String,
    pub model: OnnxModel,
    pub inputs: Vec<Tensor>,
    pub expected: Vec<Tensor>,
}

impl Case {
    /// Batch size of the first input.
    pub fn batch(&self) -> usize {
        self.inputs
            .first()
            .and_then(|t| t.shape.first().copied())
            .unwrap_or(1)
    }
}

/// Every case, with the inputs of `embed` moved into initializers.
pub fn cases(embed: &[&[(&str, &[usize])]]) -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/onnx-node");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    dirs.sort();
    dirs.iter().map(|d| load(d, embed)).collect()
}

fn load(dir: &Path, embed: &[&[(&str, &[usize])]]) -> Case {
    let mut model = OnnxModel::load(&dir.join("model.onnx")).unwrap();
    let data = dir.join("test_data_set_0");
    let files = embed_parameters(&mut model, pb_files(&data, "input_"), embed);
    Case {
        name: dir.file_name().unwrap().to_string_lossy().to_string(),
        model,
        inputs: read_all(&files),
        expected: read_all(&pb_files(&data, "output_")),
    }
}

/// Moves parameter inputs into initializers; returns the data files still to feed.
fn embed_parameters(
    model: &mut OnnxModel,
    files: Vec<PathBuf>,
    embed: &[&[(&str, &[usize])]],
) -> Vec<PathBuf> {
    let graph = model.graph_mut();
    let mut params = Vec::new();
    for node in &graph.node {
        for (op, slots) in embed.iter().flat_map(|list| list.iter()) {
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

/// Compares outputs with the onnx backend tests' tolerance (|a − b| ≤ atol + rtol·|b|).
pub fn compare(
    outputs: &[Tensor],
    expected: &[Tensor],
    atol: f64,
    rtol: f64,
) -> Result<(), String> {
    if outputs.len() != expected.len() {
        return Err(format!(
            "{} outputs, expected {}",
            outputs.len(),
            expected.len()
        ));
    }
    for (i, (a, b)) in outputs.iter().zip(expected).enumerate() {
        if a.data.len() != b.data.len() || (a.shape != b.shape && a.data.len() > 1) {
            return Err(format!(
                "output {i}: shape {:?}, expected {:?}",
                a.shape, b.shape
            ));
        }
        for (j, (x, y)) in a.data.iter().zip(&b.data).enumerate() {
            let (x, y) = (f64::from(*x), f64::from(*y));
            if (x - y).abs() > atol + rtol * y.abs() {
                return Err(format!("output {i} element {j}: {x} vs {y}"));
            }
        }
    }
    Ok(())
}
