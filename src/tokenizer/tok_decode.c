/* Decoding: ids -> token strings -> the decoder chain -> text; and the
 * streaming detokenizer. */
#include <string.h>

#include "tok_internal.h"

typedef struct tlist { /* a list of strings in one buffer */
    tk_buf buf;
    uint32_t *off, *len;
    int n, cap;
    bool oom;
} tlist;

static void tl_push(tlist *l, const char *s, size_t n) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        uint32_t *o = realloc(l->off, (size_t)cap * sizeof *o);
        if (o) l->off = o;
        uint32_t *q = realloc(l->len, (size_t)cap * sizeof *q);
        if (q) l->len = q;
        if (!o || !q) { l->oom = true; return; }
        l->cap = cap;
    }
    l->off[l->n] = (uint32_t)l->buf.len;
    l->len[l->n] = (uint32_t)n;
    tk_buf_put(&l->buf, s, n);
    l->n++;
    if (l->buf.oom) l->oom = true;
}

static void tl_free(tlist *l) {
    tk_buf_free(&l->buf);
    free(l->off);
    free(l->len);
    memset(l, 0, sizeof *l);
}

/* string i (a list of only empty strings has no buffer at all) */
#define TS(l, i) ((l)->buf.p ? (l)->buf.p + (l)->off[i] : "")

/* the string `tokenizers` hands the decoder for an id (added tokens first, in
 * their normalized form when they are normalized), or NULL */
static const char *id_token(const clv_tokenizer *t, int32_t id, uint32_t *len) {
    if (id < 0 || id >= t->n_ids) return NULL;
    int32_t k = t->id_added[id];
    if (k >= 0) {
        const tk_added *a = &t->added[k];
        if (a->norm) { *len = a->norm_len; return a->norm; }
        *len = a->len;
        return a->content;
    }
    *len = t->id_len[id];
    return t->id_str[id];
}

static bool special_string(const clv_tokenizer *t, const char *s, uint32_t len) {
    int32_t k = tk_smap_get(&t->added_map, s, len);
    return k >= 0 && t->added[k].special;
}

static bool is_byte_token(const char *s, uint32_t len, unsigned char *b) {
    if (len != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return false;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return false;
        v = v * 16 + d;
    }
    *b = (unsigned char)v;
    return true;
}

static void flush_bytes(tlist *out, tk_buf *bytes) {
    if (!bytes->len) return;
    bool valid = true;
    for (size_t i = 0; i < bytes->len && valid;) {
        int l = tk_utf8_valid_at((const unsigned char *)bytes->p + i, bytes->len - i);
        if (!l) valid = false;
        i += (size_t)(l ? l : 1);
    }
    if (valid) tl_push(out, bytes->p, bytes->len);
    else
        for (size_t i = 0; i < bytes->len; i++) tl_push(out, "\xEF\xBF\xBD", 3);
    bytes->len = 0;
}

