/* The CUDA kernels (src/backend/cuda/kernels.cu, built for the CPU through
 * cuda_emu.h) against the CPU backend: every launcher, at sizes with tails,
 * misaligned weight rows, row splits (S = 1..8), key splits (nsplit 1..64),
 * GQA, windows and pos0 > 0. Run by tests/gpu/emu/run.sh; needs no GPU.
 * Tolerance: |emu - cpu| <= 1e-4 * (1 + scale), scale = |cpu| or, for
 * matmul, sum_k |x_k w_k| + |bias|. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define _Noreturn [[noreturn]]
extern "C" {
#include "backend/backend.h"
#include "util/util.h"
}
#undef _Noreturn

#include "cuda_kernels.h"

static int g_checks, g_fail;
static double g_worst;
static clv_backend *g_cpu;

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static double urand(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / (double)(1ull << 52) - 1.0;
}
static void fill(float *p, size_t n, double amp) {
    for (size_t i = 0; i < n; i++) p[i] = (float)(urand() * amp);
}
static void fill_acts(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(urand() * pow(2.0, (int)(urand() * 6)));
}

static void compare(const char *what, const float *got, const float *ref, const double *scale, size_t n, double tol) {
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double s = scale ? scale[i] : fabs((double)ref[i]);
        double e = fabs((double)got[i] - (double)ref[i]) / (1.0 + s);
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e, at = i;
    }
    g_checks++;
    if (worst > g_worst) g_worst = worst;
    if (!(worst <= tol)) {
        g_fail++;
        fprintf(stderr, "FAIL %s: max err %.3g at [%zu] (emu %.9g, cpu %.9g)\n", what, worst, at, (double)got[at],
                (double)ref[at]);
    }
}

static void expect_ok(cudaError_t e, const char *what) {
    g_checks++;
    if (e != cudaSuccess) g_fail++, fprintf(stderr, "FAIL %s: launcher returned %d\n", what, (int)e);
}

/* ---- matmul (GEMV), the split for cuBLAS, scale/bias -------------------------------------- */

static size_t es_of(clv_dtype dt) { return dt == CLV_DT_F32 ? 4 : 2; }
static int wt_of(clv_dtype dt) {
    return dt == CLV_DT_F32 ? CLV_CUDA_W_F32 : dt == CLV_DT_BF16 ? CLV_CUDA_W_BF16 : CLV_CUDA_W_F16;
}

static void fill_weights(void *p, double *wd, size_t n, clv_dtype dt) {
    for (size_t i = 0; i < n; i++) {
        float v = (float)(urand() * 0.5);
        if (dt == CLV_DT_F32) ((float *)p)[i] = v, wd[i] = v;
        else if (dt == CLV_DT_BF16) ((uint16_t *)p)[i] = clv_f32_to_bf16(v), wd[i] = clv_bf16_to_f32(((uint16_t *)p)[i]);
        else ((uint16_t *)p)[i] = clv_f32_to_f16(v), wd[i] = clv_f16_to_f32(((uint16_t *)p)[i]);
    }
}

static void test_gemv(clv_dtype dt, int T, int K, int N, bool with_bias, int mis) {
    const size_t wb = es_of(dt) * (size_t)N * K;
    char *wbuf = (char *)aligned_alloc(64, (wb + 64 + 63) / 64 * 64);
    void *w = wbuf + mis;
    double *wd = (double *)malloc(sizeof(double) * (size_t)N * K);
    float *x = (float *)malloc(sizeof(float) * (size_t)T * K), *bias = (float *)malloc(sizeof(float) * N);
    float *yc = (float *)malloc(sizeof(float) * (size_t)T * N), *ye = (float *)malloc(sizeof(float) * (size_t)T * N);
    fill_weights(w, wd, (size_t)N * K, dt);
    fill_acts(x, (size_t)T * K);
    fill(bias, (size_t)N, 1.0);
    const float *b = with_bias ? bias : NULL;
    clv_mat m = {w, dt, N, K};
    g_cpu->ops->matmul(g_cpu, yc, x, &m, b, T);
    for (size_t i = 0; i < (size_t)T * N; i++) ye[i] = NAN;
    char what[128];
    snprintf(what, sizeof what, "gemv %s T=%d K=%d N=%d bias=%d +%d", clv_dtype_name(dt), T, K, N, with_bias, mis);
    expect_ok(clv_cuda_gemv(0, wt_of(dt), ye, x, w, b, N, K, T, 132), what);
    double *sc = (double *)malloc(sizeof(double) * (size_t)T * N);
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            double a = b ? fabs(b[n]) : 0;
            for (int k = 0; k < K; k++) a += fabs(x[(size_t)t * K + k] * wd[(size_t)n * K + k]);
            sc[(size_t)t * N + n] = a;
        }
    compare(what, ye, yc, sc, (size_t)T * N, 1e-4);
    free(sc), free(wbuf), free(wd), free(x), free(bias), free(yc), free(ye);
}

