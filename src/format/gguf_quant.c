/* ggml's tensor storage formats: block geometry of every type a GGUF file may
 * hold, and dequantisation to float32 of the common ones.
 *
 * Each format is a sequence of blocks; a block of `block` values takes
 * `bytes` bytes and carries its own scale(s) as f16. Dequantising follows
 * ggml's reference (scalar) decoders value for value; every product of a
 * scale and a quant is exact in float32, so the result does not depend on
 * evaluation order. Bytes are read little-endian, one at a time: blocks are
 * not aligned in the file. */
#include <string.h>

#include "../util/util.h"
#include "gguf.h"

#define QK_K 256

static const struct { const char *name; uint32_t block, bytes; } k_types[CLV_GGML_TYPE_END] = {
    [CLV_GGML_F32] = {"F32", 1, 4},          [CLV_GGML_F16] = {"F16", 1, 2},
    [CLV_GGML_Q4_0] = {"Q4_0", 32, 18},      [CLV_GGML_Q4_1] = {"Q4_1", 32, 20},
    [CLV_GGML_Q5_0] = {"Q5_0", 32, 22},      [CLV_GGML_Q5_1] = {"Q5_1", 32, 24},
    [CLV_GGML_Q8_0] = {"Q8_0", 32, 34},      [CLV_GGML_Q2_K] = {"Q2_K", QK_K, 84},
    [CLV_GGML_Q3_K] = {"Q3_K", QK_K, 110},   [CLV_GGML_Q4_K] = {"Q4_K", QK_K, 144},
    [CLV_GGML_Q5_K] = {"Q5_K", QK_K, 176},   [CLV_GGML_Q6_K] = {"Q6_K", QK_K, 210},
    [CLV_GGML_Q8_K] = {"Q8_K", QK_K, 292},   [CLV_GGML_IQ2_XXS] = {"IQ2_XXS", QK_K, 66},
    [CLV_GGML_IQ2_XS] = {"IQ2_XS", QK_K, 74}, [CLV_GGML_IQ3_XXS] = {"IQ3_XXS", QK_K, 98},
    [CLV_GGML_IQ1_S] = {"IQ1_S", QK_K, 50},  [CLV_GGML_IQ4_NL] = {"IQ4_NL", 32, 18},
    [CLV_GGML_IQ3_S] = {"IQ3_S", QK_K, 110}, [CLV_GGML_IQ2_S] = {"IQ2_S", QK_K, 82},
    [CLV_GGML_IQ4_XS] = {"IQ4_XS", QK_K, 136}, [CLV_GGML_I8] = {"I8", 1, 1},
    [CLV_GGML_I16] = {"I16", 1, 2},          [CLV_GGML_I32] = {"I32", 1, 4},
    [CLV_GGML_I64] = {"I64", 1, 8},          [CLV_GGML_F64] = {"F64", 1, 8},
    [CLV_GGML_IQ1_M] = {"IQ1_M", QK_K, 56},  [CLV_GGML_BF16] = {"BF16", 1, 2},
    [CLV_GGML_TQ1_0] = {"TQ1_0", QK_K, 54},  [CLV_GGML_TQ2_0] = {"TQ2_0", QK_K, 66},
    [CLV_GGML_MXFP4] = {"MXFP4", 32, 17},
};

bool clv_ggml_type_info(uint32_t type, uint32_t *block, uint32_t *bytes) {
    if (type >= CLV_GGML_TYPE_END || !k_types[type].name) return false;
    *block = k_types[type].block;
    *bytes = k_types[type].bytes;
    return true;
}

const char *clv_ggml_type_name(uint32_t type) {
    return type < CLV_GGML_TYPE_END && k_types[type].name ? k_types[type].name : "?";
}

bool clv_ggml_can_dequant(uint32_t type) {
    switch (type) {
    case CLV_GGML_F32: case CLV_GGML_F16: case CLV_GGML_BF16: case CLV_GGML_F64:
    case CLV_GGML_Q4_0: case CLV_GGML_Q4_1: case CLV_GGML_Q5_0: case CLV_GGML_Q5_1: case CLV_GGML_Q8_0:
    case CLV_GGML_Q2_K: case CLV_GGML_Q3_K: case CLV_GGML_Q4_K: case CLV_GGML_Q5_K: case CLV_GGML_Q6_K:
        return true;
    default:
        return false;
    }
}

