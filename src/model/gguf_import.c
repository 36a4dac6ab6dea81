#include "gguf_import.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../format/json.h"
#include "../util/util.h"
#include "arch.h"
#include "config.h"

/* The transformers release whose config layout this writes (as synth does). */
#define CLV_IMPORT_TRANSFORMERS_VERSION "5.23.0"

void clv_gguf_import_defaults(clv_gguf_import_opts *o) {
    memset(o, 0, sizeof *o);
    o->dtype = CLV_DT_BF16;
}

/* ---- hyper-parameters -------------------------------------------------------------- */

/* What the file says about the model, in the terms config.json uses. */
typedef struct hparams {
    clv_arch arch;
    const char *arch_key;   /* general.architecture, the metadata prefix */
    bool permuted_qk;       /* llama.cpp interleaved q/k rows (llama-family rope) */
    clv_config c;           /* the normalised config we are about to describe */
    double rms_eps, rope_theta;
    int64_t pad_id, unk_id;
    int n_gen_eos;
    int gen_eos[CLV_MAX_EOS]; /* eos + eot + eom, for generation_config.json */
} hparams;

static int key_of(char *buf, size_t cap, const char *arch, const char *suffix) {
    return snprintf(buf, cap, "%s.%s", arch, suffix) < (int)cap ? 0 : -1;
}

/* get_int for "{arch}.suffix"; `required` turns absence into an error. */
static int arch_int(const clv_gguf *g, const char *arch, const char *suffix, bool required, int64_t lo, int64_t hi,
                    int64_t *out, clv_status *st) {
    char k[160];
    if (key_of(k, sizeof k, arch, suffix)) return clv_fail(st, CLV_EINVAL, "%s: metadata key too long", g->path);
    int rc = clv_gguf_get_int(g, k, lo, hi, out, st);
    if (rc == 1 && required) return clv_fail(st, CLV_EINVAL, "%s: metadata '%s' is missing", g->path, k);
    return rc < 0 ? rc : 0;
}
static int arch_float(const clv_gguf *g, const char *arch, const char *suffix, double *out, clv_status *st) {
    char k[160];
    if (key_of(k, sizeof k, arch, suffix)) return clv_fail(st, CLV_EINVAL, "%s: metadata key too long", g->path);
    int rc = clv_gguf_get_float(g, k, out, st);
    return rc < 0 ? rc : 0;
}

/* The shortest decimal that reads back to the same float32: GGUF stores
 * rms_norm_eps and rope_theta as float32, and the config should say 1e-05,
 * not 9.999999747378752e-06. */
static double f32_shortest(double v) {
    float f = (float)v;
    char buf[48];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        if ((float)strtod(buf, NULL) == f) return strtod(buf, NULL);
    }
    return (double)f;
}

/* llama3 rope: llama.cpp precomputes the per-frequency factors into the
 * rope_freqs.weight tensor instead of storing the parameters. Recover them by
 * recomputing the factors for candidate parameters and comparing. */
static int match_llama3_rope(const clv_gguf *g, const clv_gguf_tensor *t, hparams *h, clv_status *st) {
    int64_t n = clv_gguf_numel(t), half = h->c.head_dim / 2;
    if (t->type != CLV_GGML_F32 || n != half)
        return clv_fail(st, CLV_EUNSUPPORTED, "%s: tensor 'rope_freqs.weight' is %s with %lld values; expected F32 with %lld (head_dim / 2)",
                        g->path, clv_ggml_type_name(t->type), (long long)n, (long long)half);
    float *f = malloc(sizeof *f * (size_t)n);
    if (!f) return clv_fail(st, CLV_ENOMEM, "out of memory");
    clv_ggml_dequant(t->type, t->data, f, n);
    double factor = 0;
    for (int64_t i = 0; i < n; i++) factor = fmax(factor, f[i]);
    static const double lows[] = {1, 2}, highs[] = {4, 8, 2},
                        origs[] = {8192, 4096, 2048, 16384, 32768, 65536, 131072};
    for (size_t a = 0; a < sizeof lows / sizeof *lows; a++)
        for (size_t b = 0; b < sizeof highs / sizeof *highs; b++)
            for (size_t o = 0; o < sizeof origs / sizeof *origs; o++) {
                double lo = lows[a], hi = highs[b], orig = origs[o];
                bool ok = true;
                for (int64_t i = 0; i < n && ok; i++) {
                    double freq = 1.0 / pow(h->rope_theta, (double)(2 * i) / (double)h->c.head_dim);
                    double wl = 2 * M_PI / freq, want;
                    if (wl < orig / hi) want = 1;
                    else if (wl > orig / lo) want = factor;
                    else {
                        double smooth = (orig / wl - lo) / (hi - lo);
                        want = 1 / ((1 - smooth) / factor + smooth);
                    }
                    ok = fabs(want - f[i]) <= 1e-4 * fmax(1.0, fabs(want));
                }
                if (ok) {
                    free(f);
                    h->c.rope_type = CLV_ROPE_LLAMA3;
                    h->c.rope_factor = factor;
                    h->c.rope_low_freq_factor = lo;
                    h->c.rope_high_freq_factor = hi;
                    h->c.rope_orig_max_pos = (int)orig;
                    return 0;
                }
            }
    free(f);
    return clv_fail(st, CLV_EUNSUPPORTED,
                    "%s: tensor 'rope_freqs.weight' holds rope frequency factors that match no llama3 rope scaling "
                    "(factor %g); other per-frequency factors are not supported", g->path, factor);
}

