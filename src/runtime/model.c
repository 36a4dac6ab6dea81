/* Loading: config -> plan -> bind tensors in place -> backends. */
#include <math.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../util/util.h"
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
            b = (uint64_t)clv_st_numel(t) * clv_dtype_size(m->want_dt);
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
    ms->kv_per_token_layer = 2 * kvd * sizeof(float);
    ms->scratch_per_token = sizeof(float) * (3 * H + 2 * qd + 2 * kvd + 2 * I);
    ms->scratch_fixed = sizeof(float) * (uint64_t)c->vocab;
    (void)max_t;
}

/* Parse "cpu:0=2GiB,disk=10GB" into the request's budget list. */
static int parse_max_memory(const char *s, clv_plan_request *req, clv_status *st) {
    char buf[1024];
    if (strlen(s) >= sizeof buf) return clv_fail(st, CLV_EINVAL, "--max-memory: too long");
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

static int convert_weights(clv_model *m, const clv_load_opts *o, clv_status *st) {
    if (m->want_dt == CLV_DT_COUNT) return 0;
    const clv_config *c = &m->cfg;
    int cap = clv_arch_max_tensors(c), rc = 0, n_disk = 0;
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
            size_t numel = (size_t)w->rows * (size_t)w->cols;
            void *buf = clv_alloc(numel * clv_dtype_size(m->want_dt));
            void **ow = realloc(m->owned, sizeof(void *) * (size_t)(m->n_owned + 1));
            if (!buf || !ow) {
                clv_free(buf);
                if (ow) m->owned = ow;
                rc = clv_fail(st, CLV_ENOMEM, "out of memory converting %s to %s", t->name, clv_dtype_name(m->want_dt));
                goto done;
            }
            m->owned = ow;
            m->owned[m->n_owned++] = buf;
            convert_rows(buf, m->want_dt, w->data, w->dt, numel);
            /* the source pages were only needed for this: let them go */
            uintptr_t a = (uintptr_t)w->data & ~(uintptr_t)4095;
            madvise((void *)a, (uintptr_t)w->data + numel * clv_dtype_size(w->dt) - a, MADV_DONTNEED);
            bool tied = d[i].slot == CLV_W_EMBED && m->lm_head.data == w->data;
            w->data = buf;
            w->dt = m->want_dt;
            if (tied) m->lm_head = *w;
        }
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

int clv_model_layer_acquire(clv_model *m, int l, clv_layer_w *tmp, const clv_layer_w **out, clv_status *st) {
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
        clv_mat whole = {data, m->unit_map[u].slot[i] == CLV_W_QKV ? tmp->q.dt : tmp->gate.dt, 0, c->hidden};
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

void clv_model_layer_done(clv_model *m, int l) {
    if (m->layer_unit[l] >= 0) clv_streamer_release(m->streamer, m->layer_unit[l]);
}

int clv_model_head_acquire(clv_model *m, clv_mat *out, clv_status *st) {
    *out = m->lm_head;
    if (m->head_unit < 0) return 0;
    const uint8_t *base = clv_streamer_acquire(m->streamer, m->head_unit, st);
    if (!base) return st->code ? st->code : CLV_EIO;
    out->data = base + m->units[m->head_unit].slot_off[0];
    return 0;
}

void clv_model_head_done(clv_model *m) {
    if (m->head_unit >= 0) clv_streamer_release(m->streamer, m->head_unit);
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
        else {
            rc = clv_fail(st, CLV_EINVAL, "--dtype '%s': expected auto, f32, bf16 or f16", opts->dtype);
            goto fail;
        }
    }
    if ((rc = clv_topology_detect(&m->topo, st))) goto fail;
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
        int threads = opts && opts->n_threads > 0 ? opts->n_threads : m->topo.n_cpus;
        if (dev->kind == CLV_DEV_CPU && dev->index >= 0) {
            cpus = m->topo.group_cpus[dev->index];
            int n = m->topo.group_ncpus[dev->index];
            threads = opts && opts->n_threads > 0 && opts->n_threads < n ? opts->n_threads : n;
        }
        m->be[d] = clv_cpu_backend_new(name, threads, cpus);
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
