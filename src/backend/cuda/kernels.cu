/* The CUDA backend's kernels and their launchers. What each computes is what
 * src/backend/cpu computes for the same op (activations f32, f32 accumulation,
 * rmsnorm's sum of squares in double); how they are laid out on the GPU is
 * described above each kernel. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "cuda_kernels.h"

static_assert(CLV_MAX_HEAD_DIM <= 512, "the attention kernel keeps at most 512 dims in registers");

/* ---- helpers ---------------------------------------------------------------- */

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* A grid for n elements at `threads` per block with a grid-stride loop: enough
 * blocks to fill the GPU several times over, never more than the work needs. */
static unsigned ew_blocks(size_t n, int threads) {
    size_t b = (n + (size_t)threads - 1) / (size_t)threads;
    return (unsigned)(b < 8192 ? b : 8192);
}

/* Weight element access by type: a scalar load and the unpacking of one
 * 16-byte vector (4 f32 or 8 bf16/f16; element 0 in the low bits). Weights
 * are read once per call, so their loads are marked streaming (__ldcs) and
 * leave L1 to the activations, which every warp reads. */
template <int WT> struct wtype;
template <> struct wtype<CLV_CUDA_W_F32> {
    typedef float elem;
    enum { EPV = 4 };
    static __device__ __forceinline__ float load(const elem *p) { return __ldcs(p); }
    static __device__ __forceinline__ void unpack(const uint4 &u, float *f) {
        f[0] = __uint_as_float(u.x), f[1] = __uint_as_float(u.y);
        f[2] = __uint_as_float(u.z), f[3] = __uint_as_float(u.w);
    }
};
template <> struct wtype<CLV_CUDA_W_BF16> {
    typedef unsigned short elem;
    enum { EPV = 8 };
    static __device__ __forceinline__ float load(const elem *p) { return __uint_as_float((uint32_t)__ldcs(p) << 16); }
    static __device__ __forceinline__ void two(uint32_t v, float *f) {
        f[0] = __uint_as_float(v << 16);
        f[1] = __uint_as_float(v & 0xffff0000u);
    }
    static __device__ __forceinline__ void unpack(const uint4 &u, float *f) {
        two(u.x, f), two(u.y, f + 2), two(u.z, f + 4), two(u.w, f + 6);
    }
};
template <> struct wtype<CLV_CUDA_W_F16> {
    typedef unsigned short elem;
    enum { EPV = 8 };
    static __device__ __forceinline__ float load(const elem *p) { return __half2float(__ushort_as_half(__ldcs(p))); }
    static __device__ __forceinline__ void two(uint32_t v, float *f) {
        f[0] = __half2float(__ushort_as_half((unsigned short)(v & 0xffffu)));
        f[1] = __half2float(__ushort_as_half((unsigned short)(v >> 16)));
    }
    static __device__ __forceinline__ void unpack(const uint4 &u, float *f) {
        two(u.x, f), two(u.y, f + 2), two(u.z, f + 4), two(u.w, f + 6);
    }
};

/* ---- matmul, decode: GEMV ------------------------------------------------------
 * y[t][r] = sum_k x[t][k] * w[r][k] (+ bias[r]) for t < NT (1..8 tokens).
 *
 * Geometry: 256-thread blocks of GEMV_WARPS = 8 warps; each weight row is
 * read by S warps (S = 1, 2, 4 or 8, the row's "parts"), so a block covers
 * 8 / S rows and grid = ceil(rows / (8 / S)). S > 1 only for matrices with
 * too few rows to give every SM ~32 warps (k/v projections, small models).
 * Each lane streams 16-byte vectors (uint4: 8 bf16/f16 or 4 f32) of its row,
 * lane- then part-interleaved, so every warp load is 512 contiguous bytes,
 * with GEMV_UNROLL vectors issued before any is used: ~30+ warps per SM x 4
 * x 512 B keeps ~64 KB of loads in flight per SM, what HBM3 needs to run at
 * full rate. All NT tokens are accumulated from the same weight registers,
 * so the weights are read once whatever T is. x is read through the
 * read-only path (it is small and every warp rereads it: L1/L2 hits).
 *
 * A row that does not start on a 16-byte boundary (cols*elem % 16 != 0, or a
 * weight base that is not aligned) is handled as: a scalar head up to the
 * first aligned element, the vector body, a scalar tail for the last
 * (cols - head) % EPV elements. x is loaded as float4 when the x rows line
 * up with the vectors (x + head 16-byte aligned and cols % 4 == 0), else as
 * scalars. Sums are f32: per lane, then warp shuffles, then (S > 1) the
 * parts' sums through shared memory in a fixed order. */