static int read_hparams(const clv_gguf *g, hparams *h, clv_status *st) {
    memset(h, 0, sizeof *h);
    const clv_gguf_kv *ak = clv_gguf_find(g, "general.architecture");
    if (!ak) return clv_fail(st, CLV_EINVAL, "%s: metadata 'general.architecture' is missing", g->path);
    if (ak->v.type != CLV_GGUF_STRING)
        return clv_fail(st, CLV_EINVAL, "%s: metadata 'general.architecture' is %s, expected STRING", g->path,
                        clv_gguf_type_name(ak->v.type));
    static const struct { const char *name; clv_arch arch; bool permuted; } archs[] = {
        {"llama", CLV_ARCH_LLAMA, true},
        {"mistral", CLV_ARCH_MISTRAL, true},
        {"qwen2", CLV_ARCH_QWEN2, false},
        {"qwen3", CLV_ARCH_QWEN3, false},
    };
    size_t k = 0;
    for (; k < sizeof archs / sizeof *archs; k++)
        if (strlen(archs[k].name) == ak->v.len && memcmp(archs[k].name, ak->v.str, ak->v.len) == 0) break;
    if (k == sizeof archs / sizeof *archs)
        return clv_fail(st, CLV_EUNSUPPORTED, "%s: general.architecture '%.*s' is not supported (supported: llama, mistral, qwen2, qwen3)",
                        g->path, (int)(ak->v.len > 64 ? 64 : ak->v.len), ak->v.str);
    h->arch = archs[k].arch;
    h->arch_key = archs[k].name;
    h->permuted_qk = archs[k].permuted;
    clv_config *c = &h->c;
    c->arch = h->arch;
    const char *a = h->arch_key;
    int64_t v;
    int rc;
    if ((rc = arch_int(g, a, "block_count", true, 1, CLV_MAX_LAYERS, &v, st))) return rc;
    c->n_layers = (int)v;
    if ((rc = arch_int(g, a, "embedding_length", true, 1, 1 << 20, &v, st))) return rc;
    c->hidden = (int)v;
    if ((rc = arch_int(g, a, "feed_forward_length", true, 1, 1 << 22, &v, st))) return rc;
    c->intermediate = (int)v;
    if ((rc = arch_int(g, a, "attention.head_count", true, 1, 4096, &v, st))) return rc;
    c->n_heads = (int)v;
    v = c->n_heads;
    if ((rc = arch_int(g, a, "attention.head_count_kv", false, 1, 4096, &v, st))) return rc;
    c->n_kv_heads = (int)v;
    if (c->n_heads % c->n_kv_heads)
        return clv_fail(st, CLV_EINVAL, "%s: %s.attention.head_count %d is not a multiple of head_count_kv %d", g->path, a,
                        c->n_heads, c->n_kv_heads);
    v = 2048;
    if ((rc = arch_int(g, a, "context_length", false, 1, INT32_MAX, &v, st))) return rc;
    c->max_pos = (int)v;
    v = c->hidden % c->n_heads == 0 ? c->hidden / c->n_heads : 0;
    if ((rc = arch_int(g, a, "attention.key_length", false, 2, CLV_MAX_HEAD_DIM, &v, st))) return rc;
    if (v == 0)
        return clv_fail(st, CLV_EINVAL, "%s: %s.embedding_length %d is not divisible by head_count %d and %s.attention.key_length is missing",
                        g->path, a, c->hidden, c->n_heads, a);
    c->head_dim = (int)v;
    int64_t vlen = c->head_dim, rot = c->head_dim;
    if ((rc = arch_int(g, a, "attention.value_length", false, 1, CLV_MAX_HEAD_DIM, &vlen, st)) ||
        (rc = arch_int(g, a, "rope.dimension_count", false, 1, CLV_MAX_HEAD_DIM, &rot, st)))
        return rc;
    if (vlen != c->head_dim)
        return clv_fail(st, CLV_EUNSUPPORTED, "%s: %s.attention.value_length %lld differs from key_length %d: not supported",
                        g->path, a, (long long)vlen, c->head_dim);
    if (rot != c->head_dim)
        return clv_fail(st, CLV_EUNSUPPORTED, "%s: %s.rope.dimension_count %lld is not head_dim %d (partial rotary embeddings are not supported)",
                        g->path, a, (long long)rot, c->head_dim);
    if (c->head_dim % 2) return clv_fail(st, CLV_EINVAL, "%s: head_dim %d is odd", g->path, c->head_dim);
    h->rms_eps = NAN;
    if ((rc = arch_float(g, a, "attention.layer_norm_rms_epsilon", &h->rms_eps, st))) return rc;
    if (isnan(h->rms_eps))
        return clv_fail(st, CLV_EINVAL, "%s: metadata '%s.attention.layer_norm_rms_epsilon' is missing", g->path, a);
    if (!(h->rms_eps > 0 && h->rms_eps < 1))
        return clv_fail(st, CLV_EINVAL, "%s: %s.attention.layer_norm_rms_epsilon %g is not in (0, 1)", g->path, a, h->rms_eps);
    h->rms_eps = f32_shortest(h->rms_eps);
    h->rope_theta = 10000.0;
    if ((rc = arch_float(g, a, "rope.freq_base", &h->rope_theta, st))) return rc;
    if (!(h->rope_theta > 1)) return clv_fail(st, CLV_EINVAL, "%s: %s.rope.freq_base %g must be > 1", g->path, a, h->rope_theta);
    h->rope_theta = f32_shortest(h->rope_theta);
    c->rope_theta = h->rope_theta;
    c->rms_eps = (float)h->rms_eps;
    c->rope_type = CLV_ROPE_DEFAULT;
    c->rope_factor = 1.0;

    /* rope scaling: {arch}.rope.scaling.type/factor, the older scale_linear, or llama3's rope_freqs tensor */
    char key[160], *stype = NULL;
    key_of(key, sizeof key, a, "rope.scaling.type");
    if ((rc = clv_gguf_get_str(g, key, &stype, st)) < 0) return rc;
    double factor = NAN, lin = NAN;
    if ((rc = arch_float(g, a, "rope.scaling.factor", &factor, st)) || (rc = arch_float(g, a, "rope.scale_linear", &lin, st))) {
        free(stype);
        return rc;
    }
    if (stype && strcmp(stype, "none") != 0) {
        if (strcmp(stype, "linear") == 0) c->rope_type = CLV_ROPE_LINEAR;
        else if (strcmp(stype, "yarn") == 0) c->rope_type = CLV_ROPE_YARN;
        else {
            rc = clv_fail(st, CLV_EUNSUPPORTED, "%s: %s.rope.scaling.type '%s' is not supported (none, linear, yarn)", g->path,
                          a, stype);
            free(stype);
            return rc;
        }
        if (!(factor >= 1)) {
            free(stype);
            return clv_fail(st, CLV_EINVAL, "%s: %s.rope.scaling.factor must be >= 1 for %s rope scaling", g->path, a,
                            c->rope_type == CLV_ROPE_LINEAR ? "linear" : "yarn");
        }
        c->rope_factor = f32_shortest(factor);
    } else if (!stype && lin > 1) {
        c->rope_type = CLV_ROPE_LINEAR;
        c->rope_factor = f32_shortest(lin);
    }
    free(stype);
    if (c->rope_type == CLV_ROPE_YARN) {
        v = c->max_pos;
        if ((rc = arch_int(g, a, "rope.scaling.original_context_length", false, 1, INT32_MAX, &v, st))) return rc;
        c->rope_orig_max_pos = (int)v;
        c->yarn_beta_fast = 32;
        c->yarn_beta_slow = 1;
        if ((rc = arch_float(g, a, "rope.scaling.yarn_beta_fast", &c->yarn_beta_fast, st)) ||
            (rc = arch_float(g, a, "rope.scaling.yarn_beta_slow", &c->yarn_beta_slow, st)))
            return rc;
    }
    const clv_gguf_tensor *rf = clv_gguf_find_tensor(g, "rope_freqs.weight");
    if (rf) {
        if (c->rope_type != CLV_ROPE_DEFAULT)
            return clv_fail(st, CLV_EUNSUPPORTED, "%s: both rope scaling metadata and a rope_freqs.weight tensor: not supported",
                            g->path);
        if ((rc = match_llama3_rope(g, rf, h, st))) return rc;
    }
    v = 0;
    if ((rc = arch_int(g, a, "attention.sliding_window", false, 0, INT32_MAX, &v, st))) return rc;
    if (v > 0 && c->arch == CLV_ARCH_LLAMA)
        return clv_fail(st, CLV_EUNSUPPORTED, "%s: %s.attention.sliding_window is set, but llama has no sliding window", g->path, a);
    c->sliding_window = (int)v;

    /* vocabulary size: the key, else the embedding's rows, else the token list */
    const clv_gguf_tensor *emb = clv_gguf_find_tensor(g, "token_embd.weight");
    const clv_gguf_kv *toks = clv_gguf_find(g, "tokenizer.ggml.tokens");
    v = emb ? emb->ne[1] : toks && toks->v.type == CLV_GGUF_ARRAY ? (int64_t)toks->v.len : 0;
    if ((rc = arch_int(g, a, "vocab_size", false, 1, 1 << 24, &v, st))) return rc;
    if (v < 1 || v > (1 << 24)) return clv_fail(st, CLV_EINVAL, "%s: cannot tell the vocabulary size (no %s.vocab_size, token_embd.weight or tokenizer.ggml.tokens)", g->path, a);
    c->vocab = (int)v;

    /* special ids */
    c->bos_id = -1;
    v = -1;
    if ((rc = clv_gguf_get_int(g, "tokenizer.ggml.bos_token_id", 0, c->vocab - 1, &v, st)) < 0) return rc;
    c->bos_id = (int)v;
    static const char *eos_keys[] = {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"};
    for (size_t i = 0; i < sizeof eos_keys / sizeof *eos_keys; i++) {
        if ((rc = clv_gguf_get_int(g, eos_keys[i], 0, c->vocab - 1, &v, st)) < 0) return rc;
        if (rc == 1) continue;
        bool dup = false;
        for (int j = 0; j < h->n_gen_eos; j++) dup |= h->gen_eos[j] == v;
        if (!dup) h->gen_eos[h->n_gen_eos++] = (int)v;
    }
    if (h->n_gen_eos) {
        c->eos_ids[0] = h->gen_eos[0];
        c->n_eos = 1;
    }
    h->pad_id = h->unk_id = -1;
    if ((rc = clv_gguf_get_int(g, "tokenizer.ggml.padding_token_id", 0, c->vocab - 1, &h->pad_id, st)) < 0 ||
        (rc = clv_gguf_get_int(g, "tokenizer.ggml.unknown_token_id", 0, c->vocab - 1, &h->unk_id, st)) < 0)
        return rc;
    return 0;
}

/* Settle the flags that only the tensor list tells: tied head, biases, q/k norms. */
static int tensor_flags(const clv_gguf *g, hparams *h, clv_status *st) {
    clv_config *c = &h->c;
    c->tie_embeddings = clv_gguf_find_tensor(g, "output.weight") == NULL;
    bool qb = clv_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL, ob = clv_gguf_find_tensor(g, "blk.0.attn_output.bias") != NULL;
    bool mb = clv_gguf_find_tensor(g, "blk.0.ffn_gate.bias") != NULL;
    bool qn = clv_gguf_find_tensor(g, "blk.0.attn_q_norm.weight") != NULL;
    switch (c->arch) {
    case CLV_ARCH_QWEN2:
        if (!qb) return clv_fail(st, CLV_EINVAL, "%s: qwen2 needs q/k/v biases, but there is no 'blk.0.attn_q.bias'", g->path);
        if (ob) return clv_fail(st, CLV_EUNSUPPORTED, "%s: qwen2 with an output-projection bias ('blk.0.attn_output.bias') is not supported", g->path);
        c->qkv_bias = true;
        break;
    case CLV_ARCH_QWEN3:
        if (!qn) return clv_fail(st, CLV_EINVAL, "%s: qwen3 needs q/k norms, but there is no 'blk.0.attn_q_norm.weight'", g->path);
        c->qk_norm = true;
        /* attention_bias covers q, k, v and o together */
        __attribute__((fallthrough));
    default:
        if (qb != ob)
            return clv_fail(st, CLV_EUNSUPPORTED, "%s: %s with %s bias but %s is not supported (transformers' attention_bias covers q, k, v and o)",
                            g->path, h->arch_key, qb ? "q/k/v" : "an output", qb ? "no output bias" : "no q/k/v bias");
        c->qkv_bias = c->o_bias = qb;
        break;
    }
    if (c->arch != CLV_ARCH_QWEN3 && qn)
        return clv_fail(st, CLV_EUNSUPPORTED, "%s: %s with q/k norms ('blk.0.attn_q_norm.weight') is not supported", g->path, h->arch_key);
    c->mlp_bias = mb;
    if (mb && c->arch != CLV_ARCH_LLAMA)
        return clv_fail(st, CLV_EUNSUPPORTED, "%s: MLP biases are only supported for llama", g->path);
    return 0;
}

/* ---- tensor mapping ---------------------------------------------------------------- */

static const char *k_gguf_layer[CLV_W_COUNT] = {
    [CLV_W_ATTN_NORM] = "attn_norm.weight", [CLV_W_Q] = "attn_q.weight",         [CLV_W_K] = "attn_k.weight",
    [CLV_W_V] = "attn_v.weight",            [CLV_W_O] = "attn_output.weight",    [CLV_W_Q_BIAS] = "attn_q.bias",
    [CLV_W_K_BIAS] = "attn_k.bias",         [CLV_W_V_BIAS] = "attn_v.bias",      [CLV_W_O_BIAS] = "attn_output.bias",
    [CLV_W_Q_NORM] = "attn_q_norm.weight",  [CLV_W_K_NORM] = "attn_k_norm.weight", [CLV_W_FFN_NORM] = "ffn_norm.weight",
    [CLV_W_GATE] = "ffn_gate.weight",       [CLV_W_UP] = "ffn_up.weight",        [CLV_W_DOWN] = "ffn_down.weight",
    [CLV_W_GATE_BIAS] = "ffn_gate.bias",    [CLV_W_UP_BIAS] = "ffn_up.bias",     [CLV_W_DOWN_BIAS] = "ffn_down.bias",
};

static void gguf_name_of(const clv_wdesc *d, char *buf, size_t cap) {
    switch (d->slot) {
    case CLV_W_EMBED: snprintf(buf, cap, "token_embd.weight"); break;
    case CLV_W_NORM: snprintf(buf, cap, "output_norm.weight"); break;
    case CLV_W_LM_HEAD: snprintf(buf, cap, "output.weight"); break;
    default: snprintf(buf, cap, "blk.%d.%s", d->layer, k_gguf_layer[d->slot]); break;
    }
}

typedef struct imp_tensor {
    const clv_gguf_tensor *src;
    int64_t rows, cols;
    int64_t rows_per_head; /* > 0: undo llama.cpp's q/k row interleave */
} imp_tensor;

typedef struct imp_ctx {
    const clv_gguf *g;
    imp_tensor *t;
    clv_dtype dtype;
    float *row; /* one row of f32 */
} imp_ctx;

/* clv_st_fill_fn: dequantise tensor i row by row into the output dtype. */
static int fill_tensor(void *vctx, int i, void *buf, size_t bytes, clv_status *st) {
    imp_ctx *x = vctx;
    const imp_tensor *t = &x->t[i];
    uint32_t blk, bsz;
    clv_ggml_type_info(t->src->type, &blk, &bsz);
    const size_t row_bytes = (size_t)(t->cols / blk) * bsz, esz = clv_dtype_size(x->dtype);
    CLV_ASSERT(bytes == (size_t)(t->rows * t->cols) * esz);
    for (int64_t r = 0; r < t->rows; r++) {
        int64_t sr = t->rows_per_head ? clv_gguf_unpermute_row(r, t->rows_per_head) : r;
        if (!clv_ggml_dequant(t->src->type, t->src->data + (size_t)sr * row_bytes, x->row, t->cols))
            return clv_fail(st, CLV_EUNSUPPORTED, "%s: tensor '%s': cannot dequantise %s", x->g->path, t->src->name,
                            clv_ggml_type_name(t->src->type));
        uint8_t *dst = (uint8_t *)buf + (size_t)(r * t->cols) * esz;
        if (x->dtype == CLV_DT_F32) memcpy(dst, x->row, (size_t)t->cols * 4);
        else if (x->dtype == CLV_DT_BF16)
            for (int64_t j = 0; j < t->cols; j++) ((uint16_t *)dst)[j] = clv_f32_to_bf16(x->row[j]);
        else
            for (int64_t j = 0; j < t->cols; j++) ((uint16_t *)dst)[j] = clv_f32_to_f16(x->row[j]);
    }
    return 0;
}

/* ---- config.json and generation_config.json ------------------------------------------ */

static char *with_newline(char *s) {
    size_t n = strlen(s);
    char *r = realloc(s, n + 2);
    CLV_CHECK(r != NULL, "realloc");
    memcpy(r + n, "\n", 2);
    return r;
}

static const char *k_dtype_name[] = {[CLV_DT_F32] = "float32", [CLV_DT_F16] = "float16", [CLV_DT_BF16] = "bfloat16"};

/* config.json with the keys transformers writes for the class, sorted as its
 * to_json_string(sort_keys=True) writes them (the layout synth reproduces). */
static char *make_config(const hparams *h, clv_dtype dtype) {
    const clv_config *c = &h->c;
    cJSON *r = cJSON_CreateObject();
    cJSON *archs = cJSON_AddArrayToObject(r, "architectures");
    cJSON_AddItemToArray(archs, cJSON_CreateString(clv_arch_name(c->arch)));
    const bool qwen = c->arch == CLV_ARCH_QWEN2 || c->arch == CLV_ARCH_QWEN3;
    if (c->arch != CLV_ARCH_QWEN2) cJSON_AddBoolToObject(r, "attention_bias", c->qkv_bias);
    clv_json_add_float(r, "attention_dropout", 0.0);
    if (c->bos_id >= 0) cJSON_AddNumberToObject(r, "bos_token_id", c->bos_id);
    else cJSON_AddNullToObject(r, "bos_token_id");
    cJSON_AddStringToObject(r, "dtype", k_dtype_name[dtype]);
    if (c->n_eos) cJSON_AddNumberToObject(r, "eos_token_id", c->eos_ids[0]);
    else cJSON_AddNullToObject(r, "eos_token_id");
    if (c->arch != CLV_ARCH_QWEN2) cJSON_AddNumberToObject(r, "head_dim", c->head_dim);
    cJSON_AddStringToObject(r, "hidden_act", "silu");
    cJSON_AddNumberToObject(r, "hidden_size", c->hidden);
    clv_json_add_float(r, "initializer_range", 0.02);
    cJSON_AddNumberToObject(r, "intermediate_size", c->intermediate);
    if (qwen) {
        cJSON *lt = cJSON_AddArrayToObject(r, "layer_types");
        for (int l = 0; l < c->n_layers; l++)
            cJSON_AddItemToArray(lt, cJSON_CreateString(c->sliding_window ? "sliding_attention" : "full_attention"));
    }
    cJSON_AddNumberToObject(r, "max_position_embeddings", c->max_pos);
    if (qwen) cJSON_AddNumberToObject(r, "max_window_layers", c->sliding_window ? 0 : c->n_layers);
    if (c->arch == CLV_ARCH_LLAMA) cJSON_AddBoolToObject(r, "mlp_bias", c->mlp_bias);
    static const char *model_type[CLV_ARCH_COUNT] = {"llama", "mistral", "qwen2", "qwen3", "phi3"};
    cJSON_AddStringToObject(r, "model_type", model_type[c->arch]);
    cJSON_AddNumberToObject(r, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(r, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(r, "num_key_value_heads", c->n_kv_heads);
    if (h->pad_id >= 0) cJSON_AddNumberToObject(r, "pad_token_id", (double)h->pad_id);
    else cJSON_AddNullToObject(r, "pad_token_id");
    if (c->arch == CLV_ARCH_LLAMA) cJSON_AddNumberToObject(r, "pretraining_tp", 1);
    clv_json_add_float(r, "rms_norm_eps", h->rms_eps);
    cJSON *rp = cJSON_AddObjectToObject(r, "rope_parameters");
    if (c->rope_type == CLV_ROPE_YARN) {
        clv_json_add_float(rp, "beta_fast", c->yarn_beta_fast);
        clv_json_add_float(rp, "beta_slow", c->yarn_beta_slow);
    }
    if (c->rope_type != CLV_ROPE_DEFAULT) clv_json_add_float(rp, "factor", c->rope_factor);
    if (c->rope_type == CLV_ROPE_LLAMA3) {
        clv_json_add_float(rp, "high_freq_factor", c->rope_high_freq_factor);
        clv_json_add_float(rp, "low_freq_factor", c->rope_low_freq_factor);
    }
    if (c->rope_type == CLV_ROPE_LLAMA3 || c->rope_type == CLV_ROPE_YARN)
        cJSON_AddNumberToObject(rp, "original_max_position_embeddings", c->rope_orig_max_pos);
    clv_json_add_float(rp, "rope_theta", h->rope_theta);
    cJSON_AddStringToObject(rp, "rope_type", clv_rope_name(c->rope_type));
    if (c->arch == CLV_ARCH_MISTRAL || qwen) {
        if (c->sliding_window) cJSON_AddNumberToObject(r, "sliding_window", c->sliding_window);
        else cJSON_AddNullToObject(r, "sliding_window");
    }
    cJSON_AddBoolToObject(r, "tie_word_embeddings", c->tie_embeddings);
    cJSON_AddStringToObject(r, "transformers_version", CLV_IMPORT_TRANSFORMERS_VERSION);
    cJSON_AddBoolToObject(r, "use_cache", true);
    if (qwen) cJSON_AddBoolToObject(r, "use_sliding_window", c->sliding_window > 0);
    cJSON_AddNumberToObject(r, "vocab_size", c->vocab);
    char *s = clv_json_print_py(r);
    cJSON_Delete(r);
    return with_newline(s);
}

/* generation_config.json: the special ids, and llama.cpp's general.sampling.*
 * recommendations when the file carries them. */
static int make_gen_config(const clv_gguf *g, const hparams *h, char **out, clv_status *st) {
    cJSON *r = cJSON_CreateObject();
    int rc = 0;
    if (h->c.bos_id >= 0) cJSON_AddNumberToObject(r, "bos_token_id", h->c.bos_id);
    double temp = NAN, top_p = NAN, min_p = NAN, rep = NAN;
    int64_t top_k = -1;
    if ((rc = clv_gguf_get_float(g, "general.sampling.temp", &temp, st)) < 0 ||
        (rc = clv_gguf_get_float(g, "general.sampling.top_p", &top_p, st)) < 0 ||
        (rc = clv_gguf_get_float(g, "general.sampling.min_p", &min_p, st)) < 0 ||
        (rc = clv_gguf_get_float(g, "general.sampling.penalty_repeat", &rep, st)) < 0 ||
        (rc = clv_gguf_get_int(g, "general.sampling.top_k", 0, INT32_MAX, &top_k, st)) < 0) {
        cJSON_Delete(r);
        return rc;
    }
    rc = 0;
    bool sampling = !isnan(temp) || !isnan(top_p) || !isnan(min_p) || top_k >= 0;
    if (sampling) cJSON_AddBoolToObject(r, "do_sample", temp != 0);
    if (h->n_gen_eos == 1) cJSON_AddNumberToObject(r, "eos_token_id", h->gen_eos[0]);
    else if (h->n_gen_eos > 1) {
        cJSON *e = cJSON_AddArrayToObject(r, "eos_token_id");
        for (int i = 0; i < h->n_gen_eos; i++) cJSON_AddItemToArray(e, cJSON_CreateNumber(h->gen_eos[i]));
    }
    if (!isnan(min_p)) clv_json_add_float(r, "min_p", f32_shortest(min_p));
    if (h->pad_id >= 0) cJSON_AddNumberToObject(r, "pad_token_id", (double)h->pad_id);
    if (!isnan(rep)) clv_json_add_float(r, "repetition_penalty", f32_shortest(rep));
    if (!isnan(temp) && temp > 0) clv_json_add_float(r, "temperature", f32_shortest(temp));
    if (top_k >= 0) cJSON_AddNumberToObject(r, "top_k", (double)top_k);
    if (!isnan(top_p)) clv_json_add_float(r, "top_p", f32_shortest(top_p));
    cJSON_AddStringToObject(r, "transformers_version", CLV_IMPORT_TRANSFORMERS_VERSION);
    *out = with_newline(clv_json_print_py(r));
    cJSON_Delete(r);
    return 0;
}

/* ---- the output folder ------------------------------------------------------------------ */

/* Remove a temporary folder this import created, with everything in it. */
static void remove_tmp_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[4096];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
                snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < (int)sizeof p)
                unlink(p);
        closedir(d);
    }
    rmdir(dir);
}

