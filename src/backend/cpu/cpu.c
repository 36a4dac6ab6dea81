/* The CPU backend: ops spread over a persistent thread pool, each calling the
 * kernels of the best instruction set this CPU has. */
#include <cpuid.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "../../util/util.h"
#include "../backend.h"
#include "kernels.h"
#include "pool.h"

/* Scratch a thread owns: grown on first use to what the largest call needs
 * (the first prefill chunk), then reused; only its own thread touches it. */
typedef struct scratch {
    void *p;
    size_t cap;
} scratch;

static void *scratch_get(scratch *s, size_t bytes) {
    if (s->cap >= bytes) return s->p;
    clv_free(s->p);
    s->p = clv_alloc(bytes);
    s->cap = s->p ? bytes : 0;
    return s->p;
}

/* Per-thread attention buffers, sized once for the largest head_dim. */
typedef struct attn_buf {
    float *q, *o, *work; /* [CLV_ATTN_MAX_ROWS][CLV_MAX_HEAD_DIM] x 2, kernel work */
    int *lo, *hi;        /* [CLV_ATTN_MAX_ROWS] */
} attn_buf;

typedef struct cpu_impl {
    clv_pool *pool;
    const clv_cpu_kernels *k;
    int nth;
    scratch *work;  /* [nth] packed weight panels (gemm, AMX) */
    attn_buf *attn; /* [nth] */
    scratch a_pack; /* AMX: activations packed as bf16 hi/lo tiles, shared by all threads */
    scratch attn_part; /* decode attention: each key split's o, m and l per head */
} cpu_impl;

static cpu_impl *impl_of(clv_backend *b) { return b->impl; }

static bool cpu_has512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}
static bool cpu_has2(void) {
    __builtin_cpu_init();
    unsigned eax, ebx, ecx = 0, edx;
    bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C); /* not every compiler's builtin knows f16c */
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
}

const clv_cpu_kernels *clv_cpu_kernels_named(const char *isa) {
    if (strcmp(isa, "scalar") == 0) return &clv_kernels_scalar;
    if (strcmp(isa, "avx2") == 0) return cpu_has2() ? &clv_kernels_avx2 : NULL;
    if (strcmp(isa, "avx512") == 0) return cpu_has512() ? &clv_kernels_avx512 : NULL;
    if (strcmp(isa, "amx") == 0) return cpu_has512() && clv_amx_available() ? &clv_kernels_amx : NULL;
    return NULL;
}

const clv_cpu_kernels *clv_cpu_kernels_get(void) {
    static const clv_cpu_kernels *chosen;
    if (chosen) return chosen;
    const char *levels[] = {"amx", "avx512", "avx2", "scalar"};
    const clv_cpu_kernels *best = NULL;
    const char *no_amx = getenv("CLV_AMX");
    for (size_t i = 0; i < sizeof levels / sizeof levels[0] && !best; i++) {
        if (i == 0 && no_amx && strcmp(no_amx, "0") == 0) continue;
        best = clv_cpu_kernels_named(levels[i]);
    }
    const char *want = getenv("CLV_CPU");
    if (want && *want) {
        const clv_cpu_kernels *k = clv_cpu_kernels_named(want);
        if (k) best = k;
        else
            clv_warn("CLV_CPU=%s is not available on this CPU (choices: amx, avx512, avx2, scalar); using %s\n", want,
                     best->isa);
    }
    chosen = best;
    return chosen;
}

const char *clv_cpu_isa(void) { return clv_cpu_kernels_get()->isa; }

/* ---- memory ---------------------------------------------------------------- */

static void *cpu_alloc(clv_backend *b, size_t bytes) {
    (void)b;
    return clv_alloc(bytes);
}
static void cpu_free(clv_backend *b, void *p) {
    (void)b;
    clv_free(p);
}
static void cpu_copy(clv_backend *b, void *dst, const void *src, size_t bytes) {
    (void)b;
    memmove(dst, src, bytes);
}

