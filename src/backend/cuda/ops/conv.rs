//! Conv: im2col + GEMM (cuBLASLt, or its int8 form with the cache's scales, or the tensor-core
//! implicit GEMM chosen by the layout pass) for ordinary convolutions; a direct kernel for
//! grouped (depthwise) and dilated ones, at the engine's float type — with int8 weights
//! simulated (quantized per output channel and dequantized at plan time) where the precision
//! plan makes the layer int8, so its numbers are those of an int8 layer.

use tract_onnx::pb;

use super::{check_grid, window, NodeCtx, OpFamily};
use crate::backend::cuda::graph::{ints, Layer, Planner, Value};
use crate::model::onnx::attr_int;
use crate::model::qdq::per_channel_scales;

/// Conv.
pub(crate) struct ConvFamily;

impl OpFamily for ConvFamily {
    fn ops(&self) -> &'static [&'static str] {
        &["Conv"]
    }

    fn plan(&self, p: &mut Planner<'_>, n: &NodeCtx<'_>) -> Result<Option<Value>, String> {
        p.conv(n.index, n.node, n.name.clone(), n.q).map(Some)
    }
}

impl Planner<'_> {
    fn conv(
        &mut self,
        index: usize,
        node: &pb::NodeProto,
        name: String,
        q: f32,
    ) -> Result<Value, String> {
        let x = self.input(node, 0)?;
        let (w, wdims) = self.weight(node, 1)?.ok_or("no weights")?;
        let b = self.weight(node, 2)?.map(|(b, _)| b);
        if wdims.len() != 4 {
            return Err(format!("expects 4-D weights, got {wdims:?}"));
        }
        let groups = attr_int(node, "group").unwrap_or(1);
        let dil = ints(node, "dilations").unwrap_or_else(|| vec![1, 1]);
        if groups < 1 || dil.len() != 2 || dil.contains(&0) {
            return Err(format!(
                "group {groups} and dilations {dil:?} are not valid"
            ));
        }
        let (groups, dil) = (groups as usize, [dil[0], dil[1]]);
        let g = window(node, &x.shape, &wdims[2..], wdims[0], dil)?;
        if wdims[1] * groups != g.c || !g.cout.is_multiple_of(groups) {
            return Err(format!(
                "weights {wdims:?} in {groups} group(s) do not match input {:?}",
                x.shape
            ));
        }
        if groups > 1 || dil != [1, 1] {
            return self.direct_conv(index, name, q, (x.buffer, w, b), g, groups, dil);
        }
        check_grid(&g, true)?;
        self.reserve(&g, true);
        let int8 = self.int8_nodes.contains(&index).then(|| {
            let data = self.plan.weights[w].clone();
            self.int8_gemm(self.scale(&node.input[0]), &data, g.patch(), g.cout, true)
        });
        let y = self.plan.new_buffer(g.cout * g.positions());
        let conv = Layer::Conv {
            x: x.buffer,
            w,
            b,
            y,
            g,
            relu: false,
            q_pre: 0.0,
            q,
            int8,
            mma: None,
        };
        self.push(name, conv);
        Ok(Value {
            buffer: y,
            shape: vec![g.n, g.cout, g.oh, g.ow],
            q,
        })
    }

    /// A grouped or dilated convolution on the direct kernel. Where the precision plan makes it
    /// int8, its weights are quantized per output channel and dequantized here (its input is
    /// already fake-quantized by the layer that wrote it), and the report says it ran at the
    /// engine's float type.
    #[allow(clippy::too_many_arguments)]
    fn direct_conv(
        &mut self,
        index: usize,
        name: String,
        q: f32,
        (x, w, b): (usize, usize, Option<usize>),
        g: crate::backend::cuda::graph::Window,
        groups: usize,
        dil: [usize; 2],
    ) -> Result<Value, String> {
        check_grid(&g, false)?;
        let mut w = w;
        if self.int8_nodes.contains(&index) {
            let per = g.patch() / groups;
            let data = &self.plan.weights[w];
            let scales = per_channel_scales(&[g.cout as i64, per as i64], data, 0);
            let simulated = data
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let s = scales[i / per];
                    if s > 0.0 {
                        (v / s).round_ties_even().clamp(-128.0, 127.0) * s
                    } else {
                        *v
                    }
                })
                .collect();
            w = self.add_weight(simulated);
            self.report_float(&name);
        }
        let y = self.plan.new_buffer(g.cout * g.positions());
        self.push(
            name,
            Layer::DirectConv {
                x,
                w,
                b,
                y,
                g,
                groups,
                dil,
                relu: false,
                q_pre: 0.0,
                q,
            },
        );
        Ok(Value {
            buffer: y,
            shape: vec![g.n, g.cout, g.oh, g.ow],
            q,
        })
    }
}
