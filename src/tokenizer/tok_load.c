/* tokenizer.json and tokenizer_config.json -> clv_tokenizer.
 *
 * Every component is checked against what cleave implements; anything else is
 * refused with the JSON path of the component and the list of what is
 * supported. Ids follow `tokenizers`' own rules, including for added tokens,
 * whose "id" field `tokenizers` recomputes on load (model vocab id if the
 * content is in the vocab, else the next id after the vocab's entry count). */
#include <cjson/cJSON.h>
#include <string.h>

#include "tok_internal.h"

#define MAX_ID (1 << 22) /* 4M ids: every real vocabulary is far below */

#define SUP_MODEL "BPE"
#define SUP_NORM "NFC, NFD, NFKC, NFKD, Prepend, Replace, Strip, Sequence"
#define SUP_PRE "ByteLevel, Split, Metaspace, Digits, Sequence"
#define SUP_POST "TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence"
#define SUP_DEC "ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, Sequence"

typedef struct lctx {
    clv_tokenizer *t;
    const char *name;
    clv_status *st;
} lctx;

static const cJSON *jfield(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNull(v) ? NULL : v;
}

/* A JSON object from text that must be UTF-8 (RFC 8259, and what serde_json and
 * Python's json require): a raw invalid byte in a token's string would otherwise
 * pass through cJSON and come back out of the decoder. */
static int parse_object(lctx *c, const char *json, size_t len, cJSON **out) {
    *out = NULL;
    size_t bad = tk_utf8_first_invalid((const unsigned char *)json, len);
    if (bad < len)
        return clv_fail(c->st, CLV_EINVAL, "%s: not valid UTF-8 (byte 0x%02X at offset %zu)", c->name,
                        (unsigned char)json[bad], bad);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return clv_fail(c->st, CLV_EINVAL, "%s: not a JSON object%s", c->name, root ? "" : " (parse error)");
    }
    *out = root;
    return 0;
}

static int jbool(lctx *c, const cJSON *o, const char *k, bool def, bool *out, const char *path) {
    const cJSON *v = jfield(o, k);
    if (!v) { *out = def; return 0; }
    if (!cJSON_IsBool(v)) return clv_fail(c->st, CLV_EINVAL, "%s: %s.%s must be true or false", c->name, path, k);
    *out = cJSON_IsTrue(v);
    return 0;
}

static int jstr(lctx *c, const cJSON *o, const char *k, const char **out, const char *path) {
    const cJSON *v = jfield(o, k);
    if (!v || !cJSON_IsString(v))
        return clv_fail(c->st, CLV_EINVAL, "%s: %s.%s must be a string", c->name, path, k);
    *out = v->valuestring;
    return 0;
}

static int jint(lctx *c, const cJSON *o, const char *k, int def, int lo, int hi, int *out, const char *path) {
    const cJSON *v = jfield(o, k);
    if (!v) { *out = def; return 0; }
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int64_t)v->valuedouble || v->valuedouble < lo ||
        v->valuedouble > hi)
        return clv_fail(c->st, CLV_EINVAL, "%s: %s.%s must be an integer in [%d, %d]", c->name, path, k, lo, hi);
    *out = (int)v->valuedouble;
    return 0;
}

static char *dupn(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p) { memcpy(p, s, n); p[n] = 0; }
    return p;
}

/* One Unicode character given as a JSON string (Metaspace replacement, Strip content). */
static int jchar(lctx *c, const cJSON *o, const char *k, int32_t *cp, const char *path) {
    const char *s;
    if (jstr(c, o, k, &s, path)) return c->st->code;
    size_t n = strlen(s);
    int len = tk_utf8_valid_at((const unsigned char *)s, n);
    if (len == 0 || (size_t)len != n)
        return clv_fail(c->st, CLV_EINVAL, "%s: %s.%s must be exactly one character", c->name, path, k);
    *cp = tk_utf8_decode((const unsigned char *)s, &len);
    return 0;
}

static int compile_regex(lctx *c, const char *src, pcre2_code **out, const char *path) {
    int err;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)src, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR buf[256];
        pcre2_get_error_message(err, buf, sizeof buf);
        return clv_fail(c->st, CLV_EUNSUPPORTED, "%s: %s: regex /%s/ does not compile at offset %zu: %s", c->name, path,
                        src, (size_t)off, (const char *)buf);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* best effort: the interpreter is used when JIT is unavailable */
    *out = re;
    return 0;
}

/* {"String": "..."} or {"Regex": "..."} */
static int parse_pattern(lctx *c, const cJSON *o, tk_pattern *p, const char *path) {
    const cJSON *pat = jfield(o, "pattern");
    const cJSON *s = pat ? jfield(pat, "String") : NULL, *r = pat ? jfield(pat, "Regex") : NULL;
    if (s && cJSON_IsString(s)) {
        p->lit_len = strlen(s->valuestring);
        p->lit = dupn(s->valuestring, p->lit_len);
        if (!p->lit) return clv_fail(c->st, CLV_ENOMEM, "%s: out of memory", c->name);
        return 0;
    }
    if (r && cJSON_IsString(r)) return compile_regex(c, r->valuestring, &p->re, path);
    return clv_fail(c->st, CLV_EINVAL, "%s: %s.pattern must be {\"String\": ...} or {\"Regex\": ...}", c->name, path);
}

static void pattern_free(tk_pattern *p) {
    free(p->lit);
    if (p->re) pcre2_code_free(p->re);
}

static const char *jtype(const cJSON *o) {
    const cJSON *ty = jfield(o, "type");
    return cJSON_IsString(ty) ? ty->valuestring : NULL;
}

#define GROW(arr, n, what)                                                                          \
    do {                                                                                           \
        void *np_ = realloc((arr), ((size_t)(n) + 1) * sizeof *(arr));                             \
        if (!np_) return clv_fail(c->st, CLV_ENOMEM, "%s: out of memory (%s)", c->name, what);     \
        (arr) = np_;                                                                               \
        memset(&(arr)[(n)], 0, sizeof *(arr));                                                     \
    } while (0)

