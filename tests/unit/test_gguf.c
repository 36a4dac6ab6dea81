/* GGUF: the reader (every metadata type, tensor infos, alignment), every
 * dequantiser against a block worked out by hand, a malformed file for each
 * header field, and the import into a Hugging Face folder (every supported
 * architecture round-trips exactly; tokenizer.json; failures leave nothing). */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "format/gguf.h"
#include "format/safetensors.h"
#include "model/config.h"
#include "model/gguf_import.h"
#include "model/synth.h"
#include "util/util.h"

static char g_root[] = "/tmp/clv_gguf_XXXXXX";

/* ---- small helpers ------------------------------------------------------------------- */

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }

/* f16 bit patterns used below */
#define H_ONE 0x3C00   /* 1.0 */
#define H_HALF 0x3800  /* 0.5 */
#define H_QUART 0x3400 /* 0.25 */
#define H_TWO 0x4000   /* 2.0 */
#define H_M1 0xBC00    /* -1.0 */
#define H_1_5 0x3E00   /* 1.5 */

static int check_values(const char *what, const float *got, const float *want, int n) {
    int bad = 0;
    for (int i = 0; i < n; i++)
        if (!(got[i] == want[i] || (isnan(got[i]) && isnan(want[i])))) {
            if (bad++ < 4) fprintf(stderr, "  %s[%d]: got %g, want %g\n", what, i, got[i], want[i]);
        }
    CHECK(bad == 0, "%s: %d of %d values differ", what, bad, n);
    return bad;
}

static void dq(uint32_t type, const uint8_t *blk, float *out, int n) {
    CHECK(clv_ggml_dequant(type, blk, out, n), "dequant %s", clv_ggml_type_name(type));
}

/* ---- dequantisation, one hand-made block per type ------------------------------------------ */

static void test_dequant_plain(void) {
    uint8_t b[16];
    float y[8], w[8];
    float f32s[2] = {1.5f, -0.125f};
    memcpy(b, f32s, 8);
    dq(CLV_GGML_F32, b, y, 2);
    check_values("F32", y, f32s, 2);
    /* f16: 1, -2, 1/3 rounded (0x3555 = 0.333251953125), smallest subnormal 2^-24, +inf */
    uint16_t h[5] = {0x3C00, 0xC000, 0x3555, 0x0001, 0x7C00};
    for (int i = 0; i < 5; i++) put16(b + 2 * i, h[i]);
    dq(CLV_GGML_F16, b, y, 5);
    float hw[5] = {1.0f, -2.0f, 0.333251953125f, 5.9604644775390625e-08f, INFINITY};
    check_values("F16", y, hw, 5);
    /* bf16: the top 16 bits of a float32 */
    uint16_t bf[3] = {0x3F80, 0xC040, 0x4049};
    for (int i = 0; i < 3; i++) put16(b + 2 * i, bf[i]);
    dq(CLV_GGML_BF16, b, y, 3);
    float bw[3] = {1.0f, -3.0f, 3.140625f};
    check_values("BF16", y, bw, 3);
    double d2[2] = {0.1, -4.0};
    memcpy(b, d2, 16);
    dq(CLV_GGML_F64, b, y, 2);
    w[0] = (float)0.1, w[1] = -4.0f;
    check_values("F64", y, w, 2);
    CHECK(!clv_ggml_dequant(CLV_GGML_Q4_0, b, y, 31), "Q4_0 with 31 values must be refused (not a whole block)");
    CHECK(!clv_ggml_dequant(CLV_GGML_IQ2_XXS, b, y, 256), "IQ2_XXS has no dequantiser");
}

static void test_dequant_32(void) {
    uint8_t b[64];
    float y[32], w[32];
    /* Q4_0: d = -1, nibbles j (low) and 15-j (high): value = (q - 8) * d */
    memset(b, 0, sizeof b);
    put16(b, H_M1);
    for (int j = 0; j < 16; j++) b[2 + j] = (uint8_t)(j | (15 - j) << 4);
    for (int j = 0; j < 16; j++) w[j] = (float)(8 - j), w[j + 16] = (float)(8 - (15 - j));
    dq(CLV_GGML_Q4_0, b, y, 32);
    check_values("Q4_0", y, w, 32);
    /* Q4_1: d = 0.5, m = 1.5: value = q * 0.5 + 1.5 */
    put16(b, H_HALF), put16(b + 2, H_1_5);
    for (int j = 0; j < 16; j++) b[4 + j] = (uint8_t)(j | (15 - j) << 4);
    for (int j = 0; j < 16; j++) w[j] = j * 0.5f + 1.5f, w[j + 16] = (15 - j) * 0.5f + 1.5f;
    dq(CLV_GGML_Q4_1, b, y, 32);
    check_values("Q4_1", y, w, 32);
    /* Q5_0: d = 2, high bits 0xAAAAAAAA (set for odd values): value = (q - 16) * 2 */
    put16(b, H_TWO);
    put32(b + 2, 0xAAAAAAAAu);
    for (int j = 0; j < 16; j++) b[6 + j] = (uint8_t)(j | (15 - j) << 4);
    for (int j = 0; j < 16; j++) {
        w[j] = (float)(((j | (j & 1) << 4)) - 16) * 2;
        w[j + 16] = (float)(((15 - j) | ((j + 16) & 1) << 4) - 16) * 2;
    }
    dq(CLV_GGML_Q5_0, b, y, 32);
    check_values("Q5_0", y, w, 32);
    /* Q5_1: d = 0.5, m = -1, same quants: value = q * 0.5 - 1 */
    put16(b, H_HALF), put16(b + 2, H_M1);
    put32(b + 4, 0xAAAAAAAAu);
    for (int j = 0; j < 16; j++) b[8 + j] = (uint8_t)(j | (15 - j) << 4);
    for (int j = 0; j < 16; j++) {
        w[j] = (float)(j | (j & 1) << 4) * 0.5f - 1;
        w[j + 16] = (float)((15 - j) | ((j + 16) & 1) << 4) * 0.5f - 1;
    }
    dq(CLV_GGML_Q5_1, b, y, 32);
    check_values("Q5_1", y, w, 32);
    /* Q8_0: d = 0.25, q = 8j - 128 */
    put16(b, H_QUART);
    for (int j = 0; j < 32; j++) b[2 + j] = (uint8_t)(int8_t)(8 * j - 128);
    for (int j = 0; j < 32; j++) w[j] = (8 * j - 128) * 0.25f;
    dq(CLV_GGML_Q8_0, b, y, 32);
    check_values("Q8_0", y, w, 32);
}

