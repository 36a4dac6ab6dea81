/* Loading: config -> plan -> bind tensors in place -> backends. */
#include <math.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../util/util.h"
#include "quant.h"
#include "runtime.h"

static bool is_ignored_extra(const char *name) {
    /* Old checkpoints store RoPE's inverse frequencies; transformers ignores them too. */
    size_t n = strlen(name), s = strlen("rotary_emb.inv_freq");
    if (n >= s && strcmp(name + n - s, "rotary_emb.inv_freq") == 0) return true;
    return false;
}

/* Rows [r0, r0+n) of a matrix, as a view. */
static clv_mat mat_rows(clv_mat w, int r0, int n) {
    w.data = (const uint8_t *)w.data + (size_t)r0 * (size_t)w.cols * clv_dtype_size(w.dt);
    if (w.scale) w.scale += r0;
    w.rows = n;
    return w;
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
    m->vec_floats = vec_floats;
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
            /* with --dtype, 1-D weights take that dtype's rounding too, as transformers' dtype= does */
            if (m->want_dt == CLV_DT_BF16)
                for (int k = 0; k < len; k++) vp[k] = clv_bf16_to_f32(clv_f32_to_bf16(vp[k]));
            else if (m->want_dt == CLV_DT_F16)
                for (int k = 0; k < len; k++) vp[k] = clv_f16_to_f32(clv_f32_to_f16(vp[k]));
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
        clv_mat mat = {data, t->dtype, (int)d->shape[0], (int)d->shape[1], NULL};
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
        const int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
        switch (d->slot) {
        case CLV_W_QKV: /* views of the fused rows: [q; k; v] */
            L->q = mat_rows(mat, 0, qd), L->k = mat_rows(mat, qd, kvd), L->v = mat_rows(mat, qd + kvd, kvd);
            break;
        case CLV_W_GATE_UP: /* [gate; up] */
            L->gate = mat_rows(mat, 0, c->intermediate), L->up = mat_rows(mat, c->intermediate, c->intermediate);
            break;
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
        m->lm_head = (clv_mat){clv_st_data(&m->st, head), head->dtype, m->embed.rows, m->embed.cols, NULL};
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

void clv_model_sizes(const clv_model *m, int max_t, clv_module_sizes *ms) {
    const clv_config *c = &m->cfg;
    memset(ms, 0, sizeof *ms);
    ms->n_layers = c->n_layers;
    int cap = clv_arch_max_tensors(c);
    clv_wdesc *d = calloc((size_t)cap, sizeof *d);
    CLV_CHECK(d != NULL, "calloc");
    int n = clv_arch_tensors(c, d, cap);
    /* leaf modules (Linear, Embedding, norms; a bias belongs to its Linear), for balancing */
    for (int i = 0; i < n; i++) {
        const clv_st_tensor *t = clv_st_find(&m->st, d[i].name);
        uint64_t b = t ? t->end - t->begin : 0;
        if (t && d[i].ndim == 2 && m->want_dt != CLV_DT_COUNT) /* planned as it will be held */
            b = m->want_dt == CLV_DT_I8 ? (uint64_t)clv_st_numel(t) + sizeof(float) * (uint64_t)t->shape[0] /* + row scales */
                                        : (uint64_t)clv_st_numel(t) * clv_dtype_size(m->want_dt);
        switch (d[i].slot) {
        case CLV_W_EMBED: ms->embed += b; break;
        case CLV_W_NORM: ms->norm += b; break;
        case CLV_W_LM_HEAD: ms->head += b; break;
        default: ms->layer[d[i].layer] += b; break;
        }
        bool is_bias = d[i].slot == CLV_W_Q_BIAS || d[i].slot == CLV_W_K_BIAS || d[i].slot == CLV_W_V_BIAS ||
                       d[i].slot == CLV_W_O_BIAS || d[i].slot == CLV_W_GATE_BIAS || d[i].slot == CLV_W_UP_BIAS ||
                       d[i].slot == CLV_W_DOWN_BIAS;
        if (!is_bias) { /* the module owning this weight: add its bias, if it has one */
            uint64_t leaf = b;
            size_t nl = strlen(d[i].name);
            if (nl > 7 && strcmp(d[i].name + nl - 7, ".weight") == 0) {
                char bias[sizeof d[i].name + 8];
                snprintf(bias, sizeof bias, "%.*s.bias", (int)(nl - 7), d[i].name);
                const clv_st_tensor *bt = clv_st_find(&m->st, bias);
                if (bt) leaf += bt->end - bt->begin;
            }
            if (leaf > ms->leaf_max) ms->leaf_max = leaf;
        }
    }
    free(d);
    ms->rotary = 2 * sizeof(float) * (uint64_t)((c->head_dim + 1) / 2);
    const uint64_t H = (uint64_t)c->hidden, qd = (uint64_t)c->n_heads * c->head_dim,
                   kvd = (uint64_t)c->n_kv_heads * c->head_dim, I = (uint64_t)c->intermediate;
    ms->kv_per_token_layer = 2 * kvd * clv_kv_elem_bytes(m->kv_dt);
    ms->kv_dt = m->kv_dt;
    ms->scratch_per_token = sizeof(float) * (3 * H + 2 * qd + 2 * kvd + 2 * I);
    ms->scratch_fixed = sizeof(float) * (uint64_t)c->vocab;
    (void)max_t;
}

/* Parse "cpu:0=2GiB,disk=10GB" into the request's budget list. */
static int parse_max_memory(const char *s, clv_plan_request *req, clv_status *st) {
    char buf[1024];
    if (strlen(s) >= sizeof buf) return clv_fail(st, CLV_EINVAL, "--max-memory: too long");
    if (!*s || *s == ',' || s[strlen(s) - 1] == ',' || strstr(s, ",,"))
        return clv_fail(st, CLV_EINVAL, "--max-memory '%s': an empty entry (want DEVICE=SIZE[,DEVICE=SIZE...])", s);
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) return clv_fail(st, CLV_EINVAL, "--max-memory: '%s' is not DEVICE=SIZE (e.g. cpu:0=2GiB)", tok);
        *eq = 0;
        if (req->n_budgets == CLV_MAX_DEVICES) return clv_fail(st, CLV_EINVAL, "--max-memory: too many devices");
        clv_device d;
        uint64_t b;
        if (clv_device_parse(tok, &d, st) || clv_size_parse(eq + 1, &b, st)) return clv_wrap(st, "--max-memory: ");
        for (int k = 0; k < req->n_budgets; k++)
            if (clv_device_eq(req->budget_dev[k], d)) return clv_fail(st, CLV_EINVAL, "--max-memory: %s is given twice", tok);
        req->budget_dev[req->n_budgets] = d;
        req->budget[req->n_budgets++] = b;
    }
    return 0;
}

