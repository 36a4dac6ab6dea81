/* backend — the device vtable. One backend instance per device (cpu, cpu:N,
 * cuda:N). The runtime calls ops through it and never knows how they are
 * computed; a backend never knows about layers.
 *
 * Shapes use row-major [rows][cols]. Activations are f32; weight matrices may
 * be f32, bf16 or f16 and are used in the dtype they were loaded in; host-memory
 * (CPU) backends also take int8 with one f32 scale per row (--dtype int8).
 *
 * Memory: every pointer an op takes (activations, caches, weights, cos/sin
 * tables) is memory of that backend, from its alloc, or host memory when the
 * backend's host_memory is set. Token ids are always host memory. A device
 * backend (host_memory false) queues its ops in order; to_host waits for them.
 * Its errors are sticky: ops return nothing, and check() reports the first
 * failure, naming the call, file, line and rank. */
#ifndef CLV_BACKEND_H
#define CLV_BACKEND_H

#include <stdbool.h>
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
    const float *scale; /* per row, CLV_DT_I8 only (row r is data[r] * scale[r]); NULL otherwise */
} clv_mat;

typedef struct clv_attn_args {
    int T;          /* queries in this call, at positions pos0 .. pos0+T-1 */
    int pos0;
    int n_heads, n_kv_heads, head_dim;
    int window;     /* 0: full causal; else key j visible to query i iff i - j < window */
    float scale;    /* 1/sqrt(head_dim) */
    int ctx;        /* positions the caches hold (clv_kv_cache_bytes) */
    clv_dtype kv_dt; /* the caches' elements: CLV_DT_F32 (0, the default) or CLV_DT_BF16 (--kv-dtype) */
} clv_attn_args;

/* A layer's key cache and its value cache are clv_kv_cache_bytes(ctx, ...)
 * each: per kv head (head-major), clv_kv_cache_rows(ctx) positions of
 * head_dim elements of kv_dt, in a layout that belongs to the backend
 * (kv_store writes it, rounding to kv_dt; attention reads it; nothing else
 * looks inside). The rows are rounded up to 16, so that a backend may keep
 * keys in blocks of 16 positions. */
