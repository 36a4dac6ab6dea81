/* Per-architecture tensor inventory: which tensors a checkpoint must hold,
 * with which shapes, and what role each plays in the forward pass. */
#ifndef CLV_ARCH_H
#define CLV_ARCH_H

#include "config.h"

typedef enum clv_wslot {
    /* model-level */
    CLV_W_EMBED, CLV_W_NORM, CLV_W_LM_HEAD,
    /* per layer */
    CLV_W_ATTN_NORM, CLV_W_Q, CLV_W_K, CLV_W_V, CLV_W_O,
    CLV_W_Q_BIAS, CLV_W_K_BIAS, CLV_W_V_BIAS, CLV_W_O_BIAS,
    CLV_W_Q_NORM, CLV_W_K_NORM,
    CLV_W_FFN_NORM, CLV_W_GATE, CLV_W_UP, CLV_W_DOWN,
    CLV_W_GATE_BIAS, CLV_W_UP_BIAS, CLV_W_DOWN_BIAS,
    CLV_W_QKV, CLV_W_GATE_UP, /* fused (Phi-3): [q; k; v] and [gate; up] rows */
    CLV_W_COUNT
} clv_wslot;
#define CLV_W_FIRST_LAYER_SLOT CLV_W_ATTN_NORM

typedef struct clv_wdesc {
    char name[96];
    clv_wslot slot;
    int layer;      /* -1 for model-level tensors */
    int ndim;       /* 1 or 2 */
    int64_t shape[2];
} clv_wdesc;

/* Fill `out` (capacity cap) with the tensors the config requires. Returns the
 * count, or -1 if cap is too small. Tied embeddings have no lm_head entry. */
int clv_arch_tensors(const clv_config *c, clv_wdesc *out, int cap);
int clv_arch_max_tensors(const clv_config *c);
const char *clv_wslot_name(clv_wslot s);
/* Hugging Face's module name owning a tensor: "model.layers.3", "lm_head". */
void clv_arch_module_of(const clv_wdesc *d, char *buf, size_t cap);

#endif