/* ---- normalizer -------------------------------------------------------------------- */
static int parse_norm(lctx *c, const cJSON *o, const char *path, int depth) {
    clv_tokenizer *t = c->t;
    const char *ty = jtype(o);
    if (!cJSON_IsObject(o) || !ty) return clv_fail(c->st, CLV_EINVAL, "%s: %s must be an object with a \"type\"", c->name, path);
    if (depth > 16) return clv_fail(c->st, CLV_EINVAL, "%s: %s: Sequence nested too deeply", c->name, path);
    char sub[256];
    if (!strcmp(ty, "Sequence")) {
        const cJSON *arr = jfield(o, "normalizers"), *e;
        if (!cJSON_IsArray(arr)) return clv_fail(c->st, CLV_EINVAL, "%s: %s.normalizers must be an array", c->name, path);
        int i = 0;
        cJSON_ArrayForEach(e, arr) {
            snprintf(sub, sizeof sub, "%s.normalizers[%d]", path, i++);
            if (parse_norm(c, e, sub, depth + 1)) return c->st->code;
        }
        return 0;
    }
    tk_norm n = {0};
    if (!strcmp(ty, "NFC")) n.kind = TK_NORM_NFC;
    else if (!strcmp(ty, "NFD")) n.kind = TK_NORM_NFD;
    else if (!strcmp(ty, "NFKC")) n.kind = TK_NORM_NFKC;
    else if (!strcmp(ty, "NFKD")) n.kind = TK_NORM_NFKD;
    else if (!strcmp(ty, "Prepend")) {
        const char *s;
        if (jstr(c, o, "prepend", &s, path)) return c->st->code;
        n.kind = TK_NORM_PREPEND;
        n.str_len = strlen(s);
        n.str = dupn(s, n.str_len);
    } else if (!strcmp(ty, "Replace")) {
        const char *s;
        n.kind = TK_NORM_REPLACE;
        if (jstr(c, o, "content", &s, path)) return c->st->code;
        n.str_len = strlen(s);
        n.str = dupn(s, n.str_len);
        if (parse_pattern(c, o, &n.pat, path)) { free(n.str); return c->st->code; }
    } else if (!strcmp(ty, "Strip")) {
        n.kind = TK_NORM_STRIP;
        if (jbool(c, o, "strip_left", true, &n.left, path) || jbool(c, o, "strip_right", true, &n.right, path))
            return c->st->code;
    } else
        return clv_fail(c->st, CLV_EUNSUPPORTED, "%s: %s: normalizer type '%s' is not supported (supported: %s)",
                        c->name, path, ty, SUP_NORM);
    GROW(t->norms, t->n_norms, "normalizers");
    t->norms[t->n_norms++] = n;
    return 0;
}

/* ---- pre-tokenizer ------------------------------------------------------------------- */
static int parse_scheme(lctx *c, const cJSON *o, tk_prepend_scheme *out, const char *path) {
    const cJSON *ps = jfield(o, "prepend_scheme");
    *out = TK_PREPEND_ALWAYS;
    if (ps) {
        if (!cJSON_IsString(ps)) return clv_fail(c->st, CLV_EINVAL, "%s: %s.prepend_scheme must be a string", c->name, path);
        if (!strcmp(ps->valuestring, "always")) *out = TK_PREPEND_ALWAYS;
        else if (!strcmp(ps->valuestring, "first")) *out = TK_PREPEND_FIRST;
        else if (!strcmp(ps->valuestring, "never")) *out = TK_PREPEND_NEVER;
        else
            return clv_fail(c->st, CLV_EINVAL, "%s: %s.prepend_scheme '%s' is not one of always, first, never", c->name,
                            path, ps->valuestring);
    }
    const cJSON *aps = jfield(o, "add_prefix_space");
    if (cJSON_IsFalse(aps)) {
        if (*out != TK_PREPEND_NEVER && ps)
            return clv_fail(c->st, CLV_EINVAL, "%s: %s: add_prefix_space does not match declared prepend_scheme", c->name,
                            path);
        *out = TK_PREPEND_NEVER;
    }
    return 0;
}

