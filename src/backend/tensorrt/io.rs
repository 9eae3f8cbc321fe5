//! A TensorRT engine's I/O tensors as the engine itself reports them (`getNbIOTensors`,
//! `getTensorIOMode`, `getTensorDataType`, `getTensorShape`), matched with the model's inputs
//! and outputs, with each buffer sized for its data type and the conversions from and to the
//! float32 tensors calibench feeds and compares.

use std::borrow::Cow;

use half::{bf16, f16};

/// TensorRT's `DataType` (the same numbering in TensorRT 10 and 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrtDataType {
    /// kFLOAT.
    Float,
    /// kHALF.
    Half,
    /// kINT8.
    Int8,
    /// kINT32.
    Int32,
    /// kBOOL.
    Bool,
    /// kUINT8.
    Uint8,
    /// kFP8.
    Fp8,
    /// kBF16.
    Bf16,
    /// kINT64.
    Int64,
    /// kINT4.
    Int4,
    /// kFP4.
    Fp4,
    /// kE8M0.
    E8m0,
    /// A value this calibench does not know.
    Unknown(i32),
}

impl TrtDataType {
    /// From TensorRT's enum value.
    pub fn from_raw(v: i32) -> TrtDataType {
        match v {
            0 => TrtDataType::Float,
            1 => TrtDataType::Half,
            2 => TrtDataType::Int8,
            3 => TrtDataType::Int32,
            4 => TrtDataType::Bool,
            5 => TrtDataType::Uint8,
            6 => TrtDataType::Fp8,
            7 => TrtDataType::Bf16,
            8 => TrtDataType::Int64,
            9 => TrtDataType::Int4,
            10 => TrtDataType::Fp4,
            11 => TrtDataType::E8m0,
            other => TrtDataType::Unknown(other),
        }
    }

    /// Bytes per element where calibench can feed and read the type; `None` for sub-byte and
    /// 8-bit float types, which calibench cannot convert from float32 faithfully.
    pub fn element_bytes(self) -> Option<usize> {
        match self {
            TrtDataType::Float | TrtDataType::Int32 => Some(4),
            TrtDataType::Half | TrtDataType::Bf16 => Some(2),
            TrtDataType::Int8 | TrtDataType::Bool | TrtDataType::Uint8 => Some(1),
            TrtDataType::Int64 => Some(8),
            _ => None,
        }
    }

    /// The name TensorRT's documentation uses.
    pub fn name(self) -> String {
        match self {
            TrtDataType::Float => "kFLOAT".into(),
            TrtDataType::Half => "kHALF".into(),
            TrtDataType::Int8 => "kINT8".into(),
            TrtDataType::Int32 => "kINT32".into(),
            TrtDataType::Bool => "kBOOL".into(),
            TrtDataType::Uint8 => "kUINT8".into(),
            TrtDataType::Fp8 => "kFP8".into(),
            TrtDataType::Bf16 => "kBF16".into(),
            TrtDataType::Int64 => "kINT64".into(),
            TrtDataType::Int4 => "kINT4".into(),
            TrtDataType::Fp4 => "kFP4".into(),
            TrtDataType::E8m0 => "kE8M0".into(),
            TrtDataType::Unknown(v) => format!("DataType {v}"),
        }
    }

    /// float32 values as this type's bytes (integers are rounded; they are exact below 2^24).
    /// float32 itself is not copied.
    pub fn encode(self, values: &[f32]) -> Cow<'_, [u8]> {
        if self == TrtDataType::Float {
            // SAFETY: any f32 slice is a valid u8 slice of four times its length (u8 has no
            // alignment or validity requirement); the borrow keeps `values` alive.
            return Cow::Borrowed(unsafe {
                std::slice::from_raw_parts(
                    values.as_ptr().cast::<u8>(),
                    std::mem::size_of_val(values),
                )
            });
        }
        Cow::Owned(match self {
            TrtDataType::Half => values
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect(),
            TrtDataType::Bf16 => values
                .iter()
                .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                .collect(),
            TrtDataType::Int32 => values
                .iter()
                .flat_map(|v| (v.round() as i32).to_le_bytes())
                .collect(),
            TrtDataType::Int64 => values
                .iter()
                .flat_map(|v| (v.round() as i64).to_le_bytes())
                .collect(),
            TrtDataType::Int8 => values.iter().map(|v| (v.round() as i8) as u8).collect(),
            TrtDataType::Uint8 => values.iter().map(|v| v.round() as u8).collect(),
            TrtDataType::Bool => values.iter().map(|v| u8::from(*v != 0.0)).collect(),
            _ => Vec::new(),
        })
    }

    /// This type's bytes as float32 values.
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        fn chunks<const N: usize>(b: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
            b.chunks_exact(N)
                .map(|c| c.try_into().expect("chunks_exact gives N bytes"))
        }
        match self {
            TrtDataType::Float => chunks::<4>(bytes).map(f32::from_ne_bytes).collect(),
            TrtDataType::Half => chunks::<2>(bytes)
                .map(|c| f16::from_le_bytes(c).to_f32())
                .collect(),
            TrtDataType::Bf16 => chunks::<2>(bytes)
                .map(|c| bf16::from_le_bytes(c).to_f32())
                .collect(),
            TrtDataType::Int32 => chunks::<4>(bytes)
                .map(|c| i32::from_le_bytes(c) as f32)
                .collect(),
            TrtDataType::Int64 => chunks::<8>(bytes)
                .map(|c| i64::from_le_bytes(c) as f32)
                .collect(),
            TrtDataType::Int8 => bytes.iter().map(|b| *b as i8 as f32).collect(),
            TrtDataType::Uint8 | TrtDataType::Bool => bytes.iter().map(|b| *b as f32).collect(),
            _ => Vec::new(),
        }
    }
}

