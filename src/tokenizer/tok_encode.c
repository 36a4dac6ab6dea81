/* Encoding: text -> ids, step by step as `tokenizers` does it (see tokenizer.h).
 *
 * A piece is a byte range of one arena (offsets, so the arena may grow) or an
 * added token already decided. Each stage maps the list of pieces to a new
 * list; empty pieces are dropped after every split, as `tokenizers` does. */
#include <string.h>
#include <utf8proc.h>

#include "tok_internal.h"

typedef struct piece {
    uint32_t off, len;
    int32_t id;  /* >= 0: an added token, left alone by later stages */
    bool origin; /* starts at offset 0 of the original text (Metaspace "first") */
} piece;

typedef struct pvec {
    piece *p;
    int n, cap;
} pvec;

typedef struct mt { /* a stretch of a piece: a pattern match or the text between matches */
    uint32_t s, e;
    bool m;
} mt;

typedef struct heap_ent {
    int32_t rank, pos, id;
} heap_ent;

typedef struct ectx {
    const clv_tokenizer *t;
    tk_buf arena;
    pcre2_match_data *md;
    mt *m;
    int nm, cap_m;
    /* BPE word scratch */
    int32_t *sc, *sprev, *snext, *slen;
    heap_ent *heap;
    int cap_sym, n_heap, cap_heap;
    int32_t *ids;
    int n_ids, cap_ids;
    bool oom;
} ectx;

static void pv_push(ectx *e, pvec *v, piece p) {
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 64;
        piece *np = realloc(v->p, (size_t)cap * sizeof *np);
        if (!np) { e->oom = true; return; }
        v->p = np;
        v->cap = cap;
    }
    v->p[v->n++] = p;
}

static void m_push(ectx *e, uint32_t s, uint32_t en, bool m) {
    if (e->nm == e->cap_m) {
        int cap = e->cap_m ? e->cap_m * 2 : 64;
        mt *nm = realloc(e->m, (size_t)cap * sizeof *nm);
        if (!nm) { e->oom = true; return; }
        e->m = nm;
        e->cap_m = cap;
    }
    e->m[e->nm++] = (mt){s, en, m};
}

static void id_push(ectx *e, int32_t id) {
    if (e->n_ids == e->cap_ids) {
        int cap = e->cap_ids ? e->cap_ids * 2 : 256;
        int32_t *n = realloc(e->ids, (size_t)cap * sizeof *n);
        if (!n) { e->oom = true; return; }
        e->ids = n;
        e->cap_ids = cap;
    }
    e->ids[e->n_ids++] = id;
}

static inline int char_len(const char *s, size_t n) {
    int l = tk_utf8_valid_at((const unsigned char *)s, n);
    return l ? l : 1;
}

/* Append text to the arena, returning its offset. */
static uint32_t arena_put(ectx *e, const char *s, size_t n) {
    uint32_t off = (uint32_t)e->arena.len;
    tk_buf_put(&e->arena, s, n);
    if (e->arena.oom || e->arena.len > UINT32_MAX / 2) e->oom = true;
    return off;
}

/* ---- matches: the covering list of (range, is_match) that `tokenizers` builds ---------- */
/* Regex / literal, with Oniguruma's find_iter rule for empty matches. */
static void find_pattern(ectx *e, const tk_pattern *p, pcre2_match_data *md, const char *s, size_t n) {
    e->nm = 0;
    if (n == 0) { m_push(e, 0, 0, false); return; }
    size_t last_end = 0, last_match_end = 0, prev = 0;
    bool have_last = false;
    while (last_end <= n) {
        size_t ms, me;
        if (!tk_pattern_find(p, md, s, n, last_end, &ms, &me)) break;
        if (ms == me && have_last && last_match_end == me) {
            if (last_end >= n) break;
            last_end += (size_t)char_len(s + last_end, n - last_end);
            continue;
        }
        last_end = me;
        have_last = true;
        last_match_end = me;
        if (prev != ms) m_push(e, (uint32_t)prev, (uint32_t)ms, false);
        m_push(e, (uint32_t)ms, (uint32_t)me, true);
        prev = me;
    }
    if (prev != n) m_push(e, (uint32_t)prev, (uint32_t)n, false);
}

