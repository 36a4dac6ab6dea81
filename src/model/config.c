#include "config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../util/util.h"

static const char *k_arch_class[CLV_ARCH_COUNT] = {
    [CLV_ARCH_LLAMA] = "LlamaForCausalLM",
    [CLV_ARCH_MISTRAL] = "MistralForCausalLM",
    [CLV_ARCH_QWEN2] = "Qwen2ForCausalLM",
    [CLV_ARCH_QWEN3] = "Qwen3ForCausalLM",
    [CLV_ARCH_PHI3] = "Phi3ForCausalLM",
};
#define SUPPORTED_ARCHS "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Phi3ForCausalLM"
#define SUPPORTED_ROPE "default, linear, llama3, yarn"

const char *clv_arch_name(clv_arch a) { return a < CLV_ARCH_COUNT ? k_arch_class[a] : "?"; }
const char *clv_rope_name(clv_rope_type r) {
    static const char *n[] = {"default", "linear", "llama3", "yarn"};
    return n[r];
}

/* Helpers over one config object; each reports the key at fault. */
typedef struct { const cJSON *root; const char *fname; clv_status *st; } jcx;

static const cJSON *jget(const jcx *j, const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj ? obj : j->root, key);
    return cJSON_IsNull(v) ? NULL : v;
}

/* Integer key: required (def < 0 means required) or defaulted. */
static int jint(const jcx *j, const cJSON *obj, const char *key, int64_t def, int64_t lo, int64_t hi, int *out) {
    const cJSON *v = jget(j, obj, key);
    if (!v) {
        if (def == INT64_MIN) return clv_fail(j->st, CLV_EINVAL, "%s: required key \"%s\" is missing", j->fname, key);
        *out = (int)def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || floor(v->valuedouble) != v->valuedouble || v->valuedouble < (double)lo ||
        v->valuedouble > (double)hi)
        return clv_fail(j->st, CLV_EINVAL, "%s: \"%s\" must be an integer in [%lld, %lld]", j->fname, key,
                        (long long)lo, (long long)hi);
    *out = (int)v->valuedouble;
    return 0;
}

