#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../util/util.h"

/* Longest metadata key accepted. The spec's keys are short dotted names;
 * anything this long is corrupt. */
#define CLV_GGUF_MAX_KEY 65535u

static const struct { const char *name; uint32_t size; } k_vtypes[CLV_GGUF_TYPE_COUNT] = {
    [CLV_GGUF_U8] = {"UINT8", 1},   [CLV_GGUF_I8] = {"INT8", 1},       [CLV_GGUF_U16] = {"UINT16", 2},
    [CLV_GGUF_I16] = {"INT16", 2},  [CLV_GGUF_U32] = {"UINT32", 4},    [CLV_GGUF_I32] = {"INT32", 4},
    [CLV_GGUF_F32] = {"FLOAT32", 4}, [CLV_GGUF_BOOL] = {"BOOL", 1},    [CLV_GGUF_STRING] = {"STRING", 0},
    [CLV_GGUF_ARRAY] = {"ARRAY", 0}, [CLV_GGUF_U64] = {"UINT64", 8},   [CLV_GGUF_I64] = {"INT64", 8},
    [CLV_GGUF_F64] = {"FLOAT64", 8},
};

const char *clv_gguf_type_name(uint32_t t) { return t < CLV_GGUF_TYPE_COUNT ? k_vtypes[t].name : "?"; }

static bool is_int_type(uint32_t t) {
    return t == CLV_GGUF_U8 || t == CLV_GGUF_I8 || t == CLV_GGUF_U16 || t == CLV_GGUF_I16 || t == CLV_GGUF_U32 ||
           t == CLV_GGUF_I32 || t == CLV_GGUF_U64 || t == CLV_GGUF_I64;
}
static bool is_signed_type(uint32_t t) {
    return t == CLV_GGUF_I8 || t == CLV_GGUF_I16 || t == CLV_GGUF_I32 || t == CLV_GGUF_I64;
}

/* ---- little-endian reads from unaligned bytes ----------------------------------- */

static uint64_t le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Widen a scalar of type t stored at p into v. */
static void scalar_at(uint32_t t, const uint8_t *p, clv_gguf_value *v) {
    uint64_t raw = le(p, (int)k_vtypes[t].size);
    switch (t) {
    case CLV_GGUF_I8: v->num.i = (int8_t)raw; break;
    case CLV_GGUF_I16: v->num.i = (int16_t)raw; break;
    case CLV_GGUF_I32: v->num.i = (int32_t)raw; break;
    case CLV_GGUF_I64: v->num.i = (int64_t)raw; break;
    case CLV_GGUF_F32: {
        union { uint32_t u; float f; } c = {.u = (uint32_t)raw};
        v->num.f = c.f;
        break;
    }
    case CLV_GGUF_F64: {
        union { uint64_t u; double f; } c = {.u = raw};
        v->num.f = c.f;
        break;
    }
    case CLV_GGUF_BOOL: v->num.b = raw != 0; break;
    default: v->num.u = raw; break;
    }
}

/* ---- the parser ----------------------------------------------------------------- */

typedef struct cursor {
    const uint8_t *b;
    size_t len, pos;
    const char *fname;
    clv_status *st;
} cursor;

/* `what` names the field for the message ("tensor 'x': dims"). */
static int need(cursor *c, uint64_t n, const char *what) {
    if (n > c->len - c->pos)
        return clv_fail(c->st, CLV_EFORMAT, "%s: %s: needs %llu bytes at offset %zu but the file ends at %zu", c->fname,
                        what, (unsigned long long)n, c->pos, c->len);
    return 0;
}
static int rd_u32(cursor *c, uint32_t *out, const char *what) {
    int rc = need(c, 4, what);
    if (rc) return rc;
    *out = (uint32_t)le(c->b + c->pos, 4);
    c->pos += 4;
    return 0;
}
static int rd_u64(cursor *c, uint64_t *out, const char *what) {
    int rc = need(c, 8, what);
    if (rc) return rc;
    *out = le(c->b + c->pos, 8);
    c->pos += 8;
    return 0;
}
/* A length-prefixed string, in place. */
static int rd_str(cursor *c, const char **s, uint64_t *n, const char *what) {
    char w[320];
    snprintf(w, sizeof w, "%s (string length)", what);
    int rc = rd_u64(c, n, w);
    if (rc) return rc;
    if (*n > c->len - c->pos)
        return clv_fail(c->st, CLV_EFORMAT, "%s: %s: string of %llu bytes at offset %zu runs past the end of the file (%zu bytes)",
                        c->fname, what, (unsigned long long)*n, c->pos, c->len);
    *s = (const char *)c->b + c->pos;
    c->pos += (size_t)*n;
    return 0;
}

