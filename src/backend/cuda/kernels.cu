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
// v / q from inv_q = 1/q (correctly rounded): the product, corrected by its residual with two
// FMAs — the compiled division's fast path, without its slow path for operands near float's
// limits, which scales and activations never are. Rounds like the reference's v / q, exact
// ties included (requantized codes land on them when scales are in simple ratios).
__device__ __forceinline__ float div_rn(float v, float q, float inv_q) {
    float r = v * inv_q;
    return fmaf(fmaf(-r, q, v), inv_q, r);
}
// Fake quantization with 1/q precomputed: fq without a division per value.
__device__ __forceinline__ float fqi(float v, float q, float inv_q) {
    return q > 0.0f ? fminf(fmaxf(rintf(div_rn(v, q, inv_q)), -128.0f), 127.0f) * q : v;
}
__device__ __forceinline__ float inverse(float q) { return q > 0.0f ? 1.0f / q : 0.0f; }

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

// y[N, Cout, P] (+ bias[Cout]) with the GEMM epilogue, in place (after a cuDNN convolution);
// grid (P, Cout, N).
template <typename T>
__device__ void bias_nchw(T* y, const T* bias, int N, int Cout, int P, int relu, float q_pre, float q) {
    int p = blockIdx.x * blockDim.x + threadIdx.x, c = blockIdx.y, n = blockIdx.z;
    if (p >= P) return;
    int i = (n * Cout + c) * P + p;
    st(y, i, finish(ld(y, i) + (bias ? ld(bias, c) : 0.0f), q_pre, relu, q));
}

