/* util — status, logging, allocation, small file and string helpers.
 * Knows nothing about models. */
#ifndef CLV_UTIL_H
#define CLV_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "cleave.h"

/* Tier (c): user input -> status + message. Returns `code` so callers can
 * `return clv_fail(st, CLV_EINVAL, "...")`. */
int clv_fail(clv_status *st, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prefix an existing message with more context ("loading X: " + old). */
int clv_wrap(clv_status *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Tier (b): invariants that are bugs if broken; always on. */
#define CLV_ASSERT(cond)                                                                       \
    do {                                                                                       \
        if (!(cond)) clv_panic(__FILE__, __LINE__, "assertion failed: %s", #cond);              \
    } while (0)
/* Tier (a): a libc call that must succeed. */
#define CLV_CHECK(cond, what)                                                                  \
    do {                                                                                       \
        if (!(cond)) clv_panic(__FILE__, __LINE__, "%s failed", what);                          \
    } while (0)
_Noreturn void clv_panic(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Logging. Only rank 0 prints info; warnings and errors print on every rank. */
void clv_log_set_rank(int rank);
int clv_log_rank(void);
void clv_log_set_quiet(bool quiet);
void clv_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void clv_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Allocation: 64-byte aligned, zeroed; NULL on failure (caller reports). */
void *clv_alloc(size_t bytes);
void clv_free(void *p);

/* Overflow-checked size arithmetic: false on overflow. */
static inline bool clv_mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}

/* Files. */
int clv_read_file(const char *path, char **out, size_t *len, clv_status *st); /* NUL-terminated */
int clv_write_file(const char *path, const void *data, size_t len, clv_status *st);
bool clv_file_exists(const char *path);
/* Join dir + "/" + name into buf (truncation is an error). */
int clv_path_join(char *buf, size_t cap, const char *dir, const char *name, clv_status *st);

/* Parse "1,2,3" into a freshly allocated int32 array. */
int clv_parse_ids(const char *s, int32_t **out, int *n, clv_status *st);
/* Strict integer / float parsing of a whole string. */
bool clv_parse_i64(const char *s, int64_t *out);
bool clv_parse_f64(const char *s, double *out);

double clv_now(void); /* monotonic seconds */

/* float <-> bf16 / f16 conversions (scalar, exact round-to-nearest-even). */
static inline float clv_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = {.u = (uint32_t)h << 16};
    return v.f;
}
static inline uint16_t clv_f32_to_bf16(float f) {
    union { uint32_t u; float f; } v = {.f = f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40); /* quiet NaN */
    uint32_t rounding = 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)((v.u + rounding) >> 16);
}
float clv_f16_to_f32(uint16_t h);
uint16_t clv_f32_to_f16(float f);

/* One row of n weights to int8 with one scale (--dtype int8), symmetric:
 * scale = amax / 127 and q[i] = w[i] / scale rounded to nearest (ties to
 * even), clamped to [-127, 127], so |w[i] - q[i] * scale| <= scale / 2 (plus
 * the f32 rounding of the division). amax is the row's max |w|
 * (clv_absmax), or the whole row's when w is a part of it: a tensor-parallel
 * rank's column slice then gets the scale and values a single rank has. A
 * row of zeros gets scale 0 and q = 0. Returns the scale. Each step is one
 * f32 operation, so another program can repeat it bit for bit
 * (tests/ref/ref64.c --int8 does). */
float clv_absmax(const float *w, int n);
float clv_quantize_i8_row(int8_t *q, const float *w, int n, float amax);

#endif
