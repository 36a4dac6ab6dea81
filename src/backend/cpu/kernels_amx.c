/* Prefill on AMX tiles: C[T][N] = A[T][K] . W^T, W in bf16, A in f32.
 * int8 weights (--dtype int8) take the same path: |q| <= 127 is exact in
 * bf16, so they are widened while repacked and the products stay exact; the
 * row scales multiply C as the last k block stores it. f16 weights are split
 * while repacked into two bf16 values whose sum is exact, and both go through
 * the tiles (1.5x bf16's tile work split, 2x in one pass; pp512 on the 1.1B
 * model runs 3x faster than on the AVX-512 path it replaced). With
 * --prefill-precision bf16 a prompt's attention runs on the tiles as well
 * (clv_amx_attn_tile, at the end).
 *
 * Accuracy, two modes:
 *   - split (the default): bf16 keeps 8 significant bits, so rounding the
 *     activations to bf16 would cost up to 2^-8 relative error per product.
 *     Instead each activation is split into x = hi + lo with hi = bf16(x) and
 *     lo = bf16(x - hi); both halves go through the tiles against the same
 *     (exact) weights, with f32 accumulation, which leaves
 *     |x - hi - lo| <= 2^-16 |x|: ~1e-5 relative, the same order as f32
 *     accumulation over a few thousand terms.
 *   - one pass (--prefill-precision bf16): the activations are rounded to
 *     bf16 once, as torch's bf16 matmuls and llama.cpp's bf16 path do: half
 *     the tile work, up to 2^-8 relative error per product.
 *
 * Layouts (one tile = 16 rows x 64 bytes):
 *   A, packed by clv_amx_pack_a: [16-row block][32-k step][hi, lo][16][32]
 *      bf16 (one pass: [16-row block][32-k step][16][32], with the block
 *      count rounded up to even: the 2 x 2 kernel takes blocks in pairs)
 *   B, repacked per panel (split: 48 columns, one pass: 32) and 1024-k block
 *      (f16: 512) into the caller's work buffer: [32-k step][column tiles]
 *      [16 k pairs][16 columns][2] bf16 — the "VNNI" order tdpbf16ps wants,
 *      made by a 16x16 transpose of the rows' (k, k + 1) pairs; f16's lo
 *      tiles follow its hi tiles in each k step.
 *   C: the accumulator tiles (split: 16 tokens x 48 columns, one pass:
 *      32 x 32), kept in y between k blocks when the block is whole, else
 *      staged.
 * Zero padding makes every tile full: rows past T, columns past N and k past
 * K are zeros, and only the valid part of C is written out.
 *
 * Tiles, split: tmm0..2 = C, tmm3/4 = A hi/lo, tmm5..7 = B; per 32-k step
 * 5 tile loads, 6 tdpbf16ps (f16: 8 and 9). One pass: tmm0..3 = C, tmm4/5 =
 * A, tmm6/7 = B; 4 loads, 4 tdpbf16ps (f16: 6 and 8). The weights are
 * repacked on the fly: a few percent of the time at T = 512, most of it for
 * short prompts, which read the weights at about half of decode's bandwidth
 * (bench/README.md, "Weight repacking for the tiles").
 */
#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kernels.h"
#include "x86.h"

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define INL TGT static inline __attribute__((always_inline))

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* Our own wrappers: the compiler's tile intrinsics are asm statements that do
 * not tell it they read or write memory, so stores into a buffer a tile then
 * loads (or reads of a buffer a tile stored) could be moved across them. */
#define TILE_LOAD(t, base, stride) \
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(base), "r"((long)(stride)) : "memory")
#define TILE_STORE(t, base, stride) \
    __asm__ volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(base), "r"((long)(stride)) : "memory")
#define TILE_ZERO(t) __asm__ volatile("tilezero %%tmm" #t ::)
/* c += a . b (Intel operand order tdpbf16ps c, a, b) */
#define TILE_DP(c, a, b) __asm__ volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

/* GCC 12 declares _tile_loadconfig's operand as 8 bytes, so the compiler may
 * drop the stores that fill the other 56: hand it the whole 64. */
static void tile_config(void) {
    _Alignas(64) tilecfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 8; i++) {
        c.colsb[i] = 64;
        c.rows[i] = 16;
    }
    __asm__ volatile("ldtilecfg %0" ::"m"(*(const struct { char b[64]; } *)&c));
}
static void tile_release(void) { __asm__ volatile("tilerelease" ::); }

bool clv_amx_available(void) {
    static int state = -1;
    if (state >= 0) return state == 1;
    int ok = 0;
    unsigned a, b, c, d;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 22)) && (d & (1u << 24)) && /* AMX-BF16, AMX-TILE */
        __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5)) &&                       /* AVX512-BF16 */
        __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        ok = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0; /* once per process */
    state = ok;
    return ok;
}

