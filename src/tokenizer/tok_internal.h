/* tokenizer internals: shared by tok_load.c, tok_encode.c, tok_decode.c, chat.c. */
#ifndef CLV_TOK_INTERNAL_H
#define CLV_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "../util/util.h"
#include "tokenizer.h"

/* ---- growable byte buffer ---------------------------------------------------- */
typedef struct tk_buf {
    char *p;
    size_t len, cap;
    bool oom;
} tk_buf;
void tk_buf_put(tk_buf *b, const void *s, size_t n);
static inline void tk_buf_putc(tk_buf *b, char c) { tk_buf_put(b, &c, 1); }
void tk_buf_free(tk_buf *b);

/* ---- UTF-8 --------------------------------------------------------------------- */
/* Length of the valid UTF-8 sequence at s[0..n), or 0 if it is not valid. */
int tk_utf8_valid_at(const unsigned char *s, size_t n);
/* Offset of the first byte of s[0..n) that does not start a valid UTF-8
 * sequence, or n when all of it is valid. */
size_t tk_utf8_first_invalid(const unsigned char *s, size_t n);
/* Decode the (valid) character at s; *len gets its byte length. */
int32_t tk_utf8_decode(const unsigned char *s, int *len);
int tk_utf8_encode(int32_t c, char out[4]);
/* Append `s` to b with every maximal invalid subsequence replaced by U+FFFD
 * (the "substitution of maximal subparts" practice of Python and Rust). */
void tk_utf8_lossy(tk_buf *b, const unsigned char *s, size_t n);
bool tk_is_space(int32_t c);     /* Unicode White_Space */
bool tk_is_word(int32_t c);      /* Rust regex \w (approximated by general categories) */
bool tk_is_numeric(int32_t c);   /* Rust char::is_numeric: Nd, Nl, No */

/* ---- string -> id map (open addressing) ------------------------------------------ */
typedef struct tk_smap_ent {
    const char *s;
    uint32_t len;
    int32_t val;
} tk_smap_ent;
typedef struct tk_smap {
    tk_smap_ent *e;
    uint32_t cap, n; /* cap is a power of two */
} tk_smap;
uint64_t tk_hash(const void *s, size_t n);
/* Insert or overwrite; `s` must outlive the map. false on OOM. */
bool tk_smap_put(tk_smap *m, const char *s, uint32_t len, int32_t val);
/* Returns the value or -1. */
int32_t tk_smap_get(const tk_smap *m, const char *s, uint32_t len);
void tk_smap_free(tk_smap *m);

/* ---- (id, id) -> (rank, new id) map ------------------------------------------ */
typedef struct tk_mmap_ent {
    uint64_t key; /* (a << 32 | b) + 1; 0 = empty */
    int32_t rank, id;
} tk_mmap_ent;
typedef struct tk_mmap {
    tk_mmap_ent *e;
    uint32_t cap, n;
} tk_mmap;
bool tk_mmap_put(tk_mmap *m, int32_t a, int32_t b, int32_t rank, int32_t id);
const tk_mmap_ent *tk_mmap_get(const tk_mmap *m, int32_t a, int32_t b);
void tk_mmap_free(tk_mmap *m);

/* ---- a pattern: literal string or PCRE2 regex ------------------------------------ */
typedef struct tk_pattern {
    char *lit; /* literal (NULL for a regex) */
    size_t lit_len;
    pcre2_code *re;
} tk_pattern;
/* Find the next match at or after `from` (empty matches allowed, as Rust's
 * find_iter yields them). Returns false when there is none. `md` is per-call
 * match data (NULL for literals). */
bool tk_pattern_find(const tk_pattern *p, pcre2_match_data *md, const char *s, size_t n, size_t from, size_t *ms,
                     size_t *me);

/* ---- components ---------------------------------------------------------------- */
typedef enum {
    TK_NORM_NFC, TK_NORM_NFD, TK_NORM_NFKC, TK_NORM_NFKD, TK_NORM_PREPEND, TK_NORM_REPLACE, TK_NORM_STRIP
} tk_norm_kind;
typedef struct tk_norm {
    tk_norm_kind kind;
    tk_pattern pat;    /* Replace */
    char *str;         /* Prepend: the prefix; Replace: the content */
    size_t str_len;
    bool left, right;  /* Strip */
} tk_norm;