/// One I/O tensor as the engine (or its execution context, once input shapes are set) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoTensor {
    /// The engine's name for it.
    pub name: String,
    /// An input (else an output).
    pub is_input: bool,
    /// Its data type.
    pub dtype: TrtDataType,
    /// Its dimensions (-1 where dynamic and not yet set).
    pub dims: Vec<i64>,
}

/// One bound tensor: the engine's tensor with a buffer of `bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The engine's tensor name (an output renamed by the ONNX parser is `__name`).
    pub engine_name: String,
    /// The model's tensor name.
    pub model_name: String,
    /// Its data type.
    pub dtype: TrtDataType,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Buffer size.
    pub bytes: usize,
}

/// The engine's I/O matched with the model's: inputs in the model's order, the model's outputs in
/// its order, and every other engine output (bound too: TensorRT requires each I/O tensor bound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoPlan {
    /// Inputs, in the model's order.
    pub inputs: Vec<Binding>,
    /// The model's outputs, in its order.
    pub outputs: Vec<Binding>,
    /// Outputs of the engine that the model does not list (bound, not returned).
    pub extra_outputs: Vec<Binding>,
}

fn binding(t: &IoTensor, model_name: &str) -> Result<Binding, String> {
    let what = if t.is_input { "input" } else { "output" };
    let Some(size) = t.dtype.element_bytes() else {
        return Err(format!(
            "{what} {:?} of the engine is {}, which calibench cannot feed or read (it converts \
             kFLOAT, kHALF, kBF16, kINT8, kUINT8, kBOOL, kINT32 and kINT64 from and to float32)\n\
             fix: export the model with a float32 (or fp16/int32/int64) {what} there, e.g. keep the \
             cast to that type inside the graph",
            t.name,
            t.dtype.name()
        ));
    };
    if let Some(axis) = t.dims.iter().position(|d| *d < 0) {
        return Err(format!(
            "{what} {:?} of the engine still has a dynamic dimension at axis {axis} ({:?}) after \
             calibench set the input shapes\nfix: give every symbolic input dimension a size \
             ([models.inputs.NAME] shape, or --shapes NAME:AxBxC)",
            t.name, t.dims
        ));
    }
    let shape: Vec<usize> = t.dims.iter().map(|d| *d as usize).collect();
    Ok(Binding {
        engine_name: t.name.clone(),
        model_name: model_name.to_string(),
        dtype: t.dtype,
        bytes: shape.iter().product::<usize>() * size,
        shape,
    })
}

