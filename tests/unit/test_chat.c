/* Chat templates against jinja2 + transformers' apply_chat_template: every case
 * of tests/fixtures/chat/<name>/cases.json (made by tests/hf/make_tok_fixtures.py)
 * must render to exactly the recorded text (or fail where the template raises),
 * and, where ids are recorded, clv_tok_apply_chat + encode must give exactly
 * apply_chat_template(tokenize=True)'s ids. Then errors for unsupported Jinja. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <string.h>

#include "check.h"
#include "tokenizer/jinja.h"
#include "tokenizer/tokenizer.h"
#include "util/util.h"

#define CHAT "tests/fixtures/chat"
#define TOK "tests/fixtures/tok"

static int g_rendered, g_raised, g_ids;

static char *slurp(const char *path, size_t *len) {
    char *b = NULL;
    clv_status st = {0};
    if (clv_read_file(path, &b, len, &st)) { CHECK(0, "%s", st.msg); return NULL; }
    return b;
}

static void check_dir(const char *name) {
    char path[512];
    size_t len, tlen, clen;
    snprintf(path, sizeof path, CHAT "/%s/cases.json", name);
    char *buf = slurp(path, &len);
    if (!buf) return;
    cJSON *doc = cJSON_Parse(buf);
    free(buf);
    CHECK(doc, "%s: cases.json", name);
    if (!doc) return;
    snprintf(path, sizeof path, CHAT "/%s/tokenizer_config.json", name);
    char *cfg = slurp(path, &clen);
    cJSON *cfgj = cfg ? cJSON_Parse(cfg) : NULL;
    const char *tmpl = cfgj ? cJSON_GetObjectItem(cfgj, "chat_template")->valuestring : "";
    snprintf(path, sizeof path, TOK "/%s/tokenizer.json", cJSON_GetObjectItem(doc, "tokenizer")->valuestring);
    char *tj = slurp(path, &tlen);
    clv_tokenizer *t = NULL;
    clv_status st = {0};
    if (tj && cfg) CHECK(clv_tok_load_mem(&t, tj, tlen, cfg, clen, path, &st) == 0, "%s: %s", name, st.msg);
    CHECK(t && clv_tok_chat_template(t) && !strcmp(clv_tok_chat_template(t), tmpl), "%s: template from tokenizer_config.json", name);
    int n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(doc, "cases")) {
        const char *cname = cJSON_GetObjectItem(c, "name")->valuestring;
        const cJSON *vars = cJSON_GetObjectItem(c, "vars"), *want = cJSON_GetObjectItem(c, "rendered"),
                    *err = cJSON_GetObjectItem(c, "error");
        char *out = NULL;
        size_t out_len = 0;
        int rc = clv_jinja_render(tmpl, strlen(tmpl), vars, &out, &out_len, &st);
        if (want) {
            CHECK(rc == 0, "%s/%s: %s", name, cname, st.msg);
            if (rc == 0) {
                bool ok = out_len == strlen(want->valuestring) && !memcmp(out, want->valuestring, out_len);
                CHECK(ok, "%s/%s: rendered text differs\n--- jinja2:\n%s\n--- cleave:\n%s\n---", name, cname, want->valuestring, out);
                g_rendered++;
            }
        } else {
            CHECK(rc != 0 && strstr(st.msg, "raise_exception") && strstr(st.msg, err->valuestring),
                  "%s/%s: want the template to raise '%s', got rc=%d '%s'", name, cname, err->valuestring, rc, st.msg);
            g_raised++;
        }
        free(out);
        /* through the tokenizer: clv_tok_apply_chat + encode without special tokens */
        const cJSON *ids = cJSON_GetObjectItem(c, "ids");
        if (ids && t) {
            const cJSON *msgs = cJSON_GetObjectItem(vars, "messages"), *m;
            clv_chat_msg cm[16];
            int k = 0;
            cJSON_ArrayForEach(m, msgs) if (k < 16) {
                cm[k].role = cJSON_GetObjectItem(m, "role")->valuestring;
                cm[k].content = cJSON_GetObjectItem(m, "content")->valuestring;
                k++;
            }
            char *text = NULL;
            rc = clv_tok_apply_chat(t, NULL, cm, k, cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt")), &text, &st);
            CHECK(rc == 0 && want && !strcmp(text, want->valuestring), "%s/%s: apply_chat: %s", name, cname, rc ? st.msg : text);
            int32_t *got;
            int ng;
            if (rc == 0 && clv_tok_encode(t, text, strlen(text), false, &got, &ng, &st) == 0) {
                bool same = cJSON_GetArraySize(ids) == ng;
                int i = 0;
                const cJSON *e;
                cJSON_ArrayForEach(e, ids) if (same) same = (int32_t)e->valuedouble == got[i++];
                CHECK(same, "%s/%s: ids differ from apply_chat_template(tokenize=True)", name, cname);
                g_ids += ng;
                free(got);
            }
            free(text);
        }
        n++;
    }
    printf("  %-12s %d cases (%s)\n", name, n, cJSON_GetObjectItem(doc, "about")->valuestring);
    clv_tok_free(t);
    cJSON_Delete(cfgj);
    free(cfg);
    free(tj);
    cJSON_Delete(doc);
}