/* One match per character for which pred holds (Metaspace's char, Digits). */
static void find_chars(ectx *e, const char *s, size_t n, bool (*pred)(int32_t, int32_t), int32_t arg) {
    e->nm = 0;
    if (n == 0) { m_push(e, 0, 0, false); return; }
    size_t last = 0, i = 0;
    while (i < n) {
        int l;
        int32_t c = tk_utf8_valid_at((const unsigned char *)s + i, n - i) ? tk_utf8_decode((const unsigned char *)s + i, &l)
                                                                          : (l = 1, -1);
        if (pred(c, arg)) {
            if (last < i) m_push(e, (uint32_t)last, (uint32_t)i, false);
            m_push(e, (uint32_t)i, (uint32_t)(i + (size_t)l), true);
            last = i + (size_t)l;
        }
        i += (size_t)l;
    }
    if (n > last) m_push(e, (uint32_t)last, (uint32_t)n, false);
}

static bool pred_eq(int32_t c, int32_t arg) { return c == arg; }
static bool pred_numeric(int32_t c, int32_t arg) { (void)arg; return c >= 0 && tk_is_numeric(c); }

/* Apply a split behaviour to e->m (for piece pc) and push the resulting pieces. */
static void split_by(ectx *e, const piece *pc, tk_split_behavior b, bool invert, pvec *out) {
    int n = e->nm;
    if (invert)
        for (int i = 0; i < n; i++) e->m[i].m = !e->m[i].m;
    /* fold into (range, remove) in place: w is the write index */
    int w = 0;
    if (b == TK_SPLIT_ISOLATED) {
        for (int i = 0; i < n; i++) e->m[i].m = false;
        w = n;
    } else if (b == TK_SPLIT_REMOVED) {
        w = n;
    } else if (b == TK_SPLIT_CONTIGUOUS) {
        bool prev = false;
        for (int i = 0; i < n; i++) {
            bool is = e->m[i].m;
            if (is == prev && w > 0) e->m[w - 1].e = e->m[i].e;
            else e->m[w++] = (mt){e->m[i].s, e->m[i].e, false};
            prev = is;
        }
    } else if (b == TK_SPLIT_MERGED_PREV) {
        bool prev = false;
        for (int i = 0; i < n; i++) {
            bool is = e->m[i].m;
            if (is && !prev && w > 0) e->m[w - 1].e = e->m[i].e;
            else e->m[w++] = (mt){e->m[i].s, e->m[i].e, false};
            prev = is;
        }
    } else { /* merged with next: the same fold from the right */
        bool prev = false;
        w = n;
        int r = n; /* results written at [r, n) growing leftwards */
        for (int i = n - 1; i >= 0; i--) {
            bool is = e->m[i].m;
            if (is && !prev && r < n) e->m[r].s = e->m[i].s;
            else e->m[--r] = (mt){e->m[i].s, e->m[i].e, false};
            prev = is;
        }
        memmove(e->m, e->m + r, (size_t)(n - r) * sizeof *e->m);
        w = n - r;
    }
    for (int i = 0; i < w; i++) {
        const mt *x = &e->m[i];
        if (x->m || x->e <= x->s) continue; /* removed, or empty */
        pv_push(e, out, (piece){pc->off + x->s, x->e - x->s, -1, pc->origin && x->s == 0});
    }
}

/* ---- added tokens ------------------------------------------------------------------------ */
static int32_t cp_at(const char *s, size_t n, size_t i, int *l) {
    if (!tk_utf8_valid_at((const unsigned char *)s + i, n - i)) { *l = 1; return -1; }
    return tk_utf8_decode((const unsigned char *)s + i, l);
}
static int32_t cp_before(const char *s, size_t i) { /* the character ending at s[i] */
    size_t j = i;
    while (j > 0 && ((unsigned char)s[j - 1] & 0xC0) == 0x80 && i - j < 3) j--;
    if (j > 0) j--;
    int l;
    return cp_at(s, i, j, &l);
}