static int make_plan(clv_model *m, const clv_load_opts *o, clv_status *st) {
    clv_plan_request req = {.mode = CLV_MAP_DEVICE, .device = {CLV_DEV_CPU, -1}};
    req.ctx = o ? o->ctx : 0;
    req.max_t = m->prefill_chunk;
    req.accelerate_compat = o && o->accelerate_compat;
    const char *ox = o && o->offload_exec && *o->offload_exec ? o->offload_exec : "auto";
    if (strcmp(ox, "auto") == 0) req.offload_exec = CLV_OFFLOAD_AUTO;
    else if (strcmp(ox, "main") == 0) req.offload_exec = CLV_OFFLOAD_MAIN;
    else if (strcmp(ox, "local") == 0) req.offload_exec = CLV_OFFLOAD_LOCAL;
    else return clv_fail(st, CLV_EINVAL, "--offload-exec '%s': expected auto, main or local", ox);
    char *json = NULL;
    int rc;
    if (o && o->max_memory && *o->max_memory && (rc = parse_max_memory(o->max_memory, &req, st))) return rc;
    const char *dm = o && o->device_map && *o->device_map ? o->device_map : NULL;
    if (!dm) {
        if (req.n_budgets) req.mode = CLV_MAP_AUTO; /* a budget without a map: place by it */
    } else if (strcmp(dm, "auto") == 0) req.mode = CLV_MAP_AUTO;
    else if (strcmp(dm, "balanced") == 0) req.mode = CLV_MAP_BALANCED;
    else if (strcmp(dm, "balanced_low_0") == 0) req.mode = CLV_MAP_BALANCED_LOW_0;
    else if (strcmp(dm, "sequential") == 0) req.mode = CLV_MAP_SEQUENTIAL;
    else if (clv_device_parse(dm, &req.device, st) == 0) req.mode = CLV_MAP_DEVICE;
    else {
        size_t len;
        if (!clv_file_exists(dm))
            return clv_fail(st, CLV_EINVAL, "--device-map '%s': unknown device '%s' (cpu, cpu:N, disk, cuda:N), and not "
                            "auto, balanced, balanced_low_0, sequential or an existing JSON file", dm, dm);
        if ((rc = clv_read_file(dm, &json, &len, st))) return rc;
        req.mode = CLV_MAP_EXPLICIT;
        req.map_json = json;
        req.map_path = dm;
    }
    clv_module_sizes ms;
    clv_model_sizes(m, req.max_t, &ms);
    rc = clv_plan_make(&m->plan, &m->cfg, &ms, &m->topo, &req, st);
    free(json);
    return rc;
}

/* ---- --dtype: weights converted at load ------------------------------------------- */

static void convert_rows(void *dst, clv_dtype dd, const void *src, clv_dtype sd, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = sd == CLV_DT_F32    ? ((const float *)src)[i]
                  : sd == CLV_DT_BF16 ? clv_bf16_to_f32(((const uint16_t *)src)[i])
                                      : clv_f16_to_f32(((const uint16_t *)src)[i]);
        if (dd == CLV_DT_F32) ((float *)dst)[i] = v;
        else if (dd == CLV_DT_BF16) ((uint16_t *)dst)[i] = clv_f32_to_bf16(v);
        else ((uint16_t *)dst)[i] = clv_f32_to_f16(v);
    }
}

static bool on_disk(const clv_model *m, int dev) { return m->plan.devices[dev].kind == CLV_DEV_DISK; }

/* w's rows to int8 (quant.h); when w is a tensor-parallel column slice of
 * checkpoint tensor t (all of its rows, some columns), with the whole rows'
 * scales. */
static int quantize_mat(int8_t *q, float *scale, const clv_mat *w, const clv_model *m, const clv_st_tensor *t,
                        int n_threads) {
    const bool part = t && t->ndim == 2 && t->shape[1] != w->cols;
    CLV_ASSERT(!part || t->shape[0] == w->rows);
    int rc = clv_quantize_rows(q, scale, w->data, w->dt, w->rows, w->cols, part ? clv_st_data(&m->st, t) : NULL,
                               part ? t->dtype : w->dt, part ? (int)t->shape[1] : 0, n_threads);
    if (part) { /* the other ranks' columns were only read for the scales */
        uintptr_t a = (uintptr_t)clv_st_data(&m->st, t) & ~(uintptr_t)4095;
        madvise((void *)a, (uintptr_t)clv_st_data(&m->st, t) + (t->end - t->begin) - a, MADV_DONTNEED);
    }
    return rc;
}

static bool devsim_wanted(const char *name);
/* int8 matrices are computed by the CPU kernels from RAM: no device backend
 * has int8 kernels, and the disk tier's converted copy would need the scales
 * as a second tensor. */
static int int8_placement(const clv_model *m, clv_status *st) {
    const clv_plan *p = &m->plan;
    for (int i = -2; i < p->n_layers; i++) {
        const int d = i == -2 ? p->embed_dev : i == -1 ? p->head_dev : p->layer_dev[i];
        char what[48], dev[32], ex[32];
        if (i < 0) snprintf(what, sizeof what, i == -2 ? "model.embed_tokens" : "lm_head");
        else snprintf(what, sizeof what, "model.layers.%d", i);
        clv_device_str(&p->devices[d], dev, sizeof dev);
        clv_device_str(&p->devices[p->exec[d]], ex, sizeof ex);
        if (on_disk(m, d))
            return clv_fail(st, CLV_EUNSUPPORTED, "--dtype int8 with disk-tier weights (%s on %s) is not supported yet: "
                            "give --max-memory or a device map that keeps every module in RAM", what, dev);
        if (p->devices[p->exec[d]].kind == CLV_DEV_CUDA || devsim_wanted(ex))
            return clv_fail(st, CLV_EUNSUPPORTED, "--dtype int8 runs on the CPU backend only (%s computes %s%s): use "
                            "--dtype bf16 or a device map of cpu devices", ex, what,
                            devsim_wanted(ex) ? ", as a device-memory backend under CLV_DEVSIM" : "");
    }
    return 0;
}

/* The matrices a tensor descriptor binds to (a fused tensor binds several
 * row views), and the plan device it lives on. */
static int mats_of(clv_model *m, const clv_wdesc *d, int *dev, clv_mat **out) {
    const clv_plan *p = &m->plan;
    if (d->slot == CLV_W_EMBED) return *dev = p->embed_dev, out[0] = &m->embed, 1;
    if (d->slot == CLV_W_LM_HEAD) return *dev = p->head_dev, out[0] = &m->lm_head, 1;
    if (d->ndim != 2) return 0;
    clv_layer_w *L = &m->layers[d->layer];
    *dev = p->layer_dev[d->layer];
    switch (d->slot) {
    case CLV_W_QKV: return out[0] = &L->q, out[1] = &L->k, out[2] = &L->v, 3;
    case CLV_W_GATE_UP: return out[0] = &L->gate, out[1] = &L->up, 2;
    case CLV_W_Q: return out[0] = &L->q, 1;
    case CLV_W_K: return out[0] = &L->k, 1;
    case CLV_W_V: return out[0] = &L->v, 1;
    case CLV_W_O: return out[0] = &L->o, 1;
    case CLV_W_GATE: return out[0] = &L->gate, 1;
    case CLV_W_UP: return out[0] = &L->up, 1;
    case CLV_W_DOWN: return out[0] = &L->down, 1;
    default: return 0;
    }
}

typedef struct { const clv_model *m; const clv_st_tensor **src; } fill_ctx;

