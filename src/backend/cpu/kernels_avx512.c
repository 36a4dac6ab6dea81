/* AVX-512 kernels. Weights are widened to f32 in registers (bf16: shift into
 * the high half; f16: vcvtph2ps; int8: vpmovsxbd + vcvtdq2ps, unscaled, the
 * row scales applied by cpu.c), so activations keep full f32 precision.
 *
 * Decode (T == 1, gemv_*): each thread cuts its rows into GEMV_ROWS
 * contiguous parts and walks one row of each at a time, a whole 64-byte line
 * per row per step: GEMV_ROWS independent read streams in flight (one stream
 * per core stops far below the memory bandwidth), each running on through
 * consecutive rows instead of restarting every K elements. Loads are aligned
 * to 64 bytes by a masked head block, and every stream is prefetched
 * GEMV_PF bytes ahead: the hardware prefetchers stop at each 4 KiB page.
 * bench/gemv_lab.c measures the choices (variant v13 there: on a real
 * checkpoint's tensors ~10-15% over long streams without prefetch, and those
 * ~10% over 8 adjacent rows). bf16 lines are split
 * into their even and odd elements by a shift and a mask, against an x that
 * is deinterleaved once per step for all rows: no cross-lane work per weight.
 *
 * Small T (mm_*): 4 rows x 4 tokens per step, weights converted once and
 * used 4 times. Larger T (gemm): weights packed per 32-column panel and
 * KC-deep block into f32 k-major order, then a 12-token x 32-column
 * register-blocked microkernel (24 accumulators) — the GotoBLAS shape.
 *
 * Attention (attn_tile): keys in blocks of 64, read from the cache's
 * dimension-major key blocks (no transpose), so that scores, softmax and P.V
 * are all dense FMA work over the tile's rows; a bf16 cache is widened to f32
 * as it is loaded (a shift), and the arithmetic is the same. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"
#include "x86.h"

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define INL TGT static inline __attribute__((always_inline))

#ifndef GEMV_ROWS
#define GEMV_ROWS 4
#endif
/* bytes ahead each stream is prefetched (past a row's end that is the next
 * row of the same stream, which is where the stream goes) */
#ifndef GEMV_PF
#define GEMV_PF 2048
#endif

INL __m512 ld_f32(const float *p) { return _mm512_loadu_ps(p); }
INL __m512 ldm_f32(const float *p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
INL __m512 ld_bf16(const uint16_t *p) { return clv_bf16_widen(_mm256_loadu_si256((const __m256i *)p)); }
INL __m512 ldm_bf16(const uint16_t *p, __mmask16 m) { return clv_bf16_widen(_mm256_maskz_loadu_epi16(m, p)); }
INL __m512 ld_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
INL __m512 ldm_f16(const uint16_t *p, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }
INL __m512 ld_i8(const int8_t *p) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p))); }
INL __m512 ldm_i8(const int8_t *p, __mmask16 m) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p))); }
static inline __mmask16 mask16(int n) { return n >= 16 ? (__mmask16)0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

/* ---- decode: y = W x ------------------------------------------------------------- */

/* Per 32 elements of a row: two f32 vectors, to be multiplied by the two x
 * vectors that XPREP made for the same 32 elements. */
#define W32_F32(p, m32, lo, hi)                                                                     \
    do {                                                                                            \
        lo = _mm512_maskz_loadu_ps((__mmask16)(m32), (p));                                          \
        hi = _mm512_maskz_loadu_ps((__mmask16)((m32) >> 16), (p) + 16);                             \
    } while (0)
#define W32_F16(p, m32, lo, hi)                                                                     \
    do {                                                                                            \
        __m512i v_ = _mm512_maskz_loadu_epi16((m32), (p));                                          \
        lo = _mm512_cvtph_ps(_mm512_castsi512_si256(v_));                                           \
        hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(v_, 1));                                     \
    } while (0)
#define W32_BF16(p, m32, lo, hi)                                                                    \
    do {                                                                                            \
        __m512i v_ = _mm512_maskz_loadu_epi16((m32), (p));                                          \
        lo = _mm512_castsi512_ps(_mm512_slli_epi32(v_, 16));                                        \
        hi = _mm512_castsi512_ps(_mm512_and_si512(v_, _mm512_set1_epi32((int)0xffff0000u)));        \
    } while (0)
/* int8: 32 bytes, half a line, as two 16-byte loads that vpmovsxbd takes
 * straight from memory (one 32-byte load would cost an extract shuffle on
 * the port the sign extensions need: this loop is compute-bound in cache) */
