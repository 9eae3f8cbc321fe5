//! ONNX models, read with tract-onnx's protobuf types: inputs, outputs, weights, and the
//! activation tensors that TensorRT would quantize.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use prost::Message;
pub use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

/// Why a model could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read.
    #[error("cannot read model {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not an ONNX model.
    #[error("{path}: not a valid ONNX model ({message})\nfix: the file is truncated or not ONNX; export it again or check the download")]
    Decode { path: PathBuf, message: String },
    /// Something in the model that calibench cannot handle.
    #[error("{path}: {message}")]
    Unsupported { path: PathBuf, message: String },
}

/// Loads a model and fixes the shapes given for its inputs.
pub fn load_with_shapes(path: &Path, shapes: &InputShapes) -> Result<OnnxModel, ModelError> {
    let mut m = OnnxModel::load(path)?;
    m.set_input_shapes(shapes)?;
    Ok(m)
}

/// One dimension of an input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A named symbolic size such as `N` or `batch`.
    Symbolic(String),
}

/// An input or output of the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoInfo {
    /// Tensor name.
    pub name: String,
    /// ONNX element type (1 = float).
    pub elem_type: i32,
    /// Dimensions, if the model declares them.
    pub dims: Vec<Dim>,
}

impl IoInfo {
    /// The shape at a batch size: the first dimension takes the batch size when it is
    /// symbolic; any other symbolic dimension is an error that says how to give it (fix it
    /// first with [`OnnxModel::set_input_shapes`]).
    pub fn shape_at_batch(&self, batch: usize) -> Result<Vec<usize>, String> {
        self.dims
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Dim::Fixed(n) => Ok(*n),
                Dim::Symbolic(_) if i == 0 => Ok(batch),
                Dim::Symbolic(s) => {
                    let example: Vec<String> = self
                        .dims
                        .iter()
                        .enumerate()
                        .map(|(j, d)| match d {
                            _ if j == 0 => "1".to_string(),
                            Dim::Fixed(n) => n.to_string(),
                            Dim::Symbolic(_) => "SIZE".to_string(),
                        })
                        .collect();
                    Err(format!(
                        "input {:?} has a symbolic dimension {s:?} at axis {i}, and no shape was given for it\nfix: add `[models.inputs.{}] shape = [{}]` to the matrix spec (or `--shapes {}:{}`); axis 0 takes each cell's batch size",
                        self.name,
                        toml_key(&self.name),
                        example.join(", "),
                        self.name,
                        example.join("x")
                    ))
                }
            })
            .collect()
    }
}

/// A TOML key for a name: bare when it can be, quoted otherwise.
fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// Shapes of inputs given by the user (`[models.inputs.<name>] shape = [1, 3, 48, 192]`,
/// `--shapes x:1x3x48x192`): every axis is fixed but axis 0, which takes each cell's batch.
pub type InputShapes = BTreeMap<String, Vec<usize>>;

/// Parses trtexec's and Polygraphy's spelling: `x:1x3x48x192,mask:1x48` (`*` also separates).
pub fn parse_shapes(text: &str) -> Result<InputShapes, String> {
    let mut out = InputShapes::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, dims) = part
            .rsplit_once(':')
            .ok_or_else(|| format!("shape {part:?} is not NAME:DIMS (e.g. x:1x3x224x224)"))?;
        let dims: Result<Vec<usize>, _> = dims
            .split(['x', '*'])
            .map(|d| d.trim().parse::<usize>())
            .collect();
        match dims {
            Ok(d) if !d.is_empty() && d.iter().all(|&n| n > 0) => {
                out.insert(name.trim().to_string(), d);
            }
            _ => {
                return Err(format!(
                    "shape {part:?}: dimensions must be positive integers separated by 'x' (e.g. x:1x3x224x224)"
                ))
            }
        }
    }
    Ok(out)
}

/// An ONNX model held as its protobuf.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    /// Where it was read from.
    pub path: PathBuf,
    /// The model.
    pub proto: pb::ModelProto,
}

