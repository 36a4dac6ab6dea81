/* Whole-checkpoint validation: a model folder that does not match its
 * config.json is refused with a message naming the tensor and the file. */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "model/synth.h"
#include "runtime/runtime.h"
#include "util/util.h"

static char g_root[] = "/tmp/clv_ckpt_XXXXXX";

static void synth(const char *name, clv_arch arch, int shards, bool tie, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s", g_root, name);
    clv_synth_opts o;
    clv_synth_defaults(&o);
    o.arch = arch;
    o.hidden = 32;
    o.heads = 4;
    o.kv_heads = 2;
    o.intermediate = 48;
    o.vocab = 64;
    o.shards = shards;
    o.tie = tie;
    o.out_dir = out;
    clv_status st = {0};
    int rc = clv_synth_write(&o, &st);
    CHECK(rc == 0, "synth %s: %s", name, st.msg);
}

static void write_text(const char *dir, const char *file, const char *text) {
    char p[512];
    clv_status st = {0};
    snprintf(p, sizeof p, "%s/%s", dir, file);
    CHECK(clv_write_file(p, text, strlen(text), &st) == 0, "write %s", p);
}

static char *read_text(const char *dir, const char *file) {
    char p[512], *t = NULL;
    clv_status st = {0};
    snprintf(p, sizeof p, "%s/%s", dir, file);
    CHECK(clv_read_file(p, &t, NULL, &st) == 0, "read %s", p);
    return t;
}

/* Replace the first `from` in dir/file with `to`. */
static void edit(const char *dir, const char *file, const char *from, const char *to) {
    char *t = read_text(dir, file);
    if (!t) return;
    char *at = strstr(t, from);
    CHECK(at != NULL, "'%s' not in %s", from, file);
    if (at) {
        size_t n = strlen(t) + strlen(to) + 1;
        char *o = malloc(n);
        snprintf(o, n, "%.*s%s%s", (int)(at - t), t, to, at + strlen(from));
        write_text(dir, file, o);
        free(o);
    }
    free(t);
}

static void expect_load_error(const char *dir, const char *needle, const char *needle2) {
    clv_model *m = NULL;
    clv_status st = {0};
    clv_load_opts lo = {.n_threads = 1};
    int rc = clv_model_load(&m, dir, &lo, &st);
    CHECK_ERR(rc, st, needle);
    if (needle2) CHECK(strstr(st.msg, needle2) != NULL, "message '%s' does not mention '%s'", st.msg, needle2);
    if (!rc) clv_model_free(m);
}