/* Split [0, n) into nth ranges aligned to `align`; thread ith gets [*a, *b). */
static void split(int n, int ith, int nth, int align, int *a, int *b) {
    int units = (n + align - 1) / align;
    int per = units / nth, extra = units % nth;
    int u0 = ith * per + (ith < extra ? ith : extra);
    int u1 = u0 + per + (ith < extra);
    *a = u0 * align < n ? u0 * align : n;
    *b = u1 * align < n ? u1 * align : n;
}

/* ---- matmul ----------------------------------------------------------------
 * T == 1 (decode): rows split into one contiguous range per thread; each
 * thread's kernel keeps several rows in flight. bf16, f16 or int8 with T >= AMX_MIN_T on
 * the amx level: two phases in one job (pack the activations, barrier,
 * multiply on tiles). Otherwise the level's packed gemm from gemm_min_t
 * tokens on, and the register-blocked mm_* kernels below that. */

#define AMX_MIN_T 16

enum { MM_SMALL, MM_GEMM, MM_AMX };

typedef struct {
    cpu_impl *im;
    float *y;
    const float *x;
    const clv_mat *w;
    const float *bias;
    int T, path;
    bool one;        /* AMX: activations rounded to bf16, one pass (backend's bf16_prefill) */
    int unit, units; /* gemm and AMX: columns per work unit, and how many */
    _Atomic int next;
} mm_job;

static void mm_small(const clv_cpu_kernels *k, float *y, int N, const float *x, const clv_mat *w, int T, int n0, int n1) {
    const int K = w->cols;
    switch (w->dt) {
    case CLV_DT_F32: k->mm_f32(y, N, x, w->data, T, K, n0, n1); break;
    case CLV_DT_BF16: k->mm_bf16(y, N, x, w->data, T, K, n0, n1); break;
    case CLV_DT_F16: k->mm_f16(y, N, x, w->data, T, K, n0, n1); break;
    case CLV_DT_I8: k->mm_i8(y, N, x, w->data, T, K, n0, n1); break;
    default: CLV_ASSERT(!"matmul: unsupported weight dtype");
    }
}

/* Columns n0..n1 once computed: int8 rows' scales, which the decode and
 * small-T kernels leave out (one multiply per output here, against K weights
 * read for it; the prefill GEMMs apply them as they store), then the bias. */
static void finish_cols(float *y, int N, const float *scale, const float *bias, int T, int n0, int n1) {
    if (scale)
        for (int t = 0; t < T; t++)
            for (int n = n0; n < n1; n++) y[(size_t)t * N + n] *= scale[n];
    if (bias)
        for (int t = 0; t < T; t++)
            for (int n = n0; n < n1; n++) y[(size_t)t * N + n] += bias[n];
}

/* Decode splits rows statically: each thread streams one contiguous range.
 * Prefill hands out column units through a counter: threads do not run at
 * the same speed here (the tile unit and the caches are shared with
 * whatever else the core runs), and a static split waits for the slowest. */
