/* AVX2 + FMA + F16C kernels: the path for x86 CPUs without AVX-512. Weights
 * are widened to f32 in registers (int8: vpmovsxbd + vcvtdq2ps); 4 rows
 * (decode) per step. Tails fall back to scalar code. */
#include <immintrin.h>

#include "kernels.h"
#include "../../util/util.h"

#define TGT __attribute__((target("avx2,fma,f16c")))

TGT static inline __m256 ld_f32(const float *p) { return _mm256_loadu_ps(p); }
TGT static inline __m256 ld_bf16(const uint16_t *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
TGT static inline __m256 ld_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
TGT static inline __m256 ld_i8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
static inline float cv_f32(float v) { return v; }
static inline float cv_i8(int8_t v) { return (float)v; }

TGT static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#define DEFINE_MM(NAME, WT, LD, CV)                                                                     \
    TGT static float NAME##_dot1(const WT *wr, const float *xr, int K) {                                \
        __m256 a = _mm256_setzero_ps();                                                                 \
        int k = 0;                                                                                      \
        for (; k + 8 <= K; k += 8) a = _mm256_fmadd_ps(LD(wr + k), ld_f32(xr + k), a);                  \
        float s = hsum(a);                                                                              \
        for (; k < K; k++) s += CV(wr[k]) * xr[k];                                                      \
        return s;                                                                                       \
    }                                                                                                   \
    TGT static void NAME(float *y, int ldy, const float *x, const WT *w, int T, int K, int n0, int n1) { \
        const int kfull = K & ~7;                                                                       \
        int n = n0;                                                                                     \
        if (T == 1) {                                                                                   \
            for (; n + 4 <= n1; n += 4) {                                                               \
                const WT *w0 = w + (size_t)n * K;                                                       \
                __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                             \
                for (int k = 0; k < kfull; k += 8) {                                                    \
                    __m256 xv = ld_f32(x + k);                                                          \
                    a0 = _mm256_fmadd_ps(LD(w0 + k), xv, a0);                                           \
                    a1 = _mm256_fmadd_ps(LD(w0 + (size_t)K + k), xv, a1);                               \
                    a2 = _mm256_fmadd_ps(LD(w0 + (size_t)2 * K + k), xv, a2);                           \
                    a3 = _mm256_fmadd_ps(LD(w0 + (size_t)3 * K + k), xv, a3);                           \
                }                                                                                       \
                float s[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};                                  \
                for (int k = kfull; k < K; k++)                                                         \
                    for (int i = 0; i < 4; i++) s[i] += CV(w0[(size_t)i * K + k]) * x[k];               \
                for (int i = 0; i < 4; i++) y[n + i] = s[i];                                            \
            }                                                                                           \
        }                                                                                               \
        for (; n < n1; n++)                                                                             \
            for (int t = 0; t < T; t++) y[(size_t)t * ldy + n] = NAME##_dot1(w + (size_t)n * K, x + (size_t)t * K, K); \
    }

DEFINE_MM(mm_f32, float, ld_f32, cv_f32)
DEFINE_MM(mm_bf16, uint16_t, ld_bf16, clv_bf16_to_f32)
DEFINE_MM(mm_f16, uint16_t, ld_f16, clv_f16_to_f32)
DEFINE_MM(mm_i8, int8_t, ld_i8, cv_i8) /* unscaled: cpu.c applies the row scales */

const clv_cpu_kernels clv_kernels_avx2 = {
    .isa = "avx2",
    .mm_f32 = mm_f32,
    .mm_bf16 = mm_bf16,
    .mm_f16 = mm_f16,
    .mm_i8 = mm_i8,
    .attn_tile = clv_attn_tile_scalar,
    .silu_mul = clv_silu_mul_scalar,
    .rmsnorm = clv_rmsnorm_scalar,
};
