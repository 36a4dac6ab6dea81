/* gemv_lab — the decode kernel lab: numbered variants of y = W x for bf16
 * weights, each checked against a double-precision reference and timed over a
 * model-shaped sequence of matrices (one pool dispatch per matrix, as the
 * engine does), with 1 and 2 threads. The winner is promoted into
 * src/backend/cpu/kernels_avx512.c; "engine" runs what the engine runs now.
 *
 * -f FILE takes the weights from a read-only mmap of FILE (e.g. a model's
 * safetensors, as the engine maps them: page-cache pages, not anonymous
 * memory) instead of freshly allocated buffers.
 *
 * Build: make -C bench gemv_lab
 * -m DIR uses the first LAYERS layers of a Llama checkpoint (1.1B shapes)
 * in place, exactly where the engine reads them.
 *
 * Usage: build/bench/gemv_lab [-l LAYERS] [-r REPS] [-t MAXTHREADS] [-f FILE | -m DIR]
 * Environment (experiments): VARIANTS=0,12,13 runs only those; with -f,
 * FBASE=bytes where the matrices start in FILE (default 1 MiB), MISALIGN=bytes
 * added to it, SCATTER=1 places each layer's matrices in a checkpoint's file
 * order (down gate up k o q v) while reading them in use order, HUGE=1
 * madvises the mapping MADV_HUGEPAGE. */
#include <immintrin.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/cpu/kernels.h"
#include "backend/cpu/pool.h"
#include "format/safetensors.h"
#include "util/util.h"

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c")))

typedef void (*gemv_fn)(float *y, const float *x, const float *xe, const uint16_t *xh, const uint16_t *w, int K,
                        int n0, int n1);

/* ---- variants ------------------------------------------------------------------ */

/* v0: the engine's current T == 1 kernel */
static void v0_engine(float *y, const float *x, const float *xe, const uint16_t *xh, const uint16_t *w, int K, int n0,
                      int n1) {
    (void)xe, (void)xh;
    clv_cpu_kernels_get()->mm_bf16(y, 0, x, w, 1, K, n0, n1);
}

TGT static inline __m512 cvt_lo(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }

/* v1..v3: R rows at once, a whole 64-byte line of each per step (vpmovzx widening) */
#define DEF_ROWS(NAME, R)                                                                                       \
    TGT static void NAME(float *y, const float *x, const float *xe, const uint16_t *xh, const uint16_t *w, int K, \
                         int n0, int n1) {                                                                      \
        (void)xe, (void)xh;                                                                                     \
        for (int n = n0; n < n1; n += R) {                                                                      \
            __m512 a[R], b[R];                                                                                  \
            for (int i = 0; i < R; i++) a[i] = b[i] = _mm512_setzero_ps();                                      \
            const uint16_t *w0 = w + (size_t)n * K;                                                             \
            for (int k = 0; k < K; k += 32) {                                                                   \
                __m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16);                           \
                for (int i = 0; i < R; i++) {                                                                   \
                    __m512i v = _mm512_loadu_si512(w0 + (size_t)i * K + k);                                     \
                    a[i] = _mm512_fmadd_ps(cvt_lo(_mm512_castsi512_si256(v)), x0, a[i]);                        \
                    b[i] = _mm512_fmadd_ps(cvt_lo(_mm512_extracti64x4_epi64(v, 1)), x1, b[i]);                  \
                }                                                                                               \
            }                                                                                                   \
            for (int i = 0; i < R; i++) y[n + i] = _mm512_reduce_add_ps(_mm512_add_ps(a[i], b[i]));             \
        }                                                                                                       \
    }
DEF_ROWS(v1_rows4, 4)
DEF_ROWS(v2_rows8, 8)
DEF_ROWS(v3_rows16, 16)

/* v4..v6: R rows, even/odd split of each 32-bit lane (shift / mask) against a
 * deinterleaved x: no cross-lane widening at all. PF: prefetch distance in
 * bytes ahead on every row (0: none). */
