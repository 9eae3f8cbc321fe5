// calibench's cuda backend kernels, compiled at run time with nvrtc. T is float or __half;
// arithmetic is done in float. Every kernel is a grid-stride loop over its output.
//
// Fake quantization: a layer whose output tensor has an int8 scale q > 0 stores
// clamp(rint(v / q), -128, 127) * q, exactly what the reference backend's QuantizeLinear →
// DequantizeLinear pair computes (round half to even, saturate to int8). q = 0 leaves v as is.
#include <cuda_fp16.h>

template <typename T> __device__ __forceinline__ float ld(const T* p, int i) { return (float)p[i]; }
template <> __device__ __forceinline__ float ld<__half>(const __half* p, int i) { return __half2float(p[i]); }
template <typename T> __device__ __forceinline__ void st(T* p, int i, float v) { p[i] = (T)v; }
template <> __device__ __forceinline__ void st<__half>(__half* p, int i, float v) { p[i] = __float2half(v); }

__device__ __forceinline__ float fq(float v, float q) {
    return q > 0.0f ? fminf(fmaxf(rintf(v / q), -128.0f), 127.0f) * q : v;
}
// Epilogue of a GEMM layer: quantize the raw output, Relu, quantize the Relu's output.
__device__ __forceinline__ float finish(float v, float q_pre, int relu, float q) {
    v = fq(v, q_pre);
    if (relu && v < 0.0f) v = 0.0f;
    return fq(v, q);
}

// Sizes and indices are 32-bit (the planner refuses tensors of 2^31 elements or more): 64-bit
// division is emulated on the GPU and would dominate these memory-bound kernels.
#define LOOP(n) for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)

// The convolution kernels run on a 3-D grid: x over the output positions of one image
// (OH*OW), y over channels (or patch rows), z over images. Each thread owns one element, so the
// only index arithmetic left is one division by OW.
#define POS3 int pos = blockIdx.x * blockDim.x + threadIdx.x; if (pos >= OH * OW) return; \
    int n = blockIdx.z, ow = pos % OW, oh = pos / OW;

// x[N,C,H,W] -> cols[C*KH*KW, N*OH*OW]; y: patch row.
template <typename T>
__device__ void im2col(const T* x, T* cols, int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW) {
    POS3
    int row = blockIdx.y, kw = row % KW, kh = (row / KW) % KH, c = row / (KW * KH);
    int h = oh * SH - PH + kh, w = ow * SW - PW + kw;
    float v = (h >= 0 && h < H && w >= 0 && w < W) ? ld(x, ((n * C + c) * H + h) * W + w) : 0.0f;
    st(cols, row * (N * OH * OW) + n * OH * OW + pos, v);
}

// x[N,C,H,W] -> int8 patches cols[N*OH*OW, KP] (entries past C*KH*KW are 0), quantized with
// scale s; y: group of 16 patch entries, which the thread packs into one 16-byte store.
template <typename T>
__device__ void im2col_q8(const T* x, signed char* cols, int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW, int KP, float s) {
    POS3
    int group = blockIdx.y, CK = C * KH * KW, row = group * 16;
    int kw = row % KW, kh = (row / KW) % KH, c = row / (KW * KH);
    int packed[4] = {0, 0, 0, 0};
    for (int j = 0; j < 16; ++j, ++row) {
        float v = 0.0f;
        if (row < CK) {
            int h = oh * SH - PH + kh, w = ow * SW - PW + kw;
            if (h >= 0 && h < H && w >= 0 && w < W) v = ld(x, ((n * C + c) * H + h) * W + w);
        }
        int q = (int)fminf(fmaxf(rintf(v / s), -128.0f), 127.0f);
        packed[j / 4] |= (q & 0xff) << (8 * (j % 4));
        if (++kw == KW) { kw = 0; if (++kh == KH) { kh = 0; ++c; } }
    }
    int col = n * OH * OW + pos;
    reinterpret_cast<int4*>(cols)[col * (KP / 16) + group] = make_int4(packed[0], packed[1], packed[2], packed[3]);
}

