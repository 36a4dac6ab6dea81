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

/* The kv heads whose cache this process keeps for layer l: none for another
 * pipeline stage's layer, this rank's slice when attention is sharded. */
static int layer_kv_heads(const clv_model *m, int l) {
    if (m->stage_of[l] != m->stage) return 0;
    return m->tp.attn_sharded[l] ? m->tp.kv_heads : m->cfg.n_kv_heads;
}

/* The activation set a plan device computes in. */
static clv_acts *acts_of(clv_session *s, int d) {
    int e = s->m->plan.exec[d];
    return s->dev[e] ? s->dev[e] : &s->host;
}

static void *acts_alloc(clv_acts *a, size_t bytes) {
    return a->be ? a->be->ops->alloc(a->be, bytes) : clv_alloc(bytes);
}
static void acts_free(clv_acts *a) {
    float *bufs[] = {a->x, a->xb, a->xb2, a->q, a->k, a->v, a->att, a->g, a->u, a->logits, a->rope_cos, a->rope_sin, a->zero};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (!bufs[i]) continue;
        if (a->be) a->be->ops->free(a->be, bufs[i]);
        else clv_free(bufs[i]);
    }
}

static int acts_new(clv_session *s, clv_acts *a, clv_backend *be) {
    const clv_model *m = s->m;
    const clv_config *c = &m->cfg;
    const size_t T = (size_t)s->max_t, H = (size_t)c->hidden, qd = (size_t)c->n_heads * c->head_dim,
                 kvd = (size_t)c->n_kv_heads * c->head_dim, I = (size_t)c->intermediate,
                 half = (size_t)c->head_dim / 2;
    a->be = be;
    float **bufs[] = {&a->x, &a->xb, &a->xb2, &a->q, &a->k, &a->v, &a->att, &a->g, &a->u, &a->rope_cos, &a->rope_sin};
    size_t sizes[] = {T * H, T * H, T * H, T * qd, T * kvd, T * kvd, T * qd, T * I, T * I,
                      (size_t)s->ctx * half, (size_t)s->ctx * half};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (!(*bufs[i] = acts_alloc(a, sizeof(float) * sizes[i]))) return -1;
    /* [max_t][vocab] logits only where the head is computed: on any other
     * device they would be an unplanned max_t x vocab floats of its memory */
    if (be && be == exec_be(m, m->plan.head_dev) &&
        !(a->logits = acts_alloc(a, sizeof(float) * T * (size_t)c->vocab)))
        return -1;
    if (be && !(a->zero = acts_alloc(a, sizeof(float) * H))) return -1;
    return 0;
}

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
    const size_t T = (size_t)s->max_t, half = (size_t)c->head_dim / 2;
    /* Size first, then allocate once; nothing is allocated per token. */
    double kv_bytes = 0; /* this process's share: its stage's layers, its TP slice of the heads */
    for (int l = 0; l < c->n_layers; l++)
        kv_bytes += 2.0 * (double)clv_kv_cache_bytes(ctx, layer_kv_heads(m, l), c->head_dim, m->kv_dt);
    s->k_cache = calloc((size_t)c->n_layers, sizeof(void *));
    s->v_cache = calloc((size_t)c->n_layers, sizeof(void *));
    if (!s->k_cache || !s->v_cache) goto oom;
    for (int l = 0; l < c->n_layers; l++) {
        clv_backend *be = layer_be(m, l);
        const size_t bytes = clv_kv_cache_bytes(ctx, layer_kv_heads(m, l), c->head_dim, m->kv_dt);
        s->k_cache[l] = be->ops->alloc(be, bytes);
        s->v_cache[l] = be->ops->alloc(be, bytes);
        if (!s->k_cache[l] || !s->v_cache[l]) goto oom;
    }
    /* the host set always exists: host-memory backends compute in it, and
     * devices stage through it */
    if (acts_new(s, &s->host, NULL)) goto oom;
    for (int d = 0; d < m->plan.n_devices; d++) {
        clv_backend *be = m->be[d];
        if (!be || be->host_memory) continue;
        if (!(s->dev[d] = calloc(1, sizeof(clv_acts))) || acts_new(s, s->dev[d], be)) goto oom;
    }
    s->x_at = &s->host;
    if (!(s->gather = clv_alloc(sizeof(float) * (m->tp.head_sharded ? T * (size_t)c->vocab : 1)))) goto oom;
    if (m->plan.devices[m->plan.embed_dev].kind == CLV_DEV_DISK && !(s->embed_row = clv_alloc(8 * (size_t)c->hidden)))
        goto oom;

    /* cos/sin as transformers computes them: f32 inverse frequency times f32
     * position, rounded to f32, then scaled by the rope attention factor. */
    double inv[CLV_MAX_HEAD_DIM / 2];
    clv_rope_inv_freq(c, inv);
    const float af = (float)c->rope_attn_factor;
    for (int p = 0; p < ctx; p++)
        for (size_t i = 0; i < half; i++) {
            float ang = (float)p * (float)inv[i];
            s->host.rope_cos[(size_t)p * half + i] = cosf(ang) * af;
            s->host.rope_sin[(size_t)p * half + i] = sinf(ang) * af;
        }
    for (int d = 0; d < m->plan.n_devices; d++) {
        clv_acts *a = s->dev[d];
        if (!a) continue;
        a->be->ops->to_device(a->be, a->rope_cos, s->host.rope_cos, sizeof(float) * (size_t)ctx * half);
        a->be->ops->to_device(a->be, a->rope_sin, s->host.rope_sin, sizeof(float) * (size_t)ctx * half);
        if (a->be->ops->check(a->be, st)) {
            clv_session_free(s);
            return st->code;
        }
    }
    *out = s;
    return 0;
