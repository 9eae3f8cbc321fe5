//! Elementwise operators: unary activations (one kernel, an op code each) and binary
//! arithmetic with numpy broadcasting over up to four dimensions. Both also run over int8
//! NHWC codes between tensor-core convolutions. Binary operators of two constants are folded.

use tract_onnx::pb;

use super::{fold, NodeCtx, OpFamily};
use crate::backend::cuda::graph::{attr_float, BinaryOp, Layer, Operand, Planner, UnaryOp, Value};

/// Relu, Clip, Sigmoid, the other activations, and binary arithmetic.
pub(crate) struct Elementwise;

impl OpFamily for Elementwise {
    fn ops(&self) -> &'static [&'static str] {
        &[
            "Relu",
            "Clip",
            "Sigmoid",
            "Tanh",
            "LeakyRelu",
            "HardSigmoid",
            "HardSwish",
            "Erf",
            "Gelu",
            "Sqrt",
            "Exp",
            "Neg",
            "Abs",
            "Add",
            "Mul",
            "Sub",
            "Div",
            "Pow",
            "Max",
            "Min",
        ]
    }

    fn plan(&self, p: &mut Planner<'_>, n: &NodeCtx<'_>) -> Result<Option<Value>, String> {
        let node = n.node;
        let op_type = node.op_type.as_str();
        if BinaryOp::of(op_type).is_some() {
            if node.input.len() != 2 {
                return Err(format!("{} inputs (two only)", node.input.len()));
            }
            if p.is_constant(node, 0) && p.is_constant(node, 1) {
                let a = p.const_input(node, 0)?;
                let b = p.const_input(node, 1)?;
                p.fold(node, fold::binary(op_type, &a, &b)?);
                return Ok(None);
            }
            return p.binary(node, n.name.clone(), n.q).map(Some);
        }
        let x = p.input(node, 0)?;
        let alpha = |default: f32| attr_float(node, "alpha").unwrap_or(default);
        let op = match op_type {
            "Relu" => UnaryOp::Relu,
            "Sigmoid" => UnaryOp::Sigmoid,
            "Clip" => p.clip_bounds(node)?,
            "Tanh" => UnaryOp::Tanh,
            "LeakyRelu" => UnaryOp::LeakyRelu(alpha(0.01)),
            "HardSigmoid" => {
                UnaryOp::HardSigmoid(alpha(0.2), attr_float(node, "beta").unwrap_or(0.5))
            }
            "HardSwish" => UnaryOp::HardSwish,
            "Erf" => UnaryOp::Erf,
            "Gelu" => match crate::backend::cuda::graph::attr_str(node, "approximate").as_deref() {
                None | Some("none") => UnaryOp::Gelu,
                Some("tanh") => UnaryOp::GeluTanh,
                Some(other) => return Err(format!("approximate={other:?} is not a Gelu form")),
            },
            "Sqrt" => UnaryOp::Sqrt,
            "Exp" => UnaryOp::Exp,
            "Neg" => UnaryOp::Neg,
            _ => UnaryOp::Abs,
        };
        let out = node.output.first().cloned().unwrap_or_default();
        if op == UnaryOp::Relu && p.fuse_relu(&x, &node.input[0], n.q) {
            p.set_value(out, Value { q: n.q, ..x });
            return Ok(None);
        }
        Ok(Some(p.unary(n.name.clone(), x.buffer, x.shape, op, n.q)))
    }
}

