/* jinja: lexer -> parser (AST) -> evaluator, for chat templates (see jinja.h).
 *
 * Everything of one render lives in one arena, freed at the end. Limits keep
 * hostile templates bounded: nesting depth, loop steps, output size. */
#include "jinja.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "../util/util.h"
#include "tok_internal.h"

#define MAX_DEPTH 200
#define MAX_STEPS 20000000L
#define MAX_OUT (64u << 20)

/* ---- arena ---------------------------------------------------------------------- */
typedef struct ablock { struct ablock *next; size_t used, cap; char data[]; } ablock;

/* ---- values ---------------------------------------------------------------------- */
typedef enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_FUNC } vtype;
typedef struct jlist jlist;
typedef struct jdict jdict;
typedef struct jfunc jfunc;
typedef struct jv {
    uint8_t t;
    union {
        bool b;
        int64_t i;
        double f;
        struct { const char *p; uint32_t n; } s;
        jlist *l;
        jdict *d;
        jfunc *fn;
    };
} jv;
struct jlist { jv *v; int n, cap; bool tuple; };
struct jdict { jv *k, *v; int n, cap; bool ns; };

typedef struct node node;
typedef enum { F_BUILTIN, F_METHOD, F_MACRO } fkind;
struct jfunc {
    fkind kind;
    const char *name;
    jv self;    /* methods */
    node *macro;
};

/* ---- AST ------------------------------------------------------------------------- */
typedef enum {
    /* statements */
    N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_BREAK, N_CONTINUE, N_MACRO, N_BODY,
    /* expressions */
    N_LIT, N_NAME, N_ATTR, N_ITEM, N_SLICE, N_CALL, N_FILTER, N_TEST, N_NOT, N_NEG, N_POS, N_BIN, N_AND, N_OR,
    N_COND, N_LIST, N_DICT, N_TUPLE
} nkind;

struct node {
    uint8_t kind;
    int line;
    int op;               /* N_BIN: operator token; N_TEST: negated */
    const char *str;      /* names, attributes, filter/test names */
    jv lit;
    node *a, *b, *c, *d;  /* children (meaning per kind) */
    node **kids;          /* lists: arguments, items, bodies */
    int n_kids;
    const char **kwn;     /* keyword argument names (N_CALL/N_FILTER/N_TEST), for targets (N_FOR/N_SET) */
    node **kwv;
    int n_kw;
};

/* ---- tokens ------------------------------------------------------------------------ */
typedef enum {
    T_TEXT, T_VBEGIN, T_VEND, T_BBEGIN, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP, T_EOF
} ttype;
typedef struct tok {
    uint8_t t;
    int line;
    const char *s; /* text, name, string value (arena) or operator */
    uint32_t n;
    int64_t i;
    double f;
} tok;

typedef struct scope { const char **k; jv *v; int n, cap; } scope;

typedef struct jx {
    clv_status *st;
    jmp_buf jb;
    ablock *arena;
    tok *toks;
    int n_toks, cap_toks, pos;
    /* evaluation */
    scope *scopes;
    int n_scopes, cap_scopes;
    jdict *globals;
    tk_buf out;
    long steps;
    int depth;
    int loop_ctl; /* 1 break, 2 continue */
    tk_buf saved[MAX_DEPTH + 8]; /* outputs set aside while a macro or block set captures */
    int n_saved;
    tk_buf *tmps[8];             /* scratch buffers a failing step must not leak */
    int n_tmps;
} jx;

static tk_buf *tmp_open(jx *x, tk_buf *b) {
    *b = (tk_buf){0};
    if (x->n_tmps < 8) x->tmps[x->n_tmps++] = b;
    return b;
}
static void tmp_close(jx *x, tk_buf *b) {
    for (int i = x->n_tmps - 1; i >= 0; i--)
        if (x->tmps[i] == b) { x->tmps[i] = x->tmps[--x->n_tmps]; break; }
    tk_buf_free(b);
}

