//! cuBLASLt GEMMs planned once at engine build: descriptors, layouts and the algorithm chosen by
//! cuBLASLt's heuristic are kept, so an inference only launches.
//!
//! Three kinds: fp32 (strict fp32 compute; cudarc's default would be TF32), fp16 (fp16 storage,
//! fp32 accumulation) and int8 (int8 × int8 → int32, the "TN" layout cuBLASLt's integer
//! kernels require: A is transposed, leading dimensions are multiples of 4).

use std::ffi::c_void;
use std::mem::size_of;
use std::sync::Arc;

use cudarc::cublaslt::{result, sys};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

/// Element types of a GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmKind {
    /// fp32 in and out, fp32 compute.
    F32,
    /// fp16 in and out, fp32 compute.
    F16,
    /// int8 in, int32 out, int32 compute.
    I8,
}

impl GemmKind {
    fn types(
        self,
    ) -> (
        sys::cudaDataType,
        sys::cudaDataType,
        sys::cublasComputeType_t,
    ) {
        use sys::cublasComputeType_t as C;
        use sys::cudaDataType_t as D;
        match self {
            GemmKind::F32 => (D::CUDA_R_32F, D::CUDA_R_32F, C::CUBLAS_COMPUTE_32F),
            GemmKind::F16 => (D::CUDA_R_16F, D::CUDA_R_16F, C::CUBLAS_COMPUTE_32F),
            GemmKind::I8 => (D::CUDA_R_8I, D::CUDA_R_32I, C::CUBLAS_COMPUTE_32I),
        }
    }
}

/// A cuBLASLt handle and its workspace, bound to one stream.
pub struct Lt {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    stream: Arc<CudaStream>,
}

// SAFETY: the handle is used only from the engine that owns it, one call at a time.
unsafe impl Send for Lt {}

impl Lt {
    /// A handle with a 32 MiB workspace (NVIDIA's recommendation for Hopper).
    pub fn new(stream: Arc<CudaStream>) -> Result<Lt, String> {
        let handle = result::create_handle().map_err(|e| format!("cublasLtCreate: {e}"))?;
        let workspace = stream
            .alloc_zeros::<u8>(32 << 20)
            .map_err(|e| format!("cuBLASLt workspace: {e}"))?;
        Ok(Lt {
            handle,
            workspace,
            stream,
        })
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        // SAFETY: created in new, destroyed once.
        unsafe {
            let _ = result::destroy_handle(self.handle);
        }
    }
}

/// Shape of `D[m, n] = op(A)[m, k] · B[k, n]`, column-major as cuBLASLt sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmShape {
    /// Rows of D.
    pub m: usize,
    /// Columns of D.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// A is stored k × m (transposed) rather than m × k.
    pub trans_a: bool,
    /// Leading dimensions of A, B and D.
    pub lda: usize,
    /// Leading dimension of B.
    pub ldb: usize,
    /// Leading dimension of D.
    pub ldd: usize,
}

/// Epilogue of a floating-point GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    /// D = A·B.
    None,
    /// D = max(A·B, 0).
    Relu,
    /// D = A·B + bias (per row of D).
    Bias(u64),
    /// D = max(A·B + bias, 0).
    BiasRelu(u64),
}

/// One planned GEMM.
pub struct Gemm {
    desc: sys::cublasLtMatmulDesc_t,
    layouts: [sys::cublasLtMatrixLayout_t; 3],
    /// The algorithm launched.
    algo: sys::cublasLtMatmulAlgo_t,
    /// cuBLASLt's heuristic candidates, best guess first ([`Gemm::tune`] times them).
    candidates: Vec<sys::cublasLtMatmulAlgo_t>,
    kind: GemmKind,
}

/// Runs enqueued work between CUDA events and returns its GPU time in ms.
pub type Stopwatch<'a> = dyn Fn(&dyn Fn() -> Result<(), String>) -> Result<f64, String> + 'a;

/// Candidates asked of cuBLASLt's heuristic per GEMM.
const CANDIDATES: usize = 8;

// SAFETY: descriptors are plain host objects, used by one engine at a time.
unsafe impl Send for Gemm {}

fn lt_err(what: &str) -> impl Fn(result::CublasError) -> String + '_ {
    move |e| format!("cuBLASLt {what}: {e}")
}