#define GEMV_WARPS 8
#define GEMV_UNROLL 4

template <int WT, int NT>
__device__ __forceinline__ void gemv_fma_vec(float *acc, const uint4 &q, const float *__restrict__ x, int cols, int k,
                                             bool xvec) {
    typedef wtype<WT> W;
    float wf[W::EPV];
    W::unpack(q, wf);
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const float *xr = x + (size_t)t * cols + k;
        float xf[W::EPV];
        if (xvec) {
#pragma unroll
            for (int j = 0; j < W::EPV / 4; j++) {
                float4 f = __ldg(reinterpret_cast<const float4 *>(xr) + j);
                xf[4 * j] = f.x, xf[4 * j + 1] = f.y, xf[4 * j + 2] = f.z, xf[4 * j + 3] = f.w;
            }
        } else {
#pragma unroll
            for (int j = 0; j < W::EPV; j++) xf[j] = __ldg(xr + j);
        }
#pragma unroll
        for (int j = 0; j < W::EPV; j++) acc[t] += wf[j] * xf[j];
    }
}

template <int WT, int NT>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_kernel(float *__restrict__ y, const float *__restrict__ x, const typename wtype<WT>::elem *__restrict__ w,
                const float *__restrict__ bias, int rows, int cols, int S) {
    typedef wtype<WT> W;
    typedef typename W::elem E;
    __shared__ float s_red[GEMV_WARPS][NT];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int r = blockIdx.x * (GEMV_WARPS / S) + warp / S, part = warp % S;
    const int stride = 32 * S; /* between a lane's consecutive elements (head, tail) or vectors (body) */

    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;

    if (r < rows) { /* r is the same for the whole warp: the shuffles below see full warps */
        const E *wr = w + (size_t)r * cols;
        /* head: scalar, up to the first 16-byte-aligned element of the row */
        int head = (int)(((16u - ((uintptr_t)wr & 15u)) & 15u) / sizeof(E));
        if (head > cols) head = cols;
        for (int k = part * 32 + lane; k < head; k += stride) {
            const float wv = W::load(wr + k);
#pragma unroll
            for (int t = 0; t < NT; t++) acc[t] += wv * __ldg(x + (size_t)t * cols + k);
        }

        /* body: 16-byte vectors, GEMV_UNROLL loads in flight per lane */
        const int nvec = (cols - head) / W::EPV;
        const uint4 *wv4 = reinterpret_cast<const uint4 *>(wr + head);
        const bool xvec = ((uintptr_t)(x + head) & 15u) == 0 && cols % 4 == 0;
        int v = part * 32 + lane;
        for (; v + stride * (GEMV_UNROLL - 1) < nvec; v += stride * GEMV_UNROLL) {
            uint4 q[GEMV_UNROLL];
#pragma unroll
            for (int u = 0; u < GEMV_UNROLL; u++) q[u] = __ldcs(wv4 + v + stride * u);
#pragma unroll
            for (int u = 0; u < GEMV_UNROLL; u++)
                gemv_fma_vec<WT, NT>(acc, q[u], x, cols, head + (v + stride * u) * W::EPV, xvec);
        }
        for (; v < nvec; v += stride) gemv_fma_vec<WT, NT>(acc, __ldcs(wv4 + v), x, cols, head + v * W::EPV, xvec);

        /* tail: scalar, the last (cols - head) % EPV elements */
        for (int k = head + nvec * W::EPV + part * 32 + lane; k < cols; k += stride) {
            const float wv = W::load(wr + k);
#pragma unroll
            for (int t = 0; t < NT; t++) acc[t] += wv * __ldg(x + (size_t)t * cols + k);
        }
#pragma unroll
        for (int t = 0; t < NT; t++) acc[t] = warp_sum(acc[t]);
    }

    if (S > 1) { /* S is the same for the whole block: every thread reaches the barrier */
        if (lane == 0)
#pragma unroll
            for (int t = 0; t < NT; t++) s_red[warp][t] = acc[t];
        __syncthreads();
        if (part == 0 && lane == 0)
#pragma unroll
            for (int t = 0; t < NT; t++) {
                float a = s_red[warp][t];
                for (int p = 1; p < S; p++) a += s_red[warp + p][t];
                acc[t] = a;
            }
    }
    if (r < rows && part == 0 && lane == 0) {
        const float b = bias ? bias[r] : 0.0f;
#pragma unroll
        for (int t = 0; t < NT; t++) y[(size_t)t * rows + r] = acc[t] + b;
    }
}