// y[rows, Cout] (NHWC; + bias[Cout]) with the GEMM epilogue, in place.
template <typename T>
__device__ void bias_nhwc(T* y, const T* bias, int n, int Cout, int relu, float q_pre, float q) {
    LOOP(n) { st(y, i, finish(ld(y, i) + (bias ? ld(bias, i % Cout) : 0.0f), q_pre, relu, q)); }
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

// A Gemm layer's int32 acc[Cout, PP] (PP: rows padded to 4) * scale[c] (+ bias[c]) ->
// out[rows, Cout] with the GEMM epilogue; one thread per output, consecutive threads along a row.
template <typename T>
__device__ void dequant_rows(const int* acc, const float* scale, const T* bias, T* out, int rows, int Cout, int PP, int relu, float q_pre, float q) {
    LOOP(rows * Cout) {
        int r = i / Cout, c = i - r * Cout;
        float v = (float)acc[c * PP + r] * scale[c] + (bias ? ld(bias, c) : 0.0f);
        st(out, i, finish(v, q_pre, relu, q));
    }
}

// In place GEMM epilogue (after a cuBLASLt GEMM whose output needs fake quantization).
template <typename T>
__device__ void epilogue(T* y, int n, int relu, float q_pre, float q) { LOOP(n) { st(y, i, finish(ld(y, i), q_pre, relu, q)); } }

// op: 0 identity, 1 relu, 2 clip(lo, hi), 3 sigmoid, 4 tanh, 5 leaky relu (alpha lo),
// 6 hard sigmoid (alpha lo, beta hi), 7 hard swish, 8 erf, 9 gelu, 10 gelu (tanh form), 11 sqrt,
// 12 exp, 13 neg, 14 abs, 15 round to float16 (UnaryOp::code).
__device__ __forceinline__ float unary_op(float v, int op, float lo, float hi) {
    switch (op) {
    case 1: return fmaxf(v, 0.0f);
    case 2: return fminf(fmaxf(v, lo), hi);
    case 3: return 1.0f / (1.0f + expf(-v));
    case 4: return tanhf(v);
    case 5: return v >= 0.0f ? v : lo * v;
    case 6: return fminf(fmaxf(lo * v + hi, 0.0f), 1.0f);
    case 7: return v * fminf(fmaxf(v / 6.0f + 0.5f, 0.0f), 1.0f);
    case 8: return erff(v);
    case 9: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case 10: return 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    case 11: return sqrtf(v);
    case 12: return expf(v);
    case 13: return -v;
    case 14: return fabsf(v);
    case 15: return __half2float(__float2half_rn(v));
    default: return v;
    }
}
// op: 0 add, 1 mul, 2 sub, 3 div, 4 pow, 5 max, 6 min (BinaryOp::code).
__device__ __forceinline__ float binary_op(float u, float v, int op) {
    switch (op) {
    case 1: return u * v;
    case 2: return u - v;
    case 3: return u / v;
    case 4: return powf(u, v);
    case 5: return fmaxf(u, v);
    case 6: return fminf(u, v);
    default: return u + v;
    }
}
template <typename T>
__device__ void unary(const T* x, T* y, int n, int op, float lo, float hi, float q) {
    LOOP(n) { st(y, i, fq(unary_op(ld(x, i), op, lo, hi), q)); }
}

// y = a (+|*) b over dims d0..d3 with per-operand strides (0 where broadcast), then a fused
// Relu (relu) and fake quantization.
template <typename T>
__device__ void binary(const T* a, const T* b, T* y, int op, int d1, int d2, int d3, int n,
                       int a0, int a1, int a2, int a3, int b0, int b1, int b2, int b3, int relu, float q) {
    LOOP(n) {
        int i3 = i % d3, i2 = (i / d3) % d2, i1 = (i / (d3 * d2)) % d1, i0 = i / (d3 * d2 * d1);
        float u = ld(a, i0 * a0 + i1 * a1 + i2 * a2 + i3 * a3), v = ld(b, i0 * b0 + i1 * b1 + i2 * b2 + i3 * b3);
        float r = binary_op(u, v, op);
        st(y, i, fq(relu ? fmaxf(r, 0.0f) : r, q));
    }
}

// The same over two operands of one shape (no broadcasting): no index arithmetic.
template <typename T>
__device__ void binary_same(const T* a, const T* b, T* y, int op, int n, int relu, float q) {
    LOOP(n) {
        float r = binary_op(ld(a, i), ld(b, i), op);
        st(y, i, fq(relu ? fmaxf(r, 0.0f) : r, q));
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

// Grouped (depthwise) and dilated convolution, computed directly: y[n, co, oh, ow] = bias[co] +
// sum over the group's input channels and the dilated window; grid (OH*OW, Cout, N).
template <typename T>
__device__ void conv_direct(const T* x, const T* w, const T* bias, T* y, int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW,
                            int Cout, int groups, int DH, int DW, int relu, float q_pre, float q) {
    POS3
    int co = blockIdx.y, cpg = C / groups, g = co / (Cout / groups);
    float acc = bias ? ld(bias, co) : 0.0f;
    for (int ci = 0; ci < cpg; ++ci) {
        const int c = g * cpg + ci;
        for (int kh = 0; kh < KH; ++kh) {
            int h = oh * SH - PH + kh * DH;
            if (h < 0 || h >= H) continue;
            for (int kw = 0; kw < KW; ++kw) {
                int ww = ow * SW - PW + kw * DW;
                if (ww < 0 || ww >= W) continue;
                acc += ld(x, ((n * C + c) * H + h) * W + ww) * ld(w, ((co * cpg + ci) * KH + kh) * KW + kw);
            }
        }
    }
    st(y, (n * Cout + co) * OH * OW + pos, finish(acc, q_pre, relu, q));
}

// A strided view copied out: y[i] = x[offset + sum_k idx_k(i) * s_k] over dims d0..d5.
template <typename T>
__device__ void strided(const T* x, T* y, int n, int d1, int d2, int d3, int d4, int d5,
                        int s0, int s1, int s2, int s3, int s4, int s5, int offset, float q) {
    LOOP(n) {
        int r = i, src = offset;
        int i5 = r % d5; r /= d5; int i4 = r % d4; r /= d4; int i3 = r % d3; r /= d3;
        int i2 = r % d2; r /= d2; int i1 = r % d1; int i0 = r / d1;
        src += i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3 + i4 * s4 + i5 * s5;
        st(y, i, fq(ld(x, src), q));
    }
}

// Resize of NCHW planes: x[NC, H, W] -> y[NC, OH, OW]; the source coordinate of output row o is
// ah * o + bh (columns: aw, bw). Nearest rounds it (mode: 0 round half down, 1 round half up,
// 2 floor, 3 ceil); linear interpolates between the two neighbours, clamped to the edge.
__device__ __forceinline__ int nearest_index(float c, int mode, int size) {
    int i;
    if (mode == 0) i = (int)ceilf(c - 0.5f);
    else if (mode == 1) i = (int)floorf(c + 0.5f);
    else if (mode == 2) i = (int)floorf(c);
    else i = (int)ceilf(c);
    return min(max(i, 0), size - 1);
}
template <typename T>
__device__ void resize(const T* x, T* y, int NC, int H, int W, int OH, int OW, float ah, float bh, float aw, float bw, int linear, int mode, float q) {
    LOOP(NC * OH * OW) {
        int ow = i % OW, oh = (i / OW) % OH, p = i / (OW * OH);
        float ch = ah * oh + bh, cw = aw * ow + bw;
        const T* plane = x + p * H * W;
        float v;
        if (!linear) {
            v = ld(plane, nearest_index(ch, mode, H) * W + nearest_index(cw, mode, W));
        } else {
            ch = fminf(fmaxf(ch, 0.0f), (float)(H - 1));
            cw = fminf(fmaxf(cw, 0.0f), (float)(W - 1));
            int h0 = (int)floorf(ch), w0 = (int)floorf(cw);
            int h1 = min(h0 + 1, H - 1), w1 = min(w0 + 1, W - 1);
            float fh = ch - h0, fw = cw - w0;
            float top = ld(plane, h0 * W + w0) * (1.0f - fw) + ld(plane, h0 * W + w1) * fw;
            float bottom = ld(plane, h1 * W + w0) * (1.0f - fw) + ld(plane, h1 * W + w1) * fw;
            v = top * (1.0f - fh) + bottom * fh;
        }
        st(y, i, fq(v, q));
    }
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

// ---- Tensor-core convolution (implicit GEMM) ----
// D[position, cout] = sum_k X[position, k] * W[cout, k] with mma.sync: int8 (m16n8k32, int32
// accumulation) or fp16 (m16n8k16, fp32 accumulation). Both consume k in 32-byte chunks whose
// register fragments have the same byte layout, so one loop serves both. X is read straight from
// an NHWC tensor (k runs over taps, then channels; padding reads zeros) — W is [cout][kh][kw][c].
// An NCHW input is first written as patch rows (`patches`), read as a 1x1 convolution over
// them — W is then [cout][kp].
// A block computes 128 positions x 64 or 128 output channels (4 or 8 warps of 32 x 64): each
// 32-byte chunk of k is copied to shared memory with cp.async (zero-filling padding), three in flight,
// and read into fragments with ldmatrix. The epilogue is the dequantize kernel's, element for
// element; it writes NHWC (int8 codes of scale q, or fp16) through shared memory in 16-byte
// rows for a tensor-core reader, or NCHW in the engine's type (T) for any other.
#define MMA_STAGES 3
#define MMA_MAX_BN 128  // output channels per block: 64 (4 warps) or 128 (8 warps)
#define MMA_ROW 48  // bytes per shared row: 32 of k, padded so ldmatrix's 8 rows hit distinct banks

__device__ __forceinline__ void mma_chunk(int* d, const unsigned* a, unsigned b0, unsigned b1) {
#if __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}
__device__ __forceinline__ void mma_chunk(float* d, const unsigned* a, unsigned b0, unsigned b1) {
#if __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}
// 16 bytes global -> shared, zero-filled when !valid.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
#if __CUDA_ARCH__ >= 800
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "r"(valid ? 16 : 0));
#endif
}
// The same for A (activations), cached in L1 too: neighbouring taps re-read the same pixels.
__device__ __forceinline__ void cp_async16_a(void* smem, const void* gmem, bool valid) {
#if __CUDA_ARCH__ >= 800
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "r"(valid ? 16 : 0));
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;");
#endif
}
__device__ __forceinline__ void cp_async_wait_stages() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(MMA_STAGES - 2));
#endif
}
// Four 8x8 matrices of 16-bit elements (8 rows of 16 bytes) from shared memory.
__device__ __forceinline__ void ldsm4(unsigned* r, const void* smem) {
#if __CUDA_ARCH__ >= 800
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
#endif
}
__device__ __forceinline__ int code8(float v, float q, float inv_q) { return (int)fminf(fmaxf(rintf(div_rn(v, q, inv_q)), -128.0f), 127.0f); }
// Two adjacent channels of an NHWC output into the shared output tile.
__device__ __forceinline__ void put_pair(int, unsigned char* row, int col, float v0, float v1, float q, float inv_q) {
    *reinterpret_cast<char2*>(row + col) = make_char2((char)code8(v0, q, inv_q), (char)code8(v1, q, inv_q));
}
__device__ __forceinline__ void put_pair(float, unsigned char* row, int col, float v0, float v1, float, float) {
    *reinterpret_cast<__half2*>(row + 2 * col) = __floats2half2_rn(v0, v1);
}

__device__ __forceinline__ int out_bytes(int) { return 1; }
__device__ __forceinline__ int out_bytes(float) { return 2; }

// Gathers 16 bytes of k — patch entries k0, k0+1, … in im2col's (c, kh, kw) order, zero past K
// or in the padding — of one output position (image n, window origin ih0, iw0) from an NCHW
// input of the engine's type: int8 codes of scale xs, or fp16.
__device__ __forceinline__ void pack_elem(int, unsigned* packed, int j, float v, float xs, float inv_xs) {
    packed[j / 4] |= (unsigned)(code8(v, xs, inv_xs) & 0xff) << (8 * (j % 4));
}
__device__ __forceinline__ void pack_elem(float, unsigned* packed, int j, float v, float, float) {
    packed[j / 2] |= (unsigned)__half_as_ushort(__float2half(v)) << (16 * (j % 2));
}
template <typename Acc, typename T>
__device__ __forceinline__ int4 gather16(Acc, const T* x, int k0, int K, int C, int H, int W, int KH, int KW,
                                         int n, int ih0, int iw0, float xs, float inv_xs) {
    const int E = 16 / out_bytes(Acc(0)), taps = KH * KW;
    int c = k0 / taps, tap = k0 % taps, kh = tap / KW, kw = tap % KW;
    unsigned packed[4] = {0u, 0u, 0u, 0u};
#pragma unroll
    for (int j = 0; j < E; ++j) {
        float v = 0.0f;
        int h = ih0 + kh, w = iw0 + kw;
        if (k0 + j < K && h >= 0 && h < H && w >= 0 && w < W) v = ld(x, ((n * C + c) * H + h) * W + w);
        pack_elem(Acc(0), packed, j, v, xs, inv_xs);
        if (++kw == KW) { kw = 0; if (++kh == KH) { kh = 0; ++c; } }
    }
    return make_int4(packed[0], packed[1], packed[2], packed[3]);
}

// Patches of an NCHW input for a tensor-core convolution: one row of KB bytes per output
// position, gather16's bytes (int8 codes of scale xs, or fp16; zero past K and in the padding).
// The convolution reads them as a 1x1 convolution over an NHWC tensor of KB-byte pixels.
// A block of 256 threads writes the rows of 64 positions, up to 512 bytes of each at a time:
// a warp gathers 32 neighbouring positions at one 16-byte part (its loads hit neighbouring
// pixels) into shared memory, then the block copies the rows out in contiguous 16-byte runs.
#define PATCH_PARTS 32  // 16-byte parts of a row staged at once
template <typename Acc, typename T>
__device__ void patches(const T* x, unsigned char* out, int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                        int OH, int OW, int KB, int K, float xs) {
    __shared__ int4 tile[64][PATCH_PARTS + 1];  // +1: a quarter-warp's 8 rows hit distinct banks
    const int parts = KB / 16, P = OH * OW, M = N * P;
    const float inv_xs = inverse(xs);
    int m0 = blockIdx.x * 64, r = threadIdx.x & 63, m = m0 + r;
    int p = m % P, n = m / P, ih0 = (p / OW) * SH - PH, iw0 = (p % OW) * SW - PW;
    for (int part0 = 0; part0 < parts; part0 += PATCH_PARTS) {
        int width = min(PATCH_PARTS, parts - part0);
        if (m < M)
            for (int j = threadIdx.x >> 6; j < width; j += 4)
                tile[r][j] = gather16(Acc(0), x, (part0 + j) * 16 / out_bytes(Acc(0)), K, C, H, W, KH, KW, n, ih0, iw0, xs, inv_xs);
        __syncthreads();
        for (int idx = threadIdx.x; idx < 64 * width; idx += blockDim.x) {
            int rr = idx / width, j = idx - rr * width;
            if (m0 + rr < M) *reinterpret_cast<int4*>(out + (size_t)(m0 + rr) * KB + (part0 + j) * 16) = tile[rr][j];
        }
        __syncthreads();
    }
}

template <typename Acc, typename T>
__device__ void conv_mma(const unsigned char* x, const unsigned char* w, const float* dq, const T* bias, void* y,
                         int N, int CB, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW,
                         int Cout, int nhwc_out, int relu, float q_pre, float q) {
    // Per stage: A [128 positions][32 bytes of k], then B [BN channels][32 bytes of k].
    __shared__ __align__(16) unsigned char smem[MMA_STAGES * (128 + MMA_MAX_BN) * MMA_ROW];
    const int threads = blockDim.x, BN = threads / 2, STAGE = (128 + BN) * MMA_ROW;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    int wm = warp & 3, wn = warp >> 2;  // this warp's 32 positions and 64 channels of the tile
    int P = OH * OW, M = N * P, mb = blockIdx.x * 128, n0 = blockIdx.y * BN;
    // Copies per chunk: A's 256 16-byte halves (one or two per thread), B's 2·BN (one each).
    const int a_per = 256 / threads;
    int arow = tid / (2 / a_per), ahalf0 = (tid % (2 / a_per)) * 16;
    int am = mb + arow, abase = -1, aih = 0, aiw = 0;
    if (am < M) { int p = am % P; abase = (am / P) * H; aih = (p / OW) * SH - PH; aiw = (p % OW) * SW - PW; }
    int brow = tid >> 1, bn = n0 + brow, bhalf = (tid & 1) * 16;
    // k bytes per weight row: all taps.
    const int KB = KH * KW * CB, chunks = KB / 32;
    const unsigned char* wrow = w + bn * KB + bhalf;
    // The next chunk to copy, and (NHWC) its tap (lkh, lkw) and channel bytes lc0 — advanced,
    // never divided.
    int lchunk = 0, lkh = 0, lkw = 0, lc0 = 0;
#define MMA_LOAD(buf) do { \
        unsigned char* sa_ = smem + (buf) * STAGE; \
        int h_ = aih + lkh, w_ = aiw + lkw; \
        bool va_ = abase >= 0 && h_ >= 0 && h_ < H && w_ >= 0 && w_ < W; \
        const unsigned char* src_ = va_ ? x + ((size_t)(abase + h_) * W + w_) * CB + lc0 : x; \
        for (int k_ = 0; k_ < a_per; ++k_) \
            cp_async16_a(sa_ + arow * MMA_ROW + ahalf0 + 16 * k_, src_ + ahalf0 + 16 * k_, va_); \
        if ((lc0 += 32) == CB) { lc0 = 0; if (++lkw == KW) { lkw = 0; ++lkh; } } \
        bool vb_ = bn < Cout; \
        cp_async16(sa_ + (128 + brow) * MMA_ROW + bhalf, vb_ ? wrow + lchunk * 32 : w, vb_); \
        ++lchunk; \
    } while (0)
#pragma unroll
    for (int s = 0; s < MMA_STAGES - 1; ++s) {
        if (s < chunks) MMA_LOAD(s);
        cp_async_commit();
    }
    int ntiles = max(0, min(8, (Cout - n0 - wn * 64 + 7) / 8));
    Acc acc[2][8][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0;
    // ldmatrix row addresses: A rows (lane & 15) of a 16-row tile, byte half lane / 16;
    // B rows (lane & 7) + 8 (lane / 16) of a pair of n-tiles, byte half (lane / 8) & 1.
    int a_off = (wm * 32 + (lane & 15)) * MMA_ROW + 16 * (lane >> 4);
    int b_off = (128 + wn * 64 + (lane & 7) + 8 * (lane >> 4)) * MMA_ROW + 16 * ((lane >> 3) & 1);
    for (int kc = 0; kc < chunks; ++kc) {
        cp_async_wait_stages();
        __syncthreads();
        const unsigned char* st_ = smem + (kc % MMA_STAGES) * STAGE;
        if (ntiles > 0) {
            unsigned a[2][4];
            ldsm4(a[0], st_ + a_off);
            ldsm4(a[1], st_ + a_off + 16 * MMA_ROW);
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) {
                if (2 * jj < ntiles) {
                    unsigned b[4];
                    ldsm4(b, st_ + b_off + jj * 16 * MMA_ROW);
                    mma_chunk(acc[0][2 * jj], a[0], b[0], b[1]);
                    mma_chunk(acc[1][2 * jj], a[1], b[0], b[1]);
                    if (2 * jj + 1 < ntiles) {
                        mma_chunk(acc[0][2 * jj + 1], a[0], b[2], b[3]);
                        mma_chunk(acc[1][2 * jj + 1], a[1], b[2], b[3]);
                    }
                }
            }
        }
        int next = kc + MMA_STAGES - 1;
        if (next < chunks) MMA_LOAD(next % MMA_STAGES);
        cp_async_commit();
    }
#undef MMA_LOAD
    // Epilogue: accumulators e=0,1 are row g, e=2,3 row g+8; columns t*2, t*2+1.
    const int S = out_bytes(Acc(0));
    const int OUT_ROW = BN * S + 16;
    unsigned char* tile = smem;  // [128][OUT_ROW], free once every warp is past the loop
    if (nhwc_out) __syncthreads();
    float inv_qp = inverse(q_pre), inv_q = inverse(q);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        if (j >= ntiles) continue;
        int tc = wn * 64 + j * 8 + t * 2, col = n0 + tc;  // column in the tile, in the tensor
        float scale[2], shift[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            int c = min(col + e, Cout - 1);
            scale[e] = dq ? dq[c] : 1.0f;
            shift[e] = bias ? ld(bias, c) : 0.0f;
        }
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int half_ = 0; half_ < 2; ++half_) {
                int r = wm * 32 + 16 * i + 8 * half_ + g, m = mb + r;
                if (m >= M || col >= Cout) continue;
                float v[2];
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float u = fqi((float)acc[i][j][2 * half_ + e] * scale[e] + shift[e], q_pre, inv_qp);
                    v[e] = relu && u < 0.0f ? 0.0f : u;
                }
                if (nhwc_out) {
                    put_pair(Acc(0), tile + r * OUT_ROW, tc, v[0], v[1], q, inv_q);
                } else {
                    int p = m % P, n = m / P;
                    st((T*)y, (n * Cout + col) * P + p, fqi(v[0], q, inv_q));
                    if (col + 1 < Cout) st((T*)y, (n * Cout + col + 1) * P + p, fqi(v[1], q, inv_q));
                }
            }
    }
    if (nhwc_out) {
        __syncthreads();
        int row_bytes = min(BN, Cout - n0) * S, parts = row_bytes / 16;
        for (int idx = tid; idx < 128 * parts; idx += threads) {
            int r = idx / parts, part = idx % parts, m = mb + r;
            if (m < M)
                *reinterpret_cast<int4*>((unsigned char*)y + (m * Cout + n0) * S + part * 16) =
                    *reinterpret_cast<const int4*>(tile + r * OUT_ROW + part * 16);
        }
    }
}

