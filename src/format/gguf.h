/* format — GGUF reading (strict, bounds-checked, fuzzable) and the ggml
 * block formats it stores tensors in.
 *
 * A GGUF file is: magic "GGUF", version (2 or 3), tensor count, metadata
 * count, the metadata key/value pairs, the tensor infos (name, dims, ggml
 * type, offset), padding to `general.alignment`, then the tensor data. All
 * numbers are little-endian. The file is memory-mapped read-only; strings and
 * tensor data are used in place. Every count, length and offset is checked
 * against the bytes that remain before it is used, so a hostile file gets an
 * error naming the file and the field, never a crash or a huge allocation.
 *
 * Dimensions are kept in ggml order: ne[0] is the innermost (contiguous)
 * one, so a weight matrix of Hugging Face shape [rows, cols] has
 * ne = {cols, rows}. Never computes beyond dequantisation. */
#ifndef CLV_GGUF_H
#define CLV_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cleave.h"

/* Metadata value types, as numbered in the file. */
typedef enum clv_gguf_type {
    CLV_GGUF_U8 = 0, CLV_GGUF_I8 = 1, CLV_GGUF_U16 = 2, CLV_GGUF_I16 = 3,
    CLV_GGUF_U32 = 4, CLV_GGUF_I32 = 5, CLV_GGUF_F32 = 6, CLV_GGUF_BOOL = 7,
    CLV_GGUF_STRING = 8, CLV_GGUF_ARRAY = 9, CLV_GGUF_U64 = 10, CLV_GGUF_I64 = 11,
    CLV_GGUF_F64 = 12,
    CLV_GGUF_TYPE_COUNT
} clv_gguf_type;
const char *clv_gguf_type_name(uint32_t t); /* "UINT32", "?" when unknown */

/* Tensor storage types (ggml_type), as numbered in the file. Gaps are
 * numbers ggml retired; they are rejected. */
typedef enum clv_ggml_type {
    CLV_GGML_F32 = 0, CLV_GGML_F16 = 1, CLV_GGML_Q4_0 = 2, CLV_GGML_Q4_1 = 3,
    CLV_GGML_Q5_0 = 6, CLV_GGML_Q5_1 = 7, CLV_GGML_Q8_0 = 8,
    CLV_GGML_Q2_K = 10, CLV_GGML_Q3_K = 11, CLV_GGML_Q4_K = 12, CLV_GGML_Q5_K = 13,
    CLV_GGML_Q6_K = 14, CLV_GGML_Q8_K = 15,
    CLV_GGML_IQ2_XXS = 16, CLV_GGML_IQ2_XS = 17, CLV_GGML_IQ3_XXS = 18, CLV_GGML_IQ1_S = 19,
    CLV_GGML_IQ4_NL = 20, CLV_GGML_IQ3_S = 21, CLV_GGML_IQ2_S = 22, CLV_GGML_IQ4_XS = 23,
    CLV_GGML_I8 = 24, CLV_GGML_I16 = 25, CLV_GGML_I32 = 26, CLV_GGML_I64 = 27,
    CLV_GGML_F64 = 28, CLV_GGML_IQ1_M = 29, CLV_GGML_BF16 = 30,
    CLV_GGML_TQ1_0 = 34, CLV_GGML_TQ2_0 = 35, CLV_GGML_MXFP4 = 39,
    CLV_GGML_TYPE_END = 40
} clv_ggml_type;

/* Block geometry of a storage type: `block` elements take `bytes` bytes.
 * False for numbers that are not a storage type. */
bool clv_ggml_type_info(uint32_t type, uint32_t *block, uint32_t *bytes);
const char *clv_ggml_type_name(uint32_t type); /* "Q4_K", "?" when unknown */
/* Whether clv_ggml_dequant handles the type. */
bool clv_ggml_can_dequant(uint32_t type);
/* Dequantise n elements (a multiple of the type's block size) from `src`
 * (n / block * bytes bytes, any alignment) into dst. Returns false when the
 * type has no dequantiser or n is not a whole number of blocks. */
bool clv_ggml_dequant(uint32_t type, const void *src, float *dst, int64_t n);

/* A metadata value. Strings point into the mapped file (not NUL-terminated).
 * Arrays of numbers or bools point at their packed little-endian elements;
 * arrays of strings and of arrays get an index. */
typedef struct clv_gguf_value {
    uint32_t type;
    union {
        uint64_t u;  /* U8..U64 */
        int64_t i;   /* I8..I64 */
        double f;    /* F32, F64 (F32 widened exactly) */
        bool b;      /* BOOL */
    } num;
    const char *str; /* STRING */
    uint64_t len;    /* STRING: bytes; ARRAY: elements */
    uint32_t elem;   /* ARRAY: element type */
    const uint8_t *data;          /* ARRAY of fixed-size elements */
    const char **strs;            /* ARRAY of STRING: len pointers ... */
    uint64_t *str_lens;           /* ... and their byte lengths */
    struct clv_gguf_value *items; /* ARRAY of ARRAY */
} clv_gguf_value;

typedef struct clv_gguf_kv {
    char *key; /* NUL-terminated copy */
    clv_gguf_value v;
} clv_gguf_kv;