template <int WT, int NT>
static void gemv_launch(cudaStream_t s, float *y, const float *x, const void *w, const float *bias, int rows, int cols,
                        int S) {
    const int per_block = GEMV_WARPS / S;
    const unsigned blocks = (unsigned)((rows + per_block - 1) / per_block);
    gemv_kernel<WT, NT><<<blocks, GEMV_WARPS * 32, 0, s>>>(y, x, static_cast<const typename wtype<WT>::elem *>(w),
                                                          bias, rows, cols, S);
}

template <int WT>
static void gemv_dispatch(cudaStream_t s, float *y, const float *x, const void *w, const float *bias, int rows, int cols,
                          int T, int S) {
    switch (T) {
    case 1: gemv_launch<WT, 1>(s, y, x, w, bias, rows, cols, S); break;
    case 2: gemv_launch<WT, 2>(s, y, x, w, bias, rows, cols, S); break;
    case 3: gemv_launch<WT, 3>(s, y, x, w, bias, rows, cols, S); break;
    case 4: gemv_launch<WT, 4>(s, y, x, w, bias, rows, cols, S); break;
    case 5: gemv_launch<WT, 5>(s, y, x, w, bias, rows, cols, S); break;
    case 6: gemv_launch<WT, 6>(s, y, x, w, bias, rows, cols, S); break;
    case 7: gemv_launch<WT, 7>(s, y, x, w, bias, rows, cols, S); break;
    case 8: gemv_launch<WT, 8>(s, y, x, w, bias, rows, cols, S); break;
    }
}

