//! Plan-time constant folding: what exported graphs compute from weights and static shapes
//! alone (Constant nodes, Shape → Gather → Unsqueeze → Concat chains feeding Reshape, Cast and
//! arithmetic of constants) is evaluated while planning, so no layer runs for it and the layers
//! that read it (a Reshape's target, a Clip's bounds, a weight) see a constant.

use tract_onnx::pb;

use super::{broadcast, NodeCtx, OpFamily};
use crate::backend::cuda::graph::{Planner, Value};
use crate::model::onnx::attr_int;

/// Elements of a folded constant.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ConstData {
    /// Float tensors (float32, float16 and double are all held as f32).
    F32(Vec<f32>),
    /// Integer and boolean tensors.
    I64(Vec<i64>),
}

/// A constant known at plan time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConstTensor {
    pub dims: Vec<usize>,
    pub data: ConstData,
}

impl ConstTensor {
    /// A 1-D integer tensor.
    pub fn ints_1d(v: Vec<i64>) -> ConstTensor {
        ConstTensor {
            dims: vec![v.len()],
            data: ConstData::I64(v),
        }
    }

    /// Its elements as integers (float elements must be whole numbers).
    pub fn ints(&self) -> Result<Vec<i64>, String> {
        match &self.data {
            ConstData::I64(v) => Ok(v.clone()),
            ConstData::F32(v) if v.iter().all(|x| x.fract() == 0.0) => {
                Ok(v.iter().map(|&x| x as i64).collect())
            }
            ConstData::F32(_) => Err("expected integers, found fractional floats".into()),
        }
    }

