//! Operators that change only how a tensor is viewed (Reshape, Flatten, Squeeze, Unsqueeze,
//! Identity: no layer unless the output takes another int8 scale), and Concat. On constant
//! inputs (shape arithmetic of exported graphs) they are folded at plan time.

use tract_onnx::pb;

use super::{fold, NodeCtx, OpFamily};
use crate::backend::cuda::graph::{Layer, Planner, UnaryOp, Value};
use crate::model::onnx::attr_int;

/// Reshape, Flatten, Squeeze, Unsqueeze, Identity, Concat.
pub(crate) struct ShapeFamily;

impl OpFamily for ShapeFamily {
    fn ops(&self) -> &'static [&'static str] {
        &[
            "Reshape",
            "Flatten",
            "Squeeze",
            "Unsqueeze",
            "Identity",
            "Concat",
        ]
    }

    fn plan(&self, p: &mut Planner<'_>, n: &NodeCtx<'_>) -> Result<Option<Value>, String> {
        let node = n.node;
        let op = node.op_type.as_str();
        let all_constant =
            (0..node.input.len()).all(|i| node.input[i].is_empty() || p.is_constant(node, i));
        if all_constant && !node.input.is_empty() {
            let folded = fold::view_or_concat(p, node)?;
            p.fold(node, folded);
            return Ok(None);
        }
        if op == "Concat" {
            return p.concat(node, n.name.clone(), n.q).map(Some);
        }
        let x = p.input(node, 0)?;
        let shape = match op {
            "Identity" => x.shape.clone(),
            "Squeeze" | "Unsqueeze" => {
                let axes = fold::axes_of(p, node)?;
                fold::squeezed(op, &x.shape, &axes)?
            }
            _ => p.reshaped(node, &x.shape)?,
        };
        Ok(Some(if n.q > 0.0 && n.q != x.q {
            p.unary(n.name.clone(), x.buffer, shape, UnaryOp::Identity, n.q)
        } else {
            Value { shape, ..x }
        }))
    }
}

impl Planner<'_> {
    fn concat(&mut self, node: &pb::NodeProto, name: String, q: f32) -> Result<Value, String> {
        let first = self.input(node, 0)?;
        let rank = first.shape.len() as i64;
        let axis = attr_int(node, "axis").ok_or("no axis")?;
        let axis = if axis < 0 { axis + rank } else { axis } as usize;
        if axis >= first.shape.len() {
            return Err(format!("axis {axis} out of range for {:?}", first.shape));
        }
        let outer: usize = first.shape[..axis].iter().product();
        let inner: usize = first.shape[axis + 1..].iter().product();
        let mut shape = first.shape.clone();
        shape[axis] = 0;
        let mut parts = Vec::new();
        for i in 0..node.input.len() {
            let v = self.input(node, i)?;
            let same = v.shape.len() == shape.len()
                && v.shape
                    .iter()
                    .zip(&shape)
                    .enumerate()
                    .all(|(d, (a, b))| d == axis || a == b);
            if !same {
                return Err(format!(
                    "input {i} {:?} does not match {:?} outside axis {axis}",
                    v.shape, first.shape
                ));
            }
            shape[axis] += v.shape[axis];
            parts.push((v.buffer, v.shape[axis] * inner));
        }
        let total = shape[axis] * inner;
        let y = self.plan.new_buffer(outer * total);
        self.push(
            name,
            Layer::Concat {
                parts,
                y,
                outer,
                total,
                q,
            },
        );
        Ok(Value {
            buffer: y,
            shape,
            q,
        })
    }

    fn reshaped(&self, node: &pb::NodeProto, shape: &[usize]) -> Result<Vec<usize>, String> {
        let total: usize = shape.iter().product();
        if node.op_type == "Flatten" {
            let axis = attr_int(node, "axis").unwrap_or(1);
            let axis = if axis < 0 {
                axis + shape.len() as i64
            } else {
                axis
            } as usize;
            let head: usize = shape[..axis.min(shape.len())].iter().product();
            return Ok(vec![head, total / head.max(1)]);
        }
        let target = self
            .const_input(node, 1)
            .map_err(|_| "the target shape must be a constant (or computed from shapes only)")?;
        reshape(shape, &target.ints()?)
    }
}

/// ONNX Reshape semantics: 0 copies the input dimension, one -1 takes the rest.
pub(crate) fn reshape(input: &[usize], target: &[i64]) -> Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    let mut shape: Vec<usize> = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            0 => shape.push(*input.get(i).ok_or("0 in the shape past the input's rank")?),
            -1 if infer.is_none() => {
                infer = Some(i);
                shape.push(1);
            }
            d if d > 0 => shape.push(d as usize),
            d => {
                return Err(format!(
                    "invalid dimension {d} in the target shape {target:?}"
                ))
            }
        }
    }
    let known: usize = shape.iter().product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {target:?}"));
        }
        shape[i] = total / known;
    }
    if shape.iter().product::<usize>() != total {
        return Err(format!("cannot reshape {input:?} to {target:?}"));
    }
    Ok(shape)
}
