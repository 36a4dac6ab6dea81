/* tokenizer.json and tokenizer_config.json from a GGUF file's tokenizer.ggml.*
 * metadata, in the `tokenizers` library's format.
 *
 *   tokenizer.ggml.model "gpt2"  -> byte-level BPE; the pre-tokenizer follows
 *                                   tokenizer.ggml.pre (the split regex the merges
 *                                   were learned with, as llama.cpp applies it)
 *   tokenizer.ggml.model "llama" -> SentencePiece-style BPE: Metaspace, byte
 *                                   fallback; merges from the file or, when it has
 *                                   none, rebuilt from the scores the way
 *                                   transformers does (generate_merges)
 *
 * Tokens marked CONTROL or UNKNOWN become special added tokens, USER_DEFINED
 * ones plain added tokens (matched whole, as llama.cpp does). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "../format/json.h"
#include "../util/util.h"
#include "gguf_import.h"

/* llama.cpp's token types (tokenizer.ggml.token_type) */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* Split regexes of the pre-tokenizers in use, as the original tokenizer.json files write them. */
static const char k_llama3_split[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char k_qwen2_split[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

typedef enum pre_kind { PRE_GPT2, PRE_DIGITS_GPT2, PRE_LLAMA3, PRE_QWEN2 } pre_kind;

/* tokenizer.ggml.pre -> the pre-tokenizer. Names from llama.cpp's converter. */
static bool pre_kind_of(const char *pre, pre_kind *k) {
    static const char *gpt2[] = {"default", "gpt2", "gpt-2", "mpt", "olmo", "jais", "trillion"};
    /* llama.cpp: individual digits, then the GPT-2 split (StarCoder, SmolLM, ...) */
    static const char *digits[] = {"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"};
    static const char *llama3[] = {"llama3", "llama-v3", "llama-bpe", "falcon3", "smaug-bpe", "dbrx", "pixtral"};
    static const char *qwen2[] = {"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"};
    struct { const char **names; size_t n; pre_kind kind; } groups[] = {
        {gpt2, sizeof gpt2 / sizeof *gpt2, PRE_GPT2},
        {digits, sizeof digits / sizeof *digits, PRE_DIGITS_GPT2},
        {llama3, sizeof llama3 / sizeof *llama3, PRE_LLAMA3},
        {qwen2, sizeof qwen2 / sizeof *qwen2, PRE_QWEN2},
    };
    for (size_t gi = 0; gi < sizeof groups / sizeof *groups; gi++)
        for (size_t i = 0; i < groups[gi].n; i++)
            if (strcmp(pre, groups[gi].names[i]) == 0) {
                *k = groups[gi].kind;
                return true;
            }
    return false;
}

/* ---- a string -> id map (open addressing, keys point into the mapped file) ---------------- */

typedef struct smap {
    const char **key;
    uint32_t *len;
    int32_t *val;
    uint64_t cap; /* power of two */
} smap;

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}
static bool smap_init(smap *m, uint64_t n) {
    m->cap = 16;
    while (m->cap < 2 * n) m->cap *= 2;
    m->key = calloc((size_t)m->cap, sizeof *m->key);
    m->len = calloc((size_t)m->cap, sizeof *m->len);
    m->val = calloc((size_t)m->cap, sizeof *m->val);
    return m->key && m->len && m->val;
}
static void smap_free(smap *m) {
    free(m->key);
    free(m->len);
    free(m->val);
}
static uint64_t smap_slot(const smap *m, const char *s, uint32_t n) {
    uint64_t i = hash_bytes(s, n) & (m->cap - 1);
    while (m->key[i] && !(m->len[i] == n && memcmp(m->key[i], s, n) == 0)) i = (i + 1) & (m->cap - 1);
    return i;
}
static int32_t smap_get(const smap *m, const char *s, uint32_t n) {
    uint64_t i = smap_slot(m, s, n);
    return m->key[i] ? m->val[i] : -1;
}
/* Insert; returns the previous value or -1. */
static int32_t smap_put(smap *m, const char *s, uint32_t n, int32_t v) {
    uint64_t i = smap_slot(m, s, n);
    int32_t old = m->key[i] ? m->val[i] : -1;
    m->key[i] = s;
    m->len[i] = n;
    m->val[i] = v;
    return old;
}

/* ---- helpers --------------------------------------------------------------------------- */

/* Length of the valid UTF-8 character at s (n > 0 bytes left), 0 when
 * invalid: utf8proc's rules (no overlong forms, surrogates, or code points
 * past U+10FFFF). */
static int utf8_len(const unsigned char *s, size_t n) {
    utf8proc_int32_t c;
    const utf8proc_ssize_t l = utf8proc_iterate(s, (utf8proc_ssize_t)n, &c);
    return l > 0 ? (int)l : 0;
}
static bool utf8_valid(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int l = utf8_len((const unsigned char *)s + i, n - i);
        if (!l) return false;
        i += (size_t)l;
    }
    return true;
}
static size_t utf8_chars(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xc0) != 0x80;
    return c;
}