// x[rows, K] -> int8 cols[rows, KP] (entries past K are 0), quantized with scale s: the patches of
// a Gemm. One thread per 16 entries, one 16-byte store each.
template <typename T>
__device__ void quantize_rows(const T* x, signed char* cols, int rows, int K, int KP, float s) {
    LOOP(rows * (KP / 16)) {
        int row = i / (KP / 16), group = i % (KP / 16);
        int packed[4] = {0, 0, 0, 0};
        for (int j = 0; j < 16; ++j) {
            int k = group * 16 + j;
            float v = k < K ? ld(x, row * K + k) : 0.0f;
            int q = (int)fminf(fmaxf(rintf(v / s), -128.0f), 127.0f);
            packed[j / 4] |= (q & 0xff) << (8 * (j % 4));
        }
        reinterpret_cast<int4*>(cols)[i] = make_int4(packed[0], packed[1], packed[2], packed[3]);
    }
}

// tmp[Cout, N*P] (+ bias[Cout]) -> out[N, Cout, P] with the GEMM epilogue; grid (P, Cout, N).
template <typename T>
__device__ void to_nchw(const T* tmp, const T* bias, T* out, int N, int Cout, int P, int relu, float q_pre, float q) {
    int p = blockIdx.x * blockDim.x + threadIdx.x, c = blockIdx.y, n = blockIdx.z;
    if (p >= P) return;
    float v = ld(tmp, c * (N * P) + n * P + p) + (bias ? ld(bias, c) : 0.0f);
    st(out, (n * Cout + c) * P + p, finish(v, q_pre, relu, q));
}

// int32 acc[Cout, PP] (PP: N*P padded to 4) * scale[c] (+ bias[c]) -> out[N, Cout, P] with the
// GEMM epilogue; grid (P, Cout, N).
template <typename T>
__device__ void dequant(const int* acc, const float* scale, const T* bias, T* out, int N, int Cout, int P, int PP, int relu, float q_pre, float q) {
    int p = blockIdx.x * blockDim.x + threadIdx.x, c = blockIdx.y, n = blockIdx.z;
    if (p >= P) return;
    float v = (float)acc[c * PP + n * P + p] * scale[c] + (bias ? ld(bias, c) : 0.0f);
    st(out, (n * Cout + c) * P + p, finish(v, q_pre, relu, q));
}

// In place GEMM epilogue (after a cuBLASLt GEMM whose output needs fake quantization).
template <typename T>
__device__ void epilogue(T* y, int n, int relu, float q_pre, float q) { LOOP(n) { st(y, i, finish(ld(y, i), q_pre, relu, q)); } }

// op: 0 identity, 1 relu, 2 clip(lo, hi), 3 sigmoid.
template <typename T>
__device__ void unary(const T* x, T* y, int n, int op, float lo, float hi, float q) {
    LOOP(n) {
        float v = ld(x, i);
        if (op == 1) v = fmaxf(v, 0.0f);
        else if (op == 2) v = fminf(fmaxf(v, lo), hi);
        else if (op == 3) v = 1.0f / (1.0f + expf(-v));
        st(y, i, fq(v, q));
    }
}

// y = a (+|*) b over dims d0..d3 with per-operand strides (0 where broadcast).
template <typename T>
__device__ void binary(const T* a, const T* b, T* y, int mul, int d1, int d2, int d3, int n,
                       int a0, int a1, int a2, int a3, int b0, int b1, int b2, int b3, float q) {
    LOOP(n) {
        int i3 = i % d3, i2 = (i / d3) % d2, i1 = (i / (d3 * d2)) % d1, i0 = i / (d3 * d2 * d1);
        float u = ld(a, i0 * a0 + i1 * a1 + i2 * a2 + i3 * a3), v = ld(b, i0 * b0 + i1 * b1 + i2 * b2 + i3 * b3);
        st(y, i, fq(mul ? u * v : u + v, q));
    }
}

// Grid (OH*OW, C, N).
template <typename T>
__device__ void pool(const T* x, T* y, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW, int avg, int include_pad, float q) {
    POS3
    int nc = n * C + blockIdx.y;
    float m = avg ? 0.0f : -3.402823466e38f;
    int count = 0;
    for (int kh = 0; kh < KH; ++kh)
        for (int kw = 0; kw < KW; ++kw) {
            int h = oh * SH - PH + kh, w = ow * SW - PW + kw;
            if (h >= 0 && h < H && w >= 0 && w < W) {
                float v = ld(x, (nc * H + h) * W + w);
                m = avg ? m + v : fmaxf(m, v);
                ++count;
            }
        }
    if (avg) m /= (float)(include_pad ? KH * KW : (count > 0 ? count : 1));
    st(y, nc * OH * OW + pos, fq(m, q));
}