typedef enum {
    TK_SPLIT_REMOVED, TK_SPLIT_ISOLATED, TK_SPLIT_MERGED_PREV, TK_SPLIT_MERGED_NEXT, TK_SPLIT_CONTIGUOUS
} tk_split_behavior;
typedef enum { TK_PRE_BYTELEVEL, TK_PRE_SPLIT, TK_PRE_METASPACE, TK_PRE_DIGITS } tk_pre_kind;
typedef enum { TK_PREPEND_ALWAYS, TK_PREPEND_FIRST, TK_PREPEND_NEVER } tk_prepend_scheme;
typedef struct tk_pre {
    tk_pre_kind kind;
    bool add_prefix_space, use_regex;        /* ByteLevel */
    tk_pattern pat;                          /* Split */
    tk_split_behavior behavior;
    bool invert;
    char repl[5];                            /* Metaspace replacement (UTF-8) */
    int repl_len;
    int32_t repl_cp;
    tk_prepend_scheme scheme;
    bool split;
    bool individual_digits;                  /* Digits */
} tk_pre;

typedef enum {
    TK_DEC_BYTELEVEL, TK_DEC_BYTEFALLBACK, TK_DEC_FUSE, TK_DEC_STRIP, TK_DEC_REPLACE, TK_DEC_METASPACE
} tk_dec_kind;
typedef struct tk_dec {
    tk_dec_kind kind;
    tk_pattern pat;   /* Replace */
    char *content;    /* Replace */
    size_t content_len;
    int32_t strip_cp; /* Strip content; Metaspace replacement */
    int start, stop;  /* Strip */
    bool prepend;     /* Metaspace: prepend_scheme != never */
} tk_dec;

typedef struct tk_added {
    char *content;
    uint32_t len;
    char *norm;       /* normalized content when `normalized` and the normalizer changes it */
    uint32_t norm_len;
    int32_t id;
    bool special, single_word, lstrip, rstrip, normalized;
} tk_added;

/* Byte trie over added-token contents, for leftmost-longest matching. */
typedef struct tk_trie_node {
    int32_t child;   /* first child, -1 if none */
    int32_t sibling; /* next sibling, -1 if none */
    int32_t value;   /* index into added[], -1 if no token ends here */
    unsigned char byte;
} tk_trie_node;
typedef struct tk_trie {
    tk_trie_node *n;
    int32_t len, cap;
} tk_trie;

typedef struct tk_tmpl_piece {
    bool is_seq;      /* $A (sequence) or a special token */
    int32_t *ids;     /* special token ids */
    int n_ids;
} tk_tmpl_piece;

struct clv_tokenizer {
    /* model: BPE */
    tk_smap vocab;          /* token string -> id */
    char **id_str;          /* id -> model token string (NULL in gaps) */
    uint32_t *id_len;
    int32_t n_ids;          /* size of id_str: max model/added id + 1 */
    int32_t model_vocab_n;  /* number of vocab entries (what `tokenizers` calls the vocab size) */
    tk_mmap merges;
    int32_t unk_id;         /* -1: none */
    char *unk_token;
    bool fuse_unk, byte_fallback, ignore_merges;
    int32_t byte_ids[256];  /* "<0xXX>" ids for byte_fallback, -1 when absent */

    /* added tokens */
    tk_added *added;
    int n_added;
    tk_smap added_map;      /* content -> index in added[] */
    int32_t *id_added;      /* id -> index in added[] or -1 (size n_ids) */
    tk_trie trie_raw, trie_norm;

    /* pipeline */
    tk_norm *norms;
    int n_norms;
    tk_pre *pres;
    int n_pres;
    tk_dec *decs;
    int n_decs;
    bool has_bytefallback_dec;
    tk_tmpl_piece *post;    /* TemplateProcessing "single"; NULL: no special tokens added */
    int n_post;
    pcre2_code *bytelevel_re; /* GPT-2 regex for ByteLevel(use_regex) */

    /* tokenizer_config.json */
    char *bos_str, *eos_str, *unk_str, *pad_str;
    int32_t bos_id, eos_id;
    int add_bos, add_eos;
    char *chat_template;
    char **tmpl_names, **tmpl_bodies;
    int n_tmpl;

    char *name; /* source file name, for messages */
};

/* byte <-> unicode map of GPT-2's byte-level BPE */
extern const uint16_t tk_byte_to_cp[256];
int tk_cp_to_byte(int32_t cp); /* -1 when cp is not one of the 256 */

/* Normalize one piece (tok_encode.c); used by the loader for normalized added tokens. */
int tk_normalize(const clv_tokenizer *t, const char *s, size_t n, tk_buf *out, pcre2_match_data *md,
                 clv_status *st);

int tk_trie_add(tk_trie *tr, const char *s, uint32_t len, int32_t value);

#endif
