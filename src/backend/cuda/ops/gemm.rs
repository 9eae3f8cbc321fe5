//! Gemm and MatMul with constant weights: cuBLASLt at the engine's float type, or its int8
//! form (per-output-channel int8 weights, the input quantized with its cache scale).

use tract_onnx::pb;

use super::{check_grid, NodeCtx, OpFamily};
use crate::backend::cuda::graph::{attr_float, Layer, Planner, Value, Window};
use crate::model::onnx::attr_int;

/// Gemm, MatMul.
pub(crate) struct GemmFamily;

impl OpFamily for GemmFamily {
    fn ops(&self) -> &'static [&'static str] {
        &["Gemm", "MatMul"]
    }

    fn plan(&self, p: &mut Planner<'_>, n: &NodeCtx<'_>) -> Result<Option<Value>, String> {
        p.gemm(n.index, n.node, n.name.clone(), n.q).map(Some)
    }
}

impl Planner<'_> {
    fn gemm(
        &mut self,
        index: usize,
        node: &pb::NodeProto,
        name: String,
        q: f32,
    ) -> Result<Value, String> {
        let x = self.input(node, 0)?;
        if !self.is_constant(node, 1) {
            return Err("the second input must be a constant weight (activation × activation products are not supported yet)".into());
        }
        let (mut w, wdims) = self.weight(node, 1)?.ok_or("no weights")?;
        let matmul = node.op_type == "MatMul";
        let mut b = if matmul { None } else { self.weight(node, 2)? };
        let trans_b = !matmul && attr_int(node, "transB").unwrap_or(0) == 1;
        if !matmul && attr_int(node, "transA").unwrap_or(0) != 0 {
            return Err("transA=1 is not supported yet".into());
        }
        // alpha·A·B + beta·C: alpha and beta are folded into the weights and the bias.
        let alpha = attr_float(node, "alpha").filter(|_| !matmul).unwrap_or(1.0);
        let beta = attr_float(node, "beta").filter(|_| !matmul).unwrap_or(1.0);
        if alpha != 1.0 {
            let scaled = self.plan.weights[w].iter().map(|v| v * alpha).collect();
            w = self.add_weight(scaled);
        }
        if let Some((bias, dims)) = b.as_ref().filter(|_| beta != 1.0) {
            let scaled = self.plan.weights[*bias].iter().map(|v| v * beta).collect();
            b = Some((self.add_weight(scaled), dims.clone()));
        }
        let rank_ok = if matmul {
            x.shape.len() >= 2
        } else {
            x.shape.len() == 2
        };
        if !rank_ok || wdims.len() != 2 {
            return Err(format!(
                "weights {wdims:?} with input {:?} are not supported (2-D weights and a {} input only)",
                x.shape,
                if matmul { "≥2-D" } else { "2-D" }
            ));
        }
        let (k, nout) = if trans_b {
            (wdims[1], wdims[0])
        } else {
            (wdims[0], wdims[1])
        };
        if x.shape[x.shape.len() - 1] != k {
            return Err(format!(
                "input {:?} does not match weights {wdims:?}",
                x.shape
            ));
        }
        if let Some((_, bdims)) = &b {
            if bdims.iter().product::<usize>() != nout {
                return Err(format!(
                    "bias {bdims:?} must have {nout} elements (per-output bias only)"
                ));
            }
        }
        let batch: usize = x.shape[..x.shape.len() - 1].iter().product();
        let mut shape = x.shape.clone();
        *shape.last_mut().expect("rank ≥ 2") = nout;
        self.reserve(&Window::dense(batch, k, nout), false);
        if self.int8_nodes.contains(&index) {
            // The int8 epilogue puts output channels and rows on the grid's y and z axes.
            check_grid(&Window::dense(batch, k, nout), true)?;
        }
        let int8 = self.int8_nodes.contains(&index).then(|| {
            let data = self.plan.weights[w].clone();
            self.int8_gemm(self.scale(&node.input[0]), &data, k, nout, trans_b)
        });
        let y = self.plan.new_buffer(batch * nout);
        let b = b.map(|(b, _)| b);
        let layer = Layer::Gemm {
            x: x.buffer,
            w,
            b,
            y,
            batch,
            k,
            nout,
            trans_b,
            relu: false,
            q_pre: 0.0,
            q,
            int8,
        };
        self.push(name, layer);
        Ok(Value {
            buffer: y,
            shape,
            q,
        })
    }
}