int main(void) {
    CHECK(mkdtemp(g_root) != NULL, "mkdtemp");
    char d[256];
    clv_status st = {0};

    /* baseline loads */
    synth("ok", CLV_ARCH_LLAMA, 1, false, d, sizeof d);
    clv_model *m = NULL;
    clv_load_opts lo = {.n_threads = 1};
    CHECK(clv_model_load(&m, d, &lo, &st) == 0, "baseline: %s", st.msg);
    clv_model_free(m);

    /* config says a different size: wrong shape, naming tensor and file */
    synth("shape", CLV_ARCH_LLAMA, 1, false, d, sizeof d);
    edit(d, "config.json", "\"intermediate_size\": 48", "\"intermediate_size\": 40");
    expect_load_error(d, "has shape [48, 32], expected [40, 32]", "model.safetensors");

    /* missing tensor: config asks for an lm_head the file lacks (tied file, untied config) */
    synth("missing", CLV_ARCH_LLAMA, 1, true, d, sizeof d);
    edit(d, "config.json", "\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false");
    expect_load_error(d, "tensor 'lm_head.weight' is missing", NULL);

    /* unexpected tensor: Qwen2 file (q/k/v biases) under a Llama config */
    synth("unexpected", CLV_ARCH_QWEN2, 1, false, d, sizeof d);
    edit(d, "config.json", "Qwen2ForCausalLM", "LlamaForCausalLM");
    expect_load_error(d, "unexpected tensor 'model.layers.0.self_attn.k_proj.bias'", "model.safetensors");

    /* index naming a missing shard */
    synth("shards", CLV_ARCH_QWEN3, 3, false, d, sizeof d);
    CHECK(clv_model_load(&m, d, &lo, &st) == 0, "sharded baseline: %s", st.msg);
    if (m) clv_model_free(m);
    m = NULL;
    edit(d, "model.safetensors.index.json", "model-00003-of-00003.safetensors", "model-00004-of-00003.safetensors");
    expect_load_error(d, "names shard 'model-00004-of-00003.safetensors', which does not exist", NULL);

    /* index listing a tensor under the wrong shard */
    synth("wrongshard", CLV_ARCH_LLAMA, 2, false, d, sizeof d);
    edit(d, "model.safetensors.index.json", "\"lm_head.weight\": \"model-00002-of-00002", "\"lm_head.weight\": \"model-00001-of-00002");
    expect_load_error(d, "says tensor 'lm_head.weight' is in model-00001-of-00002.safetensors", NULL);

    /* a shard tensor the index does not list */
    synth("unlisted", CLV_ARCH_LLAMA, 2, false, d, sizeof d);
    edit(d, "model.safetensors.index.json", "    \"lm_head.weight\": \"model-00002-of-00002.safetensors\",\n", "");
    expect_load_error(d, "tensor 'lm_head.weight' is not listed", NULL);

    /* the same tensor in two shards */
    synth("dup", CLV_ARCH_LLAMA, 2, false, d, sizeof d);
    {
        char p[512];
        snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", d);
        /* rewrite shard 1 so that it also holds a tensor of shard 2 */
        clv_st_set set;
        char sp[512];
        snprintf(sp, sizeof sp, "%s/dupsrc", g_root);
        mkdir(sp, 0755);
        CHECK(clv_st_open_dir(&set, d, &st) == 0, "open dup src: %s", st.msg);
        int n1 = 0, f1 = strstr(set.files[0].path, "model-00001-of") ? 0 : 1;
        const char *moved = NULL;
        clv_st_wtensor *ws = calloc((size_t)set.n_tensors + 1, sizeof *ws);
        for (int i = 0; i < set.n_tensors; i++) {
            const clv_st_tensor *t = &set.tensors[i];
            if (t->file == f1 || !moved)
                ws[n1++] = (clv_st_wtensor){t->name, t->dtype, t->ndim, {t->shape[0], t->shape[1]}, clv_st_data(&set, t)};
            if (t->file != f1 && !moved) moved = t->name;
        }
        snprintf(sp, sizeof sp, "%s/dupsrc/s.safetensors", g_root);
        CHECK(clv_st_write(sp, ws, n1, "pt", &st) == 0, "write dup: %s", st.msg);
        char needle[160];
        snprintf(needle, sizeof needle, "tensor '%s' appears in both", moved ? moved : "?");
        clv_st_close(&set);
        free(ws);
        CHECK(rename(sp, p) == 0, "rename");
        expect_load_error(d, needle, NULL);
    }

    /* unsupported architecture and unsupported math, each listing what is supported */
    synth("arch", CLV_ARCH_LLAMA, 1, false, d, sizeof d);
    edit(d, "config.json", "LlamaForCausalLM", "GPT2LMHeadModel");
    expect_load_error(d, "architecture GPT2LMHeadModel is not supported", "LlamaForCausalLM, MistralForCausalLM");
    synth("rope", CLV_ARCH_LLAMA, 1, false, d, sizeof d);
    edit(d, "config.json", "\"rope_type\": \"default\"", "\"rope_type\": \"longrope\", \"factor\": 2.0");
    expect_load_error(d, "rope type \"longrope\" is not supported", "linear, llama3, yarn");
    synth("act", CLV_ARCH_LLAMA, 1, false, d, sizeof d);
    edit(d, "config.json", "\"silu\"", "\"gelu\"");
    expect_load_error(d, "hidden_act gelu is not supported", "silu");
    synth("softcap", CLV_ARCH_LLAMA, 1, false, d, sizeof d);
    edit(d, "config.json", "\"attention_dropout\"", "\"final_logit_softcapping\": 30.0, \"attention_dropout\"");
    expect_load_error(d, "final_logit_softcapping", NULL);
    synth("prf", CLV_ARCH_LLAMA, 1, false, d, sizeof d);
    edit(d, "config.json", "\"attention_dropout\"", "\"partial_rotary_factor\": 0.5, \"attention_dropout\"");
    expect_load_error(d, "partial_rotary_factor 0.5 is not supported", NULL);
    synth("heads", CLV_ARCH_LLAMA, 1, false, d, sizeof d);
    edit(d, "config.json", "\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3");
    expect_load_error(d, "not a multiple of num_key_value_heads 3", NULL);
    synth("noconfig", CLV_ARCH_LLAMA, 1, false, d, sizeof d);
    write_text(d, "config.json", "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 32");
    expect_load_error(d, "config.json: not a valid JSON object", NULL);
    synth("nohidden", CLV_ARCH_LLAMA, 1, false, d, sizeof d);
    edit(d, "config.json", "\"hidden_size\"", "\"hidden_sizes\"");
    expect_load_error(d, "required key \"hidden_size\" is missing", NULL);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
    CHECK(system(cmd) == 0, "cleanup");
    return check_report("test_checkpoint");
}
