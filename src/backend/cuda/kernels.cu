// calibench's cuda backend kernels, compiled at run time with nvrtc. T is float or __half;
// arithmetic is done in float. Every kernel is a grid-stride loop over its output.
#include <cuda_fp16.h>

template <typename T> __device__ __forceinline__ float ld(const T* p, long long i) { return (float)p[i]; }
template <> __device__ __forceinline__ float ld<__half>(const __half* p, long long i) { return __half2float(p[i]); }
template <typename T> __device__ __forceinline__ void st(T* p, long long i, float v) { p[i] = (T)v; }
template <> __device__ __forceinline__ void st<__half>(__half* p, long long i, float v) { p[i] = __float2half(v); }

#define LOOP(n) for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)blockDim.x * gridDim.x)

// x[N,C,H,W] -> cols[C*KH*KW, N*OH*OW]
template <typename T>
__device__ void im2col(const T* x, T* cols, int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW) {
    long long P = (long long)N * OH * OW;
    LOOP((long long)C * KH * KW * P) {
        long long col = i % P, row = i / P;
        int kw = row % KW, kh = (row / KW) % KH, c = row / (KW * KH);
        int ow = col % OW, oh = (col / OW) % OH, n = col / ((long long)OW * OH);
        int h = oh * SH - PH + kh, w = ow * SW - PW + kw;
        float v = (h >= 0 && h < H && w >= 0 && w < W) ? ld(x, (((long long)n * C + c) * H + h) * W + w) : 0.0f;
        st(cols, i, v);
    }
}

// tmp[Cout, N*P] (+ bias[Cout], optional relu) -> out[N, Cout, P]
template <typename T>
__device__ void to_nchw(const T* tmp, const T* bias, T* out, int N, int Cout, int P, int relu) {
    LOOP((long long)N * Cout * P) {
        long long p = i % P, c = (i / P) % Cout, n = i / ((long long)P * Cout);
        float v = ld(tmp, c * ((long long)N * P) + n * P + p) + (bias ? ld(bias, c) : 0.0f);
        st(out, i, relu && v < 0.0f ? 0.0f : v);
    }
}

template <typename T>
__device__ void relu(const T* x, T* y, long long n) { LOOP(n) { float v = ld(x, i); st(y, i, v < 0.0f ? 0.0f : v); } }

template <typename T>
__device__ void maxpool(const T* x, T* y, int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW) {
    LOOP((long long)N * C * OH * OW) {
        int ow = i % OW, oh = (i / OW) % OH;
        long long nc = i / ((long long)OW * OH);
        float m = -3.402823466e38f;
        for (int kh = 0; kh < KH; ++kh)
            for (int kw = 0; kw < KW; ++kw) {
                int h = oh * SH - PH + kh, w = ow * SW - PW + kw;
                if (h >= 0 && h < H && w >= 0 && w < W) m = fmaxf(m, ld(x, (nc * H + h) * W + w));
            }
        st(y, i, m);
    }
}

#define INSTANTIATE(NAME, T) \
extern "C" __global__ void im2col_##NAME(const T* x, T* c, int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW) { im2col<T>(x, c, N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW); } \
extern "C" __global__ void to_nchw_##NAME(const T* t, const T* b, T* o, int N, int Co, int P, int r) { to_nchw<T>(t, b, o, N, Co, P, r); } \
extern "C" __global__ void relu_##NAME(const T* x, T* y, long long n) { relu<T>(x, y, n); } \
extern "C" __global__ void maxpool_##NAME(const T* x, T* y, int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW) { maxpool<T>(x, y, N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW); }

INSTANTIATE(f32, float)
INSTANTIATE(f16, __half)

extern "C" __global__ void f32_to_f16(const float* x, __half* y, long long n) { LOOP(n) { y[i] = __float2half(x[i]); } }
extern "C" __global__ void f16_to_f32(const __half* x, float* y, long long n) { LOOP(n) { y[i] = __half2float(x[i]); } }
