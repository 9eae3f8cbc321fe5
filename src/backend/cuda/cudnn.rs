//! cuDNN convolutions, opened at run time like cuBLASLt. Where cuDNN 9 can be opened (on the
//! loader's path, the file `CALIBENCH_CUDNN` names, or python3's `nvidia-cudnn` package, which
//! PyTorch's wheels install), every float convolution between NCHW tensors is timed at build on
//! each algorithm cuDNN offers beside calibench's own kernel, as TensorRT's builder times
//! tactics; the fastest runs and the engine's per-layer list names it. Without cuDNN the engine
//! runs calibench's kernels and says why in a diagnostic.

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cudarc::cudnn::{result, sys};
use cudarc::driver::CudaStream;

/// The most workspace one algorithm may take.
const WORKSPACE_LIMIT: usize = 256 << 20;

/// Opens cuDNN once; the reason where it cannot be.
pub fn available() -> Result<usize, String> {
    static OPEN: OnceLock<Result<usize, String>> = OnceLock::new();
    OPEN.get_or_init(open).clone()
}

fn open() -> Result<usize, String> {
    // SAFETY (`is_culib_present`, twice): it only tries to open the library by its names.
    if let Some(p) = std::env::var_os("CALIBENCH_CUDNN") {
        preload(Path::new(&p))?;
    } else if !unsafe { sys::is_culib_present() } {
        preload(&pip_library()?)?;
    }
    // cudarc opens cuDNN by name (libcudnn.so, libcudnn.so.9, …), and panics where none
    // loads: what was preloaded must answer to one of those names.
    if !unsafe { sys::is_culib_present() } {
        return Err("the library loaded is not cuDNN 9 (libcudnn.so.9)".into());
    }
    let version = result::get_version();
    if version < 90000 {
        return Err(format!("cuDNN {version} is older than 9.0"));
    }
    Ok(version)
}

/// Loads `path` for good, so cudarc's search by name finds it by its soname.
fn preload(path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{} is not a loadable path", path.display()))?;
    // SAFETY: a NUL-terminated path; loading cuDNN runs only its initializers. The handle is
    // never closed.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        return Err(format!("{} could not be loaded", path.display()));
    }
    Ok(())
}

/// libcudnn.so.9 inside python3's nvidia-cudnn package, found without importing it.
fn pip_library() -> Result<PathBuf, String> {
    let dir = crate::backend::pip::package_dir("nvidia.cudnn")
        .map_err(|e| format!("libcudnn.so.9 is not on the loader's path, and {e}"))?;
    let lib = dir.join("lib/libcudnn.so.9");
    lib.is_file()
        .then_some(lib.clone())
        .ok_or_else(|| format!("{} is absent", lib.display()))
}

fn err(e: result::CudnnError) -> String {
    format!("cuDNN: {e:?}")
}

/// A cuDNN handle bound to the engine's stream.
pub struct Handle(sys::cudnnHandle_t);

impl Handle {
    /// A handle whose work goes to `stream`.
    pub fn new(stream: &CudaStream) -> Result<Handle, String> {
        available()?;
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| e.to_string())?;
        let h = result::create_handle().map_err(err)?;
        let handle = Handle(h);
        // SAFETY: a live handle and the engine's live stream.
        unsafe { result::set_stream(h, stream.cu_stream() as sys::cudaStream_t) }.map_err(err)?;
        Ok(handle)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        let _ = unsafe { result::destroy_handle(self.0) };
    }
}

/// The geometry of a 2-D convolution (weights `[cout, c / groups, kh, kw]` over an NCHW input).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvShape {
    /// `[n, c, h, w]` of the input.
    pub x: [usize; 4],
    /// `[n, cout, oh, ow]` of the output.
    pub y: [usize; 4],
    /// Kernel `[kh, kw]`.
    pub k: [usize; 2],
    /// Strides.
    pub stride: [usize; 2],
    /// Padding (top, left; cuDNN pads the bottom and right alike).
    pub pad: [usize; 2],
    /// Dilations.
    pub dilation: [usize; 2],
    /// Groups.
    pub groups: usize,
    /// Whether the input (with its weights, `[cout, kh, kw, c]`) and the output are NHWC.
    pub nhwc: [bool; 2],
}

