//! The cuda backend's operators, one family per file, each behind [`OpFamily`]: how an ONNX
//! node of the family becomes layers of the plan. The planner (`graph.rs`) keeps the
//! graph-level work (values, weights, the folded constants) and `layout.rs` the layout passes.

mod conv;
mod elementwise;
mod fold;
mod gemm;
mod movement;
mod norm;
mod pool;
mod resize;
mod shape;
mod softmax;

use tract_onnx::pb;

use super::graph::{ints, Planner, Value, Window};

pub(crate) use elementwise::broadcast;
#[cfg(test)]
pub(crate) use elementwise::{pad4, strides4};
pub(crate) use fold::{ConstData, ConstTensor};
pub(crate) use shape::reshape;

/// One node to plan: its index in the graph, the node, its report label, and the
/// fake-quantization scale of its output (0: none).
pub(crate) struct NodeCtx<'a> {
    pub index: usize,
    pub node: &'a pb::NodeProto,
    pub name: String,
    pub q: f32,
}

/// An operator family of the cuda backend.
pub(crate) trait OpFamily: Sync {
    /// The ONNX operator types it plans.
    fn ops(&self) -> &'static [&'static str];
    /// Plans one node: the value of its first output, or `None` when the family recorded its
    /// outputs itself (folded constants, aliases, fusions into the previous layer).
    fn plan(&self, p: &mut Planner<'_>, n: &NodeCtx<'_>) -> Result<Option<Value>, String>;
}

/// Every family, in the order the operator list is printed.
const FAMILIES: &[&dyn OpFamily] = &[
    &conv::ConvFamily,
    &gemm::GemmFamily,
    &elementwise::Elementwise,
    &pool::PoolFamily,
    &norm::NormFamily,
    &shape::ShapeFamily,
    &movement::Movement,
    &resize::ResizeFamily,
    &softmax::SoftmaxFamily,
    &fold::Folding,
];

/// The family that plans `op`.
pub(crate) fn family_of(op: &str) -> Option<&'static dyn OpFamily> {
    FAMILIES.iter().copied().find(|f| f.ops().contains(&op))
}

/// The operators the cuda backend runs (or folds at plan time), comma-separated.
pub fn supported_ops() -> String {
    FAMILIES
        .iter()
        .flat_map(|f| f.ops().iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The convolution and pooling kernels put channels (and, for im2col, patch rows) and images on
/// the y and z axes of the CUDA grid, which hold at most 65535 blocks. Pools and direct
/// convolutions have no patch rows on the grid (`patch_rows` false): a global average pool of
/// 2048 channels × 7×7 is fine.
pub(crate) fn check_grid(g: &Window, patch_rows: bool) -> Result<(), String> {
    let rows = if patch_rows { g.patch() } else { 0 };
    let largest = rows.max(g.cout).max(g.c).max(g.n);
    if largest > 65_535 {
        return Err(format!(
            "{} input channels × {}×{} window, {} output channels, {} rows: more than the cuda \
             backend's grid takes (65535 per axis) — this shape is not supported; fix: a smaller \
             batch, or the reference backend",
            g.c, g.kh, g.kw, g.cout, g.n
        ));
    }
    Ok(())
}

/// Window geometry from kernel_shape/strides/pads (explicit pads only); `dilations` widen the
/// window the output size is computed from (the direct convolution applies them).
pub(crate) fn window(
    node: &pb::NodeProto,
    x: &[usize],
    kernel: &[usize],
    cout: usize,
    dilations: [usize; 2],
) -> Result<Window, String> {
    if x.len() != 4 || kernel.len() != 2 {
        return Err(format!(
            "expects a 4-D NCHW input and a 2-D window, got {x:?} and {kernel:?}"
        ));
    }
    let auto_pad = node
        .attribute
        .iter()
        .find(|a| a.name == "auto_pad")
        .map(|a| String::from_utf8_lossy(&a.s).to_string());
    if auto_pad
        .as_deref()
        .is_some_and(|p| p != "NOTSET" && p != "VALID")
    {
        return Err("auto_pad SAME_* is not supported yet (export with explicit pads)".into());
    }
    let strides = ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
    let pads = ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
    if pads.len() != 4 || pads[0] != pads[2] || pads[1] != pads[3] {
        return Err(format!("asymmetric pads {pads:?} are not supported yet"));
    }
    let out = |size: usize, k: usize, s: usize, p: usize, d: usize| -> Result<usize, String> {
        (size + 2 * p)
            .checked_sub(d * (k.max(1) - 1) + 1)
            .map(|v| v / s.max(1) + 1)
            .ok_or_else(|| format!("window {kernel:?} larger than input {x:?}"))
    };
    Ok(Window {
        n: x[0],
        c: x[1],
        h: x[2],
        w: x[3],
        cout,
        kh: kernel[0],
        kw: kernel[1],
        sh: strides[0],
        sw: strides[1],
        ph: pads[0],
        pw: pads[1],
        oh: out(x[2], kernel[0], strides[0], pads[0], dilations[0])?,
        ow: out(x[3], kernel[1], strides[1], pads[1], dilations[1])?,
    })
}
