/* model — config.json normalised into one schema; per-architecture tensor
 * names. Knows the math of each architecture, never where a tensor lives. */
#ifndef CLV_CONFIG_H
#define CLV_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "../format/safetensors.h"
#include "cleave.h"

typedef enum clv_arch { CLV_ARCH_LLAMA, CLV_ARCH_MISTRAL, CLV_ARCH_QWEN2, CLV_ARCH_QWEN3, CLV_ARCH_PHI3, CLV_ARCH_COUNT } clv_arch;
typedef enum clv_rope_type { CLV_ROPE_DEFAULT, CLV_ROPE_LINEAR, CLV_ROPE_LLAMA3, CLV_ROPE_YARN } clv_rope_type;

#define CLV_MAX_EOS 8
#define CLV_MAX_LAYERS 1024
#ifndef CLV_MAX_HEAD_DIM
#define CLV_MAX_HEAD_DIM 512
#endif

typedef struct clv_config {
    clv_arch arch;
    int hidden;        /* d_model */
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int intermediate;
    int vocab;
    int max_pos;
    float rms_eps;

    /* RoPE: inverse frequencies are derived once from these (see clv_rope_inv_freq). */
    clv_rope_type rope_type;
    double rope_theta;
    double rope_factor;
    double rope_low_freq_factor, rope_high_freq_factor; /* llama3 */
    int rope_orig_max_pos;                               /* llama3, yarn */
    double yarn_beta_fast, yarn_beta_slow;
    double rope_attn_factor; /* yarn: cos/sin multiplied by this; 1 otherwise */
    bool yarn_truncate;

    int sliding_window;                  /* 0: none */
    bool layer_sliding[CLV_MAX_LAYERS];  /* which layers use the window */

    bool qkv_bias, o_bias, mlp_bias, qk_norm, tie_embeddings;
    bool fused;      /* Phi-3: one qkv_proj (q, k, v rows) and one gate_up_proj (gate, up rows) */
    clv_dtype dtype; /* torch_dtype / dtype of the checkpoint, informational */

    int bos_id;                /* -1 if none */
    int eos_ids[CLV_MAX_EOS];  /* from config.json, extended by generation_config.json */
    int n_eos;
} clv_config;

/* generation_config.json defaults (Hugging Face GenerationConfig's meaning). */
typedef struct clv_gen_config {
    bool do_sample;
    double temperature, top_p, min_p, repetition_penalty;
    int top_k;
    int max_new_tokens; /* 0 if unset */
} clv_gen_config;

const char *clv_arch_name(clv_arch a);
const char *clv_rope_name(clv_rope_type r);

/* Parse config.json text (pure; fuzzable). */
int clv_config_parse(clv_config *c, const char *text, size_t len, const char *fname, clv_status *st);
/* Read DIR/config.json and, when present, DIR/generation_config.json. */
int clv_config_load(clv_config *c, clv_gen_config *g, const char *dir, clv_status *st);
int clv_gen_config_parse(clv_gen_config *g, clv_config *c, const char *text, size_t len, const char *fname,
                         clv_status *st);
void clv_config_print(const clv_config *c, FILE *f);

/* head_dim/2 inverse frequencies, computed the way transformers computes them. */
void clv_rope_inv_freq(const clv_config *c, double *inv_freq);

#endif