static int fill_converted(void *ctx, int i, void *buf, size_t bytes, clv_status *st) {
    const fill_ctx *f = ctx;
    const clv_st_tensor *t = f->src[i];
    size_t n = (size_t)clv_st_numel(t);
    if (bytes != n * clv_dtype_size(f->m->want_dt)) return clv_fail(st, CLV_EINVAL, "offload: size mismatch for %s", t->name);
    convert_rows(buf, f->m->want_dt, clv_st_data(&f->m->st, t), t->dtype, n);
    return 0;
}

/* Let the page cache take back the checkpoint pages of [p, p + bytes), when
 * they are the mmap's: a neighbour sharing an edge page faults it back in
 * from the file. Anything else (a tensor-parallel slice's heap buffer, whose
 * pages may hold other allocations) is left alone. */
static void release_mapped(const clv_model *m, const void *p, size_t bytes) {
    const uint8_t *d = p;
    for (int f = 0; f < m->st.n_files; f++)
        if (d >= m->st.files[f].map && d < m->st.files[f].map + m->st.files[f].size) {
            uintptr_t a = (uintptr_t)d & ~(uintptr_t)4095;
            madvise((void *)a, (uintptr_t)d + bytes - a, MADV_DONTNEED);
        }
}

/* One resident matrix to want_dt, in a buffer the model owns. t: its
 * checkpoint tensor; whole: all of it is read per decoded token (else one
 * row: an embedding table the head does not share). */
static int convert_mat(clv_model *m, clv_mat *w, const clv_st_tensor *t, bool whole, clv_status *st) {
    const size_t numel = (size_t)w->rows * (size_t)w->cols;
    const bool i8 = m->want_dt == CLV_DT_I8;
    const size_t held = i8 ? clv_i8_bytes(w->rows, w->cols) : numel * clv_dtype_size(m->want_dt);
    void *buf = clv_alloc(held);
    void **ow = realloc(m->owned, sizeof(void *) * (size_t)(m->n_owned + 1));
    if (!buf || !ow) {
        clv_free(buf);
        if (ow) m->owned = ow;
        return clv_fail(st, CLV_ENOMEM, "out of memory converting %s to %s", t->name, clv_dtype_name(m->want_dt));
    }
    m->owned = ow;
    m->owned[m->n_owned++] = buf;
    float *scale = i8 ? (float *)((uint8_t *)buf + clv_i8_scales_at(w->rows, w->cols)) : NULL;
    if (i8 && quantize_mat(buf, scale, w, m, t, m->load_threads))
        return clv_fail(st, CLV_ENOMEM, "out of memory quantizing %s", t->name);
    if (!i8) convert_rows(buf, m->want_dt, w->data, w->dt, numel);
    m->decode_bytes += (uint64_t)(((int64_t)held - (int64_t)(numel * clv_dtype_size(w->dt))) / (whole ? 1 : w->rows));
    /* the checkpoint's pages were only needed for this */
    release_mapped(m, w->data, numel * clv_dtype_size(w->dt));
    w->data = buf;
    w->dt = m->want_dt;
    w->scale = scale;
    return 0;
}