static int parse_pre(lctx *c, const cJSON *o, const char *path, int depth) {
    clv_tokenizer *t = c->t;
    const char *ty = jtype(o);
    if (!cJSON_IsObject(o) || !ty) return clv_fail(c->st, CLV_EINVAL, "%s: %s must be an object with a \"type\"", c->name, path);
    if (depth > 16) return clv_fail(c->st, CLV_EINVAL, "%s: %s: Sequence nested too deeply", c->name, path);
    char sub[256];
    if (!strcmp(ty, "Sequence")) {
        const cJSON *arr = jfield(o, "pretokenizers"), *e;
        if (!cJSON_IsArray(arr)) return clv_fail(c->st, CLV_EINVAL, "%s: %s.pretokenizers must be an array", c->name, path);
        int i = 0;
        cJSON_ArrayForEach(e, arr) {
            snprintf(sub, sizeof sub, "%s.pretokenizers[%d]", path, i++);
            if (parse_pre(c, e, sub, depth + 1)) return c->st->code;
        }
        return 0;
    }
    tk_pre p = {0};
    if (!strcmp(ty, "ByteLevel")) {
        p.kind = TK_PRE_BYTELEVEL;
        if (jbool(c, o, "add_prefix_space", true, &p.add_prefix_space, path) ||
            jbool(c, o, "use_regex", true, &p.use_regex, path))
            return c->st->code;
        if (p.use_regex && !t->bytelevel_re &&
            compile_regex(c, "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
                          &t->bytelevel_re, path))
            return c->st->code;
    } else if (!strcmp(ty, "Split")) {
        p.kind = TK_PRE_SPLIT;
        const char *b;
        if (jstr(c, o, "behavior", &b, path) || jbool(c, o, "invert", false, &p.invert, path)) return c->st->code;
        if (!strcmp(b, "Removed")) p.behavior = TK_SPLIT_REMOVED;
        else if (!strcmp(b, "Isolated")) p.behavior = TK_SPLIT_ISOLATED;
        else if (!strcmp(b, "MergedWithPrevious")) p.behavior = TK_SPLIT_MERGED_PREV;
        else if (!strcmp(b, "MergedWithNext")) p.behavior = TK_SPLIT_MERGED_NEXT;
        else if (!strcmp(b, "Contiguous")) p.behavior = TK_SPLIT_CONTIGUOUS;
        else
            return clv_fail(c->st, CLV_EINVAL,
                            "%s: %s.behavior '%s' is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, "
                            "Contiguous", c->name, path, b);
        if (parse_pattern(c, o, &p.pat, path)) return c->st->code;
    } else if (!strcmp(ty, "Metaspace")) {
        p.kind = TK_PRE_METASPACE;
        if (jchar(c, o, "replacement", &p.repl_cp, path) || parse_scheme(c, o, &p.scheme, path) ||
            jbool(c, o, "split", true, &p.split, path))
            return c->st->code;
        p.repl_len = tk_utf8_encode(p.repl_cp, p.repl);
    } else if (!strcmp(ty, "Digits")) {
        p.kind = TK_PRE_DIGITS;
        if (jbool(c, o, "individual_digits", false, &p.individual_digits, path)) return c->st->code;
    } else
        return clv_fail(c->st, CLV_EUNSUPPORTED, "%s: %s: pre_tokenizer type '%s' is not supported (supported: %s)",
                        c->name, path, ty, SUP_PRE);
    GROW(t->pres, t->n_pres, "pre_tokenizers");
    t->pres[t->n_pres++] = p;
    return 0;
}

/* ---- decoder ------------------------------------------------------------------------ */
static int parse_dec(lctx *c, const cJSON *o, const char *path, int depth) {
    clv_tokenizer *t = c->t;
    const char *ty = jtype(o);
    if (!cJSON_IsObject(o) || !ty) return clv_fail(c->st, CLV_EINVAL, "%s: %s must be an object with a \"type\"", c->name, path);
    if (depth > 16) return clv_fail(c->st, CLV_EINVAL, "%s: %s: Sequence nested too deeply", c->name, path);
    char sub[256];
    if (!strcmp(ty, "Sequence")) {
        const cJSON *arr = jfield(o, "decoders"), *e;
        if (!cJSON_IsArray(arr)) return clv_fail(c->st, CLV_EINVAL, "%s: %s.decoders must be an array", c->name, path);
        int i = 0;
        cJSON_ArrayForEach(e, arr) {
            snprintf(sub, sizeof sub, "%s.decoders[%d]", path, i++);
            if (parse_dec(c, e, sub, depth + 1)) return c->st->code;
        }
        return 0;
    }
    tk_dec d = {0};
    if (!strcmp(ty, "ByteLevel")) d.kind = TK_DEC_BYTELEVEL;
    else if (!strcmp(ty, "ByteFallback")) { d.kind = TK_DEC_BYTEFALLBACK; t->has_bytefallback_dec = true; }
    else if (!strcmp(ty, "Fuse")) d.kind = TK_DEC_FUSE;
    else if (!strcmp(ty, "Strip")) {
        d.kind = TK_DEC_STRIP;
        if (jchar(c, o, "content", &d.strip_cp, path) || jint(c, o, "start", 0, 0, 1 << 20, &d.start, path) ||
            jint(c, o, "stop", 0, 0, 1 << 20, &d.stop, path))
            return c->st->code;
    } else if (!strcmp(ty, "Replace")) {
        const char *s;
        d.kind = TK_DEC_REPLACE;
        if (jstr(c, o, "content", &s, path)) return c->st->code;
        d.content_len = strlen(s);
        d.content = dupn(s, d.content_len);
        if (parse_pattern(c, o, &d.pat, path)) { free(d.content); return c->st->code; }
    } else if (!strcmp(ty, "Metaspace")) {
        tk_prepend_scheme sc;
        d.kind = TK_DEC_METASPACE;
        if (jchar(c, o, "replacement", &d.strip_cp, path) || parse_scheme(c, o, &sc, path)) return c->st->code;
        d.prepend = sc != TK_PREPEND_NEVER;
    } else
        return clv_fail(c->st, CLV_EUNSUPPORTED, "%s: %s: decoder type '%s' is not supported (supported: %s)", c->name,
                        path, ty, SUP_DEC);
    GROW(t->decs, t->n_decs, "decoders");
    t->decs[t->n_decs++] = d;
    return 0;
}

/* ---- post-processor -------------------------------------------------------------------- */
static int post_add(lctx *c, bool is_seq, const int32_t *ids, int n) {
    clv_tokenizer *t = c->t;
    GROW(t->post, t->n_post, "post_processor");
    tk_tmpl_piece *p = &t->post[t->n_post++];
    p->is_seq = is_seq;
    if (n) {
        p->ids = malloc((size_t)n * sizeof *ids);
        if (!p->ids) return clv_fail(c->st, CLV_ENOMEM, "%s: out of memory", c->name);
        memcpy(p->ids, ids, (size_t)n * sizeof *ids);
        p->n_ids = n;
    }
    return 0;
}