static void apply_decoder(const tk_dec *d, const tlist *in, tlist *out, pcre2_match_data *md) {
    tk_buf tmp = {0};
    switch (d->kind) {
    case TK_DEC_BYTELEVEL: {
        for (int i = 0; i < in->n; i++) {
            const unsigned char *s = (const unsigned char *)TS(in, i);
            uint32_t n = in->len[i];
            size_t mark = tmp.len;
            bool ok = true;
            for (uint32_t k = 0; k < n;) {
                int l = tk_utf8_valid_at(s + k, n - k);
                int b = l ? tk_cp_to_byte(tk_utf8_decode(s + k, &l)) : -1;
                if (b < 0) { ok = false; break; }
                tk_buf_putc(&tmp, (char)b);
                k += (uint32_t)l;
            }
            if (!ok) { tmp.len = mark; tk_buf_put(&tmp, s, n); }
        }
        tk_buf lossy = {0};
        tk_utf8_lossy(&lossy, (const unsigned char *)(tmp.p ? tmp.p : ""), tmp.len);
        tl_push(out, lossy.p ? lossy.p : "", lossy.len);
        if (lossy.oom) out->oom = true;
        tk_buf_free(&lossy);
        break;
    }
    case TK_DEC_BYTEFALLBACK:
        for (int i = 0; i < in->n; i++) {
            unsigned char b;
            if (is_byte_token(TS(in, i), in->len[i], &b)) { tk_buf_putc(&tmp, (char)b); continue; }
            flush_bytes(out, &tmp);
            tl_push(out, TS(in, i), in->len[i]);
        }
        flush_bytes(out, &tmp);
        break;
    case TK_DEC_FUSE:
        for (int i = 0; i < in->n; i++) tk_buf_put(&tmp, TS(in, i), in->len[i]);
        tl_push(out, tmp.p ? tmp.p : "", tmp.len);
        break;
    case TK_DEC_STRIP: {
        char cc[4];
        int cl = tk_utf8_encode(d->strip_cp, cc);
        for (int i = 0; i < in->n; i++) {
            const char *s = TS(in, i);
            uint32_t lo = 0, hi = in->len[i];
            for (int k = 0; k < d->start && hi - lo >= (uint32_t)cl && !memcmp(s + lo, cc, (size_t)cl); k++) lo += (uint32_t)cl;
            for (int k = 0; k < d->stop && hi - lo >= (uint32_t)cl && !memcmp(s + hi - cl, cc, (size_t)cl); k++) hi -= (uint32_t)cl;
            tl_push(out, s + lo, hi - lo);
        }
        break;
    }
    case TK_DEC_REPLACE:
        for (int i = 0; i < in->n; i++) {
            const char *s = TS(in, i);
            size_t n = in->len[i], last_end = 0, last_match_end = 0, prev = 0;
            bool have_last = false;
            tmp.len = 0;
            while (last_end <= n) {
                size_t ms, me;
                if (!tk_pattern_find(&d->pat, md, s, n, last_end, &ms, &me)) break;
                if (ms == me && have_last && last_match_end == me) {
                    if (last_end >= n) break;
                    int l = tk_utf8_valid_at((const unsigned char *)s + last_end, n - last_end);
                    last_end += (size_t)(l ? l : 1);
                    continue;
                }
                last_end = me;
                have_last = true;
                last_match_end = me;
                tk_buf_put(&tmp, s + prev, ms - prev);
                tk_buf_put(&tmp, d->content, d->content_len);
                prev = me;
            }
            tk_buf_put(&tmp, s + prev, n - prev);
            tl_push(out, tmp.p ? tmp.p : "", tmp.len);
        }
        break;
    case TK_DEC_METASPACE: {
        char rc[4];
        int rl = tk_utf8_encode(d->strip_cp, rc);
        for (int i = 0; i < in->n; i++) {
            const char *s = TS(in, i);
            uint32_t n = in->len[i];
            tmp.len = 0;
            for (uint32_t k = 0; k < n;) {
                if (n - k >= (uint32_t)rl && !memcmp(s + k, rc, (size_t)rl)) {
                    if (!(i == 0 && d->prepend)) tk_buf_putc(&tmp, ' ');
                    k += (uint32_t)rl;
                } else
                    tk_buf_putc(&tmp, s[k++]);
            }
            tl_push(out, tmp.p ? tmp.p : "", tmp.len);
        }
        break;
    }
    }
    if (tmp.oom) out->oom = true;
    tk_buf_free(&tmp);
}

static int decode_into(const clv_tokenizer *t, const int32_t *ids, int n, bool skip_special, tk_buf *out,
                       pcre2_match_data *md, clv_status *st) {
    tlist a = {0}, b = {0};
    for (int i = 0; i < n; i++) {
        uint32_t len = 0;
        const char *s = id_token(t, ids[i], &len);
        if (!s) continue;
        if (skip_special && special_string(t, s, len)) continue;
        tl_push(&a, s, len);
    }
    if (t->n_decs == 0) {
        for (int i = 0; i < a.n; i++) {
            if (i) tk_buf_putc(out, ' ');
            tk_buf_put(out, TS(&a, i), a.len[i]);
        }
    } else {
        for (int k = 0; k < t->n_decs && !a.oom && !b.oom; k++) {
            b.n = 0;
            b.buf.len = 0;
            apply_decoder(&t->decs[k], &a, &b, md);
            tlist x = a;
            a = b;
            b = x;
        }
        for (int i = 0; i < a.n; i++) tk_buf_put(out, TS(&a, i), a.len[i]);
    }
    tk_buf_put(out, "", 0);
    bool oom = a.oom || b.oom || out->oom;
    tl_free(&a);
    tl_free(&b);
    if (oom) return clv_fail(st, CLV_ENOMEM, "out of memory while decoding");
    if (!out->p) { /* nothing at all: hand back an empty string */
        out->p = calloc(1, 1);
        if (!out->p) return clv_fail(st, CLV_ENOMEM, "out of memory");
        out->cap = 1;
    }
    return 0;
}

int clv_tok_decode(const clv_tokenizer *t, const int32_t *ids, int n, bool skip_special, char **text, size_t *text_len,
                   clv_status *st) {
    *text = NULL;
    if (text_len) *text_len = 0;
    tk_buf out = {0};
    pcre2_match_data *md = pcre2_match_data_create(64, NULL);
    if (!md) return clv_fail(st, CLV_ENOMEM, "out of memory");
    int rc = decode_into(t, ids, n, skip_special, &out, md, st);
    pcre2_match_data_free(md);
    if (rc) { tk_buf_free(&out); return rc; }
    *text = out.p;
    if (text_len) *text_len = out.len;
    return 0;
}

