/* CPU kernels against float64 references, on every dispatch level this CPU
 * runs (scalar, avx2, avx512, amx) and 1 and 3 threads, at sizes that leave
 * tails everywhere: T, K and N not multiples of 16, 32 or the tile sizes.
 *
 * Tolerances, per output, relative to sum_k |x_k w_k| (the scale f32
 * rounding errors grow with):
 *   f32 paths:     1e-6 + K * 1.2e-7  (f32 accumulation, worst case ~K eps)
 *   amx (bf16, f16, int8): that + 2e-5  (activations split into bf16 hi + lo:
 *                                       up to 2^-16 = 1.5e-5 relative per
 *                                       product; f16 weights split exactly
 *                                       into two bf16, lo x lo left out: up
 *                                       to 2^-16 more, so a sum of a few
 *                                       same-signed worst cases could pass
 *                                       2e-5; these data reach 1.9e-5)
 * int8 weights (one scale per row) are checked against q * scale in float64
 * with the same tolerances: the kernels are exact up to f32 rounding.
 * amx-bf16 (the backend's bf16_prefill, --prefill-precision bf16): from
 * AMX_MIN_T tokens on, bf16, f16 and int8 matmuls round the activations to bf16
 * (round to nearest even) and make one pass; they are checked against the
 * float64 sum over the rounded activations at the f32 tolerance (the
 * products of two bf16 values are exact in f32), so a kernel that did not
 * round, or rounded differently, fails as surely as a wrong one.
 * Attention under bf16_prefill (a prompt of AMX_MIN_T tokens or more on the
 * amx level, and clv_amx_attn_tile itself): q, k and v rounded to bf16 as
 * the reference's inputs; P's rounding is bounded row by row (see
 * ref_attention_row_bf16). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "backend/cpu/pool.h"
#include "check.h"
#include "util/util.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static double urand(void) { /* [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / (double)(1ull << 52) - 1.0;
}

static const char *k_levels[] = {"scalar", "avx2", "avx512", "amx"};
#define N_LEVELS 4
#define AMX_MIN_T 16 /* cpu.c: fewer tokens take the f32 kernels */
static bool g_one;   /* the backend's bf16_prefill is set */

/* ---- matmul ----------------------------------------------------------------------- */

static double worst_mm;

/* mis: bytes the weights start past a 64-byte boundary (checkpoint tensors
 * sit at any 8-byte offset; the decode kernels peel a head to align) */