/* hi + lo must give back x * scale to ~2^-16 (bf16) or ~2^-22 (f16) relative, and inv_scale
 * must be a power of two with max|x| * scale in [2^14, 2^15) for f16. */
static void test_split(clv_dtype dt, int T, int K) {
    float *x = (float *)malloc(sizeof(float) * (size_t)T * K);
    fill_acts(x, (size_t)T * K);
    if (T > 1) /* a row of tiny values and one of huge ones */
        for (int k = 0; k < K; k++) x[k] *= 1e-6f, x[(size_t)(T - 1) * K + k] *= 3000.0f;
    uint16_t *hi = (uint16_t *)malloc(2 * (size_t)T * K), *lo = (uint16_t *)malloc(2 * (size_t)T * K);
    float *inv = (float *)malloc(sizeof(float) * T);
    for (int t = 0; t < T; t++) inv[t] = 1.0f;
    char what[96];
    snprintf(what, sizeof what, "split_x %s T=%d K=%d", clv_dtype_name(dt), T, K);
    expect_ok(clv_cuda_split_x(0, wt_of(dt), hi, lo, inv, x, T, K), what);
    double worst = 0;
    for (int t = 0; t < T; t++) {
        double mx = 0;
        for (int k = 0; k < K; k++) mx = fmax(mx, fabs(x[(size_t)t * K + k]));
        if (dt == CLV_DT_F16) {
            double sm = mx / inv[t];
            g_checks++;
            if (!(sm >= 16384.0 && sm < 32768.0)) g_fail++, fprintf(stderr, "FAIL %s: row %d scaled max %g\n", what, t, sm);
        }
        for (int k = 0; k < K; k++) {
            size_t i = (size_t)t * K + k;
            double h = dt == CLV_DT_BF16 ? clv_bf16_to_f32(hi[i]) : clv_f16_to_f32(hi[i]);
            double l = dt == CLV_DT_BF16 ? clv_bf16_to_f32(lo[i]) : clv_f16_to_f32(lo[i]);
            double back = (h + l) * inv[t];
            worst = fmax(worst, fabs(back - x[i]) / (mx + 1e-30));
        }
    }
    const double tol = dt == CLV_DT_BF16 ? 1.0 / 65536 : 1.0 / 4194304;
    g_checks++;
    if (!(worst <= tol)) g_fail++, fprintf(stderr, "FAIL %s: hi + lo off by %.3g of max|x| (tol %.3g)\n", what, worst, tol);
    printf("%s: hi + lo within %.3g of max|x|\n", what, worst);
    free(x), free(hi), free(lo), free(inv);
}

static void test_scale_bias(void) {
    const int T = 5, N = 37;
    float y[T * N], ref[T * N], inv[T], bias[N];
    fill(y, T * N, 10.0);
    fill(bias, N, 1.0);
    for (int t = 0; t < T; t++) inv[t] = ldexpf(1.0f, t - 2);
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) ref[t * N + n] = y[t * N + n] * inv[t] + bias[n];
    expect_ok(clv_cuda_scale_bias(0, y, inv, bias, N, T), "scale_bias");
    compare("scale_bias", y, ref, NULL, T * N, 0);
}

/* ---- the rest ---------------------------------------------------------------------------- */

static void test_rmsnorm(int rows, int dim, bool inplace) {
    const size_t n = (size_t)rows * dim;
    float *x = (float *)malloc(4 * n), *w = (float *)malloc(4 * dim), *yc = (float *)malloc(4 * n),
          *ye = (float *)malloc(4 * n);
    fill_acts(x, n);
    fill(w, dim, 2.0);
    g_cpu->ops->rmsnorm(g_cpu, yc, x, w, rows, dim, 1e-5f);
    if (inplace) memcpy(ye, x, 4 * n);
    expect_ok(clv_cuda_rmsnorm(0, ye, inplace ? ye : x, w, rows, dim, 1e-5f), "rmsnorm");
    char what[64];
    snprintf(what, sizeof what, "rmsnorm %dx%d%s", rows, dim, inplace ? " in place" : "");
    compare(what, ye, yc, NULL, n, 1e-6);
    free(x), free(w), free(yc), free(ye);
}

