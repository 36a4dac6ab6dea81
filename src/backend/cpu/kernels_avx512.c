/* AVX-512 kernels. Weights are widened to f32 in registers (bf16: shift into
 * the high half; f16: vcvtph2ps), so activations keep full f32 precision.
 *
 * Decode (T == 1) walks 8 weight rows at once: 8 independent read streams per
 * thread keep enough loads in flight to approach the memory bandwidth limit.
 * Prefill (T > 1) computes 4 rows x 4 tokens per step so that every weight
 * converted to f32 is used 4 times. */
#include <immintrin.h>

#include "kernels.h"

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))

TGT static inline __m512 ld_f32(const float *p) { return _mm512_loadu_ps(p); }
TGT static inline __m512 ldm_f32(const float *p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
TGT static inline __m512 ld_bf16(const uint16_t *p) {
    __m256i h = _mm256_loadu_si256((const __m256i *)p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
TGT static inline __m512 ldm_bf16(const uint16_t *p, __mmask16 m) {
    __m256i h = _mm256_maskz_loadu_epi16(m, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
TGT static inline __m512 ld_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
TGT static inline __m512 ldm_f16(const uint16_t *p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

/* One output element at a time: used for row and token tails. */
#define DOT1(LD, LDM, wr, xr, K, out)                                                  \
    do {                                                                              \
        __m512 a_ = _mm512_setzero_ps();                                              \
        int k_ = 0;                                                                   \
        for (; k_ + 16 <= (K); k_ += 16) a_ = _mm512_fmadd_ps(LD((wr) + k_), ld_f32((xr) + k_), a_); \
        if (k_ < (K)) {                                                               \
            __mmask16 m_ = (__mmask16)((1u << ((K) - k_)) - 1);                       \
            a_ = _mm512_fmadd_ps(LDM((wr) + k_, m_), ldm_f32((xr) + k_, m_), a_);     \
        }                                                                             \
        (out) = _mm512_reduce_add_ps(a_);                                             \
    } while (0)

#define DEFINE_MM(NAME, WT, LD, LDM)                                                                    \
    TGT static void NAME(float *y, int ldy, const float *x, const WT *w, int T, int K, int n0, int n1) { \
        const int kfull = K & ~15;                                                                      \
        const __mmask16 mt = (__mmask16)((1u << (K - kfull)) - 1);                                      \
        if (T == 1) {                                                                                   \
            int n = n0;                                                                                 \
            for (; n + 8 <= n1; n += 8) {                                                               \
                const WT *w0 = w + (size_t)n * K;                                                       \
                __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0; \
                for (int k = 0; k < kfull; k += 16) {                                                   \
                    __m512 xv = ld_f32(x + k);                                                          \
                    a0 = _mm512_fmadd_ps(LD(w0 + k), xv, a0);                                           \
                    a1 = _mm512_fmadd_ps(LD(w0 + (size_t)K + k), xv, a1);                               \
                    a2 = _mm512_fmadd_ps(LD(w0 + (size_t)2 * K + k), xv, a2);                           \
                    a3 = _mm512_fmadd_ps(LD(w0 + (size_t)3 * K + k), xv, a3);                           \
                    a4 = _mm512_fmadd_ps(LD(w0 + (size_t)4 * K + k), xv, a4);                           \
                    a5 = _mm512_fmadd_ps(LD(w0 + (size_t)5 * K + k), xv, a5);                           \
                    a6 = _mm512_fmadd_ps(LD(w0 + (size_t)6 * K + k), xv, a6);                           \
                    a7 = _mm512_fmadd_ps(LD(w0 + (size_t)7 * K + k), xv, a7);                           \
                }                                                                                       \
                if (kfull < K) {                                                                        \
                    __m512 xv = ldm_f32(x + kfull, mt);                                                 \
                    a0 = _mm512_fmadd_ps(LDM(w0 + kfull, mt), xv, a0);                                  \
                    a1 = _mm512_fmadd_ps(LDM(w0 + (size_t)K + kfull, mt), xv, a1);                      \
                    a2 = _mm512_fmadd_ps(LDM(w0 + (size_t)2 * K + kfull, mt), xv, a2);                  \
                    a3 = _mm512_fmadd_ps(LDM(w0 + (size_t)3 * K + kfull, mt), xv, a3);                  \
                    a4 = _mm512_fmadd_ps(LDM(w0 + (size_t)4 * K + kfull, mt), xv, a4);                  \
                    a5 = _mm512_fmadd_ps(LDM(w0 + (size_t)5 * K + kfull, mt), xv, a5);                  \
                    a6 = _mm512_fmadd_ps(LDM(w0 + (size_t)6 * K + kfull, mt), xv, a6);                  \
                    a7 = _mm512_fmadd_ps(LDM(w0 + (size_t)7 * K + kfull, mt), xv, a7);                  \
                }                                                                                       \
                y[n + 0] = _mm512_reduce_add_ps(a0);                                                    \
                y[n + 1] = _mm512_reduce_add_ps(a1);                                                    \
                y[n + 2] = _mm512_reduce_add_ps(a2);                                                    \
                y[n + 3] = _mm512_reduce_add_ps(a3);                                                    \
                y[n + 4] = _mm512_reduce_add_ps(a4);                                                    \
                y[n + 5] = _mm512_reduce_add_ps(a5);                                                    \
                y[n + 6] = _mm512_reduce_add_ps(a6);                                                    \
                y[n + 7] = _mm512_reduce_add_ps(a7);                                                    \
            }                                                                                           \
            for (; n < n1; n++) DOT1(LD, LDM, w + (size_t)n * K, x, K, y[n]);                           \
            return;                                                                                     \
        }                                                                                               \
        int n = n0;                                                                                     \
        for (; n + 4 <= n1; n += 4) {                                                                   \
            const WT *w0 = w + (size_t)n * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;                 \
            int t = 0;                                                                                  \
            for (; t + 4 <= T; t += 4) {                                                                \
                const float *x0 = x + (size_t)t * K, *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K;          \
                __m512 c[4][4];                                                                         \
                for (int i = 0; i < 4; i++)                                                             \
                    for (int j = 0; j < 4; j++) c[i][j] = _mm512_setzero_ps();                          \
                for (int k = 0; k < K; k += 16) {                                                       \
                    __mmask16 m = k + 16 <= K ? (__mmask16)0xffff : mt;                                 \
                    __m512 wv[4] = {LDM(w0 + k, m), LDM(w1 + k, m), LDM(w2 + k, m), LDM(w3 + k, m)};    \
                    __m512 xv[4] = {ldm_f32(x0 + k, m), ldm_f32(x1 + k, m), ldm_f32(x2 + k, m),         \
                                    ldm_f32(x3 + k, m)};                                                \
                    for (int i = 0; i < 4; i++)                                                         \
                        for (int j = 0; j < 4; j++) c[i][j] = _mm512_fmadd_ps(wv[i], xv[j], c[i][j]);   \
                }                                                                                       \
                for (int i = 0; i < 4; i++)                                                             \
                    for (int j = 0; j < 4; j++) y[(size_t)(t + j) * ldy + n + i] = _mm512_reduce_add_ps(c[i][j]); \
            }                                                                                           \
            for (; t < T; t++)                                                                          \
                for (int i = 0; i < 4; i++)                                                             \
                    DOT1(LD, LDM, w0 + (size_t)i * K, x + (size_t)t * K, K, y[(size_t)t * ldy + n + i]); \
        }                                                                                               \
        for (; n < n1; n++)                                                                             \
            for (int t = 0; t < T; t++) DOT1(LD, LDM, w + (size_t)n * K, x + (size_t)t * K, K, y[(size_t)t * ldy + n]); \
    }

DEFINE_MM(mm_f32, float, ld_f32, ldm_f32)
DEFINE_MM(mm_bf16, uint16_t, ld_bf16, ldm_bf16)
DEFINE_MM(mm_f16, uint16_t, ld_f16, ldm_f16)

TGT static float dot(const float *a, const float *b, int n) {
    __m512 acc = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) acc = _mm512_fmadd_ps(ld_f32(a + i), ld_f32(b + i), acc);
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        acc = _mm512_fmadd_ps(ldm_f32(a + i, m), ldm_f32(b + i, m), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

TGT static void axpy(float *y, float a, const float *x, int n) {
    __m512 av = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, ld_f32(x + i), ld_f32(y + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(av, ldm_f32(x + i, m), ldm_f32(y + i, m)));
    }
}

TGT static void scale(float *y, float a, int n) {
    __m512 av = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_mul_ps(av, ld_f32(y + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(av, ldm_f32(y + i, m)));
    }
}

const clv_cpu_kernels clv_kernels_avx512 = {"avx512", mm_f32, mm_bf16, mm_f16, dot, axpy, scale};