#define W32_I8(p, m32, lo, hi)                                                                      \
    do {                                                                                            \
        lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8((__mmask16)(m32), (p)))); \
        hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8((__mmask16)((m32) >> 16), (p) + 16))); \
    } while (0)
/* x for those 32 elements: in order (f32, f16, int8) or even/odd (bf16) */
#define X32_PLAIN(x0, x1, a, b) (a = (x0), b = (x1))
#define X32_EVENODD(x0, x1, a, b)                                                                   \
    (a = _mm512_permutex2var_ps((x0), _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0), (x1)), \
     b = _mm512_permutex2var_ps((x0), _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1), (x1)))

/* head: elements done first as one masked block, so that every later load
 * of every row is 64-byte aligned (checkpoints place tensors at any 8-byte
 * offset; safetensors aligns nothing): a split load per line otherwise. */
#define DEFINE_GEMV_ROWS(NAME, WT, W32, X32, R)                                                     \
    INL void NAME(float *y, const float *x, const WT *w, int K, int n, int rs, int head) {          \
        const WT *wr[R];                                                                            \
        __m512 a[R], b[R];                                                                          \
        _Pragma("GCC unroll 16") for (int i = 0; i < R; i++) {                                      \
            wr[i] = w + (size_t)(n + i * rs) * K;                                                   \
            a[i] = b[i] = _mm512_setzero_ps();                                                      \
        }                                                                                           \
        int k = 0;                                                                                  \
        if (head) {                                                                                 \
            const __mmask32 m = (__mmask32)((1ull << head) - 1);                                    \
            __m512 xa, xb;                                                                          \
            X32(ldm_f32(x, mask16(head)), ldm_f32(x + 16, mask16(head - 16)), xa, xb);              \
            _Pragma("GCC unroll 16") for (int i = 0; i < R; i++) {                                  \
                __m512 lo, hi;                                                                      \
                W32(wr[i], m, lo, hi);                                                              \
                a[i] = _mm512_fmadd_ps(lo, xa, a[i]);                                               \
                b[i] = _mm512_fmadd_ps(hi, xb, b[i]);                                               \
            }                                                                                       \
            k = head;                                                                               \
        }                                                                                           \
        for (; k + 32 <= K; k += 32) {                                                              \
            __m512 xa, xb;                                                                          \
            X32(ld_f32(x + k), ld_f32(x + k + 16), xa, xb);                                         \
            _Pragma("GCC unroll 16") for (int i = 0; i < R; i++) {                                  \
                __m512 lo, hi;                                                                      \
                _Pragma("GCC unroll 2") for (int o = 0; o < 32 * (int)sizeof(WT); o += 64)          \
                    _mm_prefetch((const char *)(wr[i] + k) + GEMV_PF + o, _MM_HINT_T0);            \
                W32(wr[i] + k, ~(__mmask32)0, lo, hi);                                              \
                a[i] = _mm512_fmadd_ps(lo, xa, a[i]);                                               \
                b[i] = _mm512_fmadd_ps(hi, xb, b[i]);                                               \
            }                                                                                       \
        }                                                                                           \
        if (k < K) {                                                                                \
            const int kr = K - k;                                                                   \
            const __mmask32 m = (__mmask32)((1ull << kr) - 1);                                      \
            __m512 xa, xb;                                                                          \
            X32(ldm_f32(x + k, mask16(kr)), ldm_f32(x + k + 16, mask16(kr - 16)), xa, xb);          \
            _Pragma("GCC unroll 16") for (int i = 0; i < R; i++) {                                  \
                __m512 lo, hi;                                                                      \
                W32(wr[i] + k, m, lo, hi);                                                          \
                a[i] = _mm512_fmadd_ps(lo, xa, a[i]);                                               \
                b[i] = _mm512_fmadd_ps(hi, xb, b[i]);                                               \
            }                                                                                       \
        }                                                                                           \
        _Pragma("GCC unroll 16") for (int i = 0; i < R; i++) y[n + i * rs] = _mm512_reduce_add_ps(_mm512_add_ps(a[i], b[i])); \
    }

/* Elements before the first boundary of row n0 that a step's loads (32
 * elements: one 64-byte line, or half of one for int8) may start at without
 * splitting a line, when every row has the same alignment, else 0. */