// Max or average pooling of an NHWC tensor (int8 codes of scale s, or fp16), one 4-byte word of
// channels per thread. Writes NHWC (codes of scale q, or fp16) or NCHW in the engine's type (T).
__device__ __forceinline__ unsigned max_word(int, unsigned a, unsigned b) { return __vmaxs4(a, b); }
__device__ __forceinline__ unsigned max_word(float, unsigned a, unsigned b) {
    __half2 r = __hmax2(*reinterpret_cast<__half2*>(&a), *reinterpret_cast<__half2*>(&b));
    return *reinterpret_cast<unsigned*>(&r);
}
__device__ __forceinline__ float word_elem(int, unsigned w, int e, float s) { return (float)(signed char)(w >> (8 * e)) * s; }
__device__ __forceinline__ float word_elem(float, unsigned w, int e, float) {
    return __half2float(__ushort_as_half((unsigned short)(w >> (16 * e))));
}
__device__ __forceinline__ unsigned elem_bits(int, float v, int e, float q, float inv_q) { return (unsigned)(code8(v, q, inv_q) & 0xff) << (8 * e); }
__device__ __forceinline__ unsigned elem_bits(float, float v, int e, float q, float inv_q) {
    return (unsigned)__half_as_ushort(__float2half(fqi(v, q, inv_q))) << (16 * e);
}