static inline int ksteps_of(int K) { return (K + 31) / 32; }

int clv_amx_mblocks(int T, bool one) {
    const int mb = (T + 15) / 16;
    return one ? (mb + 1) & ~1 : mb;
}

size_t clv_amx_a_bytes(int T, int K, bool one) {
    return (size_t)clv_amx_mblocks(T, one) * ksteps_of(K) * (one ? 1024 : 2048);
}

int clv_amx_panel(bool one) { return one ? 32 : 48; }


static inline __mmask16 mask16(int n) { return n >= 16 ? (__mmask16)0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

/* 16 f32 -> bf16 hi and bf16 residual lo */
INL void split16(__m512 x, __m256i *hi, __m256i *lo) {
    __m256i h = (__m256i)_mm512_cvtneps_pbh(x);
    __m512 back = clv_bf16_widen(h);
    *hi = h;
    *lo = (__m256i)_mm512_cvtneps_pbh(_mm512_sub_ps(x, back));
}

TGT void clv_amx_pack_a(uint16_t *ap, const float *x, int T, int K, int mb0, int mb1, bool one) {
    const int ks_n = ksteps_of(K);
    for (int mb = mb0; mb < mb1; mb++)
        for (int ks = 0; ks < ks_n; ks++) {
            uint16_t *hi_t = ap + ((size_t)mb * ks_n + ks) * (one ? 512 : 1024), *lo_t = hi_t + 512;
            const int k = ks * 32, kr = K - k;
            for (int i = 0; i < 16; i++) {
                const int t = mb * 16 + i;
                __m256i h0, l0, h1, l1;
                if (t < T) {
                    const float *xr = x + (size_t)t * K + k;
                    split16(_mm512_maskz_loadu_ps(mask16(kr), xr), &h0, &l0);
                    split16(_mm512_maskz_loadu_ps(mask16(kr - 16), xr + 16), &h1, &l1);
                } else {
                    h0 = l0 = h1 = l1 = _mm256_setzero_si256();
                }
                _mm512_store_si512((__m512i *)(hi_t + i * 32), _mm512_inserti64x4(_mm512_castsi256_si512(h0), h1, 1));
                if (!one)
                    _mm512_store_si512((__m512i *)(lo_t + i * 32), _mm512_inserti64x4(_mm512_castsi256_si512(l0), l1, 1));
            }
        }
}

/* Columns per panel (split: 3 tiles, one pass: 2), panels per group (a
 * group is 384 columns either way), k steps (of 32) per block (f16: half as
 * many, its weights taking two tiles each, so that a block's repacked
 * weights stay at 768 KiB). */
#define NP 48
#define GP 8
#define NP1 32
#define GP1 12
#define KCS 32

/* Weights as bf16 tiles. bf16 and int8 (|q| <= 127) are exact in one bf16;
 * an f16 value w is exactly hi + lo with hi = bf16(w) and lo = bf16(w - hi)
 * (w has 11 significant bits, hi takes 8, the rest fit lo; bf16's exponent
 * range covers f16's), so f16 weights take two tiles and two products. */
INL __m512i ld32_bf16(const void *w, size_t off, __mmask32 km, __m512i *lo) {
    (void)lo;
    return _mm512_maskz_loadu_epi16(km, (const uint16_t *)w + off);
}
INL __m512i ld32_i8(const void *w, size_t off, __mmask32 km, __m512i *lo) {
    (void)lo;
    const int8_t *p = (const int8_t *)w + off;
    const __m512 a = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8((__mmask16)km, p)));
    const __m512 b = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8((__mmask16)(km >> 16), p + 16)));
    return (__m512i)_mm512_cvtne2ps_pbh(b, a); /* exact: |q| <= 127 */
}
INL __m512i ld32_f16(const void *w, size_t off, __mmask32 km, __m512i *lo) {
    const uint16_t *p = (const uint16_t *)w + off;
    const __m512 a = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16((__mmask16)km, p));
    const __m512 b = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16((__mmask16)(km >> 16), p + 16));
    const __m512i hi = (__m512i)_mm512_cvtne2ps_pbh(b, a);
    const __m512 ha = clv_bf16_widen(_mm512_castsi512_si256(hi)), hb = clv_bf16_widen(_mm512_extracti64x4_epi64(hi, 1));
    *lo = (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(b, hb), _mm512_sub_ps(a, ha)); /* exact */
    return hi;
}

/* One VNNI tile from 16 whole rows of 32 16-bit elements (row j at w + j * K):
 * dst row kp = dword kp (k pair kp) of rows 0..15 (clv_transpose16_rows). */
INL void repack_tile16(uint16_t *dst, const uint16_t *w, size_t K) {
    __m512i r[16];
    clv_transpose16_rows(r, w, 2 * K);
#pragma GCC unroll 16
    for (int kp = 0; kp < 16; kp++) _mm512_store_si512((__m512i *)(dst + kp * 32), r[kp]);
}