static inline int gemv_head(const void *w, size_t es, int K, int n0) {
    const size_t al = 32 * es < 64 ? 32 * es : 64;
    if (((size_t)K * es) % al) return 0;
    size_t mis = (uintptr_t)((const char *)w + (size_t)n0 * K * es) % al;
    if (mis == 0 || mis % es) return 0;
    int head = (int)((al - mis) / es);
    return head < K ? head : 0;
}

#define DEFINE_GEMV(NAME, WT, W32, X32, R)                                                          \
    DEFINE_GEMV_ROWS(NAME##_r, WT, W32, X32, R)                                                     \
    DEFINE_GEMV_ROWS(NAME##_1, WT, W32, X32, 1)                                                     \
    TGT static void NAME(float *y, const float *x, const WT *w, int K, int n0, int n1) {            \
        const int head = gemv_head(w, sizeof(WT), K, n0), L = (n1 - n0) / (R);                      \
        for (int s = 0; s < L; s++) NAME##_r(y, x, w, K, n0 + s, L, head);                          \
        for (int n = n0 + (R) * L; n < n1; n++) NAME##_1(y, x, w, K, n, 1, head);                   \
    }

/* int8 rows in flight: 4, 6 and 8 measured the same (bench/README.md, "int8") */
#ifndef GEMV_ROWS_I8
#define GEMV_ROWS_I8 GEMV_ROWS
#endif
DEFINE_GEMV(gemv_f32, float, W32_F32, X32_PLAIN, GEMV_ROWS)
DEFINE_GEMV(gemv_bf16, uint16_t, W32_BF16, X32_EVENODD, GEMV_ROWS)
DEFINE_GEMV(gemv_f16, uint16_t, W32_F16, X32_PLAIN, GEMV_ROWS)
DEFINE_GEMV(gemv_i8, int8_t, W32_I8, X32_PLAIN, GEMV_ROWS_I8)

/* ---- small T: 4 rows x 4 tokens --------------------------------------------------- */

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

#define DEFINE_MM(NAME, WT, LD, LDM, GEMV)                                                              \
    TGT static void NAME(float *y, int ldy, const float *x, const WT *w, int T, int K, int n0, int n1) { \
        if (T == 1) {                                                                                   \
            GEMV(y, x, w, K, n0, n1);                                                                   \
            return;                                                                                     \
        }                                                                                               \
        const int kfull = K & ~15;                                                                      \
        const __mmask16 mt = (__mmask16)((1u << (K - kfull)) - 1);                                      \
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

DEFINE_MM(mm_f32, float, ld_f32, ldm_f32, gemv_f32)
DEFINE_MM(mm_bf16, uint16_t, ld_bf16, ldm_bf16, gemv_bf16)
DEFINE_MM(mm_f16, uint16_t, ld_f16, ldm_f16, gemv_f16)
DEFINE_MM(mm_i8, int8_t, ld_i8, ldm_i8, gemv_i8)

/* ---- larger T: packed panels + 12x32 microkernel ------------------------------------ */

#define GEMM_NC 32  /* columns (weight rows) per panel: two vectors */
#define GEMM_KC 256 /* k per packed block: the panel is 32 KiB of f32 */
#define GEMM_MR 12  /* tokens per microkernel call: 24 accumulators */

static size_t gemm_work_bytes(int K) {
    (void)K;
    return sizeof(float) * GEMM_NC * GEMM_KC;
}

/* Whole blocks of 16 rows (row j at w + j * K), into bp[k][GEMM_NC]'s 16
 * columns at bp: 16 k of f32, or 32 k of 16-bit weights transposed as k pairs
 * (dwords) and split into even and odd k. */
INL void fast_f32(float *bp, const float *w, size_t K) {
    __m512i r[16];
    clv_transpose16_rows(r, w, 4 * K);
#pragma GCC unroll 16
    for (int k = 0; k < 16; k++) _mm512_store_si512((__m512i *)(bp + k * GEMM_NC), r[k]);
}
INL void fast_bf16(float *bp, const uint16_t *w, size_t K) {
    __m512i r[16];
    clv_transpose16_rows(r, w, 2 * K);
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
#pragma GCC unroll 16
    for (int kp = 0; kp < 16; kp++) {
        _mm512_store_si512((__m512i *)(bp + 2 * kp * GEMM_NC), _mm512_slli_epi32(r[kp], 16));
        _mm512_store_si512((__m512i *)(bp + (2 * kp + 1) * GEMM_NC), _mm512_and_si512(r[kp], hi));
    }
}
INL void fast_f16(float *bp, const uint16_t *w, size_t K) {
    __m512i r[16];
    clv_transpose16_rows(r, w, 2 * K);
#pragma GCC unroll 16
    for (int kp = 0; kp < 16; kp++) {
        _mm512_store_ps(bp + 2 * kp * GEMM_NC, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(r[kp])));
        _mm512_store_ps(bp + (2 * kp + 1) * GEMM_NC, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(r[kp], 16))));
    }
}

