/* The CUDA backend against the CPU backend, op by op, on random inputs at
 * sizes that leave tails everywhere (cols not a multiple of 8, T across the
 * GEMV / cuBLAS switch, head_dim 64/80/128/256/512, GQA 4:1 and 1:1, sliding
 * windows, pos0 > 0, decode with key splits), for f32, bf16 and f16 weights;
 * plus memory round trips, weight staging through slots 0/1, and the sticky
 * error path. Without a CUDA device (or a build without nvcc) it says
 * "skipped: ..." and passes.
 *
 * Tolerance: every output must satisfy |gpu - cpu| <= atol + rtol * scale,
 * atol = rtol = 1e-4, where scale is |cpu| for the elementwise ops, rmsnorm,
 * rope and attention, and sum_k |x_k w_k| + |bias| for matmul (the size f32
 * rounding grows with; a cancelling dot product has a small |result| but
 * not a small error). Embedding lookups must be exact. What is printed as
 * "max |err|" is max |gpu - cpu| / (1 + scale), to compare with 1e-4.
 *
 * CLV_CUDA_TEST_SMALL=1 skips the largest attention cases (for the CPU
 * emulator in tests/gpu/emu, which runs this test without a GPU). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda/cuda.h"
#include "check.h"
#include "util/util.h"

#define TOL 1e-4

static uint64_t g_rng = 0x2545f4914f6cdd1dull;
static double urand(void) { /* [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / (double)(1ull << 52) - 1.0;
}
static void fill(float *p, size_t n, double amp) {
    for (size_t i = 0; i < n; i++) p[i] = (float)(urand() * amp);
}

static clv_backend *g_cpu, *g_gpu;

/* ---- device helpers ------------------------------------------------------------- */

static void *up(const void *h, size_t bytes) {
    void *d = g_gpu->ops->alloc(g_gpu, bytes);
    if (d) g_gpu->ops->to_device(g_gpu, d, h, bytes);
    return d;
}
static void down(void *h, const void *d, size_t bytes) { g_gpu->ops->to_host(g_gpu, h, d, bytes); }
static void dfree(void *d) { g_gpu->ops->free(g_gpu, d); }

/* The backend's sticky error, reported once per test. */
static bool gpu_ok(const char *what) {
    clv_status st = {0};
    int rc = g_gpu->ops->check(g_gpu, &st);
    CHECK(rc == 0, "%s: %s", what, st.msg);
    return rc == 0;
}

/* ---- comparison ------------------------------------------------------------------- */

typedef struct {
    const char *name;
    double worst;
} op_stat;

enum { S_MATMUL, S_RMSNORM, S_ROPE, S_ATTN, S_SILU, S_ADD, S_EMBED, S_STAGE, S_COUNT };
static op_stat g_stat[S_COUNT] = {{"matmul", 0},   {"rmsnorm", 0}, {"rope", 0},  {"attention", 0},
                                  {"silu_mul", 0}, {"add", 0},     {"embed", 0}, {"staged matmul", 0}};

/* max_i |got - ref| / (1 + scale_i), scale NULL meaning |ref|; NaN counts as infinite. */
static double compare(const float *got, const float *ref, const double *scale, size_t n, size_t *at) {
    double worst = 0;
    *at = 0;
    for (size_t i = 0; i < n; i++) {
        double s = scale ? scale[i] : fabs((double)ref[i]);
        double e = fabs((double)got[i] - (double)ref[i]) / (1.0 + s);
        if (!(e <= worst)) {
            worst = isnan(e) ? INFINITY : e;
            *at = i;
        }
    }
    return worst;
}

static void report(int op, const char *what, const float *got, const float *ref, const double *scale, size_t n,
                   double tol) {
    size_t at;
    double e = compare(got, ref, scale, n, &at);
    if (e > g_stat[op].worst) g_stat[op].worst = e;
    CHECK(e <= tol, "%s: max err %.3g at [%zu] (gpu %.9g, cpu %.9g; tol %.3g)", what, e, at, (double)got[at],
          (double)ref[at], tol);
}