cudaError_t clv_cuda_gemv(cudaStream_t s, int wt, float *y, const float *x, const void *w, const float *bias, int rows,
                          int cols, int T, int n_sm) {
    if (T < 1 || T > CLV_CUDA_GEMV_MAX_T) return cudaErrorInvalidValue;
    if (rows <= 0) return cudaSuccess;
    /* warps per row: enough for ~32 warps per SM, while every part still has at least one full
     * unrolled step (GEMV_UNROLL vectors per lane) */
    const long target = 32L * (n_sm > 0 ? n_sm : 132);
    const int epv = wt == CLV_CUDA_W_F32 ? 4 : 8;
    int S = 1;
    while (S < GEMV_WARPS && (long)rows * S < target && cols / epv >= 32 * GEMV_UNROLL * 2 * S) S *= 2;
    switch (wt) {
    case CLV_CUDA_W_F32: gemv_dispatch<CLV_CUDA_W_F32>(s, y, x, w, bias, rows, cols, T, S); break;
    case CLV_CUDA_W_BF16: gemv_dispatch<CLV_CUDA_W_BF16>(s, y, x, w, bias, rows, cols, T, S); break;
    case CLV_CUDA_W_F16: gemv_dispatch<CLV_CUDA_W_F16>(s, y, x, w, bias, rows, cols, T, S); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

/* ---- matmul, prefill: activations for cuBLAS ------------------------------------
 * cuBLAS multiplies operands of one type, so x is split into two 16-bit parts
 * of the weights' type, x*scale = hi + lo, and the runtime runs two GEMMs
 * (the second accumulating): each product hi*w and lo*w is exact in f32 and
 * summed in f32, so the result is as good as an f32 product to ~2^-16 (bf16)
 * or ~2^-22 (f16) relative per term. f16 has a 5-bit exponent: a token row is
 * first scaled by a power of two putting max|x| in [2^14, 2^15), exact, undone
 * by clv_cuda_scale_bias; bf16 has f32's range and needs none.
 * Geometry: one 256-thread block per token row. */

template <typename H> struct half_conv;
template <> struct half_conv<__nv_bfloat16> {
    static __device__ __forceinline__ __nv_bfloat16 from(float f) { return __float2bfloat16_rn(f); }
    static __device__ __forceinline__ float to(__nv_bfloat16 h) { return __bfloat162float(h); }
};
template <> struct half_conv<__half> {
    static __device__ __forceinline__ __half from(float f) { return __float2half_rn(f); }
    static __device__ __forceinline__ float to(__half h) { return __half2float(h); }
};

#define SPLIT_THREADS 256

template <typename H, bool SCALE>
__global__ void __launch_bounds__(SPLIT_THREADS)
    split_x_kernel(H *__restrict__ hi, H *__restrict__ lo, float *__restrict__ inv_scale, const float *__restrict__ x,
                   int cols) {
    const size_t row = (size_t)blockIdx.x * cols;
    const float *xr = x + row;
    float scale = 1.0f;
    if (SCALE) {
        __shared__ float s_max[SPLIT_THREADS / 32];
        float mx = 0.0f;
        for (int i = threadIdx.x; i < cols; i += SPLIT_THREADS) mx = fmaxf(mx, fabsf(xr[i]));
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        if ((threadIdx.x & 31) == 0) s_max[threadIdx.x >> 5] = mx;
        __syncthreads();
        mx = 0.0f;
        for (int i = 0; i < SPLIT_THREADS / 32; i++) mx = fmaxf(mx, s_max[i]);
        int e = 0; /* max|x| = f * 2^e with f in [0.5, 1): scale by 2^(15 - e) */
        if (mx > 0.0f && isfinite(mx)) {
            frexpf(mx, &e);
            e = 15 - e;
            e = e < -126 ? -126 : e > 126 ? 126 : e;
        }
        scale = ldexpf(1.0f, e);
        if (threadIdx.x == 0) inv_scale[blockIdx.x] = ldexpf(1.0f, -e);
    }
    for (int i = threadIdx.x; i < cols; i += SPLIT_THREADS) {
        const float v = xr[i] * scale;
        const H h = half_conv<H>::from(v);
        hi[row + i] = h;
        lo[row + i] = half_conv<H>::from(v - half_conv<H>::to(h)); /* v - h is exact in f32 */
    }
}

cudaError_t clv_cuda_split_x(cudaStream_t s, int wt, void *hi, void *lo, float *inv_scale, const float *x, int T,
                             int cols) {
    if (T <= 0 || cols <= 0) return cudaSuccess;
    if (wt == CLV_CUDA_W_BF16)
        split_x_kernel<__nv_bfloat16, false><<<T, SPLIT_THREADS, 0, s>>>(
            static_cast<__nv_bfloat16 *>(hi), static_cast<__nv_bfloat16 *>(lo), inv_scale, x, cols);
    else if (wt == CLV_CUDA_W_F16)
        split_x_kernel<__half, true><<<T, SPLIT_THREADS, 0, s>>>(static_cast<__half *>(hi), static_cast<__half *>(lo),
                                                                 inv_scale, x, cols);
    else
        return cudaErrorInvalidValue;
    return cudaGetLastError();
}

/* y[t][r] = y[t][r] * inv_scale[t] + bias[r]. Grid-stride over T*rows, 256 threads. */
__global__ void scale_bias_kernel(float *y, const float *inv_scale, const float *bias, int rows, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = y[i];
        if (inv_scale) v *= inv_scale[i / (size_t)rows];
        if (bias) v += bias[i % (size_t)rows];
        y[i] = v;
    }
}

cudaError_t clv_cuda_scale_bias(cudaStream_t s, float *y, const float *inv_scale, const float *bias, int rows, int T) {
    const size_t n = (size_t)rows * (size_t)(T > 0 ? T : 0);
    if (n == 0 || (!inv_scale && !bias)) return cudaSuccess;
    scale_bias_kernel<<<ew_blocks(n, 256), 256, 0, s>>>(y, inv_scale, bias, rows, n);
    return cudaGetLastError();
}

/* ---- rmsnorm ---------------------------------------------------------------------
 * y[r] = x[r] * (1 / sqrt(mean(x[r]^2) + eps)) * w, the sum of squares in
 * double and the scaling in f32, as the CPU does (so results agree to the
 * last bit or two). One 256-thread block per row; y may alias x (each
 * element is read and written by the same thread). */

#define NORM_THREADS 256

__global__ void __launch_bounds__(NORM_THREADS)
    rmsnorm_kernel(float *y, const float *x, const float *__restrict__ w, int dim, float eps) {
    __shared__ double s_part[NORM_THREADS / 32];
    __shared__ float s_inv;
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *yr = y + (size_t)blockIdx.x * dim;
    double ss = 0.0;
    for (int i = threadIdx.x; i < dim; i += NORM_THREADS) ss += (double)xr[i] * xr[i];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) s_part[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int i = 0; i < NORM_THREADS / 32; i++) t += s_part[i];
        s_inv = (float)(1.0 / sqrt(t / dim + (double)eps));
    }
    __syncthreads();
    const float inv = s_inv;
    for (int i = threadIdx.x; i < dim; i += NORM_THREADS) yr[i] = __fmul_rn(__fmul_rn(xr[i], inv), w[i]);
}

cudaError_t clv_cuda_rmsnorm(cudaStream_t s, float *y, const float *x, const float *w, int rows, int dim, float eps) {
    if (rows <= 0 || dim <= 0) return cudaSuccess;
    rmsnorm_kernel<<<rows, NORM_THREADS, 0, s>>>(y, x, w, dim, eps);
    return cudaGetLastError();
}