/* A cJSON string from bytes that are not NUL-terminated. */
static cJSON *jstr(const char *s, size_t n) {
    char *t = malloc(n + 1);
    CLV_CHECK(t != NULL, "malloc");
    memcpy(t, s, n);
    t[n] = 0;
    cJSON *j = cJSON_CreateString(t);
    free(t);
    CLV_CHECK(j != NULL, "cJSON_CreateString");
    return j;
}
static cJSON *jobj_type(const char *type) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    return o;
}

/* Everything tokenizer.ggml.* says, validated once. */
typedef struct vocab {
    const clv_gguf *g;
    bool spm;                        /* "llama" model */
    uint64_t n;
    const clv_gguf_value *tokens;    /* strings */
    const clv_gguf_value *types;     /* ints, or NULL */
    const clv_gguf_value *scores;    /* floats, or NULL */
    const clv_gguf_value *merges;    /* strings, or NULL */
    int64_t bos, eos, unk, pad;      /* -1 when absent */
    bool add_bos, add_eos, add_space_prefix;
    char *pre;                       /* tokenizer.ggml.pre or NULL */
} vocab;

static void vocab_free(vocab *v) { free(v->pre); }

static int token_type(const vocab *v, uint64_t i) {
    return v->types ? (int)clv_gguf_arr_int(v->types, i) : TT_NORMAL;
}