impl OnnxModel {
    /// Reads and decodes a model file.
    pub fn load(path: &Path) -> Result<OnnxModel, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        OnnxModel::from_bytes(path, &bytes)
    }

    /// Decodes a model from bytes; `path` names it in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<OnnxModel, ModelError> {
        let proto = pb::ModelProto::decode(bytes).map_err(|e| ModelError::Decode {
            path: path.to_path_buf(),
            message: format!("protobuf decoding failed: {e}"),
        })?;
        let Some(graph) = &proto.graph else {
            return Err(ModelError::Decode {
                path: path.to_path_buf(),
                message: "it has no graph".into(),
            });
        };
        if graph.node.is_empty() || graph.output.is_empty() {
            return Err(ModelError::Decode {
                path: path.to_path_buf(),
                message: "its graph has no nodes or no outputs".into(),
            });
        }
        if graph
            .initializer
            .iter()
            .any(|t| !t.external_data.is_empty())
        {
            return Err(ModelError::Unsupported {
                path: path.to_path_buf(),
                message: "weights stored in external data files are not supported".into(),
            });
        }
        Ok(OnnxModel {
            path: path.to_path_buf(),
            proto,
        })
    }

    /// Fixes the dimensions of the inputs named in `shapes` (all but axis 0, the batch).
    /// A name that is no input, a rank that differs, or a size that contradicts a fixed
    /// dimension of the model is an error naming the input.
    pub fn set_input_shapes(&mut self, shapes: &InputShapes) -> Result<(), ModelError> {
        use pb::tensor_shape_proto::dimension::Value;
        let unsupported = |message: String| ModelError::Unsupported {
            path: self.path.clone(),
            message,
        };
        let names: Vec<String> = self.inputs().into_iter().map(|i| i.name).collect();
        for name in shapes.keys() {
            if !names.contains(name) {
                return Err(unsupported(format!(
                    "a shape is given for input {name:?}, but the model's inputs are {}\nfix: use the input names of the model",
                    names.join(", ")
                )));
            }
        }
        let path = self.path.clone();
        for input in &mut self.graph_mut().input {
            let Some(shape) = shapes.get(&input.name) else {
                continue;
            };
            let Some(pb::type_proto::Value::TensorType(t)) =
                input.r#type.as_mut().and_then(|t| t.value.as_mut())
            else {
                continue;
            };
            let dims = &mut t.shape.get_or_insert_with(Default::default).dim;
            if dims.is_empty() {
                dims.resize(shape.len(), Default::default());
            }
            if dims.len() != shape.len() {
                return Err(ModelError::Unsupported {
                    path,
                    message: format!(
                        "input {:?} has {} dimensions, but the shape given for it has {} ({shape:?})\nfix: give one size per dimension",
                        input.name,
                        dims.len(),
                        shape.len()
                    ),
                });
            }
            for (axis, (d, &n)) in dims.iter_mut().zip(shape).enumerate().skip(1) {
                match d.value {
                    Some(Value::DimValue(m)) if m > 0 && m as usize != n => {
                        return Err(ModelError::Unsupported {
                            path,
                            message: format!(
                                "input {:?} has a fixed size {m} at axis {axis}, but the shape given for it says {n}\nfix: give the model's own size there",
                                input.name
                            ),
                        })
                    }
                    _ => d.value = Some(Value::DimValue(n as i64)),
                }
            }
        }
        Ok(())
    }

    /// Encodes the model as ONNX bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.proto.encode_to_vec()
    }

    /// Raises the default-domain opset to at least `version` (operators a rewrite adds need
    /// it), rewriting nodes whose form or meaning changed ([`super::opset::raise`]).
    pub fn raise_opset(&mut self, version: i64) {
        super::opset::raise(self, version);
    }

    /// The graph (checked to exist at load).
    pub fn graph(&self) -> &pb::GraphProto {
        self.proto.graph.as_ref().expect("checked at load")
    }

    /// The graph, mutably.
    pub fn graph_mut(&mut self) -> &mut pb::GraphProto {
        self.proto.graph.as_mut().expect("checked at load")
    }

    fn initializer_names(&self) -> HashSet<&str> {
        self.graph()
            .initializer
            .iter()
            .map(|t| t.name.as_str())
            .collect()
    }
    /// The first input whose batch axis (axis 0) has a fixed size, and that size: such a
    /// model (exported without dynamic axes) runs only at that batch.
    pub fn fixed_batch(&self) -> Option<(String, usize)> {
        self.inputs()
            .into_iter()
            .find_map(|i| match i.dims.first() {
                Some(Dim::Fixed(n)) => Some((i.name, *n)),
                _ => None,
            })
    }

    /// Inputs fed at run time (graph inputs that are not initializers).
    pub fn inputs(&self) -> Vec<IoInfo> {
        let init = self.initializer_names();
        self.graph()
            .input
            .iter()
            .filter(|i| !init.contains(i.name.as_str()))
            .map(io_info)
            .collect()
    }

    /// Graph outputs.
    pub fn outputs(&self) -> Vec<IoInfo> {
        self.graph().output.iter().map(io_info).collect()
    }

    /// A weight (initializer or Constant node output) by name.
    pub fn constant(&self, name: &str) -> Option<&pb::TensorProto> {
        let g = self.graph();
        g.initializer.iter().find(|t| t.name == name).or_else(|| {
            g.node
                .iter()
                .find(|n| n.op_type == "Constant" && n.output.first().is_some_and(|o| o == name))
                .and_then(|n| n.attribute.iter().find(|a| a.name == "value"))
                .and_then(|a| a.t.as_ref())
        })
    }

    /// Names of tensors computed only from weights (initializers and constants).
    pub fn constant_tensors(&self) -> HashSet<String> {
        let mut constant: HashSet<String> = self
            .initializer_names()
            .into_iter()
            .map(str::to_string)
            .collect();
        for node in &self.graph().node {
            let all_const = node
                .input
                .iter()
                .all(|i| i.is_empty() || constant.contains(i));
            if node.op_type == "Constant" || (all_const && !node.input.is_empty()) {
                constant.extend(node.output.iter().cloned());
            }
        }
        constant
    }

    /// The activation tensors TensorRT would want a scale for, in graph order: the float
    /// tensors of the data path (float graph inputs and what is computed from them), never
    /// weights or shape arithmetic ([`super::types`]).
    pub fn quantizable_tensors(&self) -> Vec<String> {
        super::types::tensor_kinds(self).data_path
    }

    /// Node index producing each tensor.
    pub fn producers(&self) -> HashMap<&str, usize> {
        let mut m = HashMap::new();
        for (i, n) in self.graph().node.iter().enumerate() {
            for o in &n.output {
                m.insert(o.as_str(), i);
            }
        }
        m
    }

    /// Names of the nodes (or `op_type#index` when unnamed) that read a tensor.
    pub fn consumers_of(&self, tensor: &str) -> Vec<String> {
        self.graph()
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| n.input.iter().any(|i| i == tensor))
            .map(|(i, n)| node_label(n, i))
            .collect()
    }
}

