/* tokenizer — Hugging Face `tokenizer.json` (BPE, byte-level and
 * SentencePiece-style), `tokenizer_config.json`, chat templates, streaming
 * detokenization.
 *
 * Behaviour follows the `tokenizers` library (Rust) step by step, so that ids
 * are identical:
 *
 *   text --(invalid UTF-8 -> U+FFFD, as Python's bytes.decode(errors="replace"))
 *        --> split on added tokens that are not `normalized` (raw text)
 *        --> normalizer on every other piece, then split on `normalized` added tokens
 *        --> pre-tokenizer on every piece that is not an added token
 *        --> BPE on every piece
 *        --> post-processor (only when add_special is true)
 *
 * Implemented (anything else in tokenizer.json is refused at load with a
 * message naming the component and listing what is supported):
 *   model          BPE: vocab, merges ("a b" strings or ["a","b"] pairs), unk_token,
 *                  fuse_unk, byte_fallback, ignore_merges (dropout must be null/0,
 *                  continuing_subword_prefix / end_of_word_suffix must be null)
 *   normalizer     NFC, NFD, NFKC, NFKD, Prepend, Replace (String or Regex), Strip, Sequence
 *   pre_tokenizer  ByteLevel (add_prefix_space, use_regex), Split (String or Regex,
 *                  all five behaviours, invert), Metaspace (replacement, prepend_scheme
 *                  or legacy add_prefix_space, split), Digits, Sequence
 *   post_processor TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel (no
 *                  effect on ids), Sequence
 *   decoder        ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, Sequence
 *   added_tokens   special or not, single_word, lstrip, rstrip, normalized
 * `truncation` and `padding` are ignored with a warning (they only matter for
 * batches). tokenizer_config.json's add_bos_token / add_eos_token are reported
 * (clv_tok_add_bos) but tokenizer.json's post-processor decides what
 * add_special adds. Vocabulary strings holding U+0000 are not supported (the
 * JSON parser stops at it).
 *
 * Regexes run on PCRE2 with UTF and UCP (the Rust side uses Oniguruma); both
 * read the same Unicode properties for \p{L}, \p{N}, \s.
 *
 * Every function returns 0 or a negative clv_code and fills `st`. A loaded
 * tokenizer is immutable: encode/decode may run from several threads at once.
 */
#ifndef CLV_TOKENIZER_H
#define CLV_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cleave.h"

typedef struct clv_tokenizer clv_tokenizer;

/* Load DIR/tokenizer.json, and DIR/tokenizer_config.json when present (chat
 * template, bos/eos token strings, add_bos_token/add_eos_token). The chat
 * template may also come from DIR/chat_template.jinja or DIR/chat_template.json.
 * DIR may hold only tokenizer files. */
int clv_tok_load(clv_tokenizer **out, const char *dir, clv_status *st);

/* Load from memory. `config_json` may be NULL. `name` names the source in
 * messages ("tokenizer.json"). Neither buffer needs a terminating NUL. */
int clv_tok_load_mem(clv_tokenizer **out, const char *tokenizer_json, size_t len, const char *config_json,
                     size_t config_len, const char *name, clv_status *st);
void clv_tok_free(clv_tokenizer *t);

/* Encode `len` bytes of `text`. Invalid UTF-8 is first replaced with U+FFFD
 * (one per maximal invalid subsequence, as Python and Rust do). With
 * add_special, the post-processor adds its special tokens (BOS/EOS).
 * *ids is malloc'd; the caller frees it. */
int clv_tok_encode(const clv_tokenizer *t, const char *text, size_t len, bool add_special, int32_t **ids, int *n,
                   clv_status *st);

/* Decode ids to malloc'd NUL-terminated UTF-8 text (always valid UTF-8).
 * Ids that name no token are skipped, as `tokenizers` does. skip_special
 * drops tokens whose string is a special added token. */
int clv_tok_decode(const clv_tokenizer *t, const int32_t *ids, int n, bool skip_special, char **text,
                   size_t *text_len, clv_status *st);

/* Number of ids (largest id + 1, added tokens included). */
int clv_tok_n_vocab(const clv_tokenizer *t);
/* The token string of `id` as stored in tokenizer.json ("Ġhello", "▁the",
 * "<0x0A>", "<|begin_of_text|>"), or NULL when the id names no token. */
const char *clv_tok_piece(const clv_tokenizer *t, int32_t id);
/* The id of a token string (added tokens first, then the model vocab), or -1. */
int32_t clv_tok_token_id(const clv_tokenizer *t, const char *token);
bool clv_tok_is_special(const clv_tokenizer *t, int32_t id);

/* BOS / EOS from tokenizer_config.json (bos_token / eos_token), or -1 / NULL. */
int32_t clv_tok_bos_id(const clv_tokenizer *t);
int32_t clv_tok_eos_id(const clv_tokenizer *t);
const char *clv_tok_bos_str(const clv_tokenizer *t);
const char *clv_tok_eos_str(const clv_tokenizer *t);
/* add_bos_token / add_eos_token from tokenizer_config.json: 1, 0, or -1 when absent. */
int clv_tok_add_bos(const clv_tokenizer *t);
int clv_tok_add_eos(const clv_tokenizer *t);
/* The chat template (tokenizer_config.json's chat_template string, its "default"
 * entry when it is a list of named templates, chat_template.jinja), or NULL. */
const char *clv_tok_chat_template(const clv_tokenizer *t);
/* A named template from the list form, or NULL. */
const char *clv_tok_chat_template_named(const clv_tokenizer *t, const char *name);

/* ---- chat ----------------------------------------------------------------- */
typedef struct clv_chat_msg {
    const char *role;    /* "system", "user", "assistant", ... */
    const char *content;
} clv_chat_msg;

/* Render the chat template for `msgs` as transformers' apply_chat_template
 * does (trim_blocks, lstrip_blocks; bos_token, eos_token, unk_token and
 * pad_token from tokenizer_config.json; add_generation_prompt). *out is
 * malloc'd. `tmpl` NULL means the tokenizer's own template. */
int clv_tok_apply_chat(const clv_tokenizer *t, const char *tmpl, const clv_chat_msg *msgs, int n_msgs,
                       bool add_generation_prompt, char **out, clv_status *st);

/* ---- streaming detokenizer ----------------------------------------------------
 * Fed ids one at a time, it returns text as soon as it is final: never a broken
 * UTF-8 sequence, never a byte that a later id could change. The text it
 * returns, concatenated with what clv_tok_stream_flush returns, equals
 * clv_tok_decode of all the ids. Each call's text stays valid until the next
 * call on the same stream. */
typedef struct clv_tok_stream clv_tok_stream;
int clv_tok_stream_new(clv_tok_stream **out, const clv_tokenizer *t, bool skip_special, clv_status *st);
int clv_tok_stream_push(clv_tok_stream *s, int32_t id, const char **text, size_t *len, clv_status *st);
int clv_tok_stream_flush(clv_tok_stream *s, const char **text, size_t *len, clv_status *st);
void clv_tok_stream_free(clv_tok_stream *s);

#endif