/* ---- rope ------------------------------------------------------------------------
 * Rotate-half: for each (token t, head h, i < hd/2), with c, s the table
 * entries of position pos0 + t:
 *   x[i] = x[i]*c - x[i+hd/2]*s,  x[i+hd/2] = x[i+hd/2]*c + x[i]*s.
 * One thread per pair, grid-stride. The multiplies and adds are rounded
 * separately (no FMA), like the CPU's C code, so results match bit for bit. */

__global__ void rope_kernel(float *x, int n_heads, int hd, int pos0, const float *__restrict__ cos_t,
                            const float *__restrict__ sin_t, size_t n) {
    const int half = hd / 2;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx % (size_t)half);
        const size_t th = idx / (size_t)half; /* token * n_heads + head */
        const size_t t = th / (size_t)n_heads;
        const size_t tab = ((size_t)pos0 + t) * (size_t)half + (size_t)i;
        const float c = cos_t[tab], sn = sin_t[tab];
        float *v = x + th * (size_t)hd;
        const float a = v[i], b = v[i + half];
        v[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, sn));
        v[i + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, sn));
    }
}

cudaError_t clv_cuda_rope(cudaStream_t s, float *x, int T, int n_heads, int hd, int pos0, const float *cos_t,
                          const float *sin_t) {
    const size_t n = (size_t)(T > 0 ? T : 0) * (size_t)(n_heads > 0 ? n_heads : 0) * (size_t)(hd / 2);
    if (n == 0) return cudaSuccess;
    rope_kernel<<<ew_blocks(n, 256), 256, 0, s>>>(x, n_heads, hd, pos0, cos_t, sin_t, n);
    return cudaGetLastError();
}

/* ---- KV cache ----------------------------------------------------------------------
 * This backend's caches are head-major rows: position p of kv head h is
 * head_dim elements (f32, or bf16 rounded to nearest even) at
 * (h * clv_kv_cache_rows(ctx) + p) * head_dim. */

__device__ __forceinline__ float kv_f32(float x) { return x; }
__device__ __forceinline__ float kv_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void kv_put(float *p, float x) { *p = x; }
__device__ __forceinline__ void kv_put(__nv_bfloat16 *p, float x) { *p = __float2bfloat16_rn(x); }

template <typename KT>
__global__ void kv_store_kernel(KT *kc, KT *vc, const float *k, const float *v, int nkv, int hd, int pos0,
                                size_t rows, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t d = i % hd, h = i / hd % nkv, t = i / hd / nkv;
        const size_t at = (h * rows + (size_t)pos0 + t) * hd + d;
        kv_put(kc + at, k[i]);
        kv_put(vc + at, v[i]);
    }
}

cudaError_t clv_cuda_kv_store(cudaStream_t s, void *kc, void *vc, const float *k, const float *v,
                              const clv_attn_args *a) {
    const size_t n = (size_t)a->T * a->n_kv_heads * a->head_dim;
    if (n == 0) return cudaSuccess;
    if (a->pos0 < 0 || a->pos0 + a->T > a->ctx) return cudaErrorInvalidValue;
    const size_t rows = clv_kv_cache_rows(a->ctx);
    if (a->kv_dt == CLV_DT_BF16)
        kv_store_kernel<__nv_bfloat16><<<ew_blocks(n, 256), 256, 0, s>>>(
            static_cast<__nv_bfloat16 *>(kc), static_cast<__nv_bfloat16 *>(vc), k, v, a->n_kv_heads, a->head_dim, a->pos0,
            rows, n);
    else if (a->kv_dt == CLV_DT_F32)
        kv_store_kernel<float><<<ew_blocks(n, 256), 256, 0, s>>>(static_cast<float *>(kc), static_cast<float *>(vc), k, v,
                                                                 a->n_kv_heads, a->head_dim, a->pos0, rows, n);
    else
        return cudaErrorInvalidValue;
    return cudaGetLastError();
}

