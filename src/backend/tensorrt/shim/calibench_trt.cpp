// calibench's TensorRT shim: the C interface of calibench_trt.h over TensorRT's C++ API.
//
// TensorRT is not linked: its factory entry points (createInferBuilder_INTERNAL,
// createInferRuntime_INTERNAL, createNvOnnxParser_INTERNAL, getInferLibVersion) are looked up
// with dlsym in libraries opened with dlopen. Implicit calibration (the INT8/FP16 builder flags
// and the IInt8*Calibrator classes) exists only for NV_TENSORRT_MAJOR < 11; on TensorRT 11 every
// network is strongly typed and precision comes from the model (a Q/DQ rewrite for int8).
//
// Every extern "C" function runs its body in `guarded` (or its own try), which catches
// everything: no exception crosses into Rust. Messages are built inside; handlers only copy.

#include "calibench_trt.h"

#include <NvInfer.h>
#include <NvOnnxParser.h>

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>

namespace {

// Copies two C strings into `err`; allocates nothing, so it is safe in catch handlers.
void set_error(char* err, size_t err_len, const char* message, const char* detail = "") noexcept {
    if (err == nullptr || err_len == 0) {
        return;
    }
    std::snprintf(err, err_len, "%s%s", message, detail == nullptr ? "" : detail);
}

void set_error(char* err, size_t err_len, const std::string& message) noexcept { set_error(err, err_len, message.c_str()); }

// Runs `body`; an exception becomes `failure`, with `what` and the exception's message in `err`.
// This is what keeps every exception on the C++ side of the extern "C" functions.
template <typename R, typename F>
R guarded(char* err, size_t err_len, const char* what, R failure, F&& body) noexcept {
    try {
        return body();
    } catch (const std::exception& e) {
        set_error(err, err_len, what, e.what());
    } catch (...) {
        set_error(err, err_len, what, "an unknown exception");
    }
    return failure;
}

using CreateFn = void* (*)(void*, int32_t);
using CreateParserFn = void* (*)(void*, void*, int);
using VersionFn = int32_t (*)();

// Forwards TensorRT's log lines up to a severity to calibench.
class ForwardingLogger : public nvinfer1::ILogger {
public:
    ForwardingLogger(calibench_trt_log_fn fn, void* user, int32_t max_severity)
        : fn_(fn), user_(user), max_severity_(max_severity) {}
    void log(Severity severity, const char* msg) noexcept override {
        if (fn_ != nullptr && msg != nullptr && static_cast<int32_t>(severity) <= max_severity_) {
            fn_(user_, static_cast<int32_t>(severity), msg);
        }
    }

private:
    calibench_trt_log_fn fn_;
    void* user_;
    int32_t max_severity_;
};

#if NV_TENSORRT_MAJOR < 11
// Serves an existing calibration cache and never asks for data, as trtexec --calib does. The
// class must match the cache header's calibrator, or TensorRT ignores the cache.
template <typename Base>
class CacheCalibrator : public Base {
public:
    CacheCalibrator(const uint8_t* cache, size_t len) : cache_(cache), len_(len) {}
    int32_t getBatchSize() const noexcept override { return 1; }
    bool getBatch(void* /*bindings*/[], const char* /*names*/[], int32_t /*nbBindings*/) noexcept override { return false; }
    const void* readCalibrationCache(std::size_t& length) noexcept override {
        length = len_;
        return len_ > 0 ? cache_ : nullptr;
    }
    void writeCalibrationCache(const void* /*ptr*/, std::size_t /*length*/) noexcept override {}

private:
    const uint8_t* cache_;
    size_t len_;
};

// The legacy calibrator's extra questions; TensorRT asks them only when it calibrates.
class LegacyCacheCalibrator : public CacheCalibrator<nvinfer1::IInt8LegacyCalibrator> {
public:
    using CacheCalibrator<nvinfer1::IInt8LegacyCalibrator>::CacheCalibrator;
    double getQuantile() const noexcept override { return 0.9999; }
    double getRegressionCutoff() const noexcept override { return 1.0; }
    const void* readHistogramCache(std::size_t& length) noexcept override {
        length = 0;
        return nullptr;
    }
    void writeHistogramCache(const void* /*ptr*/, std::size_t /*length*/) noexcept override {}
};

std::unique_ptr<nvinfer1::IInt8Calibrator> make_calibrator(int32_t kind, const uint8_t* cache, size_t len) {
    switch (kind) {
        case CALIBENCH_TRT_ENTROPY2:
            return std::unique_ptr<nvinfer1::IInt8Calibrator>(new CacheCalibrator<nvinfer1::IInt8EntropyCalibrator2>(cache, len));
        case CALIBENCH_TRT_ENTROPY:
            return std::unique_ptr<nvinfer1::IInt8Calibrator>(new CacheCalibrator<nvinfer1::IInt8EntropyCalibrator>(cache, len));
        case CALIBENCH_TRT_MINMAX:
            return std::unique_ptr<nvinfer1::IInt8Calibrator>(new CacheCalibrator<nvinfer1::IInt8MinMaxCalibrator>(cache, len));
        case CALIBENCH_TRT_LEGACY:
            return std::unique_ptr<nvinfer1::IInt8Calibrator>(new LegacyCacheCalibrator(cache, len));
        default:
            return nullptr;
    }
}
#endif

template <typename T>
struct Deleter {
    void operator()(T* p) const noexcept { delete p; }
};
template <typename T>
using Owned = std::unique_ptr<T, Deleter<T>>;

bool to_dims(const CalibenchTrtShape& s, nvinfer1::Dims& d) {
    if (s.nb_dims < 0 || s.nb_dims > nvinfer1::Dims::MAX_DIMS) {
        return false;
    }
    d = nvinfer1::Dims{};
    d.nbDims = s.nb_dims;
    for (int32_t i = 0; i < s.nb_dims; ++i) {
        d.d[i] = s.dims[i];
    }
    return true;
}

std::string dims_text(const CalibenchTrtShape& s) {
    std::string out = "[";
    for (int32_t i = 0; i < s.nb_dims && i < 8; ++i) {
        out += (i > 0 ? "," : "") + std::to_string(s.dims[i]);
    }
    return out + "]";
}

}  // namespace