#define DEF_EO(NAME, R, PF)                                                                                      \
    TGT static void NAME(float *y, const float *x, const float *xe, const uint16_t *xh, const uint16_t *w, int K, \
                         int n0, int n1) {                                                                       \
        (void)x, (void)xh;                                                                                       \
        const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);                                                  \
        for (int n = n0; n < n1; n += R) {                                                                       \
            __m512 a[R], b[R];                                                                                   \
            for (int i = 0; i < R; i++) a[i] = b[i] = _mm512_setzero_ps();                                       \
            const uint16_t *w0 = w + (size_t)n * K;                                                              \
            for (int k = 0; k < K; k += 32) {                                                                    \
                __m512 x0 = _mm512_loadu_ps(xe + k), x1 = _mm512_loadu_ps(xe + k + 16);                          \
                for (int i = 0; i < R; i++) {                                                                    \
                    const uint16_t *p = w0 + (size_t)i * K + k;                                                  \
                    if (PF) _mm_prefetch((const char *)p + PF, _MM_HINT_T0);                                     \
                    __m512i v = _mm512_loadu_si512(p);                                                           \
                    a[i] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), x0, a[i]);             \
                    b[i] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v, hi)), x1, b[i]);              \
                }                                                                                                \
            }                                                                                                    \
            for (int i = 0; i < R; i++) y[n + i] = _mm512_reduce_add_ps(_mm512_add_ps(a[i], b[i]));              \
        }                                                                                                        \
    }
DEF_EO(v4_eo8, 8, 0)
DEF_EO(v5_eo16, 16, 0)
DEF_EO(v6_eo8_pf, 8, 1024)
DEF_EO(v7_eo4_pf, 4, 2048)
DEF_EO(v8_eo16_pf, 16, 512)
DEF_EO(eo1, 1, 0)

/* v10..v12: like v4/v5, but the R rows in flight are R far-apart rows: the
 * thread's range is cut into R contiguous parts and step i takes row i of
 * each, so every stream runs on through consecutive rows (long sequential
 * streams) instead of restarting every row (K*2 bytes). */
#define DEF_EO_STRIDED(NAME, R) DEF_EO_STRIDED_PF(NAME, R, 0)
#define DEF_EO_STRIDED_PF(NAME, R, PF)                                                                       \
    TGT static void NAME(float *y, const float *x, const float *xe, const uint16_t *xh, const uint16_t *w, int K, \
                         int n0, int n1) {                                                                       \
        (void)x, (void)xh;                                                                                       \
        const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);                                                  \
        const int L = (n1 - n0) / R;                                                                             \
        for (int s = 0; s < L; s++) {                                                                            \
            __m512 a[R], b[R];                                                                                   \
            const uint16_t *wr[R];                                                                               \
            for (int i = 0; i < R; i++) a[i] = b[i] = _mm512_setzero_ps(), wr[i] = w + (size_t)(n0 + i * L + s) * K; \
            for (int k = 0; k < K; k += 32) {                                                                    \
                __m512 x0 = _mm512_loadu_ps(xe + k), x1 = _mm512_loadu_ps(xe + k + 16);                          \
                for (int i = 0; i < R; i++) {                                                                    \
                    if (PF) _mm_prefetch((const char *)(wr[i] + k) + PF, _MM_HINT_T0);                           \
                    __m512i v = _mm512_loadu_si512(wr[i] + k);                                                   \
                    a[i] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), x0, a[i]);             \
                    b[i] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v, hi)), x1, b[i]);              \
                }                                                                                                \
            }                                                                                                    \
            for (int i = 0; i < R; i++) y[n0 + i * L + s] = _mm512_reduce_add_ps(_mm512_add_ps(a[i], b[i]));    \
        }                                                                                                        \
        if (n0 + R * L < n1) eo1(y, x, xe, xh, w, K, n0 + R * L, n1);                                         \
    }
DEF_EO_STRIDED(v10_eo8_str, 8)
DEF_EO_STRIDED(v11_eo16_str, 16)
DEF_EO_STRIDED(v12_eo4_str, 4)
DEF_EO_STRIDED_PF(v13_eo4_str_pf2k, 4, 2048)
DEF_EO_STRIDED_PF(v14_eo8_str_pf2k, 8, 2048)
DEF_EO_STRIDED_PF(v15_eo4_str_pf4k, 4, 4096)
DEF_EO_STRIDED(v16_eo6_str, 6)

/* v9: vdpbf16ps with x split into bf16 hi + lo (two dot products per line). */
TGT static void v9_dpbf16(float *y, const float *x, const float *xe, const uint16_t *xh, const uint16_t *w, int K,
                          int n0, int n1) {
    (void)x, (void)xe;
    enum { R = 8 };
    for (int n = n0; n < n1; n += R) {
        __m512 a[R], b[R];
        for (int i = 0; i < R; i++) a[i] = b[i] = _mm512_setzero_ps();
        const uint16_t *w0 = w + (size_t)n * K;
        for (int k = 0; k < K; k += 32) {
            __m512bh xhi = (__m512bh)_mm512_loadu_si512(xh + k), xlo = (__m512bh)_mm512_loadu_si512(xh + K + k);
            for (int i = 0; i < R; i++) {
                __m512bh v = (__m512bh)_mm512_loadu_si512(w0 + (size_t)i * K + k);
                a[i] = _mm512_dpbf16_ps(a[i], v, xhi);
                b[i] = _mm512_dpbf16_ps(b[i], v, xlo);
            }
        }
        for (int i = 0; i < R; i++) y[n + i] = _mm512_reduce_add_ps(_mm512_add_ps(a[i], b[i]));
    }
}