static int parse_template(lctx *c, const cJSON *o, const char *path) {
    const cJSON *single = jfield(o, "single"), *specials = jfield(o, "special_tokens"), *e;
    if (!cJSON_IsArray(single)) return clv_fail(c->st, CLV_EINVAL, "%s: %s.single must be an array", c->name, path);
    if (c->t->post) return clv_fail(c->st, CLV_EUNSUPPORTED, "%s: %s: only one TemplateProcessing is supported", c->name, path);
    int i = 0, n_seq = 0;
    cJSON_ArrayForEach(e, single) {
        const cJSON *sp = jfield(e, "SpecialToken"), *sq = jfield(e, "Sequence");
        if (sq) {
            const cJSON *id = jfield(sq, "id");
            if (!cJSON_IsString(id) || strcmp(id->valuestring, "A"))
                return clv_fail(c->st, CLV_EINVAL, "%s: %s.single[%d]: a single-sequence template can only use sequence A",
                                c->name, path, i);
            n_seq++;
            if (post_add(c, true, NULL, 0)) return c->st->code;
        } else if (sp) {
            const cJSON *id = jfield(sp, "id");
            if (!cJSON_IsString(id)) return clv_fail(c->st, CLV_EINVAL, "%s: %s.single[%d].SpecialToken.id must be a string", c->name, path, i);
            const cJSON *tok = specials ? jfield(specials, id->valuestring) : NULL;
            const cJSON *ids = tok ? jfield(tok, "ids") : NULL, *x;
            if (!cJSON_IsArray(ids))
                return clv_fail(c->st, CLV_EINVAL, "%s: %s: Missing SpecialToken(s) with id(s) '%s' in special_tokens", c->name,
                                path, id->valuestring);
            int k = cJSON_GetArraySize(ids), j = 0;
            if (k > 64) return clv_fail(c->st, CLV_EINVAL, "%s: %s: special token '%s' has too many ids", c->name, path, id->valuestring);
            int32_t buf[64];
            cJSON_ArrayForEach(x, ids) {
                if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble >= MAX_ID || x->valuedouble != (int32_t)x->valuedouble)
                    return clv_fail(c->st, CLV_EINVAL, "%s: %s.special_tokens.%s.ids must be token ids", c->name, path, id->valuestring);
                buf[j++] = (int32_t)x->valuedouble;
            }
            if (post_add(c, false, buf, k)) return c->st->code;
        } else
            return clv_fail(c->st, CLV_EINVAL, "%s: %s.single[%d] must be {\"SpecialToken\": ...} or {\"Sequence\": ...}", c->name, path, i);
        i++;
    }
    if (n_seq != 1) return clv_fail(c->st, CLV_EINVAL, "%s: %s.single must hold sequence A exactly once", c->name, path);
    return 0;
}

/* Bert/Roberta: [cls] $A [sep]; "cls": ["[CLS]", 101] */
static int parse_clssep(lctx *c, const cJSON *o, const char *path) {
    int32_t ids[2];
    const char *keys[2] = {"cls", "sep"};
    for (int i = 0; i < 2; i++) {
        const cJSON *a = jfield(o, keys[i]);
        const cJSON *id = cJSON_IsArray(a) ? cJSON_GetArrayItem(a, 1) : NULL;
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= MAX_ID)
            return clv_fail(c->st, CLV_EINVAL, "%s: %s.%s must be [token, id]", c->name, path, keys[i]);
        ids[i] = (int32_t)id->valuedouble;
    }
    if (c->t->post) return clv_fail(c->st, CLV_EUNSUPPORTED, "%s: %s: only one template post-processor is supported", c->name, path);
    return post_add(c, false, &ids[0], 1) || post_add(c, true, NULL, 0) || post_add(c, false, &ids[1], 1) ? c->st->code : 0;
}

static int parse_post(lctx *c, const cJSON *o, const char *path, int depth) {
    const char *ty = jtype(o);
    if (!cJSON_IsObject(o) || !ty) return clv_fail(c->st, CLV_EINVAL, "%s: %s must be an object with a \"type\"", c->name, path);
    if (depth > 16) return clv_fail(c->st, CLV_EINVAL, "%s: %s: Sequence nested too deeply", c->name, path);
    if (!strcmp(ty, "Sequence")) {
        const cJSON *arr = jfield(o, "processors"), *e;
        if (!cJSON_IsArray(arr)) return clv_fail(c->st, CLV_EINVAL, "%s: %s.processors must be an array", c->name, path);
        int i = 0;
        char sub[256];
        cJSON_ArrayForEach(e, arr) {
            snprintf(sub, sizeof sub, "%s.processors[%d]", path, i++);
            if (parse_post(c, e, sub, depth + 1)) return c->st->code;
        }
        return 0;
    }
    if (!strcmp(ty, "ByteLevel")) return 0; /* only trims offsets */
    if (!strcmp(ty, "TemplateProcessing")) return parse_template(c, o, path);
    if (!strcmp(ty, "RobertaProcessing") || !strcmp(ty, "BertProcessing")) return parse_clssep(c, o, path);
    return clv_fail(c->st, CLV_EUNSUPPORTED, "%s: %s: post_processor type '%s' is not supported (supported: %s)", c->name,
                    path, ty, SUP_POST);
}