static void test_matmul_one(clv_backend *b, const char *lvl, clv_dtype dt, int T, int K, int N, bool bias, int mis) {
    const size_t es = clv_dtype_size(dt);
    char *wbuf = clv_alloc(es * (size_t)N * K + 64);
    void *w = wbuf + mis;
    double *wd = malloc(sizeof(double) * (size_t)N * K);
    float *x = clv_alloc(sizeof(float) * (size_t)T * K), *y = clv_alloc(sizeof(float) * (size_t)T * N);
    float *bv = clv_alloc(sizeof(float) * (size_t)N), *scale = clv_alloc(sizeof(float) * (size_t)N);
    for (int n = 0; n < N; n++) scale[n] = n % 7 == 3 ? 0.0f : (float)(0.004 * (1.5 + urand())); /* some zero rows */
    for (size_t i = 0; i < (size_t)N * K; i++) {
        float v = (float)(urand() * 0.5);
        if (dt == CLV_DT_F32) ((float *)w)[i] = v, wd[i] = v;
        else if (dt == CLV_DT_I8) {
            int q = (int)(urand() * 128); /* -127 .. 127 */
            ((int8_t *)w)[i] = (int8_t)(scale[i / K] ? q : 0);
            wd[i] = ((int8_t *)w)[i] * (double)scale[i / K];
        }
        else if (dt == CLV_DT_BF16) ((uint16_t *)w)[i] = clv_f32_to_bf16(v), wd[i] = clv_bf16_to_f32(((uint16_t *)w)[i]);
        else ((uint16_t *)w)[i] = clv_f32_to_f16(v), wd[i] = clv_f16_to_f32(((uint16_t *)w)[i]);
    }
    /* activations with a spread of magnitudes, as after a norm and a few layers */
    for (size_t i = 0; i < (size_t)T * K; i++) x[i] = (float)(urand() * pow(2.0, (int)(urand() * 6)));
    const bool amx = strncmp(lvl, "amx", 3) == 0 && dt != CLV_DT_F32;
    const bool rounded = amx && g_one && T >= AMX_MIN_T; /* the reference takes bf16(x) */
    for (int n = 0; n < N; n++) bv[n] = (float)urand();
    for (size_t i = 0; i < (size_t)T * N; i++) y[i] = NAN; /* every output must be written */
    clv_mat m = {w, dt, N, K, dt == CLV_DT_I8 ? scale : NULL};
    b->ops->matmul(b, y, x, &m, bias ? bv : NULL, T);
    const double tol = 1e-6 + K * 1.2e-7 + (amx && !rounded ? 2e-5 : 0);
    double worst = 0;
    int bad_t = -1, bad_n = -1;
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            double s = bias ? bv[n] : 0, sa = bias ? fabs(bv[n]) : 0;
            for (int k = 0; k < K; k++) {
                const float xv = x[(size_t)t * K + k];
                double p = (rounded ? (double)clv_bf16_to_f32(clv_f32_to_bf16(xv)) : (double)xv) * wd[(size_t)n * K + k];
                s += p;
                sa += fabs(p);
            }
            double e = fabs(y[(size_t)t * N + n] - s) / (sa + 1e-30);
            if (!(e <= worst)) {
                worst = isnan(e) ? INFINITY : e;
                bad_t = t, bad_n = n;
            }
        }
    if (worst > worst_mm) worst_mm = worst;
    CHECK(worst <= tol, "%s matmul %s T=%d K=%d N=%d bias=%d +%d: max rel err %.3g at [%d][%d] (tol %.3g)", lvl,
          clv_dtype_name(dt), T, K, N, bias, mis, worst, bad_t, bad_n, tol);
    clv_free(wbuf);
    free(wd);
    clv_free(x);
    clv_free(y);
    clv_free(bv);
    clv_free(scale);
}

static void test_matmul(clv_backend *b, const char *lvl) {
    static const int Ts[] = {1, 2, 5, 8, 13, 16, 17, 33, 47};
    static const int Ks[] = {1, 7, 31, 33, 100, 257};
    static const int Ns[] = {1, 16, 17, 33, 70};
    static const clv_dtype dts[] = {CLV_DT_F32, CLV_DT_BF16, CLV_DT_F16, CLV_DT_I8};
    worst_mm = 0;
    for (int d = 0; d < 4; d++)
        for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++)
            for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++)
                for (size_t ni = 0; ni < sizeof Ns / sizeof Ns[0]; ni++)
                    test_matmul_one(b, lvl, dts[d], Ts[ti], Ks[ki], Ns[ni], (ti + ki + ni) % 3 == 0, 0);
    /* decode on misaligned rows that all share one alignment (K * size % 64 == 0) */
    static const int mis[] = {2, 8, 56, 62};
    for (int d = 0; d < 4; d++)
        for (size_t m = 0; m < sizeof mis / sizeof mis[0]; m++)
            if (mis[m] % clv_dtype_size(dts[d]) == 0) {
                test_matmul_one(b, lvl, dts[d], 1, 64, 37, false, mis[m]);
                test_matmul_one(b, lvl, dts[d], 1, 96, 19, true, mis[m]);
                test_matmul_one(b, lvl, dts[d], 1, 100, 9, false, mis[m]); /* rows differ: no head */
                test_matmul_one(b, lvl, dts[d], 3, 64, 20, false, mis[m]);
            }
    /* model-like shapes: decode rows in flight, AMX panels and k blocks, gemm k blocks */
    test_matmul_one(b, lvl, CLV_DT_BF16, 1, 2048, 300, false, 56);
    test_matmul_one(b, lvl, CLV_DT_BF16, 100, 1100, 200, true, 8);
    test_matmul_one(b, lvl, CLV_DT_F16, 40, 520, 96, false, 0);
    test_matmul_one(b, lvl, CLV_DT_F32, 1, 1000, 77, false, 0);
    test_matmul_one(b, lvl, CLV_DT_I8, 1, 2048, 300, false, 40);
    test_matmul_one(b, lvl, CLV_DT_I8, 1, 576, 35, true, 7); /* K * 1 % 64 != 0: rows of every alignment */
    test_matmul_one(b, lvl, CLV_DT_I8, 100, 1100, 200, true, 8);
    printf("  %-6s matmul: worst rel err %.2e\n", lvl, worst_mm);
}