static _Noreturn void jfail(jx *x, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static _Noreturn void jfail(jx *x, int line, const char *fmt, ...) {
    char buf[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (line > 0) clv_fail(x->st, CLV_EINVAL, "chat template line %d: %s", line, buf);
    else clv_fail(x->st, CLV_EINVAL, "chat template: %s", buf);
    longjmp(x->jb, 1);
}

static void *amem(jx *x, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!x->arena || x->arena->used + n > x->arena->cap) {
        size_t cap = n > 60000 ? n : 60000;
        ablock *b = malloc(sizeof *b + cap);
        if (!b) { clv_fail(x->st, CLV_ENOMEM, "chat template: out of memory"); longjmp(x->jb, 1); }
        b->next = x->arena;
        b->used = 0;
        b->cap = cap;
        x->arena = b;
    }
    void *p = x->arena->data + x->arena->used;
    x->arena->used += n;
    memset(p, 0, n);
    return p;
}

static const char *astr(jx *x, const char *s, size_t n) {
    char *p = amem(x, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* ---- value helpers ------------------------------------------------------------------------ */
static jv v_undef(void) { return (jv){.t = V_UNDEF}; }
static jv v_none(void) { return (jv){.t = V_NONE}; }
static jv v_bool(bool b) { return (jv){.t = V_BOOL, .b = b}; }
static jv v_int(int64_t i) { return (jv){.t = V_INT, .i = i}; }
static jv v_float(double f) { return (jv){.t = V_FLOAT, .f = f}; }
static jv v_str(const char *p, size_t n) { jv v = {.t = V_STR}; v.s.p = p; v.s.n = (uint32_t)n; return v; }
static jv v_cstr(const char *p) { return v_str(p, strlen(p)); }
static jv v_strdup(jx *x, const char *p, size_t n) { return v_str(astr(x, p, n), n); }

static jlist *l_new(jx *x, int cap) {
    jlist *l = amem(x, sizeof *l);
    l->cap = cap > 4 ? cap : 4;
    l->v = amem(x, (size_t)l->cap * sizeof *l->v);
    return l;
}
static void l_push(jx *x, jlist *l, jv v) {
    if (l->n == l->cap) {
        jv *nv = amem(x, (size_t)l->cap * 2 * sizeof *nv);
        memcpy(nv, l->v, (size_t)l->n * sizeof *nv);
        l->v = nv;
        l->cap *= 2;
    }
    l->v[l->n++] = v;
}
static jv v_list(jlist *l) { return (jv){.t = V_LIST, .l = l}; }
static jdict *d_new(jx *x) {
    jdict *d = amem(x, sizeof *d);
    d->cap = 4;
    d->k = amem(x, 4 * sizeof *d->k);
    d->v = amem(x, 4 * sizeof *d->v);
    return d;
}
static jv v_dict(jdict *d) { return (jv){.t = V_DICT, .d = d}; }

static bool v_eq(const jv *a, const jv *b);
static int d_find(const jdict *d, const jv *k) {
    for (int i = 0; i < d->n; i++)
        if (v_eq(&d->k[i], k)) return i;
    return -1;
}
static int d_find_s(const jdict *d, const char *k, size_t n) {
    for (int i = 0; i < d->n; i++)
        if (d->k[i].t == V_STR && d->k[i].s.n == n && !memcmp(d->k[i].s.p, k, n)) return i;
    return -1;
}
static void d_set(jx *x, jdict *d, jv k, jv v) {
    int i = d_find(d, &k);
    if (i >= 0) { d->v[i] = v; return; }
    if (d->n == d->cap) {
        jv *nk = amem(x, (size_t)d->cap * 2 * sizeof *nk), *nv = amem(x, (size_t)d->cap * 2 * sizeof *nv);
        memcpy(nk, d->k, (size_t)d->n * sizeof *nk);
        memcpy(nv, d->v, (size_t)d->n * sizeof *nv);
        d->k = nk;
        d->v = nv;
        d->cap *= 2;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
}

static bool v_num(const jv *v) { return v->t == V_INT || v->t == V_FLOAT || v->t == V_BOOL; }
static double v_f(const jv *v) { return v->t == V_FLOAT ? v->f : v->t == V_INT ? (double)v->i : v->t == V_BOOL ? v->b : 0; }

static bool v_eq(const jv *a, const jv *b) {
    if (v_num(a) && v_num(b)) {
        if (a->t != V_FLOAT && b->t != V_FLOAT) {
            int64_t x = a->t == V_BOOL ? a->b : a->i, y = b->t == V_BOOL ? b->b : b->i;
            return x == y;
        }
        return v_f(a) == v_f(b);
    }
    if (a->t != b->t) return false;
    switch (a->t) {
    case V_UNDEF: case V_NONE: return true;
    case V_STR: return a->s.n == b->s.n && !memcmp(a->s.p, b->s.p, a->s.n);
    case V_LIST:
        if (a->l->n != b->l->n) return false;
        for (int i = 0; i < a->l->n; i++)
            if (!v_eq(&a->l->v[i], &b->l->v[i])) return false;
        return true;
    case V_DICT:
        if (a->d->n != b->d->n) return false;
        for (int i = 0; i < a->d->n; i++) {
            int j = d_find(b->d, &a->d->k[i]);
            if (j < 0 || !v_eq(&a->d->v[i], &b->d->v[j])) return false;
        }
        return true;
    default: return a->fn == b->fn;
    }
}

static bool v_truthy(const jv *v) {
    switch (v->t) {
    case V_UNDEF: case V_NONE: return false;
    case V_BOOL: return v->b;
    case V_INT: return v->i != 0;
    case V_FLOAT: return v->f != 0;
    case V_STR: return v->s.n != 0;
    case V_LIST: return v->l->n != 0;
    case V_DICT: return v->d->n != 0;
    default: return true;
    }
}

static const char *v_typename(const jv *v) {
    static const char *n[] = {"undefined", "NoneType", "bool", "int", "float", "str", "list", "dict", "function"};
    return n[v->t];
}

static size_t u8_count(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}
/* byte offset of code point index k (clamped) */
static size_t u8_off(const char *s, size_t n, size_t k) {
    size_t i = 0;
    while (i < n && k > 0) {
        i++;
        while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80) i++;
        k--;
    }
    return i;
}

/* Python float repr */
static void fmt_float(char *buf, size_t cap, double f) {
    if (isnan(f)) { snprintf(buf, cap, "nan"); return; }
    if (isinf(f)) { snprintf(buf, cap, f < 0 ? "-inf" : "inf"); return; }
    char e[40];
    int p;
    for (p = 1; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, f);
        if (strtod(e, NULL) == f) break;
    }
    /* e = [-]d.ddde[+-]XX */
    char digits[32];
    int nd = 0, neg = e[0] == '-';
    const char *q = e + neg;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') digits[nd++] = *q;
    int exp = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    char *o = buf;
    size_t left = cap;
#define PUT(...) do { int w_ = snprintf(o, left, __VA_ARGS__); if (w_ < 0 || (size_t)w_ >= left) return; o += w_; left -= (size_t)w_; } while (0)
    if (neg) PUT("-");
    if (exp >= -5 && exp < 16) {
        if (exp >= 0) {
            for (int i = 0; i <= exp; i++) PUT("%c", i < nd ? digits[i] : '0');
            PUT(".");
            if (nd > exp + 1) PUT("%s", digits + exp + 1);
            else PUT("0");
        } else {
            PUT("0.");
            for (int i = 0; i < -exp - 1; i++) PUT("0");
            PUT("%s", digits);
        }
    } else {
        PUT("%c", digits[0]);
        if (nd > 1) PUT(".%s", digits + 1);
        PUT("e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
#undef PUT
}

static void repr_str(tk_buf *b, const char *s, size_t n) {
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    tk_buf_putc(b, q);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[8];
        if (c == '\\') tk_buf_put(b, "\\\\", 2);
        else if (c == (unsigned char)q) { tk_buf_putc(b, '\\'); tk_buf_putc(b, (char)c); }
        else if (c == '\n') tk_buf_put(b, "\\n", 2);
        else if (c == '\r') tk_buf_put(b, "\\r", 2);
        else if (c == '\t') tk_buf_put(b, "\\t", 2);
        else if (c < 0x20 || c == 0x7f) { snprintf(tmp, sizeof tmp, "\\x%02x", c); tk_buf_put(b, tmp, 4); }
        else tk_buf_putc(b, (char)c);
    }
    tk_buf_putc(b, q);
}

/* str(v) as Python / jinja2 print it */
static void v_to_buf(tk_buf *b, const jv *v, bool repr) {
    char tmp[64];
    switch (v->t) {
    case V_UNDEF: break;
    case V_NONE: tk_buf_put(b, "None", 4); break;
    case V_BOOL: tk_buf_put(b, v->b ? "True" : "False", v->b ? 4 : 5); break;
    case V_INT: snprintf(tmp, sizeof tmp, "%lld", (long long)v->i); tk_buf_put(b, tmp, strlen(tmp)); break;
    case V_FLOAT: fmt_float(tmp, sizeof tmp, v->f); tk_buf_put(b, tmp, strlen(tmp)); break;
    case V_STR:
        if (repr) repr_str(b, v->s.p, v->s.n);
        else tk_buf_put(b, v->s.p, v->s.n);
        break;
    case V_LIST:
        tk_buf_putc(b, v->l->tuple ? '(' : '[');
        for (int i = 0; i < v->l->n; i++) {
            if (i) tk_buf_put(b, ", ", 2);
            v_to_buf(b, &v->l->v[i], true);
        }
        if (v->l->tuple && v->l->n == 1) tk_buf_putc(b, ',');
        tk_buf_putc(b, v->l->tuple ? ')' : ']');
        break;
    case V_DICT:
        if (v->d->ns) { tk_buf_put(b, "<Namespace>", 11); break; }
        tk_buf_putc(b, '{');
        for (int i = 0; i < v->d->n; i++) {
            if (i) tk_buf_put(b, ", ", 2);
            v_to_buf(b, &v->d->k[i], true);
            tk_buf_put(b, ": ", 2);
            v_to_buf(b, &v->d->v[i], true);
        }
        tk_buf_putc(b, '}');
        break;
    case V_FUNC: tk_buf_put(b, "<function>", 10); break;
    }
}

static jv v_tostr(jx *x, const jv *v) {
    if (v->t == V_STR) return *v;
    tk_buf b = {0};
    v_to_buf(&b, v, false);
    jv r = v_strdup(x, b.p ? b.p : "", b.len);
    tk_buf_free(&b);
    return r;
}

/* json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=sort) */
static void json_str(tk_buf *b, const char *s, size_t n) {
    tk_buf_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[8];
        switch (c) {
        case '"': tk_buf_put(b, "\\\"", 2); break;
        case '\\': tk_buf_put(b, "\\\\", 2); break;
        case '\n': tk_buf_put(b, "\\n", 2); break;
        case '\r': tk_buf_put(b, "\\r", 2); break;
        case '\t': tk_buf_put(b, "\\t", 2); break;
        case '\b': tk_buf_put(b, "\\b", 2); break;
        case '\f': tk_buf_put(b, "\\f", 2); break;
        default:
            if (c < 0x20) { snprintf(tmp, sizeof tmp, "\\u%04x", c); tk_buf_put(b, tmp, 6); }
            else tk_buf_putc(b, (char)c);
        }
    }
    tk_buf_putc(b, '"');
}

static void json_nl(tk_buf *b, int indent, int level) {
    tk_buf_putc(b, '\n');
    for (int i = 0; i < indent * level; i++) tk_buf_putc(b, ' ');
}

static void v_json(jx *x, tk_buf *b, const jv *v, int indent, int level, bool sort, int line) {
    char tmp[64];
    if (level > MAX_DEPTH) jfail(x, line, "tojson: value nested too deeply");
    switch (v->t) {
    case V_UNDEF: jfail(x, line, "tojson: Object of type Undefined is not JSON serializable");
    case V_NONE: tk_buf_put(b, "null", 4); break;
    case V_BOOL: tk_buf_put(b, v->b ? "true" : "false", v->b ? 4 : 5); break;
    case V_INT: snprintf(tmp, sizeof tmp, "%lld", (long long)v->i); tk_buf_put(b, tmp, strlen(tmp)); break;
    case V_FLOAT:
        if (isnan(v->f)) tk_buf_put(b, "NaN", 3);
        else if (isinf(v->f)) tk_buf_put(b, v->f < 0 ? "-Infinity" : "Infinity", v->f < 0 ? 9 : 8);
        else { fmt_float(tmp, sizeof tmp, v->f); tk_buf_put(b, tmp, strlen(tmp)); }
        break;
    case V_STR: json_str(b, v->s.p, v->s.n); break;
    case V_LIST:
        if (v->l->n == 0) { tk_buf_put(b, "[]", 2); break; }
        tk_buf_putc(b, '[');
        for (int i = 0; i < v->l->n; i++) {
            if (i) tk_buf_put(b, indent >= 0 ? "," : ", ", indent >= 0 ? 1 : 2);
            if (indent >= 0) json_nl(b, indent, level + 1);
            v_json(x, b, &v->l->v[i], indent, level + 1, sort, line);
        }
        if (indent >= 0) json_nl(b, indent, level);
        tk_buf_putc(b, ']');
        break;
    case V_DICT: {
        const jdict *d = v->d;
        if (d->n == 0) { tk_buf_put(b, "{}", 2); break; }
        int *ord = amem(x, (size_t)d->n * sizeof *ord);
        for (int i = 0; i < d->n; i++) ord[i] = i;
        if (sort)
            for (int i = 1; i < d->n; i++)
                for (int j = i; j > 0; j--) {
                    const jv *p = &d->k[ord[j - 1]], *q = &d->k[ord[j]];
                    if (p->t == V_STR && q->t == V_STR) {
                        size_t m = p->s.n < q->s.n ? p->s.n : q->s.n;
                        int c = memcmp(p->s.p, q->s.p, m);
                        if (c > 0 || (c == 0 && p->s.n > q->s.n)) { int t = ord[j]; ord[j] = ord[j - 1]; ord[j - 1] = t; }
                    }
                }
        tk_buf_putc(b, '{');
        for (int k = 0; k < d->n; k++) {
            int i = ord[k];
            if (k) tk_buf_put(b, indent >= 0 ? "," : ", ", indent >= 0 ? 1 : 2);
            if (indent >= 0) json_nl(b, indent, level + 1);
            const jv *key = &d->k[i];
            if (key->t == V_STR) json_str(b, key->s.p, key->s.n);
            else {
                tk_buf kb = {0};
                if (key->t == V_NONE) tk_buf_put(&kb, "null", 4);
                else if (key->t == V_BOOL) tk_buf_put(&kb, key->b ? "true" : "false", key->b ? 4 : 5);
                else v_to_buf(&kb, key, false);
                json_str(b, kb.p ? kb.p : "", kb.len);
                tk_buf_free(&kb);
            }
            tk_buf_put(b, ": ", 2);
            v_json(x, b, &d->v[i], indent, level + 1, sort, line);
        }
        if (indent >= 0) json_nl(b, indent, level);
        tk_buf_putc(b, '}');
        break;
    }
    case V_FUNC: jfail(x, line, "tojson: Object of type function is not JSON serializable");
    }
}

static jv from_cjson(jx *x, const cJSON *c, int depth) {
    if (depth > MAX_DEPTH) jfail(x, 0, "variables nested too deeply");
    if (cJSON_IsNull(c)) return v_none();
    if (cJSON_IsBool(c)) return v_bool(cJSON_IsTrue(c));
    if (cJSON_IsNumber(c)) {
        double f = c->valuedouble;
        /* cJSON keeps no int/float distinction: integral values within 2^53 are ints */
        if (f == floor(f) && fabs(f) < 9007199254740992.0) {
            const char *src = NULL;
            (void)src;
            return v_int((int64_t)f);
        }
        return v_float(f);
    }
    if (cJSON_IsString(c)) return v_strdup(x, c->valuestring, strlen(c->valuestring));
    if (cJSON_IsArray(c)) {
        jlist *l = l_new(x, cJSON_GetArraySize(c));
        const cJSON *e;
        cJSON_ArrayForEach(e, c) l_push(x, l, from_cjson(x, e, depth + 1));
        return v_list(l);
    }
    if (cJSON_IsObject(c)) {
        jdict *d = d_new(x);
        const cJSON *e;
        cJSON_ArrayForEach(e, c) d_set(x, d, v_strdup(x, e->string, strlen(e->string)), from_cjson(x, e, depth + 1));
        return v_dict(d);
    }
    return v_undef();
}

/* ---- lexer ---------------------------------------------------------------------------------- */
static void tpush(jx *x, tok t) {
    if (x->n_toks == x->cap_toks) {
        int cap = x->cap_toks ? x->cap_toks * 2 : 256;
        tok *nt = amem(x, (size_t)cap * sizeof *nt);
        if (x->n_toks) memcpy(nt, x->toks, (size_t)x->n_toks * sizeof *nt);
        x->toks = nt;
        x->cap_toks = cap;
    }
    x->toks[x->n_toks++] = t;
}

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static int count_lines(const char *s, size_t from, size_t to) {
    int n = 0;
    for (size_t i = from; i < to; i++) n += s[i] == '\n';
    return n;
}

/* lex the inside of a {{ }} or {% %} tag from s[*pi]; returns with *pi after the close */
static void lex_tag(jx *x, const char *s, size_t n, size_t *pi, bool block, int *line, bool *strip_after,
                    bool *keep_nl) {
    size_t i = *pi;
    int depth = 0;
    for (;;) {
        while (i < n && is_ws(s[i])) { if (s[i] == '\n') (*line)++; i++; }
        if (i >= n) jfail(x, *line, "unexpected end of template inside a %s tag", block ? "{% %}" : "{{ }}");
        if (depth == 0) {
            const char *close = block ? "%}" : "}}";
            if ((s[i] == '-' || s[i] == '+') && i + 2 < n && !strncmp(s + i + 1, close, 2)) {
                *strip_after = s[i] == '-';
                *keep_nl = s[i] == '+';
                *pi = i + 3;
                return;
            }
            if (i + 1 < n && !strncmp(s + i, close, 2)) { *strip_after = false; *keep_nl = false; *pi = i + 2; return; }
        }
        tok t = {.line = *line};
        char c = s[i];
        if (c == '\'' || c == '"') {
            size_t j = i + 1;
            tk_buf b;
            tmp_open(x, &b);
            while (j < n && s[j] != c) {
                if (s[j] == '\\' && j + 1 < n) {
                    char e = s[j + 1];
                    j += 2;
                    switch (e) {
                    case 'n': tk_buf_putc(&b, '\n'); break;
                    case 't': tk_buf_putc(&b, '\t'); break;
                    case 'r': tk_buf_putc(&b, '\r'); break;
                    case '0': tk_buf_putc(&b, '\0'); break;
                    case 'b': tk_buf_putc(&b, '\b'); break;
                    case 'f': tk_buf_putc(&b, '\f'); break;
                    case 'v': tk_buf_putc(&b, '\v'); break;
                    case 'a': tk_buf_putc(&b, '\a'); break;
                    case '\\': case '\'': case '"': tk_buf_putc(&b, e); break;
                    case '\n': (*line)++; break;
                    case 'x': case 'u': case 'U': {
                        int nd = e == 'x' ? 2 : e == 'u' ? 4 : 8;
                        uint32_t cp = 0;
                        int k = 0;
                        for (; k < nd && j < n; k++, j++) {
                            char h = s[j];
                            int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                            if (d < 0) break;
                            cp = cp * 16 + (uint32_t)d;
                        }
                        if (k != nd || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000))
                            jfail(x, *line, "bad \\%c escape in a string literal", e);
                        char u[4];
                        tk_buf_put(&b, u, (size_t)tk_utf8_encode((int32_t)cp, u));
                        break;
                    }
                    default: tk_buf_putc(&b, '\\'); tk_buf_putc(&b, e); /* Python keeps unknown escapes */
                    }
                    continue;
                }
                if (s[j] == '\n') (*line)++;
                tk_buf_putc(&b, s[j++]);
            }
            if (j >= n) jfail(x, t.line, "unterminated string literal");
            t.t = T_STR;
            t.s = astr(x, b.p ? b.p : "", b.len);
            t.n = (uint32_t)b.len;
            tmp_close(x, &b);
            i = j + 1;
        } else if ((c >= '0' && c <= '9')) {
            size_t j = i;
            bool isf = false;
            char num[64];
            int k = 0;
            while (j < n && ((s[j] >= '0' && s[j] <= '9') || s[j] == '_' ||
                             (s[j] == '.' && !isf && j + 1 < n && s[j + 1] >= '0' && s[j + 1] <= '9') ||
                             ((s[j] == 'e' || s[j] == 'E') && j + 1 < n &&
                              ((s[j + 1] >= '0' && s[j + 1] <= '9') || s[j + 1] == '-' || s[j + 1] == '+')))) {
                if (s[j] == '.' || s[j] == 'e' || s[j] == 'E') isf = true;
                if ((s[j] == 'e' || s[j] == 'E') && (s[j + 1] == '-' || s[j + 1] == '+')) { if (k < 62) num[k++] = s[j]; j++; }
                if (s[j] != '_' && k < 62) num[k++] = s[j];
                j++;
            }
            num[k] = 0;
            if (isf) { t.t = T_FLOAT; t.f = strtod(num, NULL); }
            else { t.t = T_INT; t.i = strtoll(num, NULL, 10); }
            i = j;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
            size_t j = i;
            while (j < n && ((s[j] >= 'a' && s[j] <= 'z') || (s[j] >= 'A' && s[j] <= 'Z') || (s[j] >= '0' && s[j] <= '9') || s[j] == '_')) j++;
            t.t = T_NAME;
            t.s = astr(x, s + i, j - i);
            t.n = (uint32_t)(j - i);
            i = j;
        } else {
            static const char *ops2[] = {"//", "**", "==", "!=", "<=", ">="};
            t.t = T_OP;
            int len = 1;
            for (int k = 0; k < 6; k++)
                if (i + 1 < n && s[i] == ops2[k][0] && s[i + 1] == ops2[k][1]) len = 2;
            if (len == 1 && !strchr("+-*/%~|.,:()[]{}=<>!", c)) jfail(x, *line, "unexpected character '%c'", c);
            if (c == '(' || c == '[' || c == '{') depth++;
            if ((c == ')' || c == ']' || c == '}') && depth > 0) depth--;
            t.s = astr(x, s + i, (size_t)len);
            t.n = (uint32_t)len;
            i += (size_t)len;
        }
        tpush(x, t);
    }
}

static void lex(jx *x, const char *src, size_t n0) {
    /* newlines normalized as jinja2 does, and one trailing newline dropped */
    char *s = amem(x, n0 + 1);
    size_t n = 0;
    for (size_t i = 0; i < n0; i++) {
        if (src[i] == '\r') { s[n++] = '\n'; if (i + 1 < n0 && src[i + 1] == '\n') i++; }
        else s[n++] = src[i];
    }
    if (n && s[n - 1] == '\n') n--;
    size_t i = 0;
    int line = 1;
    bool line_starting = true, strip_next = false;
    while (i < n) {
        size_t j = i;
        while (j + 1 < n && !(s[j] == '{' && (s[j + 1] == '{' || s[j + 1] == '%' || s[j + 1] == '#'))) j++;
        if (j + 1 >= n) j = n;
        size_t ts = i, te = j;
        if (strip_next) while (ts < te && is_ws(s[ts])) ts++;
        strip_next = false;
        if (j < n) {
            char kind = s[j + 1], sign = j + 2 < n ? s[j + 2] : 0;
            if (sign == '-') {
                while (te > ts && is_ws(s[te - 1])) te--;
            } else if (sign != '+' && (kind == '%' || kind == '#')) { /* lstrip_blocks */
                size_t lp = te;
                while (lp > ts && s[lp - 1] != '\n') lp--;
                bool at_line_start = lp > ts || line_starting; /* a newline in this text, or the text starts a line */
                bool only_ws = true;
                for (size_t k = lp; k < te; k++) only_ws = only_ws && (s[k] == ' ' || s[k] == '\t');
                if (only_ws && at_line_start) te = lp;
            }
        }
        if (te > ts) tpush(x, (tok){.t = T_TEXT, .line = line, .s = s + ts, .n = (uint32_t)(te - ts)});
        line += count_lines(s, i, j);
        if (j >= n) break;
        char kind = s[j + 1];
        i = j + 2;
        if (i < n && (s[i] == '-' || s[i] == '+')) i++;
        bool strip_after = false, keep_nl = false;
        if (kind == '#') {
            size_t k = i;
            while (k + 1 < n && !(s[k] == '#' && s[k + 1] == '}')) k++;
            if (k + 1 >= n) jfail(x, line, "unterminated comment");
            strip_after = k > i && s[k - 1] == '-';
            keep_nl = k > i && s[k - 1] == '+';
            line += count_lines(s, i, k);
            i = k + 2;
        } else {
            tpush(x, (tok){.t = kind == '%' ? T_BBEGIN : T_VBEGIN, .line = line});
            lex_tag(x, s, n, &i, kind == '%', &line, &strip_after, &keep_nl);
            tpush(x, (tok){.t = kind == '%' ? T_BEND : T_VEND, .line = line});
        }
        line_starting = false;
        if (strip_after) {
            strip_next = true;
            size_t k = i;
            while (k < n && is_ws(s[k])) k++;
            line_starting = k > i && s[k - 1] == '\n';
        } else if (kind != '{' && !keep_nl && i < n && s[i] == '\n') { /* trim_blocks */
            i++;
            line++;
            line_starting = true;
        }
    }
    tpush(x, (tok){.t = T_EOF, .line = line});
}

/* ---- parser ----------------------------------------------------------------------------------- */
static tok *peek(jx *x) { return &x->toks[x->pos]; }
static tok *next(jx *x) { tok *t = &x->toks[x->pos]; if (t->t != T_EOF) x->pos++; return t; }
static bool is_op(const tok *t, const char *op) { return t->t == T_OP && !strcmp(t->s, op); }
static bool is_name(const tok *t, const char *nm) { return t->t == T_NAME && !strcmp(t->s, nm); }
static void expect_op(jx *x, const char *op) {
    tok *t = next(x);
    if (!is_op(t, op)) jfail(x, t->line, "expected '%s'", op);
}
static const char *expect_name(jx *x) {
    tok *t = next(x);
    if (t->t != T_NAME) jfail(x, t->line, "expected a name");
    return t->s;
}

static node *mk(jx *x, nkind k, int line) {
    node *n = amem(x, sizeof *n);
    n->kind = (uint8_t)k;
    n->line = line;
    return n;
}

typedef struct nvec { node **v; int n, cap; } nvec;
static void nv_push(jx *x, nvec *v, node *n) {
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 8;
        node **nn = amem(x, (size_t)cap * sizeof *nn);
        if (v->n) memcpy(nn, v->v, (size_t)v->n * sizeof *nn);
        v->v = nn;
        v->cap = cap;
    }
    v->v[v->n++] = n;
}

