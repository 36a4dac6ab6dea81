/* runtime — the executor. Binds checkpoint tensors to the architecture's
 * slots, owns KV caches and run state, and walks the layers in the order the
 * plan says, each on its device's backend. */
#ifndef CLV_RUNTIME_H
#define CLV_RUNTIME_H

#include "../backend/backend.h"
#include "../format/safetensors.h"
#include "../model/arch.h"
#include "../model/config.h"
#include "../plan/plan.h"
#include "cleave.h"

typedef struct clv_layer_w {
    clv_mat q, k, v, o, gate, up, down;
    const float *attn_norm, *ffn_norm, *q_norm, *k_norm; /* f32 copies */
    const float *q_bias, *k_bias, *v_bias, *o_bias, *gate_bias, *up_bias, *down_bias; /* NULL if absent */
} clv_layer_w;

struct clv_model {
    clv_config cfg;
    clv_gen_config gen;
    clv_plan plan;
    clv_st_set st;
    clv_mat embed, lm_head;
    const float *norm;
    clv_layer_w *layers;
    float *vec_arena;               /* every 1-D tensor as f32 */
    clv_backend *be[CLV_MAX_DEVICES];
    uint64_t weight_bytes;          /* bytes of every tensor in the checkpoint */
    uint64_t decode_bytes;          /* bytes read per decoded token (matrices + one embedding row) */
};

struct clv_session {
    clv_model *m;
    int ctx;   /* KV cache capacity in tokens */
    int pos;   /* tokens already in the cache */
    int max_t; /* tokens per forward chunk */
    float **k_cache, **v_cache; /* per layer [ctx][n_kv_heads*head_dim] */
    float *rope_cos, *rope_sin; /* [ctx][head_dim/2] */
    /* activations, [max_t][...] */
    float *x, *xb, *xb2, *q, *k, *v, *att, *g, *u, *last;
};

/* Bind every tensor the architecture needs; any missing, extra, mis-shaped or
 * wrongly typed tensor is an error naming it and its file. */
int clv_model_bind(clv_model *m, clv_status *st);

/* ---- sampling ---------------------------------------------------------------- */

typedef struct clv_sampler_cfg {
    bool greedy;
    float temperature; /* > 0 */
    int top_k;         /* 0: off */
    float top_p;       /* 1: off */
    float min_p;       /* 0: off */
    float repetition_penalty; /* 1: off */
    uint64_t seed;
} clv_sampler_cfg;

typedef struct clv_sampler {
    clv_sampler_cfg cfg;
    uint64_t rng;
    int vocab;
    int *idx;     /* [vocab] candidate ids */
    float *prob;  /* [vocab] */
} clv_sampler;

int clv_sampler_init(clv_sampler *s, const clv_sampler_cfg *cfg, int vocab, clv_status *st);
void clv_sampler_free(clv_sampler *s);
/* Picks the next token. `logits` is modified (penalties, temperature). */
int clv_sampler_next(clv_sampler *s, float *logits, const int32_t *history, int n_history);

#endif
