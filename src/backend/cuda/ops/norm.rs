//! BatchNormalization (inference form).

use tract_onnx::pb;

use super::{NodeCtx, OpFamily};
use crate::backend::cuda::graph::{attr_float, Layer, Planner, Value};

/// BatchNormalization.
pub(crate) struct NormFamily;

impl OpFamily for NormFamily {
    fn ops(&self) -> &'static [&'static str] {
        &["BatchNormalization"]
    }

    fn plan(&self, p: &mut Planner<'_>, n: &NodeCtx<'_>) -> Result<Option<Value>, String> {
        p.batch_norm(n.node, n.name.clone(), n.q).map(Some)
    }
}

impl Planner<'_> {
    /// BatchNormalization (inference form): folded into the Conv before it when that Conv's
    /// output is read only here and is not quantized; a per-channel affine layer otherwise.
    fn batch_norm(&mut self, node: &pb::NodeProto, name: String, q: f32) -> Result<Value, String> {
        let x = self.input(node, 0)?;
        let eps = attr_float(node, "epsilon").unwrap_or(1e-5);
        let param = |i: usize| self.constant(node, i).map(|(d, _)| d);
        let (gamma, beta, mean, var) = (param(1)?, param(2)?, param(3)?, param(4)?);
        let channels = x.shape.get(1).copied().unwrap_or(0);
        if [&gamma, &beta, &mean, &var]
            .iter()
            .any(|p| p.len() != channels)
        {
            return Err(format!(
                "parameters must have {channels} elements (input {:?})",
                x.shape
            ));
        }
        let scale: Vec<f32> = gamma
            .iter()
            .zip(&var)
            .map(|(g, v)| g / (v + eps).sqrt())
            .collect();
        let shift: Vec<f32> = (0..channels)
            .map(|c| beta[c] - mean[c] * scale[c])
            .collect();
        let sole = self.sole_reader(&node.input[0]);
        if let Some(Layer::Conv {
            y,
            w,
            b,
            relu: false,
            q: conv_q,
            int8: None,
            g,
            ..
        }) = self.plan.layers.last()
        {
            if *y == x.buffer && sole && g.cout == channels && *conv_q == 0.0 {
                let (w_old, b_old, per) = (*w, *b, g.patch());
                let weights = &self.plan.weights;
                let folded: Vec<f32> = weights[w_old]
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v * scale[i / per])
                    .collect();
                let bias: Vec<f32> = (0..channels)
                    .map(|c| b_old.map_or(0.0, |b| weights[b][c]) * scale[c] + shift[c])
                    .collect();
                let (nw, nb) = (self.add_weight(folded), self.add_weight(bias));
                if let Some(Layer::Conv { w, b, q: lq, .. }) = self.plan.layers.last_mut() {
                    (*w, *b, *lq) = (nw, Some(nb), q);
                }
                return Ok(Value { q, ..x });
            }
        }
        let len: usize = x.shape.iter().product();
        let inner = x.shape[2..].iter().product();
        let (scale, shift) = (self.add_weight(scale), self.add_weight(shift));
        let y = self.plan.new_buffer(len);
        self.push(
            name,
            Layer::Affine {
                x: x.buffer,
                y,
                scale,
                shift,
                channels,
                inner,
                len,
                q,
            },
        );
        Ok(Value {
            buffer: y,
            shape: x.shape,
            q,
        })
    }
}