static int jnum(const jcx *j, const cJSON *obj, const char *key, double def, double *out) {
    const cJSON *v = jget(j, obj, key);
    if (!v) {
        if (isnan(def)) return clv_fail(j->st, CLV_EINVAL, "%s: required key \"%s\" is missing", j->fname, key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return clv_fail(j->st, CLV_EINVAL, "%s: \"%s\" must be a number", j->fname, key);
    *out = v->valuedouble;
    return 0;
}

static int jbool(const jcx *j, const char *key, bool def, bool *out) {
    const cJSON *v = jget(j, NULL, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(v)) return clv_fail(j->st, CLV_EINVAL, "%s: \"%s\" must be true or false", j->fname, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* eos_token_id may be an int or a list of ints; add to c->eos_ids without duplicates. */
static int add_token_ids(const jcx *j, const char *key, int *ids, int *n, int cap) {
    const cJSON *v = jget(j, NULL, key);
    if (!v) return 0;
    const cJSON *items[CLV_MAX_EOS];
    int k = 0;
    if (cJSON_IsArray(v)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, v) {
            if (k == CLV_MAX_EOS) return clv_fail(j->st, CLV_EINVAL, "%s: \"%s\" has more than %d ids", j->fname, key, CLV_MAX_EOS);
            items[k++] = e;
        }
    } else {
        items[k++] = v;
    }
    for (int i = 0; i < k; i++) {
        const cJSON *e = items[i];
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > INT32_MAX || floor(e->valuedouble) != e->valuedouble)
            return clv_fail(j->st, CLV_EINVAL, "%s: \"%s\" must be a token id or a list of token ids", j->fname, key);
        int id = (int)e->valuedouble, dup = 0;
        for (int q = 0; q < *n; q++) dup |= ids[q] == id;
        if (!dup) {
            if (*n == cap) return clv_fail(j->st, CLV_EINVAL, "%s: too many eos ids", j->fname);
            ids[(*n)++] = id;
        }
    }
    return 0;
}

/* Keys that would change the math if set to a non-default value, and that
 * cleave does not implement: refusing beats silently computing something else. */
static int refuse_unimplemented(const jcx *j) {
    static const struct { const char *key; const char *why; } keys[] = {
        {"attn_logit_softcapping", "attention logit soft-capping"},
        {"final_logit_softcapping", "final logit soft-capping"},
        {"quantization_config", "quantized checkpoints"},
        {"embedding_multiplier", "embedding multipliers"},
        {"residual_multiplier", "residual multipliers"},
        {"attention_multiplier", "attention multipliers"},
        {"logits_scaling", "logit scaling"},
        {"num_experts", "mixture of experts"},
        {"num_local_experts", "mixture of experts"},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (jget(j, NULL, keys[i].key))
            return clv_fail(j->st, CLV_EUNSUPPORTED, "%s: \"%s\" is set: %s are not supported", j->fname, keys[i].key,
                            keys[i].why);
    double prf;
    int rc = jnum(j, NULL, "partial_rotary_factor", 1.0, &prf);
    if (rc) return rc;
    if (prf != 1.0)
        return clv_fail(j->st, CLV_EUNSUPPORTED, "%s: partial_rotary_factor %g is not supported (only 1.0)", j->fname, prf);
    const cJSON *act = jget(j, NULL, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0))
        return clv_fail(j->st, CLV_EUNSUPPORTED, "%s: hidden_act %s is not supported (supported: silu)", j->fname,
                        cJSON_IsString(act) ? act->valuestring : "(not a string)");
    return 0;
}

static int parse_rope(clv_config *c, const jcx *j) {
    /* Two spellings exist: the older `rope_theta` + `rope_scaling`, and the
     * newer `rope_parameters` holding the theta and the scaling together. */
    const cJSON *rp = jget(j, NULL, "rope_parameters");
    const cJSON *rs = rp ? rp : jget(j, NULL, "rope_scaling");
    if (rp && !cJSON_IsObject(rp)) return clv_fail(j->st, CLV_EINVAL, "%s: \"rope_parameters\" must be an object", j->fname);
    if (rs && !cJSON_IsObject(rs)) return clv_fail(j->st, CLV_EINVAL, "%s: \"rope_scaling\" must be an object or null", j->fname);
    int rc = jnum(j, NULL, "rope_theta", 10000.0, &c->rope_theta);
    if (rc) return rc;
    if (rp && (rc = jnum(j, rp, "rope_theta", c->rope_theta, &c->rope_theta))) return rc;
    double prf = 1.0;
    if (rp && (rc = jnum(j, rp, "partial_rotary_factor", 1.0, &prf))) return rc;
    if (prf != 1.0)
        return clv_fail(j->st, CLV_EUNSUPPORTED, "%s: partial_rotary_factor %g is not supported (only 1.0)", j->fname, prf);
    if (!(c->rope_theta > 1.0)) return clv_fail(j->st, CLV_EINVAL, "%s: rope_theta must be > 1", j->fname);

    c->rope_type = CLV_ROPE_DEFAULT;
    c->rope_factor = 1.0;
    c->rope_attn_factor = 1.0;
    if (!rs) return 0;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!cJSON_IsString(t)) t = cJSON_GetObjectItemCaseSensitive(rs, "type");
    if (!cJSON_IsString(t)) {
        if (rp) return 0; /* rope_parameters without a type: default */
        return clv_fail(j->st, CLV_EINVAL, "%s: rope_scaling has no \"rope_type\"", j->fname);
    }
    const char *type = t->valuestring;
    if (strcmp(type, "default") == 0) return 0;
    if (strcmp(type, "linear") == 0) c->rope_type = CLV_ROPE_LINEAR;
    else if (strcmp(type, "llama3") == 0) c->rope_type = CLV_ROPE_LLAMA3;
    else if (strcmp(type, "yarn") == 0) c->rope_type = CLV_ROPE_YARN;
    else
        return clv_fail(j->st, CLV_EUNSUPPORTED, "%s: rope type \"%s\" is not supported (supported: " SUPPORTED_ROPE ")",
                        j->fname, type);
    if ((rc = jnum(j, rs, "factor", NAN, &c->rope_factor))) return rc;
    if (!(c->rope_factor >= 1.0)) return clv_fail(j->st, CLV_EINVAL, "%s: rope factor must be >= 1", j->fname);
    if (c->rope_type == CLV_ROPE_LLAMA3) {
        if ((rc = jnum(j, rs, "low_freq_factor", NAN, &c->rope_low_freq_factor)) ||
            (rc = jnum(j, rs, "high_freq_factor", NAN, &c->rope_high_freq_factor)) ||
            (rc = jint(j, rs, "original_max_position_embeddings", INT64_MIN, 1, INT32_MAX, &c->rope_orig_max_pos)))
            return rc;
        if (!(c->rope_high_freq_factor > c->rope_low_freq_factor))
            return clv_fail(j->st, CLV_EINVAL, "%s: llama3 rope needs high_freq_factor > low_freq_factor", j->fname);
    }
    if (c->rope_type == CLV_ROPE_YARN) {
        double attn, mscale, mscale_all;
        if ((rc = jint(j, rs, "original_max_position_embeddings", c->max_pos, 1, INT32_MAX, &c->rope_orig_max_pos)) ||
            (rc = jnum(j, rs, "beta_fast", 32.0, &c->yarn_beta_fast)) ||
            (rc = jnum(j, rs, "beta_slow", 1.0, &c->yarn_beta_slow)) ||
            (rc = jnum(j, rs, "attention_factor", 0.0, &attn)) ||
            (rc = jnum(j, rs, "mscale", 0.0, &mscale)) || (rc = jnum(j, rs, "mscale_all_dim", 0.0, &mscale_all)))
            return rc;
        const cJSON *tr = jget(j, rs, "truncate");
        c->yarn_truncate = tr ? cJSON_IsTrue(tr) : true;
        if (!jget(j, rs, "attention_factor")) {
            /* transformers: 0.1*m*ln(s)+1, as a ratio when both mscales are given */
#define MSCALE(s, m) ((s) <= 1.0 ? 1.0 : 0.1 * (m) * log(s) + 1.0)
            if (mscale != 0.0 && mscale_all != 0.0)
                attn = MSCALE(c->rope_factor, mscale) / MSCALE(c->rope_factor, mscale_all);
            else
                attn = MSCALE(c->rope_factor, 1.0);
#undef MSCALE
        }
        c->rope_attn_factor = attn;
    }
    return 0;
}

int clv_config_parse(clv_config *c, const char *text, size_t len, const char *fname, clv_status *st) {
    memset(c, 0, sizeof *c);
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return clv_fail(st, CLV_EINVAL, "%s: not a valid JSON object", fname);
    }
    jcx j = {root, fname, st};
    int rc = 0;
    const cJSON *archs = jget(&j, NULL, "architectures");
    const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
    if (!cJSON_IsString(a0)) {
        rc = clv_fail(st, CLV_EINVAL, "%s: \"architectures\" must be a list naming one of: " SUPPORTED_ARCHS, fname);
        goto done;
    }
    c->arch = CLV_ARCH_COUNT;
    for (int i = 0; i < CLV_ARCH_COUNT; i++)
        if (strcmp(a0->valuestring, k_arch_class[i]) == 0) c->arch = (clv_arch)i;
    if (c->arch == CLV_ARCH_COUNT) {
        rc = clv_fail(st, CLV_EUNSUPPORTED, "%s: architecture %s is not supported (supported: " SUPPORTED_ARCHS ")", fname,
                      a0->valuestring);
        goto done;
    }
    if ((rc = refuse_unimplemented(&j))) goto done;
    if ((rc = jint(&j, NULL, "hidden_size", INT64_MIN, 1, 1 << 20, &c->hidden)) ||
        (rc = jint(&j, NULL, "num_hidden_layers", INT64_MIN, 1, CLV_MAX_LAYERS, &c->n_layers)) ||
        (rc = jint(&j, NULL, "num_attention_heads", INT64_MIN, 1, 4096, &c->n_heads)) ||
        (rc = jint(&j, NULL, "num_key_value_heads", c->n_heads, 1, 4096, &c->n_kv_heads)) ||
        (rc = jint(&j, NULL, "intermediate_size", INT64_MIN, 1, 1 << 22, &c->intermediate)) ||
        (rc = jint(&j, NULL, "vocab_size", INT64_MIN, 1, 1 << 24, &c->vocab)) ||
        (rc = jint(&j, NULL, "max_position_embeddings", 2048, 1, INT32_MAX, &c->max_pos)))
        goto done;
    if (c->hidden % c->n_heads != 0 && !jget(&j, NULL, "head_dim") && c->arch != CLV_ARCH_QWEN3) {
        rc = clv_fail(st, CLV_EINVAL, "%s: hidden_size %d is not divisible by num_attention_heads %d and no head_dim is given",
                      fname, c->hidden, c->n_heads);
        goto done;
    }
    /* transformers' class defaults where a key is absent: Qwen3 has head_dim 128. */
    if ((rc = jint(&j, NULL, "head_dim", c->arch == CLV_ARCH_QWEN3 ? 128 : c->hidden / c->n_heads, 2, 4096, &c->head_dim)))
        goto done;
    if (c->head_dim % 2) {
        rc = clv_fail(st, CLV_EINVAL, "%s: head_dim %d must be even for RoPE", fname, c->head_dim);
        goto done;
    }
    if (c->n_heads % c->n_kv_heads != 0) {
        rc = clv_fail(st, CLV_EINVAL, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", fname,
                      c->n_heads, c->n_kv_heads);
        goto done;
    }
    double eps;
    if ((rc = jnum(&j, NULL, "rms_norm_eps", 1e-6, &eps))) goto done;
    if (!(eps > 0)) {
        rc = clv_fail(st, CLV_EINVAL, "%s: rms_norm_eps must be > 0", fname);
        goto done;
    }
    c->rms_eps = (float)eps;
    if ((rc = parse_rope(c, &j))) goto done;

    bool attn_bias = false;
    if ((rc = jbool(&j, "tie_word_embeddings", false, &c->tie_embeddings)) ||
        (rc = jbool(&j, "attention_bias", false, &attn_bias)) || (rc = jbool(&j, "mlp_bias", false, &c->mlp_bias)))
        goto done;
    switch (c->arch) {
    case CLV_ARCH_QWEN2: c->qkv_bias = true; c->o_bias = false; break; /* Qwen2 hard-codes q/k/v bias */
    case CLV_ARCH_QWEN3: c->qk_norm = true; c->qkv_bias = c->o_bias = attn_bias; break;
    case CLV_ARCH_PHI3: c->fused = true; c->qkv_bias = c->o_bias = false; break;
    default: c->qkv_bias = c->o_bias = attn_bias; break;
    }
    if (c->mlp_bias && c->arch != CLV_ARCH_LLAMA) c->mlp_bias = false; /* only Llama reads mlp_bias */
    if (c->fused && attn_bias) {
        rc = clv_fail(st, CLV_EUNSUPPORTED, "%s: attention_bias with a fused qkv_proj is not supported", fname);
        goto done;
    }

    /* Sliding window: Mistral applies `sliding_window` to every layer when set;
     * Qwen2/3 only with use_sliding_window, from layer max_window_layers on.
     * An explicit `layer_types` list overrides both. */
    int window = 0;
    const cJSON *swk = cJSON_GetObjectItemCaseSensitive(j.root, "sliding_window");
    if (c->arch == CLV_ARCH_MISTRAL && !swk) window = 4096; /* MistralConfig's default when the key is absent */
    else if ((rc = jint(&j, NULL, "sliding_window", 0, 0, INT32_MAX, &window))) goto done;
    bool use_sw = c->arch == CLV_ARCH_MISTRAL || c->arch == CLV_ARCH_PHI3;
    int max_window_layers = 0;
    if (c->arch == CLV_ARCH_QWEN2 || c->arch == CLV_ARCH_QWEN3) {
        if ((rc = jbool(&j, "use_sliding_window", false, &use_sw)) ||
            (rc = jint(&j, NULL, "max_window_layers", 28, 0, INT32_MAX, &max_window_layers)))
            goto done;
    }
    const cJSON *lt = jget(&j, NULL, "layer_types");
    if (lt) {
        if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != c->n_layers) {
            rc = clv_fail(st, CLV_EINVAL, "%s: \"layer_types\" must list one type per layer (%d)", fname, c->n_layers);
            goto done;
        }
        for (int l = 0; l < c->n_layers; l++) {
            const cJSON *e = cJSON_GetArrayItem(lt, l);
            if (cJSON_IsString(e) && strcmp(e->valuestring, "full_attention") == 0) continue;
            if (cJSON_IsString(e) && strcmp(e->valuestring, "sliding_attention") == 0) {
                c->layer_sliding[l] = true;
                continue;
            }
            rc = clv_fail(st, CLV_EUNSUPPORTED, "%s: layer_types[%d] = %s is not supported (full_attention, sliding_attention)",
                          fname, l, cJSON_IsString(e) ? e->valuestring : "(not a string)");
            goto done;
        }
    } else if (use_sw && window > 0) {
        for (int l = 0; l < c->n_layers; l++)
            c->layer_sliding[l] = c->arch == CLV_ARCH_MISTRAL || c->arch == CLV_ARCH_PHI3 || l >= max_window_layers;
    }
    bool any = false;
    for (int l = 0; l < c->n_layers; l++) any |= c->layer_sliding[l];
    if (any && window <= 0) {
        rc = clv_fail(st, CLV_EINVAL, "%s: sliding-attention layers need a positive \"sliding_window\"", fname);
        goto done;
    }
    c->sliding_window = any ? window : 0;

    c->dtype = CLV_DT_F32;
    const cJSON *dt = jget(&j, NULL, "torch_dtype");
    if (!dt) dt = jget(&j, NULL, "dtype");
    if (cJSON_IsString(dt)) {
        if (strcmp(dt->valuestring, "bfloat16") == 0) c->dtype = CLV_DT_BF16;
        else if (strcmp(dt->valuestring, "float16") == 0) c->dtype = CLV_DT_F16;
    }
    c->bos_id = -1;
    if ((rc = jint(&j, NULL, "bos_token_id", -1, -1, INT32_MAX, &c->bos_id))) goto done;
    if ((rc = add_token_ids(&j, "eos_token_id", c->eos_ids, &c->n_eos, CLV_MAX_EOS))) goto done;