static const struct {
    const char *name;
    gemv_fn fn;
    int rows; /* rows per step: each thread's share is a multiple of it */
    int chunks; /* 0: one contiguous share per thread; C: C pieces per thread from a counter;
                 * -1: as 0, with a layer's q k v (and gate up) in one dispatch */
} k_variants[] = {
    {"v0 engine", v0_engine, 16, 0},    {"v1 rows4", v1_rows4, 4, 0},       {"v2 rows8", v2_rows8, 8, 0},
    {"v3 rows16", v3_rows16, 16, 0},    {"v4 eo8", v4_eo8, 8, 0},           {"v5 eo16", v5_eo16, 16, 0},
    {"v6 eo8+pf1k", v6_eo8_pf, 8, 0},   {"v7 eo4+pf2k", v7_eo4_pf, 4, 0},   {"v8 eo16+pf512", v8_eo16_pf, 16, 0},
    {"v9 dpbf16 hi/lo", v9_dpbf16, 8, 0},   {"v10 eo8 strided", v10_eo8_str, 8, 0}, {"v11 eo16 strided", v11_eo16_str, 8, 0},
    {"v12 eo4 strided", v12_eo4_str, 8, 0},  {"v13 eo4 str+pf2k", v13_eo4_str_pf2k, 8, 0},
    {"v14 eo8 str+pf2k", v14_eo8_str_pf2k, 8, 0}, {"v15 eo4 str+pf4k", v15_eo4_str_pf4k, 8, 0}, {"v16 eo6 strided", v16_eo6_str, 8, 0},
    {"v17 engine dyn2", v0_engine, 16, 2}, {"v18 engine dyn4", v0_engine, 16, 4}, {"v19 engine dyn8", v0_engine, 16, 8},
    {"v20 engine fused", v0_engine, 16, -1},
};
#define N_VARIANTS ((int)(sizeof k_variants / sizeof k_variants[0]))

/* ---- harness ------------------------------------------------------------------- */

typedef struct {
    const uint16_t *w;
    int N, K;
    const float *x, *xe;
    const uint16_t *xh;
    float *y;
} mat;

typedef struct {
    gemv_fn fn;
    int rows, chunks;
    const mat *m;
    _Atomic int next;
    int nmat; /* chunks < 0: matrices m[0..nmat-1] in one dispatch, each split as usual */
} job;

static void task(void *ctx, int ith, int nth);

static void task_fused(void *ctx, int ith, int nth) {
    job *j = ctx;
    for (int i = 0; i < j->nmat; i++) {
        job one = {j->fn, j->rows, 0, &j->m[i], 0, 1};
        task(&one, ith, nth);
    }
}

static void task(void *ctx, int ith, int nth) {
    job *j = ctx;
    if (j->chunks > 0) { /* pieces handed out through a counter */
        const int units = j->m->N / j->rows, P = nth * j->chunks;
        for (int p; (p = atomic_fetch_add(&j->next, 1)) < P;) {
            int u0 = (int)((long)units * p / P), u1 = (int)((long)units * (p + 1) / P);
            if (u0 < u1) j->fn(j->m->y, j->m->x, j->m->xe, j->m->xh, j->m->w, j->m->K, u0 * j->rows, u1 * j->rows);
        }
        return;
    }
    int units = j->m->N / j->rows, per = units / nth, extra = units % nth;
    int u0 = ith * per + (ith < extra ? ith : extra), u1 = u0 + per + (ith < extra);
    if (u0 < u1) j->fn(j->m->y, j->m->x, j->m->xe, j->m->xh, j->m->w, j->m->K, u0 * j->rows, u1 * j->rows);
}