INL void no_fast(float *bp, const int8_t *w, size_t K) { (void)bp, (void)w, (void)K; }

/* bp[k][32] = w[n + j][k0 + k] as f32, for k < kc; zero for j >= nc. Whole
 * blocks of FK k (FAST), the rest 16 k at a time, transposed in registers. */
#define DEFINE_PACK(NAME, WT, LDM, FAST, FK)                                                       \
    TGT static void NAME(float *bp, const WT *w, int K, int n, int nc, int k0, int kc) {            \
        for (int jg = 0; jg < 2; jg++)                                                              \
            for (int kb = 0; kb < kc;) {                                                            \
                if (FK && kc - kb >= FK && nc >= jg * 16 + 16) {                                    \
                    FAST(bp + (size_t)kb * GEMM_NC + jg * 16, w + (size_t)(n + jg * 16) * K + k0 + kb, (size_t)K); \
                    kb += FK;                                                                       \
                    continue;                                                                       \
                }                                                                                   \
                const __mmask16 km = mask16(kc - kb);                                               \
                __m512i r[16];                                                                      \
                for (int j = 0; j < 16; j++) {                                                      \
                    int row = jg * 16 + j;                                                          \
                    r[j] = row < nc ? _mm512_castps_si512(LDM(w + (size_t)(n + row) * K + k0 + kb, km)) \
                                    : _mm512_setzero_si512();                                       \
                }                                                                                   \
                clv_transpose16(r);                                                                 \
                const int kk_n = kc - kb < 16 ? kc - kb : 16;                                       \
                for (int kk = 0; kk < kk_n; kk++)                                                   \
                    _mm512_store_si512((__m512i *)(bp + (size_t)(kb + kk) * GEMM_NC + jg * 16), r[kk]); \
                kb += 16;                                                                           \
            }                                                                                       \
    }
DEFINE_PACK(pack_f32, float, ldm_f32, fast_f32, 16)
DEFINE_PACK(pack_bf16, uint16_t, ldm_bf16, fast_bf16, 32)
DEFINE_PACK(pack_f16, uint16_t, ldm_f16, fast_f16, 32)
DEFINE_PACK(pack_i8, int8_t, ldm_i8, no_fast, 0)

/* y[0..MR)[0..32) (+)= x[0..MR)[0..kc) . bp, columns masked by m0/m1; then
 * times sc[0..32) when sc is given (int8 row scales, on the last k block) */
#define DEFINE_MICRO(MR)                                                                           \
    TGT static void micro_##MR(float *y, int ldy, const float *x, int ldx, const float *bp, int kc, \
                               __mmask16 m0, __mmask16 m1, int accumulate, const float *sc) {       \
        __m512 c0[MR], c1[MR];                                                                      \
        const float *xr[MR];                                                                        \
        _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++) {                                     \
            xr[i] = x + (size_t)i * ldx;                                                            \
            c0[i] = c1[i] = _mm512_setzero_ps();                                                    \
        }                                                                                           \
        for (int k = 0; k < kc; k++) {                                                              \
            __m512 b0 = _mm512_load_ps(bp + (size_t)k * GEMM_NC), b1 = _mm512_load_ps(bp + (size_t)k * GEMM_NC + 16); \
            _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++) {                                 \
                __m512 a = _mm512_set1_ps(xr[i][k]);                                                \
                c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);                                              \
                c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);                                              \
            }                                                                                       \
        }                                                                                           \
        _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++) {                                     \
            float *yr = y + (size_t)i * ldy;                                                        \
            if (accumulate) {                                                                       \
                c0[i] = _mm512_add_ps(c0[i], _mm512_maskz_loadu_ps(m0, yr));                        \
                c1[i] = _mm512_add_ps(c1[i], _mm512_maskz_loadu_ps(m1, yr + 16));                   \
            }                                                                                       \
            if (sc) {                                                                               \
                c0[i] = _mm512_mul_ps(c0[i], _mm512_maskz_loadu_ps(m0, sc));                        \
                c1[i] = _mm512_mul_ps(c1[i], _mm512_maskz_loadu_ps(m1, sc + 16));                   \
            }                                                                                       \
            _mm512_mask_storeu_ps(yr, m0, c0[i]);                                                   \
            _mm512_mask_storeu_ps(yr + 16, m1, c1[i]);                                              \
        }                                                                                           \
    }