static inline size_t clv_kv_cache_rows(int ctx) { return ((size_t)ctx + 15) & ~(size_t)15; }
static inline size_t clv_kv_elem_bytes(clv_dtype dt) { return dt == CLV_DT_BF16 ? 2 : 4; }
static inline size_t clv_kv_cache_bytes(int ctx, int n_kv_heads, int head_dim, clv_dtype dt) {
    return clv_kv_cache_rows(ctx) * (size_t)n_kv_heads * (size_t)head_dim * clv_kv_elem_bytes(dt);
}
/* where kv head h's part of a cache begins, in elements */
static inline size_t clv_kv_head_at(const clv_attn_args *a, int h) {
    return (size_t)h * clv_kv_cache_rows(a->ctx) * (size_t)a->head_dim;
}
/* kv head h's part of a cache */
static inline const void *clv_kv_head(const void *cache, const clv_attn_args *a, int h) {
    return (const char *)cache + clv_kv_head_at(a, h) * clv_kv_elem_bytes(a->kv_dt);
}
/* a cache dtype as --kv-dtype spells it */
static inline const char *clv_kv_dtype_name(clv_dtype dt) { return dt == CLV_DT_BF16 ? "bf16" : "f32"; }

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
    /* Store T new keys and values (k, v: [T][n_kv_heads][head_dim], as the
     * projections leave them) at positions pos0 .. pos0+T-1 of the caches. */
    void (*kv_store)(clv_backend *b, void *k_cache, void *v_cache, const float *k, const float *v,
                     const clv_attn_args *a);
    /* out[T][n_heads*head_dim] = softmax(q k^T * scale + causal/window mask) v over cache positions 0..pos0+T-1 */
    void (*attention)(clv_backend *b, float *out, const float *q, const void *k_cache, const void *v_cache,
                      const clv_attn_args *a);
    /* g[i] = silu(g[i]) * u[i] */
    void (*silu_mul)(clv_backend *b, float *g, const float *u, size_t n);
    /* y[i] += x[i] */
    void (*add)(clv_backend *b, float *y, const float *x, size_t n);
    /* y[t] = table[ids[t]] as f32 */
    void (*embed)(clv_backend *b, float *y, const clv_mat *table, const int32_t *ids, int T);
    /* copy within this device's memory */
    void (*copy)(clv_backend *b, void *dst, const void *src, size_t bytes);
    /* host -> device; the host buffer may be reused when it returns */
    void (*to_device)(clv_backend *b, void *dst, const void *src_host, size_t bytes);
    /* device -> host, after every op queued before it has finished */
    void (*to_host)(clv_backend *b, void *dst_host, const void *src, size_t bytes);
    /* wait until every queued op has finished */
    void (*sync)(clv_backend *b);
    /* 0, or the first error since the backend was made (sticky; fills st) */
    int (*check)(clv_backend *b, clv_status *st);
    /* Host memory the device copies from at full speed (pinned); NULL when
     * the backend has none (then plain host memory is as good). */
    void *(*alloc_host)(clv_backend *b, size_t bytes);
    void (*free_host)(clv_backend *b, void *p);
    /* Weight streaming through numbered slots (0 .. CLV_STAGE_SLOTS-1), on a
     * copy engine that runs beside the compute ops:
     *   stage(slot, dst, src)   queue src_host -> dst; the copy starts once the
     *                           ops that used the slot before its last
     *                           stage_release have finished;
     *   stage_wait(slot)        ops queued after this see the slot's copies;
     *   stage_release(slot)     ops queued before this were the slot's last users.
     * NULL on backends whose ops read host memory directly. */
    void (*stage)(clv_backend *b, int slot, void *dst, const void *src_host, size_t bytes);
    void (*stage_wait)(clv_backend *b, int slot);
    void (*stage_release)(clv_backend *b, int slot);
    void (*destroy)(clv_backend *b);
} clv_backend_ops;

#define CLV_STAGE_SLOTS 2

struct clv_backend {
    const clv_backend_ops *ops;
    char name[32];    /* "cpu", "cpu:1", "cuda:0" */
    bool host_memory; /* alloc returns host memory: activations pass to another
                         host-memory backend with no copy */
    bool bf16_prefill; /* matmuls of many tokens with 16-bit or int8 weights may round
                          the activations to bf16 and make one pass on the matrix units
                          (AMX, tensor cores) instead of a hi + lo split; set by the
                          model from --prefill-precision bf16 */
    void *impl;
};

/* CPU backend with n_threads worker threads (0: one per online CPU). cpus, when
 * non-NULL, pins thread i to cpus[i]. */
clv_backend *clv_cpu_backend_new(const char *name, int n_threads, const int *cpus);
int clv_cpu_backend_threads(const clv_backend *b);
/* Which SIMD path the CPU kernels run: "avx512", "avx2" or "scalar". Chosen
 * at run time from the CPU; CLV_CPU=avx2|scalar forces a lower one. */
const char *clv_cpu_isa(void);

/* The CPU backend behind a device-memory front, for testing the runtime's
 * device paths without a GPU: host_memory is false, and every pointer it hands
 * out is tagged so that a host access to it faults; ops, copies and staging
 * untag them. Owns `cpu`. */
clv_backend *clv_devsim_backend_new(clv_backend *cpu);

/* CUDA (src/backend/cuda; a stub that finds no device when built without nvcc). */
bool clv_cuda_built(void);
/* GPUs the driver shows; 0 with the reason in why (no driver, no device, not built). */
int clv_cuda_device_count(char *why, size_t cap);
/* free and total bytes of device memory */
int clv_cuda_mem_info(int device, uint64_t *free_bytes, uint64_t *total_bytes, clv_status *st);
clv_backend *clv_cuda_backend_new(const char *name, int device, clv_status *st);
/* device-to-device copy bandwidth in GB/s, read + write (0: cannot be measured) */
double clv_cuda_copy_bandwidth(int device);

#endif