/* ---- memory ------------------------------------------------------------------------ */

static void test_memory(void) {
    const size_t sizes[] = {1, 3, 4096 + 5, (size_t)1 << 20};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        const size_t n = sizes[si];
        unsigned char *h = malloc(n + 1), *back = malloc(n + 1);
        for (size_t i = 0; i < n + 1; i++) h[i] = (unsigned char)(urand() * 256), back[i] = 0xab;
        unsigned char *d = g_gpu->ops->alloc(g_gpu, n + 1);
        CHECK(d != NULL, "alloc %zu", n + 1);
        if (!d) continue;
        down(back, d, n + 1); /* alloc zeroes */
        size_t nz = 0;
        for (size_t i = 0; i < n + 1; i++) nz += back[i] != 0;
        CHECK(nz == 0, "alloc(%zu): %zu bytes not zeroed", n + 1, nz);
        g_gpu->ops->to_device(g_gpu, d, h, n);
        memset(back, 0, n + 1);
        down(back, d, n);
        CHECK(memcmp(back, h, n) == 0, "to_device/to_host round trip of %zu bytes", n);
        /* device copy to an odd offset */
        unsigned char *d2 = g_gpu->ops->alloc(g_gpu, n + 1);
        g_gpu->ops->copy(g_gpu, d2 + 1, d, n);
        memset(back, 0, n + 1);
        down(back, d2, n + 1);
        CHECK(back[0] == 0 && memcmp(back + 1, h, n) == 0, "copy of %zu bytes to offset 1", n);
        dfree(d2);
        dfree(d);
        free(h);
        free(back);
    }
    /* pinned host memory */
    CHECK(g_gpu->ops->alloc_host && g_gpu->ops->free_host, "alloc_host/free_host are set");
    float *pin = g_gpu->ops->alloc_host(g_gpu, 1000 * sizeof(float));
    CHECK(pin != NULL, "alloc_host");
    if (pin) {
        for (int i = 0; i < 1000; i++) pin[i] = (float)i;
        float *d = up(pin, 1000 * sizeof(float)), back[1000];
        down(back, d, sizeof back);
        CHECK(memcmp(back, pin, sizeof back) == 0, "round trip through pinned memory");
        dfree(d);
        g_gpu->ops->free_host(g_gpu, pin);
    }
    gpu_ok("memory");
}

/* ---- matmul ------------------------------------------------------------------------ */

static size_t dt_size(clv_dtype dt) { return dt == CLV_DT_F32 ? 4 : 2; }

/* n weights in dtype dt at p, values also returned widened in wd */
static void fill_weights(void *p, double *wd, size_t n, clv_dtype dt) {
    for (size_t i = 0; i < n; i++) {
        float v = (float)(urand() * 0.5);
        if (dt == CLV_DT_F32) ((float *)p)[i] = v, wd[i] = v;
        else if (dt == CLV_DT_BF16) ((uint16_t *)p)[i] = clv_f32_to_bf16(v), wd[i] = clv_bf16_to_f32(((uint16_t *)p)[i]);
        else ((uint16_t *)p)[i] = clv_f32_to_f16(v), wd[i] = clv_f16_to_f32(((uint16_t *)p)[i]);
    }
}

/* activations with a spread of magnitudes, as after a norm and a few layers */
static void fill_acts(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(urand() * pow(2.0, (int)(urand() * 6)));
}

/* scale[t][n] = sum_k |x w| + |bias| */
static double *mm_scale(const float *x, const double *wd, const float *bias, int T, int K, int N) {
    double *s = malloc(sizeof(double) * (size_t)T * N);
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            double a = bias ? fabs(bias[n]) : 0;
            for (int k = 0; k < K; k++) a += fabs((double)x[(size_t)t * K + k] * wd[(size_t)n * K + k]);
            s[(size_t)t * N + n] = a;
        }
    return s;
}

