/* Tokenizer against Hugging Face `tokenizers`: every fixture in
 * tests/fixtures/tok/<name>/ (made by tests/hf/make_tok_fixtures.py) must give
 * exactly the recorded ids (with and without special tokens), exactly the
 * recorded decodings, exact round trips where `tokenizers` round-trips, and a
 * streamed decode equal to the full decode. Then refusals and timings. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <string.h>

#include "check.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"
#include "util/util.h"

#define FIXTURES "tests/fixtures/tok"

static int g_cases, g_ids, g_decodes, g_streams;

static bool ids_equal(const int32_t *a, int na, const cJSON *want) {
    if (cJSON_GetArraySize(want) != na) return false;
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, want) if ((int32_t)e->valuedouble != a[i++]) return false;
    return true;
}

static void print_ids(const char *what, const int32_t *a, int n, const cJSON *want) {
    char *w = cJSON_PrintUnformatted(want);
    fprintf(stderr, "  %s want %s\n  %s got  [", what, w, what);
    for (int i = 0; i < n; i++) fprintf(stderr, "%s%d", i ? "," : "", a[i]);
    fprintf(stderr, "]\n");
    free(w);
}

static int32_t *json_ids(const cJSON *arr, int *n) {
    *n = cJSON_GetArraySize(arr);
    int32_t *ids = malloc(((size_t)*n + 1) * sizeof *ids);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) ids[i++] = (int32_t)e->valuedouble;
    return ids;
}

static bool valid_utf8(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int l = tk_utf8_valid_at((const unsigned char *)s + i, n - i);
        if (!l) return false;
        i += (size_t)l;
    }
    return true;
}

static bool same(const char *a, size_t na, const char *b, size_t nb) { return na == nb && !memcmp(a, b, na); }

/* stream ids one by one; the concatenation must equal `want`, every chunk valid UTF-8 */
static void check_stream(const clv_tokenizer *t, const int32_t *ids, int n, bool skip, const char *want, size_t want_len,
                         const char *label) {
    clv_tok_stream *s;
    clv_status st = {0};
    CHECK(clv_tok_stream_new(&s, t, skip, &st) == 0, "%s", st.msg);
    tk_buf acc = {0};
    bool chunks_ok = true;
    for (int i = 0; i < n; i++) {
        const char *txt;
        size_t len;
        if (clv_tok_stream_push(s, ids[i], &txt, &len, &st)) { CHECK(0, "%s: stream push: %s", label, st.msg); break; }
        chunks_ok = chunks_ok && valid_utf8(txt, len);
        tk_buf_put(&acc, txt, len);
    }
    const char *txt;
    size_t len;
    CHECK(clv_tok_stream_flush(s, &txt, &len, &st) == 0, "%s", st.msg);
    chunks_ok = chunks_ok && valid_utf8(txt, len);
    tk_buf_put(&acc, txt, len);
    tk_buf_put(&acc, "", 0);
    CHECK(chunks_ok, "%s: a streamed chunk is not valid UTF-8", label);
    CHECK(same(acc.p ? acc.p : "", acc.len, want, want_len), "%s: streamed '%s' != decoded '%s'", label, acc.p ? acc.p : "", want);
    g_streams++;
    tk_buf_free(&acc);
    clv_tok_stream_free(s);
}

/* a hex field of the case as a malloc'd, NUL-terminated byte string */
static char *unhex(const cJSON *c, const char *key, size_t *len) {
    const char *h = cJSON_GetObjectItem(c, key)->valuestring;
    size_t n = strlen(h) / 2;
    char *out = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (char)v;
    }
    out[n] = 0;
    if (len) *len = n;
    return out;
}