/* The same from 16 whole int8 rows of 32 (row j at w + j * K): the rows'
 * 16-bit pairs (k, k + 1) are transposed as clv_transpose16_rows does, in 16-byte chunks of 8
 * pairs (two per row), then each tile row's 32 int8 are widened to bf16 in
 * place (exact: |q| <= 127), which keeps their order. After the 16- and
 * 32-bit unpacks, lane L of u holds pair p of rows 4L..4L+3 in its low
 * 64 bits and pair p + 1 in its high 64; one qword permute puts pair p of
 * all 16 rows in the low 256 bits and pair p + 1 in the high. */
INL void repack_tile_i8(uint16_t *dst, const int8_t *w, size_t K) {
    _Alignas(64) int8_t tp[16][32]; /* [pair][row][2] */
    const __m512i idx = _mm512_set_epi64(7, 5, 3, 1, 6, 4, 2, 0);
#pragma GCC unroll 2
    for (int c = 0; c < 2; c++) {
        __m512i a[4];
#pragma GCC unroll 4
        for (int q = 0; q < 4; q++) a[q] = clv_load_rows4(w + (size_t)q * K + 16 * c, 4 * K);
        const __m512i t0 = _mm512_unpacklo_epi16(a[0], a[1]), t1 = _mm512_unpackhi_epi16(a[0], a[1]);
        const __m512i t2 = _mm512_unpacklo_epi16(a[2], a[3]), t3 = _mm512_unpackhi_epi16(a[2], a[3]);
        const __m512i u[4] = {_mm512_unpacklo_epi32(t0, t2), _mm512_unpackhi_epi32(t0, t2), _mm512_unpacklo_epi32(t1, t3),
                              _mm512_unpackhi_epi32(t1, t3)};
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) _mm512_store_si512((__m512i *)tp[8 * c + 2 * i], _mm512_permutexvar_epi64(idx, u[i]));
    }
#pragma GCC unroll 16
    for (int kp = 0; kp < 16; kp++) _mm512_store_si512((__m512i *)(dst + kp * 32), ld32_i8(tp[kp], 0, ~(__mmask32)0, NULL));
}

/* Weight rows n .. n+nc-1 (nc <= 16 nt), k steps ks0 .. ks0+kcs-1, into the
 * VNNI tile order: [k step][nt column tiles][16 k pairs][16 columns][2], and
 * for f16 (two) the lo tiles after the hi ones in each k step. One column
 * tile's 16 rows at a time, along k (16 streams: ~5% faster than walking all
 * nt tiles' rows per k step). Whole tiles take a shorter path (FAST): 1, of
 * 16-bit weights (bf16, f16) by repack_tile16, f16 converted after it
 * (elementwise, so the order holds); 2, of int8 by repack_tile_i8. */
#define DEFINE_REPACK(NAME, LD32, TWO, FAST)                                                           \
    TGT static void NAME(uint16_t *bp, const void *w, int K, int n, int nc, int ks0, int kcs, int nt) { \
        for (int jt = 0; jt < nt; jt++)                                                                \
            for (int ks = ks0; ks < ks0 + kcs; ks++) {                                                 \
                const int k = ks * 32;                                                                 \
                const __mmask32 km = K - k >= 32 ? ~(__mmask32)0 : (__mmask32)((1u << (K - k)) - 1);   \
                uint16_t *dst = bp + ((size_t)(ks - ks0) * (TWO ? 2 : 1) * nt + jt) * 512;             \
                if (FAST && K - k >= 32 && nc >= jt * 16 + 16) {                                       \
                    const size_t off = (size_t)(n + jt * 16) * K + k;                                  \
                    if (FAST == 2) repack_tile_i8(dst, (const int8_t *)w + off, (size_t)K);            \
                    else repack_tile16(dst, (const uint16_t *)w + off, (size_t)K);                     \
                    if (TWO) /* f16 pairs moved as they are; now each becomes hi and lo in place */     \
                        for (int kp = 0; kp < 16; kp++) {                                              \
                            __m512i lo;                                                                \
                            const __m512i hi = LD32(dst, (size_t)kp * 32, ~(__mmask32)0, &lo);         \
                            _mm512_store_si512((__m512i *)(dst + kp * 32), hi);                        \
                            _mm512_store_si512((__m512i *)(dst + (size_t)nt * 512 + kp * 32), lo);     \
                        }                                                                              \
                    continue;                                                                          \
                }                                                                                      \
                __m512i r[16], l[16];                                                                  \
                for (int j = 0; j < 16; j++) {                                                         \
                    const int col = jt * 16 + j;                                                       \
                    l[j] = _mm512_setzero_si512();                                                     \
                    r[j] = col < nc ? LD32(w, (size_t)(n + col) * K + k, km, &l[j]) : _mm512_setzero_si512(); \
                }                                                                                      \
                clv_transpose16(r); /* r[kp] = dword kp (k pair) of the 16 columns */                  \
                for (int kp = 0; kp < 16; kp++) _mm512_store_si512((__m512i *)(dst + kp * 32), r[kp]);   \
                if (TWO) {                                                                             \
                    clv_transpose16(l);                                                                \
                    for (int kp = 0; kp < 16; kp++)                                                    \
                        _mm512_store_si512((__m512i *)(dst + (size_t)nt * 512 + kp * 32), l[kp]);      \
                }                                                                                      \
            }                                                                                          \
    }