static void value_free(clv_gguf_value *v) {
    if (v->type != CLV_GGUF_ARRAY) return;
    free(v->strs);
    free(v->str_lens);
    if (v->items) {
        for (uint64_t i = 0; i < v->len; i++) value_free(&v->items[i]);
        free(v->items);
    }
    v->strs = NULL;
    v->str_lens = NULL;
    v->items = NULL;
}

/* Parse a value of type `type` at the cursor into v. */
static int parse_value(cursor *c, uint32_t type, int depth, clv_gguf_value *v, const char *what) {
    memset(v, 0, sizeof *v);
    v->type = type;
    if (type >= CLV_GGUF_TYPE_COUNT)
        return clv_fail(c->st, CLV_EFORMAT, "%s: %s: unknown value type %u (known: 0..%d)", c->fname, what, type,
                        CLV_GGUF_TYPE_COUNT - 1);
    if (type == CLV_GGUF_STRING) return rd_str(c, &v->str, &v->len, what);
    if (type != CLV_GGUF_ARRAY) {
        int rc = need(c, k_vtypes[type].size, what);
        if (rc) return rc;
        scalar_at(type, c->b + c->pos, v);
        c->pos += k_vtypes[type].size;
        return 0;
    }
    char w[320];
    snprintf(w, sizeof w, "%s (array element type)", what);
    int rc = rd_u32(c, &v->elem, w);
    if (rc) return rc;
    snprintf(w, sizeof w, "%s (array length)", what);
    if ((rc = rd_u64(c, &v->len, w))) return rc;
    if (v->elem >= CLV_GGUF_TYPE_COUNT) {
        uint32_t e = v->elem;
        v->len = 0; /* nothing was allocated */
        return clv_fail(c->st, CLV_EFORMAT, "%s: %s: array of unknown element type %u (known: 0..%d)", c->fname, what, e,
                        CLV_GGUF_TYPE_COUNT - 1);
    }
    size_t left = c->len - c->pos;
    if (v->elem != CLV_GGUF_STRING && v->elem != CLV_GGUF_ARRAY) {
        uint64_t bytes;
        if (!clv_mul_ok(v->len, k_vtypes[v->elem].size, &bytes) || bytes > left) {
            uint64_t n = v->len;
            v->len = 0;
            return clv_fail(c->st, CLV_EFORMAT, "%s: %s: array of %llu %s runs past the end of the file (%zu bytes left)",
                            c->fname, what, (unsigned long long)n, k_vtypes[v->elem].name, left);
        }
        v->data = c->b + c->pos;
        c->pos += (size_t)bytes;
        return 0;
    }
    /* Each string takes at least its 8-byte length, each array 12 bytes: a
     * count beyond that cannot be genuine, and is refused before allocating. */
    uint64_t min = v->elem == CLV_GGUF_STRING ? 8 : 12;
    if (v->len > left / min) {
        uint64_t n = v->len;
        v->len = 0;
        return clv_fail(c->st, CLV_EFORMAT, "%s: %s: array of %llu %s cannot fit in the %zu bytes left in the file", c->fname,
                        what, (unsigned long long)n, k_vtypes[v->elem].name, left);
    }
    size_t n = (size_t)(v->len ? v->len : 1);
    if (v->elem == CLV_GGUF_STRING) {
        v->strs = calloc(n, sizeof *v->strs);
        v->str_lens = calloc(n, sizeof *v->str_lens);
        if (!v->strs || !v->str_lens) {
            v->len = 0;
            return clv_fail(c->st, CLV_ENOMEM, "%s: %s: out of memory for %zu strings", c->fname, what, n);
        }
        for (uint64_t i = 0; i < v->len; i++) {
            snprintf(w, sizeof w, "%s[%llu]", what, (unsigned long long)i);
            if ((rc = rd_str(c, &v->strs[i], &v->str_lens[i], w))) return rc;
        }
        return 0;
    }
    if (depth >= CLV_GGUF_MAX_DEPTH) {
        v->len = 0;
        return clv_fail(c->st, CLV_EFORMAT, "%s: %s: arrays nested deeper than %d levels", c->fname, what,
                        CLV_GGUF_MAX_DEPTH);
    }
    v->items = calloc(n, sizeof *v->items);
    if (!v->items) {
        v->len = 0;
        return clv_fail(c->st, CLV_ENOMEM, "%s: %s: out of memory for %zu arrays", c->fname, what, n);
    }
    for (uint64_t i = 0; i < v->len; i++) {
        snprintf(w, sizeof w, "%s[%llu]", what, (unsigned long long)i);
        /* An unparsed tail stays zeroed (type 0): value_free skips it. */
        if ((rc = parse_value(c, CLV_GGUF_ARRAY, depth + 1, &v->items[i], w))) return rc;
    }
    return 0;
}

/* A name from the file as a NUL-terminated copy; empty names and embedded NULs are refused. */
static int copy_name(cursor *c, const char *s, uint64_t n, uint64_t max, char **out, const char *what) {
    if (n == 0) return clv_fail(c->st, CLV_EFORMAT, "%s: %s is empty", c->fname, what);
    if (n > max)
        return clv_fail(c->st, CLV_EFORMAT, "%s: %s is %llu bytes long (at most %llu)", c->fname, what,
                        (unsigned long long)n, (unsigned long long)max);
    if (memchr(s, 0, (size_t)n))
        return clv_fail(c->st, CLV_EFORMAT, "%s: %s contains a NUL byte", c->fname, what);
    char *p = malloc((size_t)n + 1);
    if (!p) return clv_fail(c->st, CLV_ENOMEM, "%s: out of memory", c->fname);
    memcpy(p, s, (size_t)n);
    p[n] = 0;
    *out = p;
    return 0;
}

/* Comparators on indices into g's arrays (an explicit context: no globals). */
typedef int (*idx_cmp)(const clv_gguf *g, int64_t a, int64_t b);
static int cmp_key_idx(const clv_gguf *g, int64_t a, int64_t b) { return strcmp(g->kv[a].key, g->kv[b].key); }
static int cmp_tensor_name_idx(const clv_gguf *g, int64_t a, int64_t b) {
    return strcmp(g->tensors[a].name, g->tensors[b].name);
}
static int cmp_tensor_off_idx(const clv_gguf *g, int64_t a, int64_t b) {
    const clv_gguf_tensor *x = &g->tensors[a], *y = &g->tensors[b];
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->size < y->size ? -1 : x->size > y->size;
}

/* Stable bottom-up merge sort of n indices; false when out of memory. */
static bool sort_idx(int64_t *idx, int64_t n, const clv_gguf *g, idx_cmp cmp) {
    if (n < 2) return true;
    int64_t *tmp = malloc(sizeof *tmp * (size_t)n);
    if (!tmp) return false;
    for (int64_t w = 1; w < n; w *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * w) {
            int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int64_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) tmp[k++] = cmp(g, idx[i], idx[j]) <= 0 ? idx[i++] : idx[j++];
            while (i < mid) tmp[k++] = idx[i++];
            while (j < hi) tmp[k++] = idx[j++];
        }
        memcpy(idx, tmp, sizeof *idx * (size_t)n);
    }
    free(tmp);
    return true;
}

/* A fresh array 0..n-1 sorted by cmp; NULL when out of memory. */
static int64_t *sorted_idx(int64_t n, const clv_gguf *g, idx_cmp cmp) {
    int64_t *idx = malloc(sizeof *idx * (size_t)(n ? n : 1));
    if (!idx) return NULL;
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    if (!sort_idx(idx, n, g, cmp)) {
        free(idx);
        return NULL;
    }
    return idx;
}

static int parse(clv_gguf *g, cursor *c) {
    int rc;
    if (c->len < 4 || memcmp(c->b, "GGUF", 4) != 0)
        return clv_fail(c->st, CLV_EFORMAT, "%s: not a GGUF file (the first 4 bytes are not \"GGUF\")", c->fname);
    c->pos = 4;
    if ((rc = rd_u32(c, &g->version, "header: version"))) return rc;
    if (g->version != 2 && g->version != 3) {
        if ((g->version & 0xffffu) == 0 && (g->version >> 16) != 0)
            return clv_fail(c->st, CLV_EFORMAT, "%s: header: version %u reads as a big-endian GGUF file, which cleave does not read",
                            c->fname, g->version);
        return clv_fail(c->st, CLV_EFORMAT, "%s: header: version %u is not supported (cleave reads GGUF versions 2 and 3)",
                        c->fname, g->version);
    }
    uint64_t n_tensors, n_kv;
    if ((rc = rd_u64(c, &n_tensors, "header: tensor_count")) || (rc = rd_u64(c, &n_kv, "header: metadata_kv_count")))
        return rc;
    /* Smallest encodings: a key/value is 8 + 1 + 4 + 1 bytes, a tensor info 8 + 1 + 4 + 4 + 8. */
    size_t left = c->len - c->pos;
    if (n_kv > left / 14)
        return clv_fail(c->st, CLV_EFORMAT, "%s: header: metadata_kv_count %llu cannot fit in the %zu bytes after the header",
                        c->fname, (unsigned long long)n_kv, left);
    if (n_tensors > left / 25)
        return clv_fail(c->st, CLV_EFORMAT, "%s: header: tensor_count %llu cannot fit in the %zu bytes after the header",
                        c->fname, (unsigned long long)n_tensors, left);

    g->kv = calloc((size_t)(n_kv ? n_kv : 1), sizeof *g->kv);
    g->tensors = calloc((size_t)(n_tensors ? n_tensors : 1), sizeof *g->tensors);
    if (!g->kv || !g->tensors) return clv_fail(c->st, CLV_ENOMEM, "%s: out of memory", c->fname);

    char what[320];
    g->alignment = CLV_GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < n_kv; i++) {
        clv_gguf_kv *kv = &g->kv[i];
        const char *ks;
        uint64_t kn;
        snprintf(what, sizeof what, "metadata #%llu: key", (unsigned long long)i);
        if ((rc = rd_str(c, &ks, &kn, what))) return rc;
        if ((rc = copy_name(c, ks, kn, CLV_GGUF_MAX_KEY, &kv->key, what))) return rc;
        g->n_kv = (int64_t)i + 1; /* the key is ours to free from here on */
        uint32_t type;
        snprintf(what, sizeof what, "metadata '%.200s': value type", kv->key);
        if ((rc = rd_u32(c, &type, what))) return rc;
        snprintf(what, sizeof what, "metadata '%.200s'", kv->key);
        if ((rc = parse_value(c, type, 0, &kv->v, what))) return rc;
        if (strcmp(kv->key, "general.alignment") == 0) {
            if (type != CLV_GGUF_U32)
                return clv_fail(c->st, CLV_EFORMAT, "%s: metadata 'general.alignment' is %s, must be UINT32", c->fname,
                                clv_gguf_type_name(type));
            uint64_t a = kv->v.num.u;
            if (a == 0 || (a & (a - 1)) != 0)
                return clv_fail(c->st, CLV_EFORMAT, "%s: metadata 'general.alignment' is %llu, must be a power of two",
                                c->fname, (unsigned long long)a);
            g->alignment = (uint32_t)a;
        }
    }
    if (g->n_kv > 1) {
        int64_t *idx = sorted_idx(g->n_kv, g, cmp_key_idx);
        if (!idx) return clv_fail(c->st, CLV_ENOMEM, "%s: out of memory", c->fname);
        for (int64_t i = 1; i < g->n_kv; i++)
            if (strcmp(g->kv[idx[i]].key, g->kv[idx[i - 1]].key) == 0) {
                rc = clv_fail(c->st, CLV_EFORMAT, "%s: metadata key '%.200s' appears twice", c->fname, g->kv[idx[i]].key);
                free(idx);
                return rc;
            }
        free(idx);
    }

    for (uint64_t i = 0; i < n_tensors; i++) {
        clv_gguf_tensor *t = &g->tensors[i];
        const char *ns;
        uint64_t nn;
        snprintf(what, sizeof what, "tensor #%llu: name", (unsigned long long)i);
        if ((rc = rd_str(c, &ns, &nn, what))) return rc;
        if ((rc = copy_name(c, ns, nn, CLV_GGUF_MAX_NAME, &t->name, what))) return rc;
        g->n_tensors = (int64_t)i + 1;
        snprintf(what, sizeof what, "tensor '%s': n_dims", t->name);
        if ((rc = rd_u32(c, &t->n_dims, what))) return rc;
        if (t->n_dims > CLV_GGUF_MAX_DIMS)
            return clv_fail(c->st, CLV_EFORMAT, "%s: tensor '%s': n_dims is %u (at most %d)", c->fname, t->name, t->n_dims,
                            CLV_GGUF_MAX_DIMS);
        uint64_t numel = 1;
        for (int d = 0; d < CLV_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            uint64_t ne;
            snprintf(what, sizeof what, "tensor '%s': dim %u", t->name, d);
            if ((rc = rd_u64(c, &ne, what))) return rc;
            if (ne > (uint64_t)INT64_MAX || !clv_mul_ok(numel, ne, &numel) || numel > (uint64_t)INT64_MAX)
                return clv_fail(c->st, CLV_EFORMAT, "%s: tensor '%s': dims overflow (dim %u is %llu)", c->fname, t->name, d,
                                (unsigned long long)ne);
            t->ne[d] = (int64_t)ne;
        }
        snprintf(what, sizeof what, "tensor '%s': type", t->name);
        if ((rc = rd_u32(c, &t->type, what))) return rc;
        uint32_t blk, bytes;
        if (!clv_ggml_type_info(t->type, &blk, &bytes))
            return clv_fail(c->st, CLV_EFORMAT, "%s: tensor '%s': unknown ggml type %u", c->fname, t->name, t->type);
        if (t->ne[0] % blk != 0)
            return clv_fail(c->st, CLV_EFORMAT, "%s: tensor '%s': innermost dim %lld is not a multiple of %s's block of %u",
                            c->fname, t->name, (long long)t->ne[0], clv_ggml_type_name(t->type), blk);
        if (!clv_mul_ok(numel / blk, bytes, &t->size))
            return clv_fail(c->st, CLV_EFORMAT, "%s: tensor '%s': byte size overflows", c->fname, t->name);
        snprintf(what, sizeof what, "tensor '%s': offset", t->name);
        if ((rc = rd_u64(c, &t->offset, what))) return rc;
        if (t->offset % g->alignment != 0)
            return clv_fail(c->st, CLV_EFORMAT, "%s: tensor '%s': offset %llu is not a multiple of the alignment %u", c->fname,
                            t->name, (unsigned long long)t->offset, g->alignment);
    }

    /* The data section starts at the next multiple of the alignment. A file
     * without tensors may end before it. */
    uint64_t data = ((uint64_t)c->pos + g->alignment - 1) / g->alignment * g->alignment;
    g->data_offset = data;
    uint64_t data_size = data <= c->len ? c->len - data : 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        clv_gguf_tensor *t = &g->tensors[i];
        if (t->offset > data_size || t->size > data_size - t->offset)
            return clv_fail(c->st, CLV_EFORMAT,
                            "%s: tensor '%s': data [%llu, %llu) of the data section runs past the end of the file (the data section has %llu bytes)",
                            c->fname, t->name, (unsigned long long)t->offset, (unsigned long long)(t->offset + t->size),
                            (unsigned long long)data_size);
        t->data = c->b + data + t->offset;
    }
    if (g->n_tensors > 1) {
        int64_t *idx = sorted_idx(g->n_tensors, g, cmp_tensor_name_idx);
        if (!idx) return clv_fail(c->st, CLV_ENOMEM, "%s: out of memory", c->fname);
        for (int64_t i = 1; i < g->n_tensors && rc == 0; i++)
            if (strcmp(g->tensors[idx[i]].name, g->tensors[idx[i - 1]].name) == 0)
                rc = clv_fail(c->st, CLV_EFORMAT, "%s: tensor '%s' appears twice", c->fname, g->tensors[idx[i]].name);
        if (rc == 0 && !sort_idx(idx, g->n_tensors, g, cmp_tensor_off_idx))
            rc = clv_fail(c->st, CLV_ENOMEM, "%s: out of memory", c->fname);
        if (rc == 0) {
            for (int64_t i = 1; i < g->n_tensors && rc == 0; i++) {
                const clv_gguf_tensor *a = &g->tensors[idx[i - 1]], *b = &g->tensors[idx[i]];
                if (b->offset < a->offset + a->size)
                    rc = clv_fail(c->st, CLV_EFORMAT, "%s: tensors '%s' and '%s' overlap (bytes %llu..%llu and %llu..%llu)",
                                  c->fname, a->name, b->name, (unsigned long long)a->offset,
                                  (unsigned long long)(a->offset + a->size), (unsigned long long)b->offset,
                                  (unsigned long long)(b->offset + b->size));
            }
        }
        free(idx);
    }
    return rc;
}

