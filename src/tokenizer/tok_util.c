/* tokenizer helpers: byte buffers, UTF-8, hash maps, patterns, the GPT-2 byte map. */
#include <string.h>
#include <utf8proc.h>

#include "tok_internal.h"

void tk_buf_put(tk_buf *b, const void *s, size_t n) {
    if (b->oom || n == 0) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = true; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void tk_buf_free(tk_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- UTF-8 ----------------------------------------------------------------------- */
/* Number of bytes of s[0..n) that form a valid prefix of a UTF-8 sequence, and
 * whether that sequence is complete: returns the full length if complete, else
 * -(length of the maximal valid prefix) (at least -1). */
static int utf8_scan(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    int need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) { need = 2; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) need = 2;
    else if (c == 0xED) { need = 2; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) need = 2;
    else if (c == 0xF0) { need = 3; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) { need = 3; hi = 0x8F; }
    else return -1;
    int k = 1;
    for (; k <= need; k++) {
        if ((size_t)k >= n) return -k;
        unsigned char d = s[k];
        if (d < lo || d > hi) return -k;
        lo = 0x80;
        hi = 0xBF;
    }
    return need + 1;
}

int tk_utf8_valid_at(const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    int r = utf8_scan(s, n);
    return r > 0 ? r : 0;
}

size_t tk_utf8_first_invalid(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int r = s[i] < 0x80 ? 1 : utf8_scan(s + i, n - i);
        if (r <= 0) return i;
        i += (size_t)r;
    }
    return n;
}