/* bf16_prefill must change the arithmetic, not just pass: x = 1 + 3 * 2^-10
 * rounds to 1 in bf16 (spacing 2^-7) and splits exactly into hi = 1 and
 * lo = 3 * 2^-10, so against 64 weights of 1 the split gives 64.1875 and one
 * pass gives 64, both exactly. */
static void test_amx_rounding(clv_backend *b) {
    enum { T = 32, K = 64, N = 32 };
    uint16_t *w = clv_alloc(2 * N * K);
    float *x = clv_alloc(sizeof(float) * T * K), *y = clv_alloc(sizeof(float) * T * N);
    for (int i = 0; i < N * K; i++) w[i] = clv_f32_to_bf16(1.0f);
    for (int i = 0; i < T * K; i++) x[i] = 1.0f + 3.0f / 1024.0f;
    clv_mat m = {w, CLV_DT_BF16, N, K, NULL};
    for (int one = 0; one < 2; one++) {
        b->bf16_prefill = one;
        b->ops->matmul(b, y, x, &m, NULL, T);
        const float want = one ? 64.0f : 64.1875f;
        int bad = 0;
        for (int i = 0; i < T * N; i++) bad += y[i] != want;
        CHECK(bad == 0, "amx bf16_prefill=%d: %d of %d outputs differ from %g (y[0] = %.9g)", one, bad, T * N, want,
              y[0]);
    }
    b->bf16_prefill = false;
    clv_free(w), clv_free(x), clv_free(y);
}

/* ---- attention ---------------------------------------------------------------------- */

/* float64 attention of one query row q (times scale) over keys and values
 * lo .. hi, rows `stride` floats apart; returns the largest |o - reference|
 * (infinite for NaN), and the row's max score and sum of exp(score - max)
 * through mx and l. sc: scratch of hi + 1 doubles. */
static double ref_attention_row(const float *o, const float *q, double scale, const float *k, const float *v,
                                size_t stride, int lo, int hi, int hd, double *sc, double *mx, double *l) {
    *mx = -INFINITY, *l = 0;
    for (int p = lo; p <= hi; p++) {
        double s = 0;
        for (int d = 0; d < hd; d++) s += (double)q[d] * k[(size_t)p * stride + d];
        sc[p] = s * scale;
        if (sc[p] > *mx) *mx = sc[p];
    }
    for (int p = lo; p <= hi; p++) *l += sc[p] = exp(sc[p] - *mx);
    double worst = 0;
    for (int d = 0; d < hd; d++) {
        double r = 0;
        for (int p = lo; p <= hi; p++) r += sc[p] / *l * v[(size_t)p * stride + d];
        const double e = fabs(o[d] - r);
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
    }
    return worst;
}

static double bf16r(double x) { return clv_bf16_to_f32(clv_f32_to_bf16((float)x)); }

/* The same for clv_amx_attn_tile, which rounds q (already times scale, in
 * f32) to bf16 and the probabilities P to bf16 as well, and divides by the
 * sum of the rounded P; k and v must be bf16 values (the kernel rounds an f32
 * cache). With p_i = exp(s_i - m) over the scores of the rounded q, the
 * kernel uses p_i (1 + e_i), |e_i| <= eps = 2^-8 (bf16) + 2 es (its f32
 * scores are within es of s_i) + 1e-6 (f32 exp), so its output differs from
 * sum p v / sum p by at most eps / (1 - eps) * sum p |v - ref| / sum p, and
 * f32 sums add ~1e-5 at most: returns the largest |o - ref| / that bound. */
