//! Data movement: Transpose, Slice and Split of activations, each one strided copy (the same
//! kernel). Slices of constants are folded.

use super::{fold, NodeCtx, OpFamily};
use crate::backend::cuda::graph::{ints_i64, Layer, Planner, Value};
use crate::model::onnx::attr_int;

/// Transpose, Slice, Split.
pub(crate) struct Movement;

impl OpFamily for Movement {
    fn ops(&self) -> &'static [&'static str] {
        &["Transpose", "Slice", "Split"]
    }

    fn plan(&self, p: &mut Planner<'_>, n: &NodeCtx<'_>) -> Result<Option<Value>, String> {
        let node = n.node;
        if node.op_type == "Slice" && p.is_constant(node, 0) {
            let folded = fold::slice_node(p, node)?;
            p.fold(node, folded);
            return Ok(None);
        }
        let x = p.input(node, 0)?;
        let rank = x.shape.len();
        if rank > 6 {
            return Err(format!(
                "rank {rank} is more than the 6 dimensions it moves"
            ));
        }
        let strides: Vec<i64> = fold::strides(&x.shape).iter().map(|&s| s as i64).collect();
        match node.op_type.as_str() {
            "Transpose" => {
                let perm: Vec<usize> = match ints_i64(node, "perm") {
                    Some(p) => p.iter().map(|&a| a as usize).collect(),
                    None => (0..rank).rev().collect(),
                };
                let mut seen = perm.clone();
                seen.sort_unstable();
                if seen != (0..rank).collect::<Vec<_>>() {
                    return Err(format!("perm {perm:?} is not a permutation of {rank} axes"));
                }
                let dims: Vec<usize> = perm.iter().map(|&a| x.shape[a]).collect();
                let st: Vec<i64> = perm.iter().map(|&a| strides[a]).collect();
                Ok(Some(strided(p, n.name.clone(), &x, dims, st, 0, n.q)))
            }
            "Slice" => {
                let (starts, ends, axes, steps) = fold::slice_args(p, node)?;
                let ranges = fold::slice_ranges(
                    &x.shape,
                    &starts,
                    &ends,
                    axes.as_deref(),
                    steps.as_deref(),
                )?;
                let mut offset = 0i64;
                let (mut dims, mut st) = (Vec::new(), Vec::new());
                for (axis, &(start, count, step)) in ranges.iter().enumerate() {
                    offset += start * strides[axis];
                    dims.push(count);
                    st.push(step * strides[axis]);
                }
                Ok(Some(strided(
                    p,
                    n.name.clone(),
                    &x,
                    dims,
                    st,
                    offset as usize,
                    n.q,
                )))
            }
            _ => {
                let axis = attr_int(node, "axis").unwrap_or(0);
                let axis = (if axis < 0 { axis + rank as i64 } else { axis }) as usize;
                if axis >= rank {
                    return Err(format!("axis {axis} out of range for {:?}", x.shape));
                }
                let outputs = node.output.len();
                let total = x.shape[axis];
                let sizes: Vec<usize> = if let Some(s) = ints_i64(node, "split") {
                    s.iter().map(|&v| v.max(0) as usize).collect()
                } else if node.input.get(1).is_some_and(|s| !s.is_empty()) {
                    p.const_input(node, 1)?
                        .ints()?
                        .iter()
                        .map(|&v| v.max(0) as usize)
                        .collect()
                } else {
                    // Equal parts, the last one smaller (opset 18's num_outputs rule).
                    let part = total.div_ceil(outputs.max(1));
                    (0..outputs)
                        .map(|i| part.min(total.saturating_sub(i * part)))
                        .collect()
                };
                if sizes.len() != outputs || sizes.iter().sum::<usize>() != total {
                    return Err(format!(
                        "split {sizes:?} does not cut axis {axis} of {:?} into {outputs} parts",
                        x.shape
                    ));
                }
                let mut start = 0;
                for (i, size) in sizes.iter().enumerate() {
                    let mut dims = x.shape.clone();
                    dims[axis] = *size;
                    let q = p.scale(&node.output[i]);
                    let offset = start * strides[axis] as usize;
                    let v = strided(
                        p,
                        format!("{}[{i}]", n.name),
                        &x,
                        dims,
                        strides.clone(),
                        offset,
                        q,
                    );
                    p.set_value(node.output[i].clone(), v);
                    start += size;
                }
                Ok(None)
            }
        }
    }
}

/// One strided copy of `x` into a new buffer of `dims`.
fn strided(
    p: &mut Planner<'_>,
    name: String,
    x: &Value,
    dims: Vec<usize>,
    strides: Vec<i64>,
    offset: usize,
    q: f32,
) -> Value {
    let len: usize = dims.iter().product();
    let pad = 6 - dims.len();
    let mut d6 = [1usize; 6];
    let mut s6 = [0i64; 6];
    d6[pad..].copy_from_slice(&dims);
    s6[pad..].copy_from_slice(&strides);
    let y = p.plan.new_buffer(len);
    p.push(
        name,
        Layer::Strided {
            x: x.buffer,
            y,
            len,
            dims: d6,
            strides: s6,
            offset,
            q,
        },
    );
    Value {
        buffer: y,
        shape: dims,
        q,
    }
}
