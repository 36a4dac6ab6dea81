/* AVX-512 helpers shared by the CPU kernels (kernels_avx512.c, kernels_amx.c).
 * Only AVX-512F is required, so they inline into callers built for any
 * superset of it. */
#ifndef CLV_CPU_X86_H
#define CLV_CPU_X86_H

#include <immintrin.h>
#include <math.h>

/* 16x16 transpose of 32-bit elements: r[i][j] -> r[j][i]. */
__attribute__((target("avx512f"))) static inline __attribute__((always_inline)) void clv_transpose16(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    /* r[4i+c] lane L = column 4L+c of rows 4i..4i+3: transpose the 4x4 lanes */
    for (int c = 0; c < 4; c++) {
        __m512i a = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x44), b = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xee);
        __m512i e = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x44), f = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xee);
        t[c] = _mm512_shuffle_i32x4(a, e, 0x88);
        t[4 + c] = _mm512_shuffle_i32x4(a, e, 0xdd);
        t[8 + c] = _mm512_shuffle_i32x4(b, f, 0x88);
        t[12 + c] = _mm512_shuffle_i32x4(b, f, 0xdd);
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

/* 16 bytes from each of p, p + step, p + 2 step, p + 3 step, lanes 0..3 */
__attribute__((target("avx512f"))) static inline __attribute__((always_inline)) __m512i clv_load_rows4(const void *p,
                                                                                                      size_t step) {
    const char *b = p;
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)b));
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(b + step)), 1);
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(b + 2 * step)), 2);
    return _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(b + 3 * step)), 3);
}

/* clv_transpose16 from memory: r[i] = dword i of 16 rows of 64 bytes (row
 * j at p + j * stride), element j from row j. The 128-bit lane shuffles are
 * done by the loads instead: vector 4q + c gathers dwords 4c..4c+3 of rows q,
 * q + 4, q + 8, q + 12 (one per lane), and a 4 x 4 transpose inside the lanes
 * of vectors c, 4 + c, 8 + c, 12 + c leaves dword 4c + e of rows 4L..4L+3 in
 * lane L. 32 shuffles instead of 64, on the one port that runs them. */
__attribute__((target("avx512f"))) static inline __attribute__((always_inline)) void
clv_transpose16_rows(__m512i r[16], const void *p, size_t stride) {
    const char *b = p;
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        __m512i a[4];
#pragma GCC unroll 4
        for (int q = 0; q < 4; q++) a[q] = clv_load_rows4(b + (size_t)q * stride + 16 * c, 4 * stride);
        const __m512i t0 = _mm512_unpacklo_epi32(a[0], a[1]), t1 = _mm512_unpackhi_epi32(a[0], a[1]);
        const __m512i t2 = _mm512_unpacklo_epi32(a[2], a[3]), t3 = _mm512_unpackhi_epi32(a[2], a[3]);
        r[4 * c + 0] = _mm512_unpacklo_epi64(t0, t2);
        r[4 * c + 1] = _mm512_unpackhi_epi64(t0, t2);
        r[4 * c + 2] = _mm512_unpacklo_epi64(t1, t3);
        r[4 * c + 3] = _mm512_unpackhi_epi64(t1, t3);
    }
}

/* 16 bf16 values as f32 (exact: a shift) */
__attribute__((target("avx512f"))) static inline __attribute__((always_inline)) __m512 clv_bf16_widen(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* exp(x) for f32 lanes: x = n ln2 + r, |r| <= ln2/2, degree-7 Taylor on r
 * (truncation 5e-9 relative), 2^n by scalef. Inputs clamped to [-87, 88]:
 * callers mask what must be exactly zero. */
__attribute__((target("avx512f"))) static inline __attribute__((always_inline)) __m512 clv_exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

#define CLV_X86_INL __attribute__((target("avx512f"))) static inline __attribute__((always_inline))

/* Attention, one row of a 64-key block (kernels_avx512.c, kernels_amx.c):
 * loads the block's scores s[0..63] into sv and which of them the row sees
 * into vm (keys lo .. hi, counted from the block's first, and below nb);
 * returns the largest score it sees, -INFINITY when it sees none. */
CLV_X86_INL float clv_attn_block_row(const float *s, int lo, int hi, int nb, __mmask16 vm[4], __m512 sv[4]) {
    __m512 mx = _mm512_set1_ps(-INFINITY);
    if (lo <= 0 && hi >= 63) { /* the whole block */
        for (int j = 0; j < 4; j++) {
            vm[j] = 0xffff;
            sv[j] = _mm512_load_ps(s + 16 * j);
            mx = _mm512_max_ps(mx, sv[j]);
        }
        return _mm512_reduce_max_ps(mx);
    }
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i lov = _mm512_set1_epi32(lo), hiv = _mm512_set1_epi32(hi), nbv = _mm512_set1_epi32(nb);
    int any = 0;
    for (int j = 0; j < 4; j++) {
        const __m512i idx = _mm512_add_epi32(lane, _mm512_set1_epi32(16 * j));
        vm[j] = _mm512_cmpge_epi32_mask(idx, lov) & _mm512_cmple_epi32_mask(idx, hiv) & _mm512_cmplt_epi32_mask(idx, nbv);
        any |= vm[j];
        sv[j] = _mm512_load_ps(s + 16 * j);
        mx = _mm512_mask_max_ps(mx, vm[j], mx, sv[j]);
    }
    return any ? _mm512_reduce_max_ps(mx) : -INFINITY;
}

/* o[0 .. n) *= c */
CLV_X86_INL void clv_scale_f32(float *o, int n, float c) {
    const __m512 cv = _mm512_set1_ps(c);
    for (int d = 0; d < n; d += 16) {
        const __mmask16 m = n - d >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - d)) - 1);
        _mm512_mask_storeu_ps(o + d, m, _mm512_mul_ps(cv, _mm512_maskz_loadu_ps(m, o + d)));
    }
}

/* A row's online softmax after one more block (kernels_avx512.c,
 * kernels_amx.c): the running max *m becomes mnew (>= it), the output so far
 * and the running sum *l are rescaled to it, and the block's sum bsum
 * (relative to mnew) is added. */
CLV_X86_INL void clv_attn_row_advance(float *o, int hd, float *m, float *l, float mnew, __m512 bsum) {
    if (mnew > *m && *m != -INFINITY) {
        const float corr = expf(*m - mnew);
        *l *= corr;
        clv_scale_f32(o, hd, corr);
    }
    *m = mnew;
    *l += _mm512_reduce_add_ps(bsum);
}

#endif