static bool dir_is_empty(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return false;
    struct dirent *e;
    bool empty = true;
    while (empty && (e = readdir(d))) empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
    closedir(d);
    return empty;
}

static int write_text(const char *dir, const char *name, const char *text, clv_status *st) {
    char path[4096];
    int rc = clv_path_join(path, sizeof path, dir, name, st);
    return rc ? rc : clv_write_file(path, text, strlen(text), st);
}

/* Weights: map every tensor the config requires to its GGUF tensor, check
 * shapes, refuse leftovers, then stream them through the dequantiser. */
static int write_weights(const clv_gguf *g, const hparams *h, clv_dtype dtype, const char *dir,
                         clv_gguf_import_report *rep, clv_status *st) {
    const clv_config *c = &h->c;
    int cap = clv_arch_max_tensors(c), rc = 0;
    clv_wdesc *d = calloc((size_t)cap, sizeof *d);
    imp_tensor *it = calloc((size_t)cap, sizeof *it);
    clv_st_wtensor *wt = calloc((size_t)cap, sizeof *wt);
    bool *used = calloc((size_t)(g->n_tensors ? g->n_tensors : 1), sizeof *used);
    imp_ctx x = {g, it, dtype, NULL};
    if (!d || !it || !wt || !used) {
        rc = clv_fail(st, CLV_ENOMEM, "out of memory");
        goto done;
    }
    int n = clv_arch_tensors(c, d, cap);
    int64_t widest = 1;
    for (int i = 0; i < n; i++) {
        char gname[128];
        gguf_name_of(&d[i], gname, sizeof gname);
        const clv_gguf_tensor *t = clv_gguf_find_tensor(g, gname);
        if (!t) {
            rc = clv_fail(st, CLV_EINVAL, "%s: tensor '%s' (for %s) is missing", g->path, gname, d[i].name);
            goto done;
        }
        used[t - g->tensors] = true;
        /* HF shape [rows, cols] is ggml ne = {cols, rows} */
        int64_t rows = d[i].ndim == 2 ? d[i].shape[0] : 1, cols = d[i].ndim == 2 ? d[i].shape[1] : d[i].shape[0];
        bool ok = (int)t->n_dims == d[i].ndim && t->ne[0] == cols && t->ne[1] == rows && t->ne[2] == 1 && t->ne[3] == 1;
        if (!ok) {
            char want[64];
            if (d[i].ndim == 2) snprintf(want, sizeof want, "[%lld, %lld]", (long long)cols, (long long)rows);
            else snprintf(want, sizeof want, "[%lld]", (long long)cols);
            rc = clv_fail(st, CLV_EINVAL, "%s: tensor '%s' has ggml shape [%lld, %lld, %lld, %lld] (%u dims); the config implies %s (ggml order) for %s",
                          g->path, gname, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                          t->n_dims, want, d[i].name);
            goto done;
        }
        if (!clv_ggml_can_dequant(t->type)) {
            rc = clv_fail(st, CLV_EUNSUPPORTED, "%s: tensor '%s' is %s, which cleave cannot dequantise (supported: F32, F16, BF16, F64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)",
                          g->path, gname, clv_ggml_type_name(t->type));
            goto done;
        }
        it[i].src = t;
        it[i].rows = rows;
        it[i].cols = cols;
        bool qk = d[i].slot == CLV_W_Q || d[i].slot == CLV_W_K || d[i].slot == CLV_W_Q_BIAS || d[i].slot == CLV_W_K_BIAS;
        if (h->permuted_qk && qk) it[i].rows_per_head = c->head_dim;
        if (cols > widest) widest = cols;
        wt[i] = (clv_st_wtensor){d[i].name, dtype, d[i].ndim, {d[i].shape[0], d[i].shape[1]}, NULL};
        rep->tensors_of_type[t->type]++;
        rep->bytes_in += t->size;
        rep->bytes_out += (uint64_t)(rows * cols) * clv_dtype_size(dtype);
    }
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (!used[i] && strcmp(g->tensors[i].name, "rope_freqs.weight") != 0) {
            rc = clv_fail(st, CLV_EUNSUPPORTED, "%s: tensor '%s' has no place in a %s model (the config implies %d tensors)",
                          g->path, g->tensors[i].name, clv_arch_name(c->arch), n);
            goto done;
        }
    /* q/k biases are permuted along their only dim: read them as [n, 1], one
     * value per row. */
    for (int i = 0; i < n; i++)
        if (it[i].rows_per_head && wt[i].ndim == 1) {
            it[i].rows = wt[i].shape[0];
            it[i].cols = 1;
        }
    /* a row must be whole blocks: a quantised bias cannot be read one value at a time */
    for (int i = 0; i < n; i++) {
        uint32_t blk, bsz;
        clv_ggml_type_info(it[i].src->type, &blk, &bsz);
        if (it[i].cols % blk) {
            rc = clv_fail(st, CLV_EUNSUPPORTED, "%s: tensor '%s' is %s but must be permuted per value; only F32/F16/BF16 are supported there",
                          g->path, it[i].src->name, clv_ggml_type_name(it[i].src->type));
            goto done;
        }
    }
    if (!(x.row = malloc(sizeof(float) * (size_t)widest))) {
        rc = clv_fail(st, CLV_ENOMEM, "out of memory");
        goto done;
    }
    char path[4096];
    if ((rc = clv_path_join(path, sizeof path, dir, "model.safetensors", st))) goto done;
    rc = clv_st_write_cb(path, wt, n, "pt", fill_tensor, &x, st);
    rep->n_tensors = n;
done:
    free(x.row);
    free(used);
    free(wt);
    free(it);
    free(d);
    return rc;
}