static void test_dequant_k(void) {
    uint8_t b[256];
    float y[256], w[256];

    /* Q2_K: scales[i] = (i%4 + 1) | (i%2) << 4 (scale, min), every qs byte 0xE4 so
     * the 2-bit quant at shift 2k is k; d = dmin = 1. Value v lies in half
     * h = v/128, shift k = (v%128)/32, sub-block is = h*8 + (v%128)/16. */
    memset(b, 0, sizeof b);
    for (int i = 0; i < 16; i++) b[i] = (uint8_t)((i % 4 + 1) | (i % 2) << 4);
    memset(b + 16, 0xE4, 64);
    put16(b + 80, H_ONE), put16(b + 82, H_ONE);
    for (int v = 0; v < 256; v++) {
        int k = (v % 128) / 32, is = (v / 128) * 8 + (v % 128) / 16;
        w[v] = (float)((is % 4 + 1) * k - (is % 2));
    }
    dq(CLV_GGML_Q2_K, b, y, 256);
    check_values("Q2_K", y, w, 256);

    /* Q3_K: every 6-bit scale 33 (-> +1) except scale 5 = 29 (-> -3): low nibbles
     * 0x11 (0x1D for scale 5), high 2-bit fields 0b10 (0b01 for scale 5, which
     * sits in bits 2-3 of byte 9). hmask set for the first 16 of every 32
     * values (subtract 0), clear for the others (subtract 4). qs all 0xE4. d = 1. */
    memset(b, 0, sizeof b);
    for (int l = 0; l < 32; l++) b[l] = l < 16 ? 0xFF : 0x00;
    memset(b + 32, 0xE4, 64);
    uint8_t *s = b + 96;
    for (int j = 0; j < 8; j++) s[j] = 0x11;
    s[5] = 0x1D;
    for (int j = 8; j < 12; j++) s[j] = 0xAA;
    s[9] = 0xA6;
    put16(b + 108, H_ONE);
    for (int v = 0; v < 256; v++) {
        int k = (v % 128) / 32, is = (v / 128) * 8 + (v % 128) / 16;
        int sc = is == 5 ? -3 : 1;
        w[v] = (float)(sc * (k - ((v % 32) < 16 ? 0 : 4)));
    }
    dq(CLV_GGML_Q3_K, b, y, 256);
    check_values("Q3_K", y, w, 256);

    /* Q4_K: d = 1, dmin = 0.5. Packed scales: byte 0 = 0x41 (scale0 = 1, and its
     * top bits give scale4 a 16), byte 4 = 0x02 (min0 = 2), byte 8 = 0x13
     * (scale4 low nibble 3 -> 19, min4 = 1); all else 0. qs bytes (i%16) | 0x50.
     * Sub-block 0 (values 0..31): 1*(l%16) - 0.5*2; sub-block 4 (128..159):
     * 19*(l%16) - 0.5*1; sub-blocks with scale 0 and min 0 are 0. */
    memset(b, 0, sizeof b);
    put16(b, H_ONE), put16(b + 2, H_HALF);
    b[4 + 0] = 0x41, b[4 + 4] = 0x02, b[4 + 8] = 0x13;
    for (int i = 0; i < 128; i++) b[16 + i] = (uint8_t)((i % 16) | 0x50);
    for (int v = 0; v < 256; v++) w[v] = 0;
    for (int l = 0; l < 32; l++) w[l] = (float)(l % 16) - 1.0f, w[128 + l] = 19.0f * (float)(l % 16) - 0.5f;
    dq(CLV_GGML_Q4_K, b, y, 256);
    check_values("Q4_K", y, w, 256);

    /* Q5_K: the same scales and low bits, plus qh: bit 0 (sub-block 0) on even
     * l, bit 4 (sub-block 4) on odd l, adding 16 to those quants. */
    memset(b, 0, sizeof b);
    put16(b, H_ONE), put16(b + 2, H_HALF);
    b[4 + 0] = 0x41, b[4 + 4] = 0x02, b[4 + 8] = 0x13;
    for (int l = 0; l < 32; l++) b[16 + l] = (l % 2 == 0) ? 0x01 : 0x10;
    for (int i = 0; i < 128; i++) b[48 + i] = (uint8_t)((i % 16) | 0x50);
    for (int v = 0; v < 256; v++) w[v] = 0;
    for (int l = 0; l < 32; l++) {
        w[l] = (float)((l % 16) + (l % 2 == 0 ? 16 : 0)) - 1.0f;
        w[128 + l] = 19.0f * (float)((l % 16) + (l % 2 ? 16 : 0)) - 0.5f;
    }
    dq(CLV_GGML_Q5_K, b, y, 256);
    check_values("Q5_K", y, w, 256);

    /* Q6_K: d = 0.5; scales 1 for the first 128 values, -2 for the rest.
     * First half: ql[l] = (l%16) | (15 - l%16) << 4 for l < 64, qh[l] = 0xE4 for
     * l < 32 (2-bit fields 0, 1, 2, 3), so (q - 32) is l%16 - 32, l%16 - 16,
     * 15 - l%16, 31 - l%16 for values l, l+32, l+64, l+96. Second half: all
     * bits 0, so q - 32 = -32 and value 0.5 * -2 * -32 = 32. */
    memset(b, 0, sizeof b);
    for (int l = 0; l < 64; l++) b[l] = (uint8_t)((l % 16) | (15 - l % 16) << 4);
    for (int l = 0; l < 32; l++) b[128 + l] = 0xE4;
    for (int i = 0; i < 16; i++) b[192 + i] = (uint8_t)(int8_t)(i < 8 ? 1 : -2);
    put16(b + 208, H_HALF);
    for (int l = 0; l < 32; l++) {
        w[l] = 0.5f * (float)(l % 16 - 32);
        w[l + 32] = 0.5f * (float)(l % 16 - 16);
        w[l + 64] = 0.5f * (float)(15 - l % 16);
        w[l + 96] = 0.5f * (float)(31 - l % 16);
    }
    for (int v = 128; v < 256; v++) w[v] = 32.0f;
    dq(CLV_GGML_Q6_K, b, y, 256);
    check_values("Q6_K", y, w, 256);
}

/* ---- the reader -------------------------------------------------------------------------- */

/* A file with one key of every type, nested arrays and one tensor of every
 * dequantisable type. */
static uint8_t *rich_file(size_t *len) {
    clv_gguf_writer w;
    clv_gguf_writer_init(&w, 64);
    clv_gguf_w_u32(&w, "general.alignment", 64);
    uint8_t raw[32];
    raw[0] = 200;
    clv_gguf_w_raw(&w, "t.u8", CLV_GGUF_U8, raw, 1);
    raw[0] = (uint8_t)-100;
    clv_gguf_w_raw(&w, "t.i8", CLV_GGUF_I8, raw, 1);
    put16(raw, 60000);
    clv_gguf_w_raw(&w, "t.u16", CLV_GGUF_U16, raw, 2);
    put16(raw, (uint16_t)-30000);
    clv_gguf_w_raw(&w, "t.i16", CLV_GGUF_I16, raw, 2);
    clv_gguf_w_u32(&w, "t.u32", 4000000000u);
    clv_gguf_w_i32(&w, "t.i32", -2000000000);
    clv_gguf_w_f32(&w, "t.f32", 0.1f);
    clv_gguf_w_bool(&w, "t.bool", true);
    clv_gguf_w_str(&w, "t.str", "h\xc3\xa9llo");
    clv_gguf_w_u64(&w, "t.u64", 0xFFFFFFFFFFFFFFFFull);
    put64(raw, (uint64_t)-5);
    clv_gguf_w_raw(&w, "t.i64", CLV_GGUF_I64, raw, 8);
    double f64 = -2.5;
    memcpy(raw, &f64, 8);
    clv_gguf_w_raw(&w, "t.f64", CLV_GGUF_F64, raw, 8);
    const char *strs[3] = {"a", "", "ccc"};
    clv_gguf_w_strs(&w, "t.strs", strs, 3);
    int32_t i32s[4] = {-1, 0, 7, 1 << 30};
    clv_gguf_w_i32s(&w, "t.i32s", i32s, 4);
    float f32s[2] = {0.5f, -1e-6f};
    clv_gguf_w_f32s(&w, "t.f32s", f32s, 2);
    /* array of arrays: [[1, 2], [], [3]] of UINT16 */
    uint8_t nested[128], *p = nested;
    put32(p, CLV_GGUF_ARRAY), put64(p + 4, 3), p += 12;
    put32(p, CLV_GGUF_U16), put64(p + 4, 2), put16(p + 12, 1), put16(p + 14, 2), p += 16;
    put32(p, CLV_GGUF_U16), put64(p + 4, 0), p += 12;
    put32(p, CLV_GGUF_U16), put64(p + 4, 1), put16(p + 12, 3), p += 14;
    clv_gguf_w_raw(&w, "t.nested", CLV_GGUF_ARRAY, nested, (size_t)(p - nested));
    /* array of bools, and an empty array of strings */
    put32(raw, CLV_GGUF_BOOL), put64(raw + 4, 2), raw[12] = 1, raw[13] = 0;
    clv_gguf_w_raw(&w, "t.bools", CLV_GGUF_ARRAY, raw, 14);
    clv_gguf_w_strs(&w, "t.nostrs", strs, 0);

    /* tensors: ne = {block, 2} of each type, data = two copies of one block */
    static const uint32_t types[] = {CLV_GGML_F32, CLV_GGML_F16, CLV_GGML_BF16, CLV_GGML_Q4_0, CLV_GGML_Q4_1,
                                     CLV_GGML_Q5_0, CLV_GGML_Q5_1, CLV_GGML_Q8_0, CLV_GGML_Q2_K, CLV_GGML_Q3_K,
                                     CLV_GGML_Q4_K, CLV_GGML_Q5_K, CLV_GGML_Q6_K};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        uint32_t blk, bytes;
        clv_ggml_type_info(types[i], &blk, &bytes);
        uint32_t per = blk == 1 ? 32 : blk; /* 32 values a row for plain types */
        size_t n = (size_t)(per / blk) * bytes * 2;
        uint8_t *data = malloc(n);
        for (size_t k = 0; k < n; k++) data[k] = (uint8_t)(k * 37 + i);
        /* keep f16 scales finite: every second byte's top bits clear */
        for (size_t k = 1; k < n; k += 2) data[k] &= 0x3B;
        char name[32];
        snprintf(name, sizeof name, "w.%s", clv_ggml_type_name(types[i]));
        int64_t ne[2] = {per, 2};
        clv_gguf_w_tensor(&w, name, types[i], 2, ne, data, n);
        free(data);
    }
    uint8_t *file = clv_gguf_writer_finish(&w, len);
    clv_gguf_writer_free(&w);
    return file;
}