/* ---- model ------------------------------------------------------------------------------- */
static int parse_model(lctx *c, const cJSON *m) {
    clv_tokenizer *t = c->t;
    if (!cJSON_IsObject(m)) return clv_fail(c->st, CLV_EINVAL, "%s: \"model\" must be an object", c->name);
    const char *ty = jtype(m);
    if (ty && strcmp(ty, "BPE"))
        return clv_fail(c->st, CLV_EUNSUPPORTED, "%s: model type '%s' is not supported (supported: %s)", c->name, ty, SUP_MODEL);
    const cJSON *vocab = jfield(m, "vocab"), *merges = jfield(m, "merges"), *e;
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges)) {
        if (!ty && cJSON_IsArray(vocab))
            return clv_fail(c->st, CLV_EUNSUPPORTED, "%s: model looks like Unigram, which is not supported (supported: %s)", c->name, SUP_MODEL);
        return clv_fail(c->st, CLV_EINVAL, "%s: model.vocab must be an object and model.merges an array", c->name);
    }
    const cJSON *dropout = jfield(m, "dropout");
    if (dropout && (!cJSON_IsNumber(dropout) || dropout->valuedouble != 0.0))
        return clv_fail(c->st, CLV_EUNSUPPORTED, "%s: model.dropout is not supported (it must be null or 0)", c->name);
    const char *unsup[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = jfield(m, unsup[i]);
        if (v && !(cJSON_IsString(v) && v->valuestring[0] == 0))
            return clv_fail(c->st, CLV_EUNSUPPORTED, "%s: model.%s is not supported (it must be null)", c->name, unsup[i]);
    }
    if (jbool(c, m, "fuse_unk", false, &t->fuse_unk, "model") || jbool(c, m, "byte_fallback", false, &t->byte_fallback, "model") ||
        jbool(c, m, "ignore_merges", false, &t->ignore_merges, "model"))
        return c->st->code;

    /* vocab: the strings are cJSON's until copied below; copy each once */
    int32_t max_id = -1;
    int n = 0;
    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= MAX_ID || e->valuedouble != (int32_t)e->valuedouble)
            return clv_fail(c->st, CLV_EINVAL, "%s: model.vocab[\"%.64s\"] must be an integer id in [0, %d)", c->name,
                            e->string, MAX_ID);
        if ((int32_t)e->valuedouble > max_id) max_id = (int32_t)e->valuedouble;
        n++;
    }
    t->model_vocab_n = n;
    t->n_ids = max_id + 1;
    t->id_str = calloc((size_t)t->n_ids + 1, sizeof *t->id_str);
    t->id_len = calloc((size_t)t->n_ids + 1, sizeof *t->id_len);
    if (!t->id_str || !t->id_len) return clv_fail(c->st, CLV_ENOMEM, "%s: out of memory (vocab)", c->name);
    /* token -> id: a later duplicate key wins (serde into a HashMap); id -> token
     * is then built from that map (with two keys on one id, either may win, as
     * in `tokenizers`). The map owns its key strings; id_str points at them. */
    cJSON_ArrayForEach(e, vocab) {
        uint32_t len = (uint32_t)strlen(e->string);
        int32_t id = (int32_t)e->valuedouble;
        if (tk_smap_get(&t->vocab, e->string, len) >= 0) {
            tk_smap_put(&t->vocab, e->string, len, id); /* overwrites the value, keeps the owned key */
            continue;
        }
        char *s = dupn(e->string, len);
        if (!s || !tk_smap_put(&t->vocab, s, len, id)) {
            free(s);
            return clv_fail(c->st, CLV_ENOMEM, "%s: out of memory (vocab)", c->name);
        }
    }
    for (uint32_t i = 0; i < t->vocab.cap; i++) {
        const tk_smap_ent *en = &t->vocab.e[i];
        if (!en->s) continue;
        t->id_str[en->val] = (char *)en->s;
        t->id_len[en->val] = en->len;
    }

    /* merges */
    int rank = 0;
    tk_buf cat = {0};
    cJSON_ArrayForEach(e, merges) {
        const char *a, *b;
        size_t la, lb;
        if (cJSON_IsString(e)) {
            const char *s = e->valuestring, *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                tk_buf_free(&cat);
                return clv_fail(c->st, CLV_EINVAL, "%s: model.merges[%d] \"%.64s\" must be two tokens separated by one space",
                                c->name, rank, s);
            }
            a = s; la = (size_t)(sp - s); b = sp + 1; lb = strlen(b);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            a = cJSON_GetArrayItem(e, 0)->valuestring; la = strlen(a);
            b = cJSON_GetArrayItem(e, 1)->valuestring; lb = strlen(b);
        } else {
            tk_buf_free(&cat);
            return clv_fail(c->st, CLV_EINVAL, "%s: model.merges[%d] must be \"a b\" or [\"a\", \"b\"]", c->name, rank);
        }
        int32_t ia = tk_smap_get(&t->vocab, a, (uint32_t)la), ib = tk_smap_get(&t->vocab, b, (uint32_t)lb);
        cat.len = 0;
        tk_buf_put(&cat, a, la);
        tk_buf_put(&cat, b, lb);
        int32_t inew = cat.oom ? -1 : tk_smap_get(&t->vocab, cat.p, (uint32_t)cat.len);
        if (ia < 0 || ib < 0 || inew < 0) {
            const char *which = ia < 0 ? a : ib < 0 ? b : cat.oom ? "?" : cat.p;
            int wl = (int)(ia < 0 ? la : ib < 0 ? lb : cat.len);
            clv_fail(c->st, CLV_EINVAL, "%s: model.merges[%d]: token \"%.*s\" is not in the vocab", c->name, rank,
                     wl > 64 ? 64 : wl, which);
            tk_buf_free(&cat);
            return c->st->code;
        }
        if (!tk_mmap_put(&t->merges, ia, ib, rank, inew)) {
            tk_buf_free(&cat);
            return clv_fail(c->st, CLV_ENOMEM, "%s: out of memory (merges)", c->name);
        }
        rank++;
    }
    tk_buf_free(&cat);

    t->unk_id = -1;
    const cJSON *unk = jfield(m, "unk_token");
    if (unk) {
        if (!cJSON_IsString(unk)) return clv_fail(c->st, CLV_EINVAL, "%s: model.unk_token must be a string", c->name);
        t->unk_token = strdup(unk->valuestring);
        t->unk_id = tk_smap_get(&t->vocab, unk->valuestring, (uint32_t)strlen(unk->valuestring));
        if (t->unk_id < 0)
            return clv_fail(c->st, CLV_EINVAL, "%s: model.unk_token \"%.64s\" is not in the vocab", c->name, unk->valuestring);
    }
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        t->byte_ids[b] = tk_smap_get(&t->vocab, s, 6);
    }
    return 0;
}

/* ---- added tokens ---------------------------------------------------------------------- */
static int32_t lookup_id(const clv_tokenizer *t, const char *s, uint32_t len) {
    int32_t k = tk_smap_get(&t->added_map, s, len);
    if (k >= 0) return t->added[k].id;
    return tk_smap_get(&t->vocab, s, len);
}

