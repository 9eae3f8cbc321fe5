//! An engine's convolution tactics: each float convolution is timed on calibench's own kernel
//! (im2col + cuBLASLt, the direct kernel of grouped and dilated convolutions, or the fp16
//! tensor-core kernel with its NHWC tensors) and on every algorithm cuDNN offers for it, in the
//! same layouts, when the engine is built; the fastest is kept and the per-layer list names it
//! ([`CudaEngine::tactic_of`]). Convolutions that run int8 keep calibench's kernels: cuDNN has
//! no form with the cache's per-tensor scales and per-channel weight scales.

use cudarc::driver::{CudaSlice, LaunchConfig};

use super::cudnn::{self, ConvShape};
use super::graph::{Layer, MmaKind, Window};
use super::{build_err, grid3, launch, launch_cfg, ptr, Arg, CudaEngine, Element};
use crate::backend::{BackendError, EngineDiagnostic};
use crate::gpu::GpuError;

/// Timings per tactic: a warm-up run, then the mean of this many between CUDA events.
const TIMED_RUNS: usize = 5;

/// The convolutions cuDNN runs, with what it needs.
#[derive(Default)]
pub(super) struct ConvTactics {
    handle: Option<cudnn::Handle>,
    /// Per layer, cuDNN's descriptors and algorithm where cuDNN runs it.
    convs: Vec<Option<cudnn::Conv>>,
    /// Per layer, the tactic kept (convolutions only).
    names: Vec<Option<String>>,
    workspace: Option<CudaSlice<u8>>,
}

/// cuDNN's description of a convolution of the plan between NCHW tensors.
fn shape(g: &Window, groups: usize, dilation: [usize; 2]) -> ConvShape {
    ConvShape {
        x: [g.n, g.c, g.h, g.w],
        y: [g.n, g.cout, g.oh, g.ow],
        k: [g.kh, g.kw],
        stride: [g.sh, g.sw],
        pad: [g.ph, g.pw],
        dilation,
        groups,
        nhwc: [false; 2],
    }
}

/// calibench's own kernel for a layer, as the per-layer list names it.
fn own_tactic(layer: &Layer) -> &'static str {
    match layer {
        Layer::DirectConv { .. } => "calibench direct",
        Layer::Conv { mma: Some(_), .. } => "calibench mma.sync",
        _ => "calibench im2col+cublaslt",
    }
}

impl<T: Element> CudaEngine<T> {
    /// cuDNN's form of layer `i`: a float convolution (not one that runs int8), in the layouts
    /// of its tensors — an fp16 tensor-core convolution's may be NHWC.
    fn cudnn_shape(&self, i: usize) -> Option<ConvShape> {
        match &self.plan.layers[i] {
            Layer::Conv {
                g,
                mma: None,
                int8: None,
                ..
            } => Some(shape(g, 1, [1, 1])),
            Layer::Conv {
                x,
                y,
                g,
                mma: Some(_),
                ..
            } if self.plan.conv_kind(i) == MmaKind::Fp16
                && std::mem::size_of::<T>() == 2
                && !self.plan.holds_codes(*x)
                && !self.plan.holds_codes(*y) =>
            {
                Some(ConvShape {
                    nhwc: [self.plan.is_nhwc(*x), self.plan.is_nhwc(*y)],
                    ..shape(g, 1, [1, 1])
                })
            }
            Layer::DirectConv { g, groups, dil, .. } => Some(shape(g, *groups, *dil)),
            _ => None,
        }
    }

    /// Times each convolution on its tactics and keeps the fastest. Without cuDNN every
    /// convolution keeps calibench's kernel and a diagnostic says why.
    pub(super) fn tune_convs(&mut self) -> Result<(), BackendError> {
        let layers: Vec<(usize, ConvShape)> = (0..self.plan.layers.len())
            .filter_map(|i| self.cudnn_shape(i).map(|s| (i, s)))
            .collect();
        let count = self.plan.layers.len();
        self.convs.convs = (0..count).map(|_| None).collect();
        self.convs.names = vec![None; count];
        if layers.is_empty() {
            return Ok(());
        }
        let handle = match cudnn::Handle::new(self.stream()) {
            Ok(h) => h,
            Err(reason) => {
                for (i, _) in &layers {
                    self.convs.names[*i] = Some(own_tactic(&self.plan.layers[*i]).into());
                }
                self.diagnostics.push(EngineDiagnostic {
                    kind: "cudnn_unavailable".into(),
                    message: format!("convolutions run on calibench's own kernels: {reason}"),
                    fix: "pip install nvidia-cudnn-cu13 (PyTorch's CUDA wheels bring it), or put libcudnn.so.9 on LD_LIBRARY_PATH, or set CALIBENCH_CUDNN to its path".into(),
                });
                return Ok(());
            }
        };
        let half = std::mem::size_of::<T>() == 2;
        let mut candidates = Vec::with_capacity(layers.len());
        let mut largest = 0;
        for (i, s) in &layers {
            match cudnn::Conv::new(&handle, s, half) {
                Ok(conv) => {
                    let algos = conv.candidates(&handle);
                    largest = algos.iter().map(|a| a.1).fold(largest, usize::max);
                    candidates.push((*i, Some(conv), algos));
                }
                Err(reason) => {
                    tracing::debug!(layer = %self.plan.layer_names[*i], %reason, "no cuDNN form");
                    candidates.push((*i, None, Vec::new()));
                }
            }
        }
        self.convs.workspace = Some(
            self.stream()
                .alloc_zeros::<u8>(largest.max(16))
                .map_err(build_err)?,
        );
        self.convs.handle = Some(handle);
        let timer = self.ctx.timer().map_err(build_err)?;
        let mut kept_workspace = 0;
        for (i, conv, algos) in candidates {
            let own = self.time_layer(&timer, i)?;
            let mut fastest = (own, None);
            self.convs.convs[i] = conv;
            for (algo, bytes) in algos {
                if let Some(c) = self.convs.convs[i].as_mut() {
                    (c.algo, c.workspace) = (algo, bytes);
                }
                // An algorithm that fails at launch is not a candidate.
                if let Ok(ms) = self.time_layer(&timer, i) {
                    if ms < fastest.0 {
                        fastest = (ms, Some((algo, bytes)));
                    }
                }
            }
            let name = self.plan.layer_names[i].clone();
            match fastest.1 {
                Some((algo, bytes)) => {
                    if let Some(c) = self.convs.convs[i].as_mut() {
                        (c.algo, c.workspace) = (algo, bytes);
                    }
                    kept_workspace = kept_workspace.max(bytes);
                    self.convs.names[i] = Some(cudnn::algo_name(algo).into());
                }
                None => {
                    self.convs.convs[i] = None;
                    self.convs.names[i] = Some(own_tactic(&self.plan.layers[i]).into());
                }
            }
            tracing::debug!(layer = %name, own_ms = own, kept_ms = fastest.0, tactic = ?self.convs.names[i], "convolution tactic");
        }
        if self.convs.convs.iter().all(Option::is_none) {
            (self.convs.handle, self.convs.workspace) = (None, None);
        } else if kept_workspace < largest {
            self.convs.workspace = Some(
                self.stream()
                    .alloc_zeros::<u8>(kept_workspace.max(16))
                    .map_err(build_err)?,
            );
        }
        Ok(())
    }