static void test_parse_rich(void) {
    size_t len;
    uint8_t *file = rich_file(&len);
    clv_gguf g;
    clv_status st = {0};
    int rc = clv_gguf_parse(&g, file, len, "rich.gguf", &st);
    CHECK(rc == 0, "parse: %s", st.msg);
    if (rc) {
        free(file);
        return;
    }
    CHECK(g.version == 3 && g.alignment == 64 && g.data_offset % 64 == 0, "version %u alignment %u data %llu", g.version,
          g.alignment, (unsigned long long)g.data_offset);
    int64_t v;
    double f;
    bool b;
    char *s = NULL;
    CHECK(clv_gguf_get_int(&g, "t.u8", 0, 1000, &v, &st) == 0 && v == 200, "u8 %lld", (long long)v);
    CHECK(clv_gguf_get_int(&g, "t.i8", -1000, 1000, &v, &st) == 0 && v == -100, "i8 %lld", (long long)v);
    CHECK(clv_gguf_get_int(&g, "t.u16", 0, 100000, &v, &st) == 0 && v == 60000, "u16");
    CHECK(clv_gguf_get_int(&g, "t.i16", -100000, 0, &v, &st) == 0 && v == -30000, "i16");
    CHECK(clv_gguf_get_int(&g, "t.u32", 0, INT64_MAX, &v, &st) == 0 && v == 4000000000LL, "u32");
    CHECK(clv_gguf_get_int(&g, "t.i32", INT64_MIN, 0, &v, &st) == 0 && v == -2000000000LL, "i32");
    CHECK(clv_gguf_get_int(&g, "t.i64", -10, 10, &v, &st) == 0 && v == -5, "i64");
    rc = clv_gguf_get_int(&g, "t.u64", 0, INT64_MAX, &v, &st);
    CHECK_ERR(rc, st, "t.u64");
    rc = clv_gguf_get_int(&g, "t.u32", 0, 10, &v, &st);
    CHECK_ERR(rc, st, "outside [0, 10]");
    CHECK(clv_gguf_get_float(&g, "t.f32", &f, &st) == 0 && f == (double)0.1f, "f32 %g", f);
    CHECK(clv_gguf_get_float(&g, "t.f64", &f, &st) == 0 && f == -2.5, "f64 %g", f);
    CHECK(clv_gguf_get_bool(&g, "t.bool", &b, &st) == 0 && b, "bool");
    CHECK(clv_gguf_get_str(&g, "t.str", &s, &st) == 0 && s && strcmp(s, "h\xc3\xa9llo") == 0, "str");
    free(s);
    rc = clv_gguf_get_str(&g, "t.u8", &s, &st);
    CHECK_ERR(rc, st, "'t.u8' is UINT8, expected STRING");
    CHECK(clv_gguf_get_int(&g, "absent", 0, 1, &v, &st) == 1, "absent key gives 1");
    const clv_gguf_value *a;
    CHECK(clv_gguf_get_array(&g, "t.strs", CLV_GGUF_STRING, &a, &st) == 0 && a->len == 3 && a->str_lens[1] == 0 &&
              a->str_lens[2] == 3 && memcmp(a->strs[2], "ccc", 3) == 0,
          "string array");
    CHECK(clv_gguf_get_array(&g, "t.i32s", CLV_GGUF_I64, &a, &st) == 0 && a->len == 4 && clv_gguf_arr_int(a, 0) == -1 &&
              clv_gguf_arr_int(a, 3) == (1 << 30),
          "int array");
    CHECK(clv_gguf_get_array(&g, "t.f32s", CLV_GGUF_F64, &a, &st) == 0 && clv_gguf_arr_float(a, 1) == (double)-1e-6f,
          "float array");
    rc = clv_gguf_get_array(&g, "t.f32s", CLV_GGUF_STRING, &a, &st);
    CHECK_ERR(rc, st, "expected an array of STRING");
    const clv_gguf_kv *n = clv_gguf_find(&g, "t.nested");
    CHECK(n && n->v.type == CLV_GGUF_ARRAY && n->v.elem == CLV_GGUF_ARRAY && n->v.len == 3 && n->v.items &&
              n->v.items[0].len == 2 && clv_gguf_arr_int(&n->v.items[0], 1) == 2 && n->v.items[1].len == 0 &&
              n->v.items[2].len == 1 && clv_gguf_arr_int(&n->v.items[2], 0) == 3,
          "nested array");
    const clv_gguf_kv *bs = clv_gguf_find(&g, "t.bools");
    CHECK(bs && bs->v.elem == CLV_GGUF_BOOL && bs->v.len == 2 && bs->v.data[0] == 1, "bool array");
    const clv_gguf_kv *ns = clv_gguf_find(&g, "t.nostrs");
    CHECK(ns && ns->v.len == 0, "empty string array");

    CHECK(g.n_tensors == 13, "13 tensors, got %lld", (long long)g.n_tensors);
    for (int64_t i = 0; i < g.n_tensors; i++) {
        const clv_gguf_tensor *t = &g.tensors[i];
        uint32_t blk, bytes;
        clv_ggml_type_info(t->type, &blk, &bytes);
        CHECK(t->n_dims == 2 && t->ne[1] == 2 && t->offset % 64 == 0 && t->data == file + g.data_offset + t->offset,
              "tensor %s info", t->name);
        CHECK(t->size == (uint64_t)(t->ne[0] / blk) * bytes * 2, "tensor %s size %llu", t->name, (unsigned long long)t->size);
        /* each row dequantises like the same bytes handed over directly */
        float *row = malloc(sizeof(float) * (size_t)t->ne[0] * 2), *ref = malloc(sizeof(float) * (size_t)t->ne[0] * 2);
        CHECK(clv_ggml_dequant(t->type, t->data, row, t->ne[0] * 2), "dequant %s", t->name);
        size_t rb = (size_t)(t->ne[0] / blk) * bytes;
        clv_ggml_dequant(t->type, t->data, ref, t->ne[0]);
        clv_ggml_dequant(t->type, t->data + rb, ref + t->ne[0], t->ne[0]);
        CHECK(memcmp(row, ref, sizeof(float) * (size_t)t->ne[0] * 2) == 0, "%s rows", t->name);
        free(row);
        free(ref);
    }
    CHECK(clv_gguf_find_tensor(&g, "w.Q6_K") != NULL && clv_gguf_find_tensor(&g, "w.nope") == NULL, "find tensor");
    /* the file may end right after the last tensor's data (the padding after it is optional) */
    size_t needed = 0;
    for (int64_t i = 0; i < g.n_tensors; i++)
        if (g.data_offset + g.tensors[i].offset + g.tensors[i].size > needed)
            needed = (size_t)(g.data_offset + g.tensors[i].offset + g.tensors[i].size);
    clv_gguf_close(&g);

    /* every truncation of the file fails cleanly (ASan watches the reads) */
    int failures = 0;
    for (size_t cut = 0; cut < len; cut += (cut < 2048 || cut + 128 > len ? 1 : 97)) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, file, cut);
        clv_status s2 = {0};
        clv_gguf g2;
        if (clv_gguf_parse(&g2, copy, cut, "cut.gguf", &s2) == 0) {
            clv_gguf_close(&g2);
            failures += cut < needed;
        } else if (!strstr(s2.msg, "cut.gguf")) {
            failures++;
        }
        free(copy);
    }
    CHECK(failures == 0, "%d truncated copies parsed or gave a message without the file name", failures);
    free(file);
}

/* ---- malformed files -------------------------------------------------------------------------- */

static void expect_bad(const uint8_t *buf, size_t len, const char *needle, const char *label) {
    clv_gguf g;
    clv_status st = {0};
    int rc = clv_gguf_parse(&g, buf, len, "bad.gguf", &st);
    CHECK(rc != 0 && strstr(st.msg, needle) && strstr(st.msg, "bad.gguf"), "%s: rc=%d, want '%s', got '%s'", label, rc,
          needle, st.msg);
    if (rc == 0) clv_gguf_close(&g);
}

/* A file from a writer that was filled by `fill`. */
static uint8_t *build(void (*fill)(clv_gguf_writer *), size_t *len) {
    clv_gguf_writer w;
    clv_gguf_writer_init(&w, 32);
    fill(&w);
    uint8_t *f = clv_gguf_writer_finish(&w, len);
    clv_gguf_writer_free(&w);
    return f;
}