static double ref_attention_row_bf16(const float *o, const float *q, const float *k, const float *v, size_t stride, int lo,
                                     int hi, int hd, double *sc, double *mx, double *l) {
    *mx = -INFINITY, *l = 0;
    double es = 0;
    for (int p = lo; p <= hi; p++) {
        double s = 0, sa = 0;
        for (int d = 0; d < hd; d++) s += bf16r(q[d]) * k[(size_t)p * stride + d], sa += fabs(bf16r(q[d]) * k[(size_t)p * stride + d]);
        sc[p] = s;
        es = fmax(es, (hd + 2) * 0x1p-24 * sa);
        if (sc[p] > *mx) *mx = sc[p];
    }
    for (int p = lo; p <= hi; p++) *l += sc[p] = exp(sc[p] - *mx);
    const double eps = 0x1p-8 + 2 * es + 1e-6;
    double worst = 0;
    for (int d = 0; d < hd; d++) {
        double r = 0, spread = 0;
        for (int p = lo; p <= hi; p++) r += sc[p] / *l * v[(size_t)p * stride + d];
        for (int p = lo; p <= hi; p++) spread += sc[p] / *l * fabs(v[(size_t)p * stride + d] - r);
        const double e = fabs(o[d] - r) / (eps / (1 - eps) * spread + 1e-5);
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
    }
    return worst;
}

/* NaN in a cache of element type dt (f32 or bf16), at element i */
static void kv_nan(void *c, size_t i, clv_dtype dt) {
    if (dt == CLV_DT_BF16) ((uint16_t *)c)[i] = 0x7fc0;
    else ((float *)c)[i] = NAN;
}
/* x as a cache of type dt holds it (bf16: rounded to nearest even) */
static float kv_round(float x, clv_dtype dt) { return dt == CLV_DT_BF16 ? clv_bf16_to_f32(clv_f32_to_bf16(x)) : x; }

/* The keys and values go into the backend's caches through kv_store, as the
 * session stores them (positions before pos0 first, then the T queries' own);
 * the caches hold a few positions more than P, and every position not
 * stored is NaN, so a kernel that lets one into a result fails. A bf16 cache
 * is checked against the float64 attention over the keys and values rounded
 * to bf16, at the same tolerance: kv_store must round to nearest even, and
 * the kernels must compute with exactly what it stored. */