struct CalibenchTrt {
    void* nvinfer = nullptr;
    void* parser = nullptr;
    CreateFn create_builder = nullptr;
    CreateFn create_runtime = nullptr;
    CreateParserFn create_parser = nullptr;
    VersionFn library_version = nullptr;
    ForwardingLogger logger;
    CalibenchTrt(calibench_trt_log_fn fn, void* user, int32_t max_severity) : logger(fn, user, max_severity) {}
    ~CalibenchTrt() {
        if (parser != nullptr) dlclose(parser);
        if (nvinfer != nullptr) dlclose(nvinfer);
    }
};

struct CalibenchTrtEngine {
    Owned<nvinfer1::IRuntime> runtime;
    Owned<nvinfer1::ICudaEngine> engine;
    Owned<nvinfer1::IExecutionContext> context;
};

extern "C" {

int32_t calibench_trt_header_version(void) { return NV_TENSORRT_VERSION; }

CalibenchTrt* calibench_trt_open(const char* nvinfer, const char* onnxparser, calibench_trt_log_fn log, void* log_user,
                                 int32_t max_severity, char* err, size_t err_len) {
    return guarded(err, err_len, "opening TensorRT threw: ", static_cast<CalibenchTrt*>(nullptr), [&]() -> CalibenchTrt* {
        std::unique_ptr<CalibenchTrt> trt(new CalibenchTrt(log, log_user, max_severity));
        trt->nvinfer = dlopen(nvinfer, RTLD_NOW | RTLD_LOCAL);
        if (trt->nvinfer == nullptr) {
            set_error(err, err_len, std::string("cannot open ") + nvinfer + ": " + dlerror());
            return nullptr;
        }
        trt->parser = dlopen(onnxparser, RTLD_NOW | RTLD_LOCAL);
        if (trt->parser == nullptr) {
            set_error(err, err_len, std::string("cannot open ") + onnxparser + ": " + dlerror());
            return nullptr;
        }
        trt->create_builder = reinterpret_cast<CreateFn>(dlsym(trt->nvinfer, "createInferBuilder_INTERNAL"));
        trt->create_runtime = reinterpret_cast<CreateFn>(dlsym(trt->nvinfer, "createInferRuntime_INTERNAL"));
        trt->library_version = reinterpret_cast<VersionFn>(dlsym(trt->nvinfer, "getInferLibVersion"));
        trt->create_parser = reinterpret_cast<CreateParserFn>(dlsym(trt->parser, "createNvOnnxParser_INTERNAL"));
        if (!trt->create_builder || !trt->create_runtime || !trt->library_version || !trt->create_parser) {
            set_error(err, err_len, "a TensorRT entry point is missing (createInferBuilder_INTERNAL, createInferRuntime_INTERNAL, "
                                    "getInferLibVersion or createNvOnnxParser_INTERNAL): not a TensorRT library");
            return nullptr;
        }
        const int32_t version = trt->library_version();
        // The major version is the leading digits: 101401 -> 10 (TensorRT >= 10), 8601 -> 8.
        const int32_t major = version >= 10000 ? version / 10000 : version / 1000;
        if (major != NV_TENSORRT_MAJOR) {
            set_error(err, err_len, std::string("the TensorRT library is version ") + std::to_string(version) +
                                        " but calibench was built with TensorRT " + std::to_string(NV_TENSORRT_MAJOR) +
                                        " headers: rebuild calibench against this TensorRT (TENSORRT_ROOT)");
            return nullptr;
        }
        return trt.release();
    });
}

void calibench_trt_close(CalibenchTrt* trt) { delete trt; }

int32_t calibench_trt_library_version(const CalibenchTrt* trt) { return trt->library_version(); }

int32_t calibench_trt_build(CalibenchTrt* trt, const uint8_t* onnx, size_t onnx_len, const CalibenchTrtBuildOptions* options,
                            calibench_trt_bytes_fn on_engine, void* engine_user, char* err, size_t err_len) {
    return guarded(err, err_len, "TensorRT threw while building: ", int32_t{5}, [&]() -> int32_t {
        Owned<nvinfer1::IBuilder> builder(
            static_cast<nvinfer1::IBuilder*>(trt->create_builder(&trt->logger, NV_TENSORRT_VERSION)));
        if (!builder) {
            set_error(err, err_len, "createInferBuilder failed (is a CUDA device available?)");
            return 1;
        }
        uint32_t flags = 0;
#if NV_TENSORRT_MAJOR < 11
        if (options->strongly_typed) {
            flags |= 1U << static_cast<uint32_t>(nvinfer1::NetworkDefinitionCreationFlag::kSTRONGLY_TYPED);
        }
#endif
        Owned<nvinfer1::INetworkDefinition> network(builder->createNetworkV2(flags));
        if (!network) {
            set_error(err, err_len, "createNetworkV2 failed");
            return 1;
        }
        Owned<nvonnxparser::IParser> parser(
            static_cast<nvonnxparser::IParser*>(trt->create_parser(network.get(), &trt->logger, NV_ONNX_PARSER_VERSION)));
        if (!parser) {
            set_error(err, err_len, "createNvOnnxParser failed");
            return 1;
        }
        if (!parser->parse(onnx, onnx_len)) {
            std::string message = "the ONNX parser failed:";
            for (int32_t i = 0; i < parser->getNbErrors(); ++i) {
                const nvonnxparser::IParserError* e = parser->getError(i);
                if (e == nullptr) continue;
                message += std::string("\n  node ") + std::to_string(e->node()) + " (" + (e->nodeName() ? e->nodeName() : "") +
                           ", " + (e->nodeOperator() ? e->nodeOperator() : "") + "): " + (e->desc() ? e->desc() : "");
            }
            set_error(err, err_len, message);
            return 2;
        }
        Owned<nvinfer1::IBuilderConfig> config(builder->createBuilderConfig());
        if (!config) {
            set_error(err, err_len, "createBuilderConfig failed");
            return 1;
        }
        if (options->workspace_bytes > 0) {
            config->setMemoryPoolLimit(nvinfer1::MemoryPoolType::kWORKSPACE, options->workspace_bytes);
        }
        if (options->detailed_profiling) {
            config->setProfilingVerbosity(nvinfer1::ProfilingVerbosity::kDETAILED);
        }
        if (options->nb_shapes > 0) {
            nvinfer1::IOptimizationProfile* profile = builder->createOptimizationProfile();
            if (profile == nullptr) {
                set_error(err, err_len, "createOptimizationProfile failed");
                return 1;
            }
            for (size_t i = 0; i < options->nb_shapes; ++i) {
                const CalibenchTrtShape& shape = options->shapes[i];
                nvinfer1::Dims d{};
                if (!to_dims(shape, d)) {
                    set_error(err, err_len, std::string("input ") + shape.name + " has " + std::to_string(shape.nb_dims) +
                                                " dimensions; TensorRT takes at most 8");
                    return 3;
                }
                for (nvinfer1::OptProfileSelector s : {nvinfer1::OptProfileSelector::kMIN, nvinfer1::OptProfileSelector::kOPT,
                                                       nvinfer1::OptProfileSelector::kMAX}) {
                    if (!profile->setDimensions(shape.name, s, d)) {
                        set_error(err, err_len, std::string("the optimization profile rejects shape ") + dims_text(shape) +
                                                    " for input " + shape.name +
                                                    " (no such input, wrong rank, or it contradicts the model's static dimensions)");
                        return 3;
                    }
                }
            }
            if (config->addOptimizationProfile(profile) < 0) {
                set_error(err, err_len, "the optimization profile is invalid (TensorRT's log says why)");
                return 3;
            }
        }
#if NV_TENSORRT_MAJOR < 11
        std::unique_ptr<nvinfer1::IInt8Calibrator> calibrator;
        if (options->fp16) {
            config->setFlag(nvinfer1::BuilderFlag::kFP16);
        }
        if (options->int8) {
            config->setFlag(nvinfer1::BuilderFlag::kINT8);
            if (options->cache != nullptr && options->cache_len > 0) {
                calibrator = make_calibrator(options->calibrator, options->cache, options->cache_len);
                if (!calibrator) {
                    set_error(err, err_len, std::string("unknown calibrator class ") + std::to_string(options->calibrator));
                    return 3;
                }
                config->setInt8Calibrator(calibrator.get());
            }
        }
#else
        if (options->fp16 || options->int8 || options->cache != nullptr) {
            set_error(err, err_len, "TensorRT 11 has no INT8/FP16 builder flags or calibrators: give a Q/DQ model "
                                    "(calibench cache to-qdq) or an fp16-cast model instead");
            return 3;
        }
#endif
        Owned<nvinfer1::IHostMemory> plan(builder->buildSerializedNetwork(*network, *config));
        if (!plan || plan->size() == 0) {
            set_error(err, err_len, "TensorRT could not build the engine");
            return 4;
        }
        on_engine(engine_user, static_cast<const uint8_t*>(plan->data()), plan->size());
        return 0;
    });
}

static Owned<nvinfer1::IRuntime> make_runtime(CalibenchTrt* trt) {
    return Owned<nvinfer1::IRuntime>(static_cast<nvinfer1::IRuntime*>(trt->create_runtime(&trt->logger, NV_TENSORRT_VERSION)));
}

int32_t calibench_trt_inspect(CalibenchTrt* trt, const uint8_t* engine_bytes, size_t len, calibench_trt_bytes_fn on_json, void* user,
                              char* err, size_t err_len) {
    return guarded(err, err_len, "TensorRT threw while inspecting the engine: ", int32_t{5}, [&]() -> int32_t {
        Owned<nvinfer1::IRuntime> runtime = make_runtime(trt);
        if (!runtime) {
            set_error(err, err_len, "createInferRuntime failed");
            return 1;
        }
        Owned<nvinfer1::ICudaEngine> engine(runtime->deserializeCudaEngine(engine_bytes, len));
        if (!engine) {
            set_error(err, err_len, "the engine could not be deserialized (built by another TensorRT or for another GPU?)");
            return 2;
        }
        Owned<nvinfer1::IEngineInspector> inspector(engine->createEngineInspector());
        const char* json = inspector ? inspector->getEngineInformation(nvinfer1::LayerInformationFormat::kJSON) : nullptr;
        if (json == nullptr) {
            set_error(err, err_len, "the engine inspector returned nothing");
            return 3;
        }
        on_json(user, reinterpret_cast<const uint8_t*>(json), std::strlen(json));
        return 0;
    });
}

CalibenchTrtEngine* calibench_trt_engine_load(CalibenchTrt* trt, const uint8_t* bytes, size_t len, char* err, size_t err_len) {
    return guarded(err, err_len, "TensorRT threw while loading the engine: ", static_cast<CalibenchTrtEngine*>(nullptr), [&]() -> CalibenchTrtEngine* {
        std::unique_ptr<CalibenchTrtEngine> e(new CalibenchTrtEngine());
        e->runtime = make_runtime(trt);
        if (!e->runtime) {
            set_error(err, err_len, "createInferRuntime failed");
            return nullptr;
        }
        e->engine.reset(e->runtime->deserializeCudaEngine(bytes, len));
        if (!e->engine) {
            set_error(err, err_len, "the engine could not be deserialized (built by another TensorRT or for another GPU?)");
            return nullptr;
        }
        e->context.reset(e->engine->createExecutionContext());
        if (!e->context) {
            set_error(err, err_len, "cannot create an execution context (out of GPU memory?)");
            return nullptr;
        }
        return e.release();
    });
}

void calibench_trt_engine_free(CalibenchTrtEngine* engine) {
    if (engine != nullptr) {
        // The context before the engine before the runtime.
        engine->context.reset();
        engine->engine.reset();
        engine->runtime.reset();
        delete engine;
    }
}

int32_t calibench_trt_engine_nb_io(const CalibenchTrtEngine* engine) {
    try {
        return engine->engine->getNbIOTensors();
    } catch (...) {
        return -1;
    }
}

int32_t calibench_trt_engine_io(const CalibenchTrtEngine* engine, int32_t index, CalibenchTrtIo* out, char* err, size_t err_len) {
    return guarded(err, err_len, "TensorRT threw while listing I/O tensors: ", int32_t{5}, [&]() -> int32_t {
        const char* name = engine->engine->getIOTensorName(index);
        if (name == nullptr) {
            set_error(err, err_len, std::string("no I/O tensor at index ") + std::to_string(index));
            return 1;
        }
        const nvinfer1::Dims d = engine->context->getTensorShape(name);
        if (d.nbDims < 0 || d.nbDims > 8) {
            set_error(err, err_len, std::string("tensor ") + name + " has no valid shape (" + std::to_string(d.nbDims) + " dims)");
            return 1;
        }
        out->name = name;
        out->is_input = engine->engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT ? 1 : 0;
        out->data_type = static_cast<int32_t>(engine->engine->getTensorDataType(name));
        out->nb_dims = d.nbDims;
        for (int32_t i = 0; i < d.nbDims; ++i) {
            out->dims[i] = d.d[i];
        }
        return 0;
    });
}

int32_t calibench_trt_engine_set_tensor(CalibenchTrtEngine* engine, const char* name, void* device_ptr, char* err, size_t err_len) {
    return guarded(err, err_len, "TensorRT threw in setTensorAddress: ", int32_t{5}, [&]() -> int32_t {
        if (!engine->context->setTensorAddress(name, device_ptr)) {
            set_error(err, err_len, std::string("setTensorAddress rejected tensor ") + name +
                                        " (no such I/O tensor, or a misaligned address)");
            return 1;
        }
        return 0;
    });
}

int32_t calibench_trt_engine_set_shape(CalibenchTrtEngine* engine, const CalibenchTrtShape* shape, char* err, size_t err_len) {
    return guarded(err, err_len, "TensorRT threw in setInputShape: ", int32_t{5}, [&]() -> int32_t {
        nvinfer1::Dims d{};
        if (!to_dims(*shape, d) || !engine->context->setInputShape(shape->name, d)) {
            set_error(err, err_len, std::string("setInputShape rejected ") + dims_text(*shape) + " for input " + shape->name +
                                        " (outside the engine's optimization profile?)");
            return 1;
        }
        return 0;
    });
}

int32_t calibench_trt_engine_enqueue(CalibenchTrtEngine* engine, void* stream, char* err, size_t err_len) {
    return guarded(err, err_len, "TensorRT threw in enqueueV3: ", int32_t{5}, [&]() -> int32_t {
        if (!engine->context->enqueueV3(static_cast<cudaStream_t>(stream))) {
            set_error(err, err_len, "enqueueV3 failed (an unbound tensor, an unset input shape, or a CUDA error)");
            return 1;
        }
        return 0;
    });
}

}  // extern "C"