static void check_fixture(const char *name) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, FIXTURES "/%s", name);
    clv_status st = {0};
    clv_tokenizer *t;
    int rc = clv_tok_load(&t, dir, &st);
    CHECK(rc == 0, "%s: load: %s", name, st.msg);
    if (rc) return;
    snprintf(path, sizeof path, "%s/cases.json", dir);
    char *buf;
    size_t len;
    CHECK(clv_read_file(path, &buf, &len, &st) == 0, "%s", st.msg);
    cJSON *doc = cJSON_Parse(buf);
    free(buf);
    CHECK(doc != NULL, "%s: cases.json does not parse", name);
    if (!doc) { clv_tok_free(t); return; }
    int n_cases = 0, n_rt = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(doc, "cases")) {
        size_t in_len, text_len;
        char *in = unhex(c, "input_hex", &in_len), *text = unhex(c, "text_hex", &text_len);
        char label[160];
        snprintf(label, sizeof label, "%s: \"%.60s\"", name, text);
        for (int sp = 0; sp < 2; sp++) {
            int32_t *ids;
            int n;
            const cJSON *want = cJSON_GetObjectItem(c, sp ? "ids_special" : "ids");
            rc = clv_tok_encode(t, in, in_len, sp, &ids, &n, &st);
            CHECK(rc == 0, "%s: encode: %s", label, st.msg);
            if (rc) continue;
            bool ok = ids_equal(ids, n, want);
            CHECK(ok, "%s: ids (add_special=%d) differ from tokenizers", label, sp);
            if (!ok) print_ids(sp ? "special" : "plain", ids, n, want);
            g_ids += n;
            if (sp == 0 && cJSON_IsTrue(cJSON_GetObjectItem(c, "roundtrip"))) {
                char *out;
                size_t out_len;
                CHECK(clv_tok_decode(t, ids, n, false, &out, &out_len, &st) == 0, "%s", st.msg);
                CHECK(same(out, out_len, text, text_len), "%s: round trip gave '%s'", label, out);
                free(out);
                n_rt++;
            }
            free(ids);
        }
        int n;
        int32_t *ids = json_ids(cJSON_GetObjectItem(c, "ids_special"), &n);
        for (int skip = 0; skip < 2; skip++) {
            char *out;
            size_t out_len, want_len;
            char *want = unhex(c, skip ? "decode_skip_hex" : "decode_hex", &want_len);
            CHECK(clv_tok_decode(t, ids, n, skip, &out, &out_len, &st) == 0, "%s", st.msg);
            CHECK(same(out, out_len, want, want_len), "%s: decode(skip=%d) '%s' != '%s'", label, skip, out, want);
            free(out);
            check_stream(t, ids, n, skip, want, want_len, label);
            free(want);
            g_decodes++;
        }
        free(ids);
        free(in);
        free(text);
        n_cases++;
    }
    int n_dec = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(doc, "decodes")) {
        int n;
        int32_t *ids = json_ids(cJSON_GetObjectItem(c, "ids"), &n);
        for (int skip = 0; skip < 2; skip++) {
            char *out;
            size_t out_len, want_len;
            char *want = unhex(c, skip ? "decode_skip_hex" : "decode_hex", &want_len);
            char label[64];
            snprintf(label, sizeof label, "%s: decodes[%d]", name, n_dec);
            CHECK(clv_tok_decode(t, ids, n, skip, &out, &out_len, &st) == 0, "%s", st.msg);
            CHECK(same(out, out_len, want, want_len), "%s (skip=%d): '%s' != '%s'", label, skip, out, want);
            free(out);
            check_stream(t, ids, n, skip, want, want_len, label);
            free(want);
            g_decodes++;
        }
        free(ids);
        n_dec++;
    }
    /* property: for random id sequences, streaming == full decode (no reference needed) */
    uint64_t rng = 88172645463325252ull;
    int nv = clv_tok_n_vocab(t);
    for (int k = 0; k < 300; k++) {
        int32_t ids[40];
        int n = 1 + (int)(k % 40);
        for (int i = 0; i < n; i++) {
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
            /* half the ids from the first 300 (bytes, specials, short tokens) */
            ids[i] = (int32_t)(rng % 2 ? (rng >> 8) % (uint64_t)(nv < 300 ? nv : 300) : (rng >> 8) % (uint64_t)nv);
        }
        for (int skip = 0; skip < 2; skip++) {
            char *out;
            size_t out_len;
            char label[64];
            snprintf(label, sizeof label, "%s: random[%d]", name, k);
            CHECK(clv_tok_decode(t, ids, n, skip, &out, &out_len, &st) == 0, "%s", st.msg);
            check_stream(t, ids, n, skip, out, out_len, label);
            free(out);
        }
    }
    printf("  %-20s %d texts (%d exact round trips), %d id sequences decoded\n", name, n_cases, n_rt, n_dec);
    g_cases += n_cases;
    cJSON_Delete(doc);
    clv_tok_free(t);
}