/* mis: bytes the weights start past the allocation (a multiple of the element size) */
static void test_matmul_one(clv_dtype dt, int T, int K, int N, bool with_bias, int mis) {
    const size_t es = dt_size(dt), wbytes = es * (size_t)N * K;
    void *w = malloc(wbytes);
    double *wd = malloc(sizeof(double) * (size_t)N * K);
    float *x = malloc(sizeof(float) * (size_t)T * K), *bias = malloc(sizeof(float) * (size_t)N);
    float *y_cpu = malloc(sizeof(float) * (size_t)T * N), *y_gpu = malloc(sizeof(float) * (size_t)T * N);
    fill_weights(w, wd, (size_t)N * K, dt);
    fill_acts(x, (size_t)T * K);
    fill(bias, (size_t)N, 1.0);
    const float *b = with_bias ? bias : NULL;

    clv_mat mc = {w, dt, N, K, NULL};
    g_cpu->ops->matmul(g_cpu, y_cpu, x, &mc, b, T);

    char *dw = g_gpu->ops->alloc(g_gpu, wbytes + 16);
    float *dx = up(x, sizeof(float) * (size_t)T * K), *db = up(bias, sizeof(float) * (size_t)N);
    float *dy = g_gpu->ops->alloc(g_gpu, sizeof(float) * (size_t)T * N);
    for (size_t i = 0; i < (size_t)T * N; i++) y_gpu[i] = NAN;
    if (dw && dx && db && dy) {
        g_gpu->ops->to_device(g_gpu, dw + mis, w, wbytes);
        /* NaN in y first: every output must be written */
        g_gpu->ops->to_device(g_gpu, dy, y_gpu, sizeof(float) * (size_t)T * N);
        clv_mat mg = {dw + mis, dt, N, K, NULL};
        g_gpu->ops->matmul(g_gpu, dy, dx, &mg, with_bias ? db : NULL, T);
        down(y_gpu, dy, sizeof(float) * (size_t)T * N);
    }
    char what[128];
    snprintf(what, sizeof what, "matmul %s T=%d K=%d N=%d bias=%d +%d", clv_dtype_name(dt), T, K, N, with_bias, mis);
    if (gpu_ok(what)) {
        double *sc = mm_scale(x, wd, b, T, K, N);
        report(S_MATMUL, what, y_gpu, y_cpu, sc, (size_t)T * N, TOL);
        free(sc);
    }
    dfree(dw), dfree(dx), dfree(db), dfree(dy);
    free(w), free(wd), free(x), free(bias), free(y_cpu), free(y_gpu);
}

static void test_matmul(void) {
    const clv_dtype dts[] = {CLV_DT_F32, CLV_DT_BF16, CLV_DT_F16};
    const int Ts[] = {1, 2, 3, 8, 9, 17, 64};
    /* (4096, 64) and (8192, 20): few rows, so the GEMV splits each row over 4 or 8 warps */
    const int KN[][2] = {{37, 45}, {100, 129}, {1000, 300}, {256, 1024}, {4096, 64}, {8192, 20}};
    for (int di = 0; di < 3; di++)
        for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++)
            for (size_t ki = 0; ki < sizeof KN / sizeof KN[0]; ki++) {
                const int T = Ts[ti], K = KN[ki][0], N = KN[ki][1];
                const int mis = (int)((ti + ki) % 3) * (int)dt_size(dts[di]); /* 0, 1 or 2 elements off */
                test_matmul_one(dts[di], T, K, N, (ti + ki) % 2 == 0, mis);
            }
}

/* ---- rmsnorm, rope, elementwise ------------------------------------------------------ */

