/* The forward pass: one loop over layers, each op a call on the backend of the
 * device the plan put that layer on. Prompts go through in chunks of up to
 * max_t tokens as matrix x matrix work; decode is the same code with T = 1. */
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "../util/util.h"
#include "runtime.h"

/* The backend that computes what is stored on plan device d (disk -> its compute device). */
static clv_backend *exec_be(const clv_model *m, int d) { return m->be[m->plan.exec[d]]; }
static clv_backend *layer_be(const clv_model *m, int l) { return exec_be(m, m->plan.layer_dev[l]); }

int clv_session_new(clv_session **out, clv_model *m, int ctx, clv_status *st) {
    *out = NULL;
    const clv_config *c = &m->cfg;
    if (ctx < 1) return clv_fail(st, CLV_EINVAL, "context length must be >= 1 (got %d)", ctx);
    if (m->plan.ctx > 0 && ctx > m->plan.ctx)
        return clv_fail(st, CLV_EINVAL, "a %d-token context exceeds the %d tokens the placement plan budgeted (raise --ctx)",
                        ctx, m->plan.ctx);
    clv_session *s = calloc(1, sizeof *s);
    if (!s) return clv_fail(st, CLV_ENOMEM, "out of memory");
    s->m = m;
    s->ctx = ctx;
    s->max_t = ctx < m->prefill_chunk ? ctx : m->prefill_chunk;
    const size_t T = (size_t)s->max_t, H = (size_t)c->hidden, qd = (size_t)c->n_heads * c->head_dim,
                 kvd = (size_t)c->n_kv_heads * c->head_dim, I = (size_t)c->intermediate, half = (size_t)c->head_dim / 2;
    clv_backend *be0 = exec_be(m, m->plan.embed_dev);
    /* Size first, then allocate once; nothing is allocated per token. */
    s->k_cache = calloc((size_t)c->n_layers, sizeof(float *));
    s->v_cache = calloc((size_t)c->n_layers, sizeof(float *));
    if (!s->k_cache || !s->v_cache) goto oom;
    for (int l = 0; l < c->n_layers; l++) {
        clv_backend *be = layer_be(m, l);
        size_t kvd_l = (size_t)(m->tp.attn_sharded[l] ? m->tp.kv_heads : c->n_kv_heads) * c->head_dim;
        if (m->stage_of[l] != m->stage) kvd_l = 0; /* another stage's layer */
        s->k_cache[l] = be->ops->alloc(be, sizeof(float) * (size_t)ctx * kvd_l);
        s->v_cache[l] = be->ops->alloc(be, sizeof(float) * (size_t)ctx * kvd_l);
        if (!s->k_cache[l] || !s->v_cache[l]) goto oom;
    }
    float **bufs[] = {&s->x, &s->xb, &s->xb2, &s->q, &s->k, &s->v, &s->att, &s->g, &s->u, &s->last, &s->gather};
    size_t sizes[] = {T * H, T * H, T * H, T * qd, T * kvd, T * kvd, T * qd, T * I, T * I, (size_t)c->vocab,
                      m->tp.head_sharded ? T * (size_t)c->vocab : 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (!(*bufs[i] = be0->ops->alloc(be0, sizeof(float) * sizes[i]))) goto oom;
    if (m->plan.devices[m->plan.embed_dev].kind == CLV_DEV_DISK && !(s->embed_row = clv_alloc(8 * (size_t)c->hidden)))
        goto oom;
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
    clv_backend *be0 = exec_be(m, m->plan.embed_dev);
    float *bufs[] = {s->x, s->xb, s->xb2, s->q, s->k, s->v, s->att, s->g, s->u, s->last, s->gather};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be0->ops->free(be0, bufs[i]);
    clv_free(s->rope_cos);
    clv_free(s->rope_sin);
    clv_free(s->embed_row);
    free(s);
}

void clv_session_reset(clv_session *s) { s->pos = 0; }

void clv_session_rewind(clv_session *s, int pos) {
    /* the cache rows past pos are simply overwritten by what comes next */
    if (pos >= 0 && pos < s->pos) s->pos = pos;
}

/* One layer over T tokens at positions s->pos .. s->pos+T-1; x is updated in
 * place. With tensor parallelism a split block computes this rank's heads (or
 * intermediate features) and all-reduces the partial output projection. */
static int layer_forward(clv_session *s, int l, const clv_layer_w *L, int T, clv_status *st) {
    const clv_model *m = s->m;
    const clv_config *c = &m->cfg;
    clv_backend *be = layer_be(m, l);
    const clv_backend_ops *op = be->ops;
    const bool split_attn = m->tp.attn_sharded[l], split_mlp = m->tp.mlp_sharded[l];
    const int H = c->hidden, hd = c->head_dim;
    const int nh = split_attn ? m->tp.heads : c->n_heads, nkv = split_attn ? m->tp.kv_heads : c->n_kv_heads;
    const int I = split_mlp ? m->tp.inter : c->intermediate;
    const size_t kvd = (size_t)nkv * hd;
    int rc;

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
    op->matmul(be, s->xb2, s->att, &L->o, L->o_bias, T);                /* (T, H), partial when split */
    if (split_attn && (rc = m->comm->ops->allreduce_sum(m->comm, s->xb2, (size_t)T * H, m->stage, st))) return rc;
    op->add(be, s->x, s->xb2, (size_t)T * H);

    /* MLP block: down(silu(gate(x)) * up(x)) */
    op->rmsnorm(be, s->xb, s->x, L->ffn_norm, T, H, c->rms_eps);
    op->matmul(be, s->g, s->xb, &L->gate, L->gate_bias, T);            /* (T, I) */
    op->matmul(be, s->u, s->xb, &L->up, L->up_bias, T);                /* (T, I) */
    op->silu_mul(be, s->g, s->u, (size_t)T * I);
    op->matmul(be, s->xb2, s->g, &L->down, L->down_bias, T);           /* (T, H), partial when split */
    if (split_mlp && (rc = m->comm->ops->allreduce_sum(m->comm, s->xb2, (size_t)T * H, m->stage, st))) return rc;
    op->add(be, s->x, s->xb2, (size_t)T * H);
    return 0;
}

/* A rank outside `group` takes its place in a collective of that group (the
 * shared-memory communicator runs every collective on every rank). */
static int pass_collective(clv_session *s, int T, int group, bool gather, clv_status *st) {
    const clv_model *m = s->m;
    if (gather)
        return m->comm->ops->allgather(m->comm, s->gather, s->gather, (size_t)T * m->tp.vocab, group, st);
    return m->comm->ops->allreduce_sum(m->comm, s->xb2, (size_t)T * m->cfg.hidden, group, st);
}

/* Vocab-parallel embedding: rows this rank holds, zeros elsewhere, summed. */
static int embed_split(clv_session *s, const int32_t *ids, int T, clv_status *st) {
    const clv_model *m = s->m;
    const int H = m->cfg.hidden;
    clv_backend *be = exec_be(m, m->plan.embed_dev);
    for (int t = 0; t < T; t++) {
        int32_t local = ids[t] - m->tp.vocab0;
        if (local >= 0 && local < m->tp.vocab) be->ops->embed(be, s->x + (size_t)t * H, &m->embed, &local, 1);
        else memset(s->x + (size_t)t * H, 0, sizeof(float) * (size_t)H);
    }
    return m->comm->ops->allreduce_sum(m->comm, s->x, (size_t)T * H, 0, st);
}

/* lm_head over T rows of xb into out[T][V]; with a vocab-split head each rank
 * computes its columns and the logits are all-gathered. */
static int head_forward(clv_session *s, const clv_mat *head, int T, float *out, clv_status *st) {
    const clv_model *m = s->m;
    clv_backend *be = exec_be(m, m->plan.head_dev);
    if (!m->tp.head_sharded) {
        be->ops->matmul(be, out, s->xb, head, NULL, T);
        return 0;
    }
    const int V = m->cfg.vocab, Vl = m->tp.vocab, N = m->tp.size;
    be->ops->matmul(be, out, s->xb, head, NULL, T); /* (T, V/N), staged in out's first T*V/N floats */
    int rc = m->comm->ops->allgather(m->comm, out, s->gather, (size_t)T * Vl, m->pp - 1, st);
    if (rc) return rc;
    /* gather is [rank][T][V/N]: interleave into [T][V] */
    for (int r = 0; r < N; r++)
        for (int t = 0; t < T; t++)
            memcpy(out + (size_t)t * V + (size_t)r * Vl, s->gather + ((size_t)r * T + t) * Vl, sizeof(float) * (size_t)Vl);
    return 0;
}

static int embed_from_disk(clv_session *s, int id, float *out, clv_status *st) {
    const clv_model *m = s->m;
    const clv_st_set *set = m->offload.n_files ? &m->offload : &m->st;
    const clv_st_tensor *t = clv_st_find(set, "model.embed_tokens.weight");
    size_t row = clv_dtype_size(t->dtype) * (size_t)m->cfg.hidden;
    const clv_st_file *f = &set->files[t->file];
    if (pread(f->fd, s->embed_row, row, (off_t)(t->begin + (uint64_t)id * row)) != (ssize_t)row)
        return clv_fail(st, CLV_EIO, "%s: cannot read embedding row %d", f->path, id);
    clv_mat one = {s->embed_row, t->dtype, 1, m->cfg.hidden};
    int32_t zero = 0;
    clv_backend *be = exec_be(m, m->plan.embed_dev);
    be->ops->embed(be, out, &one, &zero, 1);
    return 0;
}

/* ---- pieces of one forward step, for the pipelined batch runner ---- */

int clv_session_embed(clv_session *s, const int32_t *ids, int T, clv_status *st) {
    clv_model *m = s->m;
    if (s->embed_row) {
        for (int t = 0; t < T; t++) {
            int rc = embed_from_disk(s, ids[t], s->x + (size_t)t * m->cfg.hidden, st);
            if (rc) return rc;
        }
        return 0;
    }
    clv_backend *be = exec_be(m, m->plan.embed_dev);
    be->ops->embed(be, s->x, &m->embed, ids, T);
    return 0;
}

int clv_session_layers(clv_session *s, int l0, int l1, int T, clv_status *st) {
    for (int l = l0; l < l1; l++) {
        clv_layer_w tmp;
        const clv_layer_w *L;
        int rc = clv_model_layer_acquire(s->m, l, &tmp, &L, st);
        if (rc) return rc;
        rc = layer_forward(s, l, L, T, st);
        clv_model_layer_done(s->m, l);
        if (rc) return rc;
    }
    return 0;
}

int clv_session_head(clv_session *s, int T, float *logits, clv_status *st) {
    clv_model *m = s->m;
    clv_backend *be = exec_be(m, m->plan.head_dev);
    clv_mat head;
    int rc = clv_model_head_acquire(m, &head, st);
    if (rc) return rc;
    be->ops->rmsnorm(be, s->xb, s->x + (size_t)(T - 1) * m->cfg.hidden, m->norm, 1, m->cfg.hidden, m->cfg.rms_eps);
    rc = head_forward(s, &head, 1, logits, st);
    clv_model_head_done(m);
    return rc;
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
    const clv_plan *p = &m->plan;
    int rc;
    for (int done = 0; done < n;) {
        int T = n - done < s->max_t ? n - done : s->max_t;
        clv_backend *be = exec_be(m, p->embed_dev);
        const bool first = m->stage == 0;
        if (!first) {
            if (m->tp.embed_sharded && (rc = pass_collective(s, T, 0, false, st))) return rc;
        } else if (s->embed_row) {
            /* embedding table on disk: read just the rows these tokens need */
            for (int t = 0; t < T; t++)
                if ((rc = embed_from_disk(s, ids[done + t], s->x + (size_t)t * H, st))) return rc;
        } else if (m->tp.embed_sharded) {
            if ((rc = embed_split(s, ids + done, T, st))) return rc;
        } else {
            be->ops->embed(be, s->x, &m->embed, ids + done, T);
        }
        /* Layers in order, each on the backend of its device (all devices so far
         * share host memory: activations need no copy). In a TP x PP mesh a
         * layer runs on its stage's ranks, and the activations are sent on
         * where the stage changes. */
        int at = 0; /* stage that holds the current activations */
        for (int l = 0; l < c->n_layers; l++) {
            if (m->stage_of[l] != at) {
                if ((rc = m->comm->ops->broadcast(m->comm, s->x, sizeof(float) * (size_t)T * H, at * m->tp.size, st)))
                    return rc;
                at = m->stage_of[l];
            }
            if (at != m->stage) {
                /* keep step with the collectives the owning stage makes */
                if ((m->tp.attn_sharded[l] && (rc = pass_collective(s, T, at, false, st))) ||
                    (m->tp.mlp_sharded[l] && (rc = pass_collective(s, T, at, false, st))))
                    return rc;
                continue;
            }
            clv_layer_w tmp;
            const clv_layer_w *L;
            if ((rc = clv_model_layer_acquire(m, l, &tmp, &L, st))) return rc;
            rc = layer_forward(s, l, L, T, st);
            clv_model_layer_done(m, l);
            if (rc) return rc;
        }
        if (at != m->pp - 1 &&
            (rc = m->comm->ops->broadcast(m->comm, s->x, sizeof(float) * (size_t)T * H, at * m->tp.size, st)))
            return rc;
        s->pos += T;
        done += T;

        if (!logits || (!all_logits && done < n)) continue;
        float *out = all_logits ? logits + (size_t)(done - T) * V : logits;
        const int rows = all_logits ? T : 1;
        if (m->stage == m->pp - 1) {
            be = exec_be(m, p->head_dev);
            clv_mat head;
            if ((rc = clv_model_head_acquire(m, &head, st))) return rc;
            be->ops->rmsnorm(be, s->xb, s->x + (size_t)(T - rows) * H, m->norm, rows, H, c->rms_eps);
            rc = head_forward(s, &head, rows, out, st);
            clv_model_head_done(m);
            if (rc) return rc;
        } else if (m->tp.head_sharded && (rc = pass_collective(s, rows, m->pp - 1, true, st))) {
            return rc;
        }
        /* the last stage has the logits; every rank gets them (rank 0 samples) */
        if (m->pp > 1 && (rc = m->comm->ops->broadcast(m->comm, out, sizeof(float) * (size_t)rows * V,
                                                       (m->pp - 1) * m->tp.size, st)))
            return rc;
    }
    return 0;
}
