/* The CPU backend: ops spread over a persistent thread pool, each calling the
 * kernels of the best instruction set this CPU has. */
#include <cpuid.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "../../util/util.h"
#include "../backend.h"
#include "kernels.h"
#include "pool.h"

typedef struct cpu_impl {
    clv_pool *pool;
    const clv_cpu_kernels *k;
} cpu_impl;

static cpu_impl *impl_of(clv_backend *b) { return b->impl; }

const clv_cpu_kernels *clv_cpu_kernels_get(void) {
    static const clv_cpu_kernels *chosen;
    if (chosen) return chosen;
    __builtin_cpu_init();
    bool has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    unsigned eax, ebx, ecx = 0, edx;
    bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C); /* not every compiler's builtin knows f16c */
    bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    const clv_cpu_kernels *best = has512 ? &clv_kernels_avx512 : has2 ? &clv_kernels_avx2 : &clv_kernels_scalar;
    const char *want = getenv("CLV_CPU");
    if (want && *want) {
        if (strcmp(want, "scalar") == 0) best = &clv_kernels_scalar;
        else if (strcmp(want, "avx2") == 0 && has2) best = &clv_kernels_avx2;
        else if (strcmp(want, "avx512") == 0 && has512) best = &clv_kernels_avx512;
        else
            clv_warn("CLV_CPU=%s is not available on this CPU (choices: avx512, avx2, scalar); using %s\n", want,
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

/* ---- matmul ---------------------------------------------------------------- */

typedef struct {
    const clv_cpu_kernels *k;
    float *y;
    const float *x;
    const clv_mat *w;
    const float *bias;
    int T;
} mm_job;

static void mm_task(void *ctx, int ith, int nth) {
    mm_job *j = ctx;
    int n0, n1;
    split(j->w->rows, ith, nth, 16, &n0, &n1);
    if (n0 >= n1) return;
    const int K = j->w->cols, N = j->w->rows;
    switch (j->w->dt) {
    case CLV_DT_F32: j->k->mm_f32(j->y, N, j->x, j->w->data, j->T, K, n0, n1); break;
    case CLV_DT_BF16: j->k->mm_bf16(j->y, N, j->x, j->w->data, j->T, K, n0, n1); break;
    case CLV_DT_F16: j->k->mm_f16(j->y, N, j->x, j->w->data, j->T, K, n0, n1); break;
    default: CLV_ASSERT(!"matmul: unsupported weight dtype");
    }
    if (j->bias)
        for (int t = 0; t < j->T; t++)
            for (int n = n0; n < n1; n++) j->y[(size_t)t * N + n] += j->bias[n];
}

static void cpu_matmul(clv_backend *b, float *y, const float *x, const clv_mat *w, const float *bias, int T) {
    mm_job j = {impl_of(b)->k, y, x, w, bias, T};
    clv_pool_run(impl_of(b)->pool, mm_task, &j);
}

/* ---- rmsnorm ---------------------------------------------------------------- */

typedef struct {
    float *y;
    const float *x, *w;
    int rows, dim;
    float eps;
} norm_job;

static void norm_rows(const norm_job *j, int r0, int r1) {
    for (int r = r0; r < r1; r++) {
        const float *xr = j->x + (size_t)r * j->dim;
        float *yr = j->y + (size_t)r * j->dim;
        double ss = 0.0;
        for (int i = 0; i < j->dim; i++) ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / j->dim + j->eps));
        for (int i = 0; i < j->dim; i++) yr[i] = xr[i] * inv * j->w[i];
    }
}

static void norm_task(void *ctx, int ith, int nth) {
    norm_job *j = ctx;
    int r0, r1;
    split(j->rows, ith, nth, 1, &r0, &r1);
    norm_rows(j, r0, r1);
}