static const float k_block[8] = {1, 2, 3, 4, 5, 6, 7, 8};
static void fill_ok(clv_gguf_writer *w) {
    clv_gguf_w_str(w, "general.architecture", "llama");
    int64_t ne[1] = {8};
    clv_gguf_w_tensor(w, "a", CLV_GGML_F32, 1, ne, k_block, sizeof k_block);
    clv_gguf_w_tensor(w, "b", CLV_GGML_F32, 1, ne, k_block, sizeof k_block);
}
static void fill_dup_key(clv_gguf_writer *w) {
    clv_gguf_w_u32(w, "x.y", 1);
    clv_gguf_w_u32(w, "a", 1);
    clv_gguf_w_u32(w, "x.y", 2);
}
static void fill_dup_tensor(clv_gguf_writer *w) {
    int64_t ne[1] = {8};
    clv_gguf_w_tensor(w, "t", CLV_GGML_F32, 1, ne, k_block, sizeof k_block);
    clv_gguf_w_tensor(w, "t", CLV_GGML_F32, 1, ne, k_block, sizeof k_block);
}
static void fill_bad_align_type(clv_gguf_writer *w) { clv_gguf_w_u64(w, "general.alignment", 32); }
static void fill_bad_align_pow2(clv_gguf_writer *w) { clv_gguf_w_u32(w, "general.alignment", 48); }
static void fill_unknown_vtype(clv_gguf_writer *w) {
    uint8_t v[4] = {0};
    clv_gguf_w_raw(w, "k", 13, v, 4);
}
static void fill_unknown_atype(clv_gguf_writer *w) {
    uint8_t v[12];
    put32(v, 99), put64(v + 4, 1);
    clv_gguf_w_raw(w, "k", CLV_GGUF_ARRAY, v, 12);
}
static void fill_huge_array(clv_gguf_writer *w) {
    uint8_t v[12];
    put32(v, CLV_GGUF_U32), put64(v + 4, 0x4000000000000001ull); /* x4 bytes overflows */
    clv_gguf_w_raw(w, "k", CLV_GGUF_ARRAY, v, 12);
}
static void fill_huge_str_array(clv_gguf_writer *w) {
    uint8_t v[12];
    put32(v, CLV_GGUF_STRING), put64(v + 4, 1000000);
    clv_gguf_w_raw(w, "k", CLV_GGUF_ARRAY, v, 12);
}
static void fill_deep(clv_gguf_writer *w) {
    uint8_t v[12 * 12], *p = v;
    for (int i = 0; i < 12; i++, p += 12) put32(p, CLV_GGUF_ARRAY), put64(p + 4, 1);
    clv_gguf_w_raw(w, "k", CLV_GGUF_ARRAY, v, sizeof v);
}
static void fill_str_past_eof(clv_gguf_writer *w) {
    uint8_t v[8];
    put64(v, 1000);
    clv_gguf_w_raw(w, "k", CLV_GGUF_STRING, v, 8);
}
static void fill_ndims(clv_gguf_writer *w) {
    int64_t ne[5] = {8, 1, 1, 1, 1};
    clv_gguf_w_tensor(w, "t", CLV_GGML_F32, 5, ne, k_block, sizeof k_block);
}
static void fill_dims_overflow(clv_gguf_writer *w) {
    int64_t ne[3] = {1 << 30, 1LL << 40, 1LL << 40};
    clv_gguf_w_tensor(w, "t", CLV_GGML_F32, 3, ne, k_block, sizeof k_block);
}
static void fill_unknown_ttype(clv_gguf_writer *w) {
    int64_t ne[1] = {8};
    clv_gguf_w_tensor(w, "t", 4 /* retired Q4_2 */, 1, ne, k_block, sizeof k_block);
}
static void fill_partial_block(clv_gguf_writer *w) {
    int64_t ne[1] = {16};
    clv_gguf_w_tensor(w, "t", CLV_GGML_Q8_0, 1, ne, k_block, sizeof k_block);
}
static void fill_long_name(clv_gguf_writer *w) {
    int64_t ne[1] = {8};
    clv_gguf_w_tensor(w, "blk.0.a_name_that_is_longer_than_the_sixty_three_bytes_ggml_allows.weight", CLV_GGML_F32, 1, ne,
                      k_block, sizeof k_block);
}
static void fill_too_big(clv_gguf_writer *w) {
    int64_t ne[1] = {16}; /* 64 bytes declared, 32 written */
    clv_gguf_w_tensor(w, "t", CLV_GGML_F32, 1, ne, k_block, sizeof k_block);
}

static void test_malformed(void) {
    size_t len;
    uint8_t *ok = build(fill_ok, &len);
    clv_gguf g;
    clv_status st = {0};
    CHECK(clv_gguf_parse(&g, ok, len, "ok.gguf", &st) == 0, "the base file parses: %s", st.msg);
    clv_gguf_close(&g);
    uint8_t *m = malloc(len);
#define MUTATE(stmt, needle, label)  \
    do {                             \
        memcpy(m, ok, len);          \
        stmt;                        \
        expect_bad(m, len, needle, label); \
    } while (0)
    MUTATE(m[0] = 'X', "not a GGUF file", "magic");
    MUTATE(put32(m + 4, 1), "version 1 is not supported", "version 1");
    MUTATE(put32(m + 4, 7), "version 7 is not supported", "version 7");
    MUTATE(put32(m + 4, 0x03000000u), "big-endian", "big-endian version");
    MUTATE(put64(m + 8, 1ull << 40), "tensor_count", "tensor count");
    MUTATE(put64(m + 16, 1ull << 40), "metadata_kv_count", "kv count");
    MUTATE(put64(m + 8, 3), "tensor #2: name", "one tensor more than written");
    MUTATE(put64(m + 16, 2), "bad.gguf: ", "one key more than written");
    /* the key's length (right after the header) past the end of the file */
    MUTATE(put64(m + 24, 1ull << 50), "runs past the end of the file", "key length");
    MUTATE(put64(m + 24, 0), "is empty", "empty key");
    /* tensor offsets: the second tensor info's offset is the last 8 bytes before the padding */
    size_t info_end = 24 + (8 + 20 + 4 + 8 + 5) + 2 * (8 + 1 + 4 + 8 + 4 + 8);
    MUTATE(put64(m + info_end - 8, 33), "not a multiple of the alignment", "misaligned offset");
    MUTATE(put64(m + info_end - 8, 1 << 20), "runs past the end of the file", "offset out of range");
    MUTATE(put64(m + info_end - 8, 0), "overlap", "overlapping tensors");
    MUTATE(put64(m + info_end - 8, UINT64_MAX - 31), "runs past the end", "offset overflow");
    MUTATE(put32(m + info_end - 12, 99), "unknown ggml type 99", "tensor type");
#undef MUTATE
    /* a tensor with a zero dim is empty, and legal */
    memcpy(m, ok, len);
    put64(m + info_end - 20, 0);
    int rc = clv_gguf_parse(&g, m, len, "empty.gguf", &st);
    CHECK(rc == 0 && g.tensors[1].size == 0, "empty tensor: %s", st.msg);
    if (rc == 0) clv_gguf_close(&g);
    expect_bad(ok, 3, "not a GGUF file", "3 bytes");
    expect_bad(ok, 6, "header: version", "truncated version");
    expect_bad(ok, 10, "header: tensor_count", "truncated tensor count");
    expect_bad(ok, 20, "header: metadata_kv_count", "truncated kv count");
    free(m);
    free(ok);

    struct { void (*fill)(clv_gguf_writer *); const char *needle, *label; } cases[] = {
        {fill_dup_key, "metadata key 'x.y' appears twice", "duplicate key"},
        {fill_dup_tensor, "tensor 't' appears twice", "duplicate tensor"},
        {fill_bad_align_type, "'general.alignment' is UINT64, must be UINT32", "alignment type"},
        {fill_bad_align_pow2, "'general.alignment' is 48, must be a power of two", "alignment value"},
        {fill_unknown_vtype, "unknown value type 13", "value type"},
        {fill_unknown_atype, "array of unknown element type 99", "array element type"},
        {fill_huge_array, "runs past the end of the file", "array length overflow"},
        {fill_huge_str_array, "cannot fit", "string array length"},
        {fill_deep, "nested deeper than 8", "nesting"},
        {fill_str_past_eof, "string of 1000 bytes", "string length"},
        {fill_ndims, "n_dims is 5", "n_dims"},
        {fill_dims_overflow, "dims overflow", "dims overflow"},
        {fill_unknown_ttype, "unknown ggml type 4", "retired type"},
        {fill_partial_block, "not a multiple of Q8_0's block of 32", "partial block"},
        {fill_long_name, "bytes long (at most 63)", "tensor name length"},
        {fill_too_big, "runs past the end of the file", "tensor data past the end"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint8_t *f = build(cases[i].fill, &len);
        expect_bad(f, len, cases[i].needle, cases[i].label);
        free(f);
    }
}

/* ---- import ----------------------------------------------------------------------------------- */

/* tokenizer.ggml.* for a tiny byte-level vocabulary: 3 control tokens, then
 * the byte alphabet's printable ASCII, then a few merges. */
static void w_gpt2_vocab(clv_gguf_writer *w, int vocab, const char *pre) {
    char **toks = calloc((size_t)vocab, sizeof *toks);
    int32_t *types = calloc((size_t)vocab, sizeof *types);
    static const char *fixed[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>"};
    for (int i = 0; i < vocab; i++) {
        toks[i] = malloc(32);
        if (i < 4) snprintf(toks[i], 32, "%s", fixed[i]);
        else if (i < 4 + 94) snprintf(toks[i], 32, "%c", 33 + (i - 4)); /* '!'..'~' */
        else snprintf(toks[i], 32, "tok%d", i);
        types[i] = i < 3 ? 3 : i == 3 ? 4 : 1;
    }
    if (vocab > 101) {
        snprintf(toks[98], 32, "\xc4\xa0t"), snprintf(toks[99], 32, "he"), snprintf(toks[100], 32, "\"\\");
        snprintf(toks[101], 32, "\xc4\xa0");
    }
    const char *merges[] = {"\xc4\xa0 t", "h e", "\" \\"};
    clv_gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    if (pre) clv_gguf_w_str(w, "tokenizer.ggml.pre", pre);
    clv_gguf_w_strs(w, "tokenizer.ggml.tokens", (const char *const *)toks, (uint64_t)vocab);
    clv_gguf_w_i32s(w, "tokenizer.ggml.token_type", types, (uint64_t)vocab);
    clv_gguf_w_strs(w, "tokenizer.ggml.merges", merges, 3);
    clv_gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 1);
    clv_gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 2);
    clv_gguf_w_u32(w, "tokenizer.ggml.padding_token_id", 2);
    clv_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", false);
    clv_gguf_w_str(w, "tokenizer.chat_template", "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}");
    for (int i = 0; i < vocab; i++) free(toks[i]);
    free(toks);
    free(types);
}