oom:
    clv_session_free(s);
    return clv_fail(st, CLV_ENOMEM, "out of memory allocating a %d-token session (KV cache %.1f MiB in this process)", ctx,
                    kv_bytes / (1 << 20));
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
    acts_free(&s->host);
    for (int d = 0; d < CLV_MAX_DEVICES; d++)
        if (s->dev[d]) {
            acts_free(s->dev[d]);
            free(s->dev[d]);
        }
    clv_free(s->gather);
    clv_free(s->embed_row);
    free(s);
}

/* Bring the T hidden states to activation set `to`, through host memory when
 * they sit on another device. */
static void move_x(clv_session *s, clv_acts *to, int T) {
    clv_acts *from = s->x_at;
    if (from == to) return;
    const size_t bytes = sizeof(float) * (size_t)T * s->m->cfg.hidden;
    if (from->be) from->be->ops->to_host(from->be, s->host.x, from->x, bytes);
    if (to->be) to->be->ops->to_device(to->be, to->x, s->host.x, bytes);
    s->x_at = to;
}

/* All-reduce of n floats that live in set a: in place when the communicator
 * takes that memory, else through the host set's xb2. */
static int reduce(clv_session *s, clv_acts *a, float *buf, size_t n, int group, clv_status *st) {
    clv_comm *comm = s->m->comm;
    if (!a->be || comm->device_buffers) return comm->ops->allreduce_sum(comm, buf, n, group, st);
    a->be->ops->to_host(a->be, s->host.xb2, buf, sizeof(float) * n);
    int rc = comm->ops->allreduce_sum(comm, s->host.xb2, n, group, st);
    if (!rc) a->be->ops->to_device(a->be, buf, s->host.xb2, sizeof(float) * n);
    return rc;
}

void clv_session_reset(clv_session *s) { s->pos = 0; }

void clv_session_rewind(clv_session *s, int pos) {
    /* the cache rows past pos are simply overwritten by what comes next */
    if (pos >= 0 && pos < s->pos) s->pos = pos;
}

/* One layer over T tokens at positions s->pos .. s->pos+T-1; x is updated in
 * place in the layer's activation set. With tensor parallelism a split block
 * computes this rank's heads (or intermediate features) and all-reduces the
 * partial output projection. */