static void test_rmsnorm(void) {
    const int rows_l[] = {1, 3, 17}, dims[] = {37, 64, 1000, 4096};
    for (int ri = 0; ri < 3; ri++)
        for (int di = 0; di < 4; di++)
            for (int inplace = 0; inplace < 2; inplace++) {
                const int rows = rows_l[ri], dim = dims[di];
                const size_t n = (size_t)rows * dim;
                const float eps = di % 2 ? 1e-6f : 1e-5f;
                float *x = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * dim);
                float *yc = malloc(sizeof(float) * n), *yg = malloc(sizeof(float) * n);
                fill_acts(x, n);
                fill(w, (size_t)dim, 2.0);
                g_cpu->ops->rmsnorm(g_cpu, yc, x, w, rows, dim, eps);
                float *dx = up(x, sizeof(float) * n), *dw = up(w, sizeof(float) * dim);
                float *dy = inplace ? dx : g_gpu->ops->alloc(g_gpu, sizeof(float) * n);
                if (dx && dw && dy) {
                    g_gpu->ops->rmsnorm(g_gpu, dy, dx, dw, rows, dim, eps);
                    down(yg, dy, sizeof(float) * n);
                }
                char what[96];
                snprintf(what, sizeof what, "rmsnorm rows=%d dim=%d%s", rows, dim, inplace ? " in place" : "");
                if (gpu_ok(what)) report(S_RMSNORM, what, yg, yc, NULL, n, TOL);
                if (!inplace) dfree(dy);
                dfree(dx), dfree(dw);
                free(x), free(w), free(yc), free(yg);
            }
}

static void test_rope(void) {
    const int Ts[] = {1, 3, 17}, heads[] = {1, 5}, hds[] = {64, 80, 128}, pos0s[] = {0, 7, 100};
    const int max_pos = 128, max_half = 64;
    float *cs = malloc(sizeof(float) * max_pos * max_half), *sn = malloc(sizeof(float) * max_pos * max_half);
    for (int ti = 0; ti < 3; ti++)
        for (int hi = 0; hi < 2; hi++)
            for (int di = 0; di < 3; di++)
                for (int pi = 0; pi < 3; pi++) {
                    const int T = Ts[ti], nh = heads[hi], hd = hds[di], pos0 = pos0s[pi], half = hd / 2;
                    const size_t n = (size_t)T * nh * hd, tab = (size_t)(pos0 + T) * half;
                    for (size_t i = 0; i < tab; i++) { /* a real table: cos/sin of some angle */
                        double a = urand() * 3.14159;
                        cs[i] = (float)cos(a), sn[i] = (float)sin(a);
                    }
                    float *x = malloc(sizeof(float) * n), *yg = malloc(sizeof(float) * n);
                    fill_acts(x, n);
                    float *dx = up(x, sizeof(float) * n), *dc = up(cs, sizeof(float) * tab), *ds = up(sn, sizeof(float) * tab);
                    g_cpu->ops->rope(g_cpu, x, T, nh, hd, pos0, cs, sn);
                    if (dx && dc && ds) {
                        g_gpu->ops->rope(g_gpu, dx, T, nh, hd, pos0, dc, ds);
                        down(yg, dx, sizeof(float) * n);
                    }
                    char what[96];
                    snprintf(what, sizeof what, "rope T=%d heads=%d hd=%d pos0=%d", T, nh, hd, pos0);
                    if (gpu_ok(what)) report(S_ROPE, what, yg, x, NULL, n, TOL);
                    dfree(dx), dfree(dc), dfree(ds);
                    free(x), free(yg);
                }
    free(cs), free(sn);
}