static inline uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline float h2f(const uint8_t *p) { return clv_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

/* ---- 32-value blocks ---------------------------------------------------------------- */

/* Q4_0: f16 d, 16 bytes of nibbles; value = (q - 8) * d. Low nibbles are the
 * first 16 values, high nibbles the last 16. */
static void dq_q4_0(const uint8_t *b, float *y) {
    const float d = h2f(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((qs[j] & 0x0f) - 8) * d;
        y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
    }
}

/* Q4_1: f16 d, f16 m, 16 bytes of nibbles; value = q * d + m. */
static void dq_q4_1(const uint8_t *b, float *y) {
    const float d = h2f(b), m = h2f(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(qs[j] & 0x0f) * d + m;
        y[j + 16] = (float)(qs[j] >> 4) * d + m;
    }
}

/* Q5_0: f16 d, 32 high bits (bit j of value j), 16 bytes of nibbles;
 * value = (q - 16) * d with q = nibble | high bit << 4. */
static void dq_q5_0(const uint8_t *b, float *y) {
    const float d = h2f(b);
    const uint32_t qh = le32(b + 2);
    const uint8_t *qs = b + 6;
    for (int j = 0; j < 16; j++) {
        int x0 = (qs[j] & 0x0f) | (int)(((qh >> j) & 1u) << 4);
        int x1 = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
        y[j] = (float)(x0 - 16) * d;
        y[j + 16] = (float)(x1 - 16) * d;
    }
}

/* Q5_1: f16 d, f16 m, 32 high bits, 16 bytes of nibbles; value = q * d + m. */
static void dq_q5_1(const uint8_t *b, float *y) {
    const float d = h2f(b), m = h2f(b + 2);
    const uint32_t qh = le32(b + 4);
    const uint8_t *qs = b + 8;
    for (int j = 0; j < 16; j++) {
        int x0 = (qs[j] & 0x0f) | (int)(((qh >> j) & 1u) << 4);
        int x1 = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
        y[j] = (float)x0 * d + m;
        y[j + 16] = (float)x1 * d + m;
    }
}

/* Q8_0: f16 d, 32 signed bytes; value = q * d. */
static void dq_q8_0(const uint8_t *b, float *y) {
    const float d = h2f(b);
    for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)b[2 + j] * d;
}

/* ---- 256-value "k-quant" super-blocks -------------------------------------------------- */

/* Q2_K: scales[16] (low nibble scale, high nibble min, per 16 values),
 * qs[64] (2-bit quants), f16 d, f16 dmin; value = d*sc*q - dmin*m. */
static void dq_q2_k(const uint8_t *b, float *y) {
    const uint8_t *sc = b, *q = b + 16;
    const float d = h2f(b + 80), dmin = h2f(b + 82);
    int is = 0;
    for (int n = 0; n < QK_K; n += 128) {
        for (int shift = 0; shift < 8; shift += 2) {
            for (int half = 0; half < 2; half++) {
                const uint8_t s = sc[is++];
                const float dl = d * (float)(s & 0x0f), ml = dmin * (float)(s >> 4);
                for (int l = 0; l < 16; l++) *y++ = dl * (float)((q[l + 16 * half] >> shift) & 3) - ml;
            }
        }
        q += 32;
    }
}

/* Q3_K: hmask[32] (third bit), qs[64] (low 2 bits), scales[12] (sixteen
 * 6-bit scales, biased by 32), f16 d; value = d*(sc-32)*(q - (hbit ? 0 : 4)). */