static int layer_forward(clv_session *s, int l, const clv_layer_w *L, int T, clv_status *st) {
    const clv_model *m = s->m;
    const clv_config *c = &m->cfg;
    clv_backend *be = layer_be(m, l);
    const clv_backend_ops *op = be->ops;
    clv_acts *a = acts_of(s, m->plan.layer_dev[l]);
    move_x(s, a, T);
    const bool split_attn = m->tp.attn_sharded[l], split_mlp = m->tp.mlp_sharded[l];
    const int H = c->hidden, hd = c->head_dim;
    const int nh = split_attn ? m->tp.heads : c->n_heads, nkv = split_attn ? m->tp.kv_heads : c->n_kv_heads;
    const int I = split_mlp ? m->tp.inter : c->intermediate;
    int rc;

    /* attention block */
    op->rmsnorm(be, a->xb, a->x, L->attn_norm, T, H, c->rms_eps);      /* (T, H) */
    op->matmul(be, a->q, a->xb, &L->q, L->q_bias, T);                  /* (T, nh*hd) */
    op->matmul(be, a->k, a->xb, &L->k, L->k_bias, T);                  /* (T, nkv*hd) */
    op->matmul(be, a->v, a->xb, &L->v, L->v_bias, T);                  /* (T, nkv*hd) */
    if (c->qk_norm) {                                                  /* per-head RMSNorm (Qwen3) */
        op->rmsnorm(be, a->q, a->q, L->q_norm, T * nh, hd, c->rms_eps);
        op->rmsnorm(be, a->k, a->k, L->k_norm, T * nkv, hd, c->rms_eps);
    }
    op->rope(be, a->q, T, nh, hd, s->pos, a->rope_cos, a->rope_sin);
    op->rope(be, a->k, T, nkv, hd, s->pos, a->rope_cos, a->rope_sin);
    clv_attn_args aa = {.T = T, .pos0 = s->pos, .n_heads = nh, .n_kv_heads = nkv, .head_dim = hd,
                        .window = c->layer_sliding[l] ? c->sliding_window : 0,
                        .scale = 1.0f / sqrtf((float)hd), .ctx = s->ctx, .kv_dt = m->kv_dt};
    op->kv_store(be, s->k_cache[l], s->v_cache[l], a->k, a->v, &aa);
    op->attention(be, a->att, a->q, s->k_cache[l], s->v_cache[l], &aa); /* (T, nh*hd) */
    op->matmul(be, a->xb2, a->att, &L->o, L->o_bias, T);                /* (T, H), partial when split */
    if (split_attn && (rc = reduce(s, a, a->xb2, (size_t)T * H, m->stage, st))) return rc;
    op->add(be, a->x, a->xb2, (size_t)T * H);

    /* MLP block: down(silu(gate(x)) * up(x)) */
    op->rmsnorm(be, a->xb, a->x, L->ffn_norm, T, H, c->rms_eps);
    op->matmul(be, a->g, a->xb, &L->gate, L->gate_bias, T);            /* (T, I) */
    op->matmul(be, a->u, a->xb, &L->up, L->up_bias, T);                /* (T, I) */
    op->silu_mul(be, a->g, a->u, (size_t)T * I);
    op->matmul(be, a->xb2, a->g, &L->down, L->down_bias, T);           /* (T, H), partial when split */
    if (split_mlp && (rc = reduce(s, a, a->xb2, (size_t)T * H, m->stage, st))) return rc;
    op->add(be, a->x, a->xb2, (size_t)T * H);
    return be->ops->check(be, st);
}

/* A rank outside `group` takes its place in a collective of that group (the
 * shared-memory communicator runs every collective on every rank), with host
 * buffers. */
