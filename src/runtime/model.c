/* Loading: config -> plan -> bind tensors in place -> backends. */
#include <math.h>
#include <string.h>

#include "../util/util.h"
#include "runtime.h"

static bool is_ignored_extra(const char *name) {
    /* Old checkpoints store RoPE's inverse frequencies; transformers ignores them too. */
    size_t n = strlen(name), s = strlen("rotary_emb.inv_freq");
    if (n >= s && strcmp(name + n - s, "rotary_emb.inv_freq") == 0) return true;
    return false;
}

int clv_model_bind(clv_model *m, clv_status *st) {
    const clv_config *c = &m->cfg;
    int cap = clv_arch_max_tensors(c);
    clv_wdesc *want = calloc((size_t)cap, sizeof *want);
    bool *used = calloc((size_t)m->st.n_tensors + 1, sizeof *used);
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!want || !used || !m->layers) {
        free(want);
        free(used);
        return clv_fail(st, CLV_ENOMEM, "out of memory binding tensors");
    }
    int n = clv_arch_tensors(c, want, cap), rc = 0;
    CLV_ASSERT(n > 0);

    /* Size the f32 arena for every 1-D tensor, then point into it. */
    size_t vec_floats = 0;
    for (int i = 0; i < n; i++)
        if (want[i].ndim == 1) vec_floats += (size_t)want[i].shape[0];
    m->vec_arena = clv_alloc(sizeof(float) * (vec_floats ? vec_floats : 1));
    if (!m->vec_arena) {
        rc = clv_fail(st, CLV_ENOMEM, "out of memory for %zu norm/bias values", vec_floats);
        goto done;
    }
    float *vp = m->vec_arena;
    m->weight_bytes = 0;
    m->decode_bytes = 0;

    for (int i = 0; i < n; i++) {
        const clv_wdesc *d = &want[i];
        const clv_st_tensor *t = clv_st_find(&m->st, d->name);
        if (!t) {
            rc = clv_fail(st, CLV_EFORMAT, "tensor '%s' is missing from the checkpoint (%s needs it)", d->name,
                          clv_arch_name(c->arch));
            goto done;
        }
        const char *file = m->st.files[t->file].path;
        used[t - m->st.tensors] = true;
        bool shape_ok = t->ndim == d->ndim && t->shape[0] == d->shape[0] && (d->ndim == 1 || t->shape[1] == d->shape[1]);
        if (!shape_ok) {
            char got[128];
            clv_st_shape_str(t, got, sizeof got);
            if (d->ndim == 1)
                rc = clv_fail(st, CLV_EFORMAT, "%s: tensor '%s' has shape %s, expected [%lld] from config.json", file,
                              d->name, got, (long long)d->shape[0]);
            else
                rc = clv_fail(st, CLV_EFORMAT, "%s: tensor '%s' has shape %s, expected [%lld, %lld] from config.json",
                              file, d->name, got, (long long)d->shape[0], (long long)d->shape[1]);
            goto done;
        }
        if (t->dtype != CLV_DT_F32 && t->dtype != CLV_DT_BF16 && t->dtype != CLV_DT_F16) {
            rc = clv_fail(st, CLV_EUNSUPPORTED, "%s: tensor '%s' has dtype %s (supported: F32, BF16, F16)", file,
                          d->name, clv_dtype_name(t->dtype));
            goto done;
        }
        m->weight_bytes += t->end - t->begin;
        const void *data = clv_st_data(&m->st, t);
        if (d->ndim == 1) {
            int len = (int)d->shape[0];
            for (int k = 0; k < len; k++)
                vp[k] = t->dtype == CLV_DT_F32    ? ((const float *)data)[k]
                        : t->dtype == CLV_DT_BF16 ? clv_bf16_to_f32(((const uint16_t *)data)[k])
                                                  : clv_f16_to_f32(((const uint16_t *)data)[k]);
            const float *v = vp;
            vp += len;
            if (d->layer < 0) {
                m->norm = v;
                continue;
            }
            clv_layer_w *L = &m->layers[d->layer];
            switch (d->slot) {
            case CLV_W_ATTN_NORM: L->attn_norm = v; break;
            case CLV_W_FFN_NORM: L->ffn_norm = v; break;
            case CLV_W_Q_NORM: L->q_norm = v; break;
            case CLV_W_K_NORM: L->k_norm = v; break;
            case CLV_W_Q_BIAS: L->q_bias = v; break;
            case CLV_W_K_BIAS: L->k_bias = v; break;
            case CLV_W_V_BIAS: L->v_bias = v; break;
            case CLV_W_O_BIAS: L->o_bias = v; break;
            case CLV_W_GATE_BIAS: L->gate_bias = v; break;
            case CLV_W_UP_BIAS: L->up_bias = v; break;
            case CLV_W_DOWN_BIAS: L->down_bias = v; break;
            default: CLV_ASSERT(!"unexpected 1-D slot");
            }
            continue;
        }
        clv_mat mat = {data, t->dtype, (int)d->shape[0], (int)d->shape[1]};
        uint64_t bytes = t->end - t->begin;
        if (d->slot == CLV_W_EMBED) {
            m->embed = mat;
            m->decode_bytes += bytes / (uint64_t)mat.rows; /* one row per token */
            continue;
        }
        m->decode_bytes += bytes;
        if (d->slot == CLV_W_LM_HEAD) {
            m->lm_head = mat;
            continue;
        }
        clv_layer_w *L = &m->layers[d->layer];
        switch (d->slot) {
        case CLV_W_Q: L->q = mat; break;
        case CLV_W_K: L->k = mat; break;
        case CLV_W_V: L->v = mat; break;
        case CLV_W_O: L->o = mat; break;
        case CLV_W_GATE: L->gate = mat; break;
        case CLV_W_UP: L->up = mat; break;
        case CLV_W_DOWN: L->down = mat; break;
        default: CLV_ASSERT(!"unexpected 2-D slot");
        }
    }
    /* Tied embeddings: the head is the embedding table, unless the checkpoint
     * also stores an lm_head.weight, which transformers then uses instead. */
    const clv_st_tensor *head = c->tie_embeddings ? clv_st_find(&m->st, "lm_head.weight") : NULL;
    if (head) {
        const clv_st_tensor *e = clv_st_find(&m->st, "model.embed_tokens.weight");
        if (head->ndim != 2 || head->dtype != e->dtype || head->shape[0] != e->shape[0] || head->shape[1] != e->shape[1]) {
            char got[128];
            clv_st_shape_str(head, got, sizeof got);
            rc = clv_fail(st, CLV_EFORMAT, "%s: tensor 'lm_head.weight' (%s %s) does not match model.embed_tokens.weight",
                          m->st.files[head->file].path, clv_dtype_name(head->dtype), got);
            goto done;
        }
        used[head - m->st.tensors] = true;
        m->lm_head = (clv_mat){clv_st_data(&m->st, head), head->dtype, m->embed.rows, m->embed.cols};
        m->weight_bytes += head->end - head->begin;
        m->decode_bytes += head->end - head->begin;
    } else if (c->tie_embeddings) {
        m->lm_head = m->embed;
        m->decode_bytes += (uint64_t)m->embed.rows * m->embed.cols * clv_dtype_size(m->embed.dt) -
                           (uint64_t)m->embed.cols * clv_dtype_size(m->embed.dt);
    }
    for (int i = 0; i < m->st.n_tensors; i++) {
        const clv_st_tensor *t = &m->st.tensors[i];
        if (used[i]) continue;
        if (is_ignored_extra(t->name)) continue;
        rc = clv_fail(st, CLV_EFORMAT, "%s: unexpected tensor '%s' (not part of %s with this config.json)",
                      m->st.files[t->file].path, t->name, clv_arch_name(c->arch));
        goto done;
    }