static const char *k_arch_key[] = {"llama", "mistral", "qwen2", "qwen3"};

/* Convert the synth checkpoint in `hf` to a GGUF at `path`: llama.cpp's names,
 * f32 data, q/k rows interleaved the way its converter does for llama-family
 * models (written here independently of the importer). */
static void hf_to_gguf(const char *hf, const char *path, const clv_synth_opts *o, bool llama3_freqs) {
    clv_st_set set;
    clv_status st = {0};
    int rc = clv_st_open_dir(&set, hf, &st);
    CHECK(rc == 0, "open %s: %s", hf, st.msg);
    if (rc) return;
    clv_gguf_writer w;
    clv_gguf_writer_init(&w, 32);
    const char *a = k_arch_key[o->arch];
    char k[128];
    int head_dim = o->head_dim ? o->head_dim : o->hidden / o->heads;
    clv_gguf_w_str(&w, "general.architecture", a);
#define KEY(s) (snprintf(k, sizeof k, "%s.%s", a, s), k)
    clv_gguf_w_u32(&w, KEY("block_count"), (uint32_t)o->layers);
    clv_gguf_w_u32(&w, KEY("context_length"), (uint32_t)o->max_pos);
    clv_gguf_w_u32(&w, KEY("embedding_length"), (uint32_t)o->hidden);
    clv_gguf_w_u32(&w, KEY("feed_forward_length"), (uint32_t)o->intermediate);
    clv_gguf_w_u32(&w, KEY("attention.head_count"), (uint32_t)o->heads);
    clv_gguf_w_u32(&w, KEY("attention.head_count_kv"), (uint32_t)o->kv_heads);
    clv_gguf_w_f32(&w, KEY("attention.layer_norm_rms_epsilon"), 1e-6f);
    clv_gguf_w_f32(&w, KEY("rope.freq_base"), (float)o->rope_theta);
    clv_gguf_w_u32(&w, KEY("rope.dimension_count"), (uint32_t)head_dim);
    if (o->head_dim) clv_gguf_w_u32(&w, KEY("attention.key_length"), (uint32_t)head_dim);
    if (o->rope == CLV_ROPE_LINEAR || o->rope == CLV_ROPE_YARN) {
        clv_gguf_w_str(&w, KEY("rope.scaling.type"), o->rope == CLV_ROPE_LINEAR ? "linear" : "yarn");
        clv_gguf_w_f32(&w, KEY("rope.scaling.factor"), (float)o->rope_factor);
        if (o->rope == CLV_ROPE_YARN) clv_gguf_w_u32(&w, KEY("rope.scaling.original_context_length"), (uint32_t)o->rope_orig_max_pos);
    }
    if (o->sliding_window) clv_gguf_w_u32(&w, KEY("attention.sliding_window"), (uint32_t)o->sliding_window);
    clv_gguf_w_u32(&w, KEY("vocab_size"), (uint32_t)o->vocab);
#undef KEY
    w_gpt2_vocab(&w, o->vocab, "smollm");
    if (llama3_freqs) { /* llama.cpp's rope_freqs for factor 8, low 1, high 4, original context 8192 */
        float f[64];
        for (int i = 0; i < head_dim / 2; i++) {
            double freq = 1.0 / pow(o->rope_theta, 2.0 * i / head_dim), wl = 2 * M_PI / freq;
            f[i] = wl < 8192 / 4.0 ? 1.0f : wl > 8192 / 1.0 ? 8.0f : (float)(1 / ((1 - (8192 / wl - 1) / 3) / 8 + (8192 / wl - 1) / 3));
        }
        int64_t ne[1] = {head_dim / 2};
        clv_gguf_w_tensor(&w, "rope_freqs.weight", CLV_GGML_F32, 1, ne, f, sizeof(float) * (size_t)(head_dim / 2));
    }
    static const struct { const char *hf, *gg; } names[] = {
        {"input_layernorm.weight", "attn_norm.weight"}, {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},   {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"}, {"self_attn.q_proj.bias", "attn_q.bias"},
        {"self_attn.k_proj.bias", "attn_k.bias"},       {"self_attn.v_proj.bias", "attn_v.bias"},
        {"self_attn.o_proj.bias", "attn_output.bias"},  {"self_attn.q_norm.weight", "attn_q_norm.weight"},
        {"self_attn.k_norm.weight", "attn_k_norm.weight"}, {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},    {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
    };
    bool permute = o->arch == CLV_ARCH_LLAMA || o->arch == CLV_ARCH_MISTRAL;
    for (int i = 0; i < set.n_tensors; i++) {
        const clv_st_tensor *t = &set.tensors[i];
        char gname[128] = "";
        int layer;
        char rest[96];
        if (strcmp(t->name, "model.embed_tokens.weight") == 0) snprintf(gname, sizeof gname, "token_embd.weight");
        else if (strcmp(t->name, "model.norm.weight") == 0) snprintf(gname, sizeof gname, "output_norm.weight");
        else if (strcmp(t->name, "lm_head.weight") == 0) snprintf(gname, sizeof gname, "output.weight");
        else if (sscanf(t->name, "model.layers.%d.%95s", &layer, rest) == 2)
            for (size_t j = 0; j < sizeof names / sizeof *names; j++)
                if (strcmp(rest, names[j].hf) == 0) snprintf(gname, sizeof gname, "blk.%d.%s", layer, names[j].gg);
        CHECK(gname[0], "no GGUF name for %s", t->name);
        CHECK(t->dtype == CLV_DT_F32, "synth f32");
        const float *src = clv_st_data(&set, t);
        int64_t rows = t->ndim == 2 ? t->shape[0] : t->shape[0], cols = t->ndim == 2 ? t->shape[1] : 1;
        float *dst = malloc(sizeof(float) * (size_t)(rows * cols));
        bool qk = strstr(t->name, "q_proj") || strstr(t->name, "k_proj");
        for (int64_t r = 0; r < rows; r++) {
            int64_t to = r;
            if (permute && qk) { /* HF row h*hd + half*hd/2 + j goes to h*hd + 2j + half */
                int64_t h = r / head_dim, i2 = r % head_dim, half = i2 / (head_dim / 2), j = i2 % (head_dim / 2);
                to = h * head_dim + 2 * j + half;
            }
            memcpy(dst + to * cols, src + r * cols, sizeof(float) * (size_t)cols);
        }
        int64_t ne[2] = {t->ndim == 2 ? t->shape[1] : t->shape[0], t->shape[0]};
        clv_gguf_w_tensor(&w, gname, CLV_GGML_F32, t->ndim, ne, dst, sizeof(float) * (size_t)(rows * cols));
        free(dst);
    }
    size_t len;
    uint8_t *file = clv_gguf_writer_finish(&w, &len);
    clv_gguf_writer_free(&w);
    CHECK(clv_write_file(path, file, len, &st) == 0, "write %s", path);
    free(file);
    clv_st_close(&set);
}

/* Every tensor of `a` equals `b`'s, bit for bit. */
static void same_weights(const char *a, const char *b, const char *label) {
    clv_st_set x, y;
    clv_status st = {0};
    int r1 = clv_st_open_dir(&x, a, &st);
    CHECK(r1 == 0, "%s: open %s: %s", label, a, st.msg);
    int r2 = r1 ? -1 : clv_st_open_dir(&y, b, &st);
    CHECK(r2 == 0, "%s: open %s: %s", label, b, st.msg);
    if (r1 == 0 && r2 == 0) {
        CHECK(x.n_tensors == y.n_tensors, "%s: %d vs %d tensors", label, x.n_tensors, y.n_tensors);
        for (int i = 0; i < x.n_tensors; i++) {
            const clv_st_tensor *t = &x.tensors[i], *u = clv_st_find(&y, t->name);
            CHECK(u != NULL, "%s: %s missing from the import", label, t->name);
            if (!u) continue;
            CHECK(u->dtype == t->dtype && u->ndim == t->ndim && u->shape[0] == t->shape[0] && u->shape[1] == t->shape[1],
                  "%s: %s shape/dtype", label, t->name);
            CHECK(u->end - u->begin == t->end - t->begin &&
                      memcmp(clv_st_data(&x, t), clv_st_data(&y, u), (size_t)(t->end - t->begin)) == 0,
                  "%s: %s values differ", label, t->name);
        }
    }
    if (r1 == 0) clv_st_close(&x);
    if (r2 == 0) clv_st_close(&y);
}

static bool exists(const char *dir, const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return clv_file_exists(p);
}

/* No DIR and no DIR.tmp.* left in the test root. */
static int leftovers(const char *base) {
    int n = 0;
    DIR *d = opendir(g_root);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strncmp(e->d_name, base, strlen(base)) == 0) n++;
    if (d) closedir(d);
    return n;
}

static void roundtrip(const char *name, clv_synth_opts o, bool llama3) {
    char hf[512], gg[512], out[512];
    snprintf(hf, sizeof hf, "%s/%s-hf", g_root, name);
    snprintf(gg, sizeof gg, "%s/%s.gguf", g_root, name);
    snprintf(out, sizeof out, "%s/%s-out", g_root, name);
    o.out_dir = hf;
    o.dtype = CLV_DT_F32;
    clv_status st = {0};
    int rc = clv_synth_write(&o, &st);
    CHECK(rc == 0, "%s: synth: %s", name, st.msg);
    if (rc) return;
    hf_to_gguf(hf, gg, &o, llama3);
    clv_gguf_import_opts io;
    clv_gguf_import_defaults(&io);
    io.out_dir = out;
    io.dtype = CLV_DT_F32;
    clv_gguf_import_report rep;
    rc = clv_gguf_import(gg, &io, &rep, &st);
    CHECK(rc == 0, "%s: import: %s", name, st.msg);
    if (rc) return;
    same_weights(hf, out, name);
    clv_config a, b;
    clv_gen_config ga, gb;
    CHECK(clv_config_load(&a, &ga, hf, &st) == 0, "%s: config %s", name, st.msg);
    CHECK(clv_config_load(&b, &gb, out, &st) == 0, "%s: imported config: %s", name, st.msg);
    CHECK(a.arch == b.arch && a.hidden == b.hidden && a.n_layers == b.n_layers && a.n_heads == b.n_heads &&
              a.n_kv_heads == b.n_kv_heads && a.head_dim == b.head_dim && a.intermediate == b.intermediate &&
              a.vocab == b.vocab && a.max_pos == b.max_pos && a.tie_embeddings == b.tie_embeddings &&
              a.qkv_bias == b.qkv_bias && a.o_bias == b.o_bias && a.qk_norm == b.qk_norm &&
              a.sliding_window == b.sliding_window && a.rms_eps == b.rms_eps && a.rope_theta == b.rope_theta,
          "%s: the imported config differs from the original", name);
    if (!llama3)
        CHECK(a.rope_type == b.rope_type && a.rope_factor == b.rope_factor && a.rope_orig_max_pos == b.rope_orig_max_pos,
              "%s: rope %d/%d factor %g/%g", name, a.rope_type, b.rope_type, a.rope_factor, b.rope_factor);
    else
        CHECK(b.rope_type == CLV_ROPE_LLAMA3 && b.rope_factor == 8 && b.rope_low_freq_factor == 1 &&
                  b.rope_high_freq_factor == 4 && b.rope_orig_max_pos == 8192,
              "%s: llama3 rope recovered from rope_freqs.weight (type %d factor %g)", name, b.rope_type, b.rope_factor);
    CHECK(b.bos_id == 1 && b.n_eos >= 1 && b.eos_ids[0] == 2, "%s: bos/eos", name);
    CHECK(exists(out, "tokenizer.json") && exists(out, "tokenizer_config.json") && exists(out, "generation_config.json"),
          "%s: tokenizer files", name);
    CHECK(rep.n_tensors > 0 && rep.tensors_of_type[CLV_GGML_F32] == rep.n_tensors && !rep.tokenizer_only, "%s: report", name);
}

static void test_import_archs(void) {
    clv_synth_opts o;
    clv_synth_defaults(&o);
    o.hidden = 32, o.layers = 2, o.heads = 4, o.kv_heads = 2, o.intermediate = 48, o.vocab = 110, o.max_pos = 256;
    o.seed = 3;
    roundtrip("llama-gqa", o, false);
    clv_synth_opts l2 = o;
    l2.tie = true, l2.attention_bias = true, l2.kv_heads = 1, l2.rope = CLV_ROPE_LINEAR, l2.rope_factor = 2;
    roundtrip("llama-bias-tied-linear", l2, false);
    clv_synth_opts l3 = o;
    l3.rope_theta = 500000;
    roundtrip("llama-llama3", l3, true);
    clv_synth_opts m = o;
    m.arch = CLV_ARCH_MISTRAL, m.sliding_window = 8;
    roundtrip("mistral-window", m, false);
    clv_synth_opts q2 = o;
    q2.arch = CLV_ARCH_QWEN2, q2.rope_theta = 1000000;
    roundtrip("qwen2-bias", q2, false);
    clv_synth_opts q3 = o;
    q3.arch = CLV_ARCH_QWEN3, q3.head_dim = 16, q3.tie = true, q3.rope = CLV_ROPE_YARN, q3.rope_factor = 4;
    q3.rope_orig_max_pos = 64;
    roundtrip("qwen3-headdim-yarn", q3, false);
}

/* Quantised tensors come out as their dequantised values, in bf16. */
static void test_import_quantised(void) {
    clv_gguf_writer w;
    clv_gguf_writer_init(&w, 32);
    clv_gguf_w_str(&w, "general.architecture", "llama");
    clv_gguf_w_u32(&w, "llama.block_count", 1);
    clv_gguf_w_u32(&w, "llama.context_length", 64);
    clv_gguf_w_u32(&w, "llama.embedding_length", 32);
    clv_gguf_w_u32(&w, "llama.feed_forward_length", 32);
    clv_gguf_w_u32(&w, "llama.attention.head_count", 2);
    clv_gguf_w_f32(&w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    w_gpt2_vocab(&w, 128, "gpt-2");
    /* every matrix [32, 32] (ne {32, 32}) or [128, 32] as Q8_0 blocks with d = 1/64, q = (row + col) % 64 - 32 */
    uint8_t blk[34];
    const char *mats[] = {"blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight", "blk.0.attn_output.weight",
                          "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight", "blk.0.ffn_down.weight", "token_embd.weight"};
    for (int mi = 0; mi < 8; mi++) {
        int rows = mi == 7 ? 128 : 32;
        uint8_t *data = malloc((size_t)rows * 34);
        for (int r = 0; r < rows; r++) {
            put16(blk, 0x2400); /* 1/64 */
            for (int c = 0; c < 32; c++) blk[2 + c] = (uint8_t)(int8_t)((r + c + mi) % 64 - 32);
            memcpy(data + r * 34, blk, 34);
        }
        int64_t ne[2] = {32, rows};
        clv_gguf_w_tensor(&w, mats[mi], CLV_GGML_Q8_0, 2, ne, data, (size_t)rows * 34);
        free(data);
    }
    float ones[32];
    for (int i = 0; i < 32; i++) ones[i] = 1.0f + (float)i / 64;
    int64_t ne1[1] = {32};
    clv_gguf_w_tensor(&w, "blk.0.attn_norm.weight", CLV_GGML_F32, 1, ne1, ones, sizeof ones);
    clv_gguf_w_tensor(&w, "blk.0.ffn_norm.weight", CLV_GGML_F32, 1, ne1, ones, sizeof ones);
    clv_gguf_w_tensor(&w, "output_norm.weight", CLV_GGML_F32, 1, ne1, ones, sizeof ones);
    size_t len;
    uint8_t *file = clv_gguf_writer_finish(&w, &len);
    clv_gguf_writer_free(&w);
    char gg[512], out[512];
    snprintf(gg, sizeof gg, "%s/q8.gguf", g_root);
    snprintf(out, sizeof out, "%s/q8-out", g_root);
    clv_status st = {0};
    clv_write_file(gg, file, len, &st);
    free(file);
    clv_gguf_import_opts io;
    clv_gguf_import_defaults(&io);
    io.out_dir = out;
    int rc = clv_gguf_import(gg, &io, NULL, &st);
    CHECK(rc == 0, "q8 import: %s", st.msg);
    if (rc) return;
    clv_st_set set;
    CHECK(clv_st_open_dir(&set, out, &st) == 0, "open q8 import: %s", st.msg);
    const clv_st_tensor *t = clv_st_find(&set, "model.layers.0.mlp.up_proj.weight");
    const clv_st_tensor *q = clv_st_find(&set, "model.layers.0.self_attn.q_proj.weight");
    const clv_st_tensor *e = clv_st_find(&set, "model.embed_tokens.weight");
    CHECK(t && q && e && t->dtype == CLV_DT_BF16 && !clv_st_find(&set, "lm_head.weight"), "bf16 tensors, tied head");
    if (t && q && e) {
        const uint16_t *v = clv_st_data(&set, t), *qv = clv_st_data(&set, q), *ev = clv_st_data(&set, e);
        int bad = 0;
        for (int r = 0; r < 32; r++)
            for (int c = 0; c < 32; c++) {
                /* up_proj is matrix 5: value ((r + c + 5) % 64 - 32) / 64, exact in bf16 */
                bad += clv_bf16_to_f32(v[r * 32 + c]) != (float)((r + c + 5) % 64 - 32) / 64;
                /* q_proj (matrix 0) is un-permuted: HF row r comes from GGUF row unpermute(r) */
                int h = r / 16, i = r % 16, src = h * 16 + (i % 8) * 2 + i / 8;
                bad += clv_bf16_to_f32(qv[r * 32 + c]) != (float)((src + c + 0) % 64 - 32) / 64;
            }
        for (int r = 0; r < 128; r++) bad += clv_bf16_to_f32(ev[r * 32 + 3]) != (float)((r + 3 + 7) % 64 - 32) / 64;
        CHECK(bad == 0, "%d dequantised values differ", bad);
    }
    clv_st_close(&set);
    /* the same as f16 */
    char out16[600];
    snprintf(out16, sizeof out16, "%s/q8-out-f16", g_root);
    io.out_dir = out16;
    io.dtype = CLV_DT_F16;
    rc = clv_gguf_import(gg, &io, NULL, &st);
    CHECK(rc == 0, "q8 import as f16: %s", st.msg);
    if (rc == 0 && clv_st_open_dir(&set, out16, &st) == 0) {
        t = clv_st_find(&set, "model.layers.0.mlp.up_proj.weight");
        CHECK(t && t->dtype == CLV_DT_F16, "f16 tensors");
        if (t) {
            const uint16_t *v = clv_st_data(&set, t);
            int bad = 0;
            for (int r = 0; r < 32; r++)
                for (int c = 0; c < 32; c++) bad += clv_f16_to_f32(v[r * 32 + c]) != (float)((r + c + 5) % 64 - 32) / 64;
            CHECK(bad == 0, "%d f16 values differ", bad);
        }
        clv_st_close(&set);
    }
    /* the tokenizer: gpt-2 split, specials, merges as pairs (with '"' and '\\' in tokens) */
    char p[600], *text = NULL;
    snprintf(p, sizeof p, "%s/tokenizer.json", out);
    CHECK(clv_read_file(p, &text, NULL, &st) == 0, "read tokenizer.json");
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    CHECK(j != NULL, "tokenizer.json parses");
    if (j) {
        cJSON *model = cJSON_GetObjectItem(j, "model"), *vocab = cJSON_GetObjectItem(model, "vocab");
        cJSON *merges = cJSON_GetObjectItem(model, "merges"), *added = cJSON_GetObjectItem(j, "added_tokens");
        cJSON *pre = cJSON_GetObjectItem(j, "pre_tokenizer");
        CHECK(cJSON_GetArraySize(vocab) == 128 && cJSON_GetObjectItem(vocab, "\"\\") &&
                  cJSON_GetObjectItem(vocab, "\"\\")->valueint == 100,
              "vocab with an escaped key");
        CHECK(cJSON_GetArraySize(merges) == 3 && strcmp(cJSON_GetArrayItem(cJSON_GetArrayItem(merges, 0), 1)->valuestring, "t") == 0 &&
                  strcmp(cJSON_GetArrayItem(cJSON_GetArrayItem(merges, 2), 0)->valuestring, "\"") == 0,
              "merges as pairs");
        CHECK(cJSON_GetArraySize(added) == 4 && cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetArrayItem(added, 1), "special")) &&
                  cJSON_IsFalse(cJSON_GetObjectItem(cJSON_GetArrayItem(added, 3), "special")),
              "3 special tokens and one user-defined");
        CHECK(strcmp(cJSON_GetObjectItem(pre, "type")->valuestring, "ByteLevel") == 0 &&
                  cJSON_IsTrue(cJSON_GetObjectItem(pre, "use_regex")),
              "gpt-2 pre-tokenizer");
        CHECK(strcmp(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "post_processor"), "type")->valuestring, "ByteLevel") == 0,
              "no bos: ByteLevel post-processor");
    }
    cJSON_Delete(j);
    free(text);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", out);
    CHECK(clv_read_file(p, &text, NULL, &st) == 0, "read tokenizer_config.json");
    j = text ? cJSON_Parse(text) : NULL;
    CHECK(j && strstr(cJSON_GetObjectItem(j, "chat_template")->valuestring, "<|im_start|>") &&
              strcmp(cJSON_GetObjectItem(j, "eos_token")->valuestring, "<|im_end|>") == 0 &&
              cJSON_IsFalse(cJSON_GetObjectItem(j, "add_bos_token")),
          "tokenizer_config.json: chat template, eos, add_bos_token");
    cJSON_Delete(j);
    free(text);
}

