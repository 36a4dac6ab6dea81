/* backend — the device vtable. One backend instance per device (cpu, cpu:N,
 * later cuda:N). The runtime calls ops through it and never knows how they
 * are computed; a backend never knows about layers.
 *
 * Shapes use row-major [rows][cols]. Activations are f32; weight matrices may
 * be f32, bf16 or f16 and are used in the dtype they were loaded in. */
#ifndef CLV_BACKEND_H
#define CLV_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "../format/safetensors.h"

/* Largest head_dim the attention kernels take (config.h refuses larger). */
#ifndef CLV_MAX_HEAD_DIM
#define CLV_MAX_HEAD_DIM 512
#endif

typedef struct clv_mat {
    const void *data; /* [rows][cols] in dtype dt */
    clv_dtype dt;
    int rows, cols;
} clv_mat;

typedef struct clv_attn_args {
    int T;          /* queries in this call, at positions pos0 .. pos0+T-1 */
    int pos0;
    int n_heads, n_kv_heads, head_dim;
    int window;     /* 0: full causal; else key j visible to query i iff i - j < window */
    float scale;    /* 1/sqrt(head_dim) */
    int kv_stride;  /* floats between consecutive positions in the caches */
} clv_attn_args;

typedef struct clv_backend clv_backend;

typedef struct clv_backend_ops {
    const char *name;
    /* memory on the device; zeroed */
    void *(*alloc)(clv_backend *b, size_t bytes);
    void (*free)(clv_backend *b, void *p);
    /* y[T][w.rows] = x[T][w.cols] . w^T (+ bias[w.rows] when non-NULL) */
    void (*matmul)(clv_backend *b, float *y, const float *x, const clv_mat *w, const float *bias, int T);
    /* y[r] = x[r] / rms(x[r]) * w, for `rows` rows of `dim` (y may alias x) */
    void (*rmsnorm)(clv_backend *b, float *y, const float *x, const float *w, int rows, int dim, float eps);
    /* rotate x[T][n_heads][head_dim] in place (rotate-half convention) with the
     * cos/sin table rows of positions pos0 .. pos0+T-1 ([pos][head_dim/2] each) */
    void (*rope)(clv_backend *b, float *x, int T, int n_heads, int head_dim, int pos0, const float *cos_t,
                 const float *sin_t);
    /* out[T][n_heads*head_dim] = softmax(q k^T * scale + causal/window mask) v over cache rows 0..pos0+T-1 */
    void (*attention)(clv_backend *b, float *out, const float *q, const float *k_cache, const float *v_cache,
                      const clv_attn_args *a);
    /* g[i] = silu(g[i]) * u[i] */
    void (*silu_mul)(clv_backend *b, float *g, const float *u, size_t n);
    /* y[i] += x[i] */
    void (*add)(clv_backend *b, float *y, const float *x, size_t n);
    /* y[t] = table[ids[t]] as f32 */
    void (*embed)(clv_backend *b, float *y, const clv_mat *table, const int32_t *ids, int T);
    /* copy within this device's memory */
    void (*copy)(clv_backend *b, void *dst, const void *src, size_t bytes);
    void (*destroy)(clv_backend *b);
} clv_backend_ops;

struct clv_backend {
    const clv_backend_ops *ops;
    char name[32]; /* "cpu", "cpu:1", "cuda:0" */
    void *impl;
};

/* CPU backend with n_threads worker threads (0: one per online CPU). cpus, when
 * non-NULL, pins thread i to cpus[i]. */
clv_backend *clv_cpu_backend_new(const char *name, int n_threads, const int *cpus);
int clv_cpu_backend_threads(const clv_backend *b);
/* Which SIMD path the CPU kernels run: "avx512", "avx2" or "scalar". Chosen
 * at run time from the CPU; CLV_CPU=avx2|scalar forces a lower one. */
const char *clv_cpu_isa(void);

#endif
