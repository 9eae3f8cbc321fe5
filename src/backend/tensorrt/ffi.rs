//! The safe side of the TensorRT shim (`shim/calibench_trt.{h,cpp}`, compiled by build.rs with
//! the `tensorrt` feature): the library opened at run time, engines built from ONNX bytes,
//! engines inspected, and engines run. Each call returns TensorRT's log lines of that call
//! (`call_log`), so they are recorded with the cell that caused them.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::calibrator::CalibratorClass;
use super::call_log;
use super::diagnostics::{LogLine, Severity};
use super::io::{IoTensor, TrtDataType};

#[repr(C)]
struct RawTrt {
    _private: [u8; 0],
}

#[repr(C)]
struct RawEngine {
    _private: [u8; 0],
}

/// One input's shape for the optimization profile.
#[repr(C)]
struct RawShape {
    name: *const c_char,
    nb_dims: i32,
    dims: [i64; 8],
}

#[repr(C)]
struct RawBuildOptions {
    fp16: i32,
    int8: i32,
    cache: *const u8,
    cache_len: usize,
    calibrator: i32,
    strongly_typed: i32,
    workspace_bytes: usize,
    detailed_profiling: i32,
    shapes: *const RawShape,
    nb_shapes: usize,
}

/// One I/O tensor as the shim reports it.
#[repr(C)]
struct RawIo {
    name: *const c_char,
    is_input: i32,
    data_type: i32,
    nb_dims: i32,
    dims: [i64; 8],
}

type LogFn = extern "C" fn(*mut c_void, i32, *const c_char);
type BytesFn = extern "C" fn(*mut c_void, *const u8, usize);

