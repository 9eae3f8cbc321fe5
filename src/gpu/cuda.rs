//! CUDA through cudarc, loaded at run time (libcuda, libnvrtc): a context and stream per GPU,
//! device buffers, CUDA-event timing, and a fixed-duration kernel for checking timers.

use std::sync::Arc;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaStream, LaunchConfig, PushKernelArg,
};

use super::GpuError;

fn cuda_err(e: impl std::fmt::Display) -> GpuError {
    GpuError::Cuda(e.to_string())
}

/// Whether libcuda can be loaded here (without it, cudarc would abort on first use).
pub fn driver_present() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether libnvrtc can be loaded here.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// NVML's spelling of a GPU UUID ("GPU-" and 8-4-4-4-12 hex digits) from its 16 bytes.
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        hex[..4].concat(),
        hex[4..6].concat(),
        hex[6..8].concat(),
        hex[8..10].concat(),
        hex[10..].concat()
    )
}

/// The CUDA ordinal of the GPU NVML names by `uuid`. CUDA orders GPUs fastest first unless
/// CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML by PCI bus, so on a mixed host the two indices differ;
/// the UUID is what both agree on.
pub fn ordinal_for_uuid(uuid: &str) -> Result<usize, GpuError> {
    if !driver_present() {
        return Err(GpuError::CudaUnavailable(
            "libcuda.so could not be loaded".into(),
        ));
    }
    use cudarc::driver::result;
    result::init().map_err(cuda_err)?;
    let count = result::device::get_count().map_err(cuda_err)?;
    for ordinal in 0..count {
        let dev = result::device::get(ordinal).map_err(cuda_err)?;
        let id = result::device::get_uuid(dev).map_err(cuda_err)?;
        let bytes: [u8; 16] = id.bytes.map(|b| b as u8);
        if format_uuid(&bytes).eq_ignore_ascii_case(uuid) {
            return Ok(ordinal as usize);
        }
    }
    Err(GpuError::Cuda(format!(
        "no CUDA device has UUID {uuid} (NVML lists it; CUDA_VISIBLE_DEVICES may hide it)"
    )))
}

/// A CUDA context on one GPU with the stream calibench runs and times work on.
#[derive(Debug, Clone)]
pub struct GpuContext {
    /// The context.
    pub ctx: Arc<CudaContext>,
    /// The stream engines run on.
    pub stream: Arc<CudaStream>,
}