impl ConvShape {
    /// The output size cuDNN computes, which must be the plan's: it is not where the padding
    /// is asymmetric.
    pub fn symmetric(&self) -> bool {
        (0..2).all(|a| {
            let span = self.dilation[a] * (self.k[a] - 1) + 1;
            let padded = self.x[2 + a] + 2 * self.pad[a];
            padded >= span && (padded - span) / self.stride[a] + 1 == self.y[2 + a]
        })
    }
}

/// One convolution's descriptors and the algorithm it runs.
pub struct Conv {
    x: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    /// The algorithm launched.
    pub algo: sys::cudnnConvolutionFwdAlgo_t,
    /// Its workspace, bytes.
    pub workspace: usize,
}

fn dims(v: [usize; 4]) -> Result<[i32; 4], String> {
    let mut out = [0i32; 4];
    for (o, d) in out.iter_mut().zip(v) {
        *o = i32::try_from(d).map_err(|_| format!("dimension {d} is too large for cuDNN"))?;
    }
    Ok(out)
}

impl Conv {
    /// Descriptors of `shape` at fp16 (`half`, accumulated in fp32, tensor cores allowed) or
    /// strict fp32 (no TF32), with cuDNN's first algorithm chosen until [`Conv::candidates`]
    /// are timed.
    pub fn new(_open: &Handle, shape: &ConvShape, half: bool) -> Result<Conv, String> {
        if !shape.symmetric() {
            return Err("asymmetric padding".into());
        }
        let ty = if half {
            sys::cudnnDataType_t::CUDNN_DATA_HALF
        } else {
            sys::cudnnDataType_t::CUDNN_DATA_FLOAT
        };
        let format = |nhwc: bool| {
            if nhwc {
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC
            } else {
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW
            }
        };
        let [x_format, y_format] = shape.nhwc.map(format);
        let w_dims = [
            shape.y[1],
            shape.x[1] / shape.groups,
            shape.k[0],
            shape.k[1],
        ];
        let conv = Conv {
            x: result::create_tensor_descriptor().map_err(err)?,
            w: result::create_filter_descriptor().map_err(err)?,
            conv: result::create_convolution_descriptor().map_err(err)?,
            y: result::create_tensor_descriptor().map_err(err)?,
            algo: sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
            workspace: 0,
        };
        let [pad, stride, dil] = [shape.pad, shape.stride, shape.dilation]
            .map(|v| v.map(|d| i32::try_from(d).unwrap_or(i32::MAX)));
        let math = if half {
            sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH
        } else {
            sys::cudnnMathType_t::CUDNN_FMA_MATH
        };
        // SAFETY: descriptors created above, set once each.
        unsafe {
            result::set_tensor4d_descriptor(conv.x, x_format, ty, dims(shape.x)?).map_err(err)?;
            result::set_tensor4d_descriptor(conv.y, y_format, ty, dims(shape.y)?).map_err(err)?;
            result::set_filter4d_descriptor(conv.w, ty, x_format, dims(w_dims)?).map_err(err)?;
            result::set_convolution2d_descriptor(
                conv.conv,
                pad[0],
                pad[1],
                stride[0],
                stride[1],
                dil[0],
                dil[1],
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            )
            .map_err(err)?;
            result::set_convolution_group_count(conv.conv, shape.groups as i32).map_err(err)?;
            result::set_convolution_math_type(conv.conv, math).map_err(err)?;
        }
        Ok(conv)
    }