    /// Its elements as f32.
    pub fn floats(&self) -> Vec<f32> {
        match &self.data {
            ConstData::F32(v) => v.clone(),
            ConstData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    fn len(&self) -> usize {
        match &self.data {
            ConstData::F32(v) => v.len(),
            ConstData::I64(v) => v.len(),
        }
    }

    /// The same data, other dims (element count unchanged).
    fn with_dims(&self, dims: Vec<usize>) -> ConstTensor {
        ConstTensor {
            dims,
            data: self.data.clone(),
        }
    }

    /// Elements at `indices` of the flattened tensor, into `dims`.
    fn pick(&self, indices: &[usize], dims: Vec<usize>) -> ConstTensor {
        let data = match &self.data {
            ConstData::F32(v) => ConstData::F32(indices.iter().map(|&i| v[i]).collect()),
            ConstData::I64(v) => ConstData::I64(indices.iter().map(|&i| v[i]).collect()),
        };
        ConstTensor { dims, data }
    }

    /// A tensor proto's elements, for the types plans read (float, float16, double and the
    /// integer types); `None` for others.
    pub fn from_proto(t: &pb::TensorProto) -> Option<ConstTensor> {
        let dims = t.dims.iter().map(|&d| d.max(0) as usize).collect();
        let raw = &t.raw_data;
        let data = match t.data_type {
            1 => ConstData::F32(crate::model::onnx::float_data(t)?),
            10 if !raw.is_empty() => ConstData::F32(
                raw.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            10 => ConstData::F32(
                t.int32_data
                    .iter()
                    .map(|&b| half::f16::from_bits(b as u16).to_f32())
                    .collect(),
            ),
            11 if !raw.is_empty() => ConstData::F32(
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                    .collect(),
            ),
            11 => ConstData::F32(t.double_data.iter().map(|&d| d as f32).collect()),
            7 if !raw.is_empty() => ConstData::I64(
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            ),
            7 => ConstData::I64(t.int64_data.clone()),
            6 if !raw.is_empty() => ConstData::I64(
                raw.chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
                    .collect(),
            ),
            2..=6 | 9 if !raw.is_empty() && t.data_type != 6 => {
                let width = match t.data_type {
                    4 | 5 => 2,
                    _ => 1,
                };
                ConstData::I64(
                    raw.chunks_exact(width)
                        .map(|c| match (t.data_type, width) {
                            (3, _) => c[0] as i8 as i64,
                            (4, _) => u16::from_le_bytes([c[0], c[1]]) as i64,
                            (5, _) => i16::from_le_bytes([c[0], c[1]]) as i64,
                            _ => c[0] as i64,
                        })
                        .collect(),
                )
            }
            2..=6 | 9 => ConstData::I64(t.int32_data.iter().map(|&v| v as i64).collect()),
            _ => return None,
        };
        let c = ConstTensor { dims, data };
        (c.len() == c.dims.iter().product::<usize>()).then_some(c)
    }
}

/// Constant, Shape, Gather, Cast, ConstantOfShape, Range.
pub(crate) struct Folding;

impl OpFamily for Folding {
    fn ops(&self) -> &'static [&'static str] {
        &[
            "Constant",
            "Shape",
            "Gather",
            "Slice",
            "Cast",
            "ConstantOfShape",
            "Range",
        ]
    }

    fn plan(&self, p: &mut Planner<'_>, n: &NodeCtx<'_>) -> Result<Option<Value>, String> {
        let node = n.node;
        let folded = match node.op_type.as_str() {
            "Constant" => constant_node(node)?,
            "Shape" => {
                let dims = match p.const_input(node, 0) {
                    Ok(c) => c.dims,
                    Err(_) => p.input(node, 0)?.shape,
                };
                let rank = dims.len() as i64;
                let at = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
                let start = at(attr_int(node, "start").unwrap_or(0));
                let end = at(attr_int(node, "end").unwrap_or(rank));
                let dims = &dims[start..end.max(start)];
                ConstTensor::ints_1d(dims.iter().map(|&d| d as i64).collect())
            }
            "Cast" => {
                let to = attr_int(node, "to").unwrap_or(1);
                let float = matches!(to, 1 | 10 | 11 | 16);
                if !p.is_constant(node, 0) {
                    let x = p.input(node, 0)?;
                    if to == 10 {
                        // To float16 on the data path: rounded as the cast rounds.
                        let op = crate::backend::cuda::graph::UnaryOp::ToFp16;
                        return Ok(Some(p.unary(n.name.clone(), x.buffer, x.shape, op, n.q)));
                    }
                    if float {
                        // To float or double: the engine's type decides.
                        return Ok(Some(x));
                    }
                    return Err(format!(
                        "Cast of an activation to type {to} is not supported (float casts only)"
                    ));
                }
                let c = p.const_input(node, 0)?;
                let data = if float {
                    ConstData::F32(c.floats())
                } else if let ConstData::F32(v) = &c.data {
                    ConstData::I64(v.iter().map(|&x| x.trunc() as i64).collect())
                } else {
                    c.data.clone()
                };
                ConstTensor { dims: c.dims, data }
            }
            "Gather" => {
                if !p.is_constant(node, 0) {
                    return Err(
                        "Gather of an activation is not supported yet (only of constants and shapes)"
                            .into(),
                    );
                }
                gather(
                    &p.const_input(node, 0)?,
                    &p.const_input(node, 1)?,
                    attr_int(node, "axis").unwrap_or(0),
                )?
            }
            "ConstantOfShape" => {
                let dims: Vec<usize> = p
                    .const_input(node, 0)?
                    .ints()?
                    .iter()
                    .map(|&d| d.max(0) as usize)
                    .collect();
                let value = node
                    .attribute
                    .iter()
                    .find(|a| a.name == "value")
                    .and_then(|a| a.t.as_ref())
                    .and_then(ConstTensor::from_proto)
                    .unwrap_or(ConstTensor {
                        dims: vec![1],
                        data: ConstData::F32(vec![0.0]),
                    });
                let len = dims.iter().product();
                let data = match value.data {
                    ConstData::F32(v) => ConstData::F32(vec![v[0]; len]),
                    ConstData::I64(v) => ConstData::I64(vec![v[0]; len]),
                };
                ConstTensor { dims, data }
            }
            _ => {
                let (start, limit, delta) = (
                    p.const_input(node, 0)?,
                    p.const_input(node, 1)?,
                    p.const_input(node, 2)?,
                );
                range(&start, &limit, &delta)?
            }
        };
        p.fold(node, folded);
        Ok(None)
    }
}

/// A Constant node's value.
fn constant_node(node: &pb::NodeProto) -> Result<ConstTensor, String> {
    let a = node.attribute.first().ok_or("no value")?;
    Ok(match a.name.as_str() {
        "value" => {
            a.t.as_ref()
                .and_then(ConstTensor::from_proto)
                .ok_or("a value of a type the cuda backend does not read")?
        }
        "value_float" => ConstTensor {
            dims: vec![],
            data: ConstData::F32(vec![a.f]),
        },
        "value_floats" => ConstTensor {
            dims: vec![a.floats.len()],
            data: ConstData::F32(a.floats.clone()),
        },
        "value_int" => ConstTensor {
            dims: vec![],
            data: ConstData::I64(vec![a.i]),
        },
        "value_ints" => ConstTensor::ints_1d(a.ints.clone()),
        other => return Err(format!("Constant {other} is not supported")),
    })
}

/// Row-major strides of `dims`.
pub(crate) fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

fn axis_of(axis: i64, rank: usize) -> Result<usize, String> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank.max(1) {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// ONNX Gather along `axis`.
fn gather(data: &ConstTensor, indices: &ConstTensor, axis: i64) -> Result<ConstTensor, String> {
    let axis = axis_of(axis, data.dims.len())?;
    let n = data.dims[axis] as i64;
    let idx: Vec<usize> = indices
        .ints()?
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + n } else { i };
            (0..n)
                .contains(&j)
                .then_some(j as usize)
                .ok_or(format!("index {i} out of range {n}"))
        })
        .collect::<Result<_, _>>()?;
    let outer: usize = data.dims[..axis].iter().product();
    let inner: usize = data.dims[axis + 1..].iter().product();
    let mut picks = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in &idx {
            for k in 0..inner {
                picks.push((o * data.dims[axis] + i) * inner + k);
            }
        }
    }
    let mut dims = data.dims[..axis].to_vec();
    dims.extend(&indices.dims);
    dims.extend(&data.dims[axis + 1..]);
    Ok(data.pick(&picks, dims))
}