static void split_added(ectx *e, const tk_trie *tr, const piece *pc, pvec *out) {
    const clv_tokenizer *t = e->t;
    if (tr->len == 0) { pv_push(e, out, *pc); return; }
    const char *s = e->arena.p + pc->off;
    size_t n = pc->len, start_offset = 0, pos = 0;
    while (pos < n) {
        /* leftmost-longest: the first position with any match, its longest one */
        int32_t node = 0, best = -1;
        size_t best_end = 0;
        for (size_t j = pos; j < n; j++) {
            int32_t ch = tr->n[node].child;
            while (ch >= 0 && tr->n[ch].byte != (unsigned char)s[j]) ch = tr->n[ch].sibling;
            if (ch < 0) break;
            node = ch;
            if (tr->n[node].value >= 0) { best = tr->n[node].value; best_end = j + 1; }
        }
        if (best < 0) { pos++; continue; }
        size_t start = pos, stop = best_end;
        pos = best_end;
        const tk_added *a = &t->added[best];
        if (a->single_word) {
            int l;
            bool start_space = start == 0 || !tk_is_word(cp_before(s, start));
            bool stop_space = stop == n || !tk_is_word(cp_at(s, n, stop, &l));
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                int32_t c = cp_before(s, ns);
                if (c < 0 || !tk_is_space(c)) break;
                int l;
                char tmp[4];
                ns -= (size_t)(l = tk_utf8_encode(c, tmp));
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (stop < n) {
                int l;
                int32_t c = cp_at(s, n, stop, &l);
                if (c < 0 || !tk_is_space(c)) break;
                stop += (size_t)l;
            }
        }
        if (start_offset < start)
            pv_push(e, out, (piece){pc->off + (uint32_t)start_offset, (uint32_t)(start - start_offset), -1,
                                    pc->origin && start_offset == 0});
        pv_push(e, out, (piece){pc->off + (uint32_t)start, (uint32_t)(stop - start), a->id, pc->origin && start == 0});
        start_offset = stop;
    }
    if (start_offset < n)
        pv_push(e, out, (piece){pc->off + (uint32_t)start_offset, (uint32_t)(n - start_offset), -1,
                                pc->origin && start_offset == 0});
}

/* ---- normalizers ---------------------------------------------------------------------------- */
static int norm_unicode(tk_buf *out, const char *s, size_t n, int opts, clv_status *st) {
    utf8proc_uint8_t *r = NULL;
    utf8proc_ssize_t k = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &r, (utf8proc_option_t)opts);
    if (k < 0) return clv_fail(st, CLV_EINVAL, "normalizer: %s", utf8proc_errmsg(k));
    tk_buf_put(out, r, (size_t)k);
    free(r);
    return 0;
}

static void replace_all(tk_buf *out, const tk_pattern *p, pcre2_match_data *md, const char *s, size_t n,
                        const char *with, size_t with_len) {
    size_t last_end = 0, last_match_end = 0, prev = 0;
    bool have_last = false;
    while (last_end <= n) {
        size_t ms, me;
        if (!tk_pattern_find(p, md, s, n, last_end, &ms, &me)) break;
        if (ms == me && have_last && last_match_end == me) {
            if (last_end >= n) break;
            last_end += (size_t)char_len(s + last_end, n - last_end);
            continue;
        }
        last_end = me;
        have_last = true;
        last_match_end = me;
        tk_buf_put(out, s + prev, ms - prev);
        tk_buf_put(out, with, with_len);
        prev = me;
    }
    tk_buf_put(out, s + prev, n - prev);
}

int tk_normalize(const clv_tokenizer *t, const char *s, size_t n, tk_buf *out, pcre2_match_data *md, clv_status *st) {
    tk_buf a = {0}, b = {0};
    tk_buf_put(&a, s, n);
    if (n == 0) tk_buf_put(&a, "", 0);
    for (int i = 0; i < t->n_norms; i++) {
        const tk_norm *nm = &t->norms[i];
        const char *in = a.p ? a.p : "";
        size_t len = a.len;
        b.len = 0;
        int rc = 0;
        switch (nm->kind) {
        case TK_NORM_NFC: rc = norm_unicode(&b, in, len, UTF8PROC_STABLE | UTF8PROC_COMPOSE, st); break;
        case TK_NORM_NFD: rc = norm_unicode(&b, in, len, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE, st); break;
        case TK_NORM_NFKC: rc = norm_unicode(&b, in, len, UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT, st); break;
        case TK_NORM_NFKD: rc = norm_unicode(&b, in, len, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, st); break;
        case TK_NORM_PREPEND:
            if (len) tk_buf_put(&b, nm->str, nm->str_len);
            tk_buf_put(&b, in, len);
            break;
        case TK_NORM_REPLACE: replace_all(&b, &nm->pat, md, in, len, nm->str, nm->str_len); break;
        case TK_NORM_STRIP: {
            size_t lo = 0, hi = len;
            int l;
            if (nm->left)
                while (lo < hi) {
                    int32_t c = cp_at(in, len, lo, &l);
                    if (c < 0 || !tk_is_space(c)) break;
                    lo += (size_t)l;
                }
            if (nm->right)
                while (hi > lo) {
                    int32_t c = cp_before(in, hi);
                    char tmp[4];
                    if (c < 0 || !tk_is_space(c)) break;
                    hi -= (size_t)tk_utf8_encode(c, tmp);
                }
            tk_buf_put(&b, in + lo, hi - lo);
            break;
        }
        }
        if (rc || b.oom) {
            tk_buf_free(&a);
            tk_buf_free(&b);
            return rc ? rc : clv_fail(st, CLV_ENOMEM, "out of memory");
        }
        tk_buf tmp = a;
        a = b;
        b = tmp;
    }
    tk_buf_free(&b);
    if (a.oom) { tk_buf_free(&a); return clv_fail(st, CLV_ENOMEM, "out of memory"); }
    tk_buf_free(out);
    *out = a;
    return 0;
}