static int vocab_read(const clv_gguf *g, vocab *v, clv_status *st) {
    memset(v, 0, sizeof *v);
    v->g = g;
    v->bos = v->eos = v->unk = v->pad = -1;
    char *model = NULL;
    int rc = clv_gguf_get_str(g, "tokenizer.ggml.model", &model, st);
    if (rc < 0) return rc;
    if (rc == 1) return clv_fail(st, CLV_EINVAL, "%s: metadata 'tokenizer.ggml.model' is missing", g->path);
    if (strcmp(model, "gpt2") == 0) v->spm = false;
    else if (strcmp(model, "llama") == 0) v->spm = true;
    else {
        rc = clv_fail(st, CLV_EUNSUPPORTED, "%s: tokenizer.ggml.model '%s' is not supported (gpt2: byte-level BPE, llama: SentencePiece BPE)",
                      g->path, model);
        free(model);
        return rc;
    }
    free(model);
    if ((rc = clv_gguf_get_array(g, "tokenizer.ggml.tokens", CLV_GGUF_STRING, &v->tokens, st)) < 0) return rc;
    if (rc == 1) return clv_fail(st, CLV_EINVAL, "%s: metadata 'tokenizer.ggml.tokens' is missing", g->path);
    v->n = v->tokens->len;
    if (v->n == 0 || v->n > (1u << 24))
        return clv_fail(st, CLV_EINVAL, "%s: tokenizer.ggml.tokens has %llu tokens (1..%u)", g->path, (unsigned long long)v->n, 1u << 24);
    if ((rc = clv_gguf_get_array(g, "tokenizer.ggml.token_type", CLV_GGUF_I64, &v->types, st)) < 0 ||
        (rc = clv_gguf_get_array(g, "tokenizer.ggml.scores", CLV_GGUF_F64, &v->scores, st)) < 0 ||
        (rc = clv_gguf_get_array(g, "tokenizer.ggml.merges", CLV_GGUF_STRING, &v->merges, st)) < 0)
        return rc;
    if (v->types && v->types->len != v->n)
        return clv_fail(st, CLV_EINVAL, "%s: tokenizer.ggml.token_type has %llu entries for %llu tokens", g->path,
                        (unsigned long long)v->types->len, (unsigned long long)v->n);
    if (v->scores && v->scores->len != v->n)
        return clv_fail(st, CLV_EINVAL, "%s: tokenizer.ggml.scores has %llu entries for %llu tokens", g->path,
                        (unsigned long long)v->scores->len, (unsigned long long)v->n);
    if (!v->merges && !v->spm)
        return clv_fail(st, CLV_EINVAL, "%s: a gpt2 (byte-level BPE) tokenizer needs tokenizer.ggml.merges", g->path);
    if (!v->merges && !v->scores)
        return clv_fail(st, CLV_EINVAL, "%s: a llama tokenizer needs tokenizer.ggml.merges or tokenizer.ggml.scores", g->path);
    for (uint64_t i = 0; i < v->n; i++) {
        if (memchr(v->tokens->strs[i], 0, (size_t)v->tokens->str_lens[i]) ||
            !utf8_valid(v->tokens->strs[i], (size_t)v->tokens->str_lens[i]))
            return clv_fail(st, CLV_EUNSUPPORTED, "%s: token %llu is not valid UTF-8 text (or holds a NUL byte); tokenizer.json cannot carry it",
                            g->path, (unsigned long long)i);
        if (v->tokens->str_lens[i] == 0)
            return clv_fail(st, CLV_EINVAL, "%s: token %llu is empty", g->path, (unsigned long long)i);
    }
    struct { const char *key; int64_t *out; } ids[] = {
        {"tokenizer.ggml.bos_token_id", &v->bos}, {"tokenizer.ggml.eos_token_id", &v->eos},
        {"tokenizer.ggml.unknown_token_id", &v->unk}, {"tokenizer.ggml.padding_token_id", &v->pad},
    };
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++)
        if ((rc = clv_gguf_get_int(g, ids[i].key, 0, (int64_t)v->n - 1, ids[i].out, st)) < 0) return rc;
    /* llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise */
    v->add_bos = v->spm;
    v->add_space_prefix = v->spm;
    if ((rc = clv_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &v->add_bos, st)) < 0 ||
        (rc = clv_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &v->add_eos, st)) < 0 ||
        (rc = clv_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix, st)) < 0)
        return rc;
    if (v->add_bos && v->bos < 0)
        return clv_fail(st, CLV_EINVAL, "%s: tokenizer.ggml.add_bos_token is true but there is no bos_token_id", g->path);
    if (v->add_eos && v->eos < 0)
        return clv_fail(st, CLV_EINVAL, "%s: tokenizer.ggml.add_eos_token is true but there is no eos_token_id", g->path);
    if ((rc = clv_gguf_get_str(g, "tokenizer.ggml.pre", &v->pre, st)) < 0) return rc;
    return 0;
}

static cJSON *tok_str(const vocab *v, int64_t id) {
    return jstr(v->tokens->strs[id], (size_t)v->tokens->str_lens[id]);
}

/* ---- merges ------------------------------------------------------------------------------- */

/* "a b" -> ["a", "b"], split at the first space after the first byte (as llama.cpp reads them). */
static int add_file_merges(const vocab *v, cJSON *arr, clv_status *st) {
    for (uint64_t i = 0; i < v->merges->len; i++) {
        const char *s = v->merges->strs[i];
        size_t n = (size_t)v->merges->str_lens[i];
        const char *sp = n > 1 ? memchr(s + 1, ' ', n - 1) : NULL;
        if (!sp || sp + 1 == s + n)
            return clv_fail(st, CLV_EINVAL, "%s: tokenizer.ggml.merges[%llu] is not two tokens separated by a space", v->g->path,
                            (unsigned long long)i);
        if (!utf8_valid(s, n) || memchr(s, 0, n))
            return clv_fail(st, CLV_EINVAL, "%s: tokenizer.ggml.merges[%llu] is not valid UTF-8 text", v->g->path, (unsigned long long)i);
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, jstr(s, (size_t)(sp - s)));
        cJSON_AddItemToArray(pair, jstr(sp + 1, (size_t)(s + n - sp - 1)));
        cJSON_AddItemToArray(arr, pair);
    }
    return 0;
}