DEFINE_MICRO(12)
DEFINE_MICRO(8)
DEFINE_MICRO(4)
DEFINE_MICRO(2)
DEFINE_MICRO(1)

TGT static void gemm(float *y, int ldy, const float *x, const void *w, clv_dtype dt, const float *scale, int T, int K,
                     int n0, int n1, void *work) {
    float *bp = work;
    for (int n = n0; n < n1; n += GEMM_NC) {
        const int nc = n1 - n < GEMM_NC ? n1 - n : GEMM_NC;
        const __mmask16 m0 = mask16(nc), m1 = mask16(nc - 16);
        for (int k0 = 0; k0 < K; k0 += GEMM_KC) {
            const int kc = K - k0 < GEMM_KC ? K - k0 : GEMM_KC;
            const float *sc = scale && k0 + kc == K ? scale + n : NULL;
            switch (dt) {
            case CLV_DT_F32: pack_f32(bp, w, K, n, nc, k0, kc); break;
            case CLV_DT_BF16: pack_bf16(bp, w, K, n, nc, k0, kc); break;
            case CLV_DT_I8: pack_i8(bp, w, K, n, nc, k0, kc); break;
            default: pack_f16(bp, w, K, n, nc, k0, kc); break;
            }
            int t = 0;
            for (; t + 12 <= T; t += 12)
                micro_12(y + (size_t)t * ldy + n, ldy, x + (size_t)t * K + k0, K, bp, kc, m0, m1, k0 > 0, sc);
            for (; t + 8 <= T; t += 8)
                micro_8(y + (size_t)t * ldy + n, ldy, x + (size_t)t * K + k0, K, bp, kc, m0, m1, k0 > 0, sc);
            for (; t + 4 <= T; t += 4)
                micro_4(y + (size_t)t * ldy + n, ldy, x + (size_t)t * K + k0, K, bp, kc, m0, m1, k0 > 0, sc);
            for (; t + 2 <= T; t += 2)
                micro_2(y + (size_t)t * ldy + n, ldy, x + (size_t)t * K + k0, K, bp, kc, m0, m1, k0 > 0, sc);
            for (; t < T; t++)
                micro_1(y + (size_t)t * ldy + n, ldy, x + (size_t)t * K + k0, K, bp, kc, m0, m1, k0 > 0, sc);
        }
    }
}

/* ---- attention ---------------------------------------------------------------------- */

/* Cache elements as f32 vectors: f32 as they are, bf16 widened (a shift). */
INL __m512 kv_ld_f32(const float *p) { return _mm512_loadu_ps(p); }
INL __m512 kv_ld_bf16(const uint16_t *p) { return ld_bf16(p); }
INL __m512 kv_ldm_f32(__mmask16 m, const float *p) { return _mm512_maskz_loadu_ps(m, p); }
INL __m512 kv_ldm_bf16(__mmask16 m, const uint16_t *p) { return ldm_bf16(p, m); }

/* scores s[r][0..64) = q[r] . k for rows r0..r0+RR-1, over the 64 keys of four
 * consecutive 16-position key blocks at kb (clv_kcache_at: element d of the
 * block's keys is one vector). Only the first nsb blocks are read; the
 * scores of the others are garbage (copies of the first's), for the caller
 * to mask. One version per cache element type KT (SFX, loaded by kv_ld_SFX). */
