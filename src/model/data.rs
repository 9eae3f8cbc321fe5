//! Evaluation data: inputs, labels and reference outputs from `.npy`, `.npz` and ONNX
//! `TensorProto` `.pb` files (the format of onnx's own test data sets).
//!
//! Every tensor's first axis is the sample axis: an evaluation set of 400 images for a model
//! taking `[N,1,8,8]` is a `[400,1,8,8]` array.

use std::fs::File;
use std::path::{Path, PathBuf};

use ndarray_npy::{NpzReader, NpzWriter, ReadNpyExt};
use prost::Message;
use tract_onnx::pb;
use tract_onnx::prelude::tract_ndarray::{self as ndarray, ArrayD, IxDyn};

use super::onnx::float_data;
use super::Tensor;

/// Why data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// I/O.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The content is not what was expected.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
}

fn format_err(path: &Path, message: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads every array of a file: `.npy` gives one unnamed array, `.npz` its named arrays,
/// `.pb` one TensorProto (named by its `name`). Floats and integers are converted to f32.
pub fn read_arrays(path: &Path) -> Result<Vec<(Option<String>, Tensor)>, DataError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let open = || {
        File::open(path).map_err(|source| DataError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    match ext.as_str() {
        "npy" => Ok(vec![(None, read_npy_any(open()?, path)?)]),
        "npz" => {
            let mut npz = NpzReader::new(open()?)
                .map_err(|e| format_err(path, format!("not a valid .npz file: {e}")))?;
            let names = npz.names().map_err(|e| format_err(path, e.to_string()))?;
            let mut out = Vec::new();
            for name in names {
                let t = read_npz_any(&mut npz, &name, path)?;
                out.push((Some(name.trim_end_matches(".npy").to_string()), t));
            }
            Ok(out)
        }
        "pb" => {
            let bytes = std::fs::read(path).map_err(|source| DataError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let proto = pb::TensorProto::decode(bytes.as_slice())
                .map_err(|e| format_err(path, format!("not an ONNX TensorProto: {e}")))?;
            let name = (!proto.name.is_empty()).then(|| proto.name.clone());
            Ok(vec![(
                name,
                tensor_from_proto(&proto).map_err(|m| format_err(path, m))?,
            )])
        }
        _ => Err(format_err(
            path,
            "unknown data file type: use .npy, .npz, or an ONNX TensorProto .pb file",
        )),
    }
}

/// A TensorProto's elements as f32 (float, double, and integer types).
pub fn tensor_from_proto(t: &pb::TensorProto) -> Result<Tensor, String> {
    use pb::tensor_proto::DataType as D;
    let shape: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let raw = &t.raw_data;
    let data: Vec<f32> = match D::try_from(t.data_type) {
        Ok(D::Float) => float_data(t).ok_or("float tensor with a truncated raw_data")?,
        Ok(D::Double) if !raw.is_empty() => raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        Ok(D::Double) => t.double_data.iter().map(|&v| v as f32).collect(),
        Ok(D::Int64) if !raw.is_empty() => raw
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        Ok(D::Int64) => t.int64_data.iter().map(|&v| v as f32).collect(),
        Ok(D::Int32) if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        Ok(D::Int32 | D::Int8 | D::Uint8 | D::Int16 | D::Uint16) if raw.is_empty() => {
            t.int32_data.iter().map(|&v| v as f32).collect()
        }
        Ok(D::Int8) => raw.iter().map(|&b| b as i8 as f32).collect(),
        Ok(D::Uint8) => raw.iter().map(|&b| b as f32).collect(),
        Ok(D::Float16) if !raw.is_empty() => raw
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Ok(D::Bool) => raw.iter().map(|&b| (b != 0) as u8 as f32).collect(),
        _ => {
            return Err(format!(
                "tensor of ONNX type {} is not supported as data",
                t.data_type
            ))
        }
    };
    Tensor::new(shape.clone(), data.clone())
        .or_else(|| {
            (shape.is_empty() && data.len() == 1).then(|| Tensor {
                shape: vec![],
                data,
            })
        })
        .ok_or_else(|| format!("tensor shape {shape:?} does not match its element count"))
}

fn read_npy_any(mut file: File, path: &Path) -> Result<Tensor, DataError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| DataError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let bytes = bytes.as_slice();
    let first_error = match ArrayD::<f32>::read_npy(bytes) {
        Ok(a) => return Ok(to_tensor(a)),
        Err(e) => e.to_string(),
    };
    if let Ok(a) = ArrayD::<f64>::read_npy(bytes) {
        return Ok(to_tensor(a.mapv(|v| v as f32)));
    }
    if let Ok(a) = ArrayD::<i64>::read_npy(bytes) {
        return Ok(to_tensor(a.mapv(|v| v as f32)));
    }
    if let Ok(a) = ArrayD::<i32>::read_npy(bytes) {
        return Ok(to_tensor(a.mapv(|v| v as f32)));
    }
    Err(format_err(
        path,
        format!("not a .npy array of float32, float64, int64 or int32 ({first_error})"),
    ))
}

fn read_npz_any(npz: &mut NpzReader<File>, name: &str, path: &Path) -> Result<Tensor, DataError> {
    let first_error = match npz.by_name::<ndarray::OwnedRepr<f32>, IxDyn>(name) {
        Ok(a) => return Ok(to_tensor(a)),
        Err(e) => e.to_string(),
    };
    if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<f64>, IxDyn>(name) {
        return Ok(to_tensor(a.mapv(|v| v as f32)));
    }
    if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<i64>, IxDyn>(name) {
        return Ok(to_tensor(a.mapv(|v| v as f32)));
    }
    if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<i32>, IxDyn>(name) {
        return Ok(to_tensor(a.mapv(|v| v as f32)));
    }
    Err(format_err(
        path,
        format!("array {name:?} is not float32, float64, int64 or int32 ({first_error})"),
    ))
}

fn to_tensor(a: ArrayD<f32>) -> Tensor {
    Tensor {
        shape: a.shape().to_vec(),
        data: a.iter().copied().collect(),
    }
}

/// Writes named tensors to an `.npz` file (used to cache computed reference outputs).
pub fn write_npz(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), DataError> {
    let file = File::create(path).map_err(|source| DataError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut npz = NpzWriter::new(file);
    for (name, t) in tensors {
        let a = ArrayD::from_shape_vec(IxDyn(&t.shape), t.data.clone())
            .map_err(|e| format_err(path, e.to_string()))?;
        npz.add_array(name.as_str(), &a)
            .map_err(|e| format_err(path, e.to_string()))?;
    }
    npz.finish().map_err(|e| format_err(path, e.to_string()))?;
    Ok(())
}

/// Matches arrays read from a file to tensor names (a model's inputs or outputs): a single
/// unnamed array goes to a single name; otherwise arrays are matched by name.
pub fn assign(
    path: &Path,
    arrays: Vec<(Option<String>, Tensor)>,
    names: &[String],
) -> Result<Vec<Tensor>, DataError> {
    if arrays.len() == 1 && names.len() == 1 {
        return Ok(arrays.into_iter().map(|(_, t)| t).collect());
    }
    names
        .iter()
        .map(|n| {
            arrays
                .iter()
                .find(|(name, _)| name.as_deref() == Some(n.as_str()))
                .map(|(_, t)| t.clone())
                .ok_or_else(|| {
                    let found: Vec<String> = arrays.iter().map(|(k, _)| k.clone().unwrap_or_else(|| "<unnamed>".into())).collect();
                    format_err(path, format!("no array named {n:?} (found: {}); name arrays after the model's tensors", found.join(", ")))
                })
        })
        .collect()
}

/// A data set: one tensor per name, all sharing the sample count on axis 0.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Tensor names (model inputs or outputs).
    pub names: Vec<String>,
    /// Tensors, `[samples, ...]`.
    pub tensors: Vec<Tensor>,
}

impl Dataset {
    /// Reads a file and assigns its arrays to names, checking they share a sample count.
    pub fn read(path: &Path, names: &[String]) -> Result<Dataset, DataError> {
        let tensors = assign(path, read_arrays(path)?, names)?;
        let ds = Dataset {
            names: names.to_vec(),
            tensors,
        };
        if ds.tensors.iter().any(|t| t.shape.is_empty()) {
            return Err(format_err(path, "arrays need a sample axis (axis 0)"));
        }
        let n = ds.samples();
        if ds.tensors.iter().any(|t| t.shape[0] != n) {
            return Err(format_err(
                path,
                "arrays have different sample counts on axis 0",
            ));
        }
        Ok(ds)
    }

    /// Number of samples.
    pub fn samples(&self) -> usize {
        self.tensors
            .first()
            .map_or(0, |t| t.shape.first().copied().unwrap_or(0))
    }

    /// Samples `start..start+count` of every tensor, padded with zeros up to `pad_to` samples.
    pub fn batch(&self, start: usize, count: usize, pad_to: usize) -> Vec<Tensor> {
        self.tensors
            .iter()
            .map(|t| {
                let per: usize = t.shape[1..].iter().product();
                let mut data = t.data[start * per..(start + count) * per].to_vec();
                data.resize(pad_to * per, 0.0);
                let mut shape = t.shape.clone();
                shape[0] = pad_to;
                Tensor { shape, data }
            })
            .collect()
    }
}

/// Labels: one class index per sample.
pub fn read_labels(path: &Path) -> Result<Vec<i64>, DataError> {
    let arrays = read_arrays(path)?;
    let [(_, t)] = arrays.as_slice() else {
        return Err(format_err(
            path,
            "a labels file holds one array of class indices",
        ));
    };
    if t.shape.len() != 1 {
        return Err(format_err(
            path,
            format!(
                "labels must be a 1-D array of class indices, got shape {:?}",
                t.shape
            ),
        ));
    }
    Ok(t.data.iter().map(|&v| v as i64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(f: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/digits")
            .join(f)
    }

    #[test]
    fn reads_npy_of_float_and_int() {
        let ds = Dataset::read(&fixture("eval_inputs.npy"), &["input".into()]).unwrap();
        assert_eq!(ds.samples(), 400);
        assert_eq!(ds.tensors[0].shape, vec![400, 1, 8, 8]);
        let labels = read_labels(&fixture("eval_labels.npy")).unwrap();
        assert_eq!(labels.len(), 400);
        assert!(labels.iter().all(|l| (0..10).contains(l)));
    }

    #[test]
    fn batches_pad_with_zeros() {
        let ds = Dataset::read(&fixture("eval_inputs.npy"), &["input".into()]).unwrap();
        let b = ds.batch(398, 2, 4);
        assert_eq!(b[0].shape, vec![4, 1, 8, 8]);
        assert_eq!(&b[0].data[..128], &ds.tensors[0].data[398 * 64..]);
        assert!(b[0].data[128..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn npz_round_trip_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.npz");
        let t = Tensor::pseudo_random(&[3, 2], 5);
        write_npz(
            &p,
            &[("logits".into(), t.clone()), ("other".into(), t.clone())],
        )
        .unwrap();
        let ds = Dataset::read(&p, &["logits".into()]).unwrap();
        assert_eq!(ds.tensors[0], t);
        let e = Dataset::read(&p, &["missing".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"missing\"") && e.contains("logits"), "{e}");
    }

    #[test]
    fn tensor_proto_pb() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("input_0.pb");
        let proto = crate::model::onnx::float_tensor("x", &[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        std::fs::write(&p, proto.encode_to_vec()).unwrap();
        let a = read_arrays(&p).unwrap();
        assert_eq!(a[0].0.as_deref(), Some("x"));
        assert_eq!(a[0].1.data, vec![1.0, 2.0, 3.0, 4.0]);
        std::fs::write(&p, b"\xff\xff\xff garbage").unwrap();
        assert!(read_arrays(&p)
            .unwrap_err()
            .to_string()
            .contains("input_0.pb"));
    }

    #[test]
    fn wrong_files_are_clear() {
        let e = read_arrays(Path::new("x.csv")).unwrap_err().to_string();
        assert!(e.contains("x.csv") && e.contains(".npy"), "{e}");
        let e = read_labels(&fixture("eval_inputs.npy"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("1-D"), "{e}");
    }
}