static int import_into(const clv_gguf *g, const clv_gguf_import_opts *o, const char *dir, clv_gguf_import_report *rep,
                       clv_status *st) {
    int rc;
    hparams h;
    bool weights = g->n_tensors > 0;
    rep->tokenizer_only = !weights;
    int64_t max_len = 0;
    if (weights) {
        if ((rc = read_hparams(g, &h, st)) || (rc = tensor_flags(g, &h, st))) return rc;
        max_len = h.c.max_pos;
        char *cfg = make_config(&h, o->dtype), *gen = NULL;
        rc = write_text(dir, "config.json", cfg, st);
        free(cfg);
        if (rc) return rc;
        /* check what we wrote reads back as the config we meant */
        char path[4096];
        clv_config back;
        if ((rc = clv_path_join(path, sizeof path, dir, "config.json", st))) return rc;
        char *text;
        size_t len;
        if ((rc = clv_read_file(path, &text, &len, st))) return rc;
        rc = clv_config_parse(&back, text, len, path, st);
        free(text);
        if (rc) return clv_wrap(st, "the config.json written for %s does not load: ", g->path);
        if ((rc = make_gen_config(g, &h, &gen, st))) return rc;
        rc = write_text(dir, "generation_config.json", gen, st);
        free(gen);
        if (rc || (rc = write_weights(g, &h, o->dtype, dir, rep, st))) return rc;
    } else {
        int64_t v = 0;
        const clv_gguf_kv *ak = clv_gguf_find(g, "general.architecture");
        if (ak && ak->v.type == CLV_GGUF_STRING && ak->v.len < 64) {
            char k[128];
            snprintf(k, sizeof k, "%.*s.context_length", (int)ak->v.len, ak->v.str);
            if (clv_gguf_get_int(g, k, 1, INT32_MAX, &v, st) == 0) max_len = v;
        }
    }
    if (!clv_gguf_find(g, "tokenizer.ggml.tokens")) {
        if (!weights) return clv_fail(st, CLV_EINVAL, "%s: no tensors and no tokenizer.ggml.tokens: nothing to import", g->path);
        clv_warn("%s: no tokenizer.ggml.tokens: the folder gets no tokenizer\n", g->path);
        return 0;
    }
    if ((rc = clv_gguf_write_tokenizer(g, dir, st)) || (rc = clv_gguf_write_tokenizer_config(g, dir, max_len, st)))
        return rc;
    return 0;
}