done:
    free(want);
    free(used);
    return rc;
}

int clv_model_load(clv_model **out, const char *dir, const clv_load_opts *opts, clv_status *st) {
    *out = NULL;
    clv_model *m = calloc(1, sizeof *m);
    if (!m) return clv_fail(st, CLV_ENOMEM, "out of memory");
    int rc;
    if ((rc = clv_config_load(&m->cfg, &m->gen, dir, st))) goto fail;
    if (m->cfg.head_dim > CLV_MAX_HEAD_DIM) {
        rc = clv_fail(st, CLV_EUNSUPPORTED, "%s/config.json: head_dim %d is larger than the supported %d", dir,
                      m->cfg.head_dim, CLV_MAX_HEAD_DIM);
        goto fail;
    }
    clv_plan_single(&m->plan, &m->cfg, (clv_device){CLV_DEV_CPU, -1});
    if ((rc = clv_st_open_dir(&m->st, dir, st))) goto fail;
    if ((rc = clv_model_bind(m, st))) goto fail;
    for (int d = 0; d < m->plan.n_devices; d++) {
        char name[32];
        clv_device_str(&m->plan.devices[d], name, sizeof name);
        m->be[d] = clv_cpu_backend_new(name, opts ? opts->n_threads : 0, NULL);
        if (!m->be[d]) {
            rc = clv_fail(st, CLV_ENOMEM, "cannot start the %s backend", name);
            goto fail;
        }
    }
    *out = m;
    return 0;
fail:
    clv_model_free(m);
    return rc;
}

void clv_model_free(clv_model *m) {
    if (!m) return;
    for (int d = 0; d < CLV_MAX_DEVICES; d++)
        if (m->be[d]) m->be[d]->ops->destroy(m->be[d]);
    clv_st_close(&m->st);
    clv_free(m->vec_arena);
    free(m->layers);
    free(m);
}

int clv_model_vocab(const clv_model *m) { return m->cfg.vocab; }