static int convert_weights(clv_model *m, const clv_load_opts *o, clv_status *st) {
    if (m->want_dt == CLV_DT_COUNT) return 0;
    m->load_threads = o && o->n_threads > 0 ? o->n_threads : clv_topology_threads(&m->topo, -1);
    int rc;
    if (m->want_dt == CLV_DT_I8 && (rc = int8_placement(m, st))) return rc;
    const clv_config *c = &m->cfg;
    int cap = clv_arch_max_tensors(c), n_disk = 0;
    rc = 0;
    clv_wdesc *d = calloc((size_t)cap, sizeof *d);
    clv_st_wtensor *wt = calloc((size_t)cap, sizeof *wt);
    const clv_st_tensor **src = calloc((size_t)cap, sizeof *src);
    if (!d || !wt || !src) {
        rc = clv_fail(st, CLV_ENOMEM, "out of memory");
        goto done;
    }
    int n = clv_arch_tensors(c, d, cap);
    uint64_t disk_bytes = 0;
    bool disk_needs = false;
    for (int i = 0; i < n; i++) {
        int dev;
        clv_mat *parts[3];
        int np = mats_of(m, &d[i], &dev, parts);
        if (!np) continue;
        const clv_st_tensor *t = clv_st_find(&m->st, d[i].name);
        if (on_disk(m, dev)) {
            /* every disk-tier matrix goes to the offload file, so streaming reads one set */
            src[n_disk] = t;
            wt[n_disk++] = (clv_st_wtensor){t->name, m->want_dt, 2, {t->shape[0], t->shape[1]}, NULL};
            disk_bytes += (uint64_t)clv_st_numel(t) * clv_dtype_size(m->want_dt);
            disk_needs |= t->dtype != m->want_dt;
            continue;
        }
        for (int k = 0; k < np; k++) {
            clv_mat *w = parts[k];
            if (w->dt == m->want_dt) continue;
            const bool tied = d[i].slot == CLV_W_EMBED && m->lm_head.data == w->data;
            if ((rc = convert_mat(m, w, t, d[i].slot != CLV_W_EMBED || tied, st))) goto done;
            if (tied) m->lm_head = *w;
        }
    }
    /* a head no descriptor converted: a tied head that tensor parallelism
     * sliced apart from the table, or a checkpoint's own lm_head.weight
     * under tie_word_embeddings (bind uses it) */
    if (m->lm_head.dt != m->want_dt && !on_disk(m, m->plan.head_dev) && (m->pp == 1 || m->stage == m->pp - 1)) {
        const clv_st_tensor *ht = clv_st_find(&m->st, "lm_head.weight");
        if ((rc = convert_mat(m, &m->lm_head, ht ? ht : clv_st_find(&m->st, "model.embed_tokens.weight"), true, st)))
            goto done;
    }
    if (!disk_needs) goto done; /* disk-tier weights already in the right dtype: read in place */
    const char *folder = o ? o->offload_folder : NULL;
    if (!folder || !*folder) {
        rc = clv_fail(st, CLV_EINVAL, "disk-tier weights must be converted to %s (%.1f MB): give --offload-folder DIR",
                      clv_dtype_name(m->want_dt), disk_bytes / 1e6);
        goto done;
    }
    char sub[4096], path[4200];
    snprintf(sub, sizeof sub, "%s/cleave-%s", folder, clv_dtype_name(m->want_dt));
    if ((mkdir(folder, 0755) != 0 && errno != EEXIST) || (mkdir(sub, 0755) != 0 && errno != EEXIST) ||
        access(sub, W_OK) != 0) {
        rc = clv_fail(st, CLV_EIO, "--offload-folder %s: cannot be written: %s", folder, strerror(errno));
        goto done;
    }
    struct statvfs vs;
    if (statvfs(sub, &vs) == 0 && (uint64_t)vs.f_bavail * vs.f_frsize < disk_bytes + (1u << 20)) {
        rc = clv_fail(st, CLV_EIO, "--offload-folder %s: %.1f MB of converted weights needed, %.1f MB free", folder,
                      disk_bytes / 1e6, (double)vs.f_bavail * vs.f_frsize / 1e6);
        goto done;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", sub);
    fill_ctx fc = {m, src};
    if ((rc = clv_st_write_cb(path, wt, n_disk, "pt", fill_converted, &fc, st))) goto done;
    if ((rc = clv_st_open_dir(&m->offload, sub, st))) goto done;
    clv_info("wrote %.1f MB of disk-tier weights as %s to %s\n", disk_bytes / 1e6, clv_dtype_name(m->want_dt), path);
    /* the matrices of disk-tier modules now describe the converted tensors */
    for (int i = 0; i < n; i++) {
        int dev;
        clv_mat *parts[3];
        int np = mats_of(m, &d[i], &dev, parts);
        for (int k = 0; k < np && on_disk(m, dev); k++) parts[k]->dt = m->want_dt;
    }
    if (m->plan.tied && on_disk(m, m->plan.embed_dev)) m->lm_head.dt = m->want_dt;
done:
    free(d);
    free(wt);
    free(src);
    return rc;
}

/* Disk-tier modules become stream units, in the order a forward pass uses them. */
static int make_units(clv_model *m, const clv_load_opts *o, clv_status *st) {
    const clv_plan *p = &m->plan;
    const clv_config *c = &m->cfg;
    m->layer_unit = malloc(sizeof(int) * (size_t)c->n_layers);
    m->units = calloc((size_t)c->n_layers + 1, sizeof *m->units);
    m->unit_map = calloc((size_t)c->n_layers + 1, sizeof *m->unit_map);
    if (!m->layer_unit || !m->units || !m->unit_map) return clv_fail(st, CLV_ENOMEM, "out of memory");
    m->head_unit = -1;
    int cap = clv_arch_max_tensors(c);
    clv_wdesc *d = calloc((size_t)cap, sizeof *d);
    if (!d) return clv_fail(st, CLV_ENOMEM, "out of memory");
    int n = clv_arch_tensors(c, d, cap);
    for (int l = 0; l < c->n_layers; l++) {
        m->layer_unit[l] = -1;
        if (p->devices[p->layer_dev[l]].kind != CLV_DEV_DISK) continue;
        int u = m->n_units++;
        m->layer_unit[l] = u;
        m->unit_map[u].layer = l;
        for (int i = 0; i < n; i++)
            if (d[i].layer == l && d[i].ndim == 2) {
                CLV_ASSERT(m->units[u].n < CLV_STREAM_MAX_TENSORS);
                m->unit_map[u].slot[m->units[u].n] = d[i].slot;
                m->units[u].t[m->units[u].n++] = clv_st_find(m->offload.n_files ? &m->offload : &m->st, d[i].name);
            }
    }
    if (p->devices[p->head_dev].kind == CLV_DEV_DISK) {
        int u = m->n_units++;
        m->head_unit = u;
        m->unit_map[u].layer = -1;
        const clv_st_set *set = m->offload.n_files ? &m->offload : &m->st;
        const clv_st_tensor *t = clv_st_find(set, "lm_head.weight");
        if (!t) t = clv_st_find(set, "model.embed_tokens.weight");
        m->unit_map[u].slot[0] = CLV_W_LM_HEAD;
        m->units[u].t[m->units[u].n++] = t;
    }
    free(d);
    if (!m->n_units) return 0;
    const clv_st_set *set = m->offload.n_files ? &m->offload : &m->st;
    return clv_streamer_new(&m->streamer, set, m->units, m->n_units, !(o && o->no_prefetch), st);
}

static int host_layer_acquire(clv_model *m, int l, clv_layer_w *tmp, const clv_layer_w **out, clv_status *st) {
    int u = m->layer_unit[l];
    if (u < 0) {
        *out = &m->layers[l];
        return 0;
    }
    const uint8_t *base = clv_streamer_acquire(m->streamer, u, st);
    if (!base) return st->code ? st->code : CLV_EIO;
    *tmp = m->layers[l];
    for (int i = 0; i < m->units[u].n; i++) {
        const void *data = base + m->units[u].slot_off[i];
        const clv_config *c = &m->cfg;
        const int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim, I = c->intermediate;
        clv_mat whole = {data, m->unit_map[u].slot[i] == CLV_W_QKV ? tmp->q.dt : tmp->gate.dt, 0, c->hidden, NULL};
        switch (m->unit_map[u].slot[i]) {
        case CLV_W_QKV:
            tmp->q.data = mat_rows(whole, 0, qd).data, tmp->k.data = mat_rows(whole, qd, kvd).data;
            tmp->v.data = mat_rows(whole, qd + kvd, kvd).data;
            break;
        case CLV_W_GATE_UP: tmp->gate.data = data, tmp->up.data = mat_rows(whole, I, I).data; break;
        case CLV_W_Q: tmp->q.data = data; break;
        case CLV_W_K: tmp->k.data = data; break;
        case CLV_W_V: tmp->v.data = data; break;
        case CLV_W_O: tmp->o.data = data; break;
        case CLV_W_GATE: tmp->gate.data = data; break;
        case CLV_W_UP: tmp->up.data = data; break;
        case CLV_W_DOWN: tmp->down.data = data; break;
        default: CLV_ASSERT(!"unexpected streamed slot");
        }
    }
    *out = tmp;
    return 0;
}

static void host_layer_done(clv_model *m, int l) {
    if (m->layer_unit[l] >= 0) clv_streamer_release(m->streamer, m->layer_unit[l]);
}

static int host_head_acquire(clv_model *m, clv_mat *out, clv_status *st) {
    *out = m->lm_head;
    if (m->head_unit < 0) return 0;
    const uint8_t *base = clv_streamer_acquire(m->streamer, m->head_unit, st);
    if (!base) return st->code ? st->code : CLV_EIO;
    out->data = base + m->units[m->head_unit].slot_off[0];
    return 0;
}

static void host_head_done(clv_model *m) {
    if (m->head_unit >= 0) clv_streamer_release(m->streamer, m->head_unit);
}

/* ---- devices with their own memory ----------------------------------------------- */

clv_backend *clv_model_exec_be(const clv_model *m, int d) { return m->be[m->plan.exec[d]]; }

/* The matrices of unit u (layer u, or the head when u == n_layers), in the
 * order they are laid out in a stage slot. */
static int unit_mats(clv_layer_w *L, clv_mat *head, clv_mat **out) {
    if (!L) return out[0] = head, 1;
    clv_mat *w[] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
    for (int i = 0; i < 7; i++) out[i] = w[i];
    return 7;
}
static size_t mat_bytes(const clv_mat *w) { return (size_t)w->rows * (size_t)w->cols * clv_dtype_size(w->dt); }
static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }
static size_t unit_bytes(clv_layer_w *L, clv_mat *head) {
    clv_mat *w[7];
    size_t b = 0;
    for (int i = 0, n = unit_mats(L, head, w); i < n; i++) b += align256(mat_bytes(w[i]));
    return b;
}

/* Queue the copy of a unit's host matrices (src) into `slot`; dst gets the
 * same matrices pointing into the slot. */
