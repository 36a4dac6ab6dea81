/* CPU compute kernels, one implementation per instruction set, chosen at run
 * time (CLV_CPU=scalar|avx2|avx512|amx forces a lower level than the CPU
 * offers). Each computes a slice of the output so that the backend can spread
 * the work over its threads; none allocates or synchronises.
 *
 * Levels: "scalar" (portable C, the baseline the others are tested against),
 * "avx2" (AVX2+FMA+F16C), "avx512" (F/BW/VL/DQ), "amx" (avx512 plus
 * AMX-BF16 tiles for bf16, f16 and int8 prefill, and for a prompt's
 * attention under --prefill-precision bf16, kernels_amx.c). */
#ifndef CLV_CPU_KERNELS_H
#define CLV_CPU_KERNELS_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../backend.h"

/* The CPU backend's caches, per kv head (clv_kv_cache_rows positions each):
 * keys in blocks of CLV_KBLOCK positions stored dimension-major
 * ([position / 16][head_dim][16]), so that attention loads element d of 16
 * keys as one vector instead of transposing rows; values as rows
 * ([position][head_dim]). Elements are f32, or bf16 (rounded to nearest
 * even by kv_store) and widened to f32 in registers as they are read. */
#define CLV_KBLOCK 16
static inline size_t clv_kcache_at(int pos, int d, int hd) {
    return (size_t)(pos / CLV_KBLOCK) * (size_t)hd * CLV_KBLOCK + (size_t)d * CLV_KBLOCK + (size_t)(pos % CLV_KBLOCK);
}

/* One block of attention rows for one kv head (see cpu.c for how rows are
 * chosen): R query rows that share the kv head, each with its visible key
 * range. o = softmax(q k^T) v per row, over cache positions lo[r] .. hi[r].
 * Kernels may read keys (never values) of the whole 16-position blocks that
 * hold those positions. */
typedef struct clv_attn_tile {
    int R, hd;
    const float *q;       /* [R][hd], already multiplied by the softmax scale */
    const int *lo, *hi;   /* [R]; hi is non-decreasing in r, lo[r] <= hi[r] */
    const void *k, *v;    /* this kv head's caches (clv_kcache_at; v rows hd elements apart) */
    clv_dtype kv_dt;      /* their elements: CLV_DT_F32 or CLV_DT_BF16 */
    float *o;             /* [R][hd] */
    float *work;          /* clv_attn_work_floats(R, hd) floats, 64-byte aligned */
    float *m, *l;         /* optional [R]: each row's largest (scaled) score and sum of exp(score - m),
                           * with which partial results over disjoint key ranges are merged */
} clv_attn_tile;

/* A tile's start, for the kernels: every row's running max and sum reset, o
 * zeroed, and the union of the rows' key ranges into *jlo .. *jhi. */
static inline void clv_attn_tile_begin(const clv_attn_tile *a, float *mrow, float *lrow, int *jlo, int *jhi) {
    *jlo = a->lo[0], *jhi = a->hi[a->R - 1];
    for (int r = 0; r < a->R; r++) {
        mrow[r] = -INFINITY;
        lrow[r] = 0.0f;
        if (a->lo[r] < *jlo) *jlo = a->lo[r];
        if (a->hi[r] > *jhi) *jhi = a->hi[r];
    }
    memset(a->o, 0, sizeof(float) * (size_t)a->R * (size_t)a->hd);
}

/* Keys per block in the attention kernels, and the most rows in one tile. */
#define CLV_ATTN_BK 64
#define CLV_ATTN_MAX_ROWS 64
/* clv_amx_attn_tile's work: Q, a key block, P and a value block as bf16
 * tiles, scores, one row block's output, m and l (kernels_amx.c) */
static inline size_t clv_amx_attn_work_bytes(int R, int hd) {
    const size_t rb = (size_t)(R + 15) / 16, ds = (size_t)(hd + 31) / 32, cb = (size_t)(hd + 15) / 16;
    return (rb * ds + 4 * ds + rb * 2 + 2 * cb) * 1024 + rb * 16 * 64 * 4 + 16 * 64 * 4 + 2 * rb * 16 * 4;
}
/* work for either kernel */
static inline size_t clv_attn_work_floats(int R, int hd) {
    /* scores [R][64], m and l [R] (rounded up to 16), a block of keys and of values widened from bf16 */
    const size_t f = (size_t)R * CLV_ATTN_BK + ((2 * (size_t)R + 15) & ~(size_t)15) + 2 * (size_t)CLV_ATTN_BK * (size_t)hd + 64;
    const size_t amx = (clv_amx_attn_work_bytes(R, hd) + 3) / 4;
    return f > amx ? f : amx;
}