static void mm_task(void *ctx, int ith, int nth) {
    mm_job *j = ctx;
    const clv_cpu_kernels *k = j->im->k;
    const int K = j->w->cols, N = j->w->rows, T = j->T;
    const float *scale = j->w->dt == CLV_DT_I8 ? j->w->scale : NULL;
    if (j->path == MM_SMALL) {
        int n0, n1;
        split(N, ith, nth, 16, &n0, &n1);
        if (n0 >= n1) return;
        mm_small(k, j->y, N, j->x, j->w, T, n0, n1);
        finish_cols(j->y, N, scale, j->bias, T, n0, n1);
        return;
    }
    if (j->path == MM_AMX) {
        int mb0, mb1;
        split(clv_amx_mblocks(T, j->one), ith, nth, 1, &mb0, &mb1);
        clv_amx_pack_a(j->im->a_pack.p, j->x, T, K, mb0, mb1, j->one);
        clv_pool_barrier(j->im->pool);
    }
    void *work = scratch_get(&j->im->work[ith], j->path == MM_AMX ? clv_amx_work_bytes(K) : k->gemm_work_bytes(K));
    for (int u; (u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->units;) {
        const int n0 = u * j->unit, n1 = n0 + j->unit < N ? n0 + j->unit : N;
        if (!work) mm_small(k, j->y, N, j->x, j->w, T, n0, n1); /* no work buffer could be had */
        else if (j->path == MM_AMX) clv_amx_gemm(j->y, N, j->im->a_pack.p, j->w->data, j->w->dt, scale, T, K, n0, n1, work, j->one);
        else k->gemm(j->y, N, j->x, j->w->data, j->w->dt, scale, T, K, n0, n1, work);
        finish_cols(j->y, N, work ? NULL : scale, j->bias, T, n0, n1);
    }
}

static void cpu_matmul(clv_backend *b, float *y, const float *x, const clv_mat *w, const float *bias, int T) {
    cpu_impl *im = impl_of(b);
    const clv_cpu_kernels *k = im->k;
    mm_job j = {.im = im, .y = y, .x = x, .w = w, .bias = bias, .T = T, .path = MM_SMALL, .one = b->bf16_prefill};
    if (k->amx && (w->dt == CLV_DT_BF16 || w->dt == CLV_DT_F16 || w->dt == CLV_DT_I8) && T >= AMX_MIN_T &&
        scratch_get(&im->a_pack, clv_amx_a_bytes(T, w->cols, j.one)))
        j.path = MM_AMX;
    else if (k->gemm && T >= k->gemm_min_t)
        j.path = MM_GEMM;
    if (j.path != MM_SMALL) {
        /* about 4 units per thread, of 1 to 8 panels (AMX: 48 columns, 32 in one pass; gemm: 32) */
        const int pw = j.path == MM_AMX ? clv_amx_panel(j.one) : 32;
        int panels = (w->rows + pw - 1) / pw, per = (panels + 4 * im->nth - 1) / (4 * im->nth);
        per = per < 1 ? 1 : per > 8 ? 8 : per;
        j.unit = pw * per;
        j.units = (w->rows + j.unit - 1) / j.unit;
    }
    atomic_init(&j.next, 0);
    clv_pool_run(im->pool, mm_task, &j);
}

/* ---- rmsnorm ---------------------------------------------------------------- */

typedef struct {
    const clv_cpu_kernels *k;
    float *y;
    const float *x, *w;
    int rows, dim;
    float eps;
} norm_job;

static void norm_task(void *ctx, int ith, int nth) {
    norm_job *j = ctx;
    int r0, r1;
    split(j->rows, ith, nth, 1, &r0, &r1);
    j->k->rmsnorm(j->y, j->x, j->w, r0, r1, j->dim, j->eps);
}

static void cpu_rmsnorm(clv_backend *b, float *y, const float *x, const float *w, int rows, int dim, float eps) {
    norm_job j = {impl_of(b)->k, y, x, w, rows, dim, eps};
    if ((size_t)rows * dim < 16384) j.k->rmsnorm(y, x, w, 0, rows, dim, eps);
    else clv_pool_run(impl_of(b)->pool, norm_task, &j);
}

/* ---- rope ------------------------------------------------------------------- */

static void cpu_rope(clv_backend *b, float *x, int T, int n_heads, int hd, int pos0, const float *cos_t,
                     const float *sin_t) {
    (void)b;
    const int half = hd / 2;
    for (int t = 0; t < T; t++) {
        const float *c = cos_t + (size_t)(pos0 + t) * half, *s = sin_t + (size_t)(pos0 + t) * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * hd;
            for (int i = 0; i < half; i++) {
                float a = v[i], bb = v[i + half];
                v[i] = a * c[i] - bb * s[i];
                v[i + half] = bb * c[i] + a * s[i];
            }
        }
    }
}

/* ---- attention --------------------------------------------------------------
 * Work is cut into tiles of up to CLV_ATTN_MAX_ROWS query rows that share one
 * kv head: a block of consecutive tokens times the heads of that kv head's
 * group (GQA), token-major, so every key block loaded is used by all of them.
 * Tiles are handed out through an atomic counter, latest tokens (the most
 * keys) first, so threads finish together under the causal mask. */

typedef struct {
    cpu_impl *im;
    float *out;
    const float *q;
    const void *kc, *vc;
    const clv_attn_args *a;
    int hc, n_hc, bq, n_tb; /* heads per tile, head chunks per kv head, tokens per tile, token blocks */
    void (*tile)(const clv_attn_tile *);
    _Atomic int next;
} attn_job;

