/* libFuzzer target: tokenizer.json loading from memory, then encode/decode/stream
 * with whatever loaded. Invariants: decode output is valid UTF-8; streaming
 * equals the full decode. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"

static bool valid(const char *s, size_t n) { return tk_utf8_first_invalid((const unsigned char *)s, n) == n; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    clv_tokenizer *t;
    clv_status st;
    clv_log_set_quiet(true);
    /* the input is "tokenizer.json \0 text": the text part drives encoding */
    const uint8_t *z = memchr(data, 0, size);
    size_t jlen = z ? (size_t)(z - data) : size;
    const char *text = z ? (const char *)z + 1 : "Hello world! 123 \xF0\x9F\x98\x80 <s> caf\xC3\xA9";
    size_t tlen = z ? size - jlen - 1 : strlen(text);
    if (clv_tok_load_mem(&t, (const char *)data, jlen, NULL, 0, "fuzz.json", &st) != 0) return 0;
    int32_t *ids;
    int n;
    if (clv_tok_encode(t, text, tlen, true, &ids, &n, &st) == 0) {
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= clv_tok_n_vocab(t)) abort();
        char *out;
        size_t out_len;
        if (clv_tok_decode(t, ids, n, false, &out, &out_len, &st) == 0) {
            if (!valid(out, out_len)) abort();
            clv_tok_stream *s;
            if (clv_tok_stream_new(&s, t, false, &st) == 0) {
                tk_buf acc = {0};
                const char *txt;
                size_t len;
                for (int i = 0; i < n; i++)
                    if (clv_tok_stream_push(s, ids[i], &txt, &len, &st) == 0) {
                        if (!valid(txt, len)) abort();
                        tk_buf_put(&acc, txt, len);
                    }
                if (clv_tok_stream_flush(s, &txt, &len, &st) == 0) tk_buf_put(&acc, txt, len);
                clv_tok_stream_free(s);
                tk_buf_free(&acc);
            }
            free(out);
        }
        free(ids);
    }
    clv_tok_free(t);
    return 0;
}
