//! The plan's layout pass: which convolutions run on tensor cores (`mma.sync`) and which
//! tensors stay NHWC in the tensor-core element type between them, and best's per-layer
//! choices that follow from it.

use super::graph::{round_up, Layer, MmaConv, MmaKind, Operand, Plan, UnaryOp, Window};
use crate::matrix::Precision;

impl Plan {
    /// Moves convolutions onto tensor cores (`mma.sync`; compute capability 8.0 or newer):
    /// every Conv with an int8 form (`Int8`) or every Conv (`Fp16`) runs the implicit-GEMM
    /// kernel, and a tensor written by such a convolution (or by a pool or a same-shape
    /// elementwise layer of such tensors) and read only by such convolutions, pools and
    /// elementwise layers stays NHWC in the kernel's element type between them: int8 codes of
    /// its cache scale, exact since that scale already rounds it, or fp16. Every other tensor
    /// keeps the engine's NCHW layout and type.
    pub fn use_tensor_cores(&mut self, kind: MmaKind) {
        let bytes = kind.bytes();
        let capable = |layer: &Layer| match layer {
            Layer::Conv { int8, g, .. } => {
                g.cout % 2 == 0 && (kind == MmaKind::Fp16 || int8.is_some())
            }
            _ => false,
        };
        let mut readers: Vec<Vec<usize>> = vec![Vec::new(); self.buffer_sizes.len()];
        for (i, layer) in self.layers.iter().enumerate() {
            for b in layer.reads() {
                readers[b].push(i);
            }
        }
        let io: Vec<usize> = self
            .inputs
            .iter()
            .chain(&self.outputs)
            .map(|io| io.buffer)
            .collect();
        // Candidates: each tensor a convolution writes, and (in layer order) what a pool or a
        // same-shape elementwise layer makes of candidates, as ([n, c, h, w], scale).
        let mut candidate: Vec<Option<([usize; 4], f32)>> = vec![None; self.buffer_sizes.len()];
        for layer in &self.layers {
            let written = match layer {
                Layer::Conv { y, g, q, .. } if capable(layer) => {
                    Some((*y, [g.n, g.cout, g.oh, g.ow], *q))
                }
                Layer::Pool { x, y, g, q, .. } if candidate[*x].is_some() => {
                    Some((*y, [g.n, g.c, g.oh, g.ow], *q))
                }
                _ => elementwise_nhwc(layer, &candidate),
            };
            if let Some((y, shape, q)) = written {
                let exact = kind == MmaKind::Fp16 || q > 0.0;
                if exact && (shape[1] * bytes).is_multiple_of(32) && !io.contains(&y) {
                    candidate[y] = Some((shape, q));
                }
            }
        }
        // A candidate stays NHWC when its writer's inputs did and every reader reads NHWC:
        // a tensor-core convolution or a pool of its shape (which may write either layout),
        // or an elementwise layer whose output (and other input) stays NHWC too. Dropping one
        // can drop others, so repeat until nothing changes.
        let mut nhwc: Vec<bool> = candidate.iter().map(Option::is_some).collect();
        loop {
            let mut changed = false;
            for y in 0..nhwc.len() {
                let Some((shape, q)) = candidate[y] else {
                    continue;
                };
                if !nhwc[y] {
                    continue;
                }
                let writer_ok = self.layers.iter().all(|l| match l {
                    Layer::Pool { x, y: py, .. } if *py == y => nhwc[*x],
                    Layer::Unary { y: uy, .. } | Layer::Binary { y: uy, .. } if *uy == y => {
                        l.reads().iter().all(|&x| nhwc[x])
                    }
                    _ => true,
                });
                let reader_ok = |&r: &usize| match &self.layers[r] {
                    Layer::Conv { x, g, int8, .. } if capable(&self.layers[r]) => {
                        *x == y
                            && [g.n, g.c, g.h, g.w] == shape
                            && int8.as_ref().is_none_or(|f| f.x_scale == q)
                    }
                    Layer::Pool { x, g, .. } => *x == y && [g.n, g.c, g.h, g.w] == shape,
                    l @ (Layer::Unary { y: out, .. } | Layer::Binary { y: out, .. }) => {
                        nhwc[*out] && l.reads().iter().all(|&x| nhwc[x])
                    }
                    _ => false,
                };
                if !writer_ok || readers[y].is_empty() || !readers[y].iter().all(reader_ok) {
                    nhwc[y] = false;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let scales: Vec<Option<f32>> = candidate
            .iter()
            .zip(&nhwc)
            .map(|(c, &keep)| c.filter(|_| keep).map(|(_, q)| q))
            .collect();
        for i in 0..self.layers.len() {
            if !capable(&self.layers[i]) {
                continue;
            }
            let Layer::Conv { x, w, g, int8, .. } = &self.layers[i] else {
                continue;
            };
            let (x, w, g, int8) = (*x, *w, *g, *int8);
            let patch = g.patch();
            let taps_last = |stride: usize, at: &dyn Fn(usize) -> usize| -> Vec<usize> {
                // Source index of each [o][kh][kw][c] entry in an [o][c][kh][kw] row of `stride`.
                let taps = g.kh * g.kw;
                (0..g.cout * patch)
                    .map(|j| {
                        let (o, r) = (j / patch, j % patch);
                        let (tap, c) = (r / g.c, r % g.c);
                        at(o * stride + c * taps + tap)
                    })
                    .collect()
            };
            let form = match (kind, int8) {
                (MmaKind::Int8, Some(f)) if nhwc[x] => {
                    let wq = &self.int8_weights[f.wq];
                    let order = taps_last(f.kp, &|i| i);
                    self.int8_weights
                        .push(order.iter().map(|&i| wq[i]).collect());
                    MmaConv {
                        w: self.int8_weights.len() - 1,
                        kp: 0,
                    }
                }
                (MmaKind::Int8, Some(f)) => MmaConv { w: f.wq, kp: f.kp },
                (MmaKind::Fp16, _) if nhwc[x] => {
                    let wf = &self.weights[w];
                    let order = taps_last(patch, &|i| i);
                    self.weights.push(order.iter().map(|&i| wf[i]).collect());
                    MmaConv {
                        w: self.weights.len() - 1,
                        kp: 0,
                    }
                }
                (MmaKind::Fp16, _) => self.push_fp16_patch_weights(w, g),
                (MmaKind::Int8, None) => continue,
            };
            if let Layer::Conv { mma, .. } = &mut self.layers[i] {
                *mma = Some(form);
            }
        }
        self.mma = Some(kind);
        self.nhwc = scales;
        self.drop_redundant_quantization();
    }

    /// Convolutions on tensor cores as a precision runs them: those with an int8 form at int8
    /// (the others stay cuBLASLt fp32), all at fp16, and at best those with an int8 form at
    /// int8 and the others at fp16 over NCHW tensors. fp32 keeps strict cuBLASLt fp32.
    pub fn use_tensor_cores_at(&mut self, precision: Precision) {
        match precision {
            Precision::Int8 => self.use_tensor_cores(MmaKind::Int8),
            Precision::Best => {
                self.use_tensor_cores(MmaKind::Int8);
                self.use_fp16_tensor_cores_for_float_convolutions();
            }
            Precision::Fp16 => self.use_tensor_cores(MmaKind::Fp16),
            Precision::Fp32 => {}
        }
    }

    /// best (an int8 tensor-core plan on an fp16 engine): each convolution left without an int8
    /// form runs the fp16 tensor-core kernel, gathering its patches from the NCHW fp16 tensor it
    /// reads and writing NCHW. Runs after [`Plan::use_tensor_cores`]`(Int8)`, which keeps every
    /// tensor such a convolution touches NCHW (it is neither a writer nor a reader of codes).
    fn use_fp16_tensor_cores_for_float_convolutions(&mut self) {
        for i in 0..self.layers.len() {
            let Layer::Conv {
                w,
                g,
                int8: None,
                mma: None,
                ..
            } = self.layers[i]
            else {
                continue;
            };
            if g.cout % 2 != 0 {
                continue;
            }
            let form = self.push_fp16_patch_weights(w, g);
            if let Layer::Conv { mma, .. } = &mut self.layers[i] {
                *mma = Some(form);
            }
        }
    }

    /// Precision layer `i` computes at: `int8` for an int8 GEMM or convolution and for a layer
    /// over int8 codes (pools and elementwise layers between tensor-core convolutions), else
    /// `float` (the engine's type).
    pub fn layer_precision<'a>(&self, i: usize, float: &'a str) -> &'a str {
        let layer = &self.layers[i];
        let on_codes = layer.reads().first().is_some_and(|&x| self.holds_codes(x));
        if on_codes || layer.int8().is_some() {
            "int8"
        } else {
            float
        }
    }

    /// Bytes of the largest patch matrix a tensor-core convolution over an NCHW input needs:
    /// one row of its padded patch per output position.
    pub fn max_patch_bytes(&self) -> usize {
        (0..self.layers.len())
            .filter_map(|i| match &self.layers[i] {
                Layer::Conv {
                    g, mma: Some(m), ..
                } if m.kp > 0 => Some(g.positions() * m.kp * self.conv_kind(i).bytes()),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Element type tensor-core convolution `i` computes in: int8 in an int8 plan when it has
    /// an int8 form, fp16 otherwise (fp16 plans, and best's float convolutions).
    pub fn conv_kind(&self, i: usize) -> MmaKind {
        match (self.mma, self.layers[i].int8()) {
            (Some(MmaKind::Int8), Some(_)) => MmaKind::Int8,
            _ => MmaKind::Fp16,
        }
    }

    /// best: layer `name` runs its float form (its int8 form was slower); the report says so.
    pub fn drop_int8_of(&mut self, name: &str) {
        for (layer, _) in self
            .layers
            .iter_mut()
            .zip(&self.layer_names)
            .filter(|(_, n)| *n == name)
        {
            layer.drop_int8();
        }
        for entry in self.report.iter_mut().filter(|l| l.layer == name) {
            entry.precision = "fp16".into();
        }
    }

    /// Adds the fp16 weights of convolution weights `w` for gathered patches, `[cout][kp]` with
    /// the patch padded to 16 elements (32 bytes), and returns that tensor-core form.
    fn push_fp16_patch_weights(&mut self, w: usize, g: Window) -> MmaConv {
        let patch = g.patch();
        let kp = round_up(patch, 16);
        let wf = &self.weights[w];
        let mut padded = vec![0f32; g.cout * kp];
        for o in 0..g.cout {
            padded[o * kp..o * kp + patch].copy_from_slice(&wf[o * patch..(o + 1) * patch]);
        }
        self.weights.push(padded);
        MmaConv {
            w: self.weights.len() - 1,
            kp,
        }
    }

    /// Removes an elementwise layer that only quantizes a tensor (the graph input's Q/DQ) when
    /// every reader is an int8 tensor-core convolution that gathers its patches: they quantize
    /// with the same scale as they read, so they read the unquantized tensor instead.
    fn drop_redundant_quantization(&mut self) {
        let outputs: Vec<usize> = self.outputs.iter().map(|o| o.buffer).collect();
        let mut i = 0;
        while i < self.layers.len() {
            let Layer::Unary {
                x,
                y,
                op: UnaryOp::Identity,
                q,
                ..
            } = self.layers[i]
            else {
                i += 1;
                continue;
            };
            let readers: Vec<usize> = (0..self.layers.len())
                .filter(|&r| self.layers[r].reads().contains(&y))
                .collect();
            let gathers_at = |layer: &Layer| match layer {
                Layer::Conv {
                    x: cx,
                    int8: Some(f),
                    mma: Some(_),
                    ..
                } => *cx == y && f.x_scale == q && !self.is_nhwc(y),
                _ => false,
            };
            if q > 0.0
                && !outputs.contains(&y)
                && !readers.is_empty()
                && readers.iter().all(|&r| gathers_at(&self.layers[r]))
            {
                for &r in &readers {
                    if let Layer::Conv { x: cx, .. } = &mut self.layers[r] {
                        *cx = x;
                    }
                }
                self.buffer_sizes[y] = 0;
                self.layers.remove(i);
                self.layer_names.remove(i);
                continue;
            }
            i += 1;
        }
    }
}

/// The output of an elementwise layer over NHWC candidates, as (buffer, shape, scale): a Unary,
/// or a Binary of two activations of the same shape (no broadcasting), all of them candidates.
fn elementwise_nhwc(
    layer: &Layer,
    candidate: &[Option<([usize; 4], f32)>],
) -> Option<(usize, [usize; 4], f32)> {
    match layer {
        Layer::Unary { x, y, q, .. } => candidate[*x].map(|(shape, _)| (*y, shape, *q)),
        Layer::Binary {
            a: Operand::Act(a),
            b: Operand::Act(b),
            y,
            a_strides,
            b_strides,
            q,
            ..
        } if a_strides == b_strides => {
            let (sa, _) = candidate[*a]?;
            let (sb, _) = candidate[*b]?;
            (sa == sb).then_some((*y, sa, *q))
        }
        _ => None,
    }
}
