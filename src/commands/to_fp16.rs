//! `calibench to-fp16`: the fp16-typed model TensorRT 11 builds fp16 engines from.

use anyhow::Context;
use calibench::model::fp16;
use calibench::model::onnx::OnnxModel;

use super::Outcome;
use crate::cli::ToFp16Args;

pub fn to_fp16(args: &ToFp16Args) -> anyhow::Result<Outcome> {
    let model = OnnxModel::load(&args.model)?;
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