/* ---- refusals and malformed input: clear messages ------------------------------------------ */
static const char *BASE_MODEL = "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"]}";

static void expect_load_error(const char *json, const char *needle) {
    clv_tokenizer *t = NULL;
    clv_status st = {0};
    int rc = clv_tok_load_mem(&t, json, strlen(json), NULL, 0, "tokenizer.json", &st);
    CHECK_ERR(rc, st, needle);
    clv_tok_free(t);
}

static void test_refusals(void) {
    char j[2048];
    snprintf(j, sizeof j, "{%s,\"pre_tokenizer\":{\"type\":\"Whitespace\"}}", BASE_MODEL);
    expect_load_error(j, "pre_tokenizer type 'Whitespace' is not supported (supported: ByteLevel, Split");
    snprintf(j, sizeof j, "{%s,\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},{\"type\":\"Lowercase\"}]}}", BASE_MODEL);
    expect_load_error(j, "normalizer.normalizers[1]: normalizer type 'Lowercase' is not supported");
    snprintf(j, sizeof j, "{%s,\"decoder\":{\"type\":\"WordPiece\"}}", BASE_MODEL);
    expect_load_error(j, "decoder type 'WordPiece' is not supported");
    snprintf(j, sizeof j, "{%s,\"post_processor\":{\"type\":\"Weird\"}}", BASE_MODEL);
    expect_load_error(j, "post_processor type 'Weird' is not supported");
    expect_load_error("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", "model type 'WordPiece' is not supported (supported: BPE)");
    expect_load_error("{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", "model type 'Unigram' is not supported");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}}", "model.merges[0]: token \"b\" is not in the vocab");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a a a\"]}}", "two tokens separated by one space");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}", "model.vocab[\"a\"] must be an integer id");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"dropout\":0.1}}", "model.dropout is not supported");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"continuing_subword_prefix\":\"##\"}}",
                      "continuing_subword_prefix is not supported");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"unk_token\":\"<unk>\"}}",
                      "model.unk_token \"<unk>\" is not in the vocab");
    snprintf(j, sizeof j, "{%s,\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(unclosed\"},\"behavior\":\"Isolated\"}}", BASE_MODEL);
    expect_load_error(j, "regex /(unclosed/ does not compile");
    snprintf(j, sizeof j, "{%s,\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"x\"},\"behavior\":\"Sideways\"}}", BASE_MODEL);
    expect_load_error(j, "behavior 'Sideways' is not one of");
    snprintf(j, sizeof j, "{%s,\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
             "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":{}}}", BASE_MODEL);
    expect_load_error(j, "Missing SpecialToken(s) with id(s) '<s>'");
    expect_load_error("{\"version\":\"2.0\",\"model\":{}}", "unknown tokenizer version");
    expect_load_error("[1,2]", "not a JSON object");
    expect_load_error("{\"model\":", "not a JSON object (parse error)");
    /* JSON text is UTF-8: a raw byte that starts no character (here the lead
     * byte of 'é' alone, which the added-token matcher would otherwise find
     * inside an 'é' of the text and hand back to the decoder) is refused */
    snprintf(j, sizeof j, "{%s,\"added_tokens\":[{\"id\":3,\"content\":\"\xC3\",\"special\":false}]}", BASE_MODEL);
    char want[96];
    snprintf(want, sizeof want, "tokenizer.json: not valid UTF-8 (byte 0xC3 at offset %td)", strchr(j, '\xC3') - j);
    expect_load_error(j, want);
    expect_load_error("{\"a\":\"\xED\xA0\x80\"}", "not valid UTF-8 (byte 0xED at offset 6)"); /* a surrogate */
    {
        const char *tj = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}";
        const char *cfg = "{\"bos_token\":\"\xFF\"}";
        clv_tokenizer *t = NULL;
        clv_status st = {0};
        int rc = clv_tok_load_mem(&t, tj, strlen(tj), cfg, strlen(cfg), "tokenizer.json", &st);
        CHECK_ERR(rc, st, "tokenizer_config.json: not valid UTF-8 (byte 0xFF at offset 14)");
        clv_tok_free(t);
    }

    clv_tokenizer *t;
    clv_status st = {0};
    int rc = clv_tok_load(&t, "tests/fixtures/none", &st);
    CHECK_ERR(rc, st, "tests/fixtures/none/tokenizer.json: cannot open");
}