typedef struct gmerge {
    int32_t tok;     /* the merged token */
    uint32_t split;  /* byte offset of the right piece */
    int32_t lid, rid;
    double score;
    uint32_t lchars, rchars;
    uint64_t seq;    /* position before the final sort: keeps it stable */
} gmerge;

static int cmp_local(const void *a, const void *b) {
    const gmerge *x = a, *y = b;
    if (x->lid != y->lid) return x->lid < y->lid ? -1 : 1;
    return (x->rid > y->rid) - (x->rid < y->rid);
}
/* Descending by (score, len(left), len(right)), stable. */
static int cmp_global(const void *a, const void *b) {
    const gmerge *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->lchars != y->lchars) return x->lchars > y->lchars ? -1 : 1;
    if (x->rchars != y->rchars) return x->rchars > y->rchars ? -1 : 1;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

/* No merges in the file: rebuild them from the vocabulary and scores exactly
 * as transformers' generate_merges does (every split of a token into two
 * tokens of the vocabulary, best score first). `ids` maps token -> last id,
 * `first_ids` token -> first id. */
static int add_generated_merges(const vocab *v, const smap *ids, const smap *first_ids, cJSON *arr, clv_status *st) {
    uint64_t cap = 1024, n = 0;
    gmerge *m = malloc(sizeof *m * cap);
    if (!m) return clv_fail(st, CLV_ENOMEM, "out of memory");
    for (uint64_t t = 0; t < v->n; t++) {
        const char *s = v->tokens->strs[t];
        uint32_t len = (uint32_t)v->tokens->str_lens[t];
        int32_t last = smap_get(ids, s, len);
        /* a dict keeps a repeated token at its first position, with its last score */
        if (smap_get(first_ids, s, len) != (int32_t)t) continue;
        uint64_t start = n;
        uint32_t chars = (uint32_t)utf8_chars(s, len), lc = 0;
        for (uint32_t off = 0; off < len;) {
            int cl = utf8_len((const unsigned char *)s + off, len - off);
            off += (uint32_t)cl;
            lc++;
            if (off >= len) break;
            int32_t l = smap_get(ids, s, off), r = smap_get(ids, s + off, len - off);
            if (l < 0 || r < 0) continue;
            if (n == cap) {
                gmerge *nm = realloc(m, sizeof *m * (cap *= 2));
                if (!nm) {
                    free(m);
                    return clv_fail(st, CLV_ENOMEM, "out of memory");
                }
                m = nm;
            }
            m[n++] = (gmerge){(int32_t)t, off, l, r, clv_gguf_arr_float(v->scores, (uint64_t)last), lc, chars - lc, 0};
        }
        qsort(m + start, (size_t)(n - start), sizeof *m, cmp_local);
    }
    for (uint64_t i = 0; i < n; i++) m[i].seq = i;
    qsort(m, (size_t)n, sizeof *m, cmp_global);
    for (uint64_t i = 0; i < n; i++) {
        const char *s = v->tokens->strs[m[i].tok];
        size_t len = (size_t)v->tokens->str_lens[m[i].tok];
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, jstr(s, m[i].split));
        cJSON_AddItemToArray(pair, jstr(s + m[i].split, len - m[i].split));
        cJSON_AddItemToArray(arr, pair);
    }
    free(m);
    return 0;
}

/* ---- the pieces of tokenizer.json ----------------------------------------------------------- */

static cJSON *byte_level(bool add_prefix_space, bool trim_offsets, bool use_regex) {
    cJSON *o = jobj_type("ByteLevel");
    cJSON_AddBoolToObject(o, "add_prefix_space", add_prefix_space);
    cJSON_AddBoolToObject(o, "trim_offsets", trim_offsets);
    cJSON_AddBoolToObject(o, "use_regex", use_regex);
    return o;
}