extern "C" {
    fn calibench_trt_open(
        nvinfer: *const c_char,
        parser: *const c_char,
        log: LogFn,
        user: *mut c_void,
        max_severity: i32,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut RawTrt;
    fn calibench_trt_close(trt: *mut RawTrt);
    fn calibench_trt_library_version(trt: *const RawTrt) -> i32;
    fn calibench_trt_header_version() -> i32;
    fn calibench_trt_build(
        trt: *mut RawTrt,
        onnx: *const u8,
        len: usize,
        options: *const RawBuildOptions,
        on_engine: BytesFn,
        user: *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn calibench_trt_inspect(
        trt: *mut RawTrt,
        engine: *const u8,
        len: usize,
        on_json: BytesFn,
        user: *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn calibench_trt_engine_load(
        trt: *mut RawTrt,
        engine: *const u8,
        len: usize,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut RawEngine;
    fn calibench_trt_engine_free(engine: *mut RawEngine);
    fn calibench_trt_engine_nb_io(engine: *const RawEngine) -> i32;
    fn calibench_trt_engine_io(
        engine: *const RawEngine,
        index: i32,
        out: *mut RawIo,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn calibench_trt_engine_set_shape(
        engine: *mut RawEngine,
        shape: *const RawShape,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn calibench_trt_engine_set_tensor(
        engine: *mut RawEngine,
        name: *const c_char,
        ptr: *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn calibench_trt_engine_enqueue(
        engine: *mut RawEngine,
        stream: *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
}

const ERR_LEN: usize = 4096;

/// Why TensorRT could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TrtError {
    /// No library could be opened.
    #[error("TensorRT not found. Searched:\n{}\nfix: install TensorRT {major} (libnvinfer.so.{major}, libnvonnxparser.so.{major}) on the library path, or set CALIBENCH_TENSORRT_LIB to libnvinfer.so.{major} or its folder", searched.join("\n"))]
    NotFound {
        /// Every place tried, with what went wrong.
        searched: Vec<String>,
        /// The major version of the headers calibench was built with.
        major: i32,
    },
    /// A TensorRT call failed.
    #[error("{0}")]
    Call(String),
}

extern "C" fn log_line(_user: *mut c_void, severity: i32, message: *const c_char) {
    if message.is_null() {
        return;
    }
    // SAFETY: `message` is a NUL-terminated string TensorRT owns for the duration of the call.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy();
    let severity = match severity {
        0 => Severity::InternalError,
        1 => Severity::Error,
        2 => Severity::Warning,
        3 => Severity::Info,
        _ => Severity::Verbose,
    };
    call_log::record(severity, &text);
}

extern "C" fn collect_bytes(user: *mut c_void, data: *const u8, len: usize) {
    // SAFETY: `user` is a `&mut Vec<u8>` passed by the caller below; `data` points at `len`
    // bytes valid for the duration of the call.
    let out = unsafe { &mut *(user as *mut Vec<u8>) };
    out.extend_from_slice(unsafe { std::slice::from_raw_parts(data, len) });
}

fn err_buf() -> Vec<u8> {
    vec![0u8; ERR_LEN]
}

fn err_text(buf: &[u8]) -> String {
    CStr::from_bytes_until_nul(buf)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The major TensorRT version calibench was compiled against.
pub fn header_major() -> i32 {
    // SAFETY: returns a constant.
    let v = unsafe { calibench_trt_header_version() };
    if v >= 10_000 {
        v / 10_000
    } else {
        v / 1000
    }
}

/// The places calibench looks for TensorRT, in order: CALIBENCH_TENSORRT_LIB (a file or a
/// folder), then the sonames through the dynamic loader's search path.
pub fn candidates(env: Option<&str>, major: i32) -> Vec<(PathBuf, PathBuf)> {
    let nvinfer = format!("libnvinfer.so.{major}");
    let parser = format!("libnvonnxparser.so.{major}");
    let mut out = Vec::new();
    if let Some(v) = env.filter(|v| !v.is_empty()) {
        let p = Path::new(v);
        if p.is_dir() {
            out.push((p.join(&nvinfer), p.join(&parser)));
        } else {
            let dir = p.parent().unwrap_or(Path::new("."));
            out.push((p.to_path_buf(), dir.join(&parser)));
        }
    }
    out.push((PathBuf::from(nvinfer), PathBuf::from(parser)));
    out
}

/// An opened TensorRT.
pub struct TensorRt {
    raw: *mut RawTrt,
    /// getInferLibVersion() of the library.
    pub library_version: i32,
}

// SAFETY: the shim's handle holds only the opened libraries, their entry points and the logger,
// which forwards to a thread-local collector; every builder, runtime and engine is created per
// call.
unsafe impl Send for TensorRt {}
// SAFETY: as above: calls through &self share no mutable TensorRT object.
unsafe impl Sync for TensorRt {}

/// A call's result with the TensorRT log lines it caused (severity warning or worse).
pub type Logged<T> = (Result<T, TrtError>, Vec<LogLine>);

fn shim_call(rc: i32, err: &[u8]) -> Result<(), TrtError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(TrtError::Call(err_text(err)))
    }
}

impl TensorRt {
    /// Opens TensorRT, trying every candidate.
    pub fn open() -> Result<TensorRt, TrtError> {
        let major = header_major();
        let env = std::env::var("CALIBENCH_TENSORRT_LIB").ok();
        let mut searched = Vec::new();
        for (nvinfer, parser) in candidates(env.as_deref(), major) {
            let (a, b) = (
                CString::new(nvinfer.to_string_lossy().as_bytes()).unwrap_or_default(),
                CString::new(parser.to_string_lossy().as_bytes()).unwrap_or_default(),
            );
            let mut err = err_buf();
            // SAFETY: valid C strings and buffers; the logger needs no user data.
            let raw = unsafe {
                calibench_trt_open(
                    a.as_ptr(),
                    b.as_ptr(),
                    log_line,
                    std::ptr::null_mut(),
                    call_log::forwarded_severity(),
                    err.as_mut_ptr() as *mut c_char,
                    ERR_LEN,
                )
            };
            if raw.is_null() {
                searched.push(format!(
                    "  {} + {}: {}",
                    nvinfer.display(),
                    parser.display(),
                    err_text(&err)
                ));
                continue;
            }
            // SAFETY: `raw` is a live handle.
            let library_version = unsafe { calibench_trt_library_version(raw) };
            return Ok(TensorRt {
                raw,
                library_version,
            });
        }
        Err(TrtError::NotFound { searched, major })
    }

    /// Builds a serialized engine.
    pub fn build(&self, onnx: &[u8], options: &BuildOptions<'_>) -> Logged<Vec<u8>> {
        let names: Vec<CString> = options
            .shapes
            .iter()
            .map(|(n, _)| CString::new(n.as_bytes()).unwrap_or_default())
            .collect();
        let shapes: Vec<RawShape> = options
            .shapes
            .iter()
            .zip(&names)
            .map(|((_, dims), name)| raw_shape(name, dims))
            .collect();
        let raw = RawBuildOptions {
            fp16: options.fp16 as i32,
            int8: options.int8 as i32,
            cache: options.cache.map_or(std::ptr::null(), <[u8]>::as_ptr),
            cache_len: options.cache.map_or(0, <[u8]>::len),
            calibrator: options.calibrator as i32,
            strongly_typed: options.strongly_typed as i32,
            workspace_bytes: options.workspace_bytes,
            detailed_profiling: options.detailed_profiling as i32,
            shapes: shapes.as_ptr(),
            nb_shapes: shapes.len(),
        };
        let mut engine = Vec::new();
        let mut err = err_buf();
        let (rc, log) = call_log::capture(|| {
            // SAFETY: every pointer is valid for the call; `engine` receives the bytes.
            unsafe {
                calibench_trt_build(
                    self.raw,
                    onnx.as_ptr(),
                    onnx.len(),
                    &raw,
                    collect_bytes,
                    &mut engine as *mut Vec<u8> as *mut c_void,
                    err.as_mut_ptr() as *mut c_char,
                    ERR_LEN,
                )
            }
        });
        (shim_call(rc, &err).map(|()| engine), log)
    }

    /// The engine inspector's JSON of a serialized engine.
    pub fn inspect(&self, engine: &[u8]) -> Logged<String> {
        let mut json = Vec::new();
        let mut err = err_buf();
        let (rc, log) = call_log::capture(|| {
            // SAFETY: as in `build`.
            unsafe {
                calibench_trt_inspect(
                    self.raw,
                    engine.as_ptr(),
                    engine.len(),
                    collect_bytes,
                    &mut json as *mut Vec<u8> as *mut c_void,
                    err.as_mut_ptr() as *mut c_char,
                    ERR_LEN,
                )
            }
        });
        (
            shim_call(rc, &err).map(|()| String::from_utf8_lossy(&json).into_owned()),
            log,
        )
    }

    /// Deserializes an engine for running; the engine keeps the library open.
    pub fn load(self: &Arc<Self>, engine: &[u8]) -> Logged<LoadedEngine> {
        let mut err = err_buf();
        let (raw, log) = call_log::capture(|| {
            // SAFETY: as in `build`.
            unsafe {
                calibench_trt_engine_load(
                    self.raw,
                    engine.as_ptr(),
                    engine.len(),
                    err.as_mut_ptr() as *mut c_char,
                    ERR_LEN,
                )
            }
        });
        let result = if raw.is_null() {
            Err(TrtError::Call(err_text(&err)))
        } else {
            Ok(LoadedEngine {
                raw,
                _trt: self.clone(),
            })
        };
        (result, log)
    }
}

fn raw_shape(name: &CString, dims: &[i64]) -> RawShape {
    let mut d = [0i64; 8];
    for (slot, v) in d.iter_mut().zip(dims) {
        *slot = *v;
    }
    RawShape {
        name: name.as_ptr(),
        // More than 8 dimensions is refused by the shim (TensorRT's Dims::MAX_DIMS).
        nb_dims: dims.len().min(9) as i32,
        dims: d,
    }
}

impl Drop for TensorRt {
    fn drop(&mut self) {
        // SAFETY: `raw` was made by `open` and is freed once.
        unsafe { calibench_trt_close(self.raw) }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions<'a> {
    /// BuilderFlag::kFP16.
    pub fp16: bool,
    /// BuilderFlag::kINT8 with the cache calibrator.
    pub int8: bool,
    /// The calibration cache's bytes.
    pub cache: Option<&'a [u8]>,
    /// The calibrator class serving the cache (it must match the cache header's).
    pub calibrator: CalibratorClass,
    /// A strongly typed network (Q/DQ models; always on TensorRT 11).
    pub strongly_typed: bool,
    /// Workspace limit in bytes (0: TensorRT's default).
    pub workspace_bytes: usize,
    /// Detailed profiling verbosity, for the engine inspector.
    pub detailed_profiling: bool,
    /// Input shapes for the optimization profile.
    pub shapes: Vec<(String, Vec<i64>)>,
}

impl Default for BuildOptions<'_> {
    fn default() -> Self {
        BuildOptions {
            fp16: false,
            int8: false,
            cache: None,
            calibrator: CalibratorClass::Entropy2,
            strongly_typed: false,
            workspace_bytes: 0,
            detailed_profiling: false,
            shapes: Vec::new(),
        }
    }
}

/// A deserialized engine with its execution context; it keeps its TensorRt (the library and
/// the logger its runtime uses) alive.
pub struct LoadedEngine {
    raw: *mut RawEngine,
    _trt: Arc<TensorRt>,
}

// SAFETY: an execution context is used from one thread at a time (&mut self).
unsafe impl Send for LoadedEngine {}

impl LoadedEngine {
    /// The engine's I/O tensors, with the execution context's shapes (dynamic dimensions are -1
    /// until `set_shape`).
    pub fn io_tensors(&self) -> Logged<Vec<IoTensor>> {
        call_log::capture(|| {
            // SAFETY: valid handle.
            let n = unsafe { calibench_trt_engine_nb_io(self.raw) };
            if n < 0 {
                return Err(TrtError::Call("getNbIOTensors failed".into()));
            }
            (0..n)
                .map(|i| {
                    let mut raw = RawIo {
                        name: std::ptr::null(),
                        is_input: 0,
                        data_type: 0,
                        nb_dims: 0,
                        dims: [0; 8],
                    };
                    let mut err = err_buf();
                    // SAFETY: valid handle and out-pointer; the name it sets is owned by the
                    // engine and copied at once.
                    let rc = unsafe {
                        calibench_trt_engine_io(
                            self.raw,
                            i,
                            &mut raw,
                            err.as_mut_ptr() as *mut c_char,
                            ERR_LEN,
                        )
                    };
                    shim_call(rc, &err)?;
                    // SAFETY: on success `name` is a NUL-terminated string of the engine.
                    let name = unsafe { CStr::from_ptr(raw.name) }
                        .to_string_lossy()
                        .into_owned();
                    Ok(IoTensor {
                        name,
                        is_input: raw.is_input != 0,
                        dtype: TrtDataType::from_raw(raw.data_type),
                        dims: raw.dims[..raw.nb_dims.clamp(0, 8) as usize].to_vec(),
                    })
                })
                .collect()
        })
    }

    /// Sets an input's shape on the execution context (setInputShape).
    pub fn set_shape(&mut self, name: &str, dims: &[i64]) -> Logged<()> {
        let name = match CString::new(name) {
            Ok(n) => n,
            Err(e) => return (Err(TrtError::Call(e.to_string())), Vec::new()),
        };
        let shape = raw_shape(&name, dims);
        let mut err = err_buf();
        let (rc, log) = call_log::capture(|| {
            // SAFETY: valid handle, shape and buffer.
            unsafe {
                calibench_trt_engine_set_shape(
                    self.raw,
                    &shape,
                    err.as_mut_ptr() as *mut c_char,
                    ERR_LEN,
                )
            }
        });
        (shim_call(rc, &err), log)
    }

    /// Binds a tensor to device memory.
    ///
    /// # Safety
    /// `device_ptr` must point at device memory of the tensor's size on the engine's GPU, alive
    /// until the last enqueue that uses it has finished.
    pub unsafe fn set_tensor(&mut self, name: &str, device_ptr: *mut c_void) -> Logged<()> {
        let name = match CString::new(name) {
            Ok(n) => n,
            Err(e) => return (Err(TrtError::Call(e.to_string())), Vec::new()),
        };
        let mut err = err_buf();
        let (rc, log) = call_log::capture(|| {
            // SAFETY: valid handle, C string and buffer; the caller keeps `device_ptr` alive.
            unsafe {
                calibench_trt_engine_set_tensor(
                    self.raw,
                    name.as_ptr(),
                    device_ptr,
                    err.as_mut_ptr() as *mut c_char,
                    ERR_LEN,
                )
            }
        });
        (shim_call(rc, &err), log)
    }

    /// enqueueV3 on a CUDA stream (the raw CUstream of a cudarc stream).
    ///
    /// # Safety
    /// `stream` must be a live CUDA stream of the engine's device, and every I/O tensor bound.
    pub unsafe fn enqueue(&mut self, stream: *mut c_void) -> Logged<()> {
        let mut err = err_buf();
        let (rc, log) = call_log::capture(|| {
            // SAFETY: valid handle; the stream belongs to the engine's device.
            unsafe {
                calibench_trt_engine_enqueue(
                    self.raw,
                    stream,
                    err.as_mut_ptr() as *mut c_char,
                    ERR_LEN,
                )
            }
        });
        (shim_call(rc, &err), log)
    }
}

impl Drop for LoadedEngine {
    fn drop(&mut self) {
        // SAFETY: made by `load`, freed once.
        unsafe { calibench_trt_engine_free(self.raw) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_order() {
        let dir = tempfile::tempdir().unwrap();
        let c = candidates(Some(dir.path().to_str().unwrap()), 10);
        assert_eq!(c[0].0, dir.path().join("libnvinfer.so.10"));
        assert_eq!(c[0].1, dir.path().join("libnvonnxparser.so.10"));
        assert_eq!(c[1].0, PathBuf::from("libnvinfer.so.10"));
        let c = candidates(Some("/opt/trt/lib/libnvinfer.so.10.14.1"), 10);
        assert_eq!(c[0].1, PathBuf::from("/opt/trt/lib/libnvonnxparser.so.10"));
        assert_eq!(candidates(None, 11).len(), 1);
    }

    #[test]
    fn without_tensorrt_the_error_lists_what_was_searched() {
        match TensorRt::open() {
            Ok(t) => assert!(t.library_version > 0, "TensorRT is installed here"),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("TensorRT not found")
                        && msg.contains("libnvinfer.so.")
                        && msg.contains("CALIBENCH_TENSORRT_LIB"),
                    "{msg}"
                );
            }
        }
    }
}
