/* CLI pieces of the tokenizer: `cleave tokenize`, and prompt ids from -p / --chat. */
#ifndef CLV_TOKCLI_H
#define CLV_TOKCLI_H

#include <stdint.h>

#include "cleave.h"
#include "../tokenizer/tokenizer.h"

/* `cleave tokenize -m DIR (-p TEXT | --chat MSG [--system S]) [--no-special] [--verbose] [--help]`.
 * argc/argv as main's: argv[1] is "tokenize", options start at argv[2].
 * Prints the ids as one JSON array on one line; --verbose adds one line per
 * token after it: id, tab, the token string as a JSON string. Errors go to
 * stderr. Returns the exit code (0 ok, 1 error, 2 usage); never exits. */
int clv_cli_tokenize(int argc, char **argv);

/* Prompt ids for generate/bench/server: `text` (-p: encoded with the
 * post-processor's special tokens, as transformers' tokenizer(text) does) or
 * `chat_user` (--chat, with optional `system`: rendered with the chat template
 * and add_generation_prompt=true, then encoded without special tokens, as
 * apply_chat_template(tokenize=True) does — the template writes the BOS).
 * Exactly one of text / chat_user must be non-NULL. If *tok is NULL the
 * tokenizer is loaded from `dir` and handed back (the caller frees it with
 * clv_tok_free); otherwise *tok is used. *ids is malloc'd. */
int clv_cli_prompt(const char *dir, const char *text, const char *chat_user, const char *system, int32_t **ids, int *n,
                   clv_tokenizer **tok, clv_status *st);

#endif
