/* cuda_kernels — the CUDA backend's kernel launchers (C++, for cuda.cu only).
 *
 * Every launcher queues its kernels on stream `s` and returns
 * cudaGetLastError() after the launches, so the caller can check it with the
 * call text and line. Sizes of zero launch nothing. Pointers are device
 * memory except where a comment says host. */
#ifndef CLV_CUDA_KERNELS_H
#define CLV_CUDA_KERNELS_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "../backend.h"
}

/* weight element types the matmul kernels take */
enum clv_cuda_wt { CLV_CUDA_W_F32, CLV_CUDA_W_BF16, CLV_CUDA_W_F16 };

/* Decode matmul for 1 <= T <= CLV_CUDA_GEMV_MAX_T tokens: y[t][r] = x[t] . w[r] (+ bias[r]),
 * reading each weight once. w must be aligned to its element size. n_sm: the device's SMs
 * (sizes the grid). */
#define CLV_CUDA_GEMV_MAX_T 8
cudaError_t clv_cuda_gemv(cudaStream_t s, int wt, float *y, const float *x, const void *w, const float *bias, int rows,
                          int cols, int T, int n_sm);

/* For the cuBLAS path: x[T][cols] f32 -> hi + lo, each [T][cols] of bf16 (wt BF16) or f16 (wt F16), with
 * x*scale[t] = hi + lo + O(2^-16 or 2^-22 relative). bf16 keeps scale 1; f16 scales each token row by a power
 * of two that puts its largest |x| just under 2^15 (f16's range is small), and writes 1/scale to inv_scale[t]. */
cudaError_t clv_cuda_split_x(cudaStream_t s, int wt, void *hi, void *lo, float *inv_scale, const float *x, int T,
                             int cols);
/* y[t][r] = y[t][r] * inv_scale[t] + bias[r]; either may be NULL */
cudaError_t clv_cuda_scale_bias(cudaStream_t s, float *y, const float *inv_scale, const float *bias, int rows, int T);

cudaError_t clv_cuda_rmsnorm(cudaStream_t s, float *y, const float *x, const float *w, int rows, int dim, float eps);
cudaError_t clv_cuda_rope(cudaStream_t s, float *x, int T, int n_heads, int hd, int pos0, const float *cos_t,
                          const float *sin_t);

/* T new keys and values ([T][n_kv_heads][head_dim]) into the caches at positions pos0.. (kernels.cu: the layout) */
cudaError_t clv_cuda_kv_store(cudaStream_t s, void *kc, void *vc, const float *k, const float *v,
                              const clv_attn_args *a);
/* Attention with the keys of each query split into nsplit ranges (1: no split, out written directly; more: partial
 * results in `part`, clv_cuda_attn_part_floats(...) floats, then merged). */
size_t clv_cuda_attn_part_floats(int T, int n_heads, int head_dim, int nsplit);
cudaError_t clv_cuda_attention(cudaStream_t s, float *out, const float *q, const void *k_cache,
                               const void *v_cache, const clv_attn_args *a, int nsplit, float *part);

cudaError_t clv_cuda_silu_mul(cudaStream_t s, float *g, const float *u, size_t n);
cudaError_t clv_cuda_add(cudaStream_t s, float *y, const float *x, size_t n);
/* y[t] = table[ids[t]]; ids is HOST memory, passed to the kernels by value (so it may be reused at once);
 * every id must be in [0, rows). */
cudaError_t clv_cuda_embed(cudaStream_t s, int wt, float *y, const void *table, int cols, const int32_t *ids, int T);

#endif