/* ---- pre-tokenizers ------------------------------------------------------------------------------ */
static void pre_one(ectx *e, const tk_pre *p, const piece *pc, pvec *out, tk_buf *tmp) {
    const clv_tokenizer *t = e->t;
    switch (p->kind) {
    case TK_PRE_BYTELEVEL: {
        piece q = *pc;
        if (p->add_prefix_space && !(q.len > 0 && e->arena.p[q.off] == ' ')) {
            tmp->len = 0;
            tk_buf_putc(tmp, ' ');
            tk_buf_put(tmp, e->arena.p + q.off, q.len);
            if (tmp->oom) { e->oom = true; return; }
            q.off = arena_put(e, tmp->p, tmp->len);
            q.len = (uint32_t)tmp->len;
        }
        pvec subs = {0};
        if (p->use_regex) {
            find_pattern(e, &(tk_pattern){.re = t->bytelevel_re}, e->md, e->arena.p + q.off, q.len);
            split_by(e, &q, TK_SPLIT_ISOLATED, false, &subs);
        } else if (q.len)
            pv_push(e, &subs, q);
        for (int i = 0; i < subs.n && !e->oom; i++) {
            tmp->len = 0;
            for (uint32_t k = 0; k < subs.p[i].len; k++) {
                char u[4];
                int l = tk_utf8_encode(tk_byte_to_cp[(unsigned char)e->arena.p[subs.p[i].off + k]], u);
                tk_buf_put(tmp, u, (size_t)l);
            }
            if (tmp->oom) { e->oom = true; break; }
            uint32_t off = arena_put(e, tmp->p, tmp->len);
            pv_push(e, out, (piece){off, (uint32_t)tmp->len, -1, subs.p[i].origin});
        }
        free(subs.p);
        return;
    }
    case TK_PRE_SPLIT:
        find_pattern(e, &p->pat, e->md, e->arena.p + pc->off, pc->len);
        split_by(e, pc, p->behavior, p->invert, out);
        return;
    case TK_PRE_METASPACE: {
        tmp->len = 0;
        const char *s = e->arena.p + pc->off;
        bool starts = pc->len >= (uint32_t)p->repl_len && !memcmp(s, p->repl, (size_t)p->repl_len);
        bool starts_space = pc->len > 0 && s[0] == ' '; /* becomes the replacement */
        if ((p->scheme == TK_PREPEND_ALWAYS || (p->scheme == TK_PREPEND_FIRST && pc->origin)) && !starts && !starts_space)
            tk_buf_put(tmp, p->repl, (size_t)p->repl_len);
        for (uint32_t k = 0; k < pc->len; k++) {
            if (s[k] == ' ') tk_buf_put(tmp, p->repl, (size_t)p->repl_len);
            else tk_buf_putc(tmp, s[k]);
        }
        if (tmp->oom) { e->oom = true; return; }
        piece q = {arena_put(e, tmp->p, tmp->len), (uint32_t)tmp->len, -1, pc->origin};
        if (p->split) {
            find_chars(e, e->arena.p + q.off, q.len, pred_eq, p->repl_cp);
            split_by(e, &q, TK_SPLIT_MERGED_NEXT, false, out);
        } else if (q.len)
            pv_push(e, out, q);
        return;
    }
    case TK_PRE_DIGITS:
        find_chars(e, e->arena.p + pc->off, pc->len, pred_numeric, 0);
        split_by(e, pc, p->individual_digits ? TK_SPLIT_ISOLATED : TK_SPLIT_CONTIGUOUS, false, out);
        return;
    }
}