static void test_elementwise(void) {
    const size_t ns[] = {1, 37, 100003};
    for (int i = 0; i < 3; i++) {
        const size_t n = ns[i];
        float *g = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n), *yg = malloc(sizeof(float) * n);
        fill(g, n, 8.0);
        fill(u, n, 2.0);
        float *dg = up(g, sizeof(float) * n), *du = up(u, sizeof(float) * n);
        char what[64];
        /* silu_mul */
        if (dg && du) {
            g_gpu->ops->silu_mul(g_gpu, dg, du, n);
            down(yg, dg, sizeof(float) * n);
        }
        float *gc = malloc(sizeof(float) * n);
        memcpy(gc, g, sizeof(float) * n);
        g_cpu->ops->silu_mul(g_cpu, gc, u, n);
        snprintf(what, sizeof what, "silu_mul n=%zu", n);
        if (gpu_ok(what)) report(S_SILU, what, yg, gc, NULL, n, TOL);
        /* add */
        if (dg && du) {
            g_gpu->ops->to_device(g_gpu, dg, g, sizeof(float) * n);
            g_gpu->ops->add(g_gpu, dg, du, n);
            down(yg, dg, sizeof(float) * n);
        }
        memcpy(gc, g, sizeof(float) * n);
        g_cpu->ops->add(g_cpu, gc, u, n);
        snprintf(what, sizeof what, "add n=%zu", n);
        if (gpu_ok(what)) report(S_ADD, what, yg, gc, NULL, n, TOL);
        dfree(dg), dfree(du);
        free(g), free(u), free(yg), free(gc);
    }
}

/* ---- attention ------------------------------------------------------------------------ */

typedef struct {
    int T, pos0, n_heads, n_kv_heads, hd, window;
} attn_case;

/* Each backend stores the same keys and values in its own cache layout
 * (kv_store; positions before pos0 first, then the queries' own, as the
 * session does) and attends over them; the caches hold 3 positions more.
 * dt: the caches' elements (f32, or bf16: both backends round to nearest
 * even, so they attend over the same values). */
static void test_attention_one(const attn_case *c, clv_dtype dt) {
    /* under the CPU emulator (tests/gpu/emu/run.sh) the largest cases would take minutes */
    if (getenv("CLV_CUDA_TEST_SMALL") && (long)c->T * c->n_heads * (c->pos0 + c->T) > 250000) return;
    const int P = c->pos0 + c->T, ctx = P + 3, kvd = c->n_kv_heads * c->hd;
    const size_t nq = (size_t)c->T * c->n_heads * c->hd, nkv = (size_t)P * kvd;
    const size_t cb = clv_kv_cache_bytes(ctx, c->n_kv_heads, c->hd, dt);
    float *q = malloc(sizeof(float) * nq), *k = malloc(sizeof(float) * nkv), *v = malloc(sizeof(float) * nkv);
    float *oc = malloc(sizeof(float) * nq), *og = malloc(sizeof(float) * nq);
    fill(q, nq, 2.0);
    fill(k, nkv, 2.0);
    fill(v, nkv, 1.0);
    clv_attn_args a = {.T = c->pos0, .pos0 = 0, .n_heads = c->n_heads, .n_kv_heads = c->n_kv_heads,
                       .head_dim = c->hd, .window = c->window, .scale = 1.0f / sqrtf((float)c->hd), .ctx = ctx,
                       .kv_dt = dt};
    clv_attn_args b = a;
    b.T = c->T, b.pos0 = c->pos0;
    /* every position not stored is NaN in both backends' caches */
    void *nan_fill = malloc(cb), *hk = g_cpu->ops->alloc(g_cpu, cb), *hv = g_cpu->ops->alloc(g_cpu, cb);
    if (dt == CLV_DT_BF16)
        for (size_t i = 0; i < cb / 2; i++) ((uint16_t *)nan_fill)[i] = 0x7fc0;
    else
        for (size_t i = 0; i < cb / sizeof(float); i++) ((float *)nan_fill)[i] = NAN;
    memcpy(hk, nan_fill, cb), memcpy(hv, nan_fill, cb);
    if (c->pos0) g_cpu->ops->kv_store(g_cpu, hk, hv, k, v, &a);
    g_cpu->ops->kv_store(g_cpu, hk, hv, k + (size_t)c->pos0 * kvd, v + (size_t)c->pos0 * kvd, &b);
    g_cpu->ops->attention(g_cpu, oc, q, hk, hv, &b);
    g_cpu->ops->free(g_cpu, hk), g_cpu->ops->free(g_cpu, hv);
    float *dq = up(q, sizeof(float) * nq), *dk = up(k, sizeof(float) * nkv), *dv = up(v, sizeof(float) * nkv);
    void *dkc = g_gpu->ops->alloc(g_gpu, cb), *dvc = g_gpu->ops->alloc(g_gpu, cb);
    float *dout = g_gpu->ops->alloc(g_gpu, sizeof(float) * nq);
    for (size_t i = 0; i < nq; i++) og[i] = NAN;
    if (dq && dk && dv && dkc && dvc && dout) {
        g_gpu->ops->to_device(g_gpu, dkc, nan_fill, cb);
        g_gpu->ops->to_device(g_gpu, dvc, nan_fill, cb);
        if (c->pos0) g_gpu->ops->kv_store(g_gpu, dkc, dvc, dk, dv, &a);
        g_gpu->ops->kv_store(g_gpu, dkc, dvc, dk + (size_t)c->pos0 * kvd, dv + (size_t)c->pos0 * kvd, &b);
        g_gpu->ops->attention(g_gpu, dout, dq, dkc, dvc, &b);
        down(og, dout, sizeof(float) * nq);
    }
    char what[128];
    snprintf(what, sizeof what, "attention, %s cache, T=%d pos0=%d heads=%d/%d hd=%d window=%d",
             dt == CLV_DT_BF16 ? "bf16" : "f32", c->T, c->pos0, c->n_heads, c->n_kv_heads, c->hd, c->window);
    if (gpu_ok(what)) report(S_ATTN, what, og, oc, NULL, nq, TOL);
    dfree(dq), dfree(dk), dfree(dv), dfree(dkc), dfree(dvc), dfree(dout);
    free(q), free(k), free(v), free(oc), free(og), free(nan_fill);
}