impl GpuContext {
    /// A context and a new (non-default) stream on GPU `ordinal` (CUDA's ordering).
    pub fn new(ordinal: usize) -> Result<GpuContext, GpuError> {
        if !driver_present() {
            return Err(GpuError::CudaUnavailable(
                "libcuda.so could not be loaded".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(cuda_err)?;
        // Everything calibench does on a context runs on its one stream, so stream order is all
        // the synchronization needed. cudarc's cross-stream event tracking would make stream
        // capture wait on events recorded outside it, which invalidates CUDA graph capture.
        // SAFETY: no buffer of this context is used on another stream.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(cuda_err)?;
        Ok(GpuContext { ctx, stream })
    }

    /// A pair of timing-enabled events on this context.
    pub fn timer(&self) -> Result<EventTimer, GpuError> {
        let make = || {
            self.ctx
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(cuda_err)
        };
        Ok(EventTimer {
            start: make()?,
            end: make()?,
            stream: self.stream.clone(),
        })
    }

    /// Waits for all work on the stream.
    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.stream.synchronize().map_err(cuda_err)
    }
}

/// GPU time of work enqueued on a stream, from two timing-enabled events.
#[derive(Debug)]
pub struct EventTimer {
    start: CudaEvent,
    end: CudaEvent,
    stream: Arc<CudaStream>,
}

impl EventTimer {
    /// Records the start event, runs `enqueue` (which must only enqueue on the stream), records
    /// the end event, waits for it, and returns the GPU time between the two in ms.
    pub fn time<E: From<GpuError>>(
        &self,
        enqueue: impl FnOnce() -> Result<(), E>,
    ) -> Result<f64, E> {
        self.start.record(&self.stream).map_err(cuda_err)?;
        enqueue()?;
        self.end.record(&self.stream).map_err(cuda_err)?;
        self.end.synchronize().map_err(cuda_err)?;
        Ok(f64::from(
            self.start.elapsed_ms(&self.end).map_err(cuda_err)?,
        ))
    }
}

/// How the host waits for timed GPU work (trtexec's `--useSpinWait` is [`SyncMode::Spin`]).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Busy-wait on the end event: lowest wake-up latency, one CPU core busy.
    #[default]
    Spin,
    /// Block the host thread until the event completes (yields the CPU).
    Blocking,
}

/// GPU time of enqueued work from CUDA events: one timing-enabled event pair around all the
/// iterations of a sample (no synchronize between iterations), which is GPU compute time as
/// trtexec reports it. With a CUDA graph, the enqueue sequence is captured once and each
/// iteration is one graph launch (trtexec's `--useCudaGraph`).
pub struct CudaEventTimer<F> {
    start: CudaEvent,
    end: CudaEvent,
    stream: Arc<CudaStream>,
    enqueue: F,
    graph: Option<cudarc::driver::CudaGraph>,
}

impl<F: FnMut() -> Result<(), GpuError>> CudaEventTimer<F> {
    /// A timer for `enqueue` on a context's stream.
    pub fn new(
        ctx: &GpuContext,
        sync: SyncMode,
        use_graph: bool,
        mut enqueue: F,
    ) -> Result<Self, GpuError> {
        let flags = match sync {
            SyncMode::Spin => CUevent_flags::CU_EVENT_DEFAULT,
            SyncMode::Blocking => CUevent_flags::CU_EVENT_BLOCKING_SYNC,
        };
        let start = ctx.ctx.new_event(Some(flags)).map_err(cuda_err)?;
        let end = ctx.ctx.new_event(Some(flags)).map_err(cuda_err)?;
        let graph = if use_graph {
            use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
            ctx.stream
                .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .map_err(cuda_err)?;
            let captured = enqueue();
            let graph = ctx
                .stream
                .end_capture(CUgraphInstantiate_flags(0))
                .map_err(cuda_err)?;
            captured?;
            let graph = graph
                .ok_or_else(|| GpuError::Cuda("the CUDA graph capture recorded no work".into()))?;
            graph.upload().map_err(cuda_err)?;
            Some(graph)
        } else {
            None
        };
        Ok(CudaEventTimer {
            start,
            end,
            stream: ctx.stream.clone(),
            enqueue,
            graph,
        })
    }
}

impl<F: FnMut() -> Result<(), GpuError>> crate::measure::latency::IterationTimer
    for CudaEventTimer<F>
{
    type Error = GpuError;

    fn clock(&self) -> &'static str {
        if self.graph.is_some() {
            "cuda-event (graph)"
        } else {
            "cuda-event"
        }
    }

    fn time(&mut self, iters: u64) -> Result<std::time::Duration, GpuError> {
        self.start.record(&self.stream).map_err(cuda_err)?;
        for _ in 0..iters {
            match &self.graph {
                Some(g) => g.launch().map_err(cuda_err)?,
                None => (self.enqueue)()?,
            }
        }
        self.end.record(&self.stream).map_err(cuda_err)?;
        self.end.synchronize().map_err(cuda_err)?;
        let ms = self.start.elapsed_ms(&self.end).map_err(cuda_err)?;
        Ok(std::time::Duration::from_secs_f64(f64::from(ms) / 1e3))
    }
}

/// A kernel that spins for a fixed number of SM clock cycles: a known amount of GPU time for
/// checking timers and for loading a GPU while telemetry is sampled.
pub struct SpinKernel {
    func: CudaFunction,
    ctx: GpuContext,
}

const SPIN_SOURCE: &str = r#"
extern "C" __global__ void calibench_spin(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) { }
}
"#;