/* ---- BPE ---------------------------------------------------------------------------------------- */
static bool heap_less(const heap_ent *a, const heap_ent *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(ectx *e, heap_ent x) {
    if (e->n_heap == e->cap_heap) {
        int cap = e->cap_heap ? e->cap_heap * 2 : 64;
        heap_ent *h = realloc(e->heap, (size_t)cap * sizeof *h);
        if (!h) { e->oom = true; return; }
        e->heap = h;
        e->cap_heap = cap;
    }
    int i = e->n_heap++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!heap_less(&x, &e->heap[p])) break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = x;
}

static heap_ent heap_pop(ectx *e) {
    heap_ent top = e->heap[0], x = e->heap[--e->n_heap];
    int i = 0, n = e->n_heap;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        const heap_ent *best = &x;
        if (l < n && heap_less(&e->heap[l], best)) { m = l; best = &e->heap[l]; }
        if (r < n && heap_less(&e->heap[r], best)) { m = r; }
        if (m == i) break;
        e->heap[i] = e->heap[m];
        i = m;
    }
    if (n > 0) e->heap[i] = x;
    return top;
}

static bool sym_reserve(ectx *e, size_t n) {
    if ((size_t)e->cap_sym >= n) return true;
    if (n > INT32_MAX / 8) return false;
    int cap = (int)n;
    int32_t **arrs[4] = {&e->sc, &e->sprev, &e->snext, &e->slen};
    for (int i = 0; i < 4; i++) {
        int32_t *p = realloc(*arrs[i], (size_t)cap * sizeof **arrs[i]);
        if (!p) return false;
        *arrs[i] = p;
    }
    e->cap_sym = cap;
    return true;
}

static void bpe_word(ectx *e, const char *s, uint32_t n) {
    const clv_tokenizer *t = e->t;
    if (n == 0) return;
    if (t->ignore_merges) {
        int32_t id = tk_smap_get(&t->vocab, s, n);
        if (id >= 0) { id_push(e, id); return; }
    }
    if (!sym_reserve(e, n)) { e->oom = true; return; }
    int ns = 0;
    int32_t unk_id = -1, unk_len = 0;
#define ADD(id_, len_)                                                             \
    do {                                                                           \
        e->sc[ns] = (id_); e->slen[ns] = (len_); e->snext[ns] = -1;                \
        e->sprev[ns] = ns - 1;                                                     \
        if (ns > 0) e->snext[ns - 1] = ns;                                         \
        ns++;                                                                      \
    } while (0)
    for (uint32_t i = 0; i < n;) {
        int l = char_len(s + i, n - i);
        int32_t id = tk_smap_get(&t->vocab, s + i, (uint32_t)l);
        if (id >= 0) {
            if (unk_id >= 0) { ADD(unk_id, unk_len); unk_id = -1; }
            ADD(id, l);
        } else {
            bool done = false;
            if (t->byte_fallback) {
                bool all = true;
                for (int k = 0; k < l; k++) all = all && t->byte_ids[(unsigned char)s[i + k]] >= 0;
                if (all) {
                    for (int k = 0; k < l; k++) ADD(t->byte_ids[(unsigned char)s[i + k]], 1);
                    done = true;
                }
            }
            if (!done && t->unk_id >= 0) {
                if (unk_id >= 0 && t->fuse_unk) unk_len += l;
                else {
                    if (unk_id >= 0) ADD(unk_id, unk_len);
                    unk_id = t->unk_id;
                    unk_len = l;
                }
            }
        }
        i += (uint32_t)l;
    }
    if (unk_id >= 0) ADD(unk_id, unk_len);
#undef ADD
    /* merge by rank (ties: leftmost), exactly like tokenizers' Word::merge_all */
    e->n_heap = 0;
    for (int i = 0; i + 1 < ns; i++) {
        const tk_mmap_ent *m = tk_mmap_get(&t->merges, e->sc[i], e->sc[i + 1]);
        if (m) heap_push(e, (heap_ent){m->rank, i, m->id});
    }
    while (e->n_heap > 0 && !e->oom) {
        heap_ent top = heap_pop(e);
        int p = top.pos;
        if (e->slen[p] == 0 || e->snext[p] == -1) continue;
        int nx = e->snext[p];
        const tk_mmap_ent *m = tk_mmap_get(&t->merges, e->sc[p], e->sc[nx]);
        if (!m || m->id != top.id) continue;
        e->sc[p] = top.id;
        e->slen[p] += e->slen[nx];
        e->snext[p] = e->snext[nx];
        e->slen[nx] = 0;
        if (e->snext[nx] > -1 && e->snext[nx] < ns) e->sprev[e->snext[nx]] = p;
        if (e->sprev[p] >= 0) {
            int pv = e->sprev[p];
            m = tk_mmap_get(&t->merges, e->sc[pv], e->sc[p]);
            if (m) heap_push(e, (heap_ent){m->rank, pv, m->id});
        }
        if (e->snext[p] >= 0 && e->snext[p] < ns) {
            m = tk_mmap_get(&t->merges, e->sc[p], e->sc[e->snext[p]]);
            if (m) heap_push(e, (heap_ent){m->rank, p, m->id});
        }
    }
    for (int i = 0; i < ns; i++)
        if (e->slen[i] != 0) id_push(e, e->sc[i]);
}