static void attn_task(void *ctx, int ith, int nth) {
    (void)nth;
    attn_job *j = ctx;
    const clv_attn_args *a = j->a;
    const int hd = a->head_dim, group = a->n_heads / a->n_kv_heads;
    const int per_tb = a->n_kv_heads * j->n_hc, items = per_tb * j->n_tb;
    attn_buf *ab = &j->im->attn[ith];
    for (int it; (it = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < items;) {
        const int tb = j->n_tb - 1 - it / per_tb, kvh = it % per_tb / j->n_hc, hcn = it % j->n_hc;
        const int t0 = tb * j->bq, t1 = t0 + j->bq < a->T ? t0 + j->bq : a->T;
        const int h0 = kvh * group + hcn * j->hc, h1 = h0 + j->hc < (kvh + 1) * group ? h0 + j->hc : (kvh + 1) * group;
        int R = 0;
        for (int t = t0; t < t1; t++) {
            const int pos = a->pos0 + t, lo = a->window > 0 && pos - a->window + 1 > 0 ? pos - a->window + 1 : 0;
            for (int h = h0; h < h1; h++, R++) {
                const float *src = j->q + ((size_t)t * a->n_heads + h) * hd;
                float *dst = ab->q + (size_t)R * hd;
                for (int d = 0; d < hd; d++) dst[d] = src[d] * a->scale;
                ab->lo[R] = lo;
                ab->hi[R] = pos;
            }
        }
        clv_attn_tile tile = {R,        hd,    ab->q,    ab->lo, ab->hi, clv_kv_head(j->kc, a, kvh), clv_kv_head(j->vc, a, kvh),
                              a->kv_dt, ab->o, ab->work, NULL,   NULL};
        j->tile(&tile);
        R = 0;
        for (int t = t0; t < t1; t++)
            for (int h = h0; h < h1; h++, R++)
                memcpy(j->out + ((size_t)t * a->n_heads + h) * hd, ab->o + (size_t)R * hd, sizeof(float) * (size_t)hd);
    }
}

/* Decode (one token): the keys are cut into splits, one work item each, and
 * an item runs every kv head over its split, so every core has work however
 * few kv heads there are (the tiles above give a 4-kv-head model 4 items in
 * all), and long contexts are spread evenly. Each split leaves its
 * normalised output with its rows' m and l; the splits are then merged as
 * flash-decoding does. */
#define ATTN_SPLIT_KEYS 512 /* most keys per split (more splits than threads: even finish) */
#define ATTN_SPLIT_MIN 64   /* fewest: below that one item runs all the keys */
#define ATTN_MAX_SPLITS 64
_Static_assert(ATTN_SPLIT_MIN >= CLV_KBLOCK, "split edges are rounded down to key blocks: splits need a block's keys");

typedef struct {
    cpu_impl *im;
    const float *q;
    const void *kc, *vc;
    const clv_attn_args *a;
    int lo, len, n_split; /* keys lo .. lo + len - 1, in n_split equal parts */
    float *part;          /* [n_split][n_heads][hd + 2]: o, m, l */
    _Atomic int next;
} attn_split_job;

/* Where split s begins: inner edges at the start of a 16-position key block
 * of the cache (each split has >= ATTN_SPLIT_MIN keys, so none is left
 * empty), so that no block is read by two splits. */
static int split_edge(const attn_split_job *j, int s) {
    if (s == 0) return j->lo;
    if (s == j->n_split) return j->lo + j->len;
    return (j->lo + (int)((int64_t)j->len * s / j->n_split)) & ~(CLV_KBLOCK - 1);
}

static void attn_split_task(void *ctx, int ith, int nth) {
    (void)nth;
    attn_split_job *j = ctx;
    const clv_attn_args *a = j->a;
    const int hd = a->head_dim, group = a->n_heads / a->n_kv_heads, pw = hd + 2;
    attn_buf *ab = &j->im->attn[ith];
    for (int s; (s = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->n_split;) {
        const int k0 = split_edge(j, s), k1 = split_edge(j, s + 1);
        for (int kvh = 0; kvh < a->n_kv_heads; kvh++)
            for (int h0 = kvh * group; h0 < (kvh + 1) * group; h0 += CLV_ATTN_MAX_ROWS) {
                const int R = (kvh + 1) * group - h0 < CLV_ATTN_MAX_ROWS ? (kvh + 1) * group - h0 : CLV_ATTN_MAX_ROWS;
                float m[CLV_ATTN_MAX_ROWS], l[CLV_ATTN_MAX_ROWS];
                for (int r = 0; r < R; r++) {
                    const float *src = j->q + (size_t)(h0 + r) * hd;
                    for (int d = 0; d < hd; d++) ab->q[(size_t)r * hd + d] = src[d] * a->scale;
                    ab->lo[r] = k0;
                    ab->hi[r] = k1 - 1;
                }
                clv_attn_tile tile = {R,        hd,    ab->q,    ab->lo, ab->hi, clv_kv_head(j->kc, a, kvh),
                                      clv_kv_head(j->vc, a, kvh), a->kv_dt, ab->o, ab->work, m, l};
                j->im->k->attn_tile(&tile);
                for (int r = 0; r < R; r++) {
                    float *p = j->part + ((size_t)s * a->n_heads + h0 + r) * pw;
                    memcpy(p, ab->o + (size_t)r * hd, sizeof(float) * (size_t)hd);
                    p[hd] = m[r], p[hd + 1] = l[r];
                }
            }
    }
}

/* out[h] = sum_s w_s o_s / sum_s w_s, w_s = l_s exp(m_s - max m) */
static void attn_merge(float *out, const float *part, int n_split, int n_heads, int hd) {
    const int pw = hd + 2;
    for (int h = 0; h < n_heads; h++) {
        float mx = -INFINITY, wsum = 0;
        for (int s = 0; s < n_split; s++) mx = fmaxf(mx, part[((size_t)s * n_heads + h) * pw + hd]);
        float *o = out + (size_t)h * hd;
        memset(o, 0, sizeof(float) * (size_t)hd);
        for (int s = 0; s < n_split; s++) {
            const float *p = part + ((size_t)s * n_heads + h) * pw;
            const float w = p[hd + 1] * expf(p[hd] - mx);
            wsum += w;
            for (int d = 0; d < hd; d++) o[d] += w * p[d];
        }
        for (int d = 0; d < hd; d++) o[d] /= wsum;
    }
}

/* keys into 16-position blocks (kernels.h, clv_kcache_at), values as rows,
 * each element as f32 or rounded to bf16 */
static void cpu_kv_store(clv_backend *b, void *kc, void *vc, const float *k, const float *v, const clv_attn_args *a) {
    (void)b;
    const int hd = a->head_dim, nkv = a->n_kv_heads;
    const bool bf16 = a->kv_dt == CLV_DT_BF16;
    CLV_ASSERT(a->pos0 >= 0 && a->pos0 + a->T <= a->ctx && (bf16 || a->kv_dt == CLV_DT_F32));
    for (int t = 0; t < a->T; t++)
        for (int h = 0; h < nkv; h++) {
            const int pos = a->pos0 + t;
            const float *ks = k + ((size_t)t * nkv + h) * hd, *vs = v + ((size_t)t * nkv + h) * hd;
            const size_t kd = clv_kv_head_at(a, h) + clv_kcache_at(pos, 0, hd), vd = clv_kv_head_at(a, h) + (size_t)pos * hd;
            if (bf16) {
                uint16_t *kb = (uint16_t *)kc + kd, *vb = (uint16_t *)vc + vd;
                for (int d = 0; d < hd; d++) kb[(size_t)d * CLV_KBLOCK] = clv_f32_to_bf16(ks[d]), vb[d] = clv_f32_to_bf16(vs[d]);
            } else {
                float *kf = (float *)kc + kd;
                for (int d = 0; d < hd; d++) kf[(size_t)d * CLV_KBLOCK] = ks[d];
                memcpy((float *)vc + vd, vs, sizeof(float) * (size_t)hd);
            }
        }
}

static void cpu_attention(clv_backend *b, float *out, const float *q, const void *kc, const void *vc,
                          const clv_attn_args *a) {
    CLV_ASSERT(a->head_dim <= CLV_MAX_HEAD_DIM && a->n_heads % a->n_kv_heads == 0 && a->pos0 + a->T <= a->ctx);
    const int group = a->n_heads / a->n_kv_heads;
    if (a->T == 1) {
        const int pos = a->pos0, lo = a->window > 0 && pos - a->window + 1 > 0 ? pos - a->window + 1 : 0, len = pos + 1 - lo;
        cpu_impl *im = impl_of(b);
        int n_split = (len + ATTN_SPLIT_KEYS - 1) / ATTN_SPLIT_KEYS;
        if (n_split < im->nth) n_split = im->nth;
        if (n_split > len / ATTN_SPLIT_MIN) n_split = len / ATTN_SPLIT_MIN;
        if (n_split > ATTN_MAX_SPLITS) n_split = ATTN_MAX_SPLITS;
        float *part = n_split > 1 ? scratch_get(&im->attn_part, sizeof(float) * (size_t)n_split * a->n_heads * (a->head_dim + 2)) : NULL;
        if (part) { /* else (one split, or no memory for the parts) the tiles below */
            attn_split_job j = {.im = im, .q = q, .kc = kc, .vc = vc, .a = a, .lo = lo, .len = len, .n_split = n_split, .part = part};
            atomic_init(&j.next, 0);
            clv_pool_run(im->pool, attn_split_task, &j);
            attn_merge(out, part, n_split, a->n_heads, a->head_dim);
            return;
        }
    }
    attn_job j = {.im = impl_of(b), .out = out, .q = q, .kc = kc, .vc = vc, .a = a, .tile = impl_of(b)->k->attn_tile};
    /* a prompt under --prefill-precision bf16: both products on the tiles, as its matmuls */
    if (j.im->k->amx && b->bf16_prefill && a->T >= AMX_MIN_T) j.tile = clv_amx_attn_tile;
    j.hc = group < CLV_ATTN_MAX_ROWS ? group : CLV_ATTN_MAX_ROWS;
    j.n_hc = (group + j.hc - 1) / j.hc;
    j.bq = CLV_ATTN_MAX_ROWS / j.hc;
    j.n_tb = (a->T + j.bq - 1) / j.bq;
    atomic_init(&j.next, 0);
    clv_pool_run(j.im->pool, attn_task, &j);
}

/* ---- elementwise ------------------------------------------------------------ */

typedef struct {
    const clv_cpu_kernels *k;
    float *y;
    const float *x;
    size_t n;
    int op; /* 0: silu_mul, 1: add */
} ew_job;

static void ew_range(const ew_job *j, size_t a, size_t b) {
    if (j->op == 0) j->k->silu_mul(j->y + a, j->x + a, b - a);
    else
        for (size_t i = a; i < b; i++) j->y[i] += j->x[i];
}

static void ew_task(void *ctx, int ith, int nth) {
    ew_job *j = ctx;
    size_t per = ((j->n + (size_t)nth - 1) / (size_t)nth + 15) & ~(size_t)15;
    size_t a = per * (size_t)ith, e = a + per < j->n ? a + per : j->n;
    if (a < e) ew_range(j, a, e);
}

static void ew_run(clv_backend *b, ew_job *j) {
    if (j->n < 32768) ew_range(j, 0, j->n);
    else clv_pool_run(impl_of(b)->pool, ew_task, j);
}

static void cpu_silu_mul(clv_backend *b, float *g, const float *u, size_t n) {
    ew_job j = {impl_of(b)->k, g, u, n, 0};
    ew_run(b, &j);
}

static void cpu_add(clv_backend *b, float *y, const float *x, size_t n) {
    ew_job j = {impl_of(b)->k, y, x, n, 1};
    ew_run(b, &j);
}

/* ---- embedding -------------------------------------------------------------- */

static void cpu_embed(clv_backend *b, float *y, const clv_mat *tab, const int32_t *ids, int T) {
    (void)b;
    const int D = tab->cols;
    for (int t = 0; t < T; t++) {
        CLV_ASSERT(ids[t] >= 0 && ids[t] < tab->rows);
        float *yr = y + (size_t)t * D;
        size_t off = (size_t)ids[t] * D;
        switch (tab->dt) {
        case CLV_DT_F32: memcpy(yr, (const float *)tab->data + off, sizeof(float) * (size_t)D); break;
        case CLV_DT_BF16:
            for (int i = 0; i < D; i++) yr[i] = clv_bf16_to_f32(((const uint16_t *)tab->data)[off + i]);
            break;
        case CLV_DT_F16:
            for (int i = 0; i < D; i++) yr[i] = clv_f16_to_f32(((const uint16_t *)tab->data)[off + i]);
            break;
        case CLV_DT_I8:
            for (int i = 0; i < D; i++) yr[i] = (float)((const int8_t *)tab->data)[off + i] * tab->scale[ids[t]];
            break;
        default: CLV_ASSERT(!"embed: unsupported dtype");
        }
    }
}

static void impl_free(cpu_impl *im) {
    if (!im) return;
    clv_pool_free(im->pool);
    for (int i = 0; im->work && i < im->nth; i++) clv_free(im->work[i].p);
    for (int i = 0; im->attn && i < im->nth; i++) {
        clv_free(im->attn[i].q);
        clv_free(im->attn[i].o);
        clv_free(im->attn[i].work);
        clv_free(im->attn[i].lo);
        clv_free(im->attn[i].hi);
    }
    free(im->work);
    free(im->attn);
    clv_free(im->a_pack.p);
    clv_free(im->attn_part.p);
    free(im);
}

static void cpu_destroy(clv_backend *b) {
    if (!b) return;
    impl_free(b->impl);
    free(b);
}

/* host memory: copies are memcpy, nothing is queued, nothing fails late */
static void cpu_sync(clv_backend *b) { (void)b; }
static int cpu_check(clv_backend *b, clv_status *st) {
    (void)b;
    (void)st;
    return 0;
}

static const clv_backend_ops k_cpu_ops = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .matmul = cpu_matmul,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .silu_mul = cpu_silu_mul,
    .add = cpu_add,
    .embed = cpu_embed,
    .copy = cpu_copy,
    .to_device = cpu_copy,
    .to_host = cpu_copy,
    .sync = cpu_sync,
    .check = cpu_check,
    .destroy = cpu_destroy,
};

clv_backend *clv_cpu_backend_new_with(const char *name, int n_threads, const int *cpus, const clv_cpu_kernels *k) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    clv_backend *b = calloc(1, sizeof *b);
    cpu_impl *im = calloc(1, sizeof *im);
    if (!b || !im) goto fail;
    im->k = k;
    im->nth = n_threads;
    im->work = calloc((size_t)n_threads, sizeof *im->work);
    im->attn = calloc((size_t)n_threads, sizeof *im->attn);
    if (!im->work || !im->attn) goto fail;
    const size_t tile_floats = (size_t)CLV_ATTN_MAX_ROWS * CLV_MAX_HEAD_DIM;
    for (int i = 0; i < n_threads; i++) {
        attn_buf *ab = &im->attn[i];
        ab->q = clv_alloc(sizeof(float) * tile_floats);
        ab->o = clv_alloc(sizeof(float) * tile_floats);
        ab->work = clv_alloc(sizeof(float) * clv_attn_work_floats(CLV_ATTN_MAX_ROWS, CLV_MAX_HEAD_DIM));
        ab->lo = clv_alloc(sizeof(int) * CLV_ATTN_MAX_ROWS);
        ab->hi = clv_alloc(sizeof(int) * CLV_ATTN_MAX_ROWS);
        if (!ab->q || !ab->o || !ab->work || !ab->lo || !ab->hi) goto fail;
    }
    im->pool = clv_pool_new(n_threads, cpus);
    if (!im->pool) goto fail;
    b->ops = &k_cpu_ops;
    b->host_memory = true;
    b->impl = im;
    snprintf(b->name, sizeof b->name, "%s", name);
    return b;
fail:
    impl_free(im);
    free(b);
    return NULL;
}

clv_backend *clv_cpu_backend_new(const char *name, int n_threads, const int *cpus) {
    return clv_cpu_backend_new_with(name, n_threads, cpus, clv_cpu_kernels_get());
}

int clv_cpu_backend_threads(const clv_backend *b) { return clv_pool_size(((const cpu_impl *)b->impl)->pool); }
