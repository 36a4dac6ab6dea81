/* The forward pass: one loop over layers, each op a call on the backend of the
 * device the plan put that layer on. Prompts go through in chunks of up to
 * max_t tokens as matrix x matrix work; decode is the same code with T = 1. */
#include <math.h>
#include <string.h>

#include "../util/util.h"
#include "runtime.h"

#define CLV_PREFILL_CHUNK 512

static clv_backend *layer_be(const clv_model *m, int l) { return m->be[m->plan.layer_dev[l]]; }

int clv_session_new(clv_session **out, clv_model *m, int ctx, clv_status *st) {
    *out = NULL;
    const clv_config *c = &m->cfg;
    if (ctx < 1) return clv_fail(st, CLV_EINVAL, "context length must be >= 1 (got %d)", ctx);
    clv_session *s = calloc(1, sizeof *s);
    if (!s) return clv_fail(st, CLV_ENOMEM, "out of memory");
    s->m = m;
    s->ctx = ctx;
    s->max_t = ctx < CLV_PREFILL_CHUNK ? ctx : CLV_PREFILL_CHUNK;
    const size_t T = (size_t)s->max_t, H = (size_t)c->hidden, qd = (size_t)c->n_heads * c->head_dim,
                 kvd = (size_t)c->n_kv_heads * c->head_dim, I = (size_t)c->intermediate, half = (size_t)c->head_dim / 2;
    clv_backend *be0 = m->be[m->plan.embed_dev];
    /* Size first, then allocate once; nothing is allocated per token. */
    s->k_cache = calloc((size_t)c->n_layers, sizeof(float *));
    s->v_cache = calloc((size_t)c->n_layers, sizeof(float *));
    if (!s->k_cache || !s->v_cache) goto oom;
    for (int l = 0; l < c->n_layers; l++) {
        clv_backend *be = layer_be(m, l);
        s->k_cache[l] = be->ops->alloc(be, sizeof(float) * (size_t)ctx * kvd);
        s->v_cache[l] = be->ops->alloc(be, sizeof(float) * (size_t)ctx * kvd);
        if (!s->k_cache[l] || !s->v_cache[l]) goto oom;
    }
    float **bufs[] = {&s->x, &s->xb, &s->xb2, &s->q, &s->k, &s->v, &s->att, &s->g, &s->u, &s->last};
    size_t sizes[] = {T * H, T * H, T * H, T * qd, T * kvd, T * kvd, T * qd, T * I, T * I, (size_t)c->vocab};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (!(*bufs[i] = be0->ops->alloc(be0, sizeof(float) * sizes[i]))) goto oom;
    s->rope_cos = clv_alloc(sizeof(float) * (size_t)ctx * half);
    s->rope_sin = clv_alloc(sizeof(float) * (size_t)ctx * half);
    if (!s->rope_cos || !s->rope_sin) goto oom;

    /* cos/sin as transformers computes them: f32 inverse frequency times f32
     * position, rounded to f32, then scaled by the rope attention factor. */
    double inv[CLV_MAX_HEAD_DIM / 2];
    clv_rope_inv_freq(c, inv);
    const float af = (float)c->rope_attn_factor;
    for (int p = 0; p < ctx; p++)
        for (size_t i = 0; i < half; i++) {
            float ang = (float)p * (float)inv[i];
            s->rope_cos[(size_t)p * half + i] = cosf(ang) * af;
            s->rope_sin[(size_t)p * half + i] = sinf(ang) * af;
        }
    *out = s;
    return 0;
oom:
    clv_session_free(s);
    return clv_fail(st, CLV_ENOMEM, "out of memory allocating a %d-token session (KV cache %.1f MiB)", ctx,
                    2.0 * c->n_layers * ctx * (double)kvd * 4 / (1 << 20));
}

void clv_session_free(clv_session *s) {
    if (!s) return;
    clv_model *m = s->m;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        clv_backend *be = layer_be(m, l);
        if (s->k_cache) be->ops->free(be, s->k_cache[l]);
        if (s->v_cache) be->ops->free(be, s->v_cache[l]);
    }
    free(s->k_cache);
    free(s->v_cache);
    clv_backend *be0 = m->be[m->plan.embed_dev];
    float *bufs[] = {s->x, s->xb, s->xb2, s->q, s->k, s->v, s->att, s->g, s->u, s->last};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be0->ops->free(be0, bufs[i]);
    clv_free(s->rope_cos);
    clv_free(s->rope_sin);
    free(s);
}

void clv_session_reset(clv_session *s) { s->pos = 0; }

