/* Tensor-parallel plans: how each module's weights are split over N ranks,
 * as Transformers' tp_plan says it (auto: its base_model_tp_plan), validated
 * against the model's shapes before any weight is read. */
#ifndef CLV_TP_H
#define CLV_TP_H

#include <stdbool.h>

#include "../model/config.h"

typedef enum clv_tp_strategy {
    CLV_TP_REPLICATE,
    CLV_TP_COLWISE,               /* split output features: no communication */
    CLV_TP_ROWWISE,               /* split input features: partial sums, all-reduce */
    CLV_TP_COLWISE_GATHER_OUTPUT, /* colwise, then all-gather the output */
    CLV_TP_ROWWISE_SPLIT_INPUT,   /* rowwise on a replicated input: slice it locally */
    CLV_TP_PACKED_COLWISE,        /* fused [a; b; ...] tensors: each part split colwise */
    CLV_TP_PACKED_ROWWISE,
    CLV_TP_EMBEDDING_ROWWISE,     /* vocab-parallel embedding */
    CLV_TP_COUNT
} clv_tp_strategy;

const char *clv_tp_strategy_name(clv_tp_strategy s);
/* Current names, and the older ones with their meaning. */
bool clv_tp_strategy_parse(const char *s, clv_tp_strategy *out);

typedef struct clv_tp_plan {
    int size;                         /* N ranks */
    int rank;
    bool attn_sharded[CLV_MAX_LAYERS];/* q/k/v colwise + o rowwise, else replicated */
    bool mlp_sharded[CLV_MAX_LAYERS]; /* gate/up colwise + down rowwise, else replicated */
    bool head_sharded;                /* lm_head vocab-split, logits all-gathered */
    bool embed_sharded;               /* vocab-parallel embedding, rows all-reduced */
    /* what rank `rank` holds */
    int heads, kv_heads, kv_head0, head0; /* local q heads from head0; local kv heads from kv_head0 */
    int inter, inter0;
    int vocab, vocab0;
    bool kv_replicated;               /* N > num_key_value_heads: ranks share KV heads */
} clv_tp_plan;

/* `json`: NULL for auto, else a JSON object of module patterns ('*' for a layer
 * index) -> strategy. Errors name the module, the size and N. */
int clv_tp_plan_make(clv_tp_plan *p, const clv_config *c, int n, int rank, const char *json, const char *src,
                     clv_status *st);
void clv_tp_plan_print(const clv_tp_plan *p, const clv_config *c, FILE *f);

#endif