    /// The algorithms cuDNN's heuristics offer for this convolution, with their workspace, in
    /// its order (those that fail or need more than 256 MiB left out).
    pub fn candidates(&self, h: &Handle) -> Vec<(sys::cudnnConvolutionFwdAlgo_t, usize)> {
        const COUNT: usize =
            sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_COUNT as usize;
        let mut returned = 0i32;
        // SAFETY: plain C structs, written by cuDNN.
        let mut perf: [sys::cudnnConvolutionFwdAlgoPerf_t; COUNT] = unsafe { std::mem::zeroed() };
        // SAFETY: live handle and descriptors; `perf` holds COUNT results.
        let found = unsafe {
            result::get_convolution_forward_algorithm(
                h.0,
                self.x,
                self.w,
                self.conv,
                self.y,
                COUNT as i32,
                &mut returned,
                perf.as_mut_ptr(),
            )
        };
        if found.is_err() {
            return Vec::new();
        }
        perf.iter()
            .take(returned.max(0) as usize)
            .filter(|p| p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS)
            .filter_map(|p| {
                // SAFETY: live handle and descriptors.
                let bytes = unsafe {
                    result::get_convolution_forward_workspace_size(
                        h.0, self.x, self.w, self.conv, self.y, p.algo,
                    )
                }
                .ok()?;
                (bytes <= WORKSPACE_LIMIT).then_some((p.algo, bytes))
            })
            .collect()
    }

    /// Enqueues `y = conv(x, w)` with the chosen algorithm.
    ///
    /// # Safety
    /// `x`, `w`, `y` are device buffers of the descriptors' shapes and type; `workspace` holds
    /// at least [`Conv::workspace`] bytes.
    pub unsafe fn launch(
        &self,
        h: &Handle,
        x: u64,
        w: u64,
        y: u64,
        workspace: u64,
    ) -> Result<(), String> {
        let (one, zero) = (1f32, 0f32);
        result::convolution_forward(
            h.0,
            &one as *const f32 as *const c_void,
            self.x,
            x as *const c_void,
            self.w,
            w as *const c_void,
            self.conv,
            self.algo,
            workspace as *mut c_void,
            self.workspace,
            &zero as *const f32 as *const c_void,
            self.y,
            y as *mut c_void,
        )
        .map_err(err)
    }
}

impl Drop for Conv {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        unsafe {
            let _ = result::destroy_tensor_descriptor(self.x);
            let _ = result::destroy_filter_descriptor(self.w);
            let _ = result::destroy_convolution_descriptor(self.conv);
            let _ = result::destroy_tensor_descriptor(self.y);
        }
    }
}

/// The name of an algorithm as the per-layer list gives it.
pub fn algo_name(algo: sys::cudnnConvolutionFwdAlgo_t) -> &'static str {
    use sys::cudnnConvolutionFwdAlgo_t as A;
    match algo {
        A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM => "cudnn implicit_gemm",
        A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM => "cudnn implicit_precomp_gemm",
        A::CUDNN_CONVOLUTION_FWD_ALGO_GEMM => "cudnn gemm",
        A::CUDNN_CONVOLUTION_FWD_ALGO_DIRECT => "cudnn direct",
        A::CUDNN_CONVOLUTION_FWD_ALGO_FFT => "cudnn fft",
        A::CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING => "cudnn fft_tiling",
        A::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD => "cudnn winograd",
        A::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED => "cudnn winograd_nonfused",
        _ => "cudnn",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(h: usize, k: usize, s: usize, p: usize, oh: usize) -> ConvShape {
        ConvShape {
            x: [1, 3, h, h],
            y: [1, 8, oh, oh],
            k: [k, k],
            stride: [s, s],
            pad: [p, p],
            dilation: [1, 1],
            groups: 1,
            nhwc: [false; 2],
        }
    }

    #[test]
    fn asymmetric_padding_is_left_to_calibench_kernels() {
        // ResNet's stem: 224, 7×7, stride 2, pad 3 → 112 on both sides.
        assert!(shape(224, 7, 2, 3, 112).symmetric());
        // TensorFlow-style SAME padding of an even input (pad 0 top, 1 bottom): 113 → 56
        // by the plan, (113 + 0 - 3) / 2 + 1 = 56 by cuDNN as well; 112 → 56 with one extra row
        // at the bottom only: cuDNN's (112 - 3) / 2 + 1 = 55.
        assert!(shape(113, 3, 2, 0, 56).symmetric());
        assert!(!shape(112, 3, 2, 0, 56).symmetric());
    }
}