#define DEFINE_SCORES(RR, SFX, KT)                                                                 \
    INL void scores_##RR##_##SFX(float *s, const float *q, const KT *kb, int hd, int nsb) {        \
        __m512 a0[RR], a1[RR], a2[RR], a3[RR];                                                      \
        const size_t bs = (size_t)hd * CLV_KBLOCK, o1 = nsb > 1 ? bs : 0, o2 = nsb > 2 ? 2 * bs : 0,  \
                     o3 = nsb > 3 ? 3 * bs : 0;                                                     \
        _Pragma("GCC unroll 8") for (int i = 0; i < RR; i++) a0[i] = a1[i] = a2[i] = a3[i] = _mm512_setzero_ps(); \
        for (int d = 0; d < hd; d++) {                                                              \
            const KT *kd = kb + (size_t)d * CLV_KBLOCK;                                             \
            const __m512 k0 = kv_ld_##SFX(kd), k1 = kv_ld_##SFX(kd + o1), k2 = kv_ld_##SFX(kd + o2),   \
                         k3 = kv_ld_##SFX(kd + o3);                                                 \
            _Pragma("GCC unroll 8") for (int i = 0; i < RR; i++) {                                  \
                const __m512 qb = _mm512_set1_ps(q[(size_t)i * hd + d]);                            \
                a0[i] = _mm512_fmadd_ps(qb, k0, a0[i]);                                             \
                a1[i] = _mm512_fmadd_ps(qb, k1, a1[i]);                                             \
                a2[i] = _mm512_fmadd_ps(qb, k2, a2[i]);                                             \
                a3[i] = _mm512_fmadd_ps(qb, k3, a3[i]);                                             \
            }                                                                                       \
        }                                                                                           \
        _Pragma("GCC unroll 8") for (int i = 0; i < RR; i++) {                                      \
            _mm512_store_ps(s + (size_t)i * CLV_ATTN_BK, a0[i]);                                    \
            _mm512_store_ps(s + (size_t)i * CLV_ATTN_BK + 16, a1[i]);                               \
            _mm512_store_ps(s + (size_t)i * CLV_ATTN_BK + 32, a2[i]);                               \
            _mm512_store_ps(s + (size_t)i * CLV_ATTN_BK + 48, a3[i]);                               \
        }                                                                                           \
    }
DEFINE_SCORES(4, f32, float)
DEFINE_SCORES(1, f32, float)
DEFINE_SCORES(4, bf16, uint16_t)
DEFINE_SCORES(1, bf16, uint16_t)

/* o[r] += sum_j p[r][j] v[j] over keys j_lo .. nb-1 (v rows hd elements apart), for RR rows, hd columns
 * from c0, up to 64.
 * (Every accumulator is named, not indexed, so that they all stay in registers.) */
#define DEFINE_PV(RR, SFX, KT)                                                                     \
    INL void pv_##RR##_##SFX(float *o, const float *p, const KT *v, int j_lo, int nb, int hd, int c0) { \
        const __mmask16 k0 = mask16(hd - c0), k1 = mask16(hd - c0 - 16), k2 = mask16(hd - c0 - 32), \
                        k3 = mask16(hd - c0 - 48);                                                  \
        __m512 a0[RR], a1[RR], a2[RR], a3[RR];                                                      \
        _Pragma("GCC unroll 8") for (int i = 0; i < RR; i++) {                                      \
            float *orow = o + (size_t)i * hd + c0;                                                  \
            a0[i] = _mm512_maskz_loadu_ps(k0, orow);                                                \
            a1[i] = _mm512_maskz_loadu_ps(k1, orow + 16);                                           \
            a2[i] = _mm512_maskz_loadu_ps(k2, orow + 32);                                           \
            a3[i] = _mm512_maskz_loadu_ps(k3, orow + 48);                                           \
        }                                                                                           \
        for (int jj = j_lo; jj < nb; jj++) {                                                        \
            const KT *vr = v + (size_t)jj * hd + c0;                                                \
            const __m512 v0 = kv_ldm_##SFX(k0, vr), v1 = kv_ldm_##SFX(k1, vr + 16),                  \
                         v2 = kv_ldm_##SFX(k2, vr + 32), v3 = kv_ldm_##SFX(k3, vr + 48);             \
            _Pragma("GCC unroll 8") for (int i = 0; i < RR; i++) {                                  \
                const __m512 pb = _mm512_set1_ps(p[(size_t)i * CLV_ATTN_BK + jj]);                  \
                a0[i] = _mm512_fmadd_ps(pb, v0, a0[i]);                                             \
                a1[i] = _mm512_fmadd_ps(pb, v1, a1[i]);                                             \
                a2[i] = _mm512_fmadd_ps(pb, v2, a2[i]);                                             \
                a3[i] = _mm512_fmadd_ps(pb, v3, a3[i]);                                             \
            }                                                                                       \
        }                                                                                           \
        _Pragma("GCC unroll 8") for (int i = 0; i < RR; i++) {                                      \
            float *orow = o + (size_t)i * hd + c0;                                                  \
            _mm512_mask_storeu_ps(orow, k0, a0[i]);                                                 \
            _mm512_mask_storeu_ps(orow + 16, k1, a1[i]);                                            \
            _mm512_mask_storeu_ps(orow + 32, k2, a2[i]);                                            \
            _mm512_mask_storeu_ps(orow + 48, k3, a3[i]);                                            \
        }                                                                                           \
    }