static void test_attention(void) {
    static const attn_case cases[] = {
        {1, 0, 4, 4, 64, 0},      {1, 37, 8, 2, 64, 0},      {3, 10, 8, 2, 80, 0},     {17, 5, 4, 4, 128, 0},
        {64, 0, 8, 2, 128, 0},    {64, 100, 8, 2, 64, 16},   {17, 300, 4, 1, 80, 50},  {3, 1, 4, 4, 64, 2},
        {1, 5000, 8, 2, 128, 0},  {1, 5000, 8, 2, 128, 1000}, {3, 2000, 32, 8, 128, 0}, {1, 700, 2, 1, 256, 0},
        {2, 300, 4, 2, 512, 0},   {1, 0, 1, 1, 512, 0},      {64, 900, 32, 8, 80, 0},  {1, 100000, 4, 1, 64, 0},
    };
    /* under the emulator, a bf16 cache in every fourth case (emu_kernels.cpp runs the kernels on all of them) */
    const bool small = getenv("CLV_CUDA_TEST_SMALL") != NULL;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        test_attention_one(&cases[i], CLV_DT_F32);
        if (!small || i % 4 == 1) test_attention_one(&cases[i], CLV_DT_BF16);
    }
}

/* ---- embed ----------------------------------------------------------------------------- */