static void stage_unit(clv_model *m, int slot, clv_layer_w *srcL, clv_mat *srch, clv_layer_w *dstL, clv_mat *dsth) {
    clv_backend *be = m->be[m->stream_dev];
    clv_mat *src[7], *dst[7];
    int n = unit_mats(srcL, srch, src);
    unit_mats(dstL, dsth, dst);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        void *to = (uint8_t *)m->slot_buf[slot] + off;
        if (src[i]->data) be->ops->stage(be, slot, to, src[i]->data, mat_bytes(src[i]));
        *dst[i] = *src[i];
        dst[i]->data = to;
        off += align256(mat_bytes(src[i]));
    }
}

/* The unit's matrices as they sit in its slot (after stage_unit put them there). */
static void slot_view(clv_model *m, int slot, clv_layer_w *L, clv_mat *head) {
    clv_mat *w[7];
    size_t off = 0;
    for (int i = 0, n = unit_mats(L, head, w); i < n; i++) {
        w[i]->data = (uint8_t *)m->slot_buf[slot] + off;
        off += align256(mat_bytes(w[i]));
    }
}

static int slot_of(const clv_model *m, int u) { return m->dorder[u] % CLV_STAGE_SLOTS; }

/* Get unit u's weights into its slot on the streaming device (from the host
 * copy, or from disk through the streamer), and start copying the next
 * streamed unit into the other slot while this one computes. */
static int stream_acquire(clv_model *m, int u, clv_layer_w *tmpL, clv_mat *tmph, clv_status *st) {
    const int nl = m->cfg.n_layers;
    clv_backend *be = m->be[m->stream_dev];
    const int slot = slot_of(m, u);
    clv_layer_w *base = u < nl ? &m->layers[u] : NULL;
    if (base) *tmpL = *base;
    else *tmph = m->lm_head;
    if (m->slot_unit[slot] != u) {
        const bool from_disk = u < nl ? m->layer_unit[u] >= 0 : m->head_unit >= 0;
        if (from_disk) {
            /* the streamer's buffer is host memory it reuses: the copy must
             * have landed before the unit goes back to it */
            clv_layer_w hl;
            const clv_layer_w *hp = NULL;
            clv_mat hh;
            int rc = u < nl ? host_layer_acquire(m, u, &hl, &hp, st) : host_head_acquire(m, &hh, st);
            if (rc) return rc;
            stage_unit(m, slot, (clv_layer_w *)hp, &hh, base ? tmpL : NULL, tmph);
            be->ops->stage_wait(be, slot);
            be->ops->sync(be);
            if (u < nl) host_layer_done(m, u);
            else host_head_done(m);
        } else {
            stage_unit(m, slot, base, &m->lm_head, base ? tmpL : NULL, tmph);
        }
        m->slot_unit[slot] = u;
    }
    be->ops->stage_wait(be, slot);
    slot_view(m, slot, base ? tmpL : NULL, tmph);
    /* prefetch: the next streamed unit, if it is in host memory and its slot
     * is not the one this unit computes from */
    int v = m->dnext[u], vs = slot_of(m, v);
    bool v_disk = v < nl ? m->layer_unit[v] >= 0 : m->head_unit >= 0;
    if (v != u && vs != slot && m->slot_unit[vs] != v && !v_disk) {
        clv_layer_w scratchL;
        clv_mat scratchh;
        stage_unit(m, vs, v < nl ? &m->layers[v] : NULL, &m->lm_head, v < nl ? &scratchL : NULL, &scratchh);
        m->slot_unit[vs] = v;
    }
    return be->ops->check(be, st);
}

static void stream_done(clv_model *m, int u) {
    clv_backend *be = m->be[m->stream_dev];
    be->ops->stage_release(be, slot_of(m, u));
}

int clv_model_layer_acquire(clv_model *m, int l, clv_layer_w *tmp, const clv_layer_w **out, clv_status *st) {
    if (!m->dstream || !m->dstream[l]) return host_layer_acquire(m, l, tmp, out, st);
    int rc = stream_acquire(m, l, tmp, NULL, st);
    *out = tmp;
    return rc;
}

void clv_model_layer_done(clv_model *m, int l) {
    if (m->dstream && m->dstream[l]) stream_done(m, l);
    else host_layer_done(m, l);
}

int clv_model_head_acquire(clv_model *m, clv_mat *out, clv_status *st) {
    if (!m->dstream || !m->dstream[m->cfg.n_layers]) return host_head_acquire(m, out, st);
    return stream_acquire(m, m->cfg.n_layers, NULL, out, st);
}

void clv_model_head_done(clv_model *m) {
    if (m->dstream && m->dstream[m->cfg.n_layers]) stream_done(m, m->cfg.n_layers);
    else host_head_done(m);
}

/* Room for one more entry in m->dev_owned (what clv_model_free gives back). */
static bool dev_owned_room(clv_model *m) {
    void **o = realloc(m->dev_owned, sizeof(void *) * (size_t)(m->n_dev_owned + 1));
    if (o) m->dev_owned = o;
    int *ob = realloc(m->dev_owned_be, sizeof(int) * (size_t)(m->n_dev_owned + 1));
    if (ob) m->dev_owned_be = ob;
    return o && ob;
}

/* A device copy of a matrix that will live there. */
static int upload_mat(clv_model *m, int d, clv_mat *w, clv_status *st) {
    if (!w->data) return 0;
    clv_backend *be = m->be[d];
    size_t bytes = mat_bytes(w);
    void *p = dev_owned_room(m) ? be->ops->alloc(be, bytes) : NULL;
    if (!p) {
        if (be->ops->check(be, st)) return st->code;
        return clv_fail(st, CLV_ENOMEM, "%s: out of device memory for a %zu-byte weight", be->name, bytes);
    }
    m->dev_owned[m->n_dev_owned] = p;
    m->dev_owned_be[m->n_dev_owned++] = d;
    be->ops->to_device(be, p, w->data, bytes);
    w->data = p;
    return 0;
}

static const float *dev_vec(const clv_model *m, int d, const float *v) {
    return v ? m->dev_vec[d] + (v - m->vec_arena) : NULL;
}

/* Weights of modules computed by a device with its own memory: resident ones
 * are copied there once; those stored in host RAM or on disk become streamed
 * units. Norms and biases (small) are resident on every such device. */