/// Matches the engine's I/O tensors with the model's inputs (name and shape at the cell's batch)
/// and output names, or says which tensor does not fit.
pub fn plan(
    engine_io: &[IoTensor],
    model_inputs: &[(String, Vec<usize>)],
    model_outputs: &[String],
) -> Result<IoPlan, String> {
    let mut inputs = Vec::new();
    for (name, shape) in model_inputs {
        let t = engine_io
            .iter()
            .find(|t| t.is_input && &t.name == name)
            .ok_or_else(|| {
                format!(
                    "the engine has no input {name:?} (its inputs: {})",
                    names(engine_io, true)
                )
            })?;
        let b = binding(t, name)?;
        if &b.shape != shape {
            return Err(format!(
                "input {name:?}: the engine takes {:?} but the cell feeds {shape:?}",
                b.shape
            ));
        }
        inputs.push(b);
    }
    if let Some(t) = engine_io
        .iter()
        .find(|t| t.is_input && !model_inputs.iter().any(|(n, _)| *n == t.name))
    {
        return Err(format!(
            "the engine has an input {:?} the model does not list (model inputs: {})",
            t.name,
            model_inputs
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut outputs = Vec::new();
    for name in model_outputs {
        // The ONNX parser renames an output that shares an input's name to "__" + name.
        let renamed = format!("__{name}");
        let t = engine_io
            .iter()
            .find(|t| !t.is_input && &t.name == name)
            .or_else(|| engine_io.iter().find(|t| !t.is_input && t.name == renamed))
            .ok_or_else(|| {
                format!(
                    "the engine has no output {name:?} (its outputs: {})",
                    names(engine_io, false)
                )
            })?;
        outputs.push(binding(t, name)?);
    }
    let extra_outputs = engine_io
        .iter()
        .filter(|t| !t.is_input && !outputs.iter().any(|b| b.engine_name == t.name))
        .map(|t| binding(t, &t.name))
        .collect::<Result<_, _>>()?;
    Ok(IoPlan {
        inputs,
        outputs,
        extra_outputs,
    })
}

fn names(io: &[IoTensor], inputs: bool) -> String {
    let n: Vec<&str> = io
        .iter()
        .filter(|t| t.is_input == inputs)
        .map(|t| t.name.as_str())
        .collect();
    if n.is_empty() {
        "none".into()
    } else {
        n.join(", ")
    }
}

/// The inputs whose engine shape has a dynamic dimension (they need `setInputShape`).
pub fn dynamic_inputs(engine_io: &[IoTensor]) -> Vec<&str> {
    engine_io
        .iter()
        .filter(|t| t.is_input && t.dims.iter().any(|d| *d < 0))
        .map(|t| t.name.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(name: &str, is_input: bool, dtype: i32, dims: &[i64]) -> IoTensor {
        IoTensor {
            name: name.into(),
            is_input,
            dtype: TrtDataType::from_raw(dtype),
            dims: dims.to_vec(),
        }
    }

    #[test]
    fn buffers_are_sized_per_data_type() {
        // A BERT-style encoder: int64 ids and mask, a float output.
        let engine = [
            io("input_ids", true, 8, &[2, 128]),
            io("attention_mask", true, 3, &[2, 128]),
            io("logits", false, 1, &[2, 2]),
        ];
        let p = plan(
            &engine,
            &[
                ("input_ids".into(), vec![2, 128]),
                ("attention_mask".into(), vec![2, 128]),
            ],
            &["logits".into()],
        )
        .unwrap();
        assert_eq!(p.inputs[0].bytes, 2 * 128 * 8);
        assert_eq!(p.inputs[1].bytes, 2 * 128 * 4);
        assert_eq!(p.outputs[0].bytes, 2 * 2 * 2);
    }

    #[test]
    fn an_output_renamed_by_the_parser_is_found() {
        let engine = [io("x", true, 0, &[1, 4]), io("__x", false, 0, &[1, 4])];
        let p = plan(&engine, &[("x".into(), vec![1, 4])], &["x".into()]).unwrap();
        assert_eq!(p.outputs[0].engine_name, "__x");
        assert_eq!(p.outputs[0].model_name, "x");
    }

    #[test]
    fn unfeedable_types_and_missing_tensors_are_named() {
        let engine = [io("x", true, 9, &[1, 4]), io("y", false, 0, &[1])];
        let e = plan(&engine, &[("x".into(), vec![1, 4])], &["y".into()]).unwrap_err();
        assert!(e.contains("input \"x\"") && e.contains("kINT4"), "{e}");
        let engine = [io("x", true, 0, &[1, 4]), io("y", false, 0, &[1])];
        let e = plan(&engine, &[("x".into(), vec![1, 4])], &["z".into()]).unwrap_err();
        assert!(
            e.contains("no output \"z\"") && e.contains("its outputs: y"),
            "{e}"
        );
        let e = plan(&engine, &[("x".into(), vec![2, 4])], &["y".into()]).unwrap_err();
        assert!(
            e.contains("takes [1, 4]") && e.contains("feeds [2, 4]"),
            "{e}"
        );
        let engine = [io("x", true, 0, &[1, -1]), io("y", false, 0, &[1])];
        assert_eq!(dynamic_inputs(&engine), vec!["x"]);
        let e = plan(&engine, &[("x".into(), vec![1, 4])], &["y".into()]).unwrap_err();
        assert!(e.contains("dynamic dimension at axis 1"), "{e}");
    }

    #[test]
    fn extra_engine_outputs_are_bound_too() {
        let engine = [
            io("x", true, 0, &[1]),
            io("y", false, 0, &[1]),
            io("aux", false, 3, &[3]),
        ];
        let p = plan(&engine, &[("x".into(), vec![1])], &["y".into()]).unwrap();
        assert_eq!(p.extra_outputs.len(), 1);
        assert_eq!(p.extra_outputs[0].bytes, 12);
    }

    #[test]
    fn conversions_round_trip() {
        let v = [0.0f32, 1.0, -2.0, 3.5, 1000.0];
        for dt in [0, 1, 7] {
            let t = TrtDataType::from_raw(dt);
            assert_eq!(t.decode(&t.encode(&v)), v.to_vec(), "{}", t.name());
        }
        let ids = [0.0f32, 101.0, 30521.0, 16_777_215.0];
        for dt in [3, 8] {
            let t = TrtDataType::from_raw(dt);
            assert_eq!(t.encode(&ids).len(), ids.len() * t.element_bytes().unwrap());
            assert_eq!(t.decode(&t.encode(&ids)), ids.to_vec(), "{}", t.name());
        }
        let b = TrtDataType::Bool;
        assert_eq!(b.decode(&b.encode(&[0.0, 2.0, -1.0])), vec![0.0, 1.0, 1.0]);
        let i8t = TrtDataType::Int8;
        assert_eq!(
            i8t.decode(&i8t.encode(&[-128.0, 127.0])),
            vec![-128.0, 127.0]
        );
        assert_eq!(TrtDataType::Fp8.element_bytes(), None);
    }
}