static cJSON *split_regex(const char *re) {
    cJSON *o = jobj_type("Split");
    cJSON *p = cJSON_AddObjectToObject(o, "pattern");
    cJSON_AddStringToObject(p, "Regex", re);
    cJSON_AddStringToObject(o, "behavior", "Isolated");
    cJSON_AddBoolToObject(o, "invert", false);
    return o;
}

static cJSON *sequence(const char *type, const char *key, cJSON *a, cJSON *b) {
    cJSON *o = jobj_type(type);
    cJSON *arr = cJSON_AddArrayToObject(o, key);
    cJSON_AddItemToArray(arr, a);
    cJSON_AddItemToArray(arr, b);
    return o;
}

/* TemplateProcessing that adds bos and/or eos around each sequence. */
static cJSON *template_processing(const vocab *v) {
    cJSON *o = jobj_type("TemplateProcessing");
    const char *names[2] = {"single", "pair"};
    for (int p = 0; p < 2; p++) {
        cJSON *arr = cJSON_AddArrayToObject(o, names[p]);
        for (int s = 0; s <= p; s++) {
            const char *seq = s ? "B" : "A";
            if (v->add_bos) {
                cJSON *e = cJSON_CreateObject(), *st = cJSON_AddObjectToObject(e, "SpecialToken");
                cJSON_AddItemToObject(st, "id", tok_str(v, v->bos));
                cJSON_AddNumberToObject(st, "type_id", s);
                cJSON_AddItemToArray(arr, e);
            }
            cJSON *e = cJSON_CreateObject(), *sq = cJSON_AddObjectToObject(e, "Sequence");
            cJSON_AddStringToObject(sq, "id", seq);
            cJSON_AddNumberToObject(sq, "type_id", s);
            cJSON_AddItemToArray(arr, e);
            if (v->add_eos) {
                cJSON *f = cJSON_CreateObject(), *st = cJSON_AddObjectToObject(f, "SpecialToken");
                cJSON_AddItemToObject(st, "id", tok_str(v, v->eos));
                cJSON_AddNumberToObject(st, "type_id", s);
                cJSON_AddItemToArray(arr, f);
            }
        }
    }
    cJSON *sp = cJSON_AddObjectToObject(o, "special_tokens");
    int64_t which[2] = {v->add_bos ? v->bos : -1, v->add_eos ? v->eos : -1};
    for (int k = 0; k < 2; k++) {
        if (which[k] < 0 || (k == 1 && which[1] == which[0])) continue;
        cJSON *name = tok_str(v, which[k]);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddItemToObject(e, "id", cJSON_CreateString(name->valuestring));
        cJSON *ids = cJSON_AddArrayToObject(e, "ids");
        cJSON_AddItemToArray(ids, cJSON_CreateNumber((double)which[k]));
        cJSON *toks = cJSON_AddArrayToObject(e, "tokens");
        cJSON_AddItemToArray(toks, cJSON_CreateString(name->valuestring));
        cJSON_AddItemToObject(sp, name->valuestring, e);
        cJSON_Delete(name);
    }
    return o;
}