static void cpu_rmsnorm(clv_backend *b, float *y, const float *x, const float *w, int rows, int dim, float eps) {
    norm_job j = {y, x, w, rows, dim, eps};
    if ((size_t)rows * dim < 16384) norm_rows(&j, 0, rows);
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

/* ---- attention -------------------------------------------------------------- */



typedef struct {
    const clv_cpu_kernels *k;
    float *out;
    const float *q, *kc, *vc;
    const clv_attn_args *a;
} attn_job;

/* One (query, head) pair with an online softmax: no score row is kept, so
 * memory does not grow with the context. */
static void attn_task(void *ctx, int ith, int nth) {
    attn_job *j = ctx;
    const clv_attn_args *a = j->a;
    const int hd = a->head_dim, group = a->n_heads / a->n_kv_heads;
    int i0, i1;
    split(a->T * a->n_heads, ith, nth, 1, &i0, &i1);
    float acc[CLV_MAX_HEAD_DIM];
    for (int item = i0; item < i1; item++) {
        int t = item / a->n_heads, h = item % a->n_heads, kvh = h / group;
        int pos = a->pos0 + t;
        int lo = a->window > 0 && pos - a->window + 1 > 0 ? pos - a->window + 1 : 0;
        const float *q = j->q + ((size_t)t * a->n_heads + h) * hd;
        memset(acc, 0, sizeof(float) * (size_t)hd);
        float m = -INFINITY, l = 0.0f;
        for (int p = lo; p <= pos; p++) {
            const float *kr = j->kc + (size_t)p * a->kv_stride + (size_t)kvh * hd;
            float s = j->k->dot(q, kr, hd) * a->scale;
            if (s > m) {
                float corr = expf(m - s);
                j->k->scale(acc, corr, hd);
                l *= corr;
                m = s;
            }
            float pr = expf(s - m);
            l += pr;
            j->k->axpy(acc, pr, j->vc + (size_t)p * a->kv_stride + (size_t)kvh * hd, hd);
        }
        float *o = j->out + ((size_t)t * a->n_heads + h) * hd;
        for (int i = 0; i < hd; i++) o[i] = acc[i] / l;
    }
}

static void cpu_attention(clv_backend *b, float *out, const float *q, const float *kc, const float *vc,
                          const clv_attn_args *a) {
    CLV_ASSERT(a->head_dim <= CLV_MAX_HEAD_DIM);
    attn_job j = {impl_of(b)->k, out, q, kc, vc, a};
    clv_pool_run(impl_of(b)->pool, attn_task, &j);
}

/* ---- elementwise ------------------------------------------------------------ */

typedef struct {
    float *y;
    const float *x;
    size_t n;
    int op; /* 0: silu_mul, 1: add */
} ew_job;

static void ew_range(const ew_job *j, size_t a, size_t b) {
    if (j->op == 0)
        for (size_t i = a; i < b; i++) {
            float g = j->y[i];
            j->y[i] = g / (1.0f + expf(-g)) * j->x[i];
        }
    else
        for (size_t i = a; i < b; i++) j->y[i] += j->x[i];
}

static void ew_task(void *ctx, int ith, int nth) {
    ew_job *j = ctx;
    size_t per = (j->n + (size_t)nth - 1) / (size_t)nth;
    size_t a = per * (size_t)ith, e = a + per < j->n ? a + per : j->n;
    if (a < e) ew_range(j, a, e);
}

static void ew_run(clv_backend *b, ew_job *j) {
    if (j->n < 32768) ew_range(j, 0, j->n);
    else clv_pool_run(impl_of(b)->pool, ew_task, j);
}

static void cpu_silu_mul(clv_backend *b, float *g, const float *u, size_t n) {
    ew_job j = {g, u, n, 0};
    ew_run(b, &j);
}

static void cpu_add(clv_backend *b, float *y, const float *x, size_t n) {
    ew_job j = {y, x, n, 1};
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
        default: CLV_ASSERT(!"embed: unsupported dtype");
        }
    }
}

static void cpu_destroy(clv_backend *b) {
    if (!b) return;
    clv_pool_free(impl_of(b)->pool);
    free(b->impl);
    free(b);
}

static const clv_backend_ops k_cpu_ops = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .matmul = cpu_matmul,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .silu_mul = cpu_silu_mul,
    .add = cpu_add,
    .embed = cpu_embed,
    .copy = cpu_copy,
    .destroy = cpu_destroy,
};

clv_backend *clv_cpu_backend_new(const char *name, int n_threads, const int *cpus) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    clv_backend *b = calloc(1, sizeof *b);
    cpu_impl *im = calloc(1, sizeof *im);
    if (!b || !im) {
        free(b);
        free(im);
        return NULL;
    }
    im->k = clv_cpu_kernels_get();
    im->pool = clv_pool_new(n_threads, cpus);
    if (!im->pool) {
        free(b);
        free(im);
        return NULL;
    }
    b->ops = &k_cpu_ops;
    b->impl = im;
    snprintf(b->name, sizeof b->name, "%s", name);
    return b;
}

int clv_cpu_backend_threads(const clv_backend *b) { return clv_pool_size(((const cpu_impl *)b->impl)->pool); }