/* ---- attention ---------------------------------------------------------------------
 * out[t][h] = sum_j softmax_j(q[t][h] . k[j] * scale) v[j] over the keys j
 * that query t (position pos = pos0 + t) sees: lo <= j <= pos, lo = 0, or
 * pos - window + 1 with a window. k and v are rows of kv head h / group of
 * the caches (above), of element type KT (float or bf16, widened as read).
 *
 * Geometry: one 128-thread block per (query t, head h, key split), grid =
 * (T * n_heads, nsplit). The block walks its keys in chunks of ATT_BK = 64
 * with an online softmax (running max m, running sum l, f32 output
 * accumulator rescaled when m grows), so any context length works with 2 x 64
 * floats of shared memory:
 *   1. scores: each of the 4 warps takes 16 keys; a lane holds the query
 *      elements lane, lane+32, ... (scaled, in registers, up to 16 for
 *      head_dim 512) and the warp reduces each dot product with shuffles.
 *      All 16 keys' loads are issued before the reductions.
 *   2. the block's new max, the chunk's probabilities p_j = exp(s_j - m).
 *   3. thread i accumulates output dims i, i+128, ... (up to 4): o = o*corr +
 *      sum_j p_j v[j][d] (coalesced rows of v).
 * With one split the block writes out = o / l. Decode (T * n_heads blocks too
 * few to fill the GPU) splits each query's keys into nsplit chunk-aligned
 * ranges; every split writes (m, l, o) to `part` and attn_merge_kernel
 * combines them: out = sum_s o_s e^(m_s - M) / sum_s l_s e^(m_s - M). */

#define ATT_THREADS 128
#define ATT_WARPS (ATT_THREADS / 32)
#define ATT_BK 64
#define ATT_KPW (ATT_BK / ATT_WARPS) /* keys per warp per chunk */
#define ATT_MAX_SPLITS 64

struct attn_params {
    int n_heads, group, head_dim, pos0, window;
    size_t head_stride; /* elements between kv heads in the caches */
    float scale;
};

template <int DPL, typename KT> /* query floats per lane: head_dim <= 32 * DPL */
__global__ void __launch_bounds__(ATT_THREADS)
    attn_kernel(float *out, float *part_o, float *part_m, float *part_l, const float *q,
                const KT *__restrict__ k_cache, const KT *__restrict__ v_cache, attn_params p) {
    constexpr int OPT = (32 * DPL + ATT_THREADS - 1) / ATT_THREADS; /* output dims per thread */
    __shared__ float s_s[ATT_BK], s_p[ATT_BK];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int bh = blockIdx.x, t = bh / p.n_heads, h = bh % p.n_heads;
    const int split = blockIdx.y, nsplit = gridDim.y;
    const int hd = p.head_dim;
    const int pos = p.pos0 + t;
    const int lo = p.window > 0 && pos - p.window + 1 > 0 ? pos - p.window + 1 : 0;
    const int n = pos - lo + 1;
    const int per = ((n + nsplit - 1) / nsplit + ATT_BK - 1) / ATT_BK * ATT_BK; /* keys per split, whole chunks */
    const int k0 = lo + split * per;
    const int k1 = min(pos + 1, k0 + per); /* this block's keys: [k0, k1), maybe empty */

    float qv[DPL];
    const float *qr = q + (size_t)bh * hd;
#pragma unroll
    for (int i = 0; i < DPL; i++) {
        const int d = lane + 32 * i;
        qv[i] = d < hd ? qr[d] * p.scale : 0.0f;
    }
    const size_t kvoff = (size_t)(h / p.group) * p.head_stride;
    const KT *kb = k_cache + kvoff, *vb = v_cache + kvoff;

    float m = -INFINITY, l = 0.0f, o[OPT];
#pragma unroll
    for (int r = 0; r < OPT; r++) o[r] = 0.0f;

    for (int c0 = k0; c0 < k1; c0 += ATT_BK) {
        const int nk = min(ATT_BK, k1 - c0);
        /* 1. scores of this warp's keys (j is warp-uniform) */
        float acc[ATT_KPW];
#pragma unroll
        for (int jj = 0; jj < ATT_KPW; jj++) {
            const int j = warp * ATT_KPW + jj;
            acc[jj] = 0.0f;
            if (j < nk) {
                const KT *kr = kb + (size_t)(c0 + j) * hd;
#pragma unroll
                for (int i = 0; i < DPL; i++) {
                    const int d = lane + 32 * i;
                    if (d < hd) acc[jj] += qv[i] * kv_f32(kr[d]);
                }
            }
        }
#pragma unroll
        for (int jj = 0; jj < ATT_KPW; jj++) {
            const int j = warp * ATT_KPW + jj;
            const float sc = warp_sum(acc[jj]);
            if (lane == 0) s_s[j] = j < nk ? sc : -INFINITY;
        }
        __syncthreads();
        /* 2. new running max (finite: the chunk has at least one key) and probabilities */
        float cm = -INFINITY;
        for (int j = 0; j < nk; j++) cm = fmaxf(cm, s_s[j]);
        const float m_new = fmaxf(m, cm);
        const float corr = expf(m - m_new); /* 0 on the first chunk (m = -inf) */
        if (tid < ATT_BK) s_p[tid] = tid < nk ? expf(s_s[tid] - m_new) : 0.0f;
        __syncthreads();
        /* 3. accumulate (s_s is not written again until every thread passed the barrier above,
         *    s_p not until every thread passed the next chunk's first barrier) */
        float psum = 0.0f;
        for (int j = 0; j < nk; j++) psum += s_p[j];
        l = l * corr + psum;
#pragma unroll
        for (int r = 0; r < OPT; r++) o[r] *= corr;
#pragma unroll 4
        for (int j = 0; j < nk; j++) {
            const float pj = s_p[j];
            const KT *vr = vb + (size_t)(c0 + j) * hd;
#pragma unroll
            for (int r = 0; r < OPT; r++) {
                const int d = tid + r * ATT_THREADS;
                if (d < hd) o[r] += pj * kv_f32(vr[d]);
            }
        }
        m = m_new;
    }

    if (nsplit == 1) {
#pragma unroll
        for (int r = 0; r < OPT; r++) {
            const int d = tid + r * ATT_THREADS;
            if (d < hd) out[(size_t)bh * hd + d] = o[r] / l;
        }
    } else {
        const size_t ps = (size_t)bh * nsplit + split;
#pragma unroll
        for (int r = 0; r < OPT; r++) {
            const int d = tid + r * ATT_THREADS;
            if (d < hd) part_o[ps * hd + d] = o[r];
        }
        if (tid == 0) part_m[ps] = m, part_l[ps] = l; /* an empty split: m = -inf, l = 0, o = 0 */
    }
}