static void test_embed(void) {
    const clv_dtype dts[] = {CLV_DT_F32, CLV_DT_BF16, CLV_DT_F16};
    const int cols_l[] = {37, 64}, Ts[] = {1, 5, 300};
    const int rows = 50;
    for (int di = 0; di < 3; di++)
        for (int ci = 0; ci < 2; ci++)
            for (int ti = 0; ti < 3; ti++) {
                const int D = cols_l[ci], T = Ts[ti];
                const size_t tb = dt_size(dts[di]) * (size_t)rows * D;
                void *tab = malloc(tb);
                double *wd = malloc(sizeof(double) * (size_t)rows * D);
                fill_weights(tab, wd, (size_t)rows * D, dts[di]);
                int32_t *ids = malloc(sizeof(int32_t) * T);
                for (int t = 0; t < T; t++) ids[t] = (int32_t)((urand() + 1.0) * 0.5 * rows) % rows;
                float *yc = malloc(sizeof(float) * (size_t)T * D), *yg = malloc(sizeof(float) * (size_t)T * D);
                clv_mat mc = {tab, dts[di], rows, D, NULL};
                g_cpu->ops->embed(g_cpu, yc, &mc, ids, T);
                void *dt = up(tab, tb);
                float *dy = g_gpu->ops->alloc(g_gpu, sizeof(float) * (size_t)T * D);
                if (dt && dy) {
                    clv_mat mg = {dt, dts[di], rows, D, NULL};
                    g_gpu->ops->embed(g_gpu, dy, &mg, ids, T);
                    memset(ids, 0xff, sizeof(int32_t) * T); /* ids may be reused as soon as embed returns */
                    down(yg, dy, sizeof(float) * (size_t)T * D);
                }
                char what[96];
                snprintf(what, sizeof what, "embed %s cols=%d T=%d", clv_dtype_name(dts[di]), D, T);
                if (gpu_ok(what)) report(S_EMBED, what, yg, yc, NULL, (size_t)T * D, 0.0);
                dfree(dt), dfree(dy);
                free(tab), free(wd), free(ids), free(yc), free(yg);
            }
}

/* ---- staging --------------------------------------------------------------------------- */

/* Four "layers" of bf16 weights streamed from pinned memory through two
 * device slots: layer l uses slot l % 2, so layers 2 and 3 overwrite the
 * weights layers 0 and 1 read: wrong waits or releases show as wrong y. */
static void test_staging(void) {
    enum { L = 4 };
    const int K = 1000, N = 300;
    const size_t wb = 2 * (size_t)N * K;
    CHECK(g_gpu->ops->stage && g_gpu->ops->stage_wait && g_gpu->ops->stage_release, "staging ops are set");
    if (!g_gpu->ops->stage) return;
    uint16_t *hw[L];
    double *wd[L];
    void *slot[2] = {g_gpu->ops->alloc(g_gpu, wb), g_gpu->ops->alloc(g_gpu, wb)};
    const int Ts[L] = {1, 3, 17, 1};
    float *x = malloc(sizeof(float) * 17 * K);
    fill_acts(x, (size_t)17 * K);
    float *dx = up(x, sizeof(float) * 17 * K), *dy[L];
    for (int l = 0; l < L; l++) {
        hw[l] = g_gpu->ops->alloc_host(g_gpu, wb);
        wd[l] = malloc(sizeof(double) * (size_t)N * K);
        if (hw[l]) fill_weights(hw[l], wd[l], (size_t)N * K, CLV_DT_BF16);
        dy[l] = g_gpu->ops->alloc(g_gpu, sizeof(float) * 17 * N);
    }
    if (!gpu_ok("staging setup")) goto out;
    for (int l = 0; l < L; l++) {
        const int s = l % 2;
        /* two copies into the slot: stage_wait covers both */
        g_gpu->ops->stage(g_gpu, s, slot[s], hw[l], wb / 2);
        g_gpu->ops->stage(g_gpu, s, (char *)slot[s] + wb / 2, (char *)hw[l] + wb / 2, wb - wb / 2);
        g_gpu->ops->stage_wait(g_gpu, s);
        clv_mat m = {slot[s], CLV_DT_BF16, N, K, NULL};
        g_gpu->ops->matmul(g_gpu, dy[l], dx, &m, NULL, Ts[l]);
        g_gpu->ops->matmul(g_gpu, dy[l], dx, &m, NULL, Ts[l]); /* twice: more time for a premature copy to land */
        g_gpu->ops->stage_release(g_gpu, s);
    }
    g_gpu->ops->sync(g_gpu);
    for (int l = 0; l < L; l++) {
        float *yg = malloc(sizeof(float) * (size_t)Ts[l] * N), *yc = malloc(sizeof(float) * (size_t)Ts[l] * N);
        down(yg, dy[l], sizeof(float) * (size_t)Ts[l] * N);
        clv_mat mc = {hw[l], CLV_DT_BF16, N, K, NULL};
        g_cpu->ops->matmul(g_cpu, yc, x, &mc, NULL, Ts[l]);
        char what[64];
        snprintf(what, sizeof what, "staged matmul layer %d (slot %d, T=%d)", l, l % 2, Ts[l]);
        if (gpu_ok(what)) {
            double *sc = mm_scale(x, wd[l], NULL, Ts[l], K, N);
            report(S_STAGE, what, yg, yc, sc, (size_t)Ts[l] * N, TOL);
            free(sc);
        }
        free(yg), free(yc);
    }
out:
    for (int l = 0; l < L; l++) {
        g_gpu->ops->free_host(g_gpu, hw[l]);
        free(wd[l]);
        dfree(dy[l]);
    }
    dfree(slot[0]), dfree(slot[1]), dfree(dx);
    free(x);
}