DEFINE_REPACK(repack_bf16, ld32_bf16, 0, 1)
DEFINE_REPACK(repack_i8, ld32_i8, 0, 2)
DEFINE_REPACK(repack_f16, ld32_f16, 1, 1)

TGT static void repack(clv_dtype dt, uint16_t *bp, const void *w, int K, int n, int nc, int ks0, int kcs, int nt) {
    (dt == CLV_DT_I8 ? repack_i8 : dt == CLV_DT_F16 ? repack_f16 : repack_bf16)(bp, w, K, n, nc, ks0, kcs, nt);
}

/* C tiles 0..2 (16 tokens x 48 columns) = A . B over kcs k steps.
 * Why 1 x 3 and not the usual 2 x 2: with hi and lo the 2 x 2 shape needs 6
 * tile loads per 8 products and reloads the A registers while the products
 * that read them are in flight; 1 x 3 loads 5 tiles per 6 products into 5
 * distinct registers, and measured at ~98% of the tile unit's peak with
 * operands in L1 against ~75% for 2 x 2 ("Kernel labs" in bench/README.md).
 * With lo weights (f16) the B registers are loaded again with them and
 * multiplied by A's hi half (A lo x W lo, up to 2^-16 relative, is left out). */
INL void block_1x3(const uint16_t *a, const uint16_t *b, int kcs, const float *cin, long ldy, bool wlo) {
    if (cin) {
        TILE_LOAD(0, cin, ldy * 4);
        TILE_LOAD(1, cin + 16, ldy * 4);
        TILE_LOAD(2, cin + 32, ldy * 4);
    } else {
        TILE_ZERO(0);
        TILE_ZERO(1);
        TILE_ZERO(2);
    }
    for (int ks = 0; ks < kcs; ks++) {
        const uint16_t *bk = b + (size_t)ks * (wlo ? 3072 : 1536), *ak = a + (size_t)ks * 1024;
        TILE_LOAD(3, ak, 64);
        TILE_LOAD(5, bk, 64);
        TILE_LOAD(6, bk + 512, 64);
        TILE_LOAD(7, bk + 1024, 64);
        TILE_LOAD(4, ak + 512, 64);
        TILE_DP(0, 3, 5);
        TILE_DP(1, 3, 6);
        TILE_DP(2, 3, 7);
        TILE_DP(0, 4, 5);
        TILE_DP(1, 4, 6);
        TILE_DP(2, 4, 7);
        if (wlo) {
            TILE_LOAD(5, bk + 1536, 64);
            TILE_LOAD(6, bk + 2048, 64);
            TILE_LOAD(7, bk + 2560, 64);
            TILE_DP(0, 3, 5);
            TILE_DP(1, 3, 6);
            TILE_DP(2, 3, 7);
        }
    }
}

/* Blocking: a group of 384 columns (GP panels of 48, one pass GP1 of 32) and
 * a block of KCS k steps (f16: KCS / 2) of its weights are repacked together
 * (768 KiB, L2); every token block (16 rows, one pass 32) of A's matching
 * slice then runs against each panel of the group from L1/L2, and partial
 * sums over k blocks are added into y. Weights are read from memory once. */
size_t clv_amx_work_bytes(int K) {
    (void)K; /* both modes: GP x 3 = GP1 x 2 tiles per k step, and C staging of 32 x 32 >= 16 x 48 floats */
    return (size_t)GP * KCS * 3 * 1024 + 32 * NP1 * sizeof(float);
}

/* Scales (int8, on the last k block) and partial sums from earlier k blocks
 * for rows 0..rows-1 of a C block staged at c (ldc floats per row), nt tiles
 * wide, into y0 (ldy), columns past nc masked off. With add false, c is y0
 * itself (a whole block, stored by the tiles) and only the scales apply. */
