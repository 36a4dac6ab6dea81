#include "arch.h"

#include <stdio.h>
#include <string.h>

static const char *k_layer_names[CLV_W_COUNT] = {
    [CLV_W_ATTN_NORM] = "input_layernorm.weight",
    [CLV_W_Q] = "self_attn.q_proj.weight",
    [CLV_W_K] = "self_attn.k_proj.weight",
    [CLV_W_V] = "self_attn.v_proj.weight",
    [CLV_W_O] = "self_attn.o_proj.weight",
    [CLV_W_Q_BIAS] = "self_attn.q_proj.bias",
    [CLV_W_K_BIAS] = "self_attn.k_proj.bias",
    [CLV_W_V_BIAS] = "self_attn.v_proj.bias",
    [CLV_W_O_BIAS] = "self_attn.o_proj.bias",
    [CLV_W_Q_NORM] = "self_attn.q_norm.weight",
    [CLV_W_K_NORM] = "self_attn.k_norm.weight",
    [CLV_W_FFN_NORM] = "post_attention_layernorm.weight",
    [CLV_W_GATE] = "mlp.gate_proj.weight",
    [CLV_W_UP] = "mlp.up_proj.weight",
    [CLV_W_DOWN] = "mlp.down_proj.weight",
    [CLV_W_GATE_BIAS] = "mlp.gate_proj.bias",
    [CLV_W_UP_BIAS] = "mlp.up_proj.bias",
    [CLV_W_DOWN_BIAS] = "mlp.down_proj.bias",
    [CLV_W_QKV] = "self_attn.qkv_proj.weight",
    [CLV_W_GATE_UP] = "mlp.gate_up_proj.weight",
};

const char *clv_wslot_name(clv_wslot s) {
    switch (s) {
    case CLV_W_EMBED: return "model.embed_tokens.weight";
    case CLV_W_NORM: return "model.norm.weight";
    case CLV_W_LM_HEAD: return "lm_head.weight";
    default: return k_layer_names[s];
    }
}

int clv_arch_max_tensors(const clv_config *c) { return 3 + c->n_layers * (CLV_W_COUNT - CLV_W_FIRST_LAYER_SLOT); }

static void put(clv_wdesc *d, clv_wslot slot, int layer, int64_t a, int64_t b) {
    d->slot = slot;
    d->layer = layer;
    if (layer < 0) snprintf(d->name, sizeof d->name, "%s", clv_wslot_name(slot));
    else snprintf(d->name, sizeof d->name, "model.layers.%d.%s", layer, k_layer_names[slot]);
    d->ndim = b ? 2 : 1;
    d->shape[0] = a;
    d->shape[1] = b;
}

int clv_arch_tensors(const clv_config *c, clv_wdesc *out, int cap) {
    if (cap < clv_arch_max_tensors(c)) return -1;
    int n = 0;
    const int64_t H = c->hidden, I = c->intermediate, qd = (int64_t)c->n_heads * c->head_dim,
                  kvd = (int64_t)c->n_kv_heads * c->head_dim;
    put(&out[n++], CLV_W_EMBED, -1, c->vocab, H);
    for (int l = 0; l < c->n_layers; l++) {
        put(&out[n++], CLV_W_ATTN_NORM, l, H, 0);
        if (c->fused) {
            put(&out[n++], CLV_W_QKV, l, qd + 2 * kvd, H);
        } else {
            put(&out[n++], CLV_W_Q, l, qd, H);
            put(&out[n++], CLV_W_K, l, kvd, H);
            put(&out[n++], CLV_W_V, l, kvd, H);
        }
        put(&out[n++], CLV_W_O, l, H, qd);
        if (c->qkv_bias) {
            put(&out[n++], CLV_W_Q_BIAS, l, qd, 0);
            put(&out[n++], CLV_W_K_BIAS, l, kvd, 0);
            put(&out[n++], CLV_W_V_BIAS, l, kvd, 0);
        }
        if (c->o_bias) put(&out[n++], CLV_W_O_BIAS, l, H, 0);
        if (c->qk_norm) {
            put(&out[n++], CLV_W_Q_NORM, l, c->head_dim, 0);
            put(&out[n++], CLV_W_K_NORM, l, c->head_dim, 0);
        }
        put(&out[n++], CLV_W_FFN_NORM, l, H, 0);
        if (c->fused) {
            put(&out[n++], CLV_W_GATE_UP, l, 2 * I, H);
        } else {
            put(&out[n++], CLV_W_GATE, l, I, H);
            put(&out[n++], CLV_W_UP, l, I, H);
        }
        put(&out[n++], CLV_W_DOWN, l, H, I);
        if (c->mlp_bias) {
            put(&out[n++], CLV_W_GATE_BIAS, l, I, 0);
            put(&out[n++], CLV_W_UP_BIAS, l, I, 0);
            put(&out[n++], CLV_W_DOWN_BIAS, l, H, 0);
        }
    }
    put(&out[n++], CLV_W_NORM, -1, H, 0);
    if (!c->tie_embeddings) put(&out[n++], CLV_W_LM_HEAD, -1, c->vocab, H);
    return n;
}

void clv_arch_module_of(const clv_wdesc *d, char *buf, size_t cap) {
    if (d->layer >= 0) snprintf(buf, cap, "model.layers.%d", d->layer);
    else if (d->slot == CLV_W_EMBED) snprintf(buf, cap, "model.embed_tokens");
    else if (d->slot == CLV_W_NORM) snprintf(buf, cap, "model.norm");
    else snprintf(buf, cap, "lm_head");
}
