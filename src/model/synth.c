#include "synth.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "../util/util.h"
#include "../format/json.h"
#include "arch.h"

void clv_synth_defaults(clv_synth_opts *o) {
    memset(o, 0, sizeof *o);
    o->arch = CLV_ARCH_LLAMA;
    o->hidden = 64;
    o->layers = 2;
    o->heads = 4;
    o->kv_heads = 4;
    o->intermediate = 128;
    o->vocab = 256;
    o->max_pos = 2048;
    o->dtype = CLV_DT_F32;
    o->seed = 1;
    o->shards = 1;
    o->rope = CLV_ROPE_DEFAULT;
    o->rope_factor = 1.0;
    o->rope_theta = 10000.0;
}

/* The transformers release whose save_pretrained layout this reproduces
 * (tests/fixtures/hf holds checkpoints it wrote). */
#define CLV_SYNTH_TRANSFORMERS_VERSION "5.23.0"

static const char *k_model_type[CLV_ARCH_COUNT] = {"llama", "mistral", "qwen2", "qwen3", "phi3"};

/* config.json with the keys transformers writes for the class, sorted as its
 * to_json_string(sort_keys=True) writes them. */
static char *make_config(const clv_synth_opts *o, const clv_config *c) {
    cJSON *r = cJSON_CreateObject();
    cJSON *archs = cJSON_AddArrayToObject(r, "architectures");
    cJSON_AddItemToArray(archs, cJSON_CreateString(clv_arch_name(o->arch)));
    const bool qwen = o->arch == CLV_ARCH_QWEN2 || o->arch == CLV_ARCH_QWEN3;
    const bool phi3 = o->arch == CLV_ARCH_PHI3;
    if (o->arch != CLV_ARCH_QWEN2 && !phi3) cJSON_AddBoolToObject(r, "attention_bias", o->attention_bias);
    clv_json_add_float(r, "attention_dropout", 0.0);
    cJSON_AddNumberToObject(r, "bos_token_id", c->bos_id);
    cJSON_AddStringToObject(r, "dtype", o->dtype == CLV_DT_BF16 ? "bfloat16" : o->dtype == CLV_DT_F16 ? "float16" : "float32");
    if (phi3) clv_json_add_float(r, "embd_pdrop", 0.0);
    cJSON_AddNumberToObject(r, "eos_token_id", c->eos_ids[0]);
    if (o->arch != CLV_ARCH_QWEN2 && !phi3) cJSON_AddNumberToObject(r, "head_dim", c->head_dim); /* Qwen2, Phi-3 derive it */
    cJSON_AddStringToObject(r, "hidden_act", "silu");
    cJSON_AddNumberToObject(r, "hidden_size", o->hidden);
    clv_json_add_float(r, "initializer_range", 0.02);
    cJSON_AddNumberToObject(r, "intermediate_size", o->intermediate);
    if (qwen) {
        cJSON *lt = cJSON_AddArrayToObject(r, "layer_types");
        for (int l = 0; l < o->layers; l++)
            cJSON_AddItemToArray(lt, cJSON_CreateString(o->sliding_window ? "sliding_attention" : "full_attention"));
    }
    cJSON_AddNumberToObject(r, "max_position_embeddings", o->max_pos);
    if (qwen) cJSON_AddNumberToObject(r, "max_window_layers", o->sliding_window ? 0 : 28);
    if (o->arch == CLV_ARCH_LLAMA) cJSON_AddBoolToObject(r, "mlp_bias", false);
    cJSON_AddStringToObject(r, "model_type", k_model_type[o->arch]);
    cJSON_AddNumberToObject(r, "num_attention_heads", o->heads);
    cJSON_AddNumberToObject(r, "num_hidden_layers", o->layers);
    cJSON_AddNumberToObject(r, "num_key_value_heads", o->kv_heads);
    if (phi3) cJSON_AddNumberToObject(r, "original_max_position_embeddings", o->max_pos);
    cJSON_AddNullToObject(r, "pad_token_id");
    if (o->arch == CLV_ARCH_LLAMA) cJSON_AddNumberToObject(r, "pretraining_tp", 1);
    if (phi3) clv_json_add_float(r, "resid_pdrop", 0.0);
    clv_json_add_float(r, "rms_norm_eps", 1e-6);
    cJSON *rp = cJSON_AddObjectToObject(r, "rope_parameters");
    if (o->rope != CLV_ROPE_DEFAULT) clv_json_add_float(rp, "factor", o->rope_factor);
    if (phi3) clv_json_add_float(rp, "partial_rotary_factor", 1.0);
    if (o->rope == CLV_ROPE_LLAMA3) {
        clv_json_add_float(rp, "high_freq_factor", 4.0);
        clv_json_add_float(rp, "low_freq_factor", 1.0);
    }
    if (o->rope == CLV_ROPE_LLAMA3 || o->rope == CLV_ROPE_YARN)
        cJSON_AddNumberToObject(rp, "original_max_position_embeddings", o->rope_orig_max_pos);
    clv_json_add_float(rp, "rope_theta", o->rope_theta);
    cJSON_AddStringToObject(rp, "rope_type", clv_rope_name(o->rope));
    if (o->arch == CLV_ARCH_MISTRAL || qwen || phi3) {
        if (o->sliding_window) cJSON_AddNumberToObject(r, "sliding_window", o->sliding_window);
        else cJSON_AddNullToObject(r, "sliding_window");
    }
    cJSON_AddBoolToObject(r, "tie_word_embeddings", o->tie);
    cJSON_AddStringToObject(r, "transformers_version", CLV_SYNTH_TRANSFORMERS_VERSION);
    cJSON_AddBoolToObject(r, "use_cache", true);
    if (qwen) cJSON_AddBoolToObject(r, "use_sliding_window", o->sliding_window > 0);
    cJSON_AddNumberToObject(r, "vocab_size", o->vocab);
    char *s = clv_json_print_py(r);
    cJSON_Delete(r);
    size_t n = strlen(s);
    s = realloc(s, n + 2);
    CLV_CHECK(s != NULL, "realloc");
    memcpy(s + n, "\n", 2);
    return s;
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static uint64_t mix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Fill with uniform values of mean `mean` and standard deviation `sd`. */
static void fill(void *dst, clv_dtype dt, size_t n, uint64_t seed, double mean, double sd) {
    uint64_t s = seed;
    const float a = (float)(sd * sqrt(3.0));
    for (size_t i = 0; i < n; i++) {
        float u = (float)((double)(mix(&s) >> 40) * 0x1.0p-24) * 2.0f - 1.0f;
        float v = (float)mean + a * u;
        if (dt == CLV_DT_F32) ((float *)dst)[i] = v;
        else if (dt == CLV_DT_BF16) ((uint16_t *)dst)[i] = clv_f32_to_bf16(v);
        else ((uint16_t *)dst)[i] = clv_f32_to_f16(v);
    }
}

int clv_synth_write(const clv_synth_opts *o, clv_status *st) {
    if (o->hidden < 1 || o->layers < 1 || o->heads < 1 || o->kv_heads < 1 || o->intermediate < 1 || o->vocab < 3)
        return clv_fail(st, CLV_EINVAL, "synth: sizes must be positive (vocab >= 3)");
    if (o->heads % o->kv_heads) return clv_fail(st, CLV_EINVAL, "synth: --heads %d is not a multiple of --kv-heads %d", o->heads, o->kv_heads);
    if (o->arch == CLV_ARCH_QWEN2 && o->head_dim && o->head_dim * o->heads != o->hidden)
        return clv_fail(st, CLV_EINVAL, "synth: Qwen2 has no head_dim key: --head-dim must equal --hidden / --heads");
    if (o->arch == CLV_ARCH_PHI3 && (o->attention_bias || (o->head_dim && o->head_dim * o->heads != o->hidden)))
        return clv_fail(st, CLV_EINVAL, "synth: Phi-3 has no attention bias and derives head_dim from --hidden / --heads");
    if (o->arch == CLV_ARCH_QWEN2 && o->attention_bias)
        return clv_fail(st, CLV_EINVAL, "synth: Qwen2 always has q/k/v biases and no attention_bias key");
    if (!o->head_dim && o->hidden % o->heads) return clv_fail(st, CLV_EINVAL, "synth: --hidden %d is not divisible by --heads %d (give --head-dim)", o->hidden, o->heads);
    if (o->shards < 1) return clv_fail(st, CLV_EINVAL, "synth: --shards must be >= 1");
    if (o->dtype != CLV_DT_F32 && o->dtype != CLV_DT_BF16 && o->dtype != CLV_DT_F16)
        return clv_fail(st, CLV_EINVAL, "synth: --dtype must be f32, bf16 or f16");
    if (o->rope != CLV_ROPE_DEFAULT && !(o->rope_factor >= 1)) return clv_fail(st, CLV_EINVAL, "synth: --rope-factor must be >= 1");
    if ((o->head_dim ? o->head_dim : o->hidden / o->heads) % 2)
        return clv_fail(st, CLV_EINVAL, "synth: head_dim %d must be even (RoPE rotates pairs)", o->head_dim ? o->head_dim : o->hidden / o->heads);
    if (!(o->rope_theta > 1)) return clv_fail(st, CLV_EINVAL, "synth: --rope-theta must be > 1");
    if (mkdir(o->out_dir, 0755) != 0 && errno != EEXIST)
        return clv_fail(st, CLV_EIO, "%s: cannot create: %s", o->out_dir, strerror(errno));

    /* The config we are about to describe, normalised, drives the tensor list. */
    clv_config c = {0};
    c.arch = o->arch;
    c.hidden = o->hidden;
    c.n_layers = o->layers;
    c.n_heads = o->heads;
    c.n_kv_heads = o->kv_heads;
    c.head_dim = o->head_dim ? o->head_dim : o->hidden / o->heads;
    c.intermediate = o->intermediate;
    c.vocab = o->vocab;
    c.tie_embeddings = o->tie;
    c.qkv_bias = o->arch == CLV_ARCH_QWEN2 || o->attention_bias;
    c.o_bias = o->arch != CLV_ARCH_QWEN2 && o->attention_bias;
    c.qk_norm = o->arch == CLV_ARCH_QWEN3;
    c.fused = o->arch == CLV_ARCH_PHI3;
    c.bos_id = 1;
    c.eos_ids[0] = 2;
    c.n_eos = 1;
    if (c.n_layers > CLV_MAX_LAYERS) return clv_fail(st, CLV_EINVAL, "synth: at most %d layers", CLV_MAX_LAYERS);

    int cap = clv_arch_max_tensors(&c), rc = 0;
    clv_wdesc *d = calloc((size_t)cap, sizeof *d);
    clv_st_wtensor *wt = calloc((size_t)cap, sizeof *wt);
    void **bufs = calloc((size_t)cap, sizeof *bufs);
    char *cfg_json = NULL, path[4096];
    if (!d || !wt || !bufs) {
        rc = clv_fail(st, CLV_ENOMEM, "synth: out of memory");
        goto done;
    }
    int n = clv_arch_tensors(&c, d, cap);
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t numel = (size_t)d[i].shape[0] * (size_t)(d[i].ndim == 2 ? d[i].shape[1] : 1);
        size_t bytes = numel * clv_dtype_size(o->dtype);
        if (!(bufs[i] = malloc(bytes ? bytes : 1))) {
            rc = clv_fail(st, CLV_ENOMEM, "synth: out of memory for %s (%zu bytes)", d[i].name, bytes);
            goto done;
        }
        /* Scales that keep activations O(1) and give logits a clear spread,
         * so greedy decoding is not decided by rounding noise. */
        double mean = 0, sd;
        switch (d[i].slot) {
        case CLV_W_EMBED: sd = 1.0; break;
        case CLV_W_LM_HEAD: sd = 2.0 / sqrt((double)d[i].shape[1]); break;
        case CLV_W_NORM: case CLV_W_ATTN_NORM: case CLV_W_FFN_NORM: case CLV_W_Q_NORM: case CLV_W_K_NORM:
            mean = 1.0; sd = 0.1; break;
        default: sd = d[i].ndim == 1 ? 0.1 : 1.0 / sqrt((double)d[i].shape[1]); break;
        }
        fill(bufs[i], o->dtype, numel, o->seed ^ fnv1a(d[i].name), mean, sd);
        wt[i] = (clv_st_wtensor){d[i].name, o->dtype, d[i].ndim, {d[i].shape[0], d[i].shape[1]}, bufs[i]};
        total += bytes;
    }

    if (!(cfg_json = make_config(o, &c))) {
        rc = clv_fail(st, CLV_ENOMEM, "synth: out of memory");
        goto done;
    }
    if ((rc = clv_path_join(path, sizeof path, o->out_dir, "config.json", st)) ||
        (rc = clv_write_file(path, cfg_json, strlen(cfg_json), st)))
        goto done;
    static const char gen[] = "{\n  \"_from_model_config\": true,\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n"
                              "  \"output_attentions\": false,\n  \"output_hidden_states\": false,\n"
                              "  \"transformers_version\": \"" CLV_SYNTH_TRANSFORMERS_VERSION "\",\n  \"use_cache\": true\n}\n";
    if ((rc = clv_path_join(path, sizeof path, o->out_dir, "generation_config.json", st)) ||
        (rc = clv_write_file(path, gen, strlen(gen), st)))
        goto done;

    if (o->shards == 1) {
        if ((rc = clv_path_join(path, sizeof path, o->out_dir, "model.safetensors", st))) goto done;
        rc = clv_st_write(path, wt, n, "pt", st);
        goto done;
    }
    /* Shards in state-dict order, split by cumulative bytes, as save_pretrained does. */
    int shards = o->shards < n ? o->shards : n;
    cJSON *idx = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(idx, "metadata");
    uint64_t params = 0;
    for (int i = 0; i < n; i++) params += (uint64_t)d[i].shape[0] * (uint64_t)(d[i].ndim == 2 ? d[i].shape[1] : 1);
    cJSON_AddNumberToObject(meta, "total_parameters", (double)params);
    cJSON_AddNumberToObject(meta, "total_size", (double)total);
    cJSON *wm = cJSON_AddObjectToObject(idx, "weight_map");
    int first = 0;
    uint64_t acc = 0;
    char (*names)[64] = calloc((size_t)n, sizeof *names);
    for (int s = 0; s < shards && rc == 0; s++) {
        int last = first;
        uint64_t goal = total * (uint64_t)(s + 1) / (uint64_t)shards;
        acc += clv_dtype_size(o->dtype) * (uint64_t)d[last].shape[0] * (uint64_t)(d[last].ndim == 2 ? d[last].shape[1] : 1);
        while (last + 1 < n - (shards - 1 - s) && acc < goal) {
            last++;
            acc += clv_dtype_size(o->dtype) * (uint64_t)d[last].shape[0] * (uint64_t)(d[last].ndim == 2 ? d[last].shape[1] : 1);
        }
        if (s == shards - 1) last = n - 1;
        char fname[64];
        snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, shards);
        for (int i = first; i <= last; i++) snprintf(names[i], sizeof names[i], "%s", fname);
        if ((rc = clv_path_join(path, sizeof path, o->out_dir, fname, st)) == 0)
            rc = clv_st_write(path, wt + first, last - first + 1, "pt", st);
        first = last + 1;
    }
    /* weight_map sorted by tensor name, as transformers writes it */
    int *order = malloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(d[order[j - 1]].name, d[order[j]].name) > 0; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (int i = 0; i < n; i++) cJSON_AddStringToObject(wm, d[order[i]].name, names[order[i]]);
    free(order);
    free(names);
    char *idx_json = clv_json_print_py(idx);
    cJSON_Delete(idx);
    if (rc == 0 && (rc = clv_path_join(path, sizeof path, o->out_dir, "model.safetensors.index.json", st)) == 0)
        rc = clv_write_file(path, idx_json, strlen(idx_json), st);
    free(idx_json);
done:
    if (bufs)
        for (int i = 0; i < cap; i++) free(bufs[i]);
    free(bufs);
    free(wt);
    free(d);
    free(cfg_json);
    return rc;
}