/* Imports a vocabulary-only GGUF (SentencePiece-style) of the ten tokens
 * toks into g_root/NAME-out. */
static int import_spm_vocab(const char *name, const char *const toks[10], clv_gguf_import_report *rep, clv_status *st) {
    clv_gguf_writer w;
    clv_gguf_writer_init(&w, 32);
    clv_gguf_w_str(&w, "general.architecture", "llama");
    clv_gguf_w_u32(&w, "llama.context_length", 4096);
    float scores[] = {0, 0, 0, -1, -2, -3, -4, -5, -6, 0};
    int32_t types[] = {2, 3, 3, 1, 1, 1, 1, 1, 1, 6};
    clv_gguf_w_str(&w, "tokenizer.ggml.model", "llama");
    clv_gguf_w_strs(&w, "tokenizer.ggml.tokens", toks, 10);
    clv_gguf_w_f32s(&w, "tokenizer.ggml.scores", scores, 10);
    clv_gguf_w_i32s(&w, "tokenizer.ggml.token_type", types, 10);
    clv_gguf_w_u32(&w, "tokenizer.ggml.bos_token_id", 1);
    clv_gguf_w_u32(&w, "tokenizer.ggml.eos_token_id", 2);
    clv_gguf_w_u32(&w, "tokenizer.ggml.unknown_token_id", 0);
    size_t len;
    uint8_t *file = clv_gguf_writer_finish(&w, &len);
    clv_gguf_writer_free(&w);
    char gg[512], out[512];
    snprintf(gg, sizeof gg, "%s/%s.gguf", g_root, name);
    snprintf(out, sizeof out, "%s/%s-out", g_root, name);
    clv_write_file(gg, file, len, st);
    free(file);
    clv_gguf_import_opts io;
    clv_gguf_import_defaults(&io);
    io.out_dir = out;
    return clv_gguf_import(gg, &io, rep, st);
}

