#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int clv_fail(clv_status *st, int code, const char *fmt, ...) {
    if (st) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(st->msg, sizeof st->msg, fmt, ap);
        va_end(ap);
        st->code = code;
    }
    return code;
}

int clv_wrap(clv_status *st, const char *fmt, ...) {
    if (!st) return CLV_EINVAL;
    char prefix[512], old[sizeof st->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, st->msg, sizeof old);
    size_t pl = strnlen(prefix, sizeof st->msg - 1);
    memcpy(st->msg, prefix, pl);
    size_t ol = strnlen(old, sizeof st->msg - 1 - pl);
    memcpy(st->msg + pl, old, ol);
    st->msg[pl + ol] = 0;
    return st->code ? st->code : CLV_EINVAL;
}

static int g_rank = 0;
static bool g_quiet = false;

_Noreturn void clv_panic(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cleave: internal error [rank %d] %s:%d: ", g_rank, file, line);
    vfprintf(stderr, fmt, ap);
    if (errno) fprintf(stderr, " (%s)", strerror(errno));
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

void clv_log_set_rank(int rank) { g_rank = rank; }
int clv_log_rank(void) { return g_rank; }
void clv_log_set_quiet(bool quiet) { g_quiet = quiet; }

void clv_info(const char *fmt, ...) {
    if (g_rank != 0 || g_quiet) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

void clv_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "warning: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

void *clv_alloc(size_t bytes) {
    if (bytes == 0) bytes = 64;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes) return NULL;
    void *p = aligned_alloc(64, rounded);
    if (p) memset(p, 0, rounded);
    return p;
}

void clv_free(void *p) { free(p); }

int clv_read_file(const char *path, char **out, size_t *len, clv_status *st) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return clv_fail(st, CLV_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return clv_fail(st, CLV_EIO, "%s: not a regular file", path);
    }
    size_t n = (size_t)sb.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return clv_fail(st, CLV_ENOMEM, "%s: cannot allocate %zu bytes", path, n + 1);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            free(buf);
            close(fd);
            return clv_fail(st, CLV_EIO, "%s: read failed after %zu of %zu bytes", path, got, n);
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return 0;
}

int clv_write_file(const char *path, const void *data, size_t len, clv_status *st) {
    /* Write to a temporary name and rename, so a failure never leaves a half file. */
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return clv_fail(st, CLV_EINVAL, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return clv_fail(st, CLV_EIO, "%s: cannot create: %s", path, strerror(errno));
    const char *p = data;
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, p + done, len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return clv_fail(st, CLV_EIO, "%s: write failed: %s", path, strerror(e));
        }
        done += (size_t)w;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return clv_fail(st, CLV_EIO, "%s: cannot finish writing: %s", path, strerror(e));
    }
    return 0;
}

bool clv_file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

int clv_path_join(char *buf, size_t cap, const char *dir, const char *name, clv_status *st) {
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) return clv_fail(st, CLV_EINVAL, "path too long: %s/%s", dir, name);
    return 0;
}

bool clv_parse_i64(const char *s, int64_t *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

bool clv_parse_f64(const char *s, double *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

int clv_parse_ids(const char *s, int32_t **out, int *n, clv_status *st) {
    if (!s || !*s) return clv_fail(st, CLV_EINVAL, "--ids: empty list");
    int cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    if (!ids) return clv_fail(st, CLV_ENOMEM, "--ids: out of memory");
    int k = 0;
    const char *p = s;
    while (1) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char tok[32];
        int64_t v;
        if (len == 0 || len >= sizeof tok) {
            free(ids);
            return clv_fail(st, CLV_EINVAL, "--ids: token %d is empty or too long (want e.g. 1,2,3)", k);
        }
        memcpy(tok, p, len);
        tok[len] = 0;
        if (!clv_parse_i64(tok, &v) || v < 0 || v > INT32_MAX) {
            free(ids);
            return clv_fail(st, CLV_EINVAL, "--ids: '%s' is not a non-negative token id", tok);
        }
        ids[k++] = (int32_t)v;
        if (!comma) break;
        p = comma + 1;
    }
    *out = ids;
    *n = k;
    return 0;
}

double clv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

float clv_absmax(const float *w, int n) {
    float m[8] = {0}; /* 8 independent maxima: one chain of compares would wait on each */
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) m[j] = fabsf(w[i + j]) > m[j] ? fabsf(w[i + j]) : m[j];
    for (; i < n; i++) m[0] = fabsf(w[i]) > m[0] ? fabsf(w[i]) : m[0];
    for (int j = 1; j < 8; j++) m[0] = m[j] > m[0] ? m[j] : m[0];
    return m[0];
}

float clv_quantize_i8_row(int8_t *q, const float *w, int n, float amax) {
    const float scale = amax / 127.0f;
    if (!(scale > 0.0f)) {
        memset(q, 0, (size_t)n);
        return scale;
    }
    for (int i = 0; i < n; i++) {
        const float v = rintf(w[i] / scale);
        q[i] = (int8_t)(v >= 127.0f ? 127 : v <= -127.0f ? -127 : v == v ? (int)v : 0); /* NaN: 0 */
    }
    return scale;
}

float clv_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    union { uint32_t u; float f; } v;
    if (exp == 0) {
        /* zero or subnormal: value = man * 2^-24 */
        float f = (float)man * 0x1p-24f;
        v.f = f;
        v.u |= sign;
        return v.f;
    }
    if (exp == 31) v.u = sign | 0x7f800000u | (man << 13);
    else v.u = sign | ((exp + 112) << 23) | (man << 13);
    return v.f;
}

uint16_t clv_f32_to_f16(float f) {
    union { uint32_t u; float f; } v = {.f = f};
    uint32_t sign = (v.u >> 16) & 0x8000u;
    uint32_t a = v.u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);             /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);            /* overflow -> inf */
    if (a < 0x38800000u) {                                              /* subnormal or zero */
        float af;
        memcpy(&af, &a, 4);
        /* round(af / 2^-24) with ties to even, via float arithmetic */
        float scaled = af * 0x1p24f;
        uint32_t m = (uint32_t)scaled;
        float frac = scaled - (float)m;
        if (frac > 0.5f || (frac == 0.5f && (m & 1))) m++;
        return (uint16_t)(sign | m);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - (112u << 23);
    return (uint16_t)(sign | (r >> 13));
}