impl SpinKernel {
    /// Compiles the kernel with nvrtc and loads it on a context.
    pub fn new(ctx: &GpuContext) -> Result<SpinKernel, GpuError> {
        if !nvrtc_present() {
            return Err(GpuError::CudaUnavailable(
                "libnvrtc.so could not be loaded".into(),
            ));
        }
        let ptx = cudarc::nvrtc::compile_ptx(SPIN_SOURCE).map_err(cuda_err)?;
        let module = ctx.ctx.load_module(ptx).map_err(cuda_err)?;
        let func = module.load_function("calibench_spin").map_err(cuda_err)?;
        Ok(SpinKernel {
            func,
            ctx: ctx.clone(),
        })
    }

    /// Enqueues one launch (1 block of 1 thread) spinning for `cycles` SM cycles.
    pub fn enqueue(&self, cycles: i64) -> Result<(), GpuError> {
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = self.ctx.stream.launch_builder(&self.func);
        launch.arg(&cycles);
        // SAFETY: the kernel takes one 64-bit integer and touches no memory.
        unsafe { launch.launch(cfg) }.map(drop).map_err(cuda_err)
    }

    /// Enqueues `blocks` blocks, enough to occupy every SM (a load for telemetry).
    pub fn enqueue_wide(&self, cycles: i64, blocks: u32) -> Result<(), GpuError> {
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = self.ctx.stream.launch_builder(&self.func);
        launch.arg(&cycles);
        // SAFETY: as above.
        unsafe { launch.launch(cfg) }.map(drop).map_err(cuda_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_spelled_as_nvml_does() {
        let bytes = [
            0x2b, 0xbe, 0x1d, 0x5c, 0x1b, 0x10, 0x5e, 0x16, 0x26, 0x02, 0x4c, 0x55, 0xa5, 0xbd,
            0x4d, 0x21,
        ];
        assert_eq!(
            format_uuid(&bytes),
            "GPU-2bbe1d5c-1b10-5e16-2602-4c55a5bd4d21"
        );
    }

    #[test]
    #[ignore = "needs a GPU"]
    fn cuda_event_timer_amortizes_over_iterations_and_captures_graphs() {
        use crate::measure::latency::IterationTimer;
        assert!(
            driver_present() && nvrtc_present(),
            "this test needs a GPU with nvrtc: run `cargo test -- --ignored` on one"
        );
        let ctx = GpuContext::new(0).unwrap();
        let spin = SpinKernel::new(&ctx).unwrap();
        for graph in [false, true] {
            let mut t =
                CudaEventTimer::new(&ctx, SyncMode::Spin, graph, || spin.enqueue(200_000)).unwrap();
            let one = t.time(1).unwrap().as_secs_f64();
            let ten = t.time(10).unwrap().as_secs_f64();
            assert!(
                ten > 8.0 * one && ten < 12.0 * one,
                "graph={graph}: {one} s vs {ten} s"
            );
        }
        let mut blocking =
            CudaEventTimer::new(&ctx, SyncMode::Blocking, false, || spin.enqueue(200_000)).unwrap();
        assert!(blocking.time(3).unwrap().as_secs_f64() > 0.0);
    }

    #[test]
    #[ignore = "needs a GPU"]
    fn event_timer_measures_a_spin_kernel() {
        assert!(
            driver_present() && nvrtc_present(),
            "this test needs a GPU with nvrtc: run `cargo test -- --ignored` on one"
        );
        let ctx = GpuContext::new(0).unwrap();
        let spin = SpinKernel::new(&ctx).unwrap();
        let timer = ctx.timer().unwrap();
        let short = timer.time::<GpuError>(|| spin.enqueue(1_000_000)).unwrap();
        let long = timer.time::<GpuError>(|| spin.enqueue(10_000_000)).unwrap();
        assert!(
            long > 5.0 * short,
            "10x the cycles: {short} ms vs {long} ms"
        );
    }
}