static void test_attention_one(clv_backend *b, const char *lvl, clv_dtype dt, int T, int pos0, int nh, int nkv, int hd,
                               int window) {
    const int P = pos0 + T, kvd = nkv * hd, ctx = P + 5;
    float *q = clv_alloc(sizeof(float) * (size_t)T * nh * hd), *o = clv_alloc(sizeof(float) * (size_t)T * nh * hd);
    float *kc = clv_alloc(sizeof(float) * (size_t)P * kvd), *vc = clv_alloc(sizeof(float) * (size_t)P * kvd);
    for (size_t i = 0; i < (size_t)T * nh * hd; i++) q[i] = (float)(urand() * 2);
    for (size_t i = 0; i < (size_t)P * kvd; i++) kc[i] = (float)(urand() * 2), vc[i] = (float)urand();
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t cb = clv_kv_cache_bytes(ctx, nkv, hd, dt), cn = cb / clv_kv_elem_bytes(dt);
    void *kcache = b->ops->alloc(b, cb), *vcache = b->ops->alloc(b, cb);
    for (size_t i = 0; i < cn; i++) kv_nan(kcache, i, dt), kv_nan(vcache, i, dt);
    clv_attn_args a = {.T = pos0, .pos0 = 0, .n_heads = nh, .n_kv_heads = nkv, .head_dim = hd, .window = window,
                       .scale = scale, .ctx = ctx, .kv_dt = dt};
    if (pos0) b->ops->kv_store(b, kcache, vcache, kc, vc, &a);
    a.T = T, a.pos0 = pos0;
    b->ops->kv_store(b, kcache, vcache, kc + (size_t)pos0 * kvd, vc + (size_t)pos0 * kvd, &a);
    b->ops->attention(b, o, q, kcache, vcache, &a);
    b->ops->free(b, kcache);
    b->ops->free(b, vcache);
    /* bf16_prefill on the amx level: a prompt's attention on the tiles, all of q, k, v and P rounded */
    const bool rounded = g_one && T >= AMX_MIN_T;
    for (size_t i = 0; i < (size_t)P * kvd; i++) kc[i] = kv_round(kc[i], dt), vc[i] = kv_round(vc[i], dt);
    double worst = 0, unrounded = 0;
    double *sc = malloc(sizeof(double) * (size_t)P);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < nh; h++) {
            const int pos = pos0 + t, kvh = h / (nh / nkv), lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
            float *ot = o + ((size_t)t * nh + h) * hd, *qt = q + ((size_t)t * nh + h) * hd;
            double mx, l;
            double e = ref_attention_row(ot, qt, scale, kc + (size_t)kvh * hd, vc + (size_t)kvh * hd, (size_t)kvd, lo, pos,
                                         hd, sc, &mx, &l);
            if (rounded) {
                unrounded = e > unrounded ? e : unrounded;
                float qs[CLV_MAX_HEAD_DIM];
                for (int d = 0; d < hd; d++) qs[d] = qt[d] * scale; /* as cpu.c scales q */
                for (int p = lo; p <= pos; p++)
                    for (int d = 0; d < hd; d++) {
                        const size_t i = (size_t)p * kvd + (size_t)kvh * hd + d;
                        kc[i] = kv_round(kc[i], CLV_DT_BF16), vc[i] = kv_round(vc[i], CLV_DT_BF16);
                    }
                e = ref_attention_row_bf16(ot, qs, kc + (size_t)kvh * hd, vc + (size_t)kvh * hd, (size_t)kvd, lo, pos, hd, sc,
                                           &mx, &l);
            }
            if (!(e <= worst)) worst = e;
        }
    if (rounded) {
        CHECK(worst <= 1, "%s attention, %s cache, T=%d pos0=%d heads=%d/%d hd=%d window=%d: error %.3g x the bf16 bound",
              lvl, dt == CLV_DT_BF16 ? "bf16" : "f32", T, pos0, nh, nkv, hd, window, worst);
        CHECK(unrounded > 2e-6, "%s attention, T=%d hd=%d: within %.3g of the unrounded reference: the tiles were not used",
              lvl, T, hd, unrounded);
    } else
        CHECK(worst <= 2e-6, "%s attention, %s cache, T=%d pos0=%d heads=%d/%d hd=%d window=%d: max abs err %.3g", lvl,
              dt == CLV_DT_BF16 ? "bf16" : "f32", T, pos0, nh, nkv, hd, window, worst);
    free(sc);
    clv_free(q);
    clv_free(o);
    clv_free(kc);
    clv_free(vc);
}

/* One tile straight into a level's kernel, rows with their own ranges
 * (hi non-decreasing, lo not: a row may start below or above another), as
 * windows and causal masks make them. Every key and value outside the
 * union of the ranges is NaN, so a read past a row's range that reaches a
 * result (a value below the lowest lo, a key past a block's end) fails. */