static node *p_expr(jx *x);
static node *p_unary(jx *x);
static node *p_or(jx *x);

/* call arguments: ( a, b, k=v ) -- the '(' is consumed */
static void p_args(jx *x, node *n) {
    nvec args = {0}, kwv = {0};
    const char **kwn = NULL;
    int nkw = 0, capkw = 0;
    if (++x->depth > MAX_DEPTH) jfail(x, peek(x)->line, "expression nested too deeply");
    while (!is_op(peek(x), ")")) {
        tok *t = peek(x);
        if (t->t == T_NAME && is_op(&x->toks[x->pos + 1], "=")) {
            x->pos += 2;
            if (nkw == capkw) {
                capkw = capkw ? capkw * 2 : 4;
                const char **nk = amem(x, (size_t)capkw * sizeof *nk);
                if (nkw) memcpy(nk, kwn, (size_t)nkw * sizeof *nk);
                kwn = nk;
            }
            kwn[nkw++] = t->s;
            nv_push(x, &kwv, p_expr(x));
        } else {
            if (nkw) jfail(x, t->line, "positional argument after keyword argument");
            nv_push(x, &args, p_expr(x));
        }
        if (!is_op(peek(x), ",")) break;
        next(x);
    }
    expect_op(x, ")");
    x->depth--;
    n->kids = args.v;
    n->n_kids = args.n;
    n->kwn = kwn;
    n->kwv = kwv.v;
    n->n_kw = nkw;
}

static node *p_primary(jx *x) {
    tok *t = next(x);
    node *n;
    if (++x->depth > MAX_DEPTH) jfail(x, t->line, "expression nested too deeply");
    switch (t->t) {
    case T_STR: {
        /* adjacent string literals concatenate */
        tk_buf b = {0};
        tk_buf_put(&b, t->s, t->n);
        while (peek(x)->t == T_STR) { tok *u = next(x); tk_buf_put(&b, u->s, u->n); }
        n = mk(x, N_LIT, t->line);
        n->lit = v_strdup(x, b.p ? b.p : "", b.len);
        tk_buf_free(&b);
        break;
    }
    case T_INT: n = mk(x, N_LIT, t->line); n->lit = v_int(t->i); break;
    case T_FLOAT: n = mk(x, N_LIT, t->line); n->lit = v_float(t->f); break;
    case T_NAME:
        n = mk(x, N_LIT, t->line);
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True")) n->lit = v_bool(true);
        else if (!strcmp(t->s, "false") || !strcmp(t->s, "False")) n->lit = v_bool(false);
        else if (!strcmp(t->s, "none") || !strcmp(t->s, "None")) n->lit = v_none();
        else { n->kind = N_NAME; n->str = t->s; }
        break;
    case T_OP:
        if (is_op(t, "(")) {
            if (is_op(peek(x), ")")) { next(x); n = mk(x, N_TUPLE, t->line); break; }
            node *e = p_expr(x);
            if (is_op(peek(x), ",")) {
                nvec items = {0};
                nv_push(x, &items, e);
                while (is_op(peek(x), ",")) {
                    next(x);
                    if (is_op(peek(x), ")")) break;
                    nv_push(x, &items, p_expr(x));
                }
                n = mk(x, N_TUPLE, t->line);
                n->kids = items.v;
                n->n_kids = items.n;
            } else
                n = e;
            expect_op(x, ")");
            break;
        }
        if (is_op(t, "[")) {
            nvec items = {0};
            while (!is_op(peek(x), "]")) {
                nv_push(x, &items, p_expr(x));
                if (!is_op(peek(x), ",")) break;
                next(x);
            }
            expect_op(x, "]");
            n = mk(x, N_LIST, t->line);
            n->kids = items.v;
            n->n_kids = items.n;
            break;
        }
        if (is_op(t, "{")) {
            nvec items = {0};
            while (!is_op(peek(x), "}")) {
                nv_push(x, &items, p_expr(x));
                expect_op(x, ":");
                nv_push(x, &items, p_expr(x));
                if (!is_op(peek(x), ",")) break;
                next(x);
            }
            expect_op(x, "}");
            n = mk(x, N_DICT, t->line);
            n->kids = items.v;
            n->n_kids = items.n;
            break;
        }
        jfail(x, t->line, "unexpected '%s'", t->s);
    default:
        jfail(x, t->line, "unexpected end of expression");
    }
    x->depth--;
    return n;
}

static node *p_postfix(jx *x, node *n) {
    for (;;) {
        tok *t = peek(x);
        if (is_op(t, ".")) {
            next(x);
            tok *a = next(x);
            node *m = mk(x, N_ATTR, t->line);
            m->a = n;
            if (a->t == T_NAME) m->str = a->s;
            else if (a->t == T_INT) { m->kind = N_ITEM; m->b = mk(x, N_LIT, t->line); m->b->lit = v_int(a->i); }
            else jfail(x, t->line, "expected an attribute name after '.'");
            n = m;
        } else if (is_op(t, "[")) {
            next(x);
            node *parts[3] = {0};
            int k = 0;
            bool slice = false;
            for (;;) {
                if (!is_op(peek(x), ":") && !is_op(peek(x), "]")) parts[k] = p_expr(x);
                if (is_op(peek(x), ":") && k < 2) { next(x); k++; slice = true; continue; }
                break;
            }
            expect_op(x, "]");
            node *m = mk(x, slice ? N_SLICE : N_ITEM, t->line);
            m->a = n;
            if (slice) { m->b = parts[0]; m->c = parts[1]; m->d = parts[2]; }
            else {
                if (!parts[0]) jfail(x, t->line, "empty subscript");
                m->b = parts[0];
            }
            n = m;
        } else if (is_op(t, "(")) {
            next(x);
            node *m = mk(x, N_CALL, t->line);
            m->a = n;
            p_args(x, m);
            n = m;
        } else
            return n;
    }
}

static bool starts_test_arg(const tok *t) {
    if (t->t == T_STR || t->t == T_INT || t->t == T_FLOAT) return true;
    if (t->t == T_NAME)
        return strcmp(t->s, "else") && strcmp(t->s, "or") && strcmp(t->s, "and") && strcmp(t->s, "if") &&
               strcmp(t->s, "in") && strcmp(t->s, "is") && strcmp(t->s, "not");
    return is_op(t, "[") || is_op(t, "{");
}

static node *p_filters(jx *x, node *n) {
    for (;;) {
        tok *t = peek(x);
        if (is_op(t, "|")) {
            next(x);
            node *m = mk(x, N_FILTER, t->line);
            m->a = n;
            m->str = expect_name(x);
            if (is_op(peek(x), "(")) { next(x); p_args(x, m); }
            n = m;
        } else if (is_name(t, "is")) {
            next(x);
            node *m = mk(x, N_TEST, t->line);
            m->a = n;
            if (is_name(peek(x), "not")) { next(x); m->op = 1; }
            tok *nm = next(x);
            if (nm->t == T_NAME) m->str = nm->s;
            else if (nm->t == T_OP && (is_op(nm, "==") || is_op(nm, "!=") || is_op(nm, "<") || is_op(nm, ">") ||
                                       is_op(nm, "<=") || is_op(nm, ">=")))
                m->str = nm->s;
            else jfail(x, nm->line, "expected a test name after 'is'");
            if (is_op(peek(x), "(")) { next(x); p_args(x, m); }
            else if (starts_test_arg(peek(x))) {
                nvec a = {0};
                nv_push(x, &a, p_postfix(x, p_primary(x)));
                m->kids = a.v;
                m->n_kids = 1;
            }
            n = m;
        } else
            return n;
    }
}

/* as jinja2: -x|f is f(-x), and -x.y is -(x.y) */
static node *p_unary_f(jx *x, bool with_filter) {
    tok *t = peek(x);
    if (++x->depth > MAX_DEPTH) jfail(x, t->line, "expression nested too deeply");
    node *n;
    if (is_op(t, "-") || is_op(t, "+")) {
        next(x);
        n = mk(x, is_op(t, "-") ? N_NEG : N_POS, t->line);
        n->a = p_unary_f(x, false);
    } else
        n = p_primary(x);
    n = p_postfix(x, n);
    if (with_filter) n = p_filters(x, n);
    x->depth--;
    return n;
}
static node *p_unary(jx *x) { return p_unary_f(x, true); }

static node *bin(jx *x, int op, node *a, node *b, int line) {
    node *n = mk(x, N_BIN, line);
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}
#define OP2(a, b) ((a) * 256 + (b))

static node *p_pow(jx *x) {
    node *n = p_unary(x);
    while (is_op(peek(x), "**")) { int l = next(x)->line; n = bin(x, OP2('*', '*'), n, p_unary(x), l); }
    return n;
}
static node *p_math2(jx *x) {
    node *n = p_pow(x);
    for (;;) {
        tok *t = peek(x);
        if (is_op(t, "*") || is_op(t, "/") || is_op(t, "%") || is_op(t, "//")) {
            next(x);
            n = bin(x, t->n == 2 ? OP2('/', '/') : t->s[0], n, p_pow(x), t->line);
        } else
            return n;
    }
}
static node *p_concat(jx *x) {
    node *n = p_math2(x);
    while (is_op(peek(x), "~")) { int l = next(x)->line; n = bin(x, '~', n, p_math2(x), l); }
    return n;
}
static node *p_math1(jx *x) {
    node *n = p_concat(x);
    for (;;) {
        tok *t = peek(x);
        if (is_op(t, "+") || is_op(t, "-")) { next(x); n = bin(x, t->s[0], n, p_concat(x), t->line); }
        else return n;
    }
}
static node *p_compare(jx *x) {
    node *n = p_math1(x);
    for (;;) {
        tok *t = peek(x);
        int op = 0;
        if (is_op(t, "==")) op = OP2('=', '=');
        else if (is_op(t, "!=")) op = OP2('!', '=');
        else if (is_op(t, "<=")) op = OP2('<', '=');
        else if (is_op(t, ">=")) op = OP2('>', '=');
        else if (is_op(t, "<")) op = '<';
        else if (is_op(t, ">")) op = '>';
        else if (is_name(t, "in")) op = 'i';
        else if (is_name(t, "not") && is_name(&x->toks[x->pos + 1], "in")) { op = 'I'; next(x); }
        if (!op) return n;
        next(x);
        n = bin(x, op, n, p_math1(x), t->line);
    }
}
static node *p_not(jx *x) {
    tok *t = peek(x);
    if (is_name(t, "not")) {
        next(x);
        if (++x->depth > MAX_DEPTH) jfail(x, t->line, "expression nested too deeply");
        node *n = mk(x, N_NOT, t->line);
        n->a = p_not(x);
        x->depth--;
        return n;
    }
    return p_compare(x);
}
static node *p_and(jx *x) {
    node *n = p_not(x);
    while (is_name(peek(x), "and")) {
        int l = next(x)->line;
        node *m = mk(x, N_AND, l);
        m->a = n;
        m->b = p_not(x);
        n = m;
    }
    return n;
}
static node *p_or(jx *x) {
    node *n = p_and(x);
    while (is_name(peek(x), "or")) {
        int l = next(x)->line;
        node *m = mk(x, N_OR, l);
        m->a = n;
        m->b = p_and(x);
        n = m;
    }
    return n;
}
static node *p_expr(jx *x) {
    if (++x->depth > MAX_DEPTH) jfail(x, peek(x)->line, "expression nested too deeply");
    node *n = p_or(x);
    while (is_name(peek(x), "if")) {
        int l = next(x)->line;
        node *m = mk(x, N_COND, l);
        m->a = p_or(x);
        m->b = n;
        if (is_name(peek(x), "else")) { next(x); m->c = p_expr(x); }
        n = m;
    }
    x->depth--;
    return n;
}