done:
    cJSON_Delete(root);
    return rc;
}

int clv_gen_config_parse(clv_gen_config *g, clv_config *c, const char *text, size_t len, const char *fname,
                         clv_status *st) {
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return clv_fail(st, CLV_EINVAL, "%s: not a valid JSON object", fname);
    }
    jcx j = {root, fname, st};
    int rc;
    if ((rc = jbool(&j, "do_sample", g->do_sample, &g->do_sample)) ||
        (rc = jnum(&j, NULL, "temperature", g->temperature, &g->temperature)) ||
        (rc = jnum(&j, NULL, "top_p", g->top_p, &g->top_p)) || (rc = jnum(&j, NULL, "min_p", g->min_p, &g->min_p)) ||
        (rc = jnum(&j, NULL, "repetition_penalty", g->repetition_penalty, &g->repetition_penalty)) ||
        (rc = jint(&j, NULL, "top_k", g->top_k, 0, INT32_MAX, &g->top_k)) ||
        (rc = jint(&j, NULL, "max_new_tokens", g->max_new_tokens, 0, INT32_MAX, &g->max_new_tokens)) ||
        (rc = add_token_ids(&j, "eos_token_id", c->eos_ids, &c->n_eos, CLV_MAX_EOS)))
        goto done;
    if (c->bos_id < 0) rc = jint(&j, NULL, "bos_token_id", -1, -1, INT32_MAX, &c->bos_id);
