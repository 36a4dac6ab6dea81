/* Portable kernels: the fallback and the baseline the SIMD paths are tested
 * against. The attention tile, silu and rmsnorm here are also what the avx2
 * level runs. */
#include <math.h>
#include <string.h>

#include "kernels.h"

#include "../../util/util.h"

#define DEFINE_MM(NAME, WT, CONV)                                                                     \
    static void NAME(float *y, int ldy, const float *x, const WT *w, int T, int K, int n0, int n1) { \
        for (int n = n0; n < n1; n++) {                                                               \
            const WT *wr = w + (size_t)n * K;                                                         \
            for (int t = 0; t < T; t++) {                                                             \
                const float *xr = x + (size_t)t * K;                                                  \
                float acc = 0.0f;                                                                     \
                for (int k = 0; k < K; k++) acc += xr[k] * CONV(wr[k]);                               \
                y[(size_t)t * ldy + n] = acc;                                                         \
            }                                                                                         \
        }                                                                                             \
    }
#define ID(v) (v)
DEFINE_MM(mm_f32, float, ID)
DEFINE_MM(mm_bf16, uint16_t, clv_bf16_to_f32)
DEFINE_MM(mm_f16, uint16_t, clv_f16_to_f32)
#define I8(v) ((float)(v))
DEFINE_MM(mm_i8, int8_t, I8) /* unscaled: cpu.c applies the row scales */

static inline float kv_at(const void *c, size_t i, bool bf16) {
    return bf16 ? clv_bf16_to_f32(((const uint16_t *)c)[i]) : ((const float *)c)[i];
}

/* Online softmax, one row at a time, one key at a time. */
void clv_attn_tile_scalar(const clv_attn_tile *a) {
    const int hd = a->hd;
    const bool bf16 = a->kv_dt == CLV_DT_BF16;
    for (int r = 0; r < a->R; r++) {
        const float *q = a->q + (size_t)r * hd;
        float *o = a->o + (size_t)r * hd;
        memset(o, 0, sizeof(float) * (size_t)hd);
        float m = -INFINITY, l = 0.0f;
        for (int p = a->lo[r]; p <= a->hi[r]; p++) {
            const size_t kb = clv_kcache_at(p, 0, hd), vr = (size_t)p * hd;
            float s = 0.0f;
            for (int i = 0; i < hd; i++) s += q[i] * kv_at(a->k, kb + (size_t)i * CLV_KBLOCK, bf16);
            if (s > m) {
                float corr = expf(m - s);
                for (int i = 0; i < hd; i++) o[i] *= corr;
                l *= corr;
                m = s;
            }
            float pr = expf(s - m);
            l += pr;
            for (int i = 0; i < hd; i++) o[i] += pr * kv_at(a->v, vr + i, bf16);
        }
        for (int i = 0; i < hd; i++) o[i] /= l;
        if (a->m) a->m[r] = m, a->l[r] = l;
    }
}

void clv_silu_mul_scalar(float *g, const float *u, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void clv_rmsnorm_scalar(float *y, const float *x, const float *w, int r0, int r1, int dim, float eps) {
    for (int r = r0; r < r1; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        double ss = 0.0;
        for (int i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / dim + eps));
        for (int i = 0; i < dim; i++) yr[i] = xr[i] * inv * w[i];
    }
}

const clv_cpu_kernels clv_kernels_scalar = {
    .isa = "scalar",
    .mm_f32 = mm_f32,
    .mm_bf16 = mm_bf16,
    .mm_f16 = mm_f16,
    .mm_i8 = mm_i8,
    .attn_tile = clv_attn_tile_scalar,
    .silu_mul = clv_silu_mul_scalar,
    .rmsnorm = clv_rmsnorm_scalar,
};