static void expect_error(const char *tmpl, const char *needle) {
    char *out = NULL;
    clv_status st = {0};
    cJSON *vars = cJSON_Parse("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"n\": 3}");
    int rc = clv_jinja_render(tmpl, strlen(tmpl), vars, &out, NULL, &st);
    CHECK_ERR(rc, st, needle);
    free(out);
    cJSON_Delete(vars);
}

static void expect_render(const char *tmpl, const char *want) {
    char *out = NULL;
    clv_status st = {0};
    cJSON *vars = cJSON_Parse("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"n\": 3}");
    int rc = clv_jinja_render(tmpl, strlen(tmpl), vars, &out, NULL, &st);
    CHECK(rc == 0 && !strcmp(out, want), "render '%s': want '%s', got '%s'", tmpl, want, rc ? st.msg : out);
    free(out);
    cJSON_Delete(vars);
}

int main(void) {
    DIR *d = opendir(CHAT);
    CHECK(d != NULL, "cannot open " CHAT);
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
        for (int i = 0; i < nn; i++) { check_dir(names[i]); free(names[i]); }
    }
    printf("  %d renders equal to jinja2, %d raise_exception cases, %d ids equal to apply_chat_template\n", g_rendered,
           g_raised, g_ids);

    expect_error("{% include 'x.j2' %}", "line 1: the 'include' tag is not supported");
    expect_error("{% for m in messages %}", "missing {% endfor %}");
    expect_error("{{ messages | wordcount }}", "filter 'wordcount' is not supported");
    expect_error("{{ 1 is prime }}", "test 'prime' is not supported");
    expect_error("{{ 'a'.zfill(3) }}", "'zfill' is undefined or not callable");
    expect_error("\n\n{{ 1 / 0 }}", "line 3: division by zero");
    expect_error("{{ raise_exception('boom') }}", "raise_exception: boom");
    expect_error("{{ 'unterminated }}", "unterminated string literal");
    expect_error("{% set x = %}", "unexpected");
    expect_error("{% for i in range(100000000) %}{% endfor %}", "too long");
    char deep[1200] = "{{ ";
    for (int i = 0; i < 300; i++) strcat(deep, "(");
    strcat(deep, "1");
    for (int i = 0; i < 300; i++) strcat(deep, ")");
    strcat(deep, " }}");
    expect_error(deep, "nested too deeply");
    expect_render("  {%- if true %}\n  x\n{% endif %}", "  x\n");
    expect_render("a\n  {% if true %}\nb\n  {% endif %}\nc\n", "a\nb\nc");
    expect_render("{{ n }}{# c #}\n{{ n -}}   \n  {{- n }}", "333");
    expect_render("{%+ if true %}x{% endif +%}\ny", "x\ny");
    expect_render("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }},{% endfor %}", "3,7,");
    expect_render("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}", "1");
    expect_render("{{ messages[0].content ~ messages[0]['role'] ~ messages[-1].missing }}", "hiuser");
    return check_report("test_chat");
}