/* an assignment / loop target: name, or name, name, ... (optionally in parentheses) */
static node *p_target(jx *x, bool allow_attr) {
    tok *t = peek(x);
    nvec names = {0};
    bool paren = is_op(t, "(");
    if (paren) next(x);
    for (;;) {
        tok *nm = next(x);
        if (nm->t != T_NAME) jfail(x, nm->line, "expected a variable name");
        node *n = mk(x, N_NAME, nm->line);
        n->str = nm->s;
        if (allow_attr && is_op(peek(x), ".")) {
            next(x);
            node *m = mk(x, N_ATTR, nm->line);
            m->a = n;
            m->str = expect_name(x);
            n = m;
        }
        nv_push(x, &names, n);
        if (!is_op(peek(x), ",")) break;
        next(x);
    }
    if (paren) expect_op(x, ")");
    if (names.n == 1) return names.v[0];
    node *tu = mk(x, N_TUPLE, t->line);
    tu->kids = names.v;
    tu->n_kids = names.n;
    return tu;
}

static void expect_bend(jx *x) {
    tok *t = next(x);
    if (t->t != T_BEND) jfail(x, t->line, "expected '%%}' (unexpected '%s')", t->s ? t->s : "?");
}

/* parse statements until one of the `ends` keywords (NULL-terminated list) opens a block tag;
 * leaves pos at that keyword; returns the body */
static node *p_body(jx *x, const char *const *ends, const char **found);

static node *p_stmt(jx *x, tok *kw) {
    int line = kw->line;
    const char *k = kw->s;
    if (!strcmp(k, "if")) {
        node *n = mk(x, N_IF, line);
        nvec conds = {0}, bodies = {0};
        nv_push(x, &conds, p_expr(x));
        expect_bend(x);
        static const char *const ends[] = {"elif", "else", "endif", NULL};
        for (;;) {
            const char *f;
            nv_push(x, &bodies, p_body(x, ends, &f));
            next(x); /* keyword */
            if (!strcmp(f, "elif")) { nv_push(x, &conds, p_expr(x)); expect_bend(x); continue; }
            if (!strcmp(f, "else")) {
                expect_bend(x);
                static const char *const e2[] = {"endif", NULL};
                n->a = p_body(x, e2, &f);
                next(x);
            }
            expect_bend(x);
            break;
        }
        n->kids = conds.v;
        n->n_kids = conds.n;
        n->kwv = bodies.v;
        n->n_kw = bodies.n;
        return n;
    }
    if (!strcmp(k, "for")) {
        node *n = mk(x, N_FOR, line);
        n->a = p_target(x, false);
        if (!is_name(next(x), "in")) jfail(x, line, "expected 'in' in a for loop");
        n->b = p_or(x); /* the iterable: no conditional expression, so `if` starts the filter */
        if (is_name(peek(x), "if")) { next(x); n->c = p_expr(x); }
        if (is_name(peek(x), "recursive")) jfail(x, line, "recursive loops are not supported");
        expect_bend(x);
        static const char *const ends[] = {"else", "endfor", NULL};
        const char *f;
        node *body = p_body(x, ends, &f);
        next(x);
        if (!strcmp(f, "else")) {
            expect_bend(x);
            static const char *const e2[] = {"endfor", NULL};
            n->d = p_body(x, e2, &f);
            next(x);
        }
        expect_bend(x);
        nvec b = {0};
        nv_push(x, &b, body);
        n->kids = b.v;
        n->n_kids = 1;
        return n;
    }
    if (!strcmp(k, "set")) {
        node *tgt = p_target(x, true);
        if (is_op(peek(x), "=")) {
            next(x);
            node *n = mk(x, N_SET, line);
            n->a = tgt;
            n->b = p_expr(x);
            expect_bend(x);
            return n;
        }
        if (tgt->kind != N_NAME) jfail(x, line, "a block set needs a single name");
        if (is_op(peek(x), "|")) jfail(x, line, "filtered block set is not supported");
        expect_bend(x);
        static const char *const ends[] = {"endset", NULL};
        const char *f;
        node *n = mk(x, N_SETBLOCK, line);
        n->a = tgt;
        n->b = p_body(x, ends, &f);
        next(x);
        expect_bend(x);
        return n;
    }
    if (!strcmp(k, "macro")) {
        node *n = mk(x, N_MACRO, line);
        n->str = expect_name(x);
        expect_op(x, "(");
        nvec defs = {0};
        const char **names = NULL;
        int nn = 0, cap = 0;
        while (!is_op(peek(x), ")")) {
            const char *pn = expect_name(x);
            if (nn == cap) {
                cap = cap ? cap * 2 : 4;
                const char **np = amem(x, (size_t)cap * sizeof *np);
                if (nn) memcpy(np, names, (size_t)nn * sizeof *np);
                names = np;
            }
            names[nn++] = pn;
            node *dv = NULL;
            if (is_op(peek(x), "=")) { next(x); dv = p_expr(x); }
            nv_push(x, &defs, dv);
            if (!is_op(peek(x), ",")) break;
            next(x);
        }
        expect_op(x, ")");
        expect_bend(x);
        static const char *const ends[] = {"endmacro", NULL};
        const char *f;
        n->a = p_body(x, ends, &f);
        next(x);
        expect_bend(x);
        n->kwn = names;
        n->kwv = defs.v;
        n->n_kw = nn;
        return n;
    }
    if (!strcmp(k, "break") || !strcmp(k, "continue")) {
        expect_bend(x);
        return mk(x, k[0] == 'b' ? N_BREAK : N_CONTINUE, line);
    }
    if (!strcmp(k, "generation")) {
        expect_bend(x);
        static const char *const ends[] = {"endgeneration", NULL};
        const char *f;
        node *b = p_body(x, ends, &f);
        next(x);
        expect_bend(x);
        return b;
    }
    jfail(x, line, "the '%s' tag is not supported (supported: if, elif, else, for, set, macro, break, continue, "
                   "generation)", k);
}

static node *p_body(jx *x, const char *const *ends, const char **found) {
    nvec items = {0};
    int line = peek(x)->line;
    for (;;) {
        tok *t = next(x);
        if (t->t == T_EOF) {
            if (ends) {
                int k = 0;
                while (ends[k + 1]) k++;
                jfail(x, t->line, "unexpected end of template: missing {%% %s %%}", ends[k]);
            }
            x->pos--;
            break;
        }
        if (t->t == T_TEXT) {
            node *n = mk(x, N_TEXT, t->line);
            n->lit = v_str(t->s, t->n);
            nv_push(x, &items, n);
        } else if (t->t == T_VBEGIN) {
            node *n = mk(x, N_OUT, t->line);
            n->a = p_expr(x);
            tok *e = next(x);
            if (e->t != T_VEND) jfail(x, e->line, "expected '}}'");
            nv_push(x, &items, n);
        } else if (t->t == T_BBEGIN) {
            tok *kw = peek(x);
            if (kw->t != T_NAME) jfail(x, kw->line, "expected a tag name after '{%%'");
            if (ends)
                for (int i = 0; ends[i]; i++)
                    if (!strcmp(kw->s, ends[i])) { *found = ends[i]; goto done; }
            if (!strcmp(kw->s, "endif") || !strcmp(kw->s, "endfor") || !strcmp(kw->s, "else") || !strcmp(kw->s, "elif") ||
                !strcmp(kw->s, "endset") || !strcmp(kw->s, "endmacro") || !strcmp(kw->s, "endgeneration"))
                jfail(x, kw->line, "unexpected '%s'", kw->s);
            next(x);
            if (++x->depth > MAX_DEPTH) jfail(x, kw->line, "blocks nested too deeply");
            nv_push(x, &items, p_stmt(x, kw));
            x->depth--;
        } else
            jfail(x, t->line, "unexpected token");
    }
done:;
    node *b = mk(x, N_BODY, line);
    b->kids = items.v;
    b->n_kids = items.n;
    return b;
}

/* ---- evaluation ------------------------------------------------------------------------------- */
static void scope_push(jx *x) {
    if (x->n_scopes == x->cap_scopes) {
        int cap = x->cap_scopes ? x->cap_scopes * 2 : 8;
        scope *ns = amem(x, (size_t)cap * sizeof *ns);
        if (x->n_scopes) memcpy(ns, x->scopes, (size_t)x->n_scopes * sizeof *ns);
        x->scopes = ns;
        x->cap_scopes = cap;
    }
    x->scopes[x->n_scopes++] = (scope){0};
}
static void scope_set(jx *x, const char *k, jv v) {
    scope *s = &x->scopes[x->n_scopes - 1];
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->k[i], k)) { s->v[i] = v; return; }
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 8;
        const char **nk = amem(x, (size_t)cap * sizeof *nk);
        jv *nv = amem(x, (size_t)cap * sizeof *nv);
        if (s->n) { memcpy(nk, s->k, (size_t)s->n * sizeof *nk); memcpy(nv, s->v, (size_t)s->n * sizeof *nv); }
        s->k = nk;
        s->v = nv;
        s->cap = cap;
    }
    s->k[s->n] = k;
    s->v[s->n++] = v;
}

static const char *k_builtins[] = {"raise_exception", "namespace", "range", "dict", "strftime_now", NULL};

static jv lookup(jx *x, const char *name) {
    for (int i = x->n_scopes - 1; i >= 0; i--) {
        scope *s = &x->scopes[i];
        for (int j = s->n - 1; j >= 0; j--)
            if (!strcmp(s->k[j], name)) return s->v[j];
    }
    int k = d_find_s(x->globals, name, strlen(name));
    if (k >= 0) return x->globals->v[k];
    for (int i = 0; k_builtins[i]; i++)
        if (!strcmp(name, k_builtins[i])) {
            jfunc *f = amem(x, sizeof *f);
            f->kind = F_BUILTIN;
            f->name = k_builtins[i];
            return (jv){.t = V_FUNC, .fn = f};
        }
    return v_undef();
}

static jv eval(jx *x, node *n);
static void exec_body(jx *x, node *b);

static void tick(jx *x, int line) {
    if (++x->steps > MAX_STEPS) jfail(x, line, "template runs too long (more than %ld steps)", MAX_STEPS);
}

static jv mk_func(jx *x, fkind k, const char *name, jv self) {
    jfunc *f = amem(x, sizeof *f);
    f->kind = k;
    f->name = name;
    f->self = self;
    return (jv){.t = V_FUNC, .fn = f};
}

static const char *k_str_methods[] = {"strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "upper",
                                      "lower", "replace", "title", "capitalize", "find", "count", "join", "splitlines",
                                      "isdigit", "isspace", "isalpha", "isalnum", "islower", "isupper", NULL};
static const char *k_dict_methods[] = {"items", "keys", "values", "get", NULL};
static bool in_list(const char *const *l, const char *s) {
    for (int i = 0; l[i]; i++)
        if (!strcmp(l[i], s)) return true;
    return false;
}

static jv getattr(jx *x, jv obj, const char *name, int line) {
    (void)line;
    if (obj.t == V_DICT) {
        if (!obj.d->ns && in_list(k_dict_methods, name)) return mk_func(x, F_METHOD, name, obj);
        int k = d_find_s(obj.d, name, strlen(name));
        return k >= 0 ? obj.d->v[k] : v_undef();
    }
    if (obj.t == V_STR && in_list(k_str_methods, name)) return mk_func(x, F_METHOD, name, obj);
    return v_undef();
}

static int64_t norm_index(int64_t i, int64_t n) { return i < 0 ? i + n : i; }

static jv getitem(jx *x, jv obj, jv key, int line) {
    if (obj.t == V_DICT) {
        int k = d_find(obj.d, &key);
        return k >= 0 ? obj.d->v[k] : v_undef();
    }
    if (obj.t == V_LIST || obj.t == V_STR) {
        if (key.t == V_STR && obj.t == V_STR) return v_undef();
        if (key.t != V_INT && key.t != V_BOOL) {
            if (key.t == V_STR) return getattr(x, obj, astr(x, key.s.p, key.s.n), line);
            jfail(x, line, "%s indices must be integers, not %s", v_typename(&obj), v_typename(&key));
        }
        int64_t i = key.t == V_BOOL ? key.b : key.i;
        if (obj.t == V_LIST) {
            i = norm_index(i, obj.l->n);
            return i >= 0 && i < obj.l->n ? obj.l->v[i] : v_undef();
        }
        int64_t nc = (int64_t)u8_count(obj.s.p, obj.s.n);
        i = norm_index(i, nc);
        if (i < 0 || i >= nc) return v_undef();
        size_t a = u8_off(obj.s.p, obj.s.n, (size_t)i), b = u8_off(obj.s.p, obj.s.n, (size_t)i + 1);
        return v_str(obj.s.p + a, b - a);
    }
    if (obj.t == V_UNDEF) return v_undef();
    if (key.t == V_STR) return getattr(x, obj, astr(x, key.s.p, key.s.n), line);
    return v_undef();
}

/* Python slice indices */
static void slice_idx(int64_t n, const jv *a, const jv *b, const jv *c, int64_t *start, int64_t *stop, int64_t *step,
                      jx *x, int line) {
    *step = c && c->t == V_INT ? c->i : 1;
    if (*step == 0) jfail(x, line, "slice step cannot be zero");
    int64_t lo = *step < 0 ? -1 : 0, hi = *step < 0 ? n - 1 : n;
    if (a && a->t == V_INT) {
        *start = a->i < 0 ? a->i + n : a->i;
        if (*start < lo) *start = lo;
        if (*start > hi) *start = hi;
    } else
        *start = *step < 0 ? hi : lo;
    if (b && b->t == V_INT) {
        *stop = b->i < 0 ? b->i + n : b->i;
        if (*stop < lo) *stop = lo;
        if (*stop > hi) *stop = hi;
    } else
        *stop = *step < 0 ? lo : hi;
}