static int place_on_devices(clv_model *m, clv_status *st) {
    const clv_plan *p = &m->plan;
    const int nl = m->cfg.n_layers;
    bool any = false;
    for (int d = 0; d < p->n_devices; d++) {
        clv_backend *be = m->be[d];
        if (!be || be->host_memory) continue;
        any = true;
        size_t bytes = sizeof(float) * m->vec_floats;
        if (!(m->dev_vec[d] = be->ops->alloc(be, bytes ? bytes : 4)))
            return clv_fail(st, CLV_ENOMEM, "%s: out of device memory for the norms and biases", be->name);
        be->ops->to_device(be, m->dev_vec[d], m->vec_arena, bytes);
    }
    if (!any) return 0;
    m->dstream = calloc((size_t)nl + 1, sizeof(bool));
    m->dnext = calloc((size_t)nl + 1, sizeof(int));
    m->dorder = calloc((size_t)nl + 1, sizeof(int));
    if (!m->dstream || !m->dnext || !m->dorder) return clv_fail(st, CLV_ENOMEM, "out of memory");
    m->stream_dev = -1;
    int rc, n_stream = 0, order[CLV_MAX_LAYERS + 1];
    size_t slot_bytes = 0;
    for (int u = 0; u <= nl; u++) {
        const int sd = u < nl ? p->layer_dev[u] : p->head_dev, e = p->exec[sd];
        clv_backend *be = m->be[e];
        if (be->host_memory) continue;
        if (u < nl ? m->stage_of[u] != m->stage : m->stage != m->pp - 1) continue; /* another stage's */
        clv_layer_w *L = u < nl ? &m->layers[u] : NULL;
        if (L) {
            const float **v[] = {&L->attn_norm, &L->ffn_norm, &L->q_norm, &L->k_norm, &L->q_bias, &L->k_bias,
                                 &L->v_bias, &L->o_bias, &L->gate_bias, &L->up_bias, &L->down_bias};
            for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) *v[i] = dev_vec(m, e, *v[i]);
        } else {
            m->norm = dev_vec(m, e, m->norm);
        }
        if (sd == e) { /* resident on the device */
            clv_mat *w[7];
            for (int i = 0, n = unit_mats(L, &m->lm_head, w); i < n; i++) {
                /* tied: the head is the embedding table, uploaded with it below */
                if (!L && m->lm_head.data == m->embed.data && m->stage == 0) continue;
                if ((rc = upload_mat(m, e, w[i], st))) return rc;
            }
            continue;
        }
        if (m->stream_dev >= 0 && m->stream_dev != e)
            return clv_fail(st, CLV_EUNSUPPORTED, "weights streamed to two devices (%s and %s)", m->be[m->stream_dev]->name,
                            be->name);
        m->stream_dev = e;
        m->dstream[u] = true;
        m->dorder[u] = n_stream;
        order[n_stream++] = u;
        size_t ub = unit_bytes(L, &m->lm_head);
        if (ub > slot_bytes) slot_bytes = ub;
        /* a host-RAM unit is copied once into pinned memory, which the copy
         * engine reads at full speed while the device computes */
        const bool from_disk = u < nl ? m->layer_unit[u] >= 0 : m->head_unit >= 0;
        if (!from_disk && be->ops->alloc_host) {
            uint8_t *pin = dev_owned_room(m) ? be->ops->alloc_host(be, ub) : NULL;
            if (!pin) return clv_fail(st, CLV_ENOMEM, "%s: cannot pin %zu bytes of host memory", be->name, ub);
            m->dev_owned[m->n_dev_owned] = pin;
            m->dev_owned_be[m->n_dev_owned++] = -1 - e; /* pinned host memory of device e */
            clv_mat *w[7];
            size_t off = 0;
            for (int i = 0, n = unit_mats(L, &m->lm_head, w); i < n; i++) {
                memcpy(pin + off, w[i]->data, mat_bytes(w[i]));
                release_mapped(m, w[i]->data, mat_bytes(w[i])); /* not read again */
                w[i]->data = pin + off;
                off += align256(mat_bytes(w[i]));
            }
        }
    }
    /* the embedding: resident on its device, else looked up on the host */
    const int ee = p->exec[p->embed_dev];
    if (!m->be[ee]->host_memory && m->stage == 0) {
        if (p->embed_dev == ee) {
            const bool tied = m->lm_head.data == m->embed.data && p->head_dev == p->embed_dev;
            if ((rc = upload_mat(m, ee, &m->embed, st))) return rc;
            if (tied) m->lm_head = m->embed;
        } else {
            m->embed_on_host = true;
        }
    }
    for (int k = 0; k < n_stream; k++) m->dnext[order[k]] = order[(k + 1) % n_stream];
    for (int i = 0; i < CLV_STAGE_SLOTS; i++) m->slot_unit[i] = -1;
    if (n_stream) {
        clv_backend *be = m->be[m->stream_dev];
        m->slot_bytes = slot_bytes;
        for (int i = 0; i < CLV_STAGE_SLOTS; i++)
            if (!(m->slot_buf[i] = be->ops->alloc(be, slot_bytes)))
                return clv_fail(st, CLV_ENOMEM, "%s: out of device memory for two %zu-byte streaming slots", be->name,
                                slot_bytes);
        clv_info("%s: %d modules stream from host memory or disk through two %.1f MB slots\n", be->name, n_stream,
                 slot_bytes / 1e6);
    }
    for (int d = 0; d < p->n_devices; d++)
        if (m->be[d] && (rc = m->be[d]->ops->check(m->be[d], st))) return rc;
    return 0;
}

/* ---- tensor parallelism: keep only this rank's slice of every split tensor ---- */

static const clv_st_tensor *layer_tensor(const clv_model *m, int l, const char *what) {
    char name[128];
    snprintf(name, sizeof name, "model.layers.%d.%s", l, what);
    return clv_st_find(&m->st, name);
}

/* A rank reads only its slice of each split tensor, with pread into a buffer
 * it owns: through the mmap, the page cache's large folios would map the other
 * ranks' rows into this process too. Rows [r0, r0+n) are one contiguous read;
 * columns [c0, c0+n) one read per row. */
static int keep_slice(clv_model *m, clv_mat *w, const clv_st_tensor *t, int r0, int nr, int c0, int nc, clv_status *st) {
    size_t es = clv_dtype_size(w->dt), row_bytes = (size_t)nc * es;
    uint8_t *buf = clv_alloc((size_t)nr * row_bytes);
    void **o = realloc(m->owned, sizeof(void *) * (size_t)(m->n_owned + 1));
    if (!buf || !o) {
        clv_free(buf);
        if (o) m->owned = o;
        return clv_fail(st, CLV_ENOMEM, "out of memory for a slice of %s", t->name);
    }
    m->owned = o;
    m->owned[m->n_owned++] = buf;
    const clv_st_file *f = &m->st.files[t->file];
    const bool whole_rows = c0 == 0 && nc == w->cols;
    for (int r = 0; r < (whole_rows ? 1 : nr); r++) {
        size_t len = whole_rows ? (size_t)nr * row_bytes : row_bytes;
        off_t off = (off_t)(t->begin + ((uint64_t)(r0 + r) * (uint64_t)w->cols + (uint64_t)c0) * es);
        size_t done = 0;
        while (done < len) {
            ssize_t got = pread(f->fd, buf + (size_t)r * row_bytes + done, len - done, off + (off_t)done);
            if (got <= 0) return clv_fail(st, CLV_EIO, "%s: cannot read the slice of %s", f->path, t->name);
            done += (size_t)got;
        }
    }
    w->data = buf;
    w->rows = nr;
    w->cols = nc;
    return 0;
}