static int parse_added(lctx *c, const cJSON *arr) {
    clv_tokenizer *t = c->t;
    const cJSON *e;
    if (!arr) return 0;
    if (!cJSON_IsArray(arr)) return clv_fail(c->st, CLV_EINVAL, "%s: added_tokens must be an array", c->name);
    int n = cJSON_GetArraySize(arr), i = 0;
    t->added = calloc((size_t)n + 1, sizeof *t->added);
    if (!t->added) return clv_fail(c->st, CLV_ENOMEM, "%s: out of memory (added_tokens)", c->name);
    /* `tokenizers` renumbers: model id if the content is in the vocab, else the next
     * id after the vocab's entry count (ids in the file are only checked) */
    int64_t next_id = t->model_vocab_n;
    char path[64];
    cJSON_ArrayForEach(e, arr) {
        snprintf(path, sizeof path, "added_tokens[%d]", i++);
        const char *content;
        tk_added a = {0};
        if (!cJSON_IsObject(e) || jstr(c, e, "content", &content, path)) {
            if (!cJSON_IsObject(e)) clv_fail(c->st, CLV_EINVAL, "%s: %s must be an object", c->name, path);
            return c->st->code;
        }
        if (jbool(c, e, "special", false, &a.special, path) || jbool(c, e, "single_word", false, &a.single_word, path) ||
            jbool(c, e, "lstrip", false, &a.lstrip, path) || jbool(c, e, "rstrip", false, &a.rstrip, path) ||
            jbool(c, e, "normalized", !a.special, &a.normalized, path))
            return c->st->code;
        a.len = (uint32_t)strlen(content);
        if (a.len == 0) continue; /* ignored by `tokenizers` */
        int32_t id = lookup_id(t, content, a.len);
        if (id < 0) {
            if (next_id >= MAX_ID) return clv_fail(c->st, CLV_EINVAL, "%s: too many ids", c->name);
            id = (int32_t)next_id++;
        }
        a.id = id;
        /* same content again: it keeps its id and takes the new flags */
        int32_t k = tk_smap_get(&t->added_map, content, a.len);
        if (k >= 0) {
            a.content = t->added[k].content;
        } else {
            a.content = dupn(content, a.len);
            if (!a.content) return clv_fail(c->st, CLV_ENOMEM, "%s: out of memory", c->name);
            k = t->n_added++;
            if (!tk_smap_put(&t->added_map, a.content, a.len, k)) {
                free(a.content);
                t->n_added--;
                return clv_fail(c->st, CLV_ENOMEM, "%s: out of memory", c->name);
            }
        }
        t->added[k] = a;
    }
    return 0;
}

/* After the normalizer is known: normalized forms, tries, id tables. */
static int finish_added(lctx *c) {
    clv_tokenizer *t = c->t;
    int32_t max_id = t->n_ids - 1;
    for (int k = 0; k < t->n_added; k++)
        if (t->added[k].id > max_id) max_id = t->added[k].id;
    if (max_id + 1 > t->n_ids) {
        char **s = realloc(t->id_str, ((size_t)max_id + 2) * sizeof *s);
        if (!s) return clv_fail(c->st, CLV_ENOMEM, "%s: out of memory", c->name);
        t->id_str = s;
        uint32_t *l = realloc(t->id_len, ((size_t)max_id + 2) * sizeof *l);
        if (!l) return clv_fail(c->st, CLV_ENOMEM, "%s: out of memory", c->name);
        t->id_len = l;
        for (int32_t i = t->n_ids; i <= max_id; i++) { t->id_str[i] = NULL; t->id_len[i] = 0; }
        t->n_ids = max_id + 1;
    }
    t->id_added = malloc(((size_t)t->n_ids + 1) * sizeof *t->id_added);
    if (!t->id_added) return clv_fail(c->st, CLV_ENOMEM, "%s: out of memory", c->name);
    for (int32_t i = 0; i < t->n_ids; i++) t->id_added[i] = -1;
    pcre2_match_data *md = NULL;
    for (int k = 0; k < t->n_added; k++) {
        tk_added *a = &t->added[k];
        t->id_added[a->id] = k;
        const char *pat = a->content;
        uint32_t plen = a->len;
        if (a->normalized && t->n_norms) {
            if (!md) md = pcre2_match_data_create(64, NULL);
            tk_buf b = {0};
            if (!md || tk_normalize(t, a->content, a->len, &b, md, c->st)) {
                tk_buf_free(&b);
                if (md) pcre2_match_data_free(md);
                return md ? c->st->code : clv_fail(c->st, CLV_ENOMEM, "%s: out of memory", c->name);
            }
            if (b.len != a->len || memcmp(b.p, a->content, a->len)) {
                a->norm = b.p ? b.p : strdup("");
                a->norm_len = (uint32_t)b.len;
                pat = a->norm;
                plen = a->norm_len;
            } else
                tk_buf_free(&b);
        }
        if (plen == 0) continue; /* a pattern that normalizes to nothing never matches */
        if (tk_trie_add(a->normalized ? &t->trie_norm : &t->trie_raw, pat, plen, k)) {
            if (md) pcre2_match_data_free(md);
            return clv_fail(c->st, CLV_ENOMEM, "%s: out of memory", c->name);
        }
    }
    if (md) pcre2_match_data_free(md);
    return 0;
}

/* ---- tokenizer_config.json --------------------------------------------------------------- */
/* "bos_token": "<s>" or {"content": "<s>", ...} */
static int cfg_token(lctx *c, const cJSON *cfg, const char *key, char **out) {
    const cJSON *v = jfield(cfg, key);
    if (!v) return 0;
    if (cJSON_IsObject(v)) v = jfield(v, "content");
    if (!cJSON_IsString(v)) return clv_fail(c->st, CLV_EINVAL, "%s: \"%s\" must be a string or {\"content\": ...}", c->name, key);
    *out = strdup(v->valuestring);
    return *out ? 0 : clv_fail(c->st, CLV_ENOMEM, "out of memory");
}