static void test_attn_tile_ranges(const clv_cpu_kernels *k, const char *lvl, clv_dtype dt) {
    const size_t es = clv_kv_elem_bytes(dt);
    static const int cases[][3] = {/* R, hd, ctx */ {1, 16, 40},   {5, 24, 130},  {8, 64, 300},  {3, 100, 77},
                                   {9, 8, 1000},  {40, 128, 700}, {64, 80, 500}, {17, 256, 200}, {64, 32, 2000}, {6, 9, 90}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int R = cases[c][0], hd = cases[c][1], ctx = cases[c][2];
        const size_t rows = clv_kv_cache_rows(ctx);
        float *q = clv_alloc(sizeof(float) * (size_t)R * hd), *o = clv_alloc(sizeof(float) * (size_t)R * hd);
        void *kc = clv_alloc(es * rows * hd), *vc = clv_alloc(es * rows * hd);
        float *kd = malloc(sizeof(float) * (size_t)ctx * hd), *vd = malloc(sizeof(float) * (size_t)ctx * hd);
        float *work = clv_alloc(sizeof(float) * clv_attn_work_floats(R, hd)), m[64], l[64];
        int lo[64], hi[64], umin = ctx, umax = 0;
        for (int r = 0; r < R; r++) {
            hi[r] = (r ? hi[r - 1] : ctx / 3) + (int)((urand() + 1) * ctx / (3 * R));
            if (hi[r] >= ctx) hi[r] = ctx - 1;
            lo[r] = (int)((urand() + 1) / 2 * hi[r]);
            umin = lo[r] < umin ? lo[r] : umin, umax = hi[r] > umax ? hi[r] : umax;
        }
        for (int p = 0; p < ctx; p++)
            for (int d = 0; d < hd; d++) {
                const bool in = p >= umin && p <= umax;
                const float kx = kv_round((float)(urand() * 2), dt), vx = kv_round((float)urand(), dt);
                const size_t ki = clv_kcache_at(p, d, hd), vi = (size_t)p * hd + d;
                kd[vi] = kx, vd[vi] = vx;
                if (!in) kv_nan(kc, ki, dt), kv_nan(vc, vi, dt);
                else if (dt == CLV_DT_BF16) ((uint16_t *)kc)[ki] = clv_f32_to_bf16(kx), ((uint16_t *)vc)[vi] = clv_f32_to_bf16(vx);
                else ((float *)kc)[ki] = kx, ((float *)vc)[vi] = vx;
            }
        for (size_t i = (size_t)ctx; i < rows; i++)
            for (int d = 0; d < hd; d++) kv_nan(kc, clv_kcache_at((int)i, d, hd), dt), kv_nan(vc, i * hd + d, dt);
        /* scores of the size attention sees (|q . k| < 0.6 hd at hd <= 64, then ~ sqrt(hd)) */
        const double qs = 0.3 * (hd > 64 ? sqrt(64.0 / hd) : 1.0);
        for (int i = 0; i < R * hd; i++) q[i] = (float)(urand() * qs);
        clv_attn_tile t = {R, hd, q, lo, hi, kc, vc, dt, o, work, m, l};
        k->attn_tile(&t);
        double worst = 0;
        double *sc = malloc(sizeof(double) * (size_t)ctx);
        for (int r = 0; r < R; r++) {
            double mx, sum;
            const double e = ref_attention_row(o + (size_t)r * hd, q + (size_t)r * hd, 1.0, kd, vd, (size_t)hd, lo[r],
                                               hi[r], hd, sc, &mx, &sum);
            if (!(e <= worst)) worst = e;
            const double me = fabs(m[r] - mx), le = fabs(l[r] - sum) / sum;
            if (!(me <= 1e-5 && le <= 1e-5)) worst = INFINITY;
        }
        CHECK(worst <= 2e-6, "%s attn_tile, %s cache, R=%d hd=%d ctx=%d, own ranges per row, NaN outside them: max abs err %.3g",
              lvl, dt == CLV_DT_BF16 ? "bf16" : "f32", R, hd, ctx, worst);
        if (k->amx) { /* the same tile on the tiles, against q, k and v rounded to bf16 and P's bound */
            for (size_t i = 0; i < (size_t)ctx * hd; i++) kd[i] = kv_round(kd[i], CLV_DT_BF16), vd[i] = kv_round(vd[i], CLV_DT_BF16);
            clv_amx_attn_tile(&t);
            worst = 0;
            for (int r = 0; r < R; r++) {
                double mx, sum;
                const double e = ref_attention_row_bf16(o + (size_t)r * hd, q + (size_t)r * hd, kd, vd, (size_t)hd, lo[r],
                                                        hi[r], hd, sc, &mx, &sum);
                if (!(e <= worst)) worst = e;
                const double me = fabs(m[r] - mx), le = fabs(l[r] - sum) / sum;
                if (!(me <= 1e-4 && le <= 0x1p-8 + 1e-4)) worst = INFINITY;
            }
            CHECK(worst <= 1, "amx-bf16 attn_tile, %s cache, R=%d hd=%d ctx=%d, own ranges per row, NaN outside them: "
                  "error %.3g x the bf16 bound", dt == CLV_DT_BF16 ? "bf16" : "f32", R, hd, ctx, worst);
        }
        free(sc);
        clv_free(q), clv_free(o), clv_free(kc), clv_free(vc), clv_free(work), free(kd), free(vd);
    }
}