/* ---- errors ----------------------------------------------------------------------------- */

/* A failing call makes the backend report CLV_EDEVICE naming the call and the
 * rank, and later ops do nothing. On its own backend: the error is sticky. */
static void test_errors(void) {
    clv_status st = {0};
    clv_backend *b = clv_cuda_backend_new("cuda:0", 0, &st);
    CHECK(b != NULL, "second backend: %s", st.msg);
    if (!b) return;
    void *p = b->ops->alloc(b, (size_t)1 << 52); /* 4 PiB */
    CHECK(p == NULL, "an impossible alloc returns NULL");
    int rc = b->ops->check(b, &st);
    CHECK(rc == CLV_EDEVICE, "check after a failed alloc: %d", rc);
    CHECK(strstr(st.msg, "cudaMalloc") && strstr(st.msg, "rank") && strstr(st.msg, "cuda.cu:"),
          "the message names the call, rank and place: '%s'", st.msg);
    printf("error message: %s\n", st.msg);
    float h = 42.0f;
    void *q = b->ops->alloc(b, 4); /* skipped: sticky */
    CHECK(q == NULL, "ops after an error do nothing");
    b->ops->to_host(b, &h, q, sizeof h);
    CHECK(h == 42.0f, "to_host after an error leaves the buffer alone");
    b->ops->destroy(b);
    /* the failure stayed in that backend */
    gpu_ok("the first backend after another one failed");
}

int main(void) {
    char why[256] = "";
    int n = clv_cuda_device_count(why, sizeof why);
    if (n == 0) {
        printf("skipped: no CUDA device (%s)\n", why);
        return 0;
    }
    clv_status st = {0};
    uint64_t fr = 0, tot = 0;
    CHECK(clv_cuda_mem_info(0, &fr, &tot, &st) == 0 && tot > 0 && fr <= tot, "mem_info: %s", st.msg);
    printf("cuda: %d device(s); device 0 has %.1f of %.1f GiB free\n", n, fr / 1073741824.0, tot / 1073741824.0);
    g_cpu = clv_cpu_backend_new("cpu", 1, NULL);
    g_gpu = clv_cuda_backend_new("cuda:0", 0, &st);
    CHECK(g_cpu != NULL, "cpu backend");
    CHECK(g_gpu != NULL, "cuda backend: %s", st.msg);
    if (!g_cpu || !g_gpu) return check_report("test_cuda_ops");
    CHECK(!g_gpu->host_memory, "the CUDA backend's memory is not host memory");

    test_memory();
    test_matmul();
    test_rmsnorm();
    test_rope();
    test_elementwise();
    test_attention();
    test_embed();
    test_staging();
    test_errors();

    for (int i = 0; i < S_COUNT; i++)
        printf("max |err| %-14s %.3g (|gpu - cpu| / (1 + scale), tol %g)\n", g_stat[i].name, g_stat[i].worst,
               i == S_EMBED ? 0.0 : TOL);
    g_gpu->ops->destroy(g_gpu);
    g_cpu->ops->destroy(g_cpu);
    return check_report("test_cuda_ops");
}