/// A readable label of a node: its name, or `op_type#index`.
pub fn node_label(node: &pb::NodeProto, index: usize) -> String {
    if node.name.is_empty() {
        format!("{}#{index}", node.op_type)
    } else {
        node.name.clone()
    }
}

/// An integer attribute of a node.
pub fn attr_int(node: &pb::NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn io_info(v: &pb::ValueInfoProto) -> IoInfo {
    use pb::tensor_shape_proto::dimension::Value;
    let tensor = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => Some(t),
        _ => None,
    };
    let dims = tensor
        .and_then(|t| t.shape.as_ref())
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(Value::DimValue(n)) if *n >= 0 => Dim::Fixed(*n as usize),
                    Some(Value::DimParam(p)) => Dim::Symbolic(p.clone()),
                    _ => Dim::Symbolic("?".into()),
                })
                .collect()
        })
        .unwrap_or_default();
    IoInfo {
        name: v.name.clone(),
        elem_type: tensor.map_or(0, |t| t.elem_type),
        dims,
    }
}

/// The elements of a float tensor proto (from `float_data` or little-endian `raw_data`).
pub fn float_data(t: &pb::TensorProto) -> Option<Vec<f32>> {
    if t.data_type != DataType::Float as i32 {
        return None;
    }
    if !t.raw_data.is_empty() {
        if !t.raw_data.len().is_multiple_of(4) {
            return None;
        }
        Some(
            t.raw_data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    } else {
        Some(t.float_data.clone())
    }
}

/// A float tensor proto from dims and elements (stored as raw little-endian data).
pub fn float_tensor(name: &str, dims: &[i64], data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// An int8 tensor proto (zero points).
pub fn int8_tensor(name: &str, dims: &[i64], data: &[i8]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: DataType::Int8 as i32,
        raw_data: data.iter().map(|v| *v as u8).collect(),
        ..Default::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn digits() -> OnnxModel {
        OnnxModel::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/digits/digits_cnn.onnx"),
        )
        .unwrap()
    }

    #[test]
    fn digits_model_io_and_quantizable_tensors() {
        let m = digits();
        let inputs = m.inputs();
        assert_eq!(inputs.len(), 1);
        assert_eq!(inputs[0].name, "input");
        assert_eq!(
            inputs[0].dims,
            vec![
                Dim::Symbolic("N".into()),
                Dim::Fixed(1),
                Dim::Fixed(8),
                Dim::Fixed(8)
            ]
        );
        assert_eq!(inputs[0].shape_at_batch(4).unwrap(), vec![4, 1, 8, 8]);
        assert_eq!(m.outputs()[0].name, "logits");
        let q = m.quantizable_tensors();
        assert_eq!(
            q,
            [
                "input",
                "conv1_out",
                "relu1_out",
                "pool1_out",
                "conv2_out",
                "relu2_out",
                "flat_out",
                "fc1_out",
                "relu3_out",
                "logits"
            ]
        );
        // The ORT calibrator covered the same tensors when it made the committed cache.
        let cache = crate::cache::CalibrationCache::read(
            &m.path.with_file_name("digits_cnn.entropy.cache"),
        )
        .unwrap();
        let names: Vec<&str> = cache.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, q);
        assert_eq!(m.consumers_of("relu1_out"), ["pool1"]);
        let w = float_data(m.constant("conv1.weight").unwrap()).unwrap();
        assert_eq!(w.len(), 72);
    }

    #[test]
    fn truncated_and_foreign_files_are_clear_errors() {
        let bytes = std::fs::read(&digits().path).unwrap();
        for (what, data) in [
            ("truncated", &bytes[..bytes.len() / 2]),
            ("text", b"hello, this is not onnx" as &[u8]),
            ("empty", b""),
        ] {
            let e = OnnxModel::from_bytes(Path::new("m.onnx"), data)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("m.onnx") && e.contains("not a valid ONNX model"),
                "{what}: {e}"
            );
        }
    }

    #[test]
    fn symbolic_non_batch_dims_are_refused() {
        let io = IoInfo {
            name: "x".into(),
            elem_type: 1,
            dims: vec![Dim::Symbolic("N".into()), Dim::Symbolic("T".into())],
        };
        assert!(io.shape_at_batch(2).unwrap_err().contains("\"T\""));
    }
}