static void test_rope(int T, int nh, int hd, int pos0) {
    const int half = hd / 2;
    const size_t n = (size_t)T * nh * hd, tab = (size_t)(pos0 + T) * half;
    float *cs = (float *)malloc(4 * tab), *sn = (float *)malloc(4 * tab), *x = (float *)malloc(4 * n),
          *xe = (float *)malloc(4 * n);
    for (size_t i = 0; i < tab; i++) {
        double a = urand() * 3.14159;
        cs[i] = (float)cos(a), sn[i] = (float)sin(a);
    }
    fill_acts(x, n);
    memcpy(xe, x, 4 * n);
    g_cpu->ops->rope(g_cpu, x, T, nh, hd, pos0, cs, sn);
    expect_ok(clv_cuda_rope(0, xe, T, nh, hd, pos0, cs, sn), "rope");
    char what[64];
    snprintf(what, sizeof what, "rope T=%d heads=%d hd=%d pos0=%d", T, nh, hd, pos0);
    compare(what, xe, x, NULL, n, 0); /* bit-exact: same operations, no FMA */
    free(cs), free(sn), free(x), free(xe);
}

/* Both backends' kv_store fill their own cache layouts (in two calls, as the
 * session makes them), then attend; the caches hold 3 positions more, and
 * every position not stored is NaN. dt: the caches' elements (f32 or bf16). */
static void test_attention(clv_dtype dt, int T, int pos0, int nh, int nkv, int hd, int window, int nsplit) {
    const int P = pos0 + T, ctx = P + 3, kvd = nkv * hd;
    const size_t nq = (size_t)T * nh * hd, nkvf = (size_t)P * kvd, cb = clv_kv_cache_bytes(ctx, nkv, hd, dt);
    float *q = (float *)malloc(4 * nq), *k = (float *)malloc(4 * nkvf), *v = (float *)malloc(4 * nkvf);
    float *oc = (float *)malloc(4 * nq), *oe = (float *)malloc(4 * nq);
    void *hk = g_cpu->ops->alloc(g_cpu, cb), *hv = g_cpu->ops->alloc(g_cpu, cb), *ek = malloc(cb), *ev = malloc(cb);
    for (void *c : {hk, hv, ek, ev}) /* positions never stored */
        if (dt == CLV_DT_BF16)
            for (size_t i = 0; i < cb / 2; i++) ((uint16_t *)c)[i] = 0x7fc0;
        else
            for (size_t i = 0; i < cb / 4; i++) ((float *)c)[i] = NAN;
    fill(q, nq, 2.0), fill(k, nkvf, 2.0), fill(v, nkvf, 1.0);
    clv_attn_args a = {pos0, 0, nh, nkv, hd, window, 1.0f / sqrtf((float)hd), ctx, dt}, b = a;
    b.T = T, b.pos0 = pos0;
    char what[128];
    snprintf(what, sizeof what, "attention, %s cache, T=%d pos0=%d heads=%d/%d hd=%d window=%d nsplit=%d",
             dt == CLV_DT_BF16 ? "bf16" : "f32", T, pos0, nh, nkv, hd, window, nsplit);
    if (pos0) {
        g_cpu->ops->kv_store(g_cpu, hk, hv, k, v, &a);
        expect_ok(clv_cuda_kv_store(0, ek, ev, k, v, &a), what);
    }
    g_cpu->ops->kv_store(g_cpu, hk, hv, k + (size_t)pos0 * kvd, v + (size_t)pos0 * kvd, &b);
    expect_ok(clv_cuda_kv_store(0, ek, ev, k + (size_t)pos0 * kvd, v + (size_t)pos0 * kvd, &b), what);
    g_cpu->ops->attention(g_cpu, oc, q, hk, hv, &b);
    for (size_t i = 0; i < nq; i++) oe[i] = NAN;
    float *part = (float *)malloc(4 * (clv_cuda_attn_part_floats(T, nh, hd, nsplit) + 1));
    expect_ok(clv_cuda_attention(0, oe, q, ek, ev, &b, nsplit, part), what);
    compare(what, oe, oc, NULL, nq, 1e-5);
    g_cpu->ops->free(g_cpu, hk), g_cpu->ops->free(g_cpu, hv);
    free(q), free(k), free(v), free(oc), free(oe), free(part), free(ek), free(ev);
}

static void test_elementwise(size_t n) {
    float *g = (float *)malloc(4 * n), *u = (float *)malloc(4 * n), *gc = (float *)malloc(4 * n),
          *ge = (float *)malloc(4 * n);
    fill(g, n, 8.0), fill(u, n, 2.0);
    memcpy(gc, g, 4 * n), memcpy(ge, g, 4 * n);
    g_cpu->ops->silu_mul(g_cpu, gc, u, n);
    expect_ok(clv_cuda_silu_mul(0, ge, u, n), "silu_mul");
    compare("silu_mul", ge, gc, NULL, n, 1e-6);
    memcpy(gc, g, 4 * n), memcpy(ge, g, 4 * n);
    g_cpu->ops->add(g_cpu, gc, u, n);
    expect_ok(clv_cuda_add(0, ge, u, n), "add");
    compare("add", ge, gc, NULL, n, 0);
    free(g), free(u), free(gc), free(ge);
}