/* A token that is not valid UTF-8 cannot go into tokenizer.json: refused, naming it. */
static void test_vocab_not_utf8(void) {
    static const char *bad[] = {"\x80", "\xc0\xaf" /* overlong */, "\xed\xa0\x80" /* surrogate */,
                                "\xf4\x90\x80\x80" /* past U+10FFFF */, "\xe2\x96" /* cut short */};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *toks[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", bad[i], "\xe2\x96\x81" "a", "\xe2\x96\x81" "ab", "<0x0A>"};
        char name[32];
        snprintf(name, sizeof name, "bad-utf8-%zu", i);
        clv_status st = {0};
        clv_gguf_import_report rep;
        int rc = import_spm_vocab(name, toks, &rep, &st);
        CHECK_ERR(rc, st, "token 6 is not valid UTF-8");
        snprintf(name, sizeof name, "bad-utf8-%zu-out", i);
        CHECK(leftovers(name) == 0, "a refused vocabulary leaves no folder behind (%s)", name);
    }
}

/* SentencePiece-style vocabulary without merges: rebuilt like transformers' generate_merges. */
static void test_spm_vocab_only(void) {
    const char *toks[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", "ab", "\xe2\x96\x81" "a", "\xe2\x96\x81" "ab", "<0x0A>"};
    char out[512];
    snprintf(out, sizeof out, "%s/spm-out", g_root);
    clv_status st = {0};
    clv_gguf_import_report rep;
    int rc = import_spm_vocab("spm", toks, &rep, &st);
    CHECK(rc == 0 && rep.tokenizer_only, "vocab-only import: %s", st.msg);
    CHECK(!exists(out, "config.json") && !exists(out, "model.safetensors") && exists(out, "tokenizer.json"),
          "a tokenizer-only folder");
    char p[600], *text = NULL;
    snprintf(p, sizeof p, "%s/tokenizer.json", out);
    cJSON *j = clv_read_file(p, &text, NULL, &st) == 0 ? cJSON_Parse(text) : NULL;
    CHECK(j != NULL, "spm tokenizer.json parses");
    if (j) {
        cJSON *model = cJSON_GetObjectItem(j, "model"), *merges = cJSON_GetObjectItem(model, "merges");
        /* (a,b) score -4; (▁,a) -5; then the two splits of "▁ab" (-6), longer left piece first */
        static const char *want[4][2] = {{"a", "b"}, {"\xe2\x96\x81", "a"}, {"\xe2\x96\x81" "a", "b"}, {"\xe2\x96\x81", "ab"}};
        int n = cJSON_GetArraySize(merges), ok = n == 4;
        for (int i = 0; ok && i < 4; i++) {
            cJSON *m = cJSON_GetArrayItem(merges, i);
            ok = strcmp(cJSON_GetArrayItem(m, 0)->valuestring, want[i][0]) == 0 &&
                 strcmp(cJSON_GetArrayItem(m, 1)->valuestring, want[i][1]) == 0;
        }
        CHECK(ok, "generated merges in transformers' order (%d merges)", n);
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(model, "byte_fallback")) &&
                  strcmp(cJSON_GetObjectItem(model, "unk_token")->valuestring, "<unk>") == 0,
              "byte fallback, unk");
        cJSON *pre = cJSON_GetObjectItem(j, "pre_tokenizer"), *post = cJSON_GetObjectItem(j, "post_processor");
        CHECK(strcmp(cJSON_GetObjectItem(pre, "type")->valuestring, "Metaspace") == 0 &&
                  strcmp(cJSON_GetObjectItem(pre, "prepend_scheme")->valuestring, "first") == 0,
              "Metaspace, prepend first");
        CHECK(strcmp(cJSON_GetObjectItem(post, "type")->valuestring, "TemplateProcessing") == 0 &&
                  cJSON_GetObjectItem(cJSON_GetObjectItem(post, "special_tokens"), "<s>"),
              "bos added by the post-processor (llama default)");
    }
    cJSON_Delete(j);
    free(text);
}