/* One 128-thread block per (query, head): merges the splits' partial results. */
__global__ void __launch_bounds__(ATT_THREADS)
    attn_merge_kernel(float *out, const float *part_o, const float *part_m, const float *part_l, int hd, int nsplit) {
    __shared__ float s_w[ATT_MAX_SPLITS];
    const size_t bh = blockIdx.x;
    const float *pm = part_m + bh * nsplit, *pl = part_l + bh * nsplit, *po = part_o + bh * nsplit * hd;
    float M = -INFINITY;
    for (int s = 0; s < nsplit; s++) M = fmaxf(M, pm[s]);
    if ((int)threadIdx.x < nsplit) s_w[threadIdx.x] = pm[threadIdx.x] == -INFINITY ? 0.0f : expf(pm[threadIdx.x] - M);
    __syncthreads();
    float L = 0.0f;
    for (int s = 0; s < nsplit; s++) L += pl[s] * s_w[s];
    for (int d = threadIdx.x; d < hd; d += ATT_THREADS) {
        float acc = 0.0f;
        for (int s = 0; s < nsplit; s++) acc += po[(size_t)s * hd + d] * s_w[s];
        out[bh * hd + d] = acc / L;
    }
}

size_t clv_cuda_attn_part_floats(int T, int n_heads, int head_dim, int nsplit) {
    if (nsplit <= 1) return 0;
    return (size_t)T * n_heads * nsplit * ((size_t)head_dim + 2);
}

template <int DPL, typename KT>
static void attn_launch(cudaStream_t s, dim3 grid, float *out, float *po, float *pm, float *pl, const float *q,
                        const void *kc, const void *vc, const attn_params &p) {
    attn_kernel<DPL, KT><<<grid, ATT_THREADS, 0, s>>>(out, po, pm, pl, q, static_cast<const KT *>(kc),
                                                       static_cast<const KT *>(vc), p);
}

template <typename KT>
static void attn_launch_hd(cudaStream_t s, dim3 grid, float *out, float *po, float *pm, float *pl, const float *q,
                           const void *kc, const void *vc, const attn_params &p) {
    if (p.head_dim <= 64) attn_launch<2, KT>(s, grid, out, po, pm, pl, q, kc, vc, p);
    else if (p.head_dim <= 128) attn_launch<4, KT>(s, grid, out, po, pm, pl, q, kc, vc, p);
    else if (p.head_dim <= 256) attn_launch<8, KT>(s, grid, out, po, pm, pl, q, kc, vc, p);
    else attn_launch<16, KT>(s, grid, out, po, pm, pl, q, kc, vc, p);
}