INL void store_c(float *y0, long ldy, const float *c, long ldc, int rows, int nc, int nt, bool add, const float *scale) {
    __mmask16 m[3];
    __m512 s[3];
    for (int j = 0; j < nt; j++) {
        m[j] = mask16(nc - 16 * j);
        s[j] = scale ? _mm512_maskz_loadu_ps(m[j], scale + 16 * j) : _mm512_set1_ps(1.0f);
    }
    for (int i = 0; i < rows; i++) {
        float *yr = y0 + (size_t)i * ldy;
        for (int j = 0; j < nt; j++) {
            __m512 v = _mm512_loadu_ps(c + (size_t)i * ldc + 16 * j);
            if (add) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m[j], yr + 16 * j));
            _mm512_mask_storeu_ps(yr + 16 * j, m[j], _mm512_mul_ps(v, s[j]));
        }
    }
}

/* One pass: C tiles 0..3 (32 tokens x 32 columns: 0 1 / 2 3) = A . B over
 * kcs k steps; a0/a1 are the two 16-token blocks. 2 x 2 is the shape that
 * loads fewest tiles per product (4 per 4) when there is no lo half to share
 * the B tiles with; 1 x 3 would load 4 per 3. f16's lo weight tiles are
 * loaded into the B registers after the hi ones. */
INL void block_2x2(const uint16_t *a0, const uint16_t *a1, const uint16_t *b, int kcs, const float *cin, long ldy,
                   bool wlo) {
    if (cin) {
        TILE_LOAD(0, cin, ldy * 4);
        TILE_LOAD(1, cin + 16, ldy * 4);
        TILE_LOAD(2, cin + 16 * ldy, ldy * 4);
        TILE_LOAD(3, cin + 16 * ldy + 16, ldy * 4);
    } else {
        TILE_ZERO(0);
        TILE_ZERO(1);
        TILE_ZERO(2);
        TILE_ZERO(3);
    }
    for (int ks = 0; ks < kcs; ks++) {
        const uint16_t *bk = b + (size_t)ks * (wlo ? 2048 : 1024);
        TILE_LOAD(4, a0 + (size_t)ks * 512, 64);
        TILE_LOAD(6, bk, 64);
        TILE_LOAD(5, a1 + (size_t)ks * 512, 64);
        TILE_LOAD(7, bk + 512, 64);
        TILE_DP(0, 4, 6);
        TILE_DP(1, 4, 7);
        TILE_DP(2, 5, 6);
        TILE_DP(3, 5, 7);
        if (wlo) {
            TILE_LOAD(6, bk + 1024, 64);
            TILE_LOAD(7, bk + 1536, 64);
            TILE_DP(0, 4, 6);
            TILE_DP(1, 4, 7);
            TILE_DP(2, 5, 6);
            TILE_DP(3, 5, 7);
        }
    }
}

/* Both modes, one loop: panels of nt column tiles (split 3, one pass 2),
 * token blocks of rb rows (16, one pass 32), blocked as clv_amx_work_bytes
 * describes. */
TGT void clv_amx_gemm(float *y, int ldy, const uint16_t *ap, const void *w, clv_dtype dt, const float *scale, int T, int K,
                      int n0, int n1, void *work, bool one) {
    const int ks_n = ksteps_of(K), mb_n = clv_amx_mblocks(T, one);
    const bool wlo = dt == CLV_DT_F16;
    const int nt = one ? 2 : 3, pw = 16 * nt, gw = pw * (one ? GP1 : GP), rb = one ? 32 : 16;
    const int kmax = wlo ? KCS / 2 : KCS;                     /* k steps per block */
    const size_t bstep = (size_t)nt * 512 * (wlo ? 2 : 1);   /* B elements per k step and panel */
    const size_t astep = one ? 512 : 1024;                    /* A elements per k step and 16-row block */
    uint16_t *bp = work;
    float *ct = (float *)(bp + (size_t)GP * KCS * 1536); /* C staging: [16][48] or [32][32] */
    tile_config();
    for (int g0 = n0; g0 < n1; g0 += gw) {
        const int g1 = g0 + gw < n1 ? g0 + gw : n1, np = (g1 - g0 + pw - 1) / pw;
        for (int ks0 = 0; ks0 < ks_n; ks0 += kmax) {
            const int kcs = ks_n - ks0 < kmax ? ks_n - ks0 : kmax;
            const bool scaled = scale && ks0 + kcs == ks_n; /* int8 rows' scales go on with the last k block */
            for (int p = 0; p < np; p++) {
                const int n = g0 + p * pw;
                repack(dt, bp + (size_t)p * kmax * bstep, w, K, n, g1 - n < pw ? g1 - n : pw, ks0, kcs, nt);
            }
            for (int mb = 0; mb < mb_n; mb += rb / 16) {
                const uint16_t *a = ap + ((size_t)mb * ks_n + ks0) * astep;
                const int rows = T - mb * 16 < rb ? T - mb * 16 : rb;
                for (int p = 0; p < np; p++) {
                    const int n = g0 + p * pw, nc = g1 - n < pw ? g1 - n : pw;
                    const uint16_t *b = bp + (size_t)p * kmax * bstep;
                    float *y0 = y + (size_t)mb * 16 * ldy + n;
                    const bool whole = rows == rb && nc == pw; /* C lives in y */
                    const float *cin = whole && ks0 ? y0 : NULL;
                    float *c = whole ? y0 : ct;
                    const long ldc = whole ? ldy : pw;
                    if (one) {
                        const uint16_t *a1 = a + (size_t)ks_n * 512; /* the pair's second block */
                        if (wlo) block_2x2(a, a1, b, kcs, cin, ldy, true);
                        else block_2x2(a, a1, b, kcs, cin, ldy, false);
                        TILE_STORE(0, c, ldc * 4);
                        TILE_STORE(1, c + 16, ldc * 4);
                        TILE_STORE(2, c + 16 * ldc, ldc * 4);
                        TILE_STORE(3, c + 16 * ldc + 16, ldc * 4);
                    } else {
                        if (wlo) block_1x3(a, b, kcs, cin, ldy, true);
                        else block_1x3(a, b, kcs, cin, ldy, false);
                        TILE_STORE(0, c, ldc * 4);
                        TILE_STORE(1, c + 16, ldc * 4);
                        TILE_STORE(2, c + 32, ldc * 4);
                    }
                    if (!whole || scaled) store_c(y0, ldy, c, ldc, rows, nc, nt, !whole && ks0, scaled ? scale + n : NULL);
                }
            }
        }
    }
    tile_release();
}