static int pass_collective(clv_session *s, int T, int group, bool gather, clv_status *st) {
    const clv_model *m = s->m;
    if (gather)
        return m->comm->ops->allgather(m->comm, s->gather, s->gather, (size_t)T * m->tp.vocab, group, st);
    return m->comm->ops->allreduce_sum(m->comm, s->host.xb2, (size_t)T * m->cfg.hidden, group, st);
}

/* Embedding rows as f32, looked up on the host (a table in host memory that a
 * device computes from, or a row read from disk). */
static void embed_rows_host(float *y, const clv_mat *table, const int32_t *ids, int T) {
    const size_t H = (size_t)table->cols, es = clv_dtype_size(table->dt);
    for (int t = 0; t < T; t++) {
        const uint8_t *row = (const uint8_t *)table->data + (size_t)ids[t] * H * es;
        float *o = y + (size_t)t * H;
        for (size_t i = 0; i < H; i++)
            o[i] = table->dt == CLV_DT_F32    ? ((const float *)row)[i]
                   : table->dt == CLV_DT_BF16 ? clv_bf16_to_f32(((const uint16_t *)row)[i])
                   : table->dt == CLV_DT_I8   ? (float)((const int8_t *)row)[i] * table->scale[ids[t]]
                                              : clv_f16_to_f32(((const uint16_t *)row)[i]);
    }
}

/* x = the embeddings of ids[0..T) (this rank's vocab rows when the table is
 * vocab-split: zeros for the others, then summed over the ranks). */
static int embed_tokens(clv_session *s, const int32_t *ids, int T, clv_status *st) {
    const clv_model *m = s->m;
    const size_t H = (size_t)m->cfg.hidden;
    clv_backend *be = exec_be(m, m->plan.embed_dev);
    clv_acts *a = m->embed_on_host ? &s->host : acts_of(s, m->plan.embed_dev);
    s->x_at = a;
    if (!m->tp.embed_sharded) {
        if (m->embed_on_host) embed_rows_host(a->x, &m->embed, ids, T);
        else be->ops->embed(be, a->x, &m->embed, ids, T);
        return 0;
    }
    for (int t = 0; t < T; t++) {
        int32_t local = ids[t] - m->tp.vocab0;
        float *row = a->x + (size_t)t * H;
        bool mine = local >= 0 && local < m->tp.vocab;
        if (m->embed_on_host) {
            if (mine) embed_rows_host(row, &m->embed, &local, 1);
            else memset(row, 0, sizeof(float) * H);
        } else if (mine) {
            be->ops->embed(be, row, &m->embed, &local, 1);
        } else if (a->be) {
            be->ops->copy(be, row, a->zero, sizeof(float) * H);
        } else {
            memset(row, 0, sizeof(float) * H);
        }
    }
    return reduce(s, a, a->x, (size_t)T * H, 0, st);
}

static int embed_from_disk(clv_session *s, int id, float *out, clv_status *st) {
    const clv_model *m = s->m;
    const clv_st_set *set = m->offload.n_files ? &m->offload : &m->st;
    const clv_st_tensor *t = clv_st_find(set, "model.embed_tokens.weight");
    size_t row = clv_dtype_size(t->dtype) * (size_t)m->cfg.hidden;
    const clv_st_file *f = &set->files[t->file];
    if (pread(f->fd, s->embed_row, row, (off_t)(t->begin + (uint64_t)id * row)) != (ssize_t)row)
        return clv_fail(st, CLV_EIO, "%s: cannot read embedding row %d", f->path, id);
    clv_mat one = {s->embed_row, t->dtype, 1, m->cfg.hidden, NULL};
    int32_t zero = 0;
    embed_rows_host(out, &one, &zero, 1);
    return 0;
}

static int embed_any(clv_session *s, const int32_t *ids, int T, clv_status *st) {
    if (!s->embed_row) return embed_tokens(s, ids, T, st);
    /* embedding table on disk: read just the rows these tokens need */
    s->x_at = &s->host;
    for (int t = 0; t < T; t++) {
        int rc = embed_from_disk(s, ids[t], s->host.x + (size_t)t * s->m->cfg.hidden, st);
        if (rc) return rc;
    }
    return 0;
}