int32_t tk_utf8_decode(const unsigned char *s, int *len) {
    unsigned char c = s[0];
    if (c < 0x80) { *len = 1; return c; }
    if (c < 0xE0) { *len = 2; return ((c & 0x1F) << 6) | (s[1] & 0x3F); }
    if (c < 0xF0) { *len = 3; return ((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F); }
    *len = 4;
    return ((c & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

int tk_utf8_encode(int32_t c, char out[4]) {
    if (c < 0x80) { out[0] = (char)c; return 1; }
    if (c < 0x800) { out[0] = (char)(0xC0 | (c >> 6)); out[1] = (char)(0x80 | (c & 0x3F)); return 2; }
    if (c < 0x10000) {
        out[0] = (char)(0xE0 | (c >> 12)); out[1] = (char)(0x80 | ((c >> 6) & 0x3F)); out[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (c >> 18)); out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3F)); out[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

void tk_utf8_lossy(tk_buf *b, const unsigned char *s, size_t n) {
    size_t i = 0, run = 0; /* run: start of the current valid stretch */
    while (i < n) {
        if (s[i] < 0x80) { i++; continue; }
        int r = utf8_scan(s + i, n - i);
        if (r > 0) { i += (size_t)r; continue; }
        tk_buf_put(b, s + run, i - run);
        tk_buf_put(b, "\xEF\xBF\xBD", 3);
        i += (size_t)(-r);
        run = i;
    }
    tk_buf_put(b, s + run, n - run);
}

bool tk_is_space(int32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool tk_is_word(int32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (c == 0x200C || c == 0x200D) return true;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}

bool tk_is_numeric(int32_t c) {
    if (c < 0x80) return c >= '0' && c <= '9';
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

/* ---- hash maps --------------------------------------------------------------------- */
uint64_t tk_hash(const void *s, size_t n) { /* FNV-1a, then a final mix */
    const unsigned char *p = s;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 32);
}

static bool smap_grow(tk_smap *m) {
    uint32_t cap = m->cap ? m->cap * 2 : 64;
    tk_smap_ent *e = calloc(cap, sizeof *e);
    if (!e) return false;
    for (uint32_t i = 0; i < m->cap; i++) {
        if (!m->e[i].s) continue;
        uint32_t j = (uint32_t)tk_hash(m->e[i].s, m->e[i].len) & (cap - 1);
        while (e[j].s) j = (j + 1) & (cap - 1);
        e[j] = m->e[i];
    }
    free(m->e);
    m->e = e;
    m->cap = cap;
    return true;
}

bool tk_smap_put(tk_smap *m, const char *s, uint32_t len, int32_t val) {
    if ((m->n + 1) * 4 > m->cap * 3 && !smap_grow(m)) return false;
    uint32_t j = (uint32_t)tk_hash(s, len) & (m->cap - 1);
    while (m->e[j].s) {
        if (m->e[j].len == len && memcmp(m->e[j].s, s, len) == 0) { m->e[j].val = val; return true; }
        j = (j + 1) & (m->cap - 1);
    }
    m->e[j] = (tk_smap_ent){s, len, val};
    m->n++;
    return true;
}

int32_t tk_smap_get(const tk_smap *m, const char *s, uint32_t len) {
    if (!m->cap) return -1;
    uint32_t j = (uint32_t)tk_hash(s, len) & (m->cap - 1);
    while (m->e[j].s) {
        if (m->e[j].len == len && memcmp(m->e[j].s, s, len) == 0) return m->e[j].val;
        j = (j + 1) & (m->cap - 1);
    }
    return -1;
}

void tk_smap_free(tk_smap *m) {
    free(m->e);
    memset(m, 0, sizeof *m);
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static bool mmap_grow(tk_mmap *m) {
    uint32_t cap = m->cap ? m->cap * 2 : 64;
    tk_mmap_ent *e = calloc(cap, sizeof *e);
    if (!e) return false;
    for (uint32_t i = 0; i < m->cap; i++) {
        if (!m->e[i].key) continue;
        uint32_t j = (uint32_t)mix64(m->e[i].key) & (cap - 1);
        while (e[j].key) j = (j + 1) & (cap - 1);
        e[j] = m->e[i];
    }
    free(m->e);
    m->e = e;
    m->cap = cap;
    return true;
}

bool tk_mmap_put(tk_mmap *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
    if ((m->n + 1) * 4 > m->cap * 3 && !mmap_grow(m)) return false;
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint32_t j = (uint32_t)mix64(key) & (m->cap - 1);
    while (m->e[j].key) {
        if (m->e[j].key == key) { m->e[j].rank = rank; m->e[j].id = id; return true; }
        j = (j + 1) & (m->cap - 1);
    }
    m->e[j] = (tk_mmap_ent){key, rank, id};
    m->n++;
    return true;
}

const tk_mmap_ent *tk_mmap_get(const tk_mmap *m, int32_t a, int32_t b) {
    if (!m->cap) return NULL;
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint32_t j = (uint32_t)mix64(key) & (m->cap - 1);
    while (m->e[j].key) {
        if (m->e[j].key == key) return &m->e[j];
        j = (j + 1) & (m->cap - 1);
    }
    return NULL;
}

void tk_mmap_free(tk_mmap *m) {
    free(m->e);
    memset(m, 0, sizeof *m);
}

/* ---- patterns ------------------------------------------------------------------------- */
bool tk_pattern_find(const tk_pattern *p, pcre2_match_data *md, const char *s, size_t n, size_t from, size_t *ms,
                     size_t *me) {
    if (from > n) return false;
    if (!p->re) {
        if (p->lit_len == 0 || p->lit_len > n - from) return false;
        const char *f = memmem(s + from, n - from, p->lit, p->lit_len);
        if (!f) return false;
        *ms = (size_t)(f - s);
        *me = *ms + p->lit_len;
        return true;
    }
    int rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, md, NULL);
    /* the JIT's stack is small (32 KB): on long runs of one class (spaces) it can
     * give up, and the interpreter (heap-based) still can */
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH)
        rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
    if (rc < 0) return false;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    if (ov[0] > ov[1] || ov[1] > n) return false; /* \K tricks: ignore */
    *ms = ov[0];
    *me = ov[1];
    return true;
}

/* ---- GPT-2 byte <-> unicode map --------------------------------------------------------- */
const uint16_t tk_byte_to_cp[256] = {
    256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271,
    272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283, 284, 285, 286, 287,
    288, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
    48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79,
    80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95,
    96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111,
    112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 289,
    290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305,
    306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321,
    322, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 323, 174, 175,
    176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191,
    192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207,
    208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223,
    224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239,
    240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255,
};

int tk_cp_to_byte(int32_t cp) {
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255)) return cp;
    if (cp < 256 || cp > 323) return -1;
    /* 256.. are the remaining bytes in increasing order */
    int k = cp - 256;
    for (int b = 0; b < 256; b++)
        if (tk_byte_to_cp[b] >= 256 && k-- == 0) return b;
    return -1;
}

/* ---- trie ------------------------------------------------------------------------------ */
static int32_t trie_new_node(tk_trie *tr, unsigned char byte) {
    if (tr->len == tr->cap) {
        int32_t cap = tr->cap ? tr->cap * 2 : 64;
        tk_trie_node *n = realloc(tr->n, (size_t)cap * sizeof *n);
        if (!n) return -1;
        tr->n = n;
        tr->cap = cap;
    }
    tr->n[tr->len] = (tk_trie_node){-1, -1, -1, byte};
    return tr->len++;
}

int tk_trie_add(tk_trie *tr, const char *s, uint32_t len, int32_t value) {
    if (tr->len == 0 && trie_new_node(tr, 0) < 0) return -1;
    int32_t node = 0;
    for (uint32_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int32_t ch = tr->n[node].child, found = -1;
        while (ch >= 0) {
            if (tr->n[ch].byte == c) { found = ch; break; }
            ch = tr->n[ch].sibling;
        }
        if (found < 0) {
            found = trie_new_node(tr, c);
            if (found < 0) return -1;
            tr->n[found].sibling = tr->n[node].child;
            tr->n[node].child = found;
        }
        node = found;
    }
    tr->n[node].value = value;
    return 0;
}