static int parse_chat_templates(lctx *c, const cJSON *v, const char *path) {
    clv_tokenizer *t = c->t;
    if (cJSON_IsString(v)) {
        free(t->chat_template);
        t->chat_template = strdup(v->valuestring);
        return t->chat_template ? 0 : clv_fail(c->st, CLV_ENOMEM, "out of memory");
    }
    if (!cJSON_IsArray(v)) return clv_fail(c->st, CLV_EINVAL, "%s: %s must be a string or a list of {name, template}", c->name, path);
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        const cJSON *n = jfield(e, "name"), *b = jfield(e, "template");
        if (!cJSON_IsString(n) || !cJSON_IsString(b))
            return clv_fail(c->st, CLV_EINVAL, "%s: %s: every entry must have string \"name\" and \"template\"", c->name, path);
        char **nn = realloc(t->tmpl_names, ((size_t)t->n_tmpl + 1) * sizeof *nn);
        if (nn) t->tmpl_names = nn;
        char **bb = realloc(t->tmpl_bodies, ((size_t)t->n_tmpl + 1) * sizeof *bb);
        if (bb) t->tmpl_bodies = bb;
        if (!nn || !bb) return clv_fail(c->st, CLV_ENOMEM, "out of memory");
        t->tmpl_names[t->n_tmpl] = strdup(n->valuestring);
        t->tmpl_bodies[t->n_tmpl] = strdup(b->valuestring);
        t->n_tmpl++;
        if (!strcmp(n->valuestring, "default")) {
            free(t->chat_template);
            t->chat_template = strdup(b->valuestring);
        }
    }
    return 0;
}

static int parse_config(lctx *c, const char *json, size_t len) {
    clv_tokenizer *t = c->t;
    cJSON *cfg;
    int rc = parse_object(c, json, len, &cfg);
    if (rc) return rc;
    if ((rc = cfg_token(c, cfg, "bos_token", &t->bos_str)) || (rc = cfg_token(c, cfg, "eos_token", &t->eos_str)) ||
        (rc = cfg_token(c, cfg, "unk_token", &t->unk_str)) || (rc = cfg_token(c, cfg, "pad_token", &t->pad_str)))
        goto out;
    const cJSON *v = jfield(cfg, "add_bos_token");
    if (v) {
        if (!cJSON_IsBool(v)) { rc = clv_fail(c->st, CLV_EINVAL, "%s: add_bos_token must be true or false", c->name); goto out; }
        t->add_bos = cJSON_IsTrue(v);
    }
    v = jfield(cfg, "add_eos_token");
    if (v) {
        if (!cJSON_IsBool(v)) { rc = clv_fail(c->st, CLV_EINVAL, "%s: add_eos_token must be true or false", c->name); goto out; }
        t->add_eos = cJSON_IsTrue(v);
    }
    v = jfield(cfg, "chat_template");
    if (v) rc = parse_chat_templates(c, v, "chat_template");
out:
    cJSON_Delete(cfg);
    return rc;
}

/* ---- entry points ------------------------------------------------------------------------ */
int clv_tok_load_mem(clv_tokenizer **out, const char *json, size_t len, const char *config_json, size_t config_len,
                     const char *name, clv_status *st) {
    *out = NULL;
    clv_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return clv_fail(st, CLV_ENOMEM, "out of memory");
    t->bos_id = t->eos_id = t->unk_id = -1;
    t->add_bos = t->add_eos = -1;
    t->name = strdup(name ? name : "tokenizer.json");
    lctx c = {t, t->name ? t->name : "tokenizer.json", st};
    cJSON *root;
    int rc = parse_object(&c, json, len, &root);
    if (rc) goto fail;
    const cJSON *v = jfield(root, "version");
    if (v && (!cJSON_IsString(v) || strcmp(v->valuestring, "1.0"))) {
        rc = clv_fail(st, CLV_EUNSUPPORTED, "%s: unknown tokenizer version (only \"1.0\" exists)", c.name);
        goto fail;
    }
    if (jfield(root, "truncation")) clv_warn("%s: \"truncation\" is ignored\n", c.name);
    if (jfield(root, "padding")) clv_warn("%s: \"padding\" is ignored\n", c.name);
    if ((rc = parse_model(&c, jfield(root, "model")))) goto fail;
    if ((v = jfield(root, "normalizer")) && (rc = parse_norm(&c, v, "normalizer", 0))) goto fail;
    if ((v = jfield(root, "pre_tokenizer")) && (rc = parse_pre(&c, v, "pre_tokenizer", 0))) goto fail;
    if ((v = jfield(root, "post_processor")) && (rc = parse_post(&c, v, "post_processor", 0))) goto fail;
    if ((v = jfield(root, "decoder")) && (rc = parse_dec(&c, v, "decoder", 0))) goto fail;
    if ((rc = parse_added(&c, jfield(root, "added_tokens")))) goto fail;
    if ((rc = finish_added(&c))) goto fail;
    for (int i = 0; i < t->n_post; i++)
        for (int j = 0; j < t->post[i].n_ids; j++)
            if (t->post[i].ids[j] >= t->n_ids) {
                rc = clv_fail(st, CLV_EINVAL, "%s: post_processor: special token id %d is not in the vocabulary", c.name,
                              t->post[i].ids[j]);
                goto fail;
            }
    cJSON_Delete(root);
    root = NULL;
    if (config_json) {
        c.name = "tokenizer_config.json";
        if ((rc = parse_config(&c, config_json, config_len))) goto fail;
        if (t->bos_str) t->bos_id = clv_tok_token_id(t, t->bos_str);
        if (t->eos_str) t->eos_id = clv_tok_token_id(t, t->eos_str);
    }
    *out = t;
    return 0;
fail:
    cJSON_Delete(root);
    clv_tok_free(t);
    return rc ? rc : CLV_EINVAL;
}