impl Planner<'_> {
    /// An elementwise layer from buffer `x` into a new buffer of the same shape.
    pub(crate) fn unary(
        &mut self,
        name: String,
        x: usize,
        shape: Vec<usize>,
        op: UnaryOp,
        q: f32,
    ) -> Value {
        let len = shape.iter().product();
        let y = self.plan.new_buffer(len);
        self.push(name, Layer::Unary { x, y, len, op, q });
        Value {
            buffer: y,
            shape,
            q,
        }
    }

    /// Fuses a Relu into the Conv/Gemm just planned when that layer's output is read only
    /// here, or into the elementwise Binary just planned when its output is also not
    /// fake-quantized (the Relu then reads exactly what the Binary computes).
    pub(crate) fn fuse_relu(&mut self, x: &Value, tensor: &str, q: f32) -> bool {
        if !self.sole_reader(tensor) {
            return false;
        }
        if let Some(Layer::Binary { y, relu, q: lq, .. }) = self.plan.layers.last_mut() {
            if *y == x.buffer && !*relu && *lq == 0.0 {
                (*relu, *lq) = (true, q);
                return true;
            }
            return false;
        }
        if let Some(
            Layer::Conv {
                y,
                relu,
                q_pre,
                q: lq,
                ..
            }
            | Layer::Gemm {
                y,
                relu,
                q_pre,
                q: lq,
                ..
            },
        ) = self.plan.layers.last_mut()
        {
            if *y == x.buffer && !*relu {
                *relu = true;
                *q_pre = *lq;
                *lq = q;
                return true;
            }
        }
        false
    }

    pub(crate) fn clip_bounds(&self, node: &pb::NodeProto) -> Result<UnaryOp, String> {
        let bound = |slot: usize, attr: &str, default: f32| -> Result<f32, String> {
            if self.opset >= 11 {
                match node.input.get(slot).filter(|n| !n.is_empty()) {
                    None => Ok(default),
                    Some(_) => self
                        .constant(node, slot)
                        .map(|(d, _)| d.first().copied().unwrap_or(default)),
                }
            } else {
                Ok(attr_float(node, attr).unwrap_or(default))
            }
        };
        Ok(UnaryOp::Clip(
            bound(1, "min", f32::MIN)?,
            bound(2, "max", f32::MAX)?,
        ))
    }

    pub(crate) fn operand(
        &mut self,
        node: &pb::NodeProto,
        i: usize,
    ) -> Result<(Operand, Vec<usize>), String> {
        if self.is_constant(node, i) {
            let (w, dims) = self.weight(node, i)?.ok_or("missing input")?;
            Ok((Operand::Weight(w), dims))
        } else {
            let v = self.input(node, i)?;
            Ok((Operand::Act(v.buffer), v.shape))
        }
    }

    pub(crate) fn binary(
        &mut self,
        node: &pb::NodeProto,
        name: String,
        q: f32,
    ) -> Result<Value, String> {
        let (a, ashape) = self.operand(node, 0)?;
        let (b, bshape) = self.operand(node, 1)?;
        let shape = broadcast(&ashape, &bshape)?;
        if shape.len() > 4 {
            return Err(format!(
                "broadcasting over {} dimensions is not supported (at most 4)",
                shape.len()
            ));
        }
        let dims = pad4(&shape);
        let (a_strides, b_strides) = (strides4(&ashape), strides4(&bshape));
        let y = self.plan.new_buffer(shape.iter().product());
        let op = BinaryOp::of(&node.op_type).ok_or("not a binary operator")?;
        self.push(
            name,
            Layer::Binary {
                a,
                b,
                y,
                op,
                dims,
                a_strides,
                b_strides,
                relu: false,
                q,
            },
        );
        Ok(Value {
            buffer: y,
            shape,
            q,
        })
    }
}

/// Numpy broadcasting of two shapes.
pub(crate) fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

/// A shape left-padded with 1s to rank 4.
pub(crate) fn pad4(shape: &[usize]) -> [usize; 4] {
    let mut out = [1; 4];
    out[4 - shape.len()..].copy_from_slice(shape);
    out
}

/// Strides of `shape` padded to rank 4 (0 along its size-1 dimensions, which broadcast).
pub(crate) fn strides4(shape: &[usize]) -> [usize; 4] {
    let own = pad4(shape);
    let mut strides = [0; 4];
    let mut step = 1;
    for i in (0..4).rev() {
        strides[i] = if own[i] == 1 { 0 } else { step };
        step *= own[i];
    }
    strides
}