static jv do_slice(jx *x, jv obj, node *n) {
    jv a = n->b ? eval(x, n->b) : v_none(), b = n->c ? eval(x, n->c) : v_none(), c = n->d ? eval(x, n->d) : v_none();
    int64_t start, stop, step;
    if (obj.t == V_LIST) {
        slice_idx(obj.l->n, &a, &b, &c, &start, &stop, &step, x, n->line);
        jlist *l = l_new(x, 4);
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) l_push(x, l, obj.l->v[i]);
        return v_list(l);
    }
    if (obj.t == V_STR) {
        int64_t nc = (int64_t)u8_count(obj.s.p, obj.s.n);
        slice_idx(nc, &a, &b, &c, &start, &stop, &step, x, n->line);
        tk_buf out = {0};
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
            size_t p = u8_off(obj.s.p, obj.s.n, (size_t)i), q = u8_off(obj.s.p, obj.s.n, (size_t)i + 1);
            tk_buf_put(&out, obj.s.p + p, q - p);
        }
        jv r = v_strdup(x, out.p ? out.p : "", out.len);
        tk_buf_free(&out);
        return r;
    }
    if (obj.t == V_UNDEF) return v_undef();
    jfail(x, n->line, "cannot slice a %s", v_typename(&obj));
}

/* iterate: lists, dict keys, string characters */
static jlist *as_iter(jx *x, jv v, int line) {
    if (v.t == V_LIST) return v.l;
    jlist *l = l_new(x, 4);
    if (v.t == V_DICT) {
        for (int i = 0; i < v.d->n; i++) l_push(x, l, v.d->k[i]);
    } else if (v.t == V_STR) {
        for (size_t i = 0; i < v.s.n;) {
            size_t j = u8_off(v.s.p + i, v.s.n - i, 1);
            l_push(x, l, v_str(v.s.p + i, j));
            i += j;
        }
    } else if (v.t != V_UNDEF && v.t != V_NONE)
        jfail(x, line, "'%s' object is not iterable", v_typename(&v));
    else if (v.t == V_NONE)
        jfail(x, line, "'NoneType' object is not iterable");
    return l;
}

static int v_cmp(jx *x, const jv *a, const jv *b, int line) {
    if (v_num(a) && v_num(b)) {
        double p = v_f(a), q = v_f(b);
        if (a->t != V_FLOAT && b->t != V_FLOAT) {
            int64_t i = a->t == V_BOOL ? a->b : a->i, j = b->t == V_BOOL ? b->b : b->i;
            return i < j ? -1 : i > j;
        }
        return p < q ? -1 : p > q;
    }
    if (a->t == V_STR && b->t == V_STR) {
        size_t m = a->s.n < b->s.n ? a->s.n : b->s.n;
        int c = memcmp(a->s.p, b->s.p, m);
        if (c) return c < 0 ? -1 : 1;
        return a->s.n < b->s.n ? -1 : a->s.n > b->s.n;
    }
    if (a->t == V_LIST && b->t == V_LIST) {
        for (int i = 0; i < a->l->n && i < b->l->n; i++) {
            int c = v_cmp(x, &a->l->v[i], &b->l->v[i], line);
            if (c) return c;
        }
        return a->l->n < b->l->n ? -1 : a->l->n > b->l->n;
    }
    jfail(x, line, "'<' not supported between instances of '%s' and '%s'", v_typename(a), v_typename(b));
}

static bool v_in(jx *x, const jv *item, const jv *cont, int line) {
    if (cont->t == V_STR) {
        if (item->t != V_STR) jfail(x, line, "'in <string>' requires string as left operand, not %s", v_typename(item));
        if (item->s.n == 0) return true;
        return item->s.n <= cont->s.n && memmem(cont->s.p, cont->s.n, item->s.p, item->s.n) != NULL;
    }
    if (cont->t == V_LIST) {
        for (int i = 0; i < cont->l->n; i++)
            if (v_eq(item, &cont->l->v[i])) return true;
        return false;
    }
    if (cont->t == V_DICT) return d_find(cont->d, item) >= 0;
    if (cont->t == V_UNDEF) return false;
    jfail(x, line, "argument of type '%s' is not iterable", v_typename(cont));
}

static jv arith(jx *x, int op, jv a, jv b, int line) {
    if (op == '~') {
        jv sa = v_tostr(x, &a), sb = v_tostr(x, &b);
        char *p = amem(x, (size_t)sa.s.n + sb.s.n + 1);
        memcpy(p, sa.s.p, sa.s.n);
        memcpy(p + sa.s.n, sb.s.p, sb.s.n);
        return v_str(p, (size_t)sa.s.n + sb.s.n);
    }
    if (op == '+' && a.t == V_STR && b.t == V_STR) {
        if ((size_t)a.s.n + b.s.n > MAX_OUT) jfail(x, line, "string too long");
        char *p = amem(x, (size_t)a.s.n + b.s.n + 1);
        memcpy(p, a.s.p, a.s.n);
        memcpy(p + a.s.n, b.s.p, b.s.n);
        return v_str(p, (size_t)a.s.n + b.s.n);
    }
    if (op == '+' && a.t == V_LIST && b.t == V_LIST) {
        jlist *l = l_new(x, a.l->n + b.l->n);
        for (int i = 0; i < a.l->n; i++) l_push(x, l, a.l->v[i]);
        for (int i = 0; i < b.l->n; i++) l_push(x, l, b.l->v[i]);
        return v_list(l);
    }
    if (op == '*' && ((a.t == V_STR && b.t == V_INT) || (a.t == V_INT && b.t == V_STR))) {
        jv s = a.t == V_STR ? a : b;
        int64_t k = a.t == V_INT ? a.i : b.i;
        if (k <= 0) return v_str("", 0);
        if ((uint64_t)k * s.s.n > MAX_OUT) jfail(x, line, "string too long");
        char *p = amem(x, (size_t)k * s.s.n + 1);
        for (int64_t i = 0; i < k; i++) memcpy(p + i * s.s.n, s.s.p, s.s.n);
        return v_str(p, (size_t)k * s.s.n);
    }
    if (!v_num(&a) || !v_num(&b)) {
        const char *o = op == OP2('/', '/') ? "//" : op == OP2('*', '*') ? "**" : (char[]){(char)op, 0};
        jfail(x, line, "unsupported operand type(s) for %s: '%s' and '%s'", o, v_typename(&a), v_typename(&b));
    }
    bool ints = a.t != V_FLOAT && b.t != V_FLOAT;
    int64_t i = a.t == V_BOOL ? a.b : a.i, j = b.t == V_BOOL ? b.b : b.i;
    double p = v_f(&a), q = v_f(&b);
    switch (op) {
    case '+': return ints ? v_int((int64_t)((uint64_t)i + (uint64_t)j)) : v_float(p + q);
    case '-': return ints ? v_int((int64_t)((uint64_t)i - (uint64_t)j)) : v_float(p - q);
    case '*': return ints ? v_int((int64_t)((uint64_t)i * (uint64_t)j)) : v_float(p * q);
    case '/':
        if (q == 0) jfail(x, line, "division by zero");
        return v_float(p / q);
    case OP2('/', '/'):
        if (q == 0) jfail(x, line, "integer division or modulo by zero");
        if (ints) {
            if (i == INT64_MIN && j == -1) return v_int(INT64_MIN);
            int64_t d = i / j;
            if ((i % j != 0) && ((i < 0) != (j < 0))) d--;
            return v_int(d);
        }
        return v_float(floor(p / q));
    case '%':
        if (q == 0) jfail(x, line, "integer division or modulo by zero");
        if (ints) {
            if (j == -1) return v_int(0);
            int64_t r = i % j;
            if (r != 0 && ((r < 0) != (j < 0))) r += j;
            return v_int(r);
        }
        {
            double r = fmod(p, q);
            if (r != 0 && ((r < 0) != (q < 0))) r += q;
            return v_float(r);
        }
    case OP2('*', '*'):
        if (ints && j >= 0) {
            int64_t r = 1;
            for (int64_t k = 0; k < j && k < 64; k++) r = (int64_t)((uint64_t)r * (uint64_t)i);
            return v_int(r);
        }
        return v_float(pow(p, q));
    }
    jfail(x, line, "bad operator");
}

/* ---- strings ---- */
static bool py_space(int32_t c) { return tk_is_space(c) || (c >= 0x1c && c <= 0x1f); }

static jv str_strip(jx *x, jv s, const jv *chars, bool left, bool right) {
    const char *p = s.s.p;
    size_t lo = 0, hi = s.s.n;
    while (left && lo < hi) {
        int l = tk_utf8_valid_at((const unsigned char *)p + lo, hi - lo);
        if (!l) break;
        int32_t cp = tk_utf8_decode((const unsigned char *)p + lo, &l);
        bool strip;
        if (chars && chars->t == V_STR) {
            char u[4];
            int ul = tk_utf8_encode(cp, u);
            strip = memmem(chars->s.p, chars->s.n, u, (size_t)ul) != NULL;
        } else strip = py_space(cp);
        if (!strip) break;
        lo += (size_t)l;
    }
    while (right && hi > lo) {
        size_t k = hi - 1;
        while (k > lo && ((unsigned char)p[k] & 0xC0) == 0x80) k--;
        int l;
        if (!tk_utf8_valid_at((const unsigned char *)p + k, hi - k)) break;
        int32_t cp = tk_utf8_decode((const unsigned char *)p + k, &l);
        bool strip;
        if (chars && chars->t == V_STR) {
            char u[4];
            int ul = tk_utf8_encode(cp, u);
            strip = memmem(chars->s.p, chars->s.n, u, (size_t)ul) != NULL;
        } else strip = py_space(cp);
        if (!strip) break;
        hi = k;
    }
    (void)x;
    return v_str(p + lo, hi - lo);
}

static jv str_case(jx *x, jv s, int mode) { /* 0 lower, 1 upper, 2 title, 3 capitalize */
    tk_buf b = {0};
    bool prev_cased = false;
    size_t i = 0;
    int idx = 0;
    while (i < s.s.n) {
        int l = tk_utf8_valid_at((const unsigned char *)s.s.p + i, s.s.n - i);
        if (!l) { tk_buf_putc(&b, s.s.p[i++]); continue; }
        int32_t cp = tk_utf8_decode((const unsigned char *)s.s.p + i, &l), r = cp;
        if (mode == 0) r = utf8proc_tolower(cp);
        else if (mode == 1) r = utf8proc_toupper(cp);
        else if (mode == 2) r = prev_cased ? utf8proc_tolower(cp) : utf8proc_totitle(cp);
        else r = idx == 0 ? utf8proc_totitle(cp) : utf8proc_tolower(cp);
        utf8proc_category_t cat = utf8proc_category(cp);
        prev_cased = cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
        char u[4];
        tk_buf_put(&b, u, (size_t)tk_utf8_encode(r, u));
        i += (size_t)l;
        idx++;
    }
    jv v = v_strdup(x, b.p ? b.p : "", b.len);
    tk_buf_free(&b);
    return v;
}

static jv str_replace(jx *x, jv s, jv old, jv with, int64_t count) {
    tk_buf b = {0};
    if (old.s.n == 0) { /* Python inserts `with` around every character */
        int64_t done = 0;
        for (size_t i = 0; i <= s.s.n;) {
            if (count < 0 || done < count) { tk_buf_put(&b, with.s.p, with.s.n); done++; }
            if (i == s.s.n) break;
            size_t j = u8_off(s.s.p + i, s.s.n - i, 1);
            tk_buf_put(&b, s.s.p + i, j);
            i += j;
        }
    } else {
        size_t i = 0;
        int64_t done = 0;
        while (i < s.s.n) {
            const char *f = (count < 0 || done < count) ? memmem(s.s.p + i, s.s.n - i, old.s.p, old.s.n) : NULL;
            if (!f) { tk_buf_put(&b, s.s.p + i, s.s.n - i); break; }
            tk_buf_put(&b, s.s.p + i, (size_t)(f - (s.s.p + i)));
            tk_buf_put(&b, with.s.p, with.s.n);
            i = (size_t)(f - s.s.p) + old.s.n;
            done++;
            if (b.len > MAX_OUT) break;
        }
    }
    if (b.len > MAX_OUT) { tk_buf_free(&b); jfail(x, 0, "string too long"); }
    jv v = v_strdup(x, b.p ? b.p : "", b.len);
    tk_buf_free(&b);
    return v;
}