impl Gemm {
    /// Plans a GEMM: creates its descriptors and asks cuBLASLt's heuristic for an algorithm.
    pub fn new(lt: &Lt, kind: GemmKind, s: GemmShape, epilogue: Epilogue) -> Result<Gemm, String> {
        let (ab, d, compute) = kind.types();
        let scale = match kind {
            GemmKind::I8 => sys::cudaDataType_t::CUDA_R_32I,
            _ => sys::cudaDataType_t::CUDA_R_32F,
        };
        let desc = result::create_matmul_desc(compute, scale).map_err(lt_err("descriptor"))?;
        let mut gemm = Gemm {
            desc,
            layouts: [std::ptr::null_mut(); 3],
            // SAFETY: plain old data, overwritten by the heuristic below.
            algo: unsafe { std::mem::zeroed() },
            candidates: Vec::new(),
            kind,
        };
        let (a_rows, a_cols) = if s.trans_a { (s.k, s.m) } else { (s.m, s.k) };
        let dims = [
            (ab, a_rows, a_cols, s.lda),
            (ab, s.k, s.n, s.ldb),
            (d, s.m, s.n, s.ldd),
        ];
        for (slot, (ty, rows, cols, ld)) in gemm.layouts.iter_mut().zip(dims) {
            *slot = result::create_matrix_layout(ty, rows as u64, cols as u64, ld as i64)
                .map_err(lt_err("matrix layout"))?;
        }
        let set = |attr, value: *const c_void, size| {
            // SAFETY: desc is live; value points at `size` readable bytes.
            unsafe { result::set_matmul_desc_attribute(gemm.desc, attr, value, size) }
                .map_err(lt_err("descriptor attribute"))
        };
        use sys::cublasLtMatmulDescAttributes_t as A;
        let trans = s.trans_a as i32;
        set(
            A::CUBLASLT_MATMUL_DESC_TRANSA,
            (&trans as *const i32).cast(),
            size_of::<i32>(),
        )?;
        let (mode, bias) = match epilogue {
            Epilogue::None => (sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT, None),
            Epilogue::Relu => (sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_RELU, None),
            Epilogue::Bias(p) => (sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS, Some(p)),
            Epilogue::BiasRelu(p) => (
                sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_RELU_BIAS,
                Some(p),
            ),
        };
        set(
            A::CUBLASLT_MATMUL_DESC_EPILOGUE,
            &mode as *const _ as *const c_void,
            size_of::<sys::cublasLtEpilogue_t>(),
        )?;
        if let Some(ptr) = bias {
            set(
                A::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                (&ptr as *const u64).cast(),
                size_of::<u64>(),
            )?;
        }
        let pref = result::create_matmul_pref().map_err(lt_err("preference"))?;
        let bytes = lt.workspace.len();
        let mut results: Vec<sys::cublasLtMatmulHeuristicResult_t> = Vec::with_capacity(CANDIDATES);
        let mut found = 0i32;
        // SAFETY: pref is live; the heuristic reads live descriptors and writes at most
        // CANDIDATES results into the reserved capacity.
        let status = unsafe {
            let _ = result::set_matmul_pref_attribute(
                pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&bytes as *const usize).cast(),
                size_of::<usize>(),
            );
            let status = sys::cublasLtMatmulAlgoGetHeuristic(
                lt.handle,
                gemm.desc,
                gemm.layouts[0],
                gemm.layouts[1],
                gemm.layouts[2],
                gemm.layouts[2],
                pref,
                CANDIDATES as i32,
                results.as_mut_ptr(),
                &mut found,
            );
            let _ = result::destroy_matmul_pref(pref);
            results.set_len(found.clamp(0, CANDIDATES as i32) as usize);
            status
        };
        gemm.candidates = results
            .iter()
            .filter(|r| {
                r.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS && r.workspaceSize <= bytes
            })
            .map(|r| r.algo)
            .collect();
        gemm.algo = *gemm.candidates.first().ok_or_else(|| {
            format!(
                "cuBLASLt has no {kind:?} algorithm for m={} n={} k={} ({status:?})",
                s.m, s.n, s.k
            )
        })?;
        Ok(gemm)
    }

    /// Enqueues `D = A·B` (plus the planned epilogue) on the handle's stream; `a`, `b`, `d` are
    /// device addresses.
    ///
    /// # Safety
    /// `a`, `b` and `d` must address the matrices of the planned shape, in the planned types.
    pub unsafe fn launch(&self, lt: &Lt, a: u64, b: u64, d: u64) -> Result<(), String> {
        let stream = &lt.stream;
        let (w, _rw) = lt.workspace.device_ptr(stream);
        let (one_f, zero_f, one_i, zero_i) = (1f32, 0f32, 1i32, 0i32);
        let (alpha, beta): (*const c_void, *const c_void) = match self.kind {
            GemmKind::I8 => (
                (&one_i as *const i32).cast(),
                (&zero_i as *const i32).cast(),
            ),
            _ => (
                (&one_f as *const f32).cast(),
                (&zero_f as *const f32).cast(),
            ),
        };
        result::matmul(
            lt.handle,
            self.desc,
            alpha,
            beta,
            a as *const c_void,
            self.layouts[0],
            b as *const c_void,
            self.layouts[1],
            d as *const c_void,
            self.layouts[2],
            d as *mut c_void,
            self.layouts[2],
            &self.algo,
            w as *mut c_void,
            lt.workspace.len(),
            stream.cu_stream() as *mut _,
        )
        .map_err(lt_err("matmul"))
    }
}

impl Gemm {
    /// Times each heuristic candidate on the real operands (`time` runs its closure between
    /// CUDA events and returns ms) and keeps the fastest, as TensorRT's builder times tactics.
    /// Returns the index of the kept candidate among those tried.
    ///
    /// # Safety
    /// As [`Gemm::launch`].
    pub unsafe fn tune(
        &mut self,
        lt: &Lt,
        (a, b, d): (u64, u64, u64),
        time: &Stopwatch<'_>,
    ) -> Result<usize, String> {
        if self.candidates.len() < 2 {
            return Ok(0);
        }
        let mut best = (f64::INFINITY, 0);
        for (i, algo) in self.candidates.clone().into_iter().enumerate() {
            self.algo = algo;
            let this = &*self;
            let ms = time(&|| this.launch(lt, a, b, d))?;
            if ms < best.0 {
                best = (ms, i);
            }
        }
        self.algo = self.candidates[best.1];
        Ok(best.1)
    }
}

impl Drop for Gemm {
    fn drop(&mut self) {
        // SAFETY: each descriptor was created once in new (null ones were never created).
        unsafe {
            for layout in self.layouts {
                if !layout.is_null() {
                    let _ = result::destroy_matrix_layout(layout);
                }
            }
            let _ = result::destroy_matmul_desc(self.desc);
        }
    }
}