/* ---- attention on the tiles (--prefill-precision bf16) -------------------------------
 * One clv_attn_tile as the AVX-512 kernel computes it (64-key blocks, online
 * softmax in f32), with both products on the tiles: S = Q K^T with Q rounded
 * to bf16, and O += P V with P rounded to bf16; an f32 cache is rounded to
 * bf16 as it is repacked, a bf16 cache is used as stored. Each row's sum l
 * adds the rounded P, so the output is an exact average of the values with
 * weights within 2^-8 relative of softmax(bf16(q) . k) (tests/unit/test_kernels).
 *
 * Work (clv_amx_attn_work_bytes), every part whole tiles:
 *   qA [row blocks][hd / 32][16][32]  Q, rounded (rows past R, dims past hd 0)
 *   kB [4][hd / 32][16 d pairs][16 keys][2]  one key block, VNNI order: a
 *      cache block's rows d and d + 1 are adjacent, so one 64-byte load and
 *      one word permute make a tile row
 *   pA [row blocks][2][16][32]  P, 32 keys per tile
 *   vB [2][hd / 16][16 key pairs][16 columns][2]  the block's values, VNNI
 *   S [row blocks][16][64] scores, C [16][64] one row block's P V, m, l
 * Tiles: tmm0..3 = C (64 keys or 64 columns), tmm4 = A, tmm5..7 = B. A
 * whole 16-row block adds P V to o in the tiles (loaded from o, stored back);
 * a partial one goes through C. On the 1.1B model's shapes (32 / 4 heads, hd
 * 64, bf16 cache, 2 threads) a prompt's attention takes about half the AVX-512
 * kernel's time (gemm_lab: T = 512 4.7 against 9.2 ms, T = 2048 52 against
 * 109 ms); the softmax between the two products is most of what is left. */

/* 32 bf16: elements (i, 16 + i) side by side, the pair order of a VNNI tile row */
INL __m512i pair16(__m512i x) {
    const __m512i ilv = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(ilv, x);
}

/* two rows of 16 elements (a's first n of them, b's first nb; the rest 0) as 32 bf16, a then b */
INL __m512i rows2_bf16(const uint16_t *a, const uint16_t *b, __mmask16 ma, __mmask16 mb) {
    __m512i x = _mm512_castsi256_si512(_mm256_maskz_loadu_epi16(ma, a));
    return _mm512_inserti64x4(x, _mm256_maskz_loadu_epi16(mb, b), 1);
}
INL __m512i rows2_f32(const float *a, const float *b, __mmask16 ma, __mmask16 mb) {
    return (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(mb, b), _mm512_maskz_loadu_ps(ma, a));
}