int clv_gguf_write_tokenizer(const clv_gguf *g, const char *dir, clv_status *st) {
    vocab v;
    int rc = vocab_read(g, &v, st);
    if (rc) {
        vocab_free(&v);
        return rc;
    }
    pre_kind pk = PRE_GPT2;
    if (!v.spm && v.pre && !pre_kind_of(v.pre, &pk))
        clv_warn("%s: tokenizer.ggml.pre '%s' is not one cleave knows; using the GPT-2 split\n", g->path, v.pre);
    smap ids = {0};
    cJSON *root = NULL;
    if (!smap_init(&ids, v.n)) {
        rc = clv_fail(st, CLV_ENOMEM, "out of memory");
        goto done;
    }
    for (uint64_t i = 0; i < v.n; i++) smap_put(&ids, v.tokens->strs[i], (uint32_t)v.tokens->str_lens[i], (int32_t)i);

    root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (uint64_t i = 0; i < v.n; i++) {
        int tt = token_type(&v, i);
        bool special = tt == TT_CONTROL || tt == TT_UNKNOWN || (int64_t)i == v.unk;
        if (!special && tt != TT_USER_DEFINED) continue;
        if (smap_get(&ids, v.tokens->strs[i], (uint32_t)v.tokens->str_lens[i]) != (int32_t)i) continue; /* a repeat */
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "id", (double)i);
        cJSON_AddItemToObject(e, "content", tok_str(&v, (int64_t)i));
        cJSON_AddBoolToObject(e, "single_word", false);
        cJSON_AddBoolToObject(e, "lstrip", false);
        cJSON_AddBoolToObject(e, "rstrip", false);
        cJSON_AddBoolToObject(e, "normalized", false);
        cJSON_AddBoolToObject(e, "special", special);
        cJSON_AddItemToArray(added, e);
    }

    if (v.spm) {
        cJSON_AddNullToObject(root, "normalizer");
        cJSON *ms = jobj_type("Metaspace");
        cJSON_AddStringToObject(ms, "replacement", "\xe2\x96\x81");
        cJSON_AddStringToObject(ms, "prepend_scheme", v.add_space_prefix ? "first" : "never");
        cJSON_AddBoolToObject(ms, "split", false);
        cJSON_AddItemToObject(root, "pre_tokenizer", ms);
    } else {
        if (pk == PRE_QWEN2) cJSON_AddItemToObject(root, "normalizer", jobj_type("NFC"));
        else cJSON_AddNullToObject(root, "normalizer");
        cJSON *pt;
        switch (pk) {
        case PRE_DIGITS_GPT2: {
            cJSON *dg = jobj_type("Digits");
            cJSON_AddBoolToObject(dg, "individual_digits", true);
            pt = sequence("Sequence", "pretokenizers", dg, byte_level(false, true, true));
            break;
        }
        case PRE_LLAMA3: pt = sequence("Sequence", "pretokenizers", split_regex(k_llama3_split), byte_level(false, true, false)); break;
        case PRE_QWEN2: pt = sequence("Sequence", "pretokenizers", split_regex(k_qwen2_split), byte_level(false, false, false)); break;
        default: pt = byte_level(false, true, true); break;
        }
        cJSON_AddItemToObject(root, "pre_tokenizer", pt);
    }

    if (v.add_bos || v.add_eos) {
        cJSON *tp = template_processing(&v);
        cJSON_AddItemToObject(root, "post_processor", v.spm ? tp : sequence("Sequence", "processors", byte_level(true, false, true), tp));
    } else if (!v.spm) {
        cJSON_AddItemToObject(root, "post_processor", byte_level(true, false, true));
    } else {
        cJSON_AddNullToObject(root, "post_processor");
    }

    if (v.spm) {
        cJSON *dec = jobj_type("Sequence"), *ds = cJSON_AddArrayToObject(dec, "decoders");
        cJSON *rep = jobj_type("Replace"), *pat = cJSON_AddObjectToObject(rep, "pattern");
        cJSON_AddStringToObject(pat, "String", "\xe2\x96\x81");
        cJSON_AddStringToObject(rep, "content", " ");
        cJSON_AddItemToArray(ds, rep);
        cJSON_AddItemToArray(ds, jobj_type("ByteFallback"));
        cJSON_AddItemToArray(ds, jobj_type("Fuse"));
        if (v.add_space_prefix) {
            cJSON *strip = jobj_type("Strip");
            cJSON_AddStringToObject(strip, "content", " ");
            cJSON_AddNumberToObject(strip, "start", 1);
            cJSON_AddNumberToObject(strip, "stop", 0);
            cJSON_AddItemToArray(ds, strip);
        }
        cJSON_AddItemToObject(root, "decoder", dec);
    } else {
        cJSON_AddItemToObject(root, "decoder", byte_level(true, true, true));
    }

    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    if (v.spm && v.unk >= 0) cJSON_AddItemToObject(model, "unk_token", tok_str(&v, v.unk));
    else cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", v.spm);
    cJSON_AddBoolToObject(model, "byte_fallback", v.spm);
    cJSON_AddBoolToObject(model, "ignore_merges", !v.spm && pk == PRE_LLAMA3);
    cJSON *vj = cJSON_AddObjectToObject(model, "vocab");
    uint64_t repeats = 0;
    for (uint64_t i = 0; i < v.n; i++) {
        /* a repeated token maps to its last id, as in llama.cpp and transformers */
        if (smap_get(&ids, v.tokens->strs[i], (uint32_t)v.tokens->str_lens[i]) != (int32_t)i) {
            repeats++;
            continue;
        }
        cJSON *name = tok_str(&v, (int64_t)i);
        cJSON_AddItemToObject(vj, name->valuestring, cJSON_CreateNumber((double)i));
        cJSON_Delete(name);
    }
    if (repeats) clv_warn("%s: %llu tokens repeat a later token's text; tokenizer.json maps each text to its last id\n", g->path,
                          (unsigned long long)repeats);
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    if (v.merges) rc = add_file_merges(&v, merges, st);
    else {
        smap first = {0};
        if (!smap_init(&first, v.n)) rc = clv_fail(st, CLV_ENOMEM, "out of memory");
        for (uint64_t i = v.n; rc == 0 && i-- > 0;) smap_put(&first, v.tokens->strs[i], (uint32_t)v.tokens->str_lens[i], (int32_t)i);
        if (rc == 0) rc = add_generated_merges(&v, &ids, &first, merges, st);
        smap_free(&first);
    }
    if (rc) goto done;

    char *text = clv_json_print_py(root);
    char path[4096];
    if ((rc = clv_path_join(path, sizeof path, dir, "tokenizer.json", st)) == 0) rc = clv_write_file(path, text, strlen(text), st);
    free(text);