cudaError_t clv_cuda_attention(cudaStream_t s, float *out, const float *q, const void *k_cache,
                               const void *v_cache, const clv_attn_args *a, int nsplit, float *part) {
    if (a->T <= 0 || a->n_heads <= 0) return cudaSuccess;
    if (a->head_dim <= 0 || a->head_dim > 512 || a->n_kv_heads <= 0 || a->n_heads % a->n_kv_heads != 0 ||
        nsplit < 1 || nsplit > ATT_MAX_SPLITS || (nsplit > 1 && !part) ||
        (a->kv_dt != CLV_DT_F32 && a->kv_dt != CLV_DT_BF16))
        return cudaErrorInvalidValue;
    if (a->pos0 + a->T > a->ctx) return cudaErrorInvalidValue;
    const attn_params p = {a->n_heads, a->n_heads / a->n_kv_heads, a->head_dim, a->pos0, a->window,
                           clv_kv_head_at(a, 1), a->scale};
    const size_t nbh = (size_t)a->T * a->n_heads;
    float *po = part, *pm = part ? part + nbh * nsplit * a->head_dim : NULL, *pl = pm ? pm + nbh * nsplit : NULL;
    const dim3 grid((unsigned)nbh, (unsigned)nsplit);
    if (a->kv_dt == CLV_DT_BF16) attn_launch_hd<__nv_bfloat16>(s, grid, out, po, pm, pl, q, k_cache, v_cache, p);
    else attn_launch_hd<float>(s, grid, out, po, pm, pl, q, k_cache, v_cache, p);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || nsplit == 1) return e;
    attn_merge_kernel<<<(unsigned)nbh, ATT_THREADS, 0, s>>>(out, po, pm, pl, a->head_dim, nsplit);
    return cudaGetLastError();
}

/* ---- elementwise -------------------------------------------------------------------
 * Grid-stride loops, 256 threads per block. */

__global__ void silu_mul_kernel(float *g, const float *__restrict__ u, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float v = g[i];
        g[i] = v / (1.0f + expf(-v)) * u[i];
    }
}

__global__ void add_kernel(float *y, const float *x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

cudaError_t clv_cuda_silu_mul(cudaStream_t s, float *g, const float *u, size_t n) {
    if (n == 0) return cudaSuccess;
    silu_mul_kernel<<<ew_blocks(n, 256), 256, 0, s>>>(g, u, n);
    return cudaGetLastError();
}

cudaError_t clv_cuda_add(cudaStream_t s, float *y, const float *x, size_t n) {
    if (n == 0) return cudaSuccess;
    add_kernel<<<ew_blocks(n, 256), 256, 0, s>>>(y, x, n);
    return cudaGetLastError();
}

/* ---- embed -------------------------------------------------------------------------
 * y[t] = table[ids[t]] widened to f32 (exact for every dtype). The ids travel
 * in the kernel's parameters, EMBED_IDS per launch, so they are copied when
 * the launch is queued and no device buffer or host-side wait is needed.
 * Geometry: one 256-thread block per token. */

#define EMBED_IDS 256

struct embed_ids {
    int32_t id[EMBED_IDS];
};

template <int WT>
__global__ void embed_kernel(float *y, const typename wtype<WT>::elem *__restrict__ table, int cols, embed_ids ids) {
    const typename wtype<WT>::elem *row = table + (size_t)ids.id[blockIdx.x] * cols;
    float *yr = y + (size_t)blockIdx.x * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) yr[i] = wtype<WT>::load(row + i);
}

cudaError_t clv_cuda_embed(cudaStream_t s, int wt, float *y, const void *table, int cols, const int32_t *ids, int T) {
    if (wt != CLV_CUDA_W_F32 && wt != CLV_CUDA_W_BF16 && wt != CLV_CUDA_W_F16) return cudaErrorInvalidValue;
    if (cols <= 0) return cudaSuccess;
    for (int t0 = 0; t0 < T; t0 += EMBED_IDS) {
        const int n = T - t0 < EMBED_IDS ? T - t0 : EMBED_IDS;
        embed_ids p;
        for (int i = 0; i < EMBED_IDS; i++) p.id[i] = i < n ? ids[t0 + i] : 0;
        float *yt = y + (size_t)t0 * cols;
        if (wt == CLV_CUDA_W_F32) embed_kernel<CLV_CUDA_W_F32><<<n, 256, 0, s>>>(yt, (const float *)table, cols, p);
        else if (wt == CLV_CUDA_W_BF16)
            embed_kernel<CLV_CUDA_W_BF16><<<n, 256, 0, s>>>(yt, (const unsigned short *)table, cols, p);
        else embed_kernel<CLV_CUDA_W_F16><<<n, 256, 0, s>>>(yt, (const unsigned short *)table, cols, p);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}