static void dq_q3_k(const uint8_t *b, float *y) {
    const uint8_t *hm = b, *q = b + 32, *s = b + 96;
    const float d_all = h2f(b + 108);
    int8_t scales[16];
    for (int j = 0; j < 16; j++) {
        /* low 4 bits: nibble j%8 of bytes 0..7; high 2 bits: 2-bit field j%4... of bytes 8..11 */
        int lo = j < 8 ? (s[j] & 0x0f) : (s[j - 8] >> 4);
        int hi = (s[8 + (j % 4)] >> (2 * (j / 4))) & 3;
        scales[j] = (int8_t)((lo | hi << 4) - 32);
    }
    uint8_t m = 1;
    int is = 0;
    for (int n = 0; n < QK_K; n += 128) {
        for (int shift = 0; shift < 8; shift += 2) {
            for (int half = 0; half < 2; half++) {
                const float dl = d_all * (float)scales[is++];
                for (int l = 0; l < 16; l++) {
                    int k = l + 16 * half;
                    int v = ((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4);
                    *y++ = dl * (float)v;
                }
            }
            m = (uint8_t)(m << 1);
        }
        q += 32;
    }
}

/* The 6-bit scale and min of sub-block j (0..7) packed in Q4_K/Q5_K's 12 bytes. */
static inline void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
        *mn = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Q4_K: f16 d, f16 dmin, scales[12], qs[128]; 8 sub-blocks of 32 values,
 * value = d*sc*q - dmin*m. Each 32 bytes of qs hold two sub-blocks (low
 * nibbles first). */
static void dq_q4_k(const uint8_t *b, float *y) {
    const float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t *scales = b + 4, *q = b + 16;
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, q += 32) {
        uint8_t sc, mn;
        scale_min_k4(is, scales, &sc, &mn);
        const float d1 = d * sc, m1 = dmin * mn;
        scale_min_k4(is + 1, scales, &sc, &mn);
        const float d2 = d * sc, m2 = dmin * mn;
        for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0x0f) - m1;
        for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
    }
}

/* Q5_K: Q4_K plus qh[32]: bit 2i / 2i+1 of qh[l] is the fifth bit of value l
 * of sub-block 2i / 2i+1. */
static void dq_q5_k(const uint8_t *b, float *y) {
    const float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *ql = b + 48;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, ql += 32) {
        uint8_t sc, mn;
        scale_min_k4(is, scales, &sc, &mn);
        const float d1 = d * sc, m1 = dmin * mn;
        scale_min_k4(is + 1, scales, &sc, &mn);
        const float d2 = d * sc, m2 = dmin * mn;
        for (int l = 0; l < 32; l++) *y++ = d1 * (float)((ql[l] & 0x0f) + ((qh[l] & u1) ? 16 : 0)) - m1;
        for (int l = 0; l < 32; l++) *y++ = d2 * (float)((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
        u1 = (uint8_t)(u1 << 2);
        u2 = (uint8_t)(u2 << 2);
    }
}

/* Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (int8, per 16
 * values), f16 d; value = d * sc * (q - 32). */
static void dq_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    const float d = h2f(b + 208);
    for (int n = 0; n < QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0x0f) | ((qh[l] >> 0) & 3) << 4) - 32;
            int q2 = ((ql[l + 32] & 0x0f) | ((qh[l] >> 2) & 3) << 4) - 32;
            int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
            int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
            y[l] = d * (float)sc[is] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
    }
}

bool clv_ggml_dequant(uint32_t type, const void *src, float *dst, int64_t n) {
    uint32_t blk, bytes;
    if (!clv_ggml_can_dequant(type) || !clv_ggml_type_info(type, &blk, &bytes) || n < 0 || n % blk) return false;
    const uint8_t *b = src;
    switch (type) {
    case CLV_GGML_F32:
        memcpy(dst, b, (size_t)n * 4);
        return true;
    case CLV_GGML_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = h2f(b + 2 * i);
        return true;
    case CLV_GGML_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = clv_bf16_to_f32((uint16_t)(b[2 * i] | b[2 * i + 1] << 8));
        return true;
    case CLV_GGML_F64:
        for (int64_t i = 0; i < n; i++) {
            union { uint64_t u; double f; } c = {.u = (uint64_t)le32(b + 8 * i) | (uint64_t)le32(b + 8 * i + 4) << 32};
            dst[i] = (float)c.f;
        }
        return true;
    default: break;
    }
    void (*fn)(const uint8_t *, float *) = NULL;
    switch (type) {
    case CLV_GGML_Q4_0: fn = dq_q4_0; break;
    case CLV_GGML_Q4_1: fn = dq_q4_1; break;
    case CLV_GGML_Q5_0: fn = dq_q5_0; break;
    case CLV_GGML_Q5_1: fn = dq_q5_1; break;
    case CLV_GGML_Q8_0: fn = dq_q8_0; break;
    case CLV_GGML_Q2_K: fn = dq_q2_k; break;
    case CLV_GGML_Q3_K: fn = dq_q3_k; break;
    case CLV_GGML_Q4_K: fn = dq_q4_k; break;
    case CLV_GGML_Q5_K: fn = dq_q5_k; break;
    case CLV_GGML_Q6_K: fn = dq_q6_k; break;
    default: return false;
    }
    for (int64_t i = 0; i < n / blk; i++) fn(b + (size_t)i * bytes, dst + (size_t)i * blk);
    return true;
}