done:
    cJSON_Delete(root);
    return rc;
}

int clv_config_load(clv_config *c, clv_gen_config *g, const char *dir, clv_status *st) {
    char path[4096];
    char *text;
    size_t len;
    int rc;
    if ((rc = clv_path_join(path, sizeof path, dir, "config.json", st))) return rc;
    if ((rc = clv_read_file(path, &text, &len, st))) return rc;
    rc = clv_config_parse(c, text, len, path, st);
    free(text);
    if (rc) return rc;
    /* transformers' GenerationConfig defaults */
    *g = (clv_gen_config){.do_sample = false, .temperature = 1.0, .top_p = 1.0, .min_p = 0.0,
                          .repetition_penalty = 1.0, .top_k = 50, .max_new_tokens = 0};
    if ((rc = clv_path_join(path, sizeof path, dir, "generation_config.json", st))) return rc;
    if (!clv_file_exists(path)) return 0;
    if ((rc = clv_read_file(path, &text, &len, st))) return rc;
    rc = clv_gen_config_parse(g, c, text, len, path, st);
    free(text);
    return rc;
}

void clv_rope_inv_freq(const clv_config *c, double *inv) {
    int half = c->head_dim / 2, dim = c->head_dim;
    for (int i = 0; i < half; i++) inv[i] = 1.0 / pow(c->rope_theta, (double)(2 * i) / dim);
    switch (c->rope_type) {
    case CLV_ROPE_DEFAULT: break;
    case CLV_ROPE_LINEAR:
        for (int i = 0; i < half; i++) inv[i] /= c->rope_factor;
        break;
    case CLV_ROPE_LLAMA3: {
        /* Long wavelengths are divided by factor, short ones kept, and the band
         * between blended smoothly. */
        double old_ctx = c->rope_orig_max_pos, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
        double low_wl = old_ctx / lo, high_wl = old_ctx / hi;
        for (int i = 0; i < half; i++) {
            double wl = 2 * M_PI / inv[i];
            if (wl > low_wl) inv[i] /= c->rope_factor;
            else if (wl >= high_wl) {
                double s = (old_ctx / wl - lo) / (hi - lo);
                inv[i] = (1 - s) * inv[i] / c->rope_factor + s * inv[i];
            }
        }
        break;
    }
    case CLV_ROPE_YARN: {
        /* Interpolate low frequencies, extrapolate high ones, linear ramp between
         * the correction dims found from beta_fast / beta_slow rotations. */
        double base = c->rope_theta, L = c->rope_orig_max_pos;
#define CORR_DIM(rot) ((dim * log(L / ((rot) * 2 * M_PI))) / (2 * log(base)))
        double low = CORR_DIM(c->yarn_beta_fast), high = CORR_DIM(c->yarn_beta_slow);
#undef CORR_DIM
        if (c->yarn_truncate) {
            low = floor(low);
            high = ceil(high);
        }
        if (low < 0) low = 0;
        if (high > dim - 1) high = dim - 1;
        if (low == high) high += 0.001;
        for (int i = 0; i < half; i++) {
            double ramp = ((double)i - low) / (high - low);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            double extrap = 1.0 - ramp;
            double f_extrap = inv[i], f_interp = inv[i] / c->rope_factor;
            inv[i] = f_interp * (1 - extrap) + f_extrap * extrap;
        }
        break;
    }
    }
}

