/* Portable kernels: the fallback and the baseline the SIMD paths are tested
 * against. */
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

static float dot(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
static void axpy(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}
static void scale(float *y, float a, int n) {
    for (int i = 0; i < n; i++) y[i] *= a;
}

const clv_cpu_kernels clv_kernels_scalar = {"scalar", mm_f32, mm_bf16, mm_f16, dot, axpy, scale};