typedef struct clv_cpu_kernels {
    const char *isa;
    /* y[t][n] = sum_k x[t][k] * w[n][k], for t < T and n0 <= n < n1.
     * y has row stride ldy; w is [N][K] in the kernel's dtype. T == 1 is the
     * decode matrix-vector product (several rows in flight per thread to
     * keep enough loads outstanding for the memory system). */
    void (*mm_f32)(float *y, int ldy, const float *x, const float *w, int T, int K, int n0, int n1);
    void (*mm_bf16)(float *y, int ldy, const float *x, const uint16_t *w, int T, int K, int n0, int n1);
    void (*mm_f16)(float *y, int ldy, const float *x, const uint16_t *w, int T, int K, int n0, int n1);
    /* int8 weights (--dtype int8), widened to f32 in registers: the sums of
     * x[t][k] * q[n][k], unscaled; the caller multiplies output column n by
     * the row's scale (a pass over T x N outputs, next to K x N weights). */
    void (*mm_i8)(float *y, int ldy, const float *x, const int8_t *w, int T, int K, int n0, int n1);
    /* Prefill GEMM for larger T (NULL: use mm_*): same contract, plus a
     * per-thread work buffer of gemm_work_bytes(K) bytes for packed weights.
     * scale (int8 only, else NULL): y[t][n] is multiplied by scale[n] as the
     * last k block is stored, while those outputs are still in cache. */
    void (*gemm)(float *y, int ldy, const float *x, const void *w, clv_dtype dt, const float *scale, int T, int K,
                 int n0, int n1, void *work);
    size_t (*gemm_work_bytes)(int K);
    int gemm_min_t; /* use gemm from this many tokens on */
    /* attention over one tile (see clv_attn_tile) */
    void (*attn_tile)(const clv_attn_tile *a);
    /* g[i] = silu(g[i]) * u[i] */
    void (*silu_mul)(float *g, const float *u, size_t n);
    /* y[r] = x[r] / rms(x[r]) * w for rows r0 <= r < r1 of dim floats (sum of squares in double) */
    void (*rmsnorm)(float *y, const float *x, const float *w, int r0, int r1, int dim, float eps);
    bool amx; /* bf16, f16 and int8 prefill on AMX tiles: clv_amx_* below */
} clv_cpu_kernels;

const clv_cpu_kernels *clv_cpu_kernels_get(void);
/* The kernels of a named level ("scalar", "avx2", "avx512", "amx"), or NULL
 * when this CPU (and OS) cannot run it. For tests and benchmarks. */
const clv_cpu_kernels *clv_cpu_kernels_named(const char *isa);
extern const clv_cpu_kernels clv_kernels_scalar, clv_kernels_avx2, clv_kernels_avx512, clv_kernels_amx;
/* A CPU backend running the given kernels (tests and benchmarks compare levels
 * in one process; clv_cpu_backend_new takes clv_cpu_kernels_get()). */
clv_backend *clv_cpu_backend_new_with(const char *name, int n_threads, const int *cpus, const clv_cpu_kernels *k);
/* portable versions, shared by the levels without their own */
void clv_attn_tile_scalar(const clv_attn_tile *a);
void clv_silu_mul_scalar(float *g, const float *u, size_t n);
void clv_rmsnorm_scalar(float *y, const float *x, const float *w, int r0, int r1, int dim, float eps);

/* ---- AMX-BF16 (kernels_amx.c) ----------------------------------------------------
 * C[T][N] = A[T][K] . W^T with A in f32 and W in bf16, f16 (split exactly
 * into two bf16 halves) or int8 times scale[n] (every int8 value is exact in
 * bf16). By default A is split into a
 * bf16 high part and a bf16 residual (x = hi + lo + O(2^-16 |x|)), both
 * multiplied on the tiles with f32 accumulation, so the result keeps ~1e-5
 * relative accuracy instead of bf16's 2^-8 per product. With `one` A is
 * rounded to bf16 and multiplied once (half the tile work). Two phases:
 *   1. clv_amx_pack_a: every thread packs its share of the
 *      clv_amx_mblocks(T, one) 16-row blocks of x into `ap`
 *      (clv_amx_a_bytes(T, K, one) bytes, shared);
 *   2. clv_amx_gemm: each thread computes its columns n0..n1 from ap,
 *      repacking W on the fly into `work` (clv_amx_work_bytes(K) bytes,
 *      its own). Column ranges should start on clv_amx_panel(one) columns. */
bool clv_amx_available(void); /* CPU has AMX-BF16 and the OS granted the tile state */
int clv_amx_mblocks(int T, bool one);
size_t clv_amx_a_bytes(int T, int K, bool one);
int clv_amx_panel(bool one);
size_t clv_amx_work_bytes(int K);
void clv_amx_pack_a(uint16_t *ap, const float *x, int T, int K, int mb0, int mb1, bool one); /* blocks mb0..mb1-1 */
void clv_amx_gemm(float *y, int ldy, const uint16_t *ap, const void *w, clv_dtype dt, const float *scale, int T, int K,
                  int n0, int n1, void *work, bool one); /* dt: BF16, F16, or I8 with its row scales */
/* One attention tile (same contract as attn_tile, work of clv_attn_work_floats
 * floats) with Q K^T and P V on the tiles: q, P and an f32 cache rounded to
 * bf16 (--prefill-precision bf16), softmax and sums in f32. */
void clv_amx_attn_tile(const clv_attn_tile *a);

#endif