/* One layer over T tokens at positions s->pos .. s->pos+T-1; x is updated in place. */
static void layer_forward(clv_session *s, int l, int T) {
    const clv_model *m = s->m;
    const clv_config *c = &m->cfg;
    const clv_layer_w *L = &m->layers[l];
    clv_backend *be = layer_be(m, l);
    const clv_backend_ops *op = be->ops;
    const int H = c->hidden, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads;
    const size_t kvd = (size_t)nkv * hd;

    /* attention block */
    op->rmsnorm(be, s->xb, s->x, L->attn_norm, T, H, c->rms_eps);      /* (T, H) */
    op->matmul(be, s->q, s->xb, &L->q, L->q_bias, T);                  /* (T, nh*hd) */
    op->matmul(be, s->k, s->xb, &L->k, L->k_bias, T);                  /* (T, nkv*hd) */
    op->matmul(be, s->v, s->xb, &L->v, L->v_bias, T);                  /* (T, nkv*hd) */
    if (c->qk_norm) {                                                  /* per-head RMSNorm (Qwen3) */
        op->rmsnorm(be, s->q, s->q, L->q_norm, T * nh, hd, c->rms_eps);
        op->rmsnorm(be, s->k, s->k, L->k_norm, T * nkv, hd, c->rms_eps);
    }
    op->rope(be, s->q, T, nh, hd, s->pos, s->rope_cos, s->rope_sin);
    op->rope(be, s->k, T, nkv, hd, s->pos, s->rope_cos, s->rope_sin);
    op->copy(be, s->k_cache[l] + (size_t)s->pos * kvd, s->k, sizeof(float) * (size_t)T * kvd);
    op->copy(be, s->v_cache[l] + (size_t)s->pos * kvd, s->v, sizeof(float) * (size_t)T * kvd);
    clv_attn_args a = {.T = T, .pos0 = s->pos, .n_heads = nh, .n_kv_heads = nkv, .head_dim = hd,
                       .window = c->layer_sliding[l] ? c->sliding_window : 0,
                       .scale = 1.0f / sqrtf((float)hd), .kv_stride = (int)kvd};
    op->attention(be, s->att, s->q, s->k_cache[l], s->v_cache[l], &a);  /* (T, nh*hd) */
    op->matmul(be, s->xb2, s->att, &L->o, L->o_bias, T);                /* (T, H) */
    op->add(be, s->x, s->xb2, (size_t)T * H);

    /* MLP block: down(silu(gate(x)) * up(x)) */
    op->rmsnorm(be, s->xb, s->x, L->ffn_norm, T, H, c->rms_eps);
    op->matmul(be, s->g, s->xb, &L->gate, L->gate_bias, T);            /* (T, I) */
    op->matmul(be, s->u, s->xb, &L->up, L->up_bias, T);                /* (T, I) */
    op->silu_mul(be, s->g, s->u, (size_t)T * c->intermediate);
    op->matmul(be, s->xb2, s->g, &L->down, L->down_bias, T);           /* (T, H) */
    op->add(be, s->x, s->xb2, (size_t)T * H);
}

int clv_session_eval(clv_session *s, const int32_t *ids, int n, float *logits, int all_logits, clv_status *st) {
    clv_model *m = s->m;
    const clv_config *c = &m->cfg;
    if (n < 1) return clv_fail(st, CLV_EINVAL, "no tokens to evaluate");
    if (s->pos + n > s->ctx)
        return clv_fail(st, CLV_EINVAL, "context full: %d tokens cached + %d new > context length %d (raise --ctx)",
                        s->pos, n, s->ctx);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab)
            return clv_fail(st, CLV_EINVAL, "token id %d at position %d is outside the vocabulary (0..%d)", ids[i], i,
                            c->vocab - 1);
    const int H = c->hidden, V = c->vocab;
    for (int done = 0; done < n;) {
        int T = n - done < s->max_t ? n - done : s->max_t;
        clv_backend *be = m->be[m->plan.embed_dev];
        be->ops->embed(be, s->x, &m->embed, ids + done, T);
        for (int l = 0; l < c->n_layers; l++) layer_forward(s, l, T);
        s->pos += T;
        done += T;

        be = m->be[m->plan.head_dev];
        if (logits && all_logits) {
            be->ops->rmsnorm(be, s->xb, s->x, m->norm, T, H, c->rms_eps);
            be->ops->matmul(be, logits + (size_t)(done - T) * V, s->xb, &m->lm_head, NULL, T);
        } else if (logits && done == n) {
            be->ops->rmsnorm(be, s->xb, s->x + (size_t)(T - 1) * H, m->norm, 1, H, c->rms_eps);
            be->ops->matmul(be, logits, s->xb, &m->lm_head, NULL, 1);
        }
    }
    return 0;
}