/* dst[0..n) = src widened from bf16 */
INL void widen_bf16(float *dst, const uint16_t *src, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, kv_ld_bf16(src + i));
    if (i < n) _mm512_mask_storeu_ps(dst + i, mask16((int)(n - i)), kv_ldm_bf16(mask16((int)(n - i)), src + i));
}

DEFINE_PV(4, f32, float)
DEFINE_PV(1, f32, float)
DEFINE_PV(4, bf16, uint16_t)
DEFINE_PV(1, bf16, uint16_t)

TGT static void attn_tile(const clv_attn_tile *a) {
    const int R = a->R, hd = a->hd;
    float *S = a->work;                          /* [R][64] scores, then probabilities */
    float *mrow = S + (size_t)R * CLV_ATTN_BK, *lrow = mrow + R;
    const bool bf16 = a->kv_dt == CLV_DT_BF16;
    const float *kf = a->k, *vf = a->v;
    const uint16_t *kbf = a->k, *vbf = a->v;
    /* a bf16 block seen by more rows than one pass of the kernels takes is widened once,
     * into kw ([4][hd][16], as the cache) and vw ([64][hd]), and read from there as f32 */
    float *kw = mrow + ((2 * (size_t)R + 15) & ~(size_t)15), *vw = kw + (size_t)CLV_ATTN_BK * hd;
    int jlo, jhi;
    clv_attn_tile_begin(a, mrow, lrow, &jlo, &jhi);
    /* blocks of 64 positions from a key block's start (up to four whole key
     * blocks of the cache); keys outside a row's range are masked */
    for (int j0 = jlo & ~(CLV_KBLOCK - 1); j0 <= jhi; j0 += CLV_ATTN_BK) {
        const int nb = jhi + 1 - j0 < CLV_ATTN_BK ? jhi + 1 - j0 : CLV_ATTN_BK;
        const int nsb = (nb + CLV_KBLOCK - 1) / CLV_KBLOCK;
        /* rows that see any key of this block: hi is sorted; lo is sorted for
         * every row layout cpu.c makes, but do not rely on it */
        int ra = 0;
        while (ra < R && a->hi[ra] < j0) ra++;
        if (ra == R) break;
        /* f32 keys of this block: the cache's, or a bf16 block widened; NULL: read as bf16 */
        const size_t kb = clv_kcache_at(j0, 0, hd);
        const bool widen = bf16 && R - ra > 4;
        const float *ks = bf16 ? NULL : kf + kb;
        if (widen) {
            widen_bf16(kw, kbf + kb, (size_t)nsb * CLV_KBLOCK * hd);
            ks = kw;
        }
        int r = ra;
        if (ks) {
            for (; r + 4 <= R; r += 4) scores_4_f32(S + (size_t)r * CLV_ATTN_BK, a->q + (size_t)r * hd, ks, hd, nsb);
            for (; r < R; r++) scores_1_f32(S + (size_t)r * CLV_ATTN_BK, a->q + (size_t)r * hd, ks, hd, nsb);
        } else {
            for (; r + 4 <= R; r += 4) scores_4_bf16(S + (size_t)r * CLV_ATTN_BK, a->q + (size_t)r * hd, kbf + kb, hd, nsb);
            for (; r < R; r++) scores_1_bf16(S + (size_t)r * CLV_ATTN_BK, a->q + (size_t)r * hd, kbf + kb, hd, nsb);
        }
        /* mask, online softmax: P replaces S; rows with nothing visible get P = 0 */
        int j_lo = nb; /* the first key any row sees: values below it are not read */
        for (r = ra; r < R; r++) {
            float *s = S + (size_t)r * CLV_ATTN_BK;
            __mmask16 vm[4];
            __m512 sv[4];
            const float bmax = clv_attn_block_row(s, a->lo[r] - j0, a->hi[r] - j0, nb, vm, sv), mold = mrow[r];
            if (!(vm[0] | vm[1] | vm[2] | vm[3])) {
                memset(s, 0, sizeof(float) * CLV_ATTN_BK);
                continue;
            }
            if (a->lo[r] - j0 < j_lo) j_lo = a->lo[r] - j0 > 0 ? a->lo[r] - j0 : 0;
            const float mnew = bmax > mold ? bmax : mold;
            const __m512 mv = _mm512_set1_ps(mnew);
            __m512 sum = _mm512_setzero_ps();
            for (int j = 0; j < 4; j++) {
                __m512 p = _mm512_maskz_mov_ps(vm[j], clv_exp512(_mm512_sub_ps(sv[j], mv)));
                sum = _mm512_add_ps(sum, p);
                _mm512_store_ps(s + 16 * j, p);
            }
            clv_attn_row_advance(a->o + (size_t)r * hd, hd, &mrow[r], &lrow[r], mnew, sum);
        }
        /* values likewise (vs[j * hd] is key j0 + j's row) */
        const size_t vb = (size_t)j0 * hd;
        const float *vs = bf16 ? NULL : vf + vb;
        if (widen) {
            widen_bf16(vw + (size_t)j_lo * hd, vbf + vb + (size_t)j_lo * hd, (size_t)(nb - j_lo) * hd);
            vs = vw;
        }
        for (int c0 = 0; c0 < hd; c0 += 64) {
            r = ra;
            if (vs) {
                for (; r + 4 <= R; r += 4) pv_4_f32(a->o + (size_t)r * hd, S + (size_t)r * CLV_ATTN_BK, vs, j_lo, nb, hd, c0);
                for (; r < R; r++) pv_1_f32(a->o + (size_t)r * hd, S + (size_t)r * CLV_ATTN_BK, vs, j_lo, nb, hd, c0);
            } else {
                for (; r + 4 <= R; r += 4) pv_4_bf16(a->o + (size_t)r * hd, S + (size_t)r * CLV_ATTN_BK, vbf + vb, j_lo, nb, hd, c0);
                for (; r < R; r++) pv_1_bf16(a->o + (size_t)r * hd, S + (size_t)r * CLV_ATTN_BK, vbf + vb, j_lo, nb, hd, c0);
            }
        }
    }
    for (int r = 0; r < R; r++) {
        if (a->m) a->m[r] = mrow[r], a->l[r] = lrow[r];
        clv_scale_f32(a->o + (size_t)r * hd, hd, 1.0f / lrow[r]);
    }
}