/* Final norm + lm_head over the last `rows` of the T hidden states, into
 * out[rows][V] (host memory). With a vocab-split head each rank computes its
 * columns and the logits are all-gathered. */
static int head_forward(clv_session *s, int T, int rows, float *out, clv_status *st) {
    clv_model *m = s->m;
    const int H = m->cfg.hidden, V = m->cfg.vocab;
    clv_backend *be = exec_be(m, m->plan.head_dev);
    clv_acts *a = acts_of(s, m->plan.head_dev);
    move_x(s, a, T);
    clv_mat head;
    int rc = clv_model_head_acquire(m, &head, st);
    if (rc) return rc;
    be->ops->rmsnorm(be, a->xb, a->x + (size_t)(T - rows) * H, m->norm, rows, H, m->cfg.rms_eps);
    const size_t cols = m->tp.head_sharded ? (size_t)m->tp.vocab : (size_t)V;
    /* (rows, cols); a device computes into its own buffer and copies back */
    be->ops->matmul(be, a->be ? a->logits : out, a->xb, &head, NULL, rows);
    if (a->be) be->ops->to_host(be, out, a->logits, sizeof(float) * (size_t)rows * cols);
    clv_model_head_done(m);
    if ((rc = be->ops->check(be, st))) return rc;
    if (!m->tp.head_sharded) return 0;
    const int Vl = m->tp.vocab, N = m->tp.size;
    rc = m->comm->ops->allgather(m->comm, out, s->gather, (size_t)rows * Vl, m->pp - 1, st);
    if (rc) return rc;
    /* gather is [rank][rows][V/N]: interleave into [rows][V] */
    for (int r = 0; r < N; r++)
        for (int t = 0; t < rows; t++)
            memcpy(out + (size_t)t * V + (size_t)r * Vl, s->gather + ((size_t)r * rows + t) * Vl, sizeof(float) * (size_t)Vl);
    return 0;
}

/* ---- pieces of one forward step, for the pipelined batch runner ---- */

int clv_session_embed(clv_session *s, const int32_t *ids, int T, clv_status *st) { return embed_any(s, ids, T, st); }

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

int clv_session_head(clv_session *s, int T, float *logits, clv_status *st) { return head_forward(s, T, 1, logits, st); }

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
    int rc;
    for (int done = 0; done < n;) {
        int T = n - done < s->max_t ? n - done : s->max_t;
        const bool first = m->stage == 0;
        if (!first) {
            s->x_at = &s->host;
            if (m->tp.embed_sharded && (rc = pass_collective(s, T, 0, false, st))) return rc;
        } else if ((rc = embed_any(s, ids + done, T, st))) {
            return rc;
        }
        /* Layers in order, each on the backend of its device; the hidden
         * states follow them from device to device (layer_forward moves them).
         * In a TP x PP mesh a layer runs on its stage's ranks, and the
         * activations are sent on, from host memory, where the stage changes. */
        int at = 0; /* stage that holds the current activations */
        for (int l = 0; l < c->n_layers; l++) {
            if (m->stage_of[l] != at) {
                move_x(s, &s->host, T);
                if ((rc = m->comm->ops->broadcast(m->comm, s->host.x, sizeof(float) * (size_t)T * H, at * m->tp.size, st)))
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
        if (at != m->pp - 1) {
            move_x(s, &s->host, T);
            if ((rc = m->comm->ops->broadcast(m->comm, s->host.x, sizeof(float) * (size_t)T * H, at * m->tp.size, st)))
                return rc;
        }
        s->pos += T;
        done += T;

        if (!logits || (!all_logits && done < n)) continue;
        float *out = all_logits ? logits + (size_t)(done - T) * V : logits;
        const int rows = all_logits ? T : 1;
        if (m->stage == m->pp - 1) {
            if ((rc = head_forward(s, T, rows, out, st))) return rc;
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