static int read_opt(const char *dir, const char *name, char **buf, size_t *len, clv_status *st) {
    char path[4096];
    *buf = NULL;
    *len = 0;
    if (clv_path_join(path, sizeof path, dir, name, st)) return st->code;
    if (!clv_file_exists(path)) return 0;
    return clv_read_file(path, buf, len, st);
}

int clv_tok_load(clv_tokenizer **out, const char *dir, clv_status *st) {
    char path[4096], *json = NULL, *cfg = NULL, *jinja = NULL, *ctj = NULL;
    size_t len = 0, cfg_len = 0, jlen = 0, ctlen = 0;
    *out = NULL;
    if (clv_path_join(path, sizeof path, dir, "tokenizer.json", st)) return st->code;
    if (!clv_file_exists(path)) {
        char p2[4096];
        if (!clv_path_join(p2, sizeof p2, dir, "tokenizer.model", st) && clv_file_exists(p2))
            return clv_fail(st, CLV_EUNSUPPORTED,
                            "%s: missing (only tokenizer.model is there; cleave reads tokenizer.json, which "
                            "transformers writes with save_pretrained of the fast tokenizer)", path);
        return clv_fail(st, CLV_EIO, "%s: cannot open (no tokenizer in this folder)", path);
    }
    if (clv_read_file(path, &json, &len, st)) return st->code;
    int rc;
    if ((rc = read_opt(dir, "tokenizer_config.json", &cfg, &cfg_len, st)) ||
        (rc = read_opt(dir, "chat_template.jinja", &jinja, &jlen, st)) ||
        (rc = read_opt(dir, "chat_template.json", &ctj, &ctlen, st)))
        goto done;
    rc = clv_tok_load_mem(out, json, len, cfg, cfg_len, path, st);
    if (rc) goto done;
    clv_tokenizer *t = *out;
    if (jinja) { /* transformers saves the template here and prefers it */
        free(t->chat_template);
        t->chat_template = jinja;
        jinja = NULL;
    } else if (ctj && !t->chat_template) {
        lctx c = {t, "chat_template.json", st};
        cJSON *o;
        if (!(rc = parse_object(&c, ctj, ctlen, &o))) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "chat_template");
            if (!v) rc = clv_fail(st, CLV_EINVAL, "%s/chat_template.json: no \"chat_template\" string", dir);
            else rc = parse_chat_templates(&c, v, "chat_template");
            cJSON_Delete(o);
        }
        if (rc) { clv_tok_free(t); *out = NULL; }
    }
done:
    free(json);
    free(cfg);
    free(jinja);
    free(ctj);
    return rc;
}

void clv_tok_free(clv_tokenizer *t) {
    if (!t) return;
    for (uint32_t i = 0; i < t->vocab.cap; i++) free((char *)t->vocab.e[i].s);
    tk_smap_free(&t->vocab);
    free(t->id_str);
    free(t->id_len);
    tk_mmap_free(&t->merges);
    free(t->unk_token);
    for (int k = 0; k < t->n_added; k++) {
        free(t->added[k].content);
        free(t->added[k].norm);
    }
    free(t->added);
    tk_smap_free(&t->added_map);
    free(t->id_added);
    free(t->trie_raw.n);
    free(t->trie_norm.n);
    for (int i = 0; i < t->n_norms; i++) { pattern_free(&t->norms[i].pat); free(t->norms[i].str); }
    free(t->norms);
    for (int i = 0; i < t->n_pres; i++) pattern_free(&t->pres[i].pat);
    free(t->pres);
    for (int i = 0; i < t->n_decs; i++) { pattern_free(&t->decs[i].pat); free(t->decs[i].content); }
    free(t->decs);
    for (int i = 0; i < t->n_post; i++) free(t->post[i].ids);
    free(t->post);
    if (t->bytelevel_re) pcre2_code_free(t->bytelevel_re);
    free(t->bos_str); free(t->eos_str); free(t->unk_str); free(t->pad_str);
    free(t->chat_template);
    for (int i = 0; i < t->n_tmpl; i++) { free(t->tmpl_names[i]); free(t->tmpl_bodies[i]); }
    free(t->tmpl_names);
    free(t->tmpl_bodies);
    free(t->name);
    free(t);
}

/* ---- accessors ------------------------------------------------------------------------------- */
int clv_tok_n_vocab(const clv_tokenizer *t) { return t->n_ids; }
const char *clv_tok_piece(const clv_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_ids) return NULL;
    if (t->id_added[id] >= 0) return t->added[t->id_added[id]].content;
    return t->id_str[id];
}
int32_t clv_tok_token_id(const clv_tokenizer *t, const char *token) { return lookup_id(t, token, (uint32_t)strlen(token)); }
bool clv_tok_is_special(const clv_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids && t->id_added[id] >= 0 && t->added[t->id_added[id]].special;
}
int32_t clv_tok_bos_id(const clv_tokenizer *t) { return t->bos_id; }
int32_t clv_tok_eos_id(const clv_tokenizer *t) { return t->eos_id; }
const char *clv_tok_bos_str(const clv_tokenizer *t) { return t->bos_str; }
const char *clv_tok_eos_str(const clv_tokenizer *t) { return t->eos_str; }
int clv_tok_add_bos(const clv_tokenizer *t) { return t->add_bos; }
int clv_tok_add_eos(const clv_tokenizer *t) { return t->add_eos; }
const char *clv_tok_chat_template(const clv_tokenizer *t) { return t->chat_template; }
const char *clv_tok_chat_template_named(const clv_tokenizer *t, const char *name) {
    for (int i = 0; i < t->n_tmpl; i++)
        if (!strcmp(t->tmpl_names[i], name)) return t->tmpl_bodies[i];
    return NULL;
}