static int tp_slice(clv_model *m, clv_status *st) {
    const clv_tp_plan *tp = &m->tp;
    const clv_config *c = &m->cfg;
    const int hd = c->head_dim;
    int rc = 0;
    for (int l = 0; l < c->n_layers && rc == 0; l++) {
        clv_layer_w *L = &m->layers[l];
        if (m->stage_of[l] != m->stage) continue; /* another stage's layer: never read */
#define T_(what) layer_tensor(m, l, what)
        /* a fused tensor is split part by part (packed): each rank takes its rows of q, of k and of v */
        const bool fz = c->fused;
        const clv_st_tensor *tq = T_(fz ? "self_attn.qkv_proj.weight" : "self_attn.q_proj.weight");
        const clv_st_tensor *tk = fz ? tq : T_("self_attn.k_proj.weight"), *tv = fz ? tq : T_("self_attn.v_proj.weight");
        const clv_st_tensor *tg = T_(fz ? "mlp.gate_up_proj.weight" : "mlp.gate_proj.weight");
        const clv_st_tensor *tu = fz ? tg : T_("mlp.up_proj.weight");
        const int k_off = fz ? c->n_heads * hd : 0, v_off = fz ? (c->n_heads + c->n_kv_heads) * hd : 0;
        const int u_off = fz ? c->intermediate : 0;
        if (tp->attn_sharded[l]) {
            if ((rc = keep_slice(m, &L->q, tq, tp->head0 * hd, tp->heads * hd, 0, L->q.cols, st)) ||
                (rc = keep_slice(m, &L->k, tk, k_off + tp->kv_head0 * hd, tp->kv_heads * hd, 0, L->k.cols, st)) ||
                (rc = keep_slice(m, &L->v, tv, v_off + tp->kv_head0 * hd, tp->kv_heads * hd, 0, L->v.cols, st)) ||
                (rc = keep_slice(m, &L->o, T_("self_attn.o_proj.weight"), 0, L->o.rows, tp->head0 * hd, tp->heads * hd, st)))
                break;
            if (L->q_bias) L->q_bias += tp->head0 * hd;
            if (L->k_bias) L->k_bias += tp->kv_head0 * hd;
            if (L->v_bias) L->v_bias += tp->kv_head0 * hd;
            if (tp->rank != 0) L->o_bias = NULL; /* partial sums are all-reduced: add the bias once */
        }
        if (tp->mlp_sharded[l]) {
            if ((rc = keep_slice(m, &L->gate, tg, tp->inter0, tp->inter, 0, L->gate.cols, st)) ||
                (rc = keep_slice(m, &L->up, tu, u_off + tp->inter0, tp->inter, 0, L->up.cols, st)) ||
                (rc = keep_slice(m, &L->down, T_("mlp.down_proj.weight"), 0, L->down.rows, tp->inter0, tp->inter, st)))
                break;
            if (L->gate_bias) L->gate_bias += tp->inter0;
            if (L->up_bias) L->up_bias += tp->inter0;
            if (tp->rank != 0) L->down_bias = NULL;
        }
#undef T_
    }
    if (rc) return rc;
    const clv_st_tensor *head_t = clv_st_find(&m->st, "lm_head.weight");
    const clv_st_tensor *emb_t = clv_st_find(&m->st, "model.embed_tokens.weight");
    if (tp->head_sharded && m->stage == m->pp - 1 &&
        (rc = keep_slice(m, &m->lm_head, head_t ? head_t : emb_t, tp->vocab0, tp->vocab, 0, m->lm_head.cols, st)))
        return rc;
    if (tp->embed_sharded && m->stage == 0 && (rc = keep_slice(m, &m->embed, emb_t, tp->vocab0, tp->vocab, 0, m->embed.cols, st))) return rc;
    m->rank_bytes = clv_model_tp_bytes(m, tp);
    return 0;
}

uint64_t clv_model_tp_bytes(const clv_model *m, const clv_tp_plan *tp) {
    const clv_config *c = &m->cfg;
    const uint64_t hd = (uint64_t)c->head_dim, H = (uint64_t)c->hidden;
    uint64_t b = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const clv_layer_w *L = &m->layers[l];
        if (m->pp > 1 && m->stage_of[l] != m->stage) continue;
        uint64_t es = clv_dtype_size(L->q.dt);
        uint64_t nh = (uint64_t)(tp->attn_sharded[l] ? tp->heads : c->n_heads);
        uint64_t nkv = (uint64_t)(tp->attn_sharded[l] ? tp->kv_heads : c->n_kv_heads);
        uint64_t I = (uint64_t)(tp->mlp_sharded[l] ? tp->inter : c->intermediate);
        b += es * (2 * nh * hd * H + 2 * nkv * hd * H + 3 * I * H);
    }
    uint64_t es = clv_dtype_size(m->embed.dt), V = (uint64_t)c->vocab;
    bool first = m->pp == 1 || m->stage == 0, last = m->pp == 1 || m->stage == m->pp - 1;
    if (first) b += es * H * (tp->embed_sharded ? (uint64_t)tp->vocab : V);
    if (last && (!c->tie_embeddings || !first || tp->head_sharded != tp->embed_sharded))
        b += es * H * (tp->head_sharded ? (uint64_t)tp->vocab : V);
    return b;
}

/* CLV_DEVSIM=cpu:1[,cpu:0]: those CPU devices run behind the device-memory
 * front (backend.h), to test the device paths without a GPU. */
static bool devsim_wanted(const char *name) {
    const char *v = getenv("CLV_DEVSIM");
    if (!v) return false;
    size_t n = strlen(name);
    for (const char *p = v; (p = strstr(p, name)); p += n)
        if ((p == v || p[-1] == ',') && (p[n] == 0 || p[n] == ',')) return true;
    return false;
}

/* The GPUs this process may use. A job of several ranks gives each rank one
 * GPU, local_rank modulo the GPUs there are, which it calls cuda:0 (ranks
 * share GPUs when there are fewer GPUs than ranks on the host). */
static int detect_gpus(clv_model *m, clv_status *st) {
    clv_topology *t = &m->topo;
    int n = clv_cuda_device_count(t->gpu_why, sizeof t->gpu_why);
    m->gpu_base = 0;
    if (n > 0 && m->comm && m->comm->world > 1) {
        m->gpu_base = m->comm->local_rank % n;
        n = 1;
    }
    t->n_gpus = n < CLV_MAX_DEVICES ? n : CLV_MAX_DEVICES;
    for (int g = 0; g < t->n_gpus; g++) {
        uint64_t total;
        if (clv_cuda_mem_info(m->gpu_base + g, &t->gpu_free[g], &total, st)) return st->code;
    }
    return 0;
}