void clv_config_print(const clv_config *c, FILE *f) {
    fprintf(f, "architecture       %s\n", clv_arch_name(c->arch));
    fprintf(f, "hidden_size        %d\n", c->hidden);
    fprintf(f, "layers             %d\n", c->n_layers);
    fprintf(f, "heads / kv_heads   %d / %d (%s)\n", c->n_heads, c->n_kv_heads,
            c->n_kv_heads == c->n_heads ? "MHA" : c->n_kv_heads == 1 ? "MQA" : "GQA");
    fprintf(f, "head_dim           %d\n", c->head_dim);
    fprintf(f, "intermediate_size  %d\n", c->intermediate);
    fprintf(f, "vocab_size         %d\n", c->vocab);
    fprintf(f, "max_position       %d\n", c->max_pos);
    fprintf(f, "rms_norm_eps       %g\n", (double)c->rms_eps);
    fprintf(f, "rope               %s theta=%g", clv_rope_name(c->rope_type), c->rope_theta);
    if (c->rope_type != CLV_ROPE_DEFAULT) fprintf(f, " factor=%g", c->rope_factor);
    if (c->rope_type == CLV_ROPE_LLAMA3)
        fprintf(f, " low_freq_factor=%g high_freq_factor=%g original_max_position=%d", c->rope_low_freq_factor,
                c->rope_high_freq_factor, c->rope_orig_max_pos);
    if (c->rope_type == CLV_ROPE_YARN)
        fprintf(f, " original_max_position=%d beta_fast=%g beta_slow=%g attention_factor=%g", c->rope_orig_max_pos,
                c->yarn_beta_fast, c->yarn_beta_slow, c->rope_attn_factor);
    fprintf(f, "\n");
    int n_sw = 0;
    for (int l = 0; l < c->n_layers; l++) n_sw += c->layer_sliding[l];
    if (c->sliding_window) fprintf(f, "sliding_window     %d (%d of %d layers)\n", c->sliding_window, n_sw, c->n_layers);
    else fprintf(f, "sliding_window     none\n");
    fprintf(f, "biases             qkv=%s o=%s mlp=%s\n", c->qkv_bias ? "yes" : "no", c->o_bias ? "yes" : "no",
            c->mlp_bias ? "yes" : "no");
    fprintf(f, "qk_norm            %s\n", c->qk_norm ? "yes" : "no");
    fprintf(f, "tie_embeddings     %s\n", c->tie_embeddings ? "yes" : "no");
    fprintf(f, "dtype              %s\n", clv_dtype_name(c->dtype));
    fprintf(f, "bos / eos          %d / [", c->bos_id);
    for (int i = 0; i < c->n_eos; i++) fprintf(f, "%s%d", i ? ", " : "", c->eos_ids[i]);
    fprintf(f, "]\n");
}