__device__ __forceinline__ int elems_per_word(int) { return 4; }
__device__ __forceinline__ int elems_per_word(float) { return 2; }

template <typename Acc, typename T>
__device__ void pool_nhwc(const unsigned* x, void* y, int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW,
                          float s, float q, int nhwc_out, int avg, int include_pad) {
    const int E = elems_per_word(Acc(0));
    const unsigned lowest = E == 4 ? 0x80808080u : 0xFC00FC00u;  // -128 x4, -inf x2
    int CW = C / E;
    float inv_q = inverse(q);
    LOOP(N * OH * OW * CW) {
        int word = i % CW, pix = i / CW, ow = pix % OW, oh = (pix / OW) % OH, n = pix / (OW * OH);
        unsigned m = lowest;
        float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        int count = 0;
        for (int kh = 0; kh < KH; ++kh)
            for (int kw = 0; kw < KW; ++kw) {
                int h = oh * SH - PH + kh, w = ow * SW - PW + kw;
                if (h >= 0 && h < H && w >= 0 && w < W) {
                    unsigned in = __ldg(x + ((n * H + h) * W + w) * CW + word);
                    if (avg) for (int e = 0; e < E; ++e) v[e] += word_elem(Acc(0), in, e, s);
                    else m = max_word(Acc(0), m, in);
                    ++count;
                }
            }
        float d = (float)(include_pad ? KH * KW : (count > 0 ? count : 1));
        for (int e = 0; e < E; ++e) v[e] = avg ? v[e] / d : word_elem(Acc(0), m, e, s);
        if (nhwc_out) {
            unsigned out = 0u;
            if (!avg && E == 4 && q == s) out = m;
            else for (int e = 0; e < E; ++e) out |= elem_bits(Acc(0), v[e], e, q, inv_q);
            reinterpret_cast<unsigned*>(y)[i] = out;
        } else {
            for (int e = 0; e < E; ++e)
                st((T*)y, ((n * C + word * E + e) * OH + oh) * OW + ow, fqi(v[e], q, inv_q));
        }
    }
}

