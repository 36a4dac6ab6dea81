/* The tokenizer CLI pieces (src/cli/tokcli.c, compiled in here because unit
 * tests link only libcleave.a): clv_cli_prompt for -p and --chat against the
 * transformers fixtures, and clv_cli_tokenize's output and exit codes. */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "../../src/cli/tokcli.c"
#include "check.h"

/* run clv_cli_tokenize with stdout/stderr captured */
static int run_cli(char **argv, int argc, char *out, size_t cap, char *err, size_t ecap) {
    char fo[] = "/tmp/cleave-tokcli-out.XXXXXX", fe[] = "/tmp/cleave-tokcli-err.XXXXXX";
    int o = mkstemp(fo), e = mkstemp(fe);
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    dup2(o, 1);
    dup2(e, 2);
    int rc = clv_cli_tokenize(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    lseek(o, 0, SEEK_SET);
    lseek(e, 0, SEEK_SET);
    ssize_t n = read(o, out, cap - 1);
    out[n > 0 ? n : 0] = 0;
    n = read(e, err, ecap - 1);
    err[n > 0 ? n : 0] = 0;
    close(o);
    close(e);
    unlink(fo);
    unlink(fe);
    return rc;
}

int main(void) {
    clv_status st = {0};
    clv_tokenizer *tok = NULL;
    int32_t *ids;
    int n;
    /* -p: special tokens from the post-processor (Llama 3 style: BOS first) */
    CHECK(clv_cli_prompt("tests/fixtures/tok/llama3_bytelevel", "Hello world", NULL, NULL, &ids, &n, &tok, &st) == 0, "%s", st.msg);
    CHECK(n > 1 && ids[0] == clv_tok_token_id(tok, "<|begin_of_text|>"), "-p adds BOS: first id %d", n ? ids[0] : -1);
    free(ids);
    clv_tok_free(tok);
    tok = NULL;

    /* --chat + --system: the same ids as transformers' apply_chat_template(tokenize=True) */
    char *buf;
    size_t len;
    CHECK(clv_read_file("tests/fixtures/chat/llama3/cases.json", &buf, &len, &st) == 0, "%s", st.msg);
    cJSON *doc = cJSON_Parse(buf);
    free(buf);
    const cJSON *c, *want = NULL;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(doc, "cases"))
        if (!strcmp(cJSON_GetObjectItem(c, "name")->valuestring, "system_user_gen")) want = cJSON_GetObjectItem(c, "ids");
    CHECK(want != NULL, "fixture case system_user_gen");
    /* the chat fixture's tokenizer_config (with the template) + the tok fixture's tokenizer.json */
    char *tj, *cfg;
    size_t tl, cl;
    clv_read_file("tests/fixtures/tok/llama3_real_pruned/tokenizer.json", &tj, &tl, &st);
    clv_read_file("tests/fixtures/chat/llama3/tokenizer_config.json", &cfg, &cl, &st);
    CHECK(clv_tok_load_mem(&tok, tj, tl, cfg, cl, "tokenizer.json", &st) == 0, "%s", st.msg);
    free(tj);
    free(cfg);
    int rc = clv_cli_prompt(NULL, NULL, "  Explain BPE in one line.  ", "You are a terse assistant.", &ids, &n, &tok, &st);
    CHECK(rc == 0, "%s", st.msg);
    if (rc == 0 && want) {
        bool same = cJSON_GetArraySize(want) == n;
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, want) if (same) same = (int32_t)e->valuedouble == ids[i++];
        CHECK(same, "--chat ids differ from apply_chat_template");
        free(ids);
    }
    CHECK_ERR(clv_cli_prompt(NULL, "a", "b", NULL, &ids, &n, &tok, &st), st, "exactly one of -p TEXT and --chat MSG");
    CHECK_ERR(clv_cli_prompt(NULL, "a", NULL, "s", &ids, &n, &tok, &st), st, "--system needs --chat");
    clv_tok_free(tok);
    cJSON_Delete(doc);
    tok = NULL;
    CHECK_ERR(clv_cli_prompt("tests/fixtures/tok/gpt2_bytelevel", NULL, "hi", NULL, &ids, &n, &tok, &st), st, "no chat template");
    CHECK(tok == NULL, "tokenizer freed on error");

    /* clv_cli_tokenize */
    char out[8192], err[4096];
    char *a1[] = {"cleave", "tokenize", "-m", "tests/fixtures/tok/llama3_real_pruned", "-p", "Hello world", NULL};
    /* this tokenizer.json (Meta's own) has a ByteLevel post-processor: no BOS is added */
    CHECK(run_cli(a1, 6, out, sizeof out, err, sizeof err) == 0 && !strcmp(out, "[9906, 1917]\n"), "tokenize: '%s' '%s'", out, err);
    char *a2[] = {"cleave", "tokenize", "-m", "tests/fixtures/tok/llama3_real_pruned", "-p", "Hello world", "--no-special", "--verbose", NULL};
    CHECK(run_cli(a2, 8, out, sizeof out, err, sizeof err) == 0 && !strcmp(out, "[9906, 1917]\n9906\t\"Hello\"\n1917\t\"\xC4\xA0world\"\n"),
          "tokenize --verbose: '%s'", out);
    char *a3[] = {"cleave", "tokenize", "-m", "tests/fixtures/tok/llama3_real_pruned", "--bogus", NULL};
    CHECK(run_cli(a3, 5, out, sizeof out, err, sizeof err) == 2 && strstr(err, "unknown option '--bogus'"), "bad option: %s", err);
    char *a4[] = {"cleave", "tokenize", "-m", "tests/fixtures/none", "-p", "x", NULL};
    CHECK(run_cli(a4, 6, out, sizeof out, err, sizeof err) == 1 && strstr(err, "tests/fixtures/none/tokenizer.json: cannot open"), "missing dir: %s", err);
    char *a5[] = {"cleave", "tokenize", "--help", NULL};
    CHECK(run_cli(a5, 3, out, sizeof out, err, sizeof err) == 0 && strstr(out, "usage: cleave tokenize"), "help");
    char *a6[] = {"cleave", "tokenize", "-m", "tests/fixtures/tok/llama3_real_pruned", NULL};
    CHECK(run_cli(a6, 4, out, sizeof out, err, sizeof err) == 2 && strstr(err, "give -p TEXT or --chat MSG"), "no text: %s", err);
    return check_report("test_tokcli");
}