template <typename T>
__device__ void affine(const T* x, T* y, const T* scale, const T* shift, int C, int inner, int n, float q) {
    LOOP(n) { int c = (i / inner) % C; st(y, i, fq(ld(x, i) * ld(scale, c) + ld(shift, c), q)); }
}

// x[outer, chunk] -> y[outer, total] at column offset.
template <typename T>
__device__ void concat(const T* x, T* y, int outer, int chunk, int total, int offset, float q) {
    LOOP(outer * chunk) { int r = i / chunk, j = i % chunk; st(y, r * total + offset + j, fq(ld(x, i), q)); }
}

// Softmax over len elements spaced inner apart, one thread per (outer, inner) row.
template <typename T>
__device__ void softmax(const T* x, T* y, int outer, int len, int inner, float q) {
    LOOP(outer * inner) {
        int base = (i / inner) * len * inner + i % inner;
        float m = -3.402823466e38f, sum = 0.0f;
        for (int j = 0; j < len; ++j) m = fmaxf(m, ld(x, base + j * inner));
        for (int j = 0; j < len; ++j) sum += expf(ld(x, base + j * inner) - m);
        for (int j = 0; j < len; ++j) st(y, base + j * inner, fq(expf(ld(x, base + j * inner) - m) / sum, q));
    }
}

#define WINDOW int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW
#define WARGS N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW
#define INSTANTIATE(NAME, T) \
extern "C" __global__ void im2col_##NAME(const T* x, T* c, WINDOW) { im2col<T>(x, c, WARGS); } \
extern "C" __global__ void im2col_q8_##NAME(const T* x, signed char* c, WINDOW, int KP, float s) { im2col_q8<T>(x, c, WARGS, KP, s); } \
extern "C" __global__ void from_f32_##NAME(const float* x, T* y, int n) { LOOP(n) { st(y, i, x[i]); } } \
extern "C" __global__ void to_f32_##NAME(const T* x, float* y, int n) { LOOP(n) { y[i] = ld(x, i); } } \
extern "C" __global__ void quantize_rows_##NAME(const T* x, signed char* c, int rows, int K, int KP, float s) { quantize_rows<T>(x, c, rows, K, KP, s); } \
extern "C" __global__ void to_nchw_##NAME(const T* t, const T* b, T* o, int N, int Co, int P, int r, float qp, float q) { to_nchw<T>(t, b, o, N, Co, P, r, qp, q); } \
extern "C" __global__ void dequant_##NAME(const int* a, const float* s, const T* b, T* o, int N, int Co, int P, int PP, int r, float qp, float q) { dequant<T>(a, s, b, o, N, Co, P, PP, r, qp, q); } \
extern "C" __global__ void epilogue_##NAME(T* y, int n, int r, float qp, float q) { epilogue<T>(y, n, r, qp, q); } \
extern "C" __global__ void unary_##NAME(const T* x, T* y, int n, int op, float lo, float hi, float q) { unary<T>(x, y, n, op, lo, hi, q); } \
extern "C" __global__ void binary_##NAME(const T* a, const T* b, T* y, int mul, int d1, int d2, int d3, int n, int a0, int a1, int a2, int a3, int b0, int b1, int b2, int b3, float q) { binary<T>(a, b, y, mul, d1, d2, d3, n, a0, a1, a2, a3, b0, b1, b2, b3, q); } \
extern "C" __global__ void pool_##NAME(const T* x, T* y, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW, int avg, int ip, float q) { pool<T>(x, y, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW, avg, ip, q); } \
extern "C" __global__ void affine_##NAME(const T* x, T* y, const T* s, const T* b, int C, int inner, int n, float q) { affine<T>(x, y, s, b, C, inner, n, q); } \
extern "C" __global__ void concat_##NAME(const T* x, T* y, int outer, int chunk, int total, int offset, float q) { concat<T>(x, y, outer, chunk, total, offset, q); } \
extern "C" __global__ void softmax_##NAME(const T* x, T* y, int outer, int len, int inner, float q) { softmax<T>(x, y, outer, len, inner, q); }

INSTANTIATE(f32, float)
INSTANTIATE(f16, __half)
