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
    ("Clip", &[1, 2]),
    ("Unsqueeze", &[1]),
    ("Squeeze", &[1]),
    ("Slice", &[1, 2, 3, 4]),
    ("Split", &[1]),
    ("Resize", &[1, 2, 3]),
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

/// Deterministic values in [-1, 1) (a 64-bit LCG), for random weights and inputs.
pub fn uniform(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A CNN whose channel counts suit the cuda backend's tensor-core path (random weights, fixed
/// seed): input `[N, 3, 16, 16]` → Conv 3→32 (+bias) → Relu → MaxPool 2 → residual block
/// (x + Relu(Conv 32→32 (x)), Relu) → Conv 32→64 stride 2 (+bias) → Relu → MaxPool 2 → Flatten
/// → Gemm 256→10 `logits`.
pub fn cnn32() -> OnnxModel {
    use calibench::model::onnx::float_tensor;
    let mut inits = Vec::new();
    let mut nodes = Vec::new();
    let node =
        |op: &str, inputs: &[&str], output: &str, attrs: Vec<pb::AttributeProto>| pb::NodeProto {
            op_type: op.into(),
            name: output.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute: attrs,
            ..Default::default()
        };
    let ints = |name: &str, v: &[i64]| pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    };
    let (mut x, mut c) = ("input".to_string(), 3usize);
    for (i, (cout, stride)) in [(32usize, 1i64), (64, 2)].into_iter().enumerate() {
        let fan_in = c * 9;
        let w: Vec<f32> = uniform(i as u64 + 1, cout * fan_in)
            .iter()
            .map(|v| v * (6.0 / fan_in as f32).sqrt())
            .collect();
        let b: Vec<f32> = uniform(i as u64 + 11, cout)
            .iter()
            .map(|v| v * 0.1)
            .collect();
        inits.push(float_tensor(
            &format!("w{i}"),
            &[cout as i64, c as i64, 3, 3],
            &w,
        ));
        inits.push(float_tensor(&format!("b{i}"), &[cout as i64], &b));
        let (conv, relu, pool) = (format!("conv{i}"), format!("relu{i}"), format!("pool{i}"));
        let attrs = vec![
            ints("kernel_shape", &[3, 3]),
            ints("pads", &[1, 1, 1, 1]),
            ints("strides", &[stride, stride]),
        ];
        nodes.push(node(
            "Conv",
            &[&x, &format!("w{i}"), &format!("b{i}")],
            &conv,
            attrs,
        ));
        nodes.push(node("Relu", &[&conv], &relu, vec![]));
        let attrs = vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])];
        nodes.push(node("MaxPool", &[&relu], &pool, attrs));
        (x, c) = (pool, cout);
        if i == 0 {
            // A residual block: x + Relu(Conv(x)), then Relu.
            let w: Vec<f32> = uniform(31, c * c * 9)
                .iter()
                .map(|v| v * (6.0 / (c * 9) as f32).sqrt())
                .collect();
            inits.push(float_tensor("wr", &[c as i64, c as i64, 3, 3], &w));
            let attrs = vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])];
            nodes.push(node("Conv", &[&x, "wr"], "convr", attrs));
            nodes.push(node("Relu", &["convr"], "relur", vec![]));
            nodes.push(node("Add", &[&x, "relur"], "add", vec![]));
            nodes.push(node("Relu", &["add"], "block", vec![]));
            x = "block".into();
        }
    }
    let fc: Vec<f32> = uniform(21, 10 * 256).iter().map(|v| v * 0.1).collect();
    inits.push(float_tensor("fc.w", &[10, 256], &fc));
    inits.push(float_tensor("fc.b", &[10], &[0.0; 10]));
    nodes.push(node("Flatten", &[&x], "flat", vec![]));
    let mut gemm = node("Gemm", &["flat", "fc.w", "fc.b"], "logits", vec![]);
    gemm.attribute.push(pb::AttributeProto {
        name: "transB".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: 1,
        ..Default::default()
    });
    nodes.push(gemm);
    let value = |name: &str, dims: &[Option<i64>]| {
        let dim = dims
            .iter()
            .map(|d| pb::tensor_shape_proto::Dimension {
                value: Some(match d {
                    Some(v) => pb::tensor_shape_proto::dimension::Value::DimValue(*v),
                    None => pb::tensor_shape_proto::dimension::Value::DimParam("N".into()),
                }),
                ..Default::default()
            })
            .collect();
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(pb::TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            name: "cnn32".into(),
            node: nodes,
            initializer: inits,
            input: vec![value("input", &[None, Some(3), Some(16), Some(16)])],
            output: vec![value("logits", &[None, Some(10)])],
            ..Default::default()
        }),
        ..Default::default()
    };
    OnnxModel::from_bytes(Path::new("cnn32.onnx"), &model.encode_to_vec()).unwrap()
}

/// A mock-backend spec in a temporary folder: 2 models, 2 caches, 4 precisions, 2 batches.
pub fn mock_spec(dir: &Path, extra: &str) -> PathBuf {
    for f in ["a.onnx", "b.onnx", "a.cache", "b.cache"] {
        std::fs::write(dir.join(f), f).unwrap();
    }
    let spec = format!(
        r#"version = 1
name = "mocked"
[axes]
precisions = ["fp32", "fp16", "int8", "best"]
backends = ["mock"]
devices = ["cpu"]
batch_sizes = [1, 2]
[[models]]
id = "a"
path = "a.onnx"
[[models]]
id = "b"
path = "b.onnx"
[[caches]]
id = "ca"
model = "a"
path = "a.cache"
[[caches]]
id = "cb"
model = "b"
path = "b.cache"
[latency]
warmup_ms = 1
measurement_ms = 5
samples = 5
{extra}
"#
    );
    let path = dir.join("spec.toml");
    std::fs::write(&path, spec).unwrap();
    path
}

/// Whether python3 can import `modules` (e.g. "onnx, onnxruntime, numpy"). When it cannot, the
/// calling test is skipped with a line saying so, unless `CALIBENCH_REQUIRE_ONNXRUNTIME=1`
/// (set by .ci/run) makes that a failure.
pub fn python_has(modules: &str) -> bool {
    let has = std::process::Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        assert!(
            std::env::var("CALIBENCH_REQUIRE_ONNXRUNTIME").map_or(true, |v| v != "1"),
            "CALIBENCH_REQUIRE_ONNXRUNTIME=1 but python3 cannot import {modules}"
        );
        calibench::corpus::say_skipped(&format!(
            "skipped: python3 cannot import {modules} (pip install onnx onnxruntime numpy)"
        ));
    }
    has
}

/// `name amax` pairs that onnxruntime's own calibrators give for a digits-model run of
/// tests/ort_entropy_defaults.py with `args` after the model and data.
pub fn onnxruntime_ranges(args: &[&str]) -> Vec<(String, f32)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ort_entropy_defaults.py");
    let o = std::process::Command::new("python3")
        .arg(script)
        .args([digits("digits_cnn.onnx"), digits("calib.npy")])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("RANGE "))
        .filter_map(|l| {
            l.rsplit_once(' ')
                .map(|(n, v)| (n.to_string(), v.parse().unwrap()))
        })
        .collect()
}