/* ---- the pipeline ---------------------------------------------------------------------------------- */
static void ectx_free(ectx *e) {
    tk_buf_free(&e->arena);
    if (e->md) pcre2_match_data_free(e->md);
    free(e->m);
    free(e->sc); free(e->sprev); free(e->snext); free(e->slen);
    free(e->heap);
    free(e->ids);
}

int clv_tok_encode(const clv_tokenizer *t, const char *text, size_t len, bool add_special, int32_t **ids_out, int *n_out,
                   clv_status *st) {
    *ids_out = NULL;
    *n_out = 0;
    if (len > (size_t)INT32_MAX / 8) return clv_fail(st, CLV_EINVAL, "text of %zu bytes is too long to encode", len);
    ectx e = {.t = t};
    pvec a = {0}, b = {0};
    tk_buf tmp = {0};
    int rc = 0;
    e.md = pcre2_match_data_create(64, NULL);
    if (!e.md) { rc = clv_fail(st, CLV_ENOMEM, "out of memory"); goto done; }
    /* invalid UTF-8 -> U+FFFD, as a Python caller's bytes.decode(errors="replace") gives */
    tk_utf8_lossy(&e.arena, (const unsigned char *)text, len);
    if (e.arena.oom) { rc = clv_fail(st, CLV_ENOMEM, "out of memory"); goto done; }
    piece whole = {0, (uint32_t)e.arena.len, -1, true};
    /* 1. added tokens that match the raw text */
    if (whole.len) split_added(&e, &t->trie_raw, &whole, &a);
    /* 2. normalize the rest, then added tokens that match normalized text */
    for (int i = 0; i < a.n && !e.oom; i++) {
        piece pc = a.p[i];
        if (pc.id >= 0) { pv_push(&e, &b, pc); continue; }
        if (t->n_norms) {
            if ((rc = tk_normalize(t, e.arena.p + pc.off, pc.len, &tmp, e.md, st))) goto done;
            pc.off = arena_put(&e, tmp.p ? tmp.p : "", tmp.len);
            pc.len = (uint32_t)tmp.len;
            if (pc.len == 0) continue;
        }
        split_added(&e, &t->trie_norm, &pc, &b);
    }
    /* 3. pre-tokenizers, one after the other, on every piece that is not an added token */
    for (int k = 0; k < t->n_pres && !e.oom; k++) {
        pvec tmpv = a;
        a = b;
        b = tmpv;
        b.n = 0;
        for (int i = 0; i < a.n && !e.oom; i++) {
            if (a.p[i].id >= 0) pv_push(&e, &b, a.p[i]);
            else pre_one(&e, &t->pres[k], &a.p[i], &b, &tmp);
        }
    }
    /* 4. the model, and the post-processor's special tokens around the sequence */
    bool post = add_special && t->post;
    for (int k = 0; k < (post ? t->n_post : 1) && !e.oom; k++) {
        if (post && !t->post[k].is_seq) {
            for (int j = 0; j < t->post[k].n_ids; j++) id_push(&e, t->post[k].ids[j]);
            continue;
        }
        for (int i = 0; i < b.n && !e.oom; i++) {
            if (b.p[i].id >= 0) id_push(&e, b.p[i].id);
            else bpe_word(&e, e.arena.p + b.p[i].off, b.p[i].len);
        }
    }
    if (e.oom || tmp.oom) { rc = clv_fail(st, CLV_ENOMEM, "out of memory while encoding"); goto done; }
    *ids_out = e.ids ? e.ids : malloc(sizeof(int32_t));
    if (!*ids_out) { rc = clv_fail(st, CLV_ENOMEM, "out of memory"); goto done; }
    *n_out = e.n_ids;
    e.ids = NULL;
done:
    free(a.p);
    free(b.p);
    tk_buf_free(&tmp);
    ectx_free(&e);
    return rc;
}