#define CLV_GGUF_MAX_DIMS 4
#define CLV_GGUF_MAX_NAME 63       /* ggml's GGML_MAX_NAME - 1 */
#define CLV_GGUF_MAX_DEPTH 8       /* nesting of arrays of arrays */
#define CLV_GGUF_DEFAULT_ALIGNMENT 32

typedef struct clv_gguf_tensor {
    char *name;
    uint32_t n_dims;
    int64_t ne[CLV_GGUF_MAX_DIMS]; /* ggml order; unused dims are 1 */
    uint32_t type;                 /* clv_ggml_type */
    uint64_t offset;               /* relative to the data section */
    uint64_t size;                 /* bytes */
    const uint8_t *data;           /* in the mapped file */
} clv_gguf_tensor;

typedef struct clv_gguf {
    char *path;         /* file name used in messages */
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset; /* absolute start of the data section */
    int64_t n_kv;
    clv_gguf_kv *kv;     /* file order */
    int64_t n_tensors;
    clv_gguf_tensor *tensors; /* file order */
    /* private */
    int fd;
    const uint8_t *map;
    size_t size;
} clv_gguf;

/* Parse a whole GGUF file held in memory (`buf` stays owned by the caller and
 * must outlive `g`). Pure function of its input: the fuzz target. */
int clv_gguf_parse(clv_gguf *g, const uint8_t *buf, size_t len, const char *fname, clv_status *st);
/* Map a file read-only and parse it. */
int clv_gguf_open(clv_gguf *g, const char *path, clv_status *st);
/* Frees what parse/open allocated and unmaps; safe on a zeroed or failed g. */
void clv_gguf_close(clv_gguf *g);

const clv_gguf_kv *clv_gguf_find(const clv_gguf *g, const char *key);
const clv_gguf_tensor *clv_gguf_find_tensor(const clv_gguf *g, const char *name);
int64_t clv_gguf_numel(const clv_gguf_tensor *t);

/* Typed getters. Each returns 0 and fills *out, CLV_EINVAL with a message
 * naming the file and key when the key is present with the wrong type or an
 * out-of-range value, and 1 when the key is absent (then *out is untouched). */
int clv_gguf_get_int(const clv_gguf *g, const char *key, int64_t lo, int64_t hi, int64_t *out, clv_status *st);
int clv_gguf_get_float(const clv_gguf *g, const char *key, double *out, clv_status *st);
int clv_gguf_get_bool(const clv_gguf *g, const char *key, bool *out, clv_status *st);
/* A freshly allocated NUL-terminated copy (embedded NULs are an error). */
int clv_gguf_get_str(const clv_gguf *g, const char *key, char **out, clv_status *st);
/* An array of the given element type (any integer type for CLV_GGUF_I64). */
int clv_gguf_get_array(const clv_gguf *g, const char *key, uint32_t elem, const clv_gguf_value **out,
                       clv_status *st);
/* Element i of an integer or float array, widened. */
int64_t clv_gguf_arr_int(const clv_gguf_value *v, uint64_t i);
double clv_gguf_arr_float(const clv_gguf_value *v, uint64_t i);

/* Writing, for tests and tools: a tiny builder that lays out a file the way
 * llama.cpp's writer does. Values are appended in call order. */
typedef struct clv_gguf_writer {
    uint8_t *kv;    size_t kv_len, kv_cap;     /* encoded key/values */
    uint8_t *ti;    size_t ti_len, ti_cap;     /* encoded tensor infos */
    uint8_t *data;  size_t data_len, data_cap; /* tensor data, padded */
    uint64_t n_kv, n_tensors;
    uint32_t alignment;
    bool oom;
} clv_gguf_writer;
void clv_gguf_writer_init(clv_gguf_writer *w, uint32_t alignment);
void clv_gguf_writer_free(clv_gguf_writer *w);
void clv_gguf_w_u32(clv_gguf_writer *w, const char *key, uint32_t v);
void clv_gguf_w_i32(clv_gguf_writer *w, const char *key, int32_t v);
void clv_gguf_w_u64(clv_gguf_writer *w, const char *key, uint64_t v);
void clv_gguf_w_f32(clv_gguf_writer *w, const char *key, float v);
void clv_gguf_w_bool(clv_gguf_writer *w, const char *key, bool v);
void clv_gguf_w_str(clv_gguf_writer *w, const char *key, const char *v);
void clv_gguf_w_strs(clv_gguf_writer *w, const char *key, const char *const *v, uint64_t n);
void clv_gguf_w_i32s(clv_gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
void clv_gguf_w_f32s(clv_gguf_writer *w, const char *key, const float *v, uint64_t n);
/* Raw: a key, a type and already-encoded value bytes (for odd types in tests). */
void clv_gguf_w_raw(clv_gguf_writer *w, const char *key, uint32_t type, const void *bytes, size_t n);
/* A tensor: ne in ggml order, `bytes` of data in `type`'s block format. */
void clv_gguf_w_tensor(clv_gguf_writer *w, const char *name, uint32_t type, int n_dims, const int64_t *ne,
                       const void *bytes, size_t n);
/* The whole file in one malloc'd buffer (version 3). NULL when out of memory. */
uint8_t *clv_gguf_writer_finish(clv_gguf_writer *w, size_t *len);

#endif