done:
    cJSON_Delete(root);
    smap_free(&ids);
    vocab_free(&v);
    return rc;
}

int clv_gguf_write_tokenizer_config(const clv_gguf *g, const char *dir, int64_t max_len, clv_status *st) {
    vocab v;
    int rc = vocab_read(g, &v, st);
    if (rc) {
        vocab_free(&v);
        return rc;
    }
    char *tmpl = NULL;
    if ((rc = clv_gguf_get_str(g, "tokenizer.chat_template", &tmpl, st)) < 0) {
        vocab_free(&v);
        return rc;
    }
    if (tmpl && !utf8_valid(tmpl, strlen(tmpl))) {
        free(tmpl);
        vocab_free(&v);
        return clv_fail(st, CLV_EINVAL, "%s: tokenizer.chat_template is not valid UTF-8", g->path);
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddBoolToObject(r, "add_bos_token", v.add_bos);
    cJSON_AddBoolToObject(r, "add_eos_token", v.add_eos);
    if (v.bos >= 0) cJSON_AddItemToObject(r, "bos_token", tok_str(&v, v.bos));
    else cJSON_AddNullToObject(r, "bos_token");
    if (tmpl) cJSON_AddStringToObject(r, "chat_template", tmpl);
    cJSON_AddBoolToObject(r, "clean_up_tokenization_spaces", false);
    if (v.eos >= 0) cJSON_AddItemToObject(r, "eos_token", tok_str(&v, v.eos));
    else cJSON_AddNullToObject(r, "eos_token");
    if (max_len > 0) cJSON_AddNumberToObject(r, "model_max_length", (double)max_len);
    if (v.pad >= 0) cJSON_AddItemToObject(r, "pad_token", tok_str(&v, v.pad));
    else cJSON_AddNullToObject(r, "pad_token");
    cJSON_AddStringToObject(r, "tokenizer_class", "PreTrainedTokenizerFast");
    if (v.unk >= 0) cJSON_AddItemToObject(r, "unk_token", tok_str(&v, v.unk));
    else cJSON_AddNullToObject(r, "unk_token");
    char *text = clv_json_print_py(r);
    size_t n = strlen(text);
    char *t2 = realloc(text, n + 2);
    CLV_CHECK(t2 != NULL, "realloc");
    memcpy(t2 + n, "\n", 2);
    char path[4096];
    if ((rc = clv_path_join(path, sizeof path, dir, "tokenizer_config.json", st)) == 0) rc = clv_write_file(path, t2, n + 1, st);
    free(t2);
    cJSON_Delete(r);
    free(tmpl);
    vocab_free(&v);
    return rc;
}