static void prep_x(const float *x, float *xe, uint16_t *xh, int K) {
    for (int k = 0; k < K; k += 32)
        for (int i = 0; i < 16; i++) {
            xe[k + i] = x[k + 2 * i];
            xe[k + 16 + i] = x[k + 2 * i + 1];
        }
    for (int k = 0; k < K; k++) {
        uint16_t h = clv_f32_to_bf16(x[k]);
        xh[k] = h;
        xh[K + k] = clv_f32_to_bf16(x[k] - clv_bf16_to_f32(h));
    }
}

int main(int argc, char **argv) {
    int layers = 8, reps = 5, maxth = 2;
    const char *file = NULL, *model = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-l")) layers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-r")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-t")) maxth = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-f")) file = argv[i + 1];
        else if (!strcmp(argv[i], "-m")) model = argv[i + 1];
    }
    /* one Llama layer of the 1.1B model: q k v o gate up down */
    const int shapes[7][2] = {{2048, 2048}, {256, 2048}, {256, 2048}, {2048, 2048}, {5632, 2048}, {5632, 2048}, {2048, 5632}};
    int nm = 7 * layers;
    mat *ms = calloc((size_t)nm, sizeof *ms);
    size_t bytes = 0;
    float *x = clv_alloc(sizeof(float) * 5632), *xe = clv_alloc(sizeof(float) * 5632), *y = clv_alloc(sizeof(float) * 5632);
    uint16_t *xh = clv_alloc(2 * 2 * 5632);
    float *x2 = clv_alloc(sizeof(float) * 5632), *xe2 = clv_alloc(sizeof(float) * 5632);
    uint16_t *xh2 = clv_alloc(2 * 2 * 5632);
    uint64_t r = 1;
    for (int k = 0; k < 5632; k++) {
        x[k] = (float)((int)((r = r * 6364136223846793005ull + 1) >> 40) % 2001 - 1000) / 1000.0f;
        x2[k] = x[k] * 0.5f;
    }
    prep_x(x, xe, xh, 2048);
    prep_x(x2, xe2, xh2, 5632);
    const uint16_t *fmap = NULL;
    size_t fsize = 0, fpos = (getenv("FBASE") ? (size_t)atol(getenv("FBASE")) : (1 << 20)) + (getenv("MISALIGN") ? (size_t)atoi(getenv("MISALIGN")) : 0);
    if (file) {
        int fd = open(file, O_RDONLY);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) != 0) return fprintf(stderr, "cannot open %s\n", file), 1;
        fsize = (size_t)sb.st_size;
        fmap = mmap(NULL, fsize, PROT_READ, MAP_PRIVATE, fd, 0);
        if (fmap == MAP_FAILED) return fprintf(stderr, "cannot map %s\n", file), 1;
        if (getenv("HUGE") && madvise((void *)fmap, fsize, MADV_HUGEPAGE)) perror("madvise");
    }
    clv_st_set set = {0};
    if (model) {
        clv_status st = {0};
        if (clv_st_open_dir(&set, model, &st)) return fprintf(stderr, "%s\n", st.msg), 1;
    }
    for (int i = 0; i < nm; i++) {
        if (model) { /* the checkpoint's own tensors, where the engine finds them */
            static const char *names[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
            char name[128];
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", i / 7, names[i % 7]);
            const clv_st_tensor *t = clv_st_find(&set, name);
            if (!t) return fprintf(stderr, "no tensor %s\n", name), 1;
            ms[i].N = (int)t->shape[0];
            ms[i].K = (int)t->shape[1];
            ms[i].w = clv_st_data(&set, t);
            ms[i].x = ms[i].K == 2048 ? x : x2;
            ms[i].xe = ms[i].K == 2048 ? xe : xe2;
            ms[i].xh = ms[i].K == 2048 ? xh : xh2;
            ms[i].y = y;
            bytes += (size_t)ms[i].N * ms[i].K * 2;
            continue;
        }
        ms[i].N = shapes[i % 7][0];
        ms[i].K = shapes[i % 7][1];
        size_t n = (size_t)ms[i].N * ms[i].K;
        uint16_t *w;
        if (fmap) {
            if (fpos + n * 2 > fsize) return fprintf(stderr, "%s is too small for %d layers\n", file, layers), 1;
            w = (uint16_t *)((const char *)fmap + fpos);
            fpos += n * 2;
            if (getenv("SCATTER")) { /* place layer i's matrices in the engine's file order: down gate up k o q v */
                static const int slot[7] = {5, 3, 6, 4, 1, 2, 0}; /* position of q k v o gate up down */
                static size_t layer_base;
                if (i % 7 == 0) layer_base = fpos - n * 2;
                size_t off = layer_base;
                for (int s2 = 0; s2 < slot[i % 7]; s2++) {
                    static const int order[7] = {6, 4, 5, 1, 3, 0, 2}; /* file order as matrix kinds */
                    off += (size_t)shapes[order[s2]][0] * shapes[order[s2]][1] * 2;
                }
                w = (uint16_t *)((const char *)fmap + off);
            }
            for (size_t e = 0; e < n; e += 2048) (void)*(volatile const uint16_t *)(w + e); /* fault it in */
        } else {
            w = clv_alloc(n * 2);
            if (!w) return fprintf(stderr, "out of memory\n"), 1;
            for (size_t e = 0; e < n; e++) w[e] = clv_f32_to_bf16((float)((int)((r = r * 6364136223846793005ull + 1) >> 40) % 2001 - 1000) / 30000.0f);
        }
        ms[i].w = w;
        ms[i].x = ms[i].K == 2048 ? x : x2;
        ms[i].xe = ms[i].K == 2048 ? xe : xe2;
        ms[i].xh = ms[i].K == 2048 ? xh : xh2;
        ms[i].y = y;
        bytes += n * 2;
    }
    printf("gemv_lab: %d matrices, %.0f MB of bf16 weights, best of %d\n", nm, bytes / 1e6, reps);
    /* check every variant on the first two matrices (q and k) against double */
    for (int v = 0; v < N_VARIANTS; v++) {
        double worst = 0;
        for (int i = 0; i < 2; i++) {
            const mat *m = &ms[i];
            k_variants[v].fn(m->y, m->x, m->xe, m->xh, m->w, m->K, 0, m->N);
            for (int n = 0; n < m->N; n++) {
                double s = 0, sa = 0;
                for (int k = 0; k < m->K; k++) {
                    double p = (double)m->x[k] * clv_bf16_to_f32(m->w[(size_t)n * m->K + k]);
                    s += p;
                    sa += fabs(p);
                }
                double e = fabs(m->y[n] - s) / sa;
                if (e > worst) worst = e;
            }
        }
        if (fmap || model) continue; /* arbitrary bytes: nothing to check */
        printf("  %-18s max |err| / sum|x w| = %.2e%s\n", k_variants[v].name, worst, worst > 2e-5 ? "  <-- WRONG" : "");
    }
    /* Variants are timed interleaved, round after round, and each keeps its
     * best: on a shared machine every variant then gets the same chances at
     * a quiet moment. */
    const char *only = getenv("VARIANTS"); /* e.g. VARIANTS=0,4,5 */
    bool on[N_VARIANTS];
    for (int v = 0; v < N_VARIANTS; v++) {
        on[v] = !only;
        char key[8];
        snprintf(key, sizeof key, "%d", v);
        for (const char *p = only; p && *p;) {
            size_t len = strcspn(p, ",");
            if (len == strlen(key) && !strncmp(p, key, len)) on[v] = true;
            p += len + (p[len] == ',');
        }
    }
    double best[N_VARIANTS][8];
    for (int v = 0; v < N_VARIANTS; v++)
        for (int t = 0; t < 8; t++) best[v][t] = 1e30;
    if (maxth > 8) maxth = 8;
    for (int t = 1; t <= maxth; t++) {
        clv_pool *p = clv_pool_new(t, NULL);
        for (int rep = 0; rep < reps; rep++)
            for (int v = 0; v < N_VARIANTS; v++) {
                if (!on[v]) continue;
                double t0 = clv_now();
                for (int i = 0; i < nm;) {
                    /* fused (chunks < 0): q k v in one dispatch, gate up in one, as they share their input */
                    const int n = k_variants[v].chunks >= 0 ? 1 : i % 7 == 0 ? 3 : i % 7 == 4 ? 2 : 1;
                    job j = {k_variants[v].fn, k_variants[v].rows, k_variants[v].chunks, &ms[i], 0, n};
                    clv_pool_run(p, n > 1 ? task_fused : task, &j);
                    i += n;
                }
                double dt = clv_now() - t0;
                if (dt < best[v][t - 1]) best[v][t - 1] = dt;
            }
        clv_pool_free(p);
    }
    printf("%-18s", "variant");
    for (int t = 1; t <= maxth; t++) printf("   %dT GB/s", t);
    printf("\n");
    for (int v = 0; v < N_VARIANTS; v++) {
        if (!on[v]) continue;
        printf("%-18s", k_variants[v].name);
        for (int t = 1; t <= maxth; t++) printf("   %8.2f", bytes / best[v][t - 1] / 1e9);
        printf("\n");
    }
    return 0;
}
