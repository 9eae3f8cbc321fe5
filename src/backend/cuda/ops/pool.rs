//! MaxPool, AveragePool and GlobalAveragePool over NCHW tensors (or NHWC codes between
//! tensor-core convolutions).

use tract_onnx::pb;

use super::{check_grid, window, NodeCtx, OpFamily};
use crate::backend::cuda::graph::{ints, Layer, Planner, Value, Window};
use crate::model::onnx::attr_int;

/// MaxPool, AveragePool, GlobalAveragePool.
pub(crate) struct PoolFamily;

impl OpFamily for PoolFamily {
    fn ops(&self) -> &'static [&'static str] {
        &["MaxPool", "AveragePool", "GlobalAveragePool"]
    }

    fn plan(&self, p: &mut Planner<'_>, n: &NodeCtx<'_>) -> Result<Option<Value>, String> {
        p.pool(n.node, n.name.clone(), n.q).map(Some)
    }
}

impl Planner<'_> {
    fn pool(&mut self, node: &pb::NodeProto, name: String, q: f32) -> Result<Value, String> {
        let x = self.input(node, 0)?;
        if ints(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1))
            || attr_int(node, "ceil_mode").unwrap_or(0) != 0
        {
            return Err("dilations and ceil_mode are not supported yet".into());
        }
        let c = x.shape.get(1).copied().unwrap_or(0);
        let g = if node.op_type == "GlobalAveragePool" {
            if x.shape.len() != 4 {
                return Err(format!("expects a 4-D NCHW input, got {:?}", x.shape));
            }
            let (h, w) = (x.shape[2], x.shape[3]);
            Window {
                n: x.shape[0],
                c,
                h,
                w,
                cout: c,
                kh: h,
                kw: w,
                sh: 1,
                sw: 1,
                ph: 0,
                pw: 0,
                oh: 1,
                ow: 1,
            }
        } else {
            let kernel = ints(node, "kernel_shape").ok_or("no kernel_shape")?;
            window(node, &x.shape, &kernel, c, [1, 1])?
        };
        check_grid(&g, false)?;
        let avg = node.op_type != "MaxPool";
        let count_include_pad = attr_int(node, "count_include_pad").unwrap_or(0) == 1;
        let y = self.plan.new_buffer(g.n * g.c * g.oh * g.ow);
        self.push(
            name,
            Layer::Pool {
                x: x.buffer,
                y,
                g,
                avg,
                count_include_pad,
                q,
            },
        );
        Ok(Value {
            buffer: y,
            shape: vec![g.n, g.c, g.oh, g.ow],
            q,
        })
    }
}