/// A Slice node's starts, ends, axes and steps (inputs from opset 10, attributes before).
#[allow(clippy::type_complexity)]
pub(crate) fn slice_args(
    p: &Planner<'_>,
    node: &pb::NodeProto,
) -> Result<(Vec<i64>, Vec<i64>, Option<Vec<i64>>, Option<Vec<i64>>), String> {
    let arg = |i: usize, attr: &str| -> Result<Option<Vec<i64>>, String> {
        if p.opset < 10 {
            return Ok(crate::backend::cuda::graph::ints_i64(node, attr));
        }
        match node.input.get(i).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(_) => p.const_input(node, i)?.ints().map(Some),
        }
    };
    Ok((
        arg(1, "starts")?.ok_or("no starts")?,
        arg(2, "ends")?.ok_or("no ends")?,
        arg(3, "axes")?,
        arg(4, "steps")?,
    ))
}

/// A Slice of a constant.
pub(crate) fn slice_node(p: &Planner<'_>, node: &pb::NodeProto) -> Result<ConstTensor, String> {
    let data = p.const_input(node, 0)?;
    let (starts, ends, axes, steps) = slice_args(p, node)?;
    slice(&data, &starts, &ends, axes.as_deref(), steps.as_deref())
}

/// Per axis of `dims`, the (first index, count, step) a Slice keeps (negative indices,
/// clamping and negative steps as ONNX defines them).
pub(crate) fn slice_ranges(
    dims: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Vec<(i64, usize, i64)>, String> {
    let rank = dims.len();
    let mut ranges: Vec<(i64, usize, i64)> = dims.iter().map(|&d| (0, d, 1)).collect();
    for (j, (&s, &e)) in starts.iter().zip(ends).enumerate() {
        let axis = axis_of(axes.map_or(j as i64, |a| a[j]), rank)?;
        let step = steps.map_or(1, |s| s[j]);
        if step == 0 {
            return Err("Slice step 0".into());
        }
        let d = dims[axis] as i64;
        let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (s, e) = if step > 0 {
            (norm(s).clamp(0, d), norm(e).clamp(0, d))
        } else {
            (norm(s).clamp(-1, d - 1), norm(e).clamp(-1, d - 1))
        };
        let count = if step > 0 {
            ((e - s).max(0) + step - 1) / step
        } else {
            ((s - e).max(0) - step - 1) / -step
        };
        ranges[axis] = (s, count as usize, step);
    }
    Ok(ranges)
}

/// ONNX Slice of a constant.
fn slice(
    data: &ConstTensor,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<ConstTensor, String> {
    let ranges = slice_ranges(&data.dims, starts, ends, axes, steps)?;
    let dims: Vec<usize> = ranges.iter().map(|r| r.1).collect();
    let st = strides(&data.dims);
    let mut picks = vec![0usize];
    for (axis, &(start, count, step)) in ranges.iter().enumerate() {
        let stride = st[axis] as i64;
        picks = picks
            .iter()
            .flat_map(|&base| {
                (0..count as i64).map(move |k| (base as i64 + (start + k * step) * stride) as usize)
            })
            .collect();
    }
    Ok(data.pick(&picks, dims))
}

/// ONNX Range.
fn range(
    start: &ConstTensor,
    limit: &ConstTensor,
    delta: &ConstTensor,
) -> Result<ConstTensor, String> {
    let (s, l, d) = (start.floats()[0], limit.floats()[0], delta.floats()[0]);
    if d == 0.0 {
        return Err("Range delta 0".into());
    }
    let n = ((l - s) / d).ceil().max(0.0) as usize;
    let values = (0..n).map(|i| s + i as f32 * d);
    Ok(match start.data {
        ConstData::I64(_) => ConstTensor::ints_1d(values.map(|v| v as i64).collect()),
        ConstData::F32(_) => ConstTensor {
            dims: vec![n],
            data: ConstData::F32(values.collect()),
        },
    })
}

/// Binary arithmetic of two constants, with numpy broadcasting.
pub(crate) fn binary(op: &str, a: &ConstTensor, b: &ConstTensor) -> Result<ConstTensor, String> {
    let dims = broadcast(&a.dims, &b.dims)?;
    let rank = dims.len();
    let index = |t: &ConstTensor, flat: usize| -> usize {
        let st = strides(&dims);
        let own = strides(&t.dims);
        let off = rank - t.dims.len();
        (0..t.dims.len())
            .map(|k| {
                let i = (flat / st[k + off]) % dims[k + off];
                if t.dims[k] == 1 {
                    0
                } else {
                    i * own[k]
                }
            })
            .sum()
    };
    let len: usize = dims.iter().product();
    let data = match (&a.data, &b.data) {
        (ConstData::I64(x), ConstData::I64(y)) => ConstData::I64(
            (0..len)
                .map(|i| {
                    let (u, v) = (x[index(a, i)], y[index(b, i)]);
                    match op {
                        "Add" => Ok(u + v),
                        "Sub" => Ok(u - v),
                        "Mul" => Ok(u * v),
                        // Integer division truncates toward zero (onnx's reference).
                        "Div" if v != 0 => Ok(u / v),
                        "Max" => Ok(u.max(v)),
                        "Min" => Ok(u.min(v)),
                        "Pow" => Ok(u.pow(v.clamp(0, 63) as u32)),
                        _ => Err(format!("{op} of integer constants")),
                    }
                })
                .collect::<Result<_, String>>()?,
        ),
        _ => {
            let (x, y) = (a.floats(), b.floats());
            ConstData::F32(
                (0..len)
                    .map(|i| {
                        let (u, v) = (x[index(a, i)], y[index(b, i)]);
                        match op {
                            "Add" => u + v,
                            "Sub" => u - v,
                            "Mul" => u * v,
                            "Div" => u / v,
                            "Max" => u.max(v),
                            "Min" => u.min(v),
                            _ => u.powf(v),
                        }
                    })
                    .collect(),
            )
        }
    };
    Ok(ConstTensor { dims, data })
}

/// The axes of a Squeeze/Unsqueeze: the attribute before opset 13, the input from 13.
pub(crate) fn axes_of(p: &Planner<'_>, node: &pb::NodeProto) -> Result<Vec<i64>, String> {
    if let Some(a) = crate::backend::cuda::graph::ints_i64(node, "axes") {
        return Ok(a);
    }
    match node.input.get(1).filter(|s| !s.is_empty()) {
        Some(_) => p.const_input(node, 1)?.ints(),
        None => Ok(Vec::new()),
    }
}

/// The shape after Squeeze (no axes: every 1) or Unsqueeze.
pub(crate) fn squeezed(op: &str, shape: &[usize], axes: &[i64]) -> Result<Vec<usize>, String> {
    if op == "Squeeze" {
        let rank = shape.len();
        let drop: Vec<usize> = axes
            .iter()
            .map(|&a| axis_of(a, rank))
            .collect::<Result<_, _>>()?;
        if drop.iter().any(|&a| shape[a] != 1) {
            return Err(format!(
                "Squeeze of a dimension that is not 1: {shape:?} {axes:?}"
            ));
        }
        Ok(shape
            .iter()
            .enumerate()
            .filter(|(i, d)| {
                if drop.is_empty() {
                    **d != 1
                } else {
                    !drop.contains(i)
                }
            })
            .map(|(_, d)| *d)
            .collect())
    } else {
        let rank = shape.len() + axes.len();
        let mut put: Vec<usize> = axes
            .iter()
            .map(|&a| axis_of(a, rank))
            .collect::<Result<_, _>>()?;
        put.sort_unstable();
        let mut out = Vec::with_capacity(rank);
        let mut rest = shape.iter();
        for i in 0..rank {
            if put.contains(&i) {
                out.push(1);
            } else {
                out.push(*rest.next().ok_or("Unsqueeze axes repeat")?);
            }
        }
        Ok(out)
    }
}

/// Reshape, Flatten, Squeeze, Unsqueeze, Identity or Concat of constants.
pub(crate) fn view_or_concat(p: &Planner<'_>, node: &pb::NodeProto) -> Result<ConstTensor, String> {
    let x = p.const_input(node, 0)?;
    Ok(match node.op_type.as_str() {
        "Identity" => x,
        "Squeeze" | "Unsqueeze" => {
            let axes = axes_of(p, node)?;
            x.with_dims(squeezed(&node.op_type, &x.dims, &axes)?)
        }
        "Flatten" => {
            let axis = axis_of(attr_int(node, "axis").unwrap_or(1), x.dims.len() + 1)?;
            let head: usize = x.dims[..axis].iter().product();
            x.with_dims(vec![head, x.len() / head.max(1)])
        }
        "Reshape" => {
            let target = p.const_input(node, 1)?.ints()?;
            x.with_dims(super::reshape(&x.dims, &target)?)
        }
        _ => {
            let parts: Vec<ConstTensor> = (0..node.input.len())
                .map(|i| p.const_input(node, i))
                .collect::<Result<_, _>>()?;
            concat(&parts, attr_int(node, "axis").ok_or("no axis")?)?
        }
    })
}

/// ONNX Concat of constants.
fn concat(parts: &[ConstTensor], axis: i64) -> Result<ConstTensor, String> {
    let first = parts.first().ok_or("no inputs")?;
    let axis = axis_of(axis, first.dims.len())?;
    let outer: usize = first.dims[..axis].iter().product();
    let mut dims = first.dims.clone();
    dims[axis] = parts
        .iter()
        .map(|t| t.dims.get(axis).copied().unwrap_or(0))
        .sum();
    let ints = parts.iter().all(|t| matches!(t.data, ConstData::I64(_)));
    let mut f = Vec::new();
    let mut i = Vec::new();
    for o in 0..outer {
        for t in parts {
            let chunk = t.len() / outer.max(1);
            match (&t.data, ints) {
                (ConstData::I64(v), true) => i.extend_from_slice(&v[o * chunk..(o + 1) * chunk]),
                _ => f.extend_from_slice(&t.floats()[o * chunk..(o + 1) * chunk]),
            }
        }
    }
    Ok(ConstTensor {
        dims,
        data: if ints {
            ConstData::I64(i)
        } else {
            ConstData::F32(f)
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(dims: Vec<usize>, v: Vec<i64>) -> ConstTensor {
        ConstTensor {
            dims,
            data: ConstData::I64(v),
        }
    }

    #[test]
    fn gather_slice_and_concat_follow_onnx() {
        let shape = ConstTensor::ints_1d(vec![8, 2048, 1, 1]);
        // torch's x.view(x.size(0), -1): Shape → Gather(0) → Unsqueeze → Concat with [-1].
        let batch = gather(&shape, &ints(vec![], vec![0]), 0).unwrap();
        assert_eq!(batch, ints(vec![], vec![8]));
        let b1 = batch.with_dims(squeezed("Unsqueeze", &batch.dims, &[0]).unwrap());
        let target = concat(&[b1, ConstTensor::ints_1d(vec![-1])], 0).unwrap();
        assert_eq!(target, ConstTensor::ints_1d(vec![8, -1]));
        let m = ints(vec![2, 3], vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(
            gather(&m, &ints(vec![1], vec![-1]), 1).unwrap(),
            ints(vec![2, 1], vec![3, 6])
        );
        assert_eq!(
            slice(&shape, &[-2], &[i64::MAX], None, None).unwrap(),
            ConstTensor::ints_1d(vec![1, 1])
        );
        assert_eq!(
            slice(&m, &[2], &[-4], Some(&[1]), Some(&[-1])).unwrap(),
            ints(vec![2, 3], vec![3, 2, 1, 6, 5, 4])
        );
        assert_eq!(
            squeezed("Squeeze", &[8, 2048, 1, 1], &[]).unwrap(),
            vec![8, 2048]
        );
        assert!(squeezed("Squeeze", &[8, 2], &[1]).is_err());
    }

    #[test]
    fn arithmetic_of_constants_broadcasts() {
        let a = ints(vec![2, 1], vec![6, -7]);
        let b = ConstTensor::ints_1d(vec![2, 4]);
        assert_eq!(
            binary("Div", &a, &b).unwrap(),
            ints(vec![2, 2], vec![3, 1, -3, -1])
        );
        let f = binary(
            "Mul",
            &ConstTensor {
                dims: vec![],
                data: ConstData::F32(vec![0.5]),
            },
            &b,
        )
        .unwrap();
        assert_eq!(f.data, ConstData::F32(vec![1.0, 2.0]));
        assert_eq!(
            range(
                &ConstTensor::ints_1d(vec![0]),
                &ConstTensor::ints_1d(vec![5]),
                &ConstTensor::ints_1d(vec![2])
            )
            .unwrap(),
            ConstTensor::ints_1d(vec![0, 2, 4])
        );
    }
}
