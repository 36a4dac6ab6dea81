/* Random-weight checkpoints in exactly the layout transformers writes: used by
 * tests and benchmarks. Deterministic per seed; every tensor's values depend
 * only on (seed, tensor name), so sharding does not change them. */
#ifndef CLV_SYNTH_H
#define CLV_SYNTH_H

#include "config.h"

typedef struct clv_synth_opts {
    clv_arch arch;
    int hidden, layers, heads, kv_heads, intermediate, vocab, head_dim; /* head_dim 0: hidden/heads */
    int max_pos;
    clv_dtype dtype;
    uint64_t seed;
    int shards; /* 1: model.safetensors; N: N shards + index */
    bool tie;
    bool attention_bias; /* Llama/Mistral/Qwen3 attention_bias */
    clv_rope_type rope;
    double rope_factor;
    int rope_orig_max_pos;
    double rope_theta;
    int sliding_window; /* Mistral: every layer; Qwen2/3: use_sliding_window with max_window_layers = 0 */
    const char *out_dir;
} clv_synth_opts;

void clv_synth_defaults(clv_synth_opts *o);
int clv_synth_write(const clv_synth_opts *o, clv_status *st);

#endif
