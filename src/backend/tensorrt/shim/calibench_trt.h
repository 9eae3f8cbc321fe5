/* calibench's C interface to TensorRT (implemented in calibench_trt.cpp).
 *
 * TensorRT is opened at run time with dlopen, so one calibench binary runs on machines with and
 * without it. Every function reports failure through its return value and writes a message to
 * `err` (NUL-terminated, truncated to `err_len`). No C++ exception leaves these functions. */
#ifndef CALIBENCH_TRT_H
#define CALIBENCH_TRT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A TensorRT log line: severity as ILogger::Severity (0 internal error … 4 verbose). */
typedef void (*calibench_trt_log_fn)(void* user, int32_t severity, const char* message);
/* Receives bytes (a serialized engine, inspector JSON). */
typedef void (*calibench_trt_bytes_fn)(void* user, const uint8_t* data, size_t len);

typedef struct CalibenchTrt CalibenchTrt;
typedef struct CalibenchTrtEngine CalibenchTrtEngine;

/* One input's shape for the optimization profile (min = opt = max). */
typedef struct {
    const char* name;
    int32_t nb_dims;
    int64_t dims[8];
} CalibenchTrtShape;

/* The calibrator class that serves the cache; TensorRT uses a cache only when its header names
 * the calibrator it was given. */
enum {
    CALIBENCH_TRT_ENTROPY2 = 0, /* IInt8EntropyCalibrator2, header EntropyCalibration2 */
    CALIBENCH_TRT_ENTROPY = 1,  /* IInt8EntropyCalibrator, header EntropyCalibration */
    CALIBENCH_TRT_MINMAX = 2,   /* IInt8MinMaxCalibrator, header MinMaxCalibration */
    CALIBENCH_TRT_LEGACY = 3    /* IInt8LegacyCalibrator, header LegacyCalibration */
};

typedef struct {
    int32_t fp16;              /* BuilderFlag::kFP16 (TensorRT < 11) */
    int32_t int8;              /* BuilderFlag::kINT8 + the cache calibrator (TensorRT < 11) */
    const uint8_t* cache;      /* calibration cache bytes served by readCalibrationCache, or NULL */
    size_t cache_len;
    int32_t calibrator;        /* CALIBENCH_TRT_ENTROPY2 ... CALIBENCH_TRT_LEGACY */
    int32_t strongly_typed;    /* kSTRONGLY_TYPED network (always so on TensorRT 11) */
    size_t workspace_bytes;    /* MemoryPoolType::kWORKSPACE limit, 0 = TensorRT's default */
    int32_t detailed_profiling;/* ProfilingVerbosity::kDETAILED, needed by the engine inspector */
    const CalibenchTrtShape* shapes;
    size_t nb_shapes;
} CalibenchTrtBuildOptions;

/* One I/O tensor of a loaded engine. `name` is owned by the engine (valid while it lives);
 * `data_type` is nvinfer1::DataType; the shape is the execution context's (after set_shape). */
typedef struct {
    const char* name;
    int32_t is_input;
    int32_t data_type;
    int32_t nb_dims;
    int64_t dims[8];
} CalibenchTrtIo;

/* Opens libnvinfer and libnvonnxparser (paths or sonames) and checks their major version
 * against the headers this shim was compiled with. Log lines more detailed than
 * `max_severity` (ILogger::Severity) are not forwarded. NULL on failure. */
CalibenchTrt* calibench_trt_open(const char* nvinfer, const char* onnxparser, calibench_trt_log_fn log, void* log_user,
                                 int32_t max_severity, char* err, size_t err_len);
void calibench_trt_close(CalibenchTrt* trt);
/* getInferLibVersion() of the opened library, e.g. 101401. */
int32_t calibench_trt_library_version(const CalibenchTrt* trt);
/* NV_TENSORRT_VERSION of the headers the shim was compiled with. */
int32_t calibench_trt_header_version(void);

/* Parses an ONNX model and builds a serialized engine, handed to `on_engine`. 0 on success. */
int32_t calibench_trt_build(CalibenchTrt* trt, const uint8_t* onnx, size_t onnx_len, const CalibenchTrtBuildOptions* options,
                            calibench_trt_bytes_fn on_engine, void* engine_user, char* err, size_t err_len);

/* The engine inspector's JSON of a serialized engine, handed to `on_json`. 0 on success. */
int32_t calibench_trt_inspect(CalibenchTrt* trt, const uint8_t* engine, size_t len, calibench_trt_bytes_fn on_json, void* user,
                              char* err, size_t err_len);

/* Deserializes an engine and creates an execution context. NULL on failure. */
CalibenchTrtEngine* calibench_trt_engine_load(CalibenchTrt* trt, const uint8_t* engine, size_t len, char* err, size_t err_len);
void calibench_trt_engine_free(CalibenchTrtEngine* engine);
/* Number of I/O tensors (getNbIOTensors). */
int32_t calibench_trt_engine_nb_io(const CalibenchTrtEngine* engine);
/* I/O tensor `index` (getIOTensorName, getTensorIOMode, getTensorDataType, the context's
 * getTensorShape). 0 on success. */
int32_t calibench_trt_engine_io(const CalibenchTrtEngine* engine, int32_t index, CalibenchTrtIo* out, char* err, size_t err_len);
/* Binds a tensor by name to device memory (setTensorAddress). 0 on success. */
int32_t calibench_trt_engine_set_tensor(CalibenchTrtEngine* engine, const char* name, void* device_ptr, char* err, size_t err_len);
/* Sets an input's shape for dynamic-shape engines. 0 on success. */
int32_t calibench_trt_engine_set_shape(CalibenchTrtEngine* engine, const CalibenchTrtShape* shape, char* err, size_t err_len);
/* enqueueV3 on a CUDA stream (a CUstream / cudaStream_t). 0 on success. */
int32_t calibench_trt_engine_enqueue(CalibenchTrtEngine* engine, void* stream, char* err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif
