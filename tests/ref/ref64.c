/*
 * ref64 -- an independent, deliberately naive, double-precision reference
 * forward pass for Hugging Face causal-LM checkpoints (Llama, Mistral, Qwen2,
 * Qwen3, Phi3), used to check the logits produced by cleave.
 *
 * Written from the public model definitions in Hugging Face transformers
 * (modeling_llama / modeling_mistral / modeling_qwen2 / modeling_qwen3 /
 * modeling_phi3 + configuration_phi3, modeling_rope_utils, masking_utils) and the safetensors format description.
 * It shares no code with src/ on purpose: see tests/ref/README.md.
 *
 * Build:
 *   cc -O2 -std=c11 -Wall -Wextra -Werror tests/ref/ref64.c -lcjson -lm
 *
 * Usage:
 *   ref64 -m MODEL_DIR --ids 1,2,3 [--logits FILE [--atol A] [--rtol R]]
 *         [--dump FILE] [--int8] [--kv-bf16] [-v]
 *
 * Exit status: 0 computed (and PASS when --logits is given), 1 FAIL,
 *              2 usage error, unreadable input or unsupported model.
 */
#define _POSIX_C_SOURCE 200809L
#define _FILE_OFFSET_BITS 64

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* ------------------------------------------------------------------------ */
/* small helpers                                                            */
/* ------------------------------------------------------------------------ */

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ref64: error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory (%zu bytes)", n);
    return p;
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p)
        die("out of memory (%zu x %zu bytes)", n, sz);
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}

static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = xmalloc(a + b + 2);
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

static int file_exists(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    fclose(f);
    return 1;
}

/* Reads a whole file; returns NULL if it cannot be opened. */
static char *read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    if (fseeko(f, 0, SEEK_END) != 0)
        die("cannot seek in %s", path);
    off_t sz = ftello(f);
    if (sz < 0)
        die("cannot size %s", path);
    if (fseeko(f, 0, SEEK_SET) != 0)
        die("cannot seek in %s", path);
    char *buf = xmalloc((size_t)sz + 1);
    if (sz > 0 && fread(buf, 1, (size_t)sz, f) != (size_t)sz)
        die("short read on %s", path);
    buf[sz] = '\0';
    fclose(f);
    if (len_out)
        *len_out = (size_t)sz;
    return buf;
}

/* ------------------------------------------------------------------------ */
/* config.json access (HF semantics: a missing key or an explicit null both */
/* mean "use the default")                                                  */
/* ------------------------------------------------------------------------ */

static const cJSON *jget(const cJSON *obj, const char *key)
{
    if (!obj || !cJSON_IsObject(obj))
        return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v))
        return NULL;
    return v;
}

static double jnum(const cJSON *obj, const char *key, double def, int *present)
{
    const cJSON *v = jget(obj, key);
    if (present)
        *present = v != NULL;
    if (!v)
        return def;
    if (!cJSON_IsNumber(v))
        die("config key \"%s\" is not a number", key);
    return v->valuedouble;
}

static long jint(const cJSON *obj, const char *key, long def, int *present)
{
    const cJSON *v = jget(obj, key);
    if (present)
        *present = v != NULL;
    if (!v)
        return def;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        die("config key \"%s\" is not an integer", key);
    return (long)v->valuedouble;
}

static int jbool(const cJSON *obj, const char *key, int def)
{
    const cJSON *v = jget(obj, key);
    if (!v)
        return def;
    if (!cJSON_IsBool(v))
        die("config key \"%s\" is not a boolean", key);
    return cJSON_IsTrue(v) ? 1 : 0;
}

static const char *jstr(const cJSON *obj, const char *key, const char *def)
{
    const cJSON *v = jget(obj, key);
    if (!v)
        return def;
    if (!cJSON_IsString(v))
        die("config key \"%s\" is not a string", key);
    return v->valuestring;
}

/* Python truthiness of an optional numeric entry ("x or default"). */
static double jnum_or(const cJSON *obj, const char *key, double def)
{
    int present;
    double v = jnum(obj, key, def, &present);
    if (!present || v == 0.0)
        return def;
    return v;
}

/* ------------------------------------------------------------------------ */
/* safetensors                                                              */
/* ------------------------------------------------------------------------ */

enum { DT_F64, DT_F32, DT_F16, DT_BF16 };

typedef struct {
    char *path;
    FILE *fp;
    uint64_t data_start; /* 8 + header length */
    uint64_t size;       /* file size in bytes */
} StFile;

typedef struct {
    char *name;
    int file;
    int dtype;
    int ndim;
    int64_t shape[8];
    uint64_t begin, end; /* relative to data_start */
    int used;
} TensorInfo;

typedef struct {
    StFile *files;
    int nfiles;
    TensorInfo *tensors;
    int ntensors, cap;
} Store;

static int dtype_size(int dt)
{
    switch (dt) {
    case DT_F64: return 8;
    case DT_F32: return 4;
    default: return 2;
    }
}

static void store_add_file(Store *st, const char *path)
{
    for (int i = 0; i < st->nfiles; i++)
        if (strcmp(st->files[i].path, path) == 0)
            return;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        die("cannot open weights file %s: %s", path, strerror(errno));
    if (fseeko(fp, 0, SEEK_END) != 0)
        die("cannot seek in %s", path);
    off_t fsz = ftello(fp);
    if (fsz < 8)
        die("%s: too small to be a safetensors file", path);
    if (fseeko(fp, 0, SEEK_SET) != 0)
        die("cannot seek in %s", path);
    unsigned char lenb[8];
    if (fread(lenb, 1, 8, fp) != 8)
        die("%s: cannot read header length", path);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | lenb[i];
    if (hlen == 0 || hlen > (uint64_t)fsz - 8)
        die("%s: bad header length %llu", path, (unsigned long long)hlen);
    char *hdr = xmalloc((size_t)hlen + 1);
    if (fread(hdr, 1, (size_t)hlen, fp) != (size_t)hlen)
        die("%s: short header", path);
    hdr[hlen] = '\0';
    cJSON *j = cJSON_ParseWithLength(hdr, (size_t)hlen);
    if (!j || !cJSON_IsObject(j))
        die("%s: header is not a JSON object", path);

    st->files = realloc(st->files, sizeof(StFile) * (size_t)(st->nfiles + 1));
    if (!st->files)
        die("out of memory");
    int fi = st->nfiles++;
    st->files[fi].path = xstrdup(path);
    st->files[fi].fp = fp;
    st->files[fi].data_start = 8 + hlen;
    st->files[fi].size = (uint64_t)fsz;
    uint64_t data_len = (uint64_t)fsz - 8 - hlen;

    const cJSON *e;
    cJSON_ArrayForEach(e, j)
    {
        if (strcmp(e->string, "__metadata__") == 0)
            continue;
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2)
            die("%s: malformed header entry for \"%s\"", path, e->string);
        TensorInfo t;
        memset(&t, 0, sizeof t);
        t.name = xstrdup(e->string);
        t.file = fi;
        const char *d = dt->valuestring;
        if (strcmp(d, "F64") == 0)
            t.dtype = DT_F64;
        else if (strcmp(d, "F32") == 0)
            t.dtype = DT_F32;
        else if (strcmp(d, "F16") == 0)
            t.dtype = DT_F16;
        else if (strcmp(d, "BF16") == 0)
            t.dtype = DT_BF16;
        else
            t.dtype = -1; /* rejected only if the tensor is actually used */
        t.ndim = cJSON_GetArraySize(sh);
        if (t.ndim > 8)
            die("%s: tensor \"%s\" has too many dimensions", path, t.name);
        uint64_t numel = 1;
        for (int k = 0; k < t.ndim; k++) {
            const cJSON *x = cJSON_GetArrayItem(sh, k);
            if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble != floor(x->valuedouble))
                die("%s: bad shape for \"%s\"", path, t.name);
            t.shape[k] = (int64_t)x->valuedouble;
            numel *= (uint64_t)t.shape[k];
        }
        const cJSON *b = cJSON_GetArrayItem(of, 0), *en = cJSON_GetArrayItem(of, 1);
        if (!cJSON_IsNumber(b) || !cJSON_IsNumber(en) || b->valuedouble < 0 || en->valuedouble < b->valuedouble)
            die("%s: bad data_offsets for \"%s\"", path, t.name);
        t.begin = (uint64_t)b->valuedouble;
        t.end = (uint64_t)en->valuedouble;
        if (t.end > data_len)
            die("%s: data of \"%s\" runs past the end of the file", path, t.name);
        if (t.dtype >= 0 && t.end - t.begin != numel * (uint64_t)dtype_size(t.dtype))
            die("%s: \"%s\" byte size does not match its shape and dtype", path, t.name);
        for (int k = 0; k < st->ntensors; k++)
            if (strcmp(st->tensors[k].name, t.name) == 0)
                die("tensor \"%s\" appears twice", t.name);
        if (st->ntensors == st->cap) {
            st->cap = st->cap ? 2 * st->cap : 256;
            st->tensors = realloc(st->tensors, sizeof(TensorInfo) * (size_t)st->cap);
            if (!st->tensors)
                die("out of memory");
        }
        st->tensors[st->ntensors++] = t;
    }
    cJSON_Delete(j);
    free(hdr);
}

static void store_open(Store *st, const char *dir)
{
    memset(st, 0, sizeof *st);
    /* transformers looks for the single file first, then the index. */
    char *single = path_join(dir, "model.safetensors");
    char *index = path_join(dir, "model.safetensors.index.json");
    if (file_exists(single)) {
        store_add_file(st, single);
    } else if (file_exists(index)) {
        size_t len;
        char *txt = read_file(index, &len);
        cJSON *j = cJSON_ParseWithLength(txt, len);
        if (!j)
            die("%s: not valid JSON", index);
        const cJSON *wm = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
        if (!cJSON_IsObject(wm))
            die("%s: no \"weight_map\" object", index);
        const cJSON *e;
        cJSON_ArrayForEach(e, wm)
        {
            if (!cJSON_IsString(e))
                die("%s: weight_map entry \"%s\" is not a string", index, e->string);
            char *p = path_join(dir, e->valuestring);
            store_add_file(st, p);
            free(p);
        }
        /* every tensor named by the index must be in the shard it names */
        cJSON_ArrayForEach(e, wm)
        {
            int found = 0;
            for (int k = 0; k < st->ntensors && !found; k++) {
                if (strcmp(st->tensors[k].name, e->string) == 0) {
                    char *p = path_join(dir, e->valuestring);
                    if (strcmp(st->files[st->tensors[k].file].path, p) != 0)
                        die("index puts \"%s\" in %s but it is in %s", e->string, p,
                            st->files[st->tensors[k].file].path);
                    free(p);
                    found = 1;
                }
            }
            if (!found)
                die("index names \"%s\" but no shard holds it", e->string);
        }
        cJSON_Delete(j);
        free(txt);
    } else {
        die("no model.safetensors or model.safetensors.index.json in %s", dir);
    }
    free(single);
    free(index);
}

static TensorInfo *store_find(Store *st, const char *name)
{
    for (int i = 0; i < st->ntensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0)
            return &st->tensors[i];
    return NULL;
}

static double half_to_double(uint16_t h)
{
    int sign = (h >> 15) & 1;
    int exp = (h >> 10) & 0x1f;
    int mant = h & 0x3ff;
    double v;
    if (exp == 0)
        v = ldexp((double)mant, -24); /* zero or subnormal */
    else if (exp == 31)
        v = mant ? NAN : INFINITY;
    else
        v = ldexp((double)(mant | 0x400), exp - 25);
    return sign ? -v : v;
}

static double f32bits_to_double(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return (double)f;
}

/* Loads a tensor as doubles. Checks the shape against the expected one
 * (ndim dims in `dims`). Returns NULL when absent and !required. */
static double *load_tensor(Store *st, const char *name, int ndim, const int64_t *dims, int required)
{
    TensorInfo *t = store_find(st, name);
    if (!t) {
        if (required)
            die("checkpoint lacks tensor \"%s\"", name);
        return NULL;
    }
    if (t->dtype < 0)
        die("tensor \"%s\" has an unsupported dtype (only F64, F32, F16, BF16)", name);
    if (t->ndim != ndim)
        die("tensor \"%s\" has %d dimensions, expected %d", name, t->ndim, ndim);
    uint64_t numel = 1;
    for (int k = 0; k < ndim; k++) {
        if (t->shape[k] != dims[k])
            die("tensor \"%s\" dim %d is %lld, expected %lld (config.json disagrees with weights)", name, k,
                (long long)t->shape[k], (long long)dims[k]);
        numel *= (uint64_t)dims[k];
    }
    StFile *f = &st->files[t->file];
    size_t nbytes = (size_t)(t->end - t->begin);
    unsigned char *raw = xmalloc(nbytes);
    if (fseeko(f->fp, (off_t)(f->data_start + t->begin), SEEK_SET) != 0)
        die("cannot seek in %s", f->path);
    if (nbytes && fread(raw, 1, nbytes, f->fp) != nbytes)
        die("short read of \"%s\" from %s", name, f->path);
    double *out = xmalloc(sizeof(double) * (size_t)numel);
    for (uint64_t i = 0; i < numel; i++) {
        const unsigned char *p = raw + i * (uint64_t)dtype_size(t->dtype);
        switch (t->dtype) {
        case DT_F64: {
            uint64_t u = 0;
            for (int k = 7; k >= 0; k--)
                u = (u << 8) | p[k];
            double d;
            memcpy(&d, &u, 8);
            out[i] = d;
            break;
        }
        case DT_F32: {
            uint32_t u = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
            out[i] = f32bits_to_double(u);
            break;
        }
        case DT_F16:
            out[i] = half_to_double((uint16_t)(p[0] | (p[1] << 8)));
            break;
        case DT_BF16:
            out[i] = f32bits_to_double(((uint32_t)p[0] << 16) | ((uint32_t)p[1] << 24));
            break;
        }
    }
    free(raw);
    t->used = 1;
    return out;
}

static double *load_1d(Store *st, const char *name, int64_t d0, int required)
{
    int64_t dims[1] = {d0};
    return load_tensor(st, name, 1, dims, required);
}

/* --int8: every matrix (the 2-D tensors) replaced by the values cleave's
 * `--dtype int8` computes with. Per row: scale = max|w| / 127 and q = w / scale
 * rounded to nearest (ties to even), clamped to [-127, 127], each step one
 * float32 operation as cleave does it, so q and scale are bit-identical; the
 * reference then uses q * scale, in double. (The definition is cleave's
 * documented one; the code is this file's own.) */
static int g_int8;

/* --kv-bf16: keys (after RoPE) and values rounded to the nearest bf16, ties
 * to even, as cleave --kv-dtype bf16 stores its cache. The double is first
 * rounded to float (cleave's keys are floats), then its low 16 bits are
 * rounded off. */
static int g_kv_bf16;

static void bf16_round(double *x, long n)
{
    for (long i = 0; i < n; i++) {
        union { float f; uint32_t u; } v = {.f = (float)x[i]};
        v.u = (v.u + 0x7fffu + ((v.u >> 16) & 1u)) & 0xffff0000u;
        x[i] = v.f;
    }
}

static void int8_round_trip(double *W, int64_t rows, int64_t cols)
{
    for (int64_t r = 0; r < rows; r++) {
        double *row = W + r * cols;
        float amax = 0.0f;
        for (int64_t c = 0; c < cols; c++)
            if (fabsf((float)row[c]) > amax)
                amax = fabsf((float)row[c]);
        const float scale = amax / 127.0f;
        for (int64_t c = 0; c < cols; c++) {
            float q = scale > 0.0f ? rintf((float)row[c] / scale) : 0.0f;
            q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
            row[c] = (double)q * (double)scale;
        }
    }
}

static double *load_2d(Store *st, const char *name, int64_t d0, int64_t d1, int required)
{
    int64_t dims[2] = {d0, d1};
    double *W = load_tensor(st, name, 2, dims, required);
    if (W && g_int8)
        int8_round_trip(W, d0, d1);
    return W;
}

/* ------------------------------------------------------------------------ */
/* model description                                                        */
/* ------------------------------------------------------------------------ */

enum { ARCH_LLAMA, ARCH_MISTRAL, ARCH_QWEN2, ARCH_QWEN3, ARCH_PHI3 };

typedef struct {
    int arch;
    const char *arch_name;
    long vocab, hidden, inter, n_layers, n_heads, n_kv, head_dim;
    long max_pos;
    double eps;
    int qkv_bias, o_bias, mlp_bias, qk_norm, tie;
    int fused; /* Phi3: qkv_proj = [q; k; v] rows, gate_up_proj = [gate; up] rows */
    /* rope */
    double *inv_freq; /* head_dim/2 entries */
    double attn_factor;
    char rope_desc[256];
    /* sliding window per layer: 0 = full causal attention */
    long *window;
} Model;

static void rope_default(Model *m, double base)
{
    long half = m->head_dim / 2;
    for (long i = 0; i < half; i++)
        m->inv_freq[i] = 1.0 / pow(base, (double)(2 * i) / (double)m->head_dim);
}

static void setup_rope(Model *m, const cJSON *cfg, long n_tokens)
{
    long dim = m->head_dim;
    if (dim % 2 != 0)
        die("head_dim %ld is odd; RoPE needs an even head_dim", dim);
    m->inv_freq = xcalloc((size_t)(dim / 2), sizeof(double));
    m->attn_factor = 1.0;

    /* Older configs: rope_theta + rope_scaling. Newer: rope_parameters.
     * transformers prefers a non-empty rope_scaling over rope_parameters. */
    const cJSON *rp = jget(cfg, "rope_scaling");
    if (rp && (!cJSON_IsObject(rp) || cJSON_GetArraySize(rp) == 0))
        rp = NULL;
    if (!rp) {
        rp = jget(cfg, "rope_parameters");
        if (rp && !cJSON_IsObject(rp))
            die("rope_parameters is not an object");
    }
    if (rp) {
        /* per-layer-type nested rope parameters are not supported */
        const cJSON *e;
        cJSON_ArrayForEach(e, rp)
        {
            if (cJSON_IsObject(e))
                die("unsupported: nested (per layer type) rope parameters \"%s\"", e->string);
        }
    }
    double base = jnum(rp, "rope_theta", jnum(cfg, "rope_theta", 10000.0, NULL), NULL);
    const char *type = jstr(rp, "rope_type", jstr(rp, "type", "default"));

    /* a top-level partial_rotary_factor overrides the one in the rope dict */
    double prf = jnum(cfg, "partial_rotary_factor", jnum(rp, "partial_rotary_factor", 1.0, NULL), NULL);
    if (prf != 1.0)
        die("unsupported: partial_rotary_factor %g", prf);

    /* transformers' standardisation: a top-level original_max_position_embeddings
     * wins, else the one inside the rope dict, else max_position_embeddings. */
    long omax = jint(rp, "original_max_position_embeddings", m->max_pos, NULL);
    if (jget(cfg, "original_max_position_embeddings"))
        omax = jint(cfg, "original_max_position_embeddings", m->max_pos, NULL);

    /* Phi3Config maps the legacy "su"/"yarn" to longrope and only accepts
     * "default" or "longrope"; longrope is not supported here. */
    if (m->arch == ARCH_PHI3 && strcmp(type, "default") != 0)
        die("unsupported: Phi3 rope type \"%s\" (longrope/su/yarn are not implemented; only default)", type);

    if (strcmp(type, "default") == 0) {
        rope_default(m, base);
        snprintf(m->rope_desc, sizeof m->rope_desc, "default theta=%g", base);
    } else if (strcmp(type, "linear") == 0) {
        int have;
        double factor = jnum(rp, "factor", 1.0, &have);
        if (!have)
            die("linear rope scaling without \"factor\"");
        rope_default(m, base);
        for (long i = 0; i < dim / 2; i++)
            m->inv_freq[i] /= factor;
        snprintf(m->rope_desc, sizeof m->rope_desc, "linear theta=%g factor=%g", base, factor);
    } else if (strcmp(type, "dynamic") == 0) {
        /* Dynamic NTK: transformers recomputes the frequencies only when the
         * sequence (max position + 1) exceeds max_position_embeddings. */
        int have;
        double factor = jnum(rp, "factor", 1.0, &have);
        if (!have)
            die("dynamic rope scaling without \"factor\"");
        long seq_len = n_tokens > m->max_pos ? n_tokens : m->max_pos;
        double b = base * pow(factor * (double)seq_len / (double)m->max_pos - (factor - 1.0), (double)dim / (double)(dim - 2));
        rope_default(m, b);
        snprintf(m->rope_desc, sizeof m->rope_desc, "dynamic theta=%g factor=%g effective_base=%g", base, factor, b);
    } else if (strcmp(type, "llama3") == 0) {
        int h1, h2, h3;
        double factor = jnum(rp, "factor", 0, &h1);
        double lff = jnum(rp, "low_freq_factor", 0, &h2);
        double hff = jnum(rp, "high_freq_factor", 0, &h3);
        if (!h1 || !h2 || !h3)
            die("llama3 rope scaling needs factor, low_freq_factor, high_freq_factor");
        double old_ctx = (double)omax;
        double low_wavelen = old_ctx / lff;
        double high_wavelen = old_ctx / hff;
        rope_default(m, base);
        for (long i = 0; i < dim / 2; i++) {
            double f = m->inv_freq[i];
            double wavelen = 2.0 * M_PI / f;
            if (wavelen < high_wavelen) {
                /* high frequency: unchanged */
            } else if (wavelen > low_wavelen) {
                f = f / factor;
            } else {
                double smooth = (old_ctx / wavelen - lff) / (hff - lff);
                f = (1.0 - smooth) * f / factor + smooth * f;
            }
            m->inv_freq[i] = f;
        }
        snprintf(m->rope_desc, sizeof m->rope_desc,
                 "llama3 theta=%g factor=%g low_freq_factor=%g high_freq_factor=%g original_max=%ld", base, factor,
                 lff, hff, omax);
    } else if (strcmp(type, "yarn") == 0) {
        int have_factor;
        double factor = jnum(rp, "factor", 0, &have_factor);
        if (!have_factor)
            factor = (double)m->max_pos / (double)omax;
        int have_af, have_ms, have_msa;
        double af = jnum(rp, "attention_factor", 0, &have_af);
        double mscale = jnum(rp, "mscale", 0, &have_ms);
        double mscale_all = jnum(rp, "mscale_all_dim", 0, &have_msa);
        if (!have_af) {
            /* get_mscale(scale, m) = 1 if scale <= 1 else 0.1*m*ln(scale)+1 */
            double g1 = factor <= 1.0 ? 1.0 : 0.1 * log(factor) + 1.0;
            if (have_ms && have_msa && mscale != 0.0 && mscale_all != 0.0) {
                double gn = factor <= 1.0 ? 1.0 : 0.1 * mscale * log(factor) + 1.0;
                double gd = factor <= 1.0 ? 1.0 : 0.1 * mscale_all * log(factor) + 1.0;
                af = gn / gd;
            } else {
                af = g1;
            }
        }
        double beta_fast = jnum_or(rp, "beta_fast", 32.0);
        double beta_slow = jnum_or(rp, "beta_slow", 1.0);
        int truncate = jbool(rp, "truncate", 1);
        /* find_correction_dim(r) = dim*ln(omax/(r*2*pi)) / (2*ln(base)) */
        double low = (double)dim * log((double)omax / (beta_fast * 2.0 * M_PI)) / (2.0 * log(base));
        double high = (double)dim * log((double)omax / (beta_slow * 2.0 * M_PI)) / (2.0 * log(base));
        if (truncate) {
            low = floor(low);
            high = ceil(high);
        }
        if (low < 0)
            low = 0;
        if (high > (double)(dim - 1))
            high = (double)(dim - 1);
        if (low == high)
            high += 0.001; /* as transformers: avoid a zero-width ramp */
        for (long i = 0; i < dim / 2; i++) {
            double pos_freq = pow(base, (double)(2 * i) / (double)dim);
            double extrap = 1.0 / pos_freq;
            double interp = 1.0 / (factor * pos_freq);
            double ramp = ((double)i - low) / (high - low);
            if (ramp < 0)
                ramp = 0;
            if (ramp > 1)
                ramp = 1;
            double ef = 1.0 - ramp; /* extrapolation weight */
            m->inv_freq[i] = interp * (1.0 - ef) + extrap * ef;
        }
        m->attn_factor = af;
        snprintf(m->rope_desc, sizeof m->rope_desc,
                 "yarn theta=%g factor=%g original_max=%ld beta_fast=%g beta_slow=%g truncate=%d attention_factor=%.9g",
                 base, factor, omax, beta_fast, beta_slow, truncate, af);
    } else {
        die("unsupported rope type \"%s\"", type);
    }
}

static void setup_windows(Model *m, const cJSON *cfg)
{
    m->window = xcalloc((size_t)m->n_layers, sizeof(long));
    if (m->arch == ARCH_LLAMA)
        return;
    if (m->arch == ARCH_MISTRAL || m->arch == ARCH_PHI3) {
        /* MistralConfig defaults sliding_window to 4096, Phi3Config to None;
         * null disables it. The window then applies to every layer (Phi3 picks
         * create_sliding_window_causal_mask iff sliding_window is not None). */
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(cfg, "sliding_window");
        long def = m->arch == ARCH_MISTRAL ? 4096 : 0;
        long w = def;
        if (sw && cJSON_IsNull(sw))
            w = 0;
        else if (sw)
            w = jint(cfg, "sliding_window", def, NULL);
        if (sw && !cJSON_IsNull(sw) && w <= 0)
            die("sliding_window must be positive, got %ld", w);
        for (long l = 0; l < m->n_layers; l++)
            m->window[l] = w;
        return;
    }
    /* Qwen2 / Qwen3: sliding_window only counts when use_sliding_window is
     * true; layer_types (if given) says which layers slide, otherwise the
     * layers with index >= max_window_layers do. */
    int use = jbool(cfg, "use_sliding_window", 0);
    long w = 0;
    if (use) {
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(cfg, "sliding_window");
        if (sw && cJSON_IsNull(sw))
            w = 0;
        else
            w = jint(cfg, "sliding_window", 4096, NULL);
        if (sw && !cJSON_IsNull(sw) && w <= 0)
            die("sliding_window must be positive, got %ld", w);
    }
    long mwl = jint(cfg, "max_window_layers", 28, NULL);
    const cJSON *lt = jget(cfg, "layer_types");
    if (lt) {
        if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != m->n_layers)
            die("layer_types must be a list of num_hidden_layers strings");
        for (long l = 0; l < m->n_layers; l++) {
            const cJSON *e = cJSON_GetArrayItem(lt, (int)l);
            if (!cJSON_IsString(e))
                die("layer_types[%ld] is not a string", l);
            if (strcmp(e->valuestring, "full_attention") == 0) {
                m->window[l] = 0;
            } else if (strcmp(e->valuestring, "sliding_attention") == 0) {
                if (w == 0)
                    die("layer %ld is \"sliding_attention\" but no sliding window is in effect "
                        "(use_sliding_window false or sliding_window null); transformers rejects this too",
                        l);
                m->window[l] = w;
            } else {
                die("unsupported layer type \"%s\"", e->valuestring);
            }
        }
    } else {
        for (long l = 0; l < m->n_layers; l++)
            m->window[l] = (w > 0 && l >= mwl) ? w : 0;
    }
}

static void setup_model(Model *m, const char *dir, long n_tokens)
{
    char *cfgpath = path_join(dir, "config.json");
    size_t len;
    char *txt = read_file(cfgpath, &len);
    if (!txt)
        die("cannot read %s", cfgpath);
    cJSON *cfg = cJSON_ParseWithLength(txt, len);
    if (!cfg || !cJSON_IsObject(cfg))
        die("%s is not a JSON object", cfgpath);

    memset(m, 0, sizeof *m);
    const cJSON *archs = jget(cfg, "architectures");
    if (!archs || !cJSON_IsArray(archs) || cJSON_GetArraySize(archs) < 1 ||
        !cJSON_IsString(cJSON_GetArrayItem(archs, 0)))
        die("config.json has no \"architectures\" list");
    const char *an = cJSON_GetArrayItem(archs, 0)->valuestring;
    if (strcmp(an, "LlamaForCausalLM") == 0)
        m->arch = ARCH_LLAMA;
    else if (strcmp(an, "MistralForCausalLM") == 0)
        m->arch = ARCH_MISTRAL;
    else if (strcmp(an, "Qwen2ForCausalLM") == 0)
        m->arch = ARCH_QWEN2;
    else if (strcmp(an, "Qwen3ForCausalLM") == 0)
        m->arch = ARCH_QWEN3;
    else if (strcmp(an, "Phi3ForCausalLM") == 0)
        m->arch = ARCH_PHI3;
    else
        die("unsupported architecture \"%s\"", an);
    m->arch_name = xstrdup(an);

    /* Defaults are those of the corresponding transformers config classes. */
    int qwen = m->arch == ARCH_QWEN2 || m->arch == ARCH_QWEN3;
    int phi3 = m->arch == ARCH_PHI3;
    m->vocab = jint(cfg, "vocab_size", qwen ? 151936 : (phi3 ? 32064 : 32000), NULL);
    m->hidden = jint(cfg, "hidden_size", phi3 ? 3072 : 4096, NULL);
    m->inter = jint(cfg, "intermediate_size",
                    m->arch == ARCH_MISTRAL ? 14336 : (qwen ? 22016 : (phi3 ? 8192 : 11008)), NULL);
    m->n_layers = jint(cfg, "num_hidden_layers", 32, NULL);
    m->n_heads = jint(cfg, "num_attention_heads", 32, NULL);
    m->n_kv = jint(cfg, "num_key_value_heads", m->arch == ARCH_MISTRAL ? 8 : m->n_heads, NULL);
    m->max_pos = jint(cfg, "max_position_embeddings",
                      m->arch == ARCH_MISTRAL ? 4096 * 32 : (qwen ? 32768 : (phi3 ? 4096 : 2048)), NULL);
    m->eps = jnum(cfg, "rms_norm_eps", phi3 ? 1e-5 : 1e-6, NULL);
    if (m->vocab <= 0 || m->hidden <= 0 || m->inter <= 0 || m->n_layers <= 0 || m->n_heads <= 0 || m->n_kv <= 0)
        die("config.json has non-positive sizes");
    if (m->n_heads % m->n_kv != 0)
        die("num_attention_heads %ld not divisible by num_key_value_heads %ld", m->n_heads, m->n_kv);
    long hd_default = m->arch == ARCH_QWEN3 ? 128 : m->hidden / m->n_heads;
    m->head_dim = jint(cfg, "head_dim", hd_default, NULL);
    if (m->head_dim == 0 && m->arch == ARCH_LLAMA)
        m->head_dim = hd_default; /* Llama: "head_dim or hidden // heads" */
    if (m->head_dim <= 0)
        die("bad head_dim %ld", m->head_dim);

    const char *act = jstr(cfg, "hidden_act", "silu");
    if (strcmp(act, "silu") != 0 && strcmp(act, "swish") != 0)
        die("unsupported hidden_act \"%s\" (only silu)", act);

    switch (m->arch) {
    case ARCH_LLAMA:
        m->qkv_bias = m->o_bias = jbool(cfg, "attention_bias", 0);
        m->mlp_bias = jbool(cfg, "mlp_bias", 0);
        break;
    case ARCH_MISTRAL:
        break;
    case ARCH_QWEN2:
        m->qkv_bias = 1;
        break;
    case ARCH_QWEN3:
        m->qkv_bias = m->o_bias = jbool(cfg, "attention_bias", 0);
        m->qk_norm = 1;
        break;
    case ARCH_PHI3: /* no biases anywhere; fused qkv_proj and gate_up_proj */
        m->fused = 1;
        break;
    }
    m->tie = jbool(cfg, "tie_word_embeddings", 0);

    setup_rope(m, cfg, n_tokens);
    setup_windows(m, cfg);
    cJSON_Delete(cfg);
    free(txt);
    free(cfgpath);
}

/* ------------------------------------------------------------------------ */
/* math                                                                     */
/* ------------------------------------------------------------------------ */

/* y[n][out] = x[n][in] * W^T (+ b), W is [out][in] row-major as in nn.Linear */
static void linear(const double *x, long n, long in, const double *W, const double *b, long out, double *y)
{
    for (long t = 0; t < n; t++) {
        const double *xr = x + t * in;
        for (long o = 0; o < out; o++) {
            const double *wr = W + o * in;
            double s = 0.0;
            for (long k = 0; k < in; k++)
                s += xr[k] * wr[k];
            if (b)
                s += b[o];
            y[t * out + o] = s;
        }
    }
}

/* y = w * x / sqrt(mean(x^2) + eps), on each row of length d */
static void rmsnorm(const double *x, long rows, long d, const double *w, double eps, double *y)
{
    for (long r = 0; r < rows; r++) {
        const double *xr = x + r * d;
        double ss = 0.0;
        for (long k = 0; k < d; k++)
            ss += xr[k] * xr[k];
        double inv = 1.0 / sqrt(ss / (double)d + eps);
        for (long k = 0; k < d; k++)
            y[r * d + k] = w[k] * (xr[k] * inv);
    }
}

/* rotate_half convention: pair (i, i + d/2) */
static void apply_rope(double *v, long n, long heads, long d, const double *cosv, const double *sinv)
{
    long half = d / 2;
    for (long t = 0; t < n; t++) {
        for (long h = 0; h < heads; h++) {
            double *x = v + (t * heads + h) * d;
            for (long i = 0; i < half; i++) {
                double c = cosv[t * half + i], s = sinv[t * half + i];
                double a = x[i], b = x[i + half];
                x[i] = a * c - b * s;
                x[i + half] = b * c + a * s;
            }
        }
    }
}

static double silu(double x)
{
    return x / (1.0 + exp(-x));
}

/* Copies rows [first, first + rows) of a [*][cols] row-major matrix. */
static double *split_rows(const double *W, long first, long rows, long cols)
{
    double *out = xmalloc(sizeof(double) * (size_t)(rows * cols));
    memcpy(out, W + first * cols, sizeof(double) * (size_t)(rows * cols));
    return out;
}

static void layer_name(char *buf, size_t n, const char *prefix, long l, const char *suffix)
{
    snprintf(buf, n, "%slayers.%ld.%s", prefix, l, suffix);
}

/* Returns logits [n][vocab]. */
static double *forward(Model *m, Store *st, const long *ids, long n)
{
    const long H = m->hidden, D = m->head_dim, NH = m->n_heads, NKV = m->n_kv, I = m->inter, V = m->vocab;
    const long QD = NH * D, KD = NKV * D;
    char name[512];

    const char *prefix = "model.";
    if (!store_find(st, "model.embed_tokens.weight") && store_find(st, "embed_tokens.weight"))
        prefix = "";

    snprintf(name, sizeof name, "%sembed_tokens.weight", prefix);
    double *emb = load_2d(st, name, V, H, 1);
    double *x = xmalloc(sizeof(double) * (size_t)(n * H));
    for (long t = 0; t < n; t++) {
        if (ids[t] < 0 || ids[t] >= V)
            die("token id %ld out of range [0, %ld)", ids[t], V);
        memcpy(x + t * H, emb + ids[t] * H, sizeof(double) * (size_t)H);
    }

    /* cos/sin for positions 0..n-1, scaled by the rope attention factor */
    long half = D / 2;
    double *cosv = xmalloc(sizeof(double) * (size_t)(n * half));
    double *sinv = xmalloc(sizeof(double) * (size_t)(n * half));
    for (long t = 0; t < n; t++)
        for (long i = 0; i < half; i++) {
            double ang = (double)t * m->inv_freq[i];
            cosv[t * half + i] = cos(ang) * m->attn_factor;
            sinv[t * half + i] = sin(ang) * m->attn_factor;
        }

    double *h = xmalloc(sizeof(double) * (size_t)(n * H));
    double *q = xmalloc(sizeof(double) * (size_t)(n * QD));
    double *k = xmalloc(sizeof(double) * (size_t)(n * KD));
    double *v = xmalloc(sizeof(double) * (size_t)(n * KD));
    double *att = xmalloc(sizeof(double) * (size_t)(n * QD));
    double *o = xmalloc(sizeof(double) * (size_t)(n * H));
    double *g = xmalloc(sizeof(double) * (size_t)(n * I));
    double *u = xmalloc(sizeof(double) * (size_t)(n * I));
    double *scores = xmalloc(sizeof(double) * (size_t)n);
    const double scale = 1.0 / sqrt((double)D);
    const long rep = NH / NKV;

    for (long l = 0; l < m->n_layers; l++) {
        layer_name(name, sizeof name, prefix, l, "input_layernorm.weight");
        double *ln1 = load_1d(st, name, H, 1);
        double *wq, *wk, *wv;
        if (m->fused) {
            /* Phi3Attention: qkv = qkv_proj(h); q = qkv[..., :QD],
             * k = qkv[..., QD:QD+KD], v = qkv[..., QD+KD:], i.e. rows of W. */
            layer_name(name, sizeof name, prefix, l, "self_attn.qkv_proj.weight");
            double *wqkv = load_2d(st, name, QD + 2 * KD, H, 1);
            wq = split_rows(wqkv, 0, QD, H);
            wk = split_rows(wqkv, QD, KD, H);
            wv = split_rows(wqkv, QD + KD, KD, H);
            free(wqkv);
        } else {
            layer_name(name, sizeof name, prefix, l, "self_attn.q_proj.weight");
            wq = load_2d(st, name, QD, H, 1);
            layer_name(name, sizeof name, prefix, l, "self_attn.k_proj.weight");
            wk = load_2d(st, name, KD, H, 1);
            layer_name(name, sizeof name, prefix, l, "self_attn.v_proj.weight");
            wv = load_2d(st, name, KD, H, 1);
        }
        layer_name(name, sizeof name, prefix, l, "self_attn.o_proj.weight");
        double *wo = load_2d(st, name, H, QD, 1);
        double *bq = NULL, *bk = NULL, *bv = NULL, *bo = NULL, *qn = NULL, *kn = NULL;
        if (m->qkv_bias) {
            layer_name(name, sizeof name, prefix, l, "self_attn.q_proj.bias");
            bq = load_1d(st, name, QD, 1);
            layer_name(name, sizeof name, prefix, l, "self_attn.k_proj.bias");
            bk = load_1d(st, name, KD, 1);
            layer_name(name, sizeof name, prefix, l, "self_attn.v_proj.bias");
            bv = load_1d(st, name, KD, 1);
        }
        if (m->o_bias) {
            layer_name(name, sizeof name, prefix, l, "self_attn.o_proj.bias");
            bo = load_1d(st, name, H, 1);
        }
        if (m->qk_norm) {
            layer_name(name, sizeof name, prefix, l, "self_attn.q_norm.weight");
            qn = load_1d(st, name, D, 1);
            layer_name(name, sizeof name, prefix, l, "self_attn.k_norm.weight");
            kn = load_1d(st, name, D, 1);
        }

        /* --- attention block --- */
        rmsnorm(x, n, H, ln1, m->eps, h);
        linear(h, n, H, wq, bq, QD, q);
        linear(h, n, H, wk, bk, KD, k);
        linear(h, n, H, wv, bv, KD, v);
        if (m->qk_norm) { /* per head, over head_dim, before RoPE */
            rmsnorm(q, n * NH, D, qn, m->eps, q);
            rmsnorm(k, n * NKV, D, kn, m->eps, k);
        }
        apply_rope(q, n, NH, D, cosv, sinv);
        apply_rope(k, n, NKV, D, cosv, sinv);
        if (g_kv_bf16) {
            bf16_round(k, n * NKV * D);
            bf16_round(v, n * NKV * D);
        }

        long W = m->window[l];
        for (long hh = 0; hh < NH; hh++) {
            long kvh = hh / rep; /* repeat_kv: query head hh uses kv head hh // n_rep */
            for (long i = 0; i < n; i++) {
                const double *qi = q + (i * NH + hh) * D;
                double mx = -INFINITY;
                for (long j = 0; j <= i; j++) {
                    if (W > 0 && i - j >= W) {
                        scores[j] = -INFINITY;
                        continue;
                    }
                    const double *kj = k + (j * NKV + kvh) * D;
                    double s = 0.0;
                    for (long d = 0; d < D; d++)
                        s += qi[d] * kj[d];
                    s *= scale;
                    scores[j] = s;
                    if (s > mx)
                        mx = s;
                }
                double sum = 0.0;
                for (long j = 0; j <= i; j++) {
                    double e = scores[j] == -INFINITY ? 0.0 : exp(scores[j] - mx);
                    scores[j] = e;
                    sum += e;
                }
                double *out = att + (i * NH + hh) * D;
                for (long d = 0; d < D; d++)
                    out[d] = 0.0;
                for (long j = 0; j <= i; j++) {
                    double p = scores[j] / sum;
                    if (p == 0.0)
                        continue;
                    const double *vj = v + (j * NKV + kvh) * D;
                    for (long d = 0; d < D; d++)
                        out[d] += p * vj[d];
                }
            }
        }
        linear(att, n, QD, wo, bo, H, o);
        for (long e = 0; e < n * H; e++)
            x[e] += o[e];
        free(ln1), free(wq), free(wk), free(wv), free(wo);
        free(bq), free(bk), free(bv), free(bo), free(qn), free(kn);

        /* --- MLP block --- */
        layer_name(name, sizeof name, prefix, l, "post_attention_layernorm.weight");
        double *ln2 = load_1d(st, name, H, 1);
        double *wg, *wu;
        if (m->fused) {
            /* Phi3MLP: gate, up = gate_up_proj(h).chunk(2, dim=-1):
             * the first I rows are gate, the next I rows up. */
            layer_name(name, sizeof name, prefix, l, "mlp.gate_up_proj.weight");
            double *wgu = load_2d(st, name, 2 * I, H, 1);
            wg = split_rows(wgu, 0, I, H);
            wu = split_rows(wgu, I, I, H);
            free(wgu);
        } else {
            layer_name(name, sizeof name, prefix, l, "mlp.gate_proj.weight");
            wg = load_2d(st, name, I, H, 1);
            layer_name(name, sizeof name, prefix, l, "mlp.up_proj.weight");
            wu = load_2d(st, name, I, H, 1);
        }
        layer_name(name, sizeof name, prefix, l, "mlp.down_proj.weight");
        double *wd = load_2d(st, name, H, I, 1);
        double *bg = NULL, *bu = NULL, *bd = NULL;
        if (m->mlp_bias) {
            layer_name(name, sizeof name, prefix, l, "mlp.gate_proj.bias");
            bg = load_1d(st, name, I, 1);
            layer_name(name, sizeof name, prefix, l, "mlp.up_proj.bias");
            bu = load_1d(st, name, I, 1);
            layer_name(name, sizeof name, prefix, l, "mlp.down_proj.bias");
            bd = load_1d(st, name, H, 1);
        }
        rmsnorm(x, n, H, ln2, m->eps, h);
        linear(h, n, H, wg, bg, I, g);
        linear(h, n, H, wu, bu, I, u);
        for (long e = 0; e < n * I; e++)
            g[e] = silu(g[e]) * u[e];
        linear(g, n, I, wd, bd, H, o);
        for (long e = 0; e < n * H; e++)
            x[e] += o[e];
        free(ln2), free(wg), free(wu), free(wd), free(bg), free(bu), free(bd);
    }

    snprintf(name, sizeof name, "%snorm.weight", prefix);
    double *lnf = load_1d(st, name, H, 1);
    rmsnorm(x, n, H, lnf, m->eps, h);
    free(lnf);

    /* lm_head: transformers (5.x) uses lm_head.weight whenever the checkpoint
     * has it -- even with tie_word_embeddings true it declines to tie two
     * tensors that differ -- and ties it to embed_tokens only when absent. */
    double *head = load_2d(st, "lm_head.weight", V, H, 0);
    if (!head) {
        if (!m->tie)
            die("tie_word_embeddings is false but the checkpoint has no lm_head.weight");
        head = emb;
    }
    double *logits = xmalloc(sizeof(double) * (size_t)(n * V));
    linear(h, n, H, head, NULL, V, logits);
    if (head != emb)
        free(head);
    free(emb);
    free(x), free(h), free(q), free(k), free(v), free(att), free(o), free(g), free(u), free(scores);
    free(cosv), free(sinv);
    return logits;
}

/* ------------------------------------------------------------------------ */
/* CLI                                                                      */
/* ------------------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr,
            "usage: ref64 -m MODEL_DIR --ids 1,2,3 [--logits FILE [--atol A] [--rtol R]] [--dump FILE] [--int8] [--kv-bf16] [-v]\n"
            "  Double-precision reference forward pass (Llama/Mistral/Qwen2/Qwen3/Phi3).\n"
            "  --logits FILE  float32 LE logits [n_ids, vocab] to compare against\n"
            "                 (pass iff |got-ref| <= atol + rtol*|ref| everywhere; defaults 1e-3, 1e-3)\n"
            "  --dump FILE    write this program's logits in the same float32 format\n"
            "  --int8         use every matrix as cleave --dtype int8 does: per row, q = round(w / scale)\n"
            "                 with scale = max|w| / 127 (float32 steps), then w = q * scale\n"
            "  --kv-bf16      attend over keys (after RoPE) and values rounded to bf16, as cleave\n"
            "                 --kv-dtype bf16 stores them\n"
            "  -v             also print the RoPE inverse frequencies and attention factor\n"
            "  exit: 0 ok/PASS, 1 FAIL, 2 error or unsupported model\n");
    exit(2);
}

static long *parse_ids(const char *s, long *n_out)
{
    long cap = 16, n = 0;
    long *ids = xmalloc(sizeof(long) * (size_t)cap);
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == '[' || *p == '\t')
            p++;
        if (*p == '\0' || *p == ']')
            break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0)
            die("bad --ids list \"%s\"", s);
        if (n == cap) {
            cap *= 2;
            ids = realloc(ids, sizeof(long) * (size_t)cap);
            if (!ids)
                die("out of memory");
        }
        ids[n++] = v;
        p = end;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == ',')
            p++;
        else if (*p == ']' || *p == '\0')
            continue;
        else
            die("bad --ids list \"%s\"", s);
    }
    if (n == 0)
        die("--ids is empty");
    *n_out = n;
    return ids;
}

static double parse_double(const char *s, const char *what)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno || !(v >= 0))
        die("bad %s \"%s\"", what, s);
    return v;
}

static void write_f32(const char *path, const double *a, size_t count)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        die("cannot write %s: %s", path, strerror(errno));
    for (size_t i = 0; i < count; i++) {
        float fv = (float)a[i];
        uint32_t u;
        memcpy(&u, &fv, 4);
        unsigned char b[4] = {(unsigned char)u, (unsigned char)(u >> 8), (unsigned char)(u >> 16),
                              (unsigned char)(u >> 24)};
        if (fwrite(b, 1, 4, f) != 4)
            die("write error on %s", path);
    }
    if (fclose(f) != 0)
        die("write error on %s", path);
}

static long argmax(const double *row, long n)
{
    long best = 0;
    for (long i = 1; i < n; i++)
        if (row[i] > row[best])
            best = i;
    return best;
}

static int compare(const char *path, const double *ref, long n, long V, double atol, double rtol)
{
    size_t len;
    char *raw = read_file(path, &len);
    if (!raw)
        die("cannot read %s", path);
    size_t want = (size_t)n * (size_t)V * 4;
    printf("tolerance: |got-ref| <= atol + rtol*|ref| with atol=%g rtol=%g\n", atol, rtol);
    if (len != want) {
        printf("size mismatch: %s has %zu bytes, expected %zu (= %ld positions x %ld vocab x 4)\n", path, len, want,
               n, V);
        printf("FAIL\n");
        free(raw);
        return 1;
    }
    double *got = xmalloc(sizeof(double) * (size_t)(n * V));
    const unsigned char *p = (const unsigned char *)raw;
    for (long i = 0; i < n * V; i++, p += 4) {
        uint32_t u = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
        got[i] = f32bits_to_double(u);
    }
    free(raw);

    double max_abs = -1.0, max_ratio = -1.0;
    long max_abs_at = 0, max_ratio_at = 0, n_bad = 0, first_bad = -1;
    for (long i = 0; i < n * V; i++) {
        double err = fabs(got[i] - ref[i]);
        double tol = atol + rtol * fabs(ref[i]);
        if (isnan(err))
            err = INFINITY;
        double ratio = err / tol;
        if (err > max_abs) {
            max_abs = err;
            max_abs_at = i;
        }
        if (ratio > max_ratio) {
            max_ratio = ratio;
            max_ratio_at = i;
        }
        if (!(err <= tol)) {
            n_bad++;
            if (first_bad < 0)
                first_bad = i;
        }
    }
    printf("max abs error: %.6g at position %ld, index %ld (got %.9g, ref %.9g)\n", max_abs, max_abs_at / V,
           max_abs_at % V, got[max_abs_at], ref[max_abs_at]);
    printf("worst error/tolerance: %.4g at position %ld, index %ld (got %.9g, ref %.9g)\n", max_ratio,
           max_ratio_at / V, max_ratio_at % V, got[max_ratio_at], ref[max_ratio_at]);
    printf("elements out of tolerance: %ld of %ld", n_bad, n * V);
    if (first_bad >= 0)
        printf(" (first at position %ld, index %ld)", first_bad / V, first_bad % V);
    printf("\n");
    long k5 = V < 5 ? V : 5;
    printf("position 0, first %ld: got", k5);
    for (long i = 0; i < k5; i++)
        printf(" %.7g", got[i]);
    printf("\n");
    printf("position 0, first %ld: ref", k5);
    for (long i = 0; i < k5; i++)
        printf(" %.7g", ref[i]);
    printf("\n");
    long agree = 0;
    for (long t = 0; t < n; t++) {
        long ag = argmax(got + t * V, V), ar = argmax(ref + t * V, V);
        if (ag == ar)
            agree++;
        else
            printf("argmax differs at position %ld: got %ld (%.7g), ref %ld (%.7g)\n", t, ag, got[t * V + ag], ar,
                   ref[t * V + ar]);
    }
    printf("argmax agrees at %ld of %ld positions%s\n", agree, n, agree == n ? " (all)" : "");
    free(got);
    if (n_bad == 0) {
        printf("PASS\n");
        return 0;
    }
    printf("FAIL\n");
    return 1;
}

int main(int argc, char **argv)
{
    const char *model_dir = NULL, *ids_arg = NULL, *logits_path = NULL, *dump_path = NULL;
    double atol = 1e-3, rtol = 1e-3;
    int verbose = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0) && i + 1 < argc)
            model_dir = argv[++i];
        else if (strcmp(a, "--ids") == 0 && i + 1 < argc)
            ids_arg = argv[++i];
        else if (strcmp(a, "--logits") == 0 && i + 1 < argc)
            logits_path = argv[++i];
        else if (strcmp(a, "--dump") == 0 && i + 1 < argc)
            dump_path = argv[++i];
        else if (strcmp(a, "--atol") == 0 && i + 1 < argc)
            atol = parse_double(argv[++i], "--atol");
        else if (strcmp(a, "--rtol") == 0 && i + 1 < argc)
            rtol = parse_double(argv[++i], "--rtol");
        else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0)
            verbose = 1;
        else if (strcmp(a, "--int8") == 0)
            g_int8 = 1;
        else if (strcmp(a, "--kv-bf16") == 0)
            g_kv_bf16 = 1;
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            usage();
        else {
            fprintf(stderr, "ref64: unknown or incomplete argument \"%s\"\n", a);
            usage();
        }
    }
    if (!model_dir || !ids_arg)
        usage();

    long n;
    long *ids = parse_ids(ids_arg, &n);
    Model m;
    setup_model(&m, model_dir, n);
    Store st;
    store_open(&st, model_dir);

    printf("model: %s layers=%ld hidden=%ld heads=%ld kv_heads=%ld head_dim=%ld inter=%ld vocab=%ld eps=%g\n",
           m.arch_name, m.n_layers, m.hidden, m.n_heads, m.n_kv, m.head_dim, m.inter, m.vocab, m.eps);
    printf("features: qkv_bias=%d o_bias=%d mlp_bias=%d qk_norm=%d fused_qkv_gate_up=%d tie_word_embeddings=%d\n",
           m.qkv_bias, m.o_bias, m.mlp_bias, m.qk_norm, m.fused, m.tie);
    printf("rope: %s\n", m.rope_desc);
    {
        int any = 0;
        for (long l = 0; l < m.n_layers; l++)
            any |= m.window[l] > 0;
        if (any) {
            printf("sliding window per layer:");
            for (long l = 0; l < m.n_layers; l++)
                printf(" %ld", m.window[l]);
            printf(" (0 = full)\n");
        } else {
            printf("sliding window: none\n");
        }
    }
    if (verbose) {
        printf("rope inv_freq:");
        for (long i = 0; i < m.head_dim / 2; i++)
            printf(" %.9g", m.inv_freq[i]);
        printf("\nrope attention_factor: %.9g\n", m.attn_factor);
    }
    printf("tokens: %ld\n", n);

    double *logits = forward(&m, &st, ids, n);

    for (int i = 0; i < st.ntensors; i++) {
        TensorInfo *t = &st.tensors[i];
        if (!t->used && !strstr(t->name, "rotary_emb.inv_freq"))
            fprintf(stderr, "ref64: warning: checkpoint tensor \"%s\" is not used by this model definition\n",
                    t->name);
    }

    if (dump_path) {
        write_f32(dump_path, logits, (size_t)(n * m.vocab));
        printf("wrote %ld x %ld float32 logits to %s\n", n, m.vocab, dump_path);
    }
    int rc = 0;
    if (logits_path)
        rc = compare(logits_path, logits, n, m.vocab, atol, rtol);
    else {
        long k5 = m.vocab < 5 ? m.vocab : 5;
        printf("position 0, first %ld: ref", k5);
        for (long i = 0; i < k5; i++)
            printf(" %.7g", logits[i]);
        printf("\n");
    }
    fflush(stdout);
    return rc;
}