static jv str_split(jx *x, jv s, const jv *sep, int64_t maxsplit, bool from_right) {
    jlist *l = l_new(x, 4);
    if (!sep || sep->t == V_NONE || sep->t == V_UNDEF) { /* runs of whitespace, no empty strings */
        size_t i = 0, n = s.s.n;
        int64_t splits = 0;
        (void)from_right;
        while (i < n) {
            while (i < n) {
                int l2;
                int32_t cp = tk_utf8_valid_at((const unsigned char *)s.s.p + i, n - i) ? tk_utf8_decode((const unsigned char *)s.s.p + i, &l2) : (l2 = 1, 'x');
                if (!py_space(cp)) break;
                i += (size_t)l2;
            }
            if (i >= n) break;
            size_t st = i;
            if (maxsplit >= 0 && splits >= maxsplit) {
                jv rest = str_strip(x, v_str(s.s.p + st, n - st), NULL, false, true);
                l_push(x, l, rest);
                break;
            }
            while (i < n) {
                int l2;
                int32_t cp = tk_utf8_valid_at((const unsigned char *)s.s.p + i, n - i) ? tk_utf8_decode((const unsigned char *)s.s.p + i, &l2) : (l2 = 1, 'x');
                if (py_space(cp)) break;
                i += (size_t)l2;
            }
            l_push(x, l, v_str(s.s.p + st, i - st));
            splits++;
        }
        return v_list(l);
    }
    if (sep->t != V_STR) jfail(x, 0, "split: separator must be a string");
    if (sep->s.n == 0) jfail(x, 0, "split: empty separator");
    if (from_right && maxsplit >= 0) {
        /* split from the right, then reverse */
        jlist *r = l_new(x, 4);
        size_t end = s.s.n;
        int64_t done = 0;
        while (done < maxsplit) {
            const char *f = NULL;
            for (size_t k = end; k >= sep->s.n; k--)
                if (!memcmp(s.s.p + k - sep->s.n, sep->s.p, sep->s.n)) { f = s.s.p + k - sep->s.n; break; }
            if (!f) break;
            l_push(x, r, v_str(f + sep->s.n, (size_t)(s.s.p + end - f - sep->s.n)));
            end = (size_t)(f - s.s.p);
            done++;
        }
        l_push(x, r, v_str(s.s.p, end));
        for (int i = r->n - 1; i >= 0; i--) l_push(x, l, r->v[i]);
        return v_list(l);
    }
    size_t i = 0;
    int64_t done = 0;
    for (;;) {
        const char *f = (maxsplit < 0 || done < maxsplit) ? memmem(s.s.p + i, s.s.n - i, sep->s.p, sep->s.n) : NULL;
        if (!f) { l_push(x, l, v_str(s.s.p + i, s.s.n - i)); break; }
        l_push(x, l, v_str(s.s.p + i, (size_t)(f - (s.s.p + i))));
        i = (size_t)(f - s.s.p) + sep->s.n;
        done++;
    }
    return v_list(l);
}

/* ---- calls ---- */
typedef struct args { jv *pos; int npos; const char **kwn; jv *kwv; int nkw; } args;

static jv arg(const args *a, int i, const char *kw, jv def) {
    if (i < a->npos) return a->pos[i];
    for (int k = 0; k < a->nkw; k++)
        if (!strcmp(a->kwn[k], kw)) return a->kwv[k];
    return def;
}

static bool run_test(jx *x, const char *name, jv v, const args *a, int line);
static jv run_filter(jx *x, const char *name, jv v, const args *a, int line);

static void exec_macro(jx *x, node *m, const args *a, int line) {
    if (a->npos > m->n_kw) jfail(x, line, "macro '%s' takes %d arguments, %d given", m->str, m->n_kw, a->npos);
    scope_push(x);
    for (int i = 0; i < m->n_kw; i++) {
        jv v = v_undef();
        bool set = false;
        if (i < a->npos) { v = a->pos[i]; set = true; }
        for (int k = 0; k < a->nkw; k++)
            if (!strcmp(a->kwn[k], m->kwn[i])) { v = a->kwv[k]; set = true; }
        if (!set && m->kwv[i]) v = eval(x, m->kwv[i]);
        scope_set(x, m->kwn[i], v);
    }
    exec_body(x, m->a);
    x->n_scopes--;
}

static jv call_method(jx *x, jfunc *f, const args *a, int line) {
    jv s = f->self;
    const char *m = f->name;
    if (s.t == V_DICT) {
        if (!strcmp(m, "items")) {
            jlist *l = l_new(x, s.d->n);
            for (int i = 0; i < s.d->n; i++) {
                jlist *p = l_new(x, 2);
                p->tuple = true;
                l_push(x, p, s.d->k[i]);
                l_push(x, p, s.d->v[i]);
                l_push(x, l, v_list(p));
            }
            return v_list(l);
        }
        if (!strcmp(m, "keys") || !strcmp(m, "values")) {
            jlist *l = l_new(x, s.d->n);
            for (int i = 0; i < s.d->n; i++) l_push(x, l, m[0] == 'k' ? s.d->k[i] : s.d->v[i]);
            return v_list(l);
        }
        if (!strcmp(m, "get")) {
            jv k = arg(a, 0, "key", v_undef());
            int i = d_find(s.d, &k);
            return i >= 0 ? s.d->v[i] : arg(a, 1, "default", v_none());
        }
    }
    if (s.t == V_STR) {
        if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
            jv ch = arg(a, 0, "chars", v_none());
            return str_strip(x, s, ch.t == V_STR ? &ch : NULL, m[0] != 'r', m[0] != 'l');
        }
        if (!strcmp(m, "split") || !strcmp(m, "rsplit")) {
            jv sep = arg(a, 0, "sep", v_none()), mx = arg(a, 1, "maxsplit", v_int(-1));
            if (sep.t == V_STR && sep.s.n == 0) jfail(x, line, "split: empty separator");
            return str_split(x, s, &sep, mx.t == V_INT ? mx.i : -1, m[0] == 'r');
        }
        if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
            jv p = arg(a, 0, "prefix", v_undef());
            jlist one = {&p, 1, 1, false};
            jlist *cands = p.t == V_LIST ? p.l : &one;
            for (int i = 0; i < cands->n; i++) {
                jv c = cands->v[i];
                if (c.t != V_STR) jfail(x, line, "%s: argument must be str or a tuple of str", m);
                if (c.s.n <= s.s.n && !memcmp(m[0] == 's' ? s.s.p : s.s.p + s.s.n - c.s.n, c.s.p, c.s.n)) return v_bool(true);
            }
            return v_bool(false);
        }
        if (!strcmp(m, "upper")) return str_case(x, s, 1);
        if (!strcmp(m, "lower")) return str_case(x, s, 0);
        if (!strcmp(m, "title")) return str_case(x, s, 2);
        if (!strcmp(m, "capitalize")) return str_case(x, s, 3);
        if (!strcmp(m, "replace")) {
            jv o = arg(a, 0, "old", v_undef()), w = arg(a, 1, "new", v_undef()), c = arg(a, 2, "count", v_int(-1));
            if (o.t != V_STR || w.t != V_STR) jfail(x, line, "replace() arguments must be strings");
            return str_replace(x, s, o, w, c.t == V_INT ? c.i : -1);
        }
        if (!strcmp(m, "find") || !strcmp(m, "count")) {
            jv sub = arg(a, 0, "sub", v_undef());
            if (sub.t != V_STR) jfail(x, line, "%s() argument must be str", m);
            if (m[0] == 'f') {
                const char *f = sub.s.n == 0 ? s.s.p : memmem(s.s.p, s.s.n, sub.s.p, sub.s.n);
                return v_int(f ? (int64_t)u8_count(s.s.p, (size_t)(f - s.s.p)) : -1);
            }
            if (sub.s.n == 0) return v_int((int64_t)u8_count(s.s.p, s.s.n) + 1);
            int64_t c = 0;
            for (const char *p = s.s.p; (p = memmem(p, s.s.n - (size_t)(p - s.s.p), sub.s.p, sub.s.n)); p += sub.s.n) c++;
            return v_int(c);
        }
        if (!strcmp(m, "join")) {
            jlist *l = as_iter(x, arg(a, 0, "iterable", v_undef()), line);
            tk_buf b = {0};
            for (int i = 0; i < l->n; i++) {
                if (l->v[i].t != V_STR) { tk_buf_free(&b); jfail(x, line, "join: sequence item %d: expected str", i); }
                if (i) tk_buf_put(&b, s.s.p, s.s.n);
                tk_buf_put(&b, l->v[i].s.p, l->v[i].s.n);
            }
            jv r = v_strdup(x, b.p ? b.p : "", b.len);
            tk_buf_free(&b);
            return r;
        }
        if (!strcmp(m, "splitlines")) {
            jlist *l = l_new(x, 4);
            size_t i = 0, st = 0;
            while (i < s.s.n) {
                if (s.s.p[i] == '\n' || s.s.p[i] == '\r') {
                    l_push(x, l, v_str(s.s.p + st, i - st));
                    if (s.s.p[i] == '\r' && i + 1 < s.s.n && s.s.p[i + 1] == '\n') i++;
                    st = ++i;
                } else
                    i++;
            }
            if (st < s.s.n) l_push(x, l, v_str(s.s.p + st, s.s.n - st));
            return v_list(l);
        }
        if (!strncmp(m, "is", 2)) {
            if (s.s.n == 0) return v_bool(false);
            bool any_cased = false;
            for (size_t i = 0; i < s.s.n;) {
                int l = tk_utf8_valid_at((const unsigned char *)s.s.p + i, s.s.n - i);
                if (!l) return v_bool(false);
                int32_t cp = tk_utf8_decode((const unsigned char *)s.s.p + i, &l);
                utf8proc_category_t c = utf8proc_category(cp);
                bool alpha = c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO;
                bool digit = c == UTF8PROC_CATEGORY_ND;
                if (!strcmp(m, "isdigit") && !digit) return v_bool(false);
                if (!strcmp(m, "isspace") && !py_space(cp)) return v_bool(false);
                if (!strcmp(m, "isalpha") && !alpha) return v_bool(false);
                if (!strcmp(m, "isalnum") && !alpha && !digit && c != UTF8PROC_CATEGORY_NL && c != UTF8PROC_CATEGORY_NO) return v_bool(false);
                if (!strcmp(m, "islower") && (c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LT)) return v_bool(false);
                if (!strcmp(m, "isupper") && (c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT)) return v_bool(false);
                any_cased = any_cased || c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT;
                i += (size_t)l;
            }
            if (!strcmp(m, "islower") || !strcmp(m, "isupper")) return v_bool(any_cased);
            return v_bool(true);
        }
    }
    jfail(x, line, "method '%s' of %s is not supported", m, v_typename(&s));
}

/* render into a fresh buffer (macro calls, block set); on errors every buffer is freed */
static void capture_begin(jx *x, int line) {
    if (x->n_saved >= MAX_DEPTH) jfail(x, line, "macro calls nested too deeply");
    x->saved[x->n_saved++] = x->out;
    x->out = (tk_buf){0};
}
static jv capture_end(jx *x) {
    jv r = v_strdup(x, x->out.p ? x->out.p : "", x->out.len);
    tk_buf_free(&x->out);
    x->out = x->saved[--x->n_saved];
    return r;
}

static jv call(jx *x, jv fv, const args *a, int line) {
    if (fv.t != V_FUNC) jfail(x, line, "'%s' object is not callable", v_typename(&fv));
    jfunc *f = fv.fn;
    if (f->kind == F_METHOD) return call_method(x, f, a, line);
    if (f->kind == F_MACRO) {
        capture_begin(x, line);
        exec_macro(x, f->macro, a, line);
        return capture_end(x);
    }
    const char *n = f->name;
    if (!strcmp(n, "raise_exception")) {
        jv m = arg(a, 0, "message", v_cstr(""));
        jv s = v_tostr(x, &m);
        jfail(x, line, "raise_exception: %.*s", (int)(s.s.n > 700 ? 700 : s.s.n), s.s.p);
    }
    if (!strcmp(n, "namespace") || !strcmp(n, "dict")) {
        jdict *d = d_new(x);
        d->ns = n[0] == 'n';
        for (int i = 0; i < a->npos; i++) {
            if (a->pos[i].t != V_DICT) jfail(x, line, "%s() positional arguments must be mappings", n);
            for (int k = 0; k < a->pos[i].d->n; k++) d_set(x, d, a->pos[i].d->k[k], a->pos[i].d->v[k]);
        }
        for (int k = 0; k < a->nkw; k++) d_set(x, d, v_cstr(a->kwn[k]), a->kwv[k]);
        return v_dict(d);
    }
    if (!strcmp(n, "range")) {
        int64_t lo = 0, hi, st = 1;
        if (a->npos == 1) hi = a->pos[0].i;
        else if (a->npos >= 2) { lo = a->pos[0].i; hi = a->pos[1].i; if (a->npos > 2) st = a->pos[2].i; }
        else jfail(x, line, "range expected at least 1 argument");
        for (int i = 0; i < a->npos; i++)
            if (a->pos[i].t != V_INT) jfail(x, line, "range() arguments must be integers");
        if (st == 0) jfail(x, line, "range() arg 3 must not be zero");
        jlist *l = l_new(x, 4);
        for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st) {
            tick(x, line);
            l_push(x, l, v_int(i));
        }
        return v_list(l);
    }
    if (!strcmp(n, "strftime_now")) {
        jv fmt = arg(a, 0, "format", v_cstr("%Y-%m-%d"));
        if (fmt.t != V_STR) jfail(x, line, "strftime_now: format must be a string");
        char buf[256];
        time_t now = time(NULL);
        struct tm tmv;
        localtime_r(&now, &tmv);
        size_t k = strftime(buf, sizeof buf, astr(x, fmt.s.p, fmt.s.n), &tmv);
        return v_strdup(x, buf, k);
    }
    jfail(x, line, "'%s' is not callable", n);
}

static void eval_args(jx *x, node *n, args *a, int extra_front, jv front) {
    a->npos = n->n_kids + extra_front;
    a->pos = amem(x, ((size_t)a->npos + 1) * sizeof *a->pos);
    if (extra_front) a->pos[0] = front;
    for (int i = 0; i < n->n_kids; i++) a->pos[i + extra_front] = eval(x, n->kids[i]);
    a->nkw = n->n_kw;
    a->kwn = n->kwn;
    a->kwv = amem(x, ((size_t)a->nkw + 1) * sizeof *a->kwv);
    for (int i = 0; i < n->n_kw; i++) a->kwv[i] = eval(x, n->kwv[i]);
}

/* ---- filters and tests ---- */
static jv attr_path(jx *x, jv v, jv attr, int line) {
    if (attr.t == V_INT) return getitem(x, v, attr, line);
    if (attr.t != V_STR) return v_undef();
    /* dotted: "a.b" */
    const char *p = attr.s.p, *end = p + attr.s.n;
    while (p < end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t l = dot ? (size_t)(dot - p) : (size_t)(end - p);
        bool digits = l > 0;
        for (size_t i = 0; i < l; i++) digits = digits && p[i] >= '0' && p[i] <= '9';
        v = digits ? getitem(x, v, v_int(strtoll(astr(x, p, l), NULL, 10)), line) : getattr(x, v, astr(x, p, l), line);
        p += l + (dot ? 1 : 0);
        if (!dot) break;
    }
    return v;
}