int clv_gguf_parse(clv_gguf *g, const uint8_t *buf, size_t len, const char *fname, clv_status *st) {
    memset(g, 0, sizeof *g);
    g->fd = -1;
    g->path = strdup(fname ? fname : "(memory)");
    if (!g->path) return clv_fail(st, CLV_ENOMEM, "out of memory");
    cursor c = {buf, len, 0, g->path, st};
    int rc = parse(g, &c);
    if (rc) {
        /* keep the message; free everything else */
        char *p = g->path;
        g->path = NULL;
        clv_gguf_close(g);
        free(p);
    }
    return rc;
}

int clv_gguf_open(clv_gguf *g, const char *path, clv_status *st) {
    memset(g, 0, sizeof *g);
    g->fd = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return clv_fail(st, CLV_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return clv_fail(st, CLV_EIO, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    const uint8_t *map = NULL;
    if (size > 0) {
        void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            return clv_fail(st, CLV_EIO, "%s: cannot map %zu bytes: %s", path, size, strerror(e));
        }
        map = m;
    }
    static const uint8_t empty[1] = {0};
    int rc = clv_gguf_parse(g, map ? map : empty, size, path, st);
    if (rc) {
        if (map) munmap((void *)map, size);
        close(fd);
        return rc;
    }
    g->fd = fd;
    g->map = map;
    g->size = size;
    return 0;
}

void clv_gguf_close(clv_gguf *g) {
    if (!g) return;
    for (int64_t i = 0; i < g->n_kv; i++) {
        free(g->kv[i].key);
        value_free(&g->kv[i].v);
    }
    free(g->kv);
    for (int64_t i = 0; i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->tensors);
    if (g->map) munmap((void *)g->map, g->size);
    if (g->fd >= 0) close(g->fd);
    free(g->path);
    memset(g, 0, sizeof *g);
    g->fd = -1;
}

/* ---- lookups ---------------------------------------------------------------------- */

const clv_gguf_kv *clv_gguf_find(const clv_gguf *g, const char *key) {
    for (int64_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    return NULL;
}

const clv_gguf_tensor *clv_gguf_find_tensor(const clv_gguf *g, const char *name) {
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
    return NULL;
}

int64_t clv_gguf_numel(const clv_gguf_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < CLV_GGUF_MAX_DIMS; d++) n *= t->ne[d];
    return n;
}

int clv_gguf_get_int(const clv_gguf *g, const char *key, int64_t lo, int64_t hi, int64_t *out, clv_status *st) {
    const clv_gguf_kv *kv = clv_gguf_find(g, key);
    if (!kv) return 1;
    if (!is_int_type(kv->v.type))
        return clv_fail(st, CLV_EINVAL, "%s: metadata '%s' is %s, expected an integer", g->path, key,
                        clv_gguf_type_name(kv->v.type));
    bool neg = is_signed_type(kv->v.type) && kv->v.num.i < 0;
    if (!neg && !is_signed_type(kv->v.type) && kv->v.num.u > (uint64_t)INT64_MAX)
        return clv_fail(st, CLV_EINVAL, "%s: metadata '%s' is %llu, outside [%lld, %lld]", g->path, key,
                        (unsigned long long)kv->v.num.u, (long long)lo, (long long)hi);
    int64_t v = kv->v.num.i;
    if (v < lo || v > hi)
        return clv_fail(st, CLV_EINVAL, "%s: metadata '%s' is %lld, outside [%lld, %lld]", g->path, key, (long long)v,
                        (long long)lo, (long long)hi);
    *out = v;
    return 0;
}

int clv_gguf_get_float(const clv_gguf *g, const char *key, double *out, clv_status *st) {
    const clv_gguf_kv *kv = clv_gguf_find(g, key);
    if (!kv) return 1;
    if (kv->v.type == CLV_GGUF_F32 || kv->v.type == CLV_GGUF_F64) *out = kv->v.num.f;
    else if (is_int_type(kv->v.type)) *out = is_signed_type(kv->v.type) ? (double)kv->v.num.i : (double)kv->v.num.u;
    else
        return clv_fail(st, CLV_EINVAL, "%s: metadata '%s' is %s, expected a number", g->path, key,
                        clv_gguf_type_name(kv->v.type));
    return 0;
}

int clv_gguf_get_bool(const clv_gguf *g, const char *key, bool *out, clv_status *st) {
    const clv_gguf_kv *kv = clv_gguf_find(g, key);
    if (!kv) return 1;
    if (kv->v.type != CLV_GGUF_BOOL)
        return clv_fail(st, CLV_EINVAL, "%s: metadata '%s' is %s, expected BOOL", g->path, key,
                        clv_gguf_type_name(kv->v.type));
    *out = kv->v.num.b;
    return 0;
}

int clv_gguf_get_str(const clv_gguf *g, const char *key, char **out, clv_status *st) {
    const clv_gguf_kv *kv = clv_gguf_find(g, key);
    if (!kv) return 1;
    if (kv->v.type != CLV_GGUF_STRING)
        return clv_fail(st, CLV_EINVAL, "%s: metadata '%s' is %s, expected STRING", g->path, key,
                        clv_gguf_type_name(kv->v.type));
    if (memchr(kv->v.str, 0, (size_t)kv->v.len))
        return clv_fail(st, CLV_EINVAL, "%s: metadata '%s' contains a NUL byte", g->path, key);
    char *s = malloc((size_t)kv->v.len + 1);
    if (!s) return clv_fail(st, CLV_ENOMEM, "%s: out of memory for '%s'", g->path, key);
    memcpy(s, kv->v.str, (size_t)kv->v.len);
    s[kv->v.len] = 0;
    *out = s;
    return 0;
}

int clv_gguf_get_array(const clv_gguf *g, const char *key, uint32_t elem, const clv_gguf_value **out, clv_status *st) {
    const clv_gguf_kv *kv = clv_gguf_find(g, key);
    if (!kv) return 1;
    bool ok = kv->v.type == CLV_GGUF_ARRAY &&
              (kv->v.elem == elem || (elem == CLV_GGUF_I64 && is_int_type(kv->v.elem)) ||
               (elem == CLV_GGUF_F64 && (kv->v.elem == CLV_GGUF_F32 || kv->v.elem == CLV_GGUF_F64)));
    if (!ok)
        return clv_fail(st, CLV_EINVAL, "%s: metadata '%s' is %s%s%s, expected an array of %s", g->path, key,
                        clv_gguf_type_name(kv->v.type), kv->v.type == CLV_GGUF_ARRAY ? " of " : "",
                        kv->v.type == CLV_GGUF_ARRAY ? clv_gguf_type_name(kv->v.elem) : "",
                        elem == CLV_GGUF_I64 ? "integers" : elem == CLV_GGUF_F64 ? "numbers" : clv_gguf_type_name(elem));
    *out = &kv->v;
    return 0;
}

int64_t clv_gguf_arr_int(const clv_gguf_value *v, uint64_t i) {
    CLV_ASSERT(v->type == CLV_GGUF_ARRAY && v->data && i < v->len && is_int_type(v->elem));
    clv_gguf_value x;
    scalar_at(v->elem, v->data + i * k_vtypes[v->elem].size, &x);
    return x.num.i;
}

double clv_gguf_arr_float(const clv_gguf_value *v, uint64_t i) {
    CLV_ASSERT(v->type == CLV_GGUF_ARRAY && v->data && i < v->len);
    clv_gguf_value x;
    scalar_at(v->elem, v->data + i * k_vtypes[v->elem].size, &x);
    if (v->elem == CLV_GGUF_F32 || v->elem == CLV_GGUF_F64) return x.num.f;
    return is_signed_type(v->elem) ? (double)x.num.i : (double)x.num.u;
}

/* ---- writer ------------------------------------------------------------------------ */

static void put(clv_gguf_writer *w, uint8_t **buf, size_t *len, size_t *cap, const void *p, size_t n) {
    if (w->oom) return;
    if (*len + n > *cap) {
        size_t nc = *cap ? *cap : 256;
        while (nc < *len + n) nc *= 2;
        uint8_t *nb = realloc(*buf, nc);
        if (!nb) {
            w->oom = true;
            return;
        }
        *buf = nb;
        *cap = nc;
    }
    if (n) memcpy(*buf + *len, p, n);
    *len += n;
}
static void put_le(clv_gguf_writer *w, uint8_t **buf, size_t *len, size_t *cap, uint64_t v, int n) {
    uint8_t b[8];
    for (int i = 0; i < n; i++) b[i] = (uint8_t)(v >> (8 * i));
    put(w, buf, len, cap, b, (size_t)n);
}
#define KV_LE(v, n) put_le(w, &w->kv, &w->kv_len, &w->kv_cap, (v), (n))
static void kv_str(clv_gguf_writer *w, const char *s) {
    size_t n = strlen(s);
    KV_LE(n, 8);
    put(w, &w->kv, &w->kv_len, &w->kv_cap, s, n);
}
static void kv_head(clv_gguf_writer *w, const char *key, uint32_t type) {
    kv_str(w, key);
    KV_LE(type, 4);
    w->n_kv++;
}

void clv_gguf_writer_init(clv_gguf_writer *w, uint32_t alignment) {
    memset(w, 0, sizeof *w);
    w->alignment = alignment ? alignment : CLV_GGUF_DEFAULT_ALIGNMENT;
}
void clv_gguf_writer_free(clv_gguf_writer *w) {
    free(w->kv);
    free(w->ti);
    free(w->data);
    memset(w, 0, sizeof *w);
}
void clv_gguf_w_u32(clv_gguf_writer *w, const char *key, uint32_t v) { kv_head(w, key, CLV_GGUF_U32), KV_LE(v, 4); }
void clv_gguf_w_i32(clv_gguf_writer *w, const char *key, int32_t v) { kv_head(w, key, CLV_GGUF_I32), KV_LE((uint32_t)v, 4); }
void clv_gguf_w_u64(clv_gguf_writer *w, const char *key, uint64_t v) { kv_head(w, key, CLV_GGUF_U64), KV_LE(v, 8); }
void clv_gguf_w_f32(clv_gguf_writer *w, const char *key, float v) {
    union { float f; uint32_t u; } c = {.f = v};
    kv_head(w, key, CLV_GGUF_F32);
    KV_LE(c.u, 4);
}
void clv_gguf_w_bool(clv_gguf_writer *w, const char *key, bool v) { kv_head(w, key, CLV_GGUF_BOOL), KV_LE(v ? 1u : 0u, 1); }
void clv_gguf_w_str(clv_gguf_writer *w, const char *key, const char *v) { kv_head(w, key, CLV_GGUF_STRING), kv_str(w, v); }
void clv_gguf_w_strs(clv_gguf_writer *w, const char *key, const char *const *v, uint64_t n) {
    kv_head(w, key, CLV_GGUF_ARRAY);
    KV_LE(CLV_GGUF_STRING, 4);
    KV_LE(n, 8);
    for (uint64_t i = 0; i < n; i++) kv_str(w, v[i]);
}
void clv_gguf_w_i32s(clv_gguf_writer *w, const char *key, const int32_t *v, uint64_t n) {
    kv_head(w, key, CLV_GGUF_ARRAY);
    KV_LE(CLV_GGUF_I32, 4);
    KV_LE(n, 8);
    for (uint64_t i = 0; i < n; i++) KV_LE((uint32_t)v[i], 4);
}
void clv_gguf_w_f32s(clv_gguf_writer *w, const char *key, const float *v, uint64_t n) {
    kv_head(w, key, CLV_GGUF_ARRAY);
    KV_LE(CLV_GGUF_F32, 4);
    KV_LE(n, 8);
    for (uint64_t i = 0; i < n; i++) {
        union { float f; uint32_t u; } c = {.f = v[i]};
        KV_LE(c.u, 4);
    }
}
void clv_gguf_w_raw(clv_gguf_writer *w, const char *key, uint32_t type, const void *bytes, size_t n) {
    kv_head(w, key, type);
    put(w, &w->kv, &w->kv_len, &w->kv_cap, bytes, n);
}
#undef KV_LE

void clv_gguf_w_tensor(clv_gguf_writer *w, const char *name, uint32_t type, int n_dims, const int64_t *ne,
                       const void *bytes, size_t n) {
    size_t nl = strlen(name);
    put_le(w, &w->ti, &w->ti_len, &w->ti_cap, nl, 8);
    put(w, &w->ti, &w->ti_len, &w->ti_cap, name, nl);
    put_le(w, &w->ti, &w->ti_len, &w->ti_cap, (uint64_t)n_dims, 4);
    for (int d = 0; d < n_dims; d++) put_le(w, &w->ti, &w->ti_len, &w->ti_cap, (uint64_t)ne[d], 8);
    put_le(w, &w->ti, &w->ti_len, &w->ti_cap, type, 4);
    put_le(w, &w->ti, &w->ti_len, &w->ti_cap, w->data_len, 8);
    put(w, &w->data, &w->data_len, &w->data_cap, bytes, n);
    static const uint8_t zeros[64] = {0};
    while (!w->oom && w->data_len % w->alignment) {
        size_t pad = w->alignment - w->data_len % w->alignment;
        put(w, &w->data, &w->data_len, &w->data_cap, zeros, pad < sizeof zeros ? pad : sizeof zeros);
    }
    w->n_tensors++;
}

uint8_t *clv_gguf_writer_finish(clv_gguf_writer *w, size_t *len) {
    if (w->oom) return NULL;
    size_t head = 4 + 4 + 8 + 8 + w->kv_len + w->ti_len;
    size_t data_at = (head + w->alignment - 1) / w->alignment * w->alignment;
    size_t total = w->n_tensors ? data_at + w->data_len : head;
    uint8_t *out = calloc(1, total ? total : 1);
    if (!out) return NULL;
    uint8_t *p = out;
    memcpy(p, "GGUF", 4);
    p += 4;
    for (int i = 0; i < 4; i++) *p++ = (uint8_t)(3u >> (8 * i));
    for (int i = 0; i < 8; i++) *p++ = (uint8_t)(w->n_tensors >> (8 * i));
    for (int i = 0; i < 8; i++) *p++ = (uint8_t)(w->n_kv >> (8 * i));
    if (w->kv_len) memcpy(p, w->kv, w->kv_len);
    p += w->kv_len;
    if (w->ti_len) memcpy(p, w->ti, w->ti_len);
    if (w->n_tensors && w->data_len) memcpy(out + data_at, w->data, w->data_len);
    *len = total;
    return out;
}