    /// GPU time of layer `i` in its current form, ms.
    fn time_layer(
        &mut self,
        timer: &crate::gpu::cuda::EventTimer,
        i: usize,
    ) -> Result<f64, BackendError> {
        self.enqueue_layer(i, false)?;
        let ms = timer
            .time(|| {
                for _ in 0..TIMED_RUNS {
                    self.enqueue_layer(i, false)
                        .map_err(|e| GpuError::Cuda(e.to_string()))?;
                }
                Ok::<(), GpuError>(())
            })
            .map_err(build_err)?;
        Ok(ms / TIMED_RUNS as f64)
    }

    /// Enqueues layer `i` on cuDNN when it runs there (then its bias, Relu and fake
    /// quantization in place); false when it does not.
    pub(super) fn enqueue_cudnn_conv(&self, i: usize, int8: bool) -> Result<bool, BackendError> {
        let (Some(conv), Some(handle), Some(workspace)) = (
            self.convs.convs.get(i).and_then(Option::as_ref),
            self.convs.handle.as_ref(),
            self.convs.workspace.as_ref(),
        ) else {
            return Ok(false);
        };
        let layer = &self.plan.layers[i];
        if int8 && layer.int8().is_some() {
            return Ok(false);
        }
        let (x, w, b, y, g, relu, q_pre, q) = match layer {
            // Over an NHWC input cuDNN reads the tensor-core kernel's [cout, kh, kw, c] weights.
            Layer::Conv {
                x,
                b,
                y,
                g,
                relu,
                q_pre,
                q,
                mma: Some(m),
                ..
            } if self.plan.is_nhwc(*x) => (*x, m.w, *b, *y, g, *relu, *q_pre, *q),
            Layer::Conv {
                x,
                w,
                b,
                y,
                g,
                relu,
                q_pre,
                q,
                ..
            }
            | Layer::DirectConv {
                x,
                w,
                b,
                y,
                g,
                relu,
                q_pre,
                q,
                ..
            } => (*x, *w, *b, *y, g, *relu, *q_pre, *q),
            _ => return Ok(false),
        };
        let s = self.ctx.stream.as_ref();
        let act = |b: usize| ptr(&self.activations[b], s);
        // SAFETY: the layer's own input, weights and output buffers, of the shapes its
        // descriptors were made from, and the workspace its algorithm was sized for.
        unsafe {
            conv.launch(
                handle,
                act(x),
                ptr(&self.weights[w], s),
                act(y),
                ptr(workspace, s),
            )
        }
        .map_err(|e| build_err(format!("layer {}: {e}", self.plan.layer_names[i])))?;
        if b.is_some() || relu || q_pre != 0.0 || q != 0.0 {
            use Arg::{F, I, P};
            let p = g.oh * g.ow;
            let bias = P(b.map_or(0, |b| ptr(&self.weights[b], s)));
            let tail = [I(relu as i32), F(q_pre), F(q)];
            if self.plan.is_nhwc(y) {
                let len = g.n * p * g.cout;
                let mut args = vec![P(act(y)), bias, I(len as i32), I(g.cout as i32)];
                args.extend(tail);
                launch(s, &self.kernels.bias_nhwc, launch_cfg(len), &args)?;
            } else {
                let mut args = vec![P(act(y)), bias];
                args.extend([g.n, g.cout, p].map(|v| I(v as i32)));
                args.extend(tail);
                let cfg: LaunchConfig = grid3(p, g.cout, g.n);
                launch(s, &self.kernels.bias_nchw, cfg, &args)?;
            }
        }
        Ok(true)
    }

    /// The tactic kept for the layer named `name`, where one was timed.
    pub(super) fn tactic_of(&self, name: &str) -> Option<String> {
        let i = self.plan.layer_names.iter().position(|n| n == name)?;
        self.convs.names.get(i).cloned().flatten()
    }
}