static int cmp_for_sort(jx *x, const jv *a, const jv *b, bool ci, int line) {
    if (ci && a->t == V_STR && b->t == V_STR) {
        jv la = str_case(x, *a, 0), lb = str_case(x, *b, 0);
        return v_cmp(x, &la, &lb, line);
    }
    return v_cmp(x, a, b, line);
}

static jv run_filter(jx *x, const char *f, jv v, const args *a, int line) {
    if (!strcmp(f, "trim")) {
        if (v.t != V_STR) v = v_tostr(x, &v);
        jv ch = arg(a, 0, "chars", v_none());
        return str_strip(x, v, ch.t == V_STR ? &ch : NULL, true, true);
    }
    if (!strcmp(f, "length") || !strcmp(f, "count")) {
        if (v.t == V_STR) return v_int((int64_t)u8_count(v.s.p, v.s.n));
        if (v.t == V_LIST) return v_int(v.l->n);
        if (v.t == V_DICT) return v_int(v.d->n);
        if (v.t == V_UNDEF) return v_int(0);
        jfail(x, line, "object of type '%s' has no len()", v_typename(&v));
    }
    if (!strcmp(f, "tojson")) {
        jv ind = arg(a, 0, "indent", v_none()), sk = arg(a, 3, "sort_keys", v_bool(false));
        tk_buf b;
        tmp_open(x, &b);
        v_json(x, &b, &v, ind.t == V_INT ? (int)(ind.i < 0 ? 0 : ind.i > 64 ? 64 : ind.i) : -1, 0, v_truthy(&sk), line);
        jv r = v_strdup(x, b.p ? b.p : "", b.len);
        tmp_close(x, &b);
        return r;
    }
    if (!strcmp(f, "upper") || !strcmp(f, "lower") || !strcmp(f, "title") || !strcmp(f, "capitalize")) {
        jv s = v_tostr(x, &v);
        return str_case(x, s, f[0] == 'l' ? 0 : f[0] == 'u' ? 1 : f[0] == 't' ? 2 : 3);
    }
    if (!strcmp(f, "string")) return v_tostr(x, &v);
    if (!strcmp(f, "safe") || !strcmp(f, "e") || !strcmp(f, "escape")) {
        if (f[0] == 'e') jfail(x, line, "filter 'escape' is not supported");
        return v;
    }
    if (!strcmp(f, "int")) {
        jv def = arg(a, 0, "default", v_int(0));
        if (v.t == V_INT) return v;
        if (v.t == V_BOOL) return v_int(v.b);
        if (v.t == V_FLOAT) return isfinite(v.f) ? v_int((int64_t)v.f) : def;
        if (v.t == V_STR) {
            const char *s = astr(x, v.s.p, v.s.n);
            char *e;
            long long k = strtoll(s, &e, 10);
            while (*e == ' ') e++;
            if (e != s && !*e) return v_int(k);
            double d = strtod(s, &e);
            if (e != s && !*e && isfinite(d)) return v_int((int64_t)d);
        }
        return def;
    }
    if (!strcmp(f, "float")) {
        if (v_num(&v)) return v_float(v_f(&v));
        if (v.t == V_STR) {
            const char *s = astr(x, v.s.p, v.s.n);
            char *e;
            double d = strtod(s, &e);
            if (e != s && !*e) return v_float(d);
        }
        return arg(a, 0, "default", v_float(0));
    }
    if (!strcmp(f, "abs")) {
        if (v.t == V_INT) return v_int(v.i < 0 ? -v.i : v.i);
        if (v.t == V_FLOAT) return v_float(fabs(v.f));
        jfail(x, line, "bad operand type for abs(): '%s'", v_typename(&v));
    }
    if (!strcmp(f, "round")) {
        jv prec = arg(a, 0, "precision", v_int(0)), method = arg(a, 1, "method", v_cstr("common"));
        double p = pow(10, prec.t == V_INT ? (double)prec.i : 0), d = v_f(&v) * p;
        double r = method.t == V_STR && method.s.n && method.s.p[0] == 'f' ? floor(d)
                   : method.t == V_STR && method.s.n && method.s.p[0] == 'c' && method.s.n > 1 && method.s.p[1] == 'e' ? ceil(d)
                   : round(d);
        return v_float(r / p);
    }
    if (!strcmp(f, "default") || !strcmp(f, "d")) {
        jv def = arg(a, 0, "default_value", v_cstr("")), boolean = arg(a, 1, "boolean", v_bool(false));
        if (v.t == V_UNDEF || (v_truthy(&boolean) && !v_truthy(&v))) return def;
        return v;
    }
    if (!strcmp(f, "first") || !strcmp(f, "last")) {
        jlist *l = as_iter(x, v, line);
        if (!l->n) return v_undef();
        return f[0] == 'f' ? l->v[0] : l->v[l->n - 1];
    }
    if (!strcmp(f, "list")) return v_list(as_iter(x, v, line));
    if (!strcmp(f, "items")) {
        if (v.t == V_UNDEF) return v_list(l_new(x, 1));
        if (v.t != V_DICT) jfail(x, line, "items: expected a mapping, got %s", v_typename(&v));
        jfunc fn = {.kind = F_METHOD, .name = "items", .self = v};
        args none = {0};
        return call_method(x, &fn, &none, line);
    }
    if (!strcmp(f, "join")) {
        jv sep = arg(a, 0, "d", v_cstr("")), at = arg(a, 1, "attribute", v_none());
        jlist *l = as_iter(x, v, line);
        tk_buf b;
        tmp_open(x, &b);
        for (int i = 0; i < l->n; i++) {
            if (i) v_to_buf(&b, &sep, false);
            jv e = at.t != V_NONE ? attr_path(x, l->v[i], at, line) : l->v[i];
            v_to_buf(&b, &e, false);
        }
        jv r = v_strdup(x, b.p ? b.p : "", b.len);
        tmp_close(x, &b);
        return r;
    }
    if (!strcmp(f, "replace")) {
        jv o = arg(a, 0, "old", v_undef()), w = arg(a, 1, "new", v_undef()), c = arg(a, 2, "count", v_none());
        jv s = v_tostr(x, &v);
        o = v_tostr(x, &o);
        w = v_tostr(x, &w);
        return str_replace(x, s, o, w, c.t == V_INT ? c.i : -1);
    }
    if (!strcmp(f, "reverse")) {
        if (v.t == V_STR) {
            tk_buf b = {0};
            size_t i = v.s.n;
            while (i > 0) {
                size_t k = i - 1;
                while (k > 0 && ((unsigned char)v.s.p[k] & 0xC0) == 0x80) k--;
                tk_buf_put(&b, v.s.p + k, i - k);
                i = k;
            }
            jv r = v_strdup(x, b.p ? b.p : "", b.len);
            tk_buf_free(&b);
            return r;
        }
        jlist *l = as_iter(x, v, line), *r = l_new(x, l->n);
        for (int i = l->n - 1; i >= 0; i--) l_push(x, r, l->v[i]);
        return v_list(r);
    }
    if (!strcmp(f, "sort") || !strcmp(f, "dictsort") || !strcmp(f, "unique") || !strcmp(f, "min") || !strcmp(f, "max")) {
        jv attr = arg(a, f[0] == 's' ? 2 : f[0] == 'u' ? 1 : 1, "attribute", v_none());
        jv cs = arg(a, f[0] == 's' ? 1 : 0, "case_sensitive", v_bool(false));
        bool rev = f[0] == 's' && v_truthy(&(jv){0}) ? false : false;
        if (f[0] == 's') { jv r = arg(a, 0, "reverse", v_bool(false)); rev = v_truthy(&r); }
        jlist *src;
        if (!strcmp(f, "dictsort")) {
            if (v.t != V_DICT) jfail(x, line, "dictsort: expected a mapping");
            jfunc fn = {.kind = F_METHOD, .name = "items", .self = v};
            args none = {0};
            src = call_method(x, &fn, &none, line).l;
            jv r = arg(a, 2, "reverse", v_bool(false));
            rev = v_truthy(&r);
            attr = v_int(0);
            jv by = arg(a, 1, "by", v_cstr("key"));
            if (by.t == V_STR && by.s.n == 5 && !memcmp(by.s.p, "value", 5)) attr = v_int(1);
        } else
            src = as_iter(x, v, line);
        bool ci = !v_truthy(&cs);
        int n = src->n;
        jv *keys = amem(x, ((size_t)n + 1) * sizeof *keys);
        for (int i = 0; i < n; i++) keys[i] = attr.t != V_NONE ? attr_path(x, src->v[i], attr, line) : src->v[i];
        if (!strcmp(f, "unique")) {
            jlist *r = l_new(x, n);
            for (int i = 0; i < n; i++) {
                bool seen = false;
                for (int j = 0; j < i && !seen; j++) {
                    if (ci && keys[i].t == V_STR && keys[j].t == V_STR) seen = cmp_for_sort(x, &keys[i], &keys[j], true, line) == 0;
                    else seen = v_eq(&keys[i], &keys[j]);
                }
                if (!seen) l_push(x, r, src->v[i]);
            }
            return v_list(r);
        }
        if (!strcmp(f, "min") || !strcmp(f, "max")) {
            if (!n) return v_undef();
            int best = 0;
            for (int i = 1; i < n; i++) {
                int c = cmp_for_sort(x, &keys[i], &keys[best], ci, line);
                if (f[1] == 'i' ? c < 0 : c > 0) best = i;
            }
            return src->v[best];
        }
        int *ord = amem(x, ((size_t)n + 1) * sizeof *ord);
        for (int i = 0; i < n; i++) ord[i] = i;
        for (int i = 1; i < n; i++) /* stable insertion sort */
            for (int j = i; j > 0; j--) {
                int c = cmp_for_sort(x, &keys[ord[j - 1]], &keys[ord[j]], ci, line);
                if (rev ? c < 0 : c > 0) { int t = ord[j]; ord[j] = ord[j - 1]; ord[j - 1] = t; }
                else break;
            }
        jlist *r = l_new(x, n);
        for (int i = 0; i < n; i++) l_push(x, r, src->v[ord[i]]);
        return v_list(r);
    }
    if (!strcmp(f, "sum")) {
        jv attr = arg(a, 0, "attribute", v_none()), acc = arg(a, 1, "start", v_int(0));
        jlist *l = as_iter(x, v, line);
        for (int i = 0; i < l->n; i++) acc = arith(x, '+', acc, attr.t != V_NONE ? attr_path(x, l->v[i], attr, line) : l->v[i], line);
        return acc;
    }
    if (!strcmp(f, "map")) {
        jlist *l = as_iter(x, v, line), *r = l_new(x, l->n);
        jv at = arg(a, 99, "attribute", v_none());
        if (at.t != V_NONE) {
            jv def = arg(a, 99, "default", v_undef());
            for (int i = 0; i < l->n; i++) {
                jv e = attr_path(x, l->v[i], at, line);
                l_push(x, r, e.t == V_UNDEF ? def : e);
            }
            return v_list(r);
        }
        if (a->npos < 1 || a->pos[0].t != V_STR) jfail(x, line, "map: expected a filter name or attribute=");
        const char *fname = astr(x, a->pos[0].s.p, a->pos[0].s.n);
        args rest = {a->pos + 1, a->npos - 1, a->kwn, a->kwv, a->nkw};
        for (int i = 0; i < l->n; i++) l_push(x, r, run_filter(x, fname, l->v[i], &rest, line));
        return v_list(r);
    }
    if (!strcmp(f, "select") || !strcmp(f, "reject") || !strcmp(f, "selectattr") || !strcmp(f, "rejectattr")) {
        bool byattr = strlen(f) > 6, keep = f[0] == 's';
        jlist *l = as_iter(x, v, line), *r = l_new(x, l->n);
        int k = 0;
        jv at = v_none();
        if (byattr) {
            if (a->npos < 1) jfail(x, line, "%s: expected an attribute", f);
            at = a->pos[k++];
        }
        const char *test = NULL;
        if (a->npos > k) {
            if (a->pos[k].t != V_STR) jfail(x, line, "%s: the test name must be a string", f);
            test = astr(x, a->pos[k].s.p, a->pos[k].s.n);
            k++;
        }
        args rest = {a->pos + k, a->npos - k, NULL, NULL, 0};
        for (int i = 0; i < l->n; i++) {
            jv e = byattr ? attr_path(x, l->v[i], at, line) : l->v[i];
            bool t = test ? run_test(x, test, e, &rest, line) : v_truthy(&e);
            if (t == keep) l_push(x, r, l->v[i]);
        }
        return v_list(r);
    }
    if (!strcmp(f, "indent")) {
        jv w = arg(a, 0, "width", v_int(4)), first = arg(a, 1, "first", v_bool(false)), blank = arg(a, 2, "blank", v_bool(false));
        jv s = v_tostr(x, &v);
        tk_buf pad = {0}, b = {0};
        if (w.t == V_STR) tk_buf_put(&pad, w.s.p, w.s.n);
        else for (int64_t i = 0; i < (w.t == V_INT ? w.i : 4) && i < 256; i++) tk_buf_putc(&pad, ' ');
        size_t i = 0;
        bool first_line = true;
        while (i <= s.s.n) {
            const char *nl = memchr(s.s.p + i, '\n', s.s.n - i);
            size_t e = nl ? (size_t)(nl - s.s.p) : s.s.n;
            bool empty = e == i;
            if ((first_line ? v_truthy(&first) : true) && (!empty || v_truthy(&blank)) && !(first_line && !v_truthy(&first)))
                tk_buf_put(&b, pad.p, pad.len);
            tk_buf_put(&b, s.s.p + i, e - i);
            if (!nl) break;
            tk_buf_putc(&b, '\n');
            i = e + 1;
            first_line = false;
        }
        jv r = v_strdup(x, b.p ? b.p : "", b.len);
        tk_buf_free(&pad);
        tk_buf_free(&b);
        return r;
    }
    jfail(x, line, "filter '%s' is not supported", f);
}