TGT void clv_amx_attn_tile(const clv_attn_tile *a) {
    const int R = a->R, hd = a->hd, RB = (R + 15) / 16, DS = (hd + 31) / 32, CB = (hd + 15) / 16;
    const bool bf16 = a->kv_dt == CLV_DT_BF16;
    uint16_t *qA = (uint16_t *)a->work, *kB = qA + (size_t)RB * DS * 512, *pA = kB + (size_t)4 * DS * 512;
    uint16_t *vB = pA + (size_t)RB * 2 * 512;
    float *S = (float *)(vB + (size_t)2 * CB * 512), *C = S + (size_t)RB * 16 * 64, *mrow = C + 16 * 64,
          *lrow = mrow + RB * 16;
    memset(qA, 0, (size_t)RB * DS * 1024);
    memset(pA, 0, (size_t)RB * 2 * 1024);
    for (int r = 0; r < R; r++)
        for (int d = 0; d < hd; d += 16) {
            __m256i h = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask16(hd - d), a->q + (size_t)r * hd + d));
            _mm256_storeu_si256((__m256i *)(qA + (((size_t)(r / 16) * DS + d / 32) * 16 + r % 16) * 32 + d % 32), h);
        }
    int jlo, jhi;
    clv_attn_tile_begin(a, mrow, lrow, &jlo, &jhi);
    tile_config();
    for (int j0 = jlo & ~(CLV_KBLOCK - 1); j0 <= jhi; j0 += CLV_ATTN_BK) {
        const int nb = jhi + 1 - j0 < CLV_ATTN_BK ? jhi + 1 - j0 : CLV_ATTN_BK, nsb = (nb + CLV_KBLOCK - 1) / CLV_KBLOCK;
        int ra = 0;
        while (ra < R && a->hi[ra] < j0) ra++;
        if (ra == R) break;
        const int rb0 = ra / 16;
        /* keys: the cache's blocks of 16 (whole blocks: keys past nb are masked below), zero past hd and nsb */
        for (int kb = 0; kb < 4; kb++) {
            uint16_t *dst = kB + (size_t)kb * DS * 512;
            int d = 0;
            if (kb < nsb) {
                const size_t at = clv_kcache_at(j0 + CLV_KBLOCK * kb, 0, hd);
                for (; d < hd; d += 2) {
                    const __mmask16 m1 = d + 1 < hd ? 0xffff : 0;
                    const __m512i x = bf16 ? rows2_bf16((const uint16_t *)a->k + at + (size_t)d * 16,
                                                        (const uint16_t *)a->k + at + (size_t)(d + 1) * 16, 0xffff, m1)
                                           : rows2_f32((const float *)a->k + at + (size_t)d * 16,
                                                       (const float *)a->k + at + (size_t)(d + 1) * 16, 0xffff, m1);
                    _mm512_store_si512(dst + ((size_t)(d / 32) * 16 + (d % 32) / 2) * 32, pair16(x));
                }
            }
            for (; d < DS * 32; d += 2) _mm512_store_si512(dst + ((size_t)(d / 32) * 16 + (d % 32) / 2) * 32, _mm512_setzero_si512());
        }
        for (int rb = rb0; rb < RB; rb++) {
            TILE_ZERO(0);
            TILE_ZERO(1);
            TILE_ZERO(2);
            TILE_ZERO(3);
            for (int ds = 0; ds < DS; ds++) {
                TILE_LOAD(4, qA + ((size_t)rb * DS + ds) * 512, 64);
                TILE_LOAD(5, kB + (size_t)(0 * DS + ds) * 512, 64);
                TILE_DP(0, 4, 5);
                TILE_LOAD(6, kB + (size_t)(1 * DS + ds) * 512, 64);
                TILE_DP(1, 4, 6);
                TILE_LOAD(7, kB + (size_t)(2 * DS + ds) * 512, 64);
                TILE_DP(2, 4, 7);
                TILE_LOAD(5, kB + (size_t)(3 * DS + ds) * 512, 64);
                TILE_DP(3, 4, 5);
            }
            float *s = S + (size_t)rb * 16 * 64;
            TILE_STORE(0, s, 256);
            TILE_STORE(1, s + 16, 256);
            TILE_STORE(2, s + 32, 256);
            TILE_STORE(3, s + 48, 256);
        }
        /* mask, online softmax; P (rounded) into pA, zero for keys a row does not see */
        int j_lo = nb; /* the first key any row sees: values below it are zeros in vB */
        for (int r = rb0 * 16; r < R; r++) { /* from the first row block that sees a key (rows before ra: P = 0) */
            const float *s = S + (size_t)r * 64;
            uint16_t *prow = pA + ((size_t)(r / 16) * 2 * 16 + r % 16) * 32;
            __mmask16 vm[4];
            __m512 sv[4];
            const float bmax = clv_attn_block_row(s, a->lo[r] - j0, a->hi[r] - j0, nb, vm, sv), mold = mrow[r];
            if (!(vm[0] | vm[1] | vm[2] | vm[3])) {
                memset(prow, 0, 64);
                memset(prow + 512, 0, 64);
                continue;
            }
            if (a->lo[r] - j0 < j_lo) j_lo = a->lo[r] - j0 > 0 ? a->lo[r] - j0 : 0;
            const float mnew = bmax > mold ? bmax : mold;
            const __m512 mv = _mm512_set1_ps(mnew);
            __m512 sum = _mm512_setzero_ps();
            for (int j = 0; j < 4; j += 2) {
                const __m512 p0 = _mm512_maskz_mov_ps(vm[j], clv_exp512(_mm512_sub_ps(sv[j], mv)));
                const __m512 p1 = _mm512_maskz_mov_ps(vm[j + 1], clv_exp512(_mm512_sub_ps(sv[j + 1], mv)));
                const __m512i pb = (__m512i)_mm512_cvtne2ps_pbh(p1, p0);
                sum = _mm512_add_ps(sum, _mm512_add_ps(clv_bf16_widen(_mm512_castsi512_si256(pb)),
                                                       clv_bf16_widen(_mm512_extracti64x4_epi64(pb, 1))));
                _mm512_store_si512(prow + (size_t)(j / 2) * 512, pb);
            }
            clv_attn_row_advance(a->o + (size_t)r * hd, hd, &mrow[r], &lrow[r], mnew, sum);
        }
        /* values j_lo .. nb - 1 of the block, the rest zeros */
        for (int ks = 0; ks < 2; ks++)
            for (int i = 0; i < 16; i++) {
                const int k0 = ks * 32 + 2 * i;
                const bool in0 = k0 >= j_lo && k0 < nb, in1 = k0 + 1 >= j_lo && k0 + 1 < nb;
                for (int c = 0; c < CB; c++) {
                    const __mmask16 cm = mask16(hd - 16 * c), m0 = in0 ? cm : 0, m1 = in1 ? cm : 0;
                    const size_t at0 = (size_t)(j0 + k0) * hd + 16 * c, at1 = at0 + (size_t)hd;
                    __m512i x = _mm512_setzero_si512();
                    if (m0 | m1)
                        x = bf16 ? rows2_bf16((const uint16_t *)a->v + at0, (const uint16_t *)a->v + at1, m0, m1)
                                 : rows2_f32((const float *)a->v + at0, (const float *)a->v + at1, m0, m1);
                    _mm512_store_si512(vB + ((size_t)(ks * CB + c) * 16 + i) * 32, pair16(x));
                }
            }
        for (int rb = rb0; rb < RB; rb++)
            for (int c0 = 0; c0 < CB; c0 += 4) {
                const int nc = CB - c0 < 4 ? CB - c0 : 4;
                /* a whole row block accumulates in o itself (tiles loaded from it and stored
                 * back); else through C, added row by row (rows before ra: P = 0, C = 0) */
                float *o = a->o + (size_t)rb * 16 * hd + 16 * c0;
                const bool direct = rb * 16 + 16 <= R && hd % 16 == 0;
                const long ld = direct ? hd * 4 : 256;
                float *c = direct ? o : C;
                if (direct) {
                    TILE_LOAD(0, c, ld);
                    if (nc > 1) TILE_LOAD(1, c + 16, ld);
                    if (nc > 2) TILE_LOAD(2, c + 32, ld);
                    if (nc > 3) TILE_LOAD(3, c + 48, ld);
                } else {
                    TILE_ZERO(0);
                    TILE_ZERO(1);
                    TILE_ZERO(2);
                    TILE_ZERO(3);
                }
                for (int ks = 0; ks < 2; ks++) {
                    const uint16_t *vb = vB + (size_t)(ks * CB + c0) * 512;
                    TILE_LOAD(4, pA + ((size_t)rb * 2 + ks) * 512, 64);
                    TILE_LOAD(5, vb, 64);
                    TILE_DP(0, 4, 5);
                    if (nc > 1) {
                        TILE_LOAD(6, vb + 512, 64);
                        TILE_DP(1, 4, 6);
                    }
                    if (nc > 2) {
                        TILE_LOAD(7, vb + 1024, 64);
                        TILE_DP(2, 4, 7);
                    }
                    if (nc > 3) {
                        TILE_LOAD(5, vb + 1536, 64);
                        TILE_DP(3, 4, 5);
                    }
                }
                TILE_STORE(0, c, ld);
                if (nc > 1) TILE_STORE(1, c + 16, ld);
                if (nc > 2) TILE_STORE(2, c + 32, ld);
                if (nc > 3) TILE_STORE(3, c + 48, ld);
                if (!direct)
                    for (int i = 0; i < 16 && rb * 16 + i < R; i++)
                        for (int t = 0; t < nc; t++) {
                            const __mmask16 dm = mask16(hd - 16 * (c0 + t));
                            float *oi = o + (size_t)i * hd + 16 * t;
                            _mm512_mask_storeu_ps(oi, dm, _mm512_add_ps(_mm512_maskz_loadu_ps(dm, oi), _mm512_load_ps(C + i * 64 + 16 * t)));
                        }
            }
    }
    tile_release();
    for (int r = 0; r < R; r++) {
        if (a->m) a->m[r] = mrow[r], a->l[r] = lrow[r];
        clv_scale_f32(a->o + (size_t)r * hd, hd, 1.0f / lrow[r]);
    }
}
