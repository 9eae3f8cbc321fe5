//! Enqueueing the tensor-core layers of a plan ([`Plan::use_tensor_cores`]): convolutions as
//! implicit GEMMs on `mma.sync` (`conv_mma` in `kernels.cu`) and max pools over the NHWC
//! tensors kept between them.
//!
//! [`Plan::use_tensor_cores`]: super::graph::Plan::use_tensor_cores

use cudarc::driver::LaunchConfig;

use super::graph::{Layer, MmaKind, Operand};
use super::{launch, launch_cfg, ptr, window, Arg, CudaEngine, Element};
use crate::backend::BackendError;

impl<T: Element> CudaEngine<T> {
    /// Enqueues tensor-core convolution `i`: the implicit GEMM with its epilogue, reading an
    /// NHWC input directly, or the patch rows it first writes of an NCHW one.
    pub(super) fn enqueue_tensor_core_conv(&self, i: usize) -> Result<(), BackendError> {
        use Arg::{F, I, P};
        let s = self.ctx.stream.as_ref();
        let Layer::Conv {
            x,
            b,
            y,
            g,
            relu,
            q_pre,
            q,
            int8,
            mma: Some(m),
            ..
        } = &self.plan.layers[i]
        else {
            return Err(super::infer_err("not a tensor-core convolution"));
        };
        let kind = self.plan.conv_kind(i);
        let bytes = kind.bytes();
        let gather = !self.plan.is_nhwc(*x);
        // k bytes per tap (NHWC), or of the whole padded patch (gathered).
        let kb = if gather { m.kp * bytes } else { g.c * bytes };
        let (kernel, w, dq, x_scale) = match (kind, int8) {
            (MmaKind::Int8, Some(f)) => (
                &self.kernels.conv_mma_i8,
                ptr(&self.int8_weights[m.w], s),
                ptr(&self.scales[f.dq], s),
                f.x_scale,
            ),
            _ => (
                &self.kernels.conv_mma_f16,
                ptr(&self.weights[m.w], s),
                0,
                0.0,
            ),
        };
        let bias = b.map_or(0, |b| ptr(&self.weights[b], s));
        // Over an NCHW input: its patch rows first, then a 1×1 convolution over them as an
        // NHWC tensor of `kb`-byte pixels.
        let (input, conv_window) = if gather {
            let patches = match kind {
                MmaKind::Int8 => &self.kernels.patches_i8,
                MmaKind::Fp16 => &self.kernels.patches_f16,
            };
            let mut args = vec![P(ptr(&self.activations[*x], s)), P(ptr(&self.patches, s))];
            args.extend(window(g, g.c));
            args.extend([I(kb as i32), I(g.patch() as i32), F(x_scale)]);
            let blocks = LaunchConfig {
                grid_dim: (g.positions().div_ceil(64) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            launch(s, patches, blocks, &args)?;
            let rows = [g.n, kb, g.oh, g.ow, 1, 1, 1, 1, 0, 0, g.oh, g.ow];
            (ptr(&self.patches, s), rows.map(|v| I(v as i32)))
        } else {
            (ptr(&self.activations[*x], s), window(g, kb))
        };
        let mut args = vec![
            P(input),
            P(w),
            P(dq),
            P(bias),
            P(ptr(&self.activations[*y], s)),
        ];
        args.extend(conv_window);
        args.extend([I(g.cout as i32), I(self.plan.is_nhwc(*y) as i32)]);
        args.extend([I(*relu as i32), F(*q_pre), F(*q)]);
        // Blocks of 128 positions × 64 output channels (4 warps), or × 128 (8 warps) when the
        // layer has more than 64.
        let threads = if g.cout > 64 { 256 } else { 128 };
        let cfg = LaunchConfig {
            grid_dim: (
                g.positions().div_ceil(128) as u32,
                g.cout.div_ceil(threads / 2) as u32,
                1,
            ),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        launch(s, kernel, cfg, &args)
    }

    /// Enqueues pool `i` over an NHWC tensor: one 4-byte word of channels per thread, into NHWC
    /// (a tensor-core reader) or the engine's NCHW.
    pub(super) fn enqueue_nhwc_pool(&self, i: usize) -> Result<(), BackendError> {
        let s = self.ctx.stream.as_ref();
        let (
            Layer::Pool {
                x,
                y,
                g,
                q,
                avg,
                count_include_pad,
            },
            Some(kind),
        ) = (&self.plan.layers[i], self.plan.mma)
        else {
            return Err(super::infer_err("not a pool over an NHWC tensor"));
        };
        let mut args = vec![
            Arg::P(ptr(&self.activations[*x], s)),
            Arg::P(ptr(&self.activations[*y], s)),
        ];
        args.extend(window(g, g.c));
        let nhwc_out = self.plan.is_nhwc(*y) as i32;
        args.extend([
            Arg::F(self.plan.nhwc_scale(*x)),
            Arg::F(*q),
            Arg::I(nhwc_out),
            Arg::I(*avg as i32),
            Arg::I(*count_include_pad as i32),
        ]);
        let (kernel, per_word) = match kind {
            MmaKind::Int8 => (&self.kernels.pool_nhwc_i8, 4),
            MmaKind::Fp16 => (&self.kernels.pool_nhwc_f16, 2),
        };
        let words = g.n * g.oh * g.ow * g.c / per_word;
        launch(s, kernel, launch_cfg(words), &args)
    }

    /// Enqueues elementwise layer `i` over int8 NHWC tensors: their codes in, the output's
    /// codes out (four per thread).
    pub(super) fn enqueue_q8_elementwise(&self, i: usize) -> Result<(), BackendError> {
        use Arg::{F, I, P};
        let s = self.ctx.stream.as_ref();
        let act = |b: usize| P(ptr(&self.activations[b], s));
        let scale = |b: usize| F(self.plan.nhwc_scale(b));
        let (kernel, args, len) = match &self.plan.layers[i] {
            Layer::Unary { x, y, len, op, q } => {
                let (code, lo, hi) = op.code();
                let words = (*len / 4) as i32;
                let args = vec![
                    act(*x),
                    act(*y),
                    I(words),
                    I(code),
                    F(lo),
                    F(hi),
                    scale(*x),
                    F(*q),
                ];
                (&self.kernels.unary_q8, args, *len)
            }
            Layer::Binary {
                a: Operand::Act(a),
                b: Operand::Act(b),
                y,
                op,
                dims,
                relu,
                q,
                ..
            } => {
                let len: usize = dims.iter().product();
                let words = (len / 4) as i32;
                let args = vec![
                    act(*a),
                    act(*b),
                    act(*y),
                    I(words),
                    I(op.code()),
                    scale(*a),
                    scale(*b),
                    I(*relu as i32),
                    F(*q),
                ];
                (&self.kernels.binary_q8, args, len)
            }
            _ => {
                return Err(super::infer_err(
                    "not an elementwise layer over int8 NHWC tensors",
                ))
            }
        };
        launch(s, kernel, launch_cfg(len / 4), &args)
    }
}
