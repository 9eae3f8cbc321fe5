//! `calibench to-fp16`: the fp16-typed model TensorRT 11 builds fp16 engines from.

use anyhow::Context;
use calibench::cache::CalibrationCache;
use calibench::matrix::Precision;
use calibench::model::onnx::OnnxModel;
use calibench::model::{fp16, precision, qdq};

use super::Outcome;
use crate::cli::ToFp16Args;

pub fn to_fp16(args: &ToFp16Args) -> anyhow::Result<Outcome> {
    let mut model = OnnxModel::load(&args.model)?;
    if let Some(path) = &args.cache {
        let cache = CalibrationCache::read(path)?;
        let plan = precision::plan(&model, Precision::Int8, Some(&cache));
        model = qdq::apply(&model, &plan);
    }
    let converted = fp16::apply(&model);
    std::fs::write(&args.output, converted.to_bytes())
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!(
        "wrote {} ({} float initializers as float16, fp32 inputs and outputs kept)",
        args.output.display(),
        converted
            .graph()
            .initializer
            .iter()
            .filter(|i| i.data_type == tract_onnx::pb::tensor_proto::DataType::Float16 as i32)
            .count()
    );
    Ok(Outcome::Ok)
}