static bool run_test(jx *x, const char *t, jv v, const args *a, int line) {
    jv o = arg(a, 0, "value", v_undef());
    if (!strcmp(t, "defined")) return v.t != V_UNDEF;
    if (!strcmp(t, "undefined")) return v.t == V_UNDEF;
    if (!strcmp(t, "none")) return v.t == V_NONE;
    if (!strcmp(t, "string")) return v.t == V_STR;
    if (!strcmp(t, "number")) return v.t == V_INT || v.t == V_FLOAT;
    if (!strcmp(t, "integer")) return v.t == V_INT;
    if (!strcmp(t, "float")) return v.t == V_FLOAT;
    if (!strcmp(t, "boolean")) return v.t == V_BOOL;
    if (!strcmp(t, "true")) return v.t == V_BOOL && v.b;
    if (!strcmp(t, "false")) return v.t == V_BOOL && !v.b;
    if (!strcmp(t, "mapping")) return v.t == V_DICT;
    if (!strcmp(t, "iterable")) return v.t == V_LIST || v.t == V_DICT || v.t == V_STR;
    if (!strcmp(t, "sequence")) return v.t == V_LIST || v.t == V_DICT || v.t == V_STR;
    if (!strcmp(t, "callable")) return v.t == V_FUNC;
    if (!strcmp(t, "odd") || !strcmp(t, "even")) {
        if (v.t != V_INT) jfail(x, line, "test '%s' needs an integer", t);
        return (v.i % 2 != 0) == (t[0] == 'o');
    }
    if (!strcmp(t, "divisibleby")) {
        if (v.t != V_INT || o.t != V_INT || o.i == 0) jfail(x, line, "divisibleby needs non-zero integers");
        return v.i % o.i == 0;
    }
    if (!strcmp(t, "eq") || !strcmp(t, "equalto") || !strcmp(t, "==")) return v_eq(&v, &o);
    if (!strcmp(t, "ne") || !strcmp(t, "!=")) return !v_eq(&v, &o);
    if (!strcmp(t, "lt") || !strcmp(t, "lessthan") || !strcmp(t, "<")) return v_cmp(x, &v, &o, line) < 0;
    if (!strcmp(t, "le") || !strcmp(t, "<=")) return v_cmp(x, &v, &o, line) <= 0;
    if (!strcmp(t, "gt") || !strcmp(t, "greaterthan") || !strcmp(t, ">")) return v_cmp(x, &v, &o, line) > 0;
    if (!strcmp(t, "ge") || !strcmp(t, ">=")) return v_cmp(x, &v, &o, line) >= 0;
    if (!strcmp(t, "in")) return v_in(x, &v, &o, line);
    if (!strcmp(t, "sameas")) return v.t == o.t && (v.t == V_NONE || v.t == V_UNDEF || (v.t == V_BOOL && v.b == o.b) || v_eq(&v, &o));
    if (!strcmp(t, "lower") || !strcmp(t, "upper")) {
        if (v.t != V_STR) return false;
        jv c = str_case(x, v, t[0] == 'l' ? 0 : 1);
        return v_eq(&c, &v);
    }
    jfail(x, line, "test '%s' is not supported", t);
}

static void assign(jx *x, node *tgt, jv v, int line) {
    if (tgt->kind == N_NAME) { scope_set(x, tgt->str, v); return; }
    if (tgt->kind == N_ATTR) {
        jv ns = eval(x, tgt->a);
        if (ns.t != V_DICT || !ns.d->ns) jfail(x, line, "cannot assign attribute on non-namespace object");
        d_set(x, ns.d, v_cstr(tgt->str), v);
        return;
    }
    /* tuple unpacking */
    jlist *l = as_iter(x, v, line);
    if (l->n != tgt->n_kids)
        jfail(x, line, "cannot unpack %d values into %d names", l->n, tgt->n_kids);
    for (int i = 0; i < tgt->n_kids; i++) assign(x, tgt->kids[i], l->v[i], line);
}

static jv eval(jx *x, node *n) {
    tick(x, n->line);
    if (++x->depth > MAX_DEPTH) jfail(x, n->line, "evaluation nested too deeply");
    jv r;
    switch (n->kind) {
    case N_LIT: r = n->lit; break;
    case N_NAME: r = lookup(x, n->str); break;
    case N_ATTR: r = getattr(x, eval(x, n->a), n->str, n->line); break;
    case N_ITEM: { jv o = eval(x, n->a); r = getitem(x, o, eval(x, n->b), n->line); break; }
    case N_SLICE: r = do_slice(x, eval(x, n->a), n); break;
    case N_CALL: {
        jv f = eval(x, n->a);
        if (f.t == V_UNDEF) {
            const char *nm = n->a->kind == N_NAME ? n->a->str : n->a->kind == N_ATTR ? n->a->str : "?";
            jfail(x, n->line, "'%s' is undefined or not callable", nm);
        }
        args a;
        eval_args(x, n, &a, 0, v_undef());
        r = call(x, f, &a, n->line);
        break;
    }
    case N_FILTER: {
        jv v = eval(x, n->a);
        args a;
        eval_args(x, n, &a, 0, v_undef());
        r = run_filter(x, n->str, v, &a, n->line);
        break;
    }
    case N_TEST: {
        jv v = eval(x, n->a);
        args a;
        eval_args(x, n, &a, 0, v_undef());
        r = v_bool(run_test(x, n->str, v, &a, n->line) != (n->op != 0));
        break;
    }
    case N_NOT: { jv v = eval(x, n->a); r = v_bool(!v_truthy(&v)); break; }
    case N_NEG: case N_POS: {
        jv v = eval(x, n->a);
        if (v.t == V_INT) r = v_int(n->kind == N_NEG ? (int64_t)(0 - (uint64_t)v.i) : v.i);
        else if (v.t == V_FLOAT) r = v_float(n->kind == N_NEG ? -v.f : v.f);
        else if (v.t == V_BOOL) r = v_int(n->kind == N_NEG ? -(int)v.b : v.b);
        else jfail(x, n->line, "bad operand type for unary -: '%s'", v_typename(&v));
        break;
    }
    case N_AND: { jv a = eval(x, n->a); r = v_truthy(&a) ? eval(x, n->b) : a; break; }
    case N_OR: { jv a = eval(x, n->a); r = v_truthy(&a) ? a : eval(x, n->b); break; }
    case N_COND: { jv c = eval(x, n->a); r = v_truthy(&c) ? eval(x, n->b) : n->c ? eval(x, n->c) : v_undef(); break; }
    case N_BIN: {
        jv a = eval(x, n->a), b = eval(x, n->b);
        switch (n->op) {
        case OP2('=', '='): r = v_bool(v_eq(&a, &b)); break;
        case OP2('!', '='): r = v_bool(!v_eq(&a, &b)); break;
        case '<': r = v_bool(v_cmp(x, &a, &b, n->line) < 0); break;
        case '>': r = v_bool(v_cmp(x, &a, &b, n->line) > 0); break;
        case OP2('<', '='): r = v_bool(v_cmp(x, &a, &b, n->line) <= 0); break;
        case OP2('>', '='): r = v_bool(v_cmp(x, &a, &b, n->line) >= 0); break;
        case 'i': r = v_bool(v_in(x, &a, &b, n->line)); break;
        case 'I': r = v_bool(!v_in(x, &a, &b, n->line)); break;
        default: r = arith(x, n->op, a, b, n->line);
        }
        break;
    }
    case N_LIST: case N_TUPLE: {
        jlist *l = l_new(x, n->n_kids);
        l->tuple = n->kind == N_TUPLE;
        for (int i = 0; i < n->n_kids; i++) l_push(x, l, eval(x, n->kids[i]));
        r = v_list(l);
        break;
    }
    case N_DICT: {
        jdict *d = d_new(x);
        for (int i = 0; i + 1 < n->n_kids; i += 2) d_set(x, d, eval(x, n->kids[i]), eval(x, n->kids[i + 1]));
        r = v_dict(d);
        break;
    }
    default: jfail(x, n->line, "internal: not an expression");
    }
    x->depth--;
    return r;
}

static void emit(jx *x, const char *s, size_t n, int line) {
    tk_buf_put(&x->out, s, n);
    if (x->out.len > MAX_OUT) jfail(x, line, "output larger than %u bytes", MAX_OUT);
    if (x->out.oom) { clv_fail(x->st, CLV_ENOMEM, "chat template: out of memory"); longjmp(x->jb, 1); }
}

static void exec_node(jx *x, node *n);

static void exec_body(jx *x, node *b) {
    for (int i = 0; i < b->n_kids && !x->loop_ctl; i++) exec_node(x, b->kids[i]);
}

static void exec_for(jx *x, node *n) {
    jv it = eval(x, n->b);
    jlist *src = as_iter(x, it, n->line);
    /* the `if` filter applies before loop.* are computed */
    jlist *l = src;
    if (n->c) {
        l = l_new(x, src->n);
        scope_push(x);
        for (int i = 0; i < src->n; i++) {
            assign(x, n->a, src->v[i], n->line);
            jv c = eval(x, n->c);
            if (v_truthy(&c)) l_push(x, l, src->v[i]);
        }
        x->n_scopes--;
    }
    if (l->n == 0) {
        if (n->d) exec_body(x, n->d);
        return;
    }
    scope_push(x);
    for (int i = 0; i < l->n; i++) {
        tick(x, n->line);
        jdict *loop = d_new(x);
        d_set(x, loop, v_cstr("index"), v_int(i + 1));
        d_set(x, loop, v_cstr("index0"), v_int(i));
        d_set(x, loop, v_cstr("revindex"), v_int(l->n - i));
        d_set(x, loop, v_cstr("revindex0"), v_int(l->n - i - 1));
        d_set(x, loop, v_cstr("first"), v_bool(i == 0));
        d_set(x, loop, v_cstr("last"), v_bool(i == l->n - 1));
        d_set(x, loop, v_cstr("length"), v_int(l->n));
        d_set(x, loop, v_cstr("depth"), v_int(1));
        d_set(x, loop, v_cstr("depth0"), v_int(0));
        d_set(x, loop, v_cstr("previtem"), i > 0 ? l->v[i - 1] : v_undef());
        d_set(x, loop, v_cstr("nextitem"), i + 1 < l->n ? l->v[i + 1] : v_undef());
        scope_set(x, "loop", v_dict(loop));
        assign(x, n->a, l->v[i], n->line);
        exec_body(x, n->kids[0]);
        if (x->loop_ctl == 1) { x->loop_ctl = 0; break; }
        x->loop_ctl = 0;
    }
    x->n_scopes--;
}

static void exec_node(jx *x, node *n) {
    tick(x, n->line);
    if (++x->depth > MAX_DEPTH) jfail(x, n->line, "blocks nested too deeply");
    switch (n->kind) {
    case N_TEXT: emit(x, n->lit.s.p, n->lit.s.n, n->line); break;
    case N_OUT: {
        jv v = eval(x, n->a);
        tk_buf b = {0};
        v_to_buf(&b, &v, false);
        if (b.oom) { tk_buf_free(&b); clv_fail(x->st, CLV_ENOMEM, "chat template: out of memory"); longjmp(x->jb, 1); }
        emit(x, b.p ? b.p : "", b.len, n->line);
        tk_buf_free(&b);
        break;
    }
    case N_IF: {
        int i;
        for (i = 0; i < n->n_kids; i++) {
            jv c = eval(x, n->kids[i]);
            if (v_truthy(&c)) { exec_body(x, n->kwv[i]); break; }
        }
        if (i == n->n_kids && n->a) exec_body(x, n->a);
        break;
    }
    case N_FOR: exec_for(x, n); break;
    case N_SET: assign(x, n->a, eval(x, n->b), n->line); break;
    case N_SETBLOCK: {
        capture_begin(x, n->line);
        exec_body(x, n->b);
        scope_set(x, n->a->str, capture_end(x));
        break;
    }
    case N_MACRO: {
        jv f = mk_func(x, F_MACRO, n->str, v_undef());
        f.fn->macro = n;
        scope_set(x, n->str, f);
        break;
    }
    case N_BREAK: x->loop_ctl = 1; break;
    case N_CONTINUE: x->loop_ctl = 2; break;
    case N_BODY: exec_body(x, n); break;
    default: jfail(x, n->line, "internal: not a statement");
    }
    x->depth--;
}

int clv_jinja_render(const char *tmpl, size_t len, const cJSON *vars, char **out, size_t *out_len, clv_status *st) {
    *out = NULL;
    if (out_len) *out_len = 0;
    jx *x = calloc(1, sizeof *x);
    if (!x) return clv_fail(st, CLV_ENOMEM, "out of memory");
    x->st = st;
    int rc = 0;
    if (setjmp(x->jb)) {
        rc = st->code ? st->code : CLV_EINVAL;
        tk_buf_free(&x->out);
        while (x->n_saved > 0) tk_buf_free(&x->saved[--x->n_saved]);
        while (x->n_tmps > 0) tk_buf_free(x->tmps[--x->n_tmps]);
        goto done;
    }
    if (vars && !cJSON_IsObject(vars)) jfail(x, 0, "variables must be a JSON object");
    lex(x, tmpl, len);
    x->pos = 0;
    node *root = p_body(x, NULL, NULL);
    jv g = vars ? from_cjson(x, vars, 0) : v_dict(d_new(x));
    x->globals = g.d;
    x->depth = 0;
    scope_push(x);
    exec_body(x, root);
    if (x->loop_ctl) jfail(x, 0, "break or continue outside a loop");
    tk_buf_put(&x->out, "", 0);
    if (x->out.oom) jfail(x, 0, "out of memory");
    *out = x->out.p ? x->out.p : strdup("");
    if (out_len) *out_len = x->out.len;
    if (!*out) rc = clv_fail(st, CLV_ENOMEM, "out of memory");
done:
    while (x->arena) {
        ablock *b = x->arena->next;
        free(x->arena);
        x->arena = b;
    }
    free(x);
    return rc;
}