static void test_import_errors(void) {
    char out[512], gg[512];
    clv_status st = {0};
    clv_gguf_import_opts io;
    clv_gguf_import_defaults(&io);
    /* unsupported architecture */
    clv_gguf_writer w;
    clv_gguf_writer_init(&w, 32);
    clv_gguf_w_str(&w, "general.architecture", "gemma3");
    int64_t ne[1] = {8};
    clv_gguf_w_tensor(&w, "token_embd.weight", CLV_GGML_F32, 1, ne, k_block, sizeof k_block);
    size_t len;
    uint8_t *f = clv_gguf_writer_finish(&w, &len);
    clv_gguf_writer_free(&w);
    snprintf(gg, sizeof gg, "%s/gemma.gguf", g_root);
    clv_write_file(gg, f, len, &st);
    free(f);
    snprintf(out, sizeof out, "%s/fail-out", g_root);
    io.out_dir = out;
    int rc = clv_gguf_import(gg, &io, NULL, &st);
    CHECK_ERR(rc, st, "general.architecture 'gemma3' is not supported");
    CHECK(leftovers("fail-out") == 0, "a failed import leaves no folder behind");

    /* a missing tensor: fails after config.json was written, still leaves nothing */
    clv_synth_opts o;
    clv_synth_defaults(&o);
    o.hidden = 16, o.layers = 1, o.heads = 2, o.kv_heads = 2, o.intermediate = 16, o.vocab = 110, o.dtype = CLV_DT_F32;
    char hf[512];
    snprintf(hf, sizeof hf, "%s/small-hf", g_root);
    o.out_dir = hf;
    CHECK(clv_synth_write(&o, &st) == 0, "synth");
    snprintf(gg, sizeof gg, "%s/small.gguf", g_root);
    hf_to_gguf(hf, gg, &o, false);
    char gtrunc[512];
    snprintf(gtrunc, sizeof gtrunc, "%s/small-renamed.gguf", g_root);
    char *text;
    size_t n;
    if (clv_read_file(gg, &text, &n, &st) == 0) {
        char *at = memmem(text, n, "blk.0.ffn_up.weight", 19);
        CHECK(at != NULL, "tensor name in file");
        if (at) memcpy(at, "blk.0.ffn_uq.weight", 19);
        clv_write_file(gtrunc, text, n, &st);
        free(text);
    }
    rc = clv_gguf_import(gtrunc, &io, NULL, &st);
    CHECK_ERR(rc, st, "tensor 'blk.0.ffn_up.weight' (for model.layers.0.mlp.up_proj.weight) is missing");
    CHECK(leftovers("fail-out") == 0, "a failed import leaves no folder behind (after writing config.json)");
    /* an existing, non-empty output folder is refused and left alone */
    rc = clv_gguf_import(gg, &io, NULL, &st);
    CHECK(rc == 0, "small import: %s", st.msg);
    rc = clv_gguf_import(gg, &io, NULL, &st);
    CHECK_ERR(rc, st, "already exists");
    CHECK(exists(out, "model.safetensors"), "the existing folder is untouched");
    /* the unknown GGUF file */
    char missing[512];
    snprintf(missing, sizeof missing, "%s/none.gguf", g_root);
    char out2[600];
    snprintf(out2, sizeof out2, "%s/none-out", g_root);
    io.out_dir = out2;
    rc = clv_gguf_import(missing, &io, NULL, &st);
    CHECK_ERR(rc, st, "none.gguf: cannot open");
    CHECK(leftovers("none-out") == 0, "nothing created for a missing input");
}

static void test_unpermute(void) {
    /* head of 8 rows: HF order 0..7 = [x0..x3 | y0..y3]; llama.cpp stores x0 y0 x1 y1 ... */
    int64_t want[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    bool ok = true;
    for (int r = 0; r < 16; r++) ok &= clv_gguf_unpermute_row(r, 8) == (r / 8) * 8 + want[r % 8];
    CHECK(ok, "unpermute rows");
}

static void rm_rf(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

int main(void) {
    clv_log_set_quiet(true);
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 1;
    }
    test_dequant_plain();
    test_dequant_32();
    test_dequant_k();
    test_parse_rich();
    test_malformed();
    test_unpermute();
    test_import_archs();
    test_import_quantised();
    test_spm_vocab_only();
    test_vocab_not_utf8();
    test_import_errors();
    rm_rf(g_root);
    return check_report("test_gguf");
}