/* ---- streaming ----------------------------------------------------------------------------------
 * The approach of `tokenizers`' DecodeStream: decode a window of ids that starts
 * with a few already-emitted ones (the context), and emit what the window's text
 * has beyond the context's text. Context keeps first-token rules (Metaspace,
 * Strip) from applying mid-stream. Text is held back while it ends in U+FFFD (an
 * incomplete UTF-8 sequence may still be completed) or, with a ByteFallback
 * decoder, while the last id is a <0xXX> byte token (a run of byte tokens is
 * judged as a whole). */
struct clv_tok_stream {
    const clv_tokenizer *t;
    bool skip;
    int32_t *ids;
    int n, cap;
    int prefix_index;  /* ids[0..prefix_index) is the context */
    tk_buf prefix;     /* decode of the context */
    tk_buf cur, out;
    pcre2_match_data *md;
    bool in_byte_run; /* the last id that reaches the decoder is a <0xXX> byte token */
};

int clv_tok_stream_new(clv_tok_stream **out, const clv_tokenizer *t, bool skip_special, clv_status *st) {
    clv_tok_stream *s = calloc(1, sizeof *s);
    if (!s || !(s->md = pcre2_match_data_create(64, NULL))) {
        free(s);
        return clv_fail(st, CLV_ENOMEM, "out of memory");
    }
    s->t = t;
    s->skip = skip_special;
    *out = s;
    return 0;
}

void clv_tok_stream_free(clv_tok_stream *s) {
    if (!s) return;
    free(s->ids);
    tk_buf_free(&s->prefix);
    tk_buf_free(&s->cur);
    tk_buf_free(&s->out);
    pcre2_match_data_free(s->md);
    free(s);
}

static bool ends_with_fffd(const tk_buf *b) { return b->len >= 3 && !memcmp(b->p + b->len - 3, "\xEF\xBF\xBD", 3); }

/* Track whether a run of byte tokens is open. Ids that never reach the decoder
 * (unknown, or special when skipping) do not end a run: the decoder joins the
 * bytes on both sides of them. */
static void track_byte_run(clv_tok_stream *s, int32_t id) {
    uint32_t len = 0;
    unsigned char b;
    if (!s->t->has_bytefallback_dec) return;
    const char *tok = id_token(s->t, id, &len);
    if (!tok || (s->skip && special_string(s->t, tok, len))) return;
    s->in_byte_run = is_byte_token(tok, len, &b);
}

int clv_tok_stream_push(clv_tok_stream *s, int32_t id, const char **text, size_t *len, clv_status *st) {
    *text = "";
    *len = 0;
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 64;
        int32_t *p = realloc(s->ids, (size_t)cap * sizeof *p);
        if (!p) return clv_fail(st, CLV_ENOMEM, "out of memory");
        s->ids = p;
        s->cap = cap;
    }
    s->ids[s->n++] = id;
    track_byte_run(s, id);
    if (s->in_byte_run) return 0;
    s->cur.len = 0;
    if (decode_into(s->t, s->ids, s->n, s->skip, &s->cur, s->md, st)) return st->code;
    if (s->cur.len <= s->prefix.len || ends_with_fffd(&s->cur)) return 0;
    if (s->prefix.len && memcmp(s->cur.p, s->prefix.p, s->prefix.len))
        return 0; /* the context's text changed: wait (flush emits the rest) */
    s->out.len = 0;
    tk_buf_put(&s->out, s->cur.p + s->prefix.len, s->cur.len - s->prefix.len);
    /* the new context: the ids just emitted */
    int keep_from = s->prefix_index;
    memmove(s->ids, s->ids + keep_from, (size_t)(s->n - keep_from) * sizeof *s->ids);
    s->n -= keep_from;
    s->prefix_index = s->n;
    s->prefix.len = 0;
    if (decode_into(s->t, s->ids, s->n, s->skip, &s->prefix, s->md, st)) return st->code;
    if (s->out.oom) return clv_fail(st, CLV_ENOMEM, "out of memory");
    *text = s->out.p;
    *len = s->out.len;
    return 0;
}

int clv_tok_stream_flush(clv_tok_stream *s, const char **text, size_t *len, clv_status *st) {
    *text = "";
    *len = 0;
    s->cur.len = 0;
    if (decode_into(s->t, s->ids, s->n, s->skip, &s->cur, s->md, st)) return st->code;
    s->out.len = 0;
    size_t from = s->prefix.len == 0 ? 0
                  : s->prefix.len <= s->cur.len && !memcmp(s->cur.p, s->prefix.p, s->prefix.len) ? s->prefix.len
                                                                                           : s->cur.len;
    tk_buf_put(&s->out, s->cur.p + from, s->cur.len - from);
    tk_buf_put(&s->out, "", 0);
    s->n = s->prefix_index = 0;
    s->prefix.len = 0;
    s->in_byte_run = false;
    if (s->out.oom) return clv_fail(st, CLV_ENOMEM, "out of memory");
    *text = s->out.p ? s->out.p : "";
    *len = s->out.len;
    return 0;
}
