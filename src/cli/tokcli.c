/* `cleave tokenize` and prompt construction (see tokcli.h). */
#include "tokcli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/util.h"

static const char k_tok_help[] =
    "usage: cleave tokenize -m DIR (-p TEXT | --chat MSG [--system S]) [--no-special] [--verbose]\n"
    "\n"
    "Encode TEXT with DIR/tokenizer.json and print the ids as one JSON array.\n"
    "  -m DIR         folder with tokenizer.json (and tokenizer_config.json)\n"
    "  -p TEXT        text to encode (special tokens such as BOS added by the post-processor)\n"
    "  --chat MSG     a user message, rendered with the chat template (add_generation_prompt)\n"
    "  --system S     a system message before --chat\n"
    "  --no-special   do not add BOS/EOS (with -p)\n"
    "  --verbose      after the ids, one line per token: id, tab, token string (JSON)\n";

int clv_cli_prompt(const char *dir, const char *text, const char *chat_user, const char *system, int32_t **ids, int *n,
                   clv_tokenizer **tok, clv_status *st) {
    *ids = NULL;
    *n = 0;
    if (!text == !chat_user) return clv_fail(st, CLV_EINVAL, "give exactly one of -p TEXT and --chat MSG");
    if (system && !chat_user) return clv_fail(st, CLV_EINVAL, "--system needs --chat");
    bool loaded = false;
    if (!*tok) {
        if (clv_tok_load(tok, dir, st)) return st->code;
        loaded = true;
    }
    int rc;
    if (text) {
        rc = clv_tok_encode(*tok, text, strlen(text), true, ids, n, st);
    } else {
        clv_chat_msg msgs[2];
        int k = 0;
        if (system) msgs[k++] = (clv_chat_msg){"system", system};
        msgs[k++] = (clv_chat_msg){"user", chat_user};
        char *prompt = NULL;
        rc = clv_tok_apply_chat(*tok, NULL, msgs, k, true, &prompt, st);
        if (!rc) rc = clv_tok_encode(*tok, prompt, strlen(prompt), false, ids, n, st);
        free(prompt);
    }
    if (rc && loaded) {
        clv_tok_free(*tok);
        *tok = NULL;
    }
    return rc;
}

static void print_json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", f);
        else if (*p == '\t') fputs("\\t", f);
        else if (*p == '\r') fputs("\\r", f);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

int clv_cli_tokenize(int argc, char **argv) {
    const char *dir = NULL, *text = NULL, *chat = NULL, *system = NULL;
    bool special = true, verbose = false;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(k_tok_help, stdout); return 0; }
        else if (!strcmp(a, "--no-special")) special = false;
        else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) verbose = true;
        else if (!strcmp(a, "-m") || !strcmp(a, "--model") || !strcmp(a, "-p") || !strcmp(a, "--prompt") ||
                 !strcmp(a, "--chat") || !strcmp(a, "--system")) {
            if (!has_val) {
                fprintf(stderr, "cleave: error: tokenize %s: missing value (see cleave tokenize --help)\n", a);
                return 2;
            }
            const char *v = argv[++i];
            if (a[1] == 'm' || !strcmp(a, "--model")) dir = v;
            else if (a[1] == 'p' || !strcmp(a, "--prompt")) text = v;
            else if (!strcmp(a, "--chat")) chat = v;
            else system = v;
        } else {
            fprintf(stderr, "cleave: error: tokenize: unknown option '%s' (see cleave tokenize --help)\n", a);
            return 2;
        }
    }
    if (!dir) { fprintf(stderr, "cleave: error: tokenize: -m DIR is required (see cleave tokenize --help)\n"); return 2; }
    if (!text && !chat) { fprintf(stderr, "cleave: error: tokenize: give -p TEXT or --chat MSG (see cleave tokenize --help)\n"); return 2; }
    if (chat && !special) { fprintf(stderr, "cleave: error: tokenize: --no-special applies to -p only\n"); return 2; }
    clv_status st = {0};
    clv_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    int n = 0, rc;
    if (text && !special) {
        rc = clv_tok_load(&tok, dir, &st);
        if (!rc) rc = clv_tok_encode(tok, text, strlen(text), false, &ids, &n, &st);
    } else
        rc = clv_cli_prompt(dir, text, chat, system, &ids, &n, &tok, &st);
    if (rc) {
        fprintf(stderr, "cleave: error: %s\n", st.msg);
        clv_tok_free(tok);
        return 1;
    }
    fputc('[', stdout);
    for (int i = 0; i < n; i++) printf("%s%d", i ? ", " : "", ids[i]);
    fputs("]\n", stdout);
    if (verbose)
        for (int i = 0; i < n; i++) {
            const char *p = clv_tok_piece(tok, ids[i]);
            printf("%d\t", ids[i]);
            print_json_str(stdout, p ? p : "");
            fputc('\n', stdout);
        }
    free(ids);
    clv_tok_free(tok);
    return 0;
}
