//! Softmax over one axis (opset 13 and later), or over everything from the axis on (before 13).

use super::{NodeCtx, OpFamily};
use crate::backend::cuda::graph::{Layer, Planner, Value};
use crate::model::onnx::attr_int;

/// Softmax.
pub(crate) struct SoftmaxFamily;

impl OpFamily for SoftmaxFamily {
    fn ops(&self) -> &'static [&'static str] {
        &["Softmax"]
    }

    fn plan(&self, p: &mut Planner<'_>, n: &NodeCtx<'_>) -> Result<Option<Value>, String> {
        let x = p.input(n.node, 0)?;
        let rank = x.shape.len() as i64;
        let default = if p.opset >= 13 { -1 } else { 1 };
        let axis = attr_int(n.node, "axis").unwrap_or(default);
        let axis = if axis < 0 { axis + rank } else { axis } as usize;
        if axis >= x.shape.len() {
            return Err(format!("axis {axis} out of range for {:?}", x.shape));
        }
        let outer: usize = x.shape[..axis].iter().product();
        let (len, inner) = if p.opset >= 13 {
            (x.shape[axis], x.shape[axis + 1..].iter().product())
        } else {
            // Before opset 13 Softmax flattens everything from `axis` into one row.
            (x.shape[axis..].iter().product(), 1)
        };
        let y = p.plan.new_buffer(outer * len * inner);
        p.push(
            n.name.clone(),
            Layer::Softmax {
                x: x.buffer,
                y,
                outer,
                len,
                inner,
                q: n.q,
            },
        );
        Ok(Some(Value {
            buffer: y,
            shape: x.shape,
            q: n.q,
        }))
    }
}