// Calibration statistics, reduced where the activations are. max_abs: the largest finite |x|,
// as float bits (which order like the floats for x >= 0), warp-reduced then atomicMax.
template <typename T>
__device__ void max_abs(const T* x, int n, unsigned* out) {
    unsigned m = 0u;
    LOOP(n) { float v = fabsf(ld(x, i)); if (isfinite(v)) m = max(m, __float_as_uint(v)); }
    for (int o = 16; o > 0; o /= 2) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
    if ((threadIdx.x & 31) == 0) atomicMax(out, m);
}
// abs_histogram: counts of |x| in 2048 bins, bin min(floor(|x| * scale), 2047) computed in
// double exactly as the host does; non-finite values dropped. Per-block shared counts, then
// one global atomic per bin and block.
template <typename T>
__device__ void abs_histogram(const T* x, int n, double scale, unsigned* bins) {
    __shared__ unsigned local[2048];
    for (int i = threadIdx.x; i < 2048; i += blockDim.x) local[i] = 0u;
    __syncthreads();
    LOOP(n) {
        float v = fabsf(ld(x, i));
        if (isfinite(v)) {
            double b = (double)v * scale;
            atomicAdd(&local[b < 2047.0 ? (int)b : 2047], 1u);
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < 2048; i += blockDim.x)
        if (local[i]) atomicAdd(&bins[i], local[i]);
}

#define WINDOW int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW
#define WARGS N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW
#define WINDOW_MMA int N, int CB, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW, int Cout, int o, int r, float qp, float q
#define MMA_ARGS N, CB, H, W, KH, KW, SH, SW, PH, PW, OH, OW, Cout, o, r, qp, q
#define INSTANTIATE(NAME, T) \
extern "C" __global__ void im2col_##NAME(const T* x, T* c, WINDOW) { im2col<T>(x, c, WARGS); } \
extern "C" __global__ void im2col_q8_##NAME(const T* x, signed char* c, WINDOW, int KP, float s) { im2col_q8<T>(x, c, WARGS, KP, s); } \
extern "C" __global__ void from_f32_##NAME(const float* x, T* y, int n) { LOOP(n) { st(y, i, x[i]); } } \
extern "C" __global__ void to_f32_##NAME(const T* x, float* y, int n) { LOOP(n) { y[i] = ld(x, i); } } \
extern "C" __global__ void quantize_rows_##NAME(const T* x, signed char* c, int rows, int K, int KP, float s) { quantize_rows<T>(x, c, rows, K, KP, s); } \
extern "C" __global__ void to_nchw_##NAME(const T* t, const T* b, T* o, int N, int Co, int P, int r, float qp, float q) { to_nchw<T>(t, b, o, N, Co, P, r, qp, q); } \
extern "C" __global__ void dequant_##NAME(const int* a, const float* s, const T* b, T* o, int N, int Co, int P, int PP, int r, float qp, float q) { dequant<T>(a, s, b, o, N, Co, P, PP, r, qp, q); } \
extern "C" __global__ void dequant_rows_##NAME(const int* a, const float* s, const T* b, T* o, int rows, int Co, int PP, int r, float qp, float q) { dequant_rows<T>(a, s, b, o, rows, Co, PP, r, qp, q); } \
extern "C" __global__ void bias_nchw_##NAME(T* y, const T* b, int N, int Co, int P, int r, float qp, float q) { bias_nchw<T>(y, b, N, Co, P, r, qp, q); } \
extern "C" __global__ void bias_nhwc_##NAME(T* y, const T* b, int n, int Co, int r, float qp, float q) { bias_nhwc<T>(y, b, n, Co, r, qp, q); } \
extern "C" __global__ void epilogue_##NAME(T* y, int n, int r, float qp, float q) { epilogue<T>(y, n, r, qp, q); } \
extern "C" __global__ void unary_##NAME(const T* x, T* y, int n, int op, float lo, float hi, float q) { unary<T>(x, y, n, op, lo, hi, q); } \
extern "C" __global__ void binary_##NAME(const T* a, const T* b, T* y, int op, int d1, int d2, int d3, int n, int a0, int a1, int a2, int a3, int b0, int b1, int b2, int b3, int r, float q) { binary<T>(a, b, y, op, d1, d2, d3, n, a0, a1, a2, a3, b0, b1, b2, b3, r, q); } \
extern "C" __global__ void binary_same_##NAME(const T* a, const T* b, T* y, int op, int n, int r, float q) { binary_same<T>(a, b, y, op, n, r, q); } \
extern "C" __global__ void conv_direct_##NAME(const T* x, const T* w, const T* b, T* y, WINDOW, int Cout, int groups, int DH, int DW, int r, float qp, float q) { conv_direct<T>(x, w, b, y, WARGS, Cout, groups, DH, DW, r, qp, q); } \
extern "C" __global__ void strided_##NAME(const T* x, T* y, int n, int d1, int d2, int d3, int d4, int d5, int s0, int s1, int s2, int s3, int s4, int s5, int o, float q) { strided<T>(x, y, n, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5, o, q); } \
extern "C" __global__ void resize_##NAME(const T* x, T* y, int NC, int H, int W, int OH, int OW, float ah, float bh, float aw, float bw, int linear, int mode, float q) { resize<T>(x, y, NC, H, W, OH, OW, ah, bh, aw, bw, linear, mode, q); } \
extern "C" __global__ void pool_##NAME(const T* x, T* y, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW, int avg, int ip, float q) { pool<T>(x, y, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW, avg, ip, q); } \
extern "C" __global__ void affine_##NAME(const T* x, T* y, const T* s, const T* b, int C, int inner, int n, float q) { affine<T>(x, y, s, b, C, inner, n, q); } \
extern "C" __global__ void concat_##NAME(const T* x, T* y, int outer, int chunk, int total, int offset, float q) { concat<T>(x, y, outer, chunk, total, offset, q); } \
extern "C" __global__ void max_abs_##NAME(const T* x, int n, unsigned* out) { max_abs<T>(x, n, out); } \
extern "C" __global__ void abs_histogram_##NAME(const T* x, int n, double scale, unsigned* bins) { abs_histogram<T>(x, n, scale, bins); } \
extern "C" __global__ void softmax_##NAME(const T* x, T* y, int outer, int len, int inner, float q) { softmax<T>(x, y, outer, len, inner, q); } \
extern "C" __global__ void conv_mma_i8_##NAME(const unsigned char* x, const unsigned char* w, const float* dq, const T* b, void* y, WINDOW_MMA) { conv_mma<int, T>(x, w, dq, b, y, MMA_ARGS); } \
extern "C" __global__ void conv_mma_f16_##NAME(const unsigned char* x, const unsigned char* w, const float* dq, const T* b, void* y, WINDOW_MMA) { conv_mma<float, T>(x, w, dq, b, y, MMA_ARGS); } \
extern "C" __global__ void patches_i8_##NAME(const T* x, unsigned char* p, WINDOW, int KB, int K, float xs) { patches<int, T>(x, p, WARGS, KB, K, xs); } \
extern "C" __global__ void patches_f16_##NAME(const T* x, unsigned char* p, WINDOW, int KB, int K, float xs) { patches<float, T>(x, p, WARGS, KB, K, xs); } \
extern "C" __global__ void pool_nhwc_i8_##NAME(const unsigned* x, void* y, WINDOW, float s, float q, int o, int avg, int ip) { pool_nhwc<int, T>(x, y, WARGS, s, q, o, avg, ip); } \
extern "C" __global__ void pool_nhwc_f16_##NAME(const unsigned* x, void* y, WINDOW, float s, float q, int o, int avg, int ip) { pool_nhwc<float, T>(x, y, WARGS, s, q, o, avg, ip); }

INSTANTIATE(f32, float)
INSTANTIATE(f16, __half)

// Elementwise layers between int8 NHWC tensors of the tensor-core path (int8 codes of scales
// sx, sa, sb), four codes per thread: the unary op, or a + b / a * b, requantized to scale q.
__device__ __forceinline__ float code_at(unsigned w, int e, float s) { return (float)(signed char)(w >> (8 * e)) * s; }
extern "C" __global__ void unary_q8(const unsigned* x, unsigned* y, int words, int op, float lo, float hi, float sx, float q) {
    float inv_q = inverse(q);
    LOOP(words) {
        unsigned w = x[i], out = 0u;
        for (int e = 0; e < 4; ++e) out |= (unsigned)(code8(unary_op(code_at(w, e, sx), op, lo, hi), q, inv_q) & 0xff) << (8 * e);
        y[i] = out;
    }
}
extern "C" __global__ void binary_q8(const unsigned* a, const unsigned* b, unsigned* y, int words, int op, float sa, float sb, int relu, float q) {
    float inv_q = inverse(q);
    LOOP(words) {
        unsigned wa = a[i], wb = b[i], out = 0u;
        for (int e = 0; e < 4; ++e) {
            float u = code_at(wa, e, sa), v = code_at(wb, e, sb), r = binary_op(u, v, op);
            out |= (unsigned)(code8(relu ? fmaxf(r, 0.0f) : r, q, inv_q) & 0xff) << (8 * e);
        }
        y[i] = out;
    }
}