static void test_embed(clv_dtype dt, int D, int T) {
    const int rows = 50;
    void *tab = malloc(es_of(dt) * rows * D);
    double *wd = (double *)malloc(sizeof(double) * rows * D);
    fill_weights(tab, wd, (size_t)rows * D, dt);
    int32_t *ids = (int32_t *)malloc(4 * T);
    for (int t = 0; t < T; t++) ids[t] = (int32_t)((urand() + 1.0) * 0.5 * rows) % rows;
    float *yc = (float *)malloc(4 * (size_t)T * D), *ye = (float *)malloc(4 * (size_t)T * D);
    clv_mat m = {tab, dt, rows, D};
    g_cpu->ops->embed(g_cpu, yc, &m, ids, T);
    expect_ok(clv_cuda_embed(0, wt_of(dt), ye, tab, D, ids, T), "embed");
    char what[64];
    snprintf(what, sizeof what, "embed %s cols=%d T=%d", clv_dtype_name(dt), D, T);
    compare(what, ye, yc, NULL, (size_t)T * D, 0);
    free(tab), free(wd), free(ids), free(yc), free(ye);
}

int main(void) {
    g_cpu = clv_cpu_backend_new("cpu", 1, NULL);
    const clv_dtype dts[] = {CLV_DT_F32, CLV_DT_BF16, CLV_DT_F16};
    const int KN[][2] = {{37, 45}, {100, 33}, {1000, 17}, {4096, 8}, {8192, 5}};
    for (int di = 0; di < 3; di++)
        for (int T = 1; T <= CLV_CUDA_GEMV_MAX_T; T++)
            for (int ki = 0; ki < 5; ki++)
                for (int mis = 0; mis < 3; mis += (T % 2 ? 1 : 3)) /* weights 0, 1 or 2 elements off */
                    test_gemv(dts[di], T, KN[ki][0], KN[ki][1], (T + ki) % 2, mis * (int)es_of(dts[di]));
    printf("gemv: worst %.3g\n", g_worst);
    for (int di = 1; di < 3; di++) test_split(dts[di], 3, 1000), test_split(dts[di], 1, 37);
    test_scale_bias();
    g_worst = 0;
    for (int rows = 1; rows <= 3; rows += 2)
        for (int dim : {37, 64, 1000, 4096}) test_rmsnorm(rows, dim, false), test_rmsnorm(rows, dim, true);
    for (int hd : {64, 80, 128})
        for (int pos0 : {0, 7, 100}) test_rope(3, 5, hd, pos0), test_rope(1, 1, hd, pos0);
    for (size_t n : {(size_t)1, (size_t)37, (size_t)5000}) test_elementwise(n);
    for (int di = 0; di < 3; di++)
        for (int T : {1, 5, 300}) test_embed(dts[di], 37, T);
    printf("rmsnorm/rope/elementwise/embed: worst %.3g\n", g_worst);
    g_worst = 0;
    struct {
        int T, pos0, nh, nkv, hd, window, nsplit;
    } ac[] = {
        {1, 0, 4, 4, 64, 0, 1},     {1, 37, 8, 2, 64, 0, 1},    {3, 10, 8, 2, 80, 0, 1},    {5, 5, 2, 2, 128, 0, 1},
        {17, 0, 2, 1, 64, 0, 1},    {20, 70, 4, 2, 64, 16, 1},  {9, 130, 2, 1, 80, 50, 1},  {3, 1, 4, 4, 64, 2, 1},
        {1, 600, 4, 1, 128, 0, 2},  {1, 600, 4, 1, 128, 0, 7},  {1, 600, 4, 1, 64, 100, 3}, {3, 300, 8, 2, 80, 0, 5},
        {1, 200, 2, 1, 256, 0, 4},  {2, 100, 2, 1, 512, 0, 3},  {1, 0, 1, 1, 512, 0, 1},    {1, 0, 1, 1, 512, 0, 64},
        {4, 140, 2, 2, 72, 0, 64},  {1, 1000, 2, 1, 64, 0, 1},  {2, 64, 2, 1, 200, 0, 2},   {1, 129, 1, 1, 16, 64, 2},
    };
    for (auto &c : ac)
        for (clv_dtype dt : {CLV_DT_F32, CLV_DT_BF16}) test_attention(dt, c.T, c.pos0, c.nh, c.nkv, c.hd, c.window, c.nsplit);
    printf("attention: worst %.3g\n", g_worst);
    g_cpu->ops->destroy(g_cpu);
    printf("emu_kernels: %d checks, %d failures (%ld kernel launches emulated)\n", g_checks, g_fail, g_emu_launches);
    return g_fail ? 1 : 0;
}