static void test_attention(clv_backend *b, const char *lvl) {
    /* T, pos0, heads, kv heads, head_dim, window */
    static const int cases[][6] = {
        {1, 0, 4, 4, 16, 0},    {1, 70, 8, 2, 64, 0},   {1, 130, 32, 4, 64, 0}, {5, 3, 4, 1, 24, 0},
        {17, 0, 6, 2, 40, 0},   {33, 10, 4, 2, 80, 0},  {70, 0, 8, 1, 64, 0},   {129, 0, 2, 2, 24, 5},
        {40, 100, 4, 2, 32, 37}, {1, 200, 4, 2, 16, 64}, {3, 0, 130, 1, 8, 0},  {65, 64, 3, 3, 100, 0},
        {48, 30, 16, 2, 128, 0}, {20, 0, 4, 1, 256, 0}, {100, 200, 8, 1, 64, 90},
        /* one token over enough keys to be cut into splits (cpu.c): 2..10 of them, a window,
         * more rows than a tile takes, a single kv head */
        {1, 700, 8, 2, 64, 0},  {1, 1500, 32, 4, 64, 0}, {1, 5000, 2, 2, 24, 0}, {1, 2000, 4, 1, 80, 300},
        {1, 300, 130, 1, 8, 0}, {1, 257, 6, 3, 40, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int bf = 0; bf < 2; bf++)
            test_attention_one(b, lvl, bf ? CLV_DT_BF16 : CLV_DT_F32, cases[i][0], cases[i][1], cases[i][2], cases[i][3],
                               cases[i][4], cases[i][5]);
}

/* ---- elementwise ---------------------------------------------------------------------- */

static void test_elementwise(clv_backend *b, const char *lvl) {
    for (int n = 1; n < 80000; n = n * 3 + 7) {
        float *g = clv_alloc(sizeof(float) * (size_t)n), *u = clv_alloc(sizeof(float) * (size_t)n);
        double *gd = malloc(sizeof(double) * (size_t)n);
        for (int i = 0; i < n; i++) gd[i] = g[i] = (float)(urand() * 30), u[i] = (float)urand();
        b->ops->silu_mul(b, g, u, (size_t)n);
        double worst = 0;
        for (int i = 0; i < n; i++) {
            double r = gd[i] / (1 + exp(-gd[i])) * u[i];
            double e = fabs(g[i] - r) / (fabs(r) + 1e-30);
            if (!(e <= worst) && fabs(r) > 1e-30) worst = e;
        }
        CHECK(worst <= 4e-7, "%s silu_mul n=%d: max rel err %.3g", lvl, n, worst);
        free(gd);
        clv_free(g);
        clv_free(u);
    }
    static const int dims[][2] = {{1, 1}, {3, 17}, {2, 64}, {40, 2048}, {9, 100}};
    for (size_t c = 0; c < sizeof dims / sizeof dims[0]; c++) {
        const int rows = dims[c][0], dim = dims[c][1];
        float *x = clv_alloc(sizeof(float) * (size_t)rows * dim), *y = clv_alloc(sizeof(float) * (size_t)rows * dim);
        float *w = clv_alloc(sizeof(float) * (size_t)dim);
        for (int i = 0; i < rows * dim; i++) x[i] = (float)(urand() * 3);
        for (int i = 0; i < dim; i++) w[i] = (float)urand();
        b->ops->rmsnorm(b, y, x, w, rows, dim, 1e-6f);
        double worst = 0;
        for (int r = 0; r < rows; r++) {
            double ss = 0;
            for (int i = 0; i < dim; i++) ss += (double)x[r * dim + i] * x[r * dim + i];
            double inv = 1 / sqrt(ss / dim + 1e-6);
            for (int i = 0; i < dim; i++) {
                double ref = x[r * dim + i] * inv * w[i], e = fabs(y[r * dim + i] - ref) / (fabs(ref) + 1e-30);
                if (!(e <= worst) && fabs(ref) > 1e-30) worst = e;
            }
        }
        CHECK(worst <= 4e-7, "%s rmsnorm %dx%d: max rel err %.3g", lvl, rows, dim, worst);
        clv_free(x);
        clv_free(y);
        clv_free(w);
    }
    /* embedding rows of an int8 table: q * the row's scale */
    {
        enum { V = 9, D = 37 };
        int8_t tab[V * D];
        float sc[V], y[3 * D];
        for (int i = 0; i < V * D; i++) tab[i] = (int8_t)(urand() * 128);
        for (int r = 0; r < V; r++) sc[r] = (float)(0.01 * (r + 1));
        const int32_t ids[3] = {8, 0, 5};
        clv_mat m = {tab, CLV_DT_I8, V, D, sc};
        b->ops->embed(b, y, &m, ids, 3);
        int bad = 0;
        for (int t = 0; t < 3; t++)
            for (int i = 0; i < D; i++) bad += y[t * D + i] != (float)tab[ids[t] * D + i] * sc[ids[t]];
        CHECK(bad == 0, "%s embed int8: %d values differ from q * scale", lvl, bad);
    }
}

/* ---- the pool's barrier ------------------------------------------------------------- */

typedef struct {
    clv_pool *p;
    int *slots; /* [rounds][nth] */
    int rounds, nth, errors;
} bar_job;

static void bar_task(void *ctx, int ith, int nth) {
    bar_job *j = ctx;
    for (int r = 0; r < j->rounds; r++) {
        j->slots[r * nth + ith] = r + 1;
        clv_pool_barrier(j->p);
        /* after the barrier every thread's write of this round is visible */
        for (int i = 0; i < nth; i++)
            if (__atomic_load_n(&j->slots[r * nth + i], __ATOMIC_RELAXED) != r + 1) __atomic_add_fetch(&j->errors, 1, __ATOMIC_RELAXED);
    }
}

static void test_barrier(void) {
    for (int nth = 1; nth <= 4; nth++) {
        bar_job j = {clv_pool_new(nth, NULL), NULL, 300, nth, 0};
        j.slots = calloc((size_t)j.rounds * nth, sizeof(int));
        for (int rep = 0; rep < 3; rep++) clv_pool_run(j.p, bar_task, &j);
        CHECK(j.errors == 0, "barrier with %d threads: %d stale reads", nth, j.errors);
        free(j.slots);
        clv_pool_free(j.p);
    }
}

int main(void) {
    test_barrier();
    for (int l = 0; l < N_LEVELS; l++) {
        const clv_cpu_kernels *k = clv_cpu_kernels_named(k_levels[l]);
        if (!k) {
            printf("  %-6s not available on this CPU: skipped\n", k_levels[l]);
            continue;
        }
        test_attn_tile_ranges(k, k_levels[l], CLV_DT_F32);
        test_attn_tile_ranges(k, k_levels[l], CLV_DT_BF16);
        for (int nth = 1; nth <= 3; nth += 2) {
            clv_backend *b = clv_cpu_backend_new_with("cpu", nth, NULL, k);
            CHECK(b != NULL, "backend %s", k_levels[l]);
            if (!b) continue;
            test_matmul(b, k_levels[l]);
            if (k->amx) {
                test_amx_rounding(b);
                b->bf16_prefill = g_one = true;
                test_matmul(b, "amx-bf16");
                test_attention(b, "amx-bf16");
                b->bf16_prefill = g_one = false;
            }
            test_attention(b, k_levels[l]);
            test_elementwise(b, k_levels[l]);
            b->ops->destroy(b);
        }
    }
    return check_report("test_kernels");
}