int clv_model_load(clv_model **out, const char *dir, const clv_load_opts *opts, clv_status *st) {
    *out = NULL;
    clv_model *m = calloc(1, sizeof *m);
    if (!m) return clv_fail(st, CLV_ENOMEM, "out of memory");
    m->prefill_chunk = opts && opts->prefill_chunk > 0 ? opts->prefill_chunk : 512;
    int rc;
    if ((rc = clv_config_load(&m->cfg, &m->gen, dir, st))) goto fail;
    if (m->cfg.head_dim > CLV_MAX_HEAD_DIM) {
        rc = clv_fail(st, CLV_EUNSUPPORTED, "%s/config.json: head_dim %d is larger than the supported %d", dir,
                      m->cfg.head_dim, CLV_MAX_HEAD_DIM);
        goto fail;
    }
    m->want_dt = CLV_DT_COUNT;
    if (opts && opts->dtype && *opts->dtype && strcmp(opts->dtype, "auto") != 0) {
        if (strcmp(opts->dtype, "f32") == 0) m->want_dt = CLV_DT_F32;
        else if (strcmp(opts->dtype, "bf16") == 0) m->want_dt = CLV_DT_BF16;
        else if (strcmp(opts->dtype, "f16") == 0) m->want_dt = CLV_DT_F16;
        else if (strcmp(opts->dtype, "int8") == 0) m->want_dt = CLV_DT_I8;
        else {
            rc = clv_fail(st, CLV_EINVAL, "--dtype '%s': expected auto, f32, bf16, f16 or int8", opts->dtype);
            goto fail;
        }
    }
    if (opts && opts->prefill_precision && strcmp(opts->prefill_precision, "f32") != 0) {
        if (strcmp(opts->prefill_precision, "bf16") != 0) {
            rc = clv_fail(st, CLV_EINVAL, "--prefill-precision '%s': expected f32 or bf16", opts->prefill_precision);
            goto fail;
        }
        m->bf16_prefill = true;
    }
    m->kv_dt = CLV_DT_F32;
    if (opts && opts->kv_dtype && strcmp(opts->kv_dtype, "f32") != 0) {
        if (strcmp(opts->kv_dtype, "bf16") != 0) {
            rc = clv_fail(st, CLV_EINVAL, "--kv-dtype '%s': expected f32 or bf16", opts->kv_dtype);
            goto fail;
        }
        m->kv_dt = CLV_DT_BF16;
    }
    if ((rc = clv_topology_detect(&m->topo, st))) goto fail;
    if ((rc = detect_gpus(m, st))) goto fail;
    if ((rc = clv_st_open_dir(&m->st, dir, st))) goto fail;
    /* the mesh: pp stages of consecutive layers, each over a tp group of ranks;
     * the tp plan is validated before any weight byte is read */
    m->comm = opts ? opts->comm : NULL;
    m->pp = opts && opts->pp > 0 ? opts->pp : 1;
    int world = m->comm ? m->comm->world : 1, rank = m->comm ? m->comm->rank : 0;
    if (world % m->pp) {
        rc = clv_fail(st, CLV_EINVAL, "--pp %d does not divide the job's %d ranks", m->pp, world);
        goto fail;
    }
    if (m->pp > m->cfg.n_layers) {
        rc = clv_fail(st, CLV_EINVAL, "--pp %d: more stages than the model's %d layers", m->pp, m->cfg.n_layers);
        goto fail;
    }
    int tp_size = world / m->pp;
    m->stage = rank / tp_size;
    for (int l = 0; l < m->cfg.n_layers; l++) m->stage_of[l] = (int)((int64_t)l * m->pp / m->cfg.n_layers);
    if (m->comm && (rc = m->comm->ops->set_group_size(m->comm, tp_size, st))) goto fail;
    if ((rc = clv_tp_plan_make(&m->tp, &m->cfg, tp_size, rank % tp_size, opts ? opts->tp_plan : NULL,
                               opts && opts->tp_plan_path ? opts->tp_plan_path : "--tp-plan", st)))
        goto fail;
    if ((rc = clv_model_bind(m, st))) goto fail;
    if ((rc = make_plan(m, opts, st))) goto fail;
    if (m->tp.size > 1 || m->pp > 1) {
        for (int d = 0; d < m->plan.n_devices; d++)
            if (m->plan.devices[d].kind == CLV_DEV_DISK && m->plan.weight_bytes[d]) {
                rc = clv_fail(st, CLV_EUNSUPPORTED, "tensor parallelism with disk-tier weights is not supported yet");
                goto fail;
            }
        if ((rc = tp_slice(m, st))) goto fail;
        if (m->tp.kv_replicated)
            clv_info("tensor parallel: --tp %d exceeds num_key_value_heads %d: each KV head is replicated on the %d ranks "
                     "whose query heads use it\n", m->tp.size, m->cfg.n_kv_heads, m->tp.size / m->cfg.n_kv_heads);
    } else {
        m->rank_bytes = m->weight_bytes;
    }
    if ((rc = convert_weights(m, opts, st))) goto fail;
    if ((rc = make_units(m, opts, st))) goto fail;
    for (int d = 0; d < m->plan.n_devices; d++) {
        const clv_device *dev = &m->plan.devices[d];
        if (dev->kind == CLV_DEV_DISK) continue;
        char name[32];
        clv_device_str(dev, name, sizeof name);
        const int *cpus = NULL;
        /* default: one thread per physical core (SMT siblings add no bandwidth) */
        const int want = opts && opts->n_threads > 0 ? opts->n_threads : 0;
        int threads = want ? want : clv_topology_threads(&m->topo, -1);
        if (dev->kind == CLV_DEV_CPU && dev->index >= 0) {
            cpus = m->topo.group_cpus[dev->index]; /* cores first: threads land on distinct cores */
            int n = m->topo.group_ncpus[dev->index];
            threads = want ? (want < n ? want : n) : clv_topology_threads(&m->topo, dev->index);
        }
        if (dev->kind == CLV_DEV_CUDA) {
            if (!(m->be[d] = clv_cuda_backend_new(name, m->gpu_base + dev->index, st))) {
                rc = st->code ? st->code : CLV_EDEVICE;
                goto fail;
            }
            m->be[d]->bf16_prefill = m->bf16_prefill;
            continue;
        }
        m->be[d] = clv_cpu_backend_new(name, threads, cpus);
        if (m->be[d] && devsim_wanted(name)) m->be[d] = clv_devsim_backend_new(m->be[d]);
        if (!m->be[d]) {
            rc = clv_fail(st, CLV_ENOMEM, "cannot start the %s backend", name);
            goto fail;
        }
        m->be[d]->bf16_prefill = m->bf16_prefill;
    }
    if ((rc = place_on_devices(m, st))) goto fail;
    *out = m;
    return 0;
fail:
    clv_model_free(m);
    return rc;
}

void clv_model_free(clv_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_dev_owned; i++) {
        int d = m->dev_owned_be[i];
        clv_backend *be = m->be[d >= 0 ? d : -1 - d];
        if (d >= 0) be->ops->free(be, m->dev_owned[i]);
        else be->ops->free_host(be, m->dev_owned[i]);
    }
    free(m->dev_owned);
    free(m->dev_owned_be);
    for (int d = 0; d < CLV_MAX_DEVICES; d++)
        if (m->be[d] && m->dev_vec[d]) m->be[d]->ops->free(m->be[d], m->dev_vec[d]);
    for (int i = 0; i < CLV_STAGE_SLOTS; i++)
        if (m->slot_buf[i]) m->be[m->stream_dev]->ops->free(m->be[m->stream_dev], m->slot_buf[i]);
    free(m->dstream);
    free(m->dnext);
    free(m->dorder);
    for (int d = 0; d < CLV_MAX_DEVICES; d++)
        if (m->be[d]) m->be[d]->ops->destroy(m->be[d]);
    clv_streamer_free(m->streamer);
    for (int i = 0; i < m->n_owned; i++) clv_free(m->owned[i]);
    free(m->owned);
    free(m->units);
    free(m->unit_map);
    free(m->layer_unit);
    clv_st_close(&m->st);
    clv_st_close(&m->offload);
    clv_free(m->vec_arena);
    free(m->layers);
    free(m);
}

int clv_model_ctx(const clv_model *m) { return m->plan.ctx; }

int clv_model_vocab(const clv_model *m) { return m->cfg.vocab; }