int clv_gguf_import(const char *path, const clv_gguf_import_opts *o, clv_gguf_import_report *rep, clv_status *st) {
    clv_gguf_import_report dummy;
    if (!rep) rep = &dummy;
    memset(rep, 0, sizeof *rep);
    double t0 = clv_now();
    if (!o->out_dir || !*o->out_dir) return clv_fail(st, CLV_EINVAL, "import-gguf: an output folder is required");
    if (o->dtype != CLV_DT_BF16 && o->dtype != CLV_DT_F16 && o->dtype != CLV_DT_F32)
        return clv_fail(st, CLV_EINVAL, "import-gguf: the output dtype must be bf16, f16 or f32");
    struct stat sb;
    bool out_exists = stat(o->out_dir, &sb) == 0;
    if (out_exists && !(S_ISDIR(sb.st_mode) && dir_is_empty(o->out_dir)))
        return clv_fail(st, CLV_EINVAL, "%s: already exists and is not an empty folder; remove it or choose another --out", o->out_dir);
    clv_gguf g;
    int rc = clv_gguf_open(&g, path, st);
    if (rc) return rc;
    const clv_gguf_kv *ak = clv_gguf_find(&g, "general.architecture");
    if (ak && ak->v.type == CLV_GGUF_STRING)
        snprintf(rep->arch, sizeof rep->arch, "%.*s", (int)(ak->v.len < 31 ? ak->v.len : 31), ak->v.str);
    const clv_gguf_kv *tm = clv_gguf_find(&g, "tokenizer.ggml.model");
    if (tm && tm->v.type == CLV_GGUF_STRING)
        snprintf(rep->tokenizer_model, sizeof rep->tokenizer_model, "%.*s", (int)(tm->v.len < 31 ? tm->v.len : 31), tm->v.str);

    char tmp[4096];
    size_t ol = strlen(o->out_dir);
    while (ol > 1 && o->out_dir[ol - 1] == '/') ol--;
    if (snprintf(tmp, sizeof tmp, "%.*s.tmp.%d", (int)ol, o->out_dir, (int)getpid()) >= (int)sizeof tmp) {
        clv_gguf_close(&g);
        return clv_fail(st, CLV_EINVAL, "%s: path too long", o->out_dir);
    }
    remove_tmp_dir(tmp); /* a leftover of an earlier run with the same pid */
    if (mkdir(tmp, 0755) != 0) {
        rc = clv_fail(st, CLV_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        clv_gguf_close(&g);
        return rc;
    }
    rc = import_into(&g, o, tmp, rep, st);
    clv_gguf_close(&g);
    if (rc == 0 && rename(tmp, o->out_dir) != 0)
        rc = clv_fail(st, CLV_EIO, "%s: cannot rename %s to it: %s", o->out_dir, tmp, strerror(errno));
    if (rc) remove_tmp_dir(tmp);
    rep->seconds = clv_now() - t0;
    return rc;
}