/* ---- a few direct behaviours -------------------------------------------------------------- */
static void test_misc(void) {
    /* a decoder step that leaves only empty strings (Strip of a lone " "), then
     * more steps over that empty list: "" out (under UBSan this also checks
     * that no offset is added to the list's absent buffer) */
    {
        const char *j = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\" \":1},\"merges\":[]},"
                        "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Strip\",\"content\":\" \","
                        "\"start\":1,\"stop\":0},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"}]}}";
        clv_tokenizer *t = NULL;
        clv_status st = {0};
        CHECK(clv_tok_load_mem(&t, j, strlen(j), NULL, 0, "tokenizer.json", &st) == 0, "%s", st.msg);
        if (t) {
            const int32_t ids[] = {1, 1, 0};
            char *out = NULL;
            size_t n = 99;
            CHECK(clv_tok_decode(t, ids, 2, false, &out, &n, &st) == 0 && n == 0 && out && !out[0], "decode of stripped spaces: '%s'", out ? out : "(null)");
            free(out);
            CHECK(clv_tok_decode(t, ids, 3, false, &out, &n, &st) == 0 && n == 1 && !strcmp(out, "a"), "decode: '%s'", out ? out : "(null)");
            free(out);
            clv_tok_free(t);
        }
    }
    /* the GPT-2 byte map: printable bytes are themselves, the rest 256.. in order */
    int next = 256;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        int want = keep ? b : next++;
        CHECK(tk_byte_to_cp[b] == want, "byte %d maps to %d, want %d", b, tk_byte_to_cp[b], want);
        CHECK(tk_cp_to_byte(want) == b, "cp %d maps back to %d", want, tk_cp_to_byte(want));
    }
    /* lossy UTF-8 = Python's errors="replace" */
    tk_buf b = {0};
    tk_utf8_lossy(&b, (const unsigned char *)"a\xF0\x9F\x98" "b\xED\xA0\x80" "c\xC0\xAF", 12);
    CHECK(b.p && !strcmp(b.p, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" "c\xEF\xBF\xBD\xEF\xBF\xBD"), "lossy: %s", b.p);
    tk_buf_free(&b);

    clv_tokenizer *t;
    clv_status st = {0};
    if (clv_tok_load(&t, FIXTURES "/llama3_real_pruned", &st)) { CHECK(0, "%s", st.msg); return; }
    CHECK(clv_tok_bos_id(t) == 128000 && clv_tok_eos_id(t) == 128001, "bos %d eos %d", clv_tok_bos_id(t), clv_tok_eos_id(t));
    CHECK(!strcmp(clv_tok_piece(t, 128000), "<|begin_of_text|>"), "piece 128000");
    CHECK(clv_tok_is_special(t, 128009) && !clv_tok_is_special(t, 40), "special flags");
    CHECK(clv_tok_token_id(t, "<|eot_id|>") == 128009, "token id of <|eot_id|>");
    CHECK(clv_tok_n_vocab(t) == 128256, "n_vocab %d", clv_tok_n_vocab(t));
    /* unknown ids are skipped, as tokenizers does */
    int32_t ids[3] = {9906, 5000000, -3};
    char *out;
    CHECK(clv_tok_decode(t, ids, 3, false, &out, NULL, &st) == 0 && !strcmp(out, "Hello"), "decode with bad ids: %s", out);
    free(out);

    /* speed: encode ~64 KB of mixed text */
    tk_buf big = {0};
    const char *para = "The quick brown fox jumps over the lazy dog. 你好，世界！ def f(x): return x**2 # 😀 "
                       "Ünïcödé ïs fün, 1234567 numbers\n\t and    spaces. ";
    while (big.len < 65536) tk_buf_put(&big, para, strlen(para));
    int32_t *enc;
    int n;
    double t0 = clv_now();
    int reps = 5;
    for (int r = 0; r < reps; r++) {
        CHECK(clv_tok_encode(t, big.p, big.len, true, &enc, &n, &st) == 0, "%s", st.msg);
        if (r < reps - 1) free(enc);
    }
    double enc_ms = (clv_now() - t0) * 1000 / reps;
    t0 = clv_now();
    CHECK(clv_tok_decode(t, enc, n, false, &out, NULL, &st) == 0, "%s", st.msg);
    double dec_ms = (clv_now() - t0) * 1000;
    CHECK(strcmp(out, big.p) == 0, "64 KB round trip");
    free(out);
    clv_tok_stream *s;
    t0 = clv_now();
    clv_tok_stream_new(&s, t, false, &st);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        const char *txt;
        size_t len;
        clv_tok_stream_push(s, enc[i], &txt, &len, &st);
        total += len;
    }
    const char *txt;
    size_t len;
    clv_tok_stream_flush(s, &txt, &len, &st);
    total += len;
    double str_ms = (clv_now() - t0) * 1000;
    clv_tok_stream_free(s);
    CHECK(total == big.len, "stream length %zu != %zu", total, big.len);
    printf("  speed (llama3_real_pruned): encode %zu bytes -> %d ids in %.2f ms (%.1f MB/s); decode %.2f ms; "
           "stream %.2f ms (%.2f us/token)\n", big.len, n, enc_ms, big.len / enc_ms / 1e3, dec_ms, str_ms, str_ms * 1e3 / n);
    CHECK(enc_ms < 2000, "encoding 64 KB took %.0f ms", enc_ms);
    free(enc);
    tk_buf_free(&big);
    clv_tok_free(t);
}

int main(void) {
    DIR *d = opendir(FIXTURES);
    CHECK(d != NULL, "cannot open " FIXTURES " (run from the repository root)");
    if (d) {
        char *names[64];
        int nn = 0;
        struct dirent *de;
        while ((de = readdir(d)) && nn < 64)
            if (de->d_name[0] != '.') names[nn++] = strdup(de->d_name);
        closedir(d);
        for (int i = 0; i < nn; i++)
            for (int j = i + 1; j < nn; j++)
                if (strcmp(names[i], names[j]) > 0) { char *x = names[i]; names[i] = names[j]; names[j] = x; }
        for (int i = 0; i < nn; i++) { check_fixture(names[i]); free(names[i]); }
        CHECK(nn >= 8, "only %d fixtures", nn);
    }
    printf("  %d texts, %d ids compared, %d decodes, %d streamed decodes\n", g_cases, g_ids, g_decodes, g_streams);
    test_refusals();
    test_misc();
    return check_report("test_tokenizer");
}