/* ---- elementwise ---------------------------------------------------------------------- */

TGT static void silu_mul(float *g, const float *u, size_t n) {
    size_t i = 0;
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : mask16((int)(n - i));
        __m512 gv = _mm512_maskz_loadu_ps(m, g + i), uv = _mm512_maskz_loadu_ps(m, u + i);
        __m512 e = clv_exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        __m512 s = _mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(s, uv));
    }
}

TGT static void rmsnorm(float *y, const float *x, const float *w, int r0, int r1, int dim, float eps) {
    for (int r = r0; r < r1; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
        int i = 0;
        for (; i + 16 <= dim; i += 16) {
            __m512d a = _mm512_cvtps_pd(_mm256_loadu_ps(xr + i)), b = _mm512_cvtps_pd(_mm256_loadu_ps(xr + i + 8));
            s0 = _mm512_fmadd_pd(a, a, s0);
            s1 = _mm512_fmadd_pd(b, b, s1);
        }
        double ss = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
        for (; i < dim; i++) ss += (double)xr[i] * xr[i];
        const float inv = (float)(1.0 / sqrt(ss / dim + eps));
        const __m512 iv = _mm512_set1_ps(inv);
        for (i = 0; i < dim; i += 16) {
            __mmask16 m = mask16(dim - i);
            __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xr + i), iv);
            _mm512_mask_storeu_ps(yr + i, m, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + i)));
        }
    }
}

const clv_cpu_kernels clv_kernels_avx512 = {
    .isa = "avx512",
    .mm_f32 = mm_f32,
    .mm_bf16 = mm_bf16,
    .mm_f16 = mm_f16,
    .mm_i8 = mm_i8,
    .gemm = gemm,
    .gemm_work_bytes = gemm_work_bytes,
    .gemm_min_t = 8,
    .attn_tile = attn_tile,
    .silu_mul = silu_mul,
    .rmsnorm = rmsnorm,
};

/* The amx level: everything above, plus bf16 and int8 prefill on tiles (cpu.c calls
 * clv_amx_* when .amx is set). */
const clv_cpu_kernels clv_kernels_amx = {
    .isa = "amx",
    .mm_f32 = mm_f32,
    .mm_bf16 = mm_bf16,
    .mm_f16 = mm_f16,
    .mm_i8 = mm_i8,
    .gemm = gemm,
    .gemm_work_bytes = gemm_work_bytes,
    .gemm_min_t = 8,
    .attn_tile = attn_tile,
    .silu_mul = silu_mul,
    .rmsnorm = rmsnorm,
    .amx = true,
};
