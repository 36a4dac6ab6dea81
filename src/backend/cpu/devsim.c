/* devsim — the CPU backend dressed as a device with its own memory, so that
 * the runtime's device paths (weight upload, activation copies between
 * devices, staged collectives, streamed weights, logits copied back) run and
 * are tested on machines without a GPU.
 *
 * Every pointer it hands out carries a tag in bit 62, which makes it a
 * non-canonical x86-64 address: host code that reads or writes it faults at
 * once instead of silently working. Every op insists on tagged pointers where
 * the vtable says device memory, so a host buffer passed by mistake is caught
 * too. Ops untag and run the wrapped CPU backend. */
#include <string.h>

#include "../../util/util.h"
#include "../backend.h"

#define TAG ((uintptr_t)1 << 62)

static void *tag(void *p) { return p ? (void *)((uintptr_t)p | TAG) : NULL; }

/* device pointer -> the host memory behind it; a host pointer here is a bug */
static void *dev(const void *p) {
    CLV_CHECK(p == NULL || ((uintptr_t)p & TAG), "devsim: a host pointer was passed where device memory belongs");
    return (void *)((uintptr_t)p & ~TAG);
}

static clv_backend *inner(clv_backend *b) { return b->impl; }

static clv_mat dev_mat(const clv_mat *w) {
    clv_mat m = *w;
    m.data = dev(w->data);
    return m;
}

static void *ds_alloc(clv_backend *b, size_t bytes) { return tag(inner(b)->ops->alloc(inner(b), bytes)); }
static void ds_free(clv_backend *b, void *p) {
    if (p) inner(b)->ops->free(inner(b), dev(p));
}
static void ds_matmul(clv_backend *b, float *y, const float *x, const clv_mat *w, const float *bias, int T) {
    clv_mat m = dev_mat(w);
    inner(b)->bf16_prefill = b->bf16_prefill;
    inner(b)->ops->matmul(inner(b), dev(y), dev(x), &m, bias ? dev(bias) : NULL, T);
}
static void ds_rmsnorm(clv_backend *b, float *y, const float *x, const float *w, int rows, int dim, float eps) {
    inner(b)->ops->rmsnorm(inner(b), dev(y), dev(x), dev(w), rows, dim, eps);
}
static void ds_rope(clv_backend *b, float *x, int T, int n_heads, int head_dim, int pos0, const float *cos_t,
                    const float *sin_t) {
    inner(b)->ops->rope(inner(b), dev(x), T, n_heads, head_dim, pos0, dev(cos_t), dev(sin_t));
}
static void ds_kv_store(clv_backend *b, void *kc, void *vc, const float *k, const float *v, const clv_attn_args *a) {
    inner(b)->ops->kv_store(inner(b), dev(kc), dev(vc), dev(k), dev(v), a);
}
static void ds_attention(clv_backend *b, float *out, const float *q, const void *k, const void *v,
                         const clv_attn_args *a) {
    inner(b)->ops->attention(inner(b), dev(out), dev(q), dev(k), dev(v), a);
}
static void ds_silu_mul(clv_backend *b, float *g, const float *u, size_t n) {
    inner(b)->ops->silu_mul(inner(b), dev(g), dev(u), n);
}
static void ds_add(clv_backend *b, float *y, const float *x, size_t n) { inner(b)->ops->add(inner(b), dev(y), dev(x), n); }
static void ds_embed(clv_backend *b, float *y, const clv_mat *table, const int32_t *ids, int T) {
    CLV_CHECK(((uintptr_t)ids & TAG) == 0, "devsim: token ids must be host memory");
    clv_mat m = dev_mat(table);
    inner(b)->ops->embed(inner(b), dev(y), &m, ids, T);
}
static void ds_copy(clv_backend *b, void *dst, const void *src, size_t bytes) {
    (void)b;
    memmove(dev(dst), dev(src), bytes);
}
static void ds_to_device(clv_backend *b, void *dst, const void *src_host, size_t bytes) {
    (void)b;
    CLV_CHECK(((uintptr_t)src_host & TAG) == 0, "devsim: to_device from device memory");
    memcpy(dev(dst), src_host, bytes);
}
static void ds_to_host(clv_backend *b, void *dst_host, const void *src, size_t bytes) {
    (void)b;
    CLV_CHECK(((uintptr_t)dst_host & TAG) == 0, "devsim: to_host into device memory");
    memcpy(dst_host, dev(src), bytes);
}
static void ds_sync(clv_backend *b) { (void)b; }
static int ds_check(clv_backend *b, clv_status *st) { return inner(b)->ops->check(inner(b), st); }
/* staging: the copy happens at once; the slot protocol has nothing to order */
static void ds_stage(clv_backend *b, int slot, void *dst, const void *src_host, size_t bytes) {
    CLV_CHECK(slot >= 0 && slot < CLV_STAGE_SLOTS, "devsim: stage slot out of range");
    ds_to_device(b, dst, src_host, bytes);
}
static void ds_stage_wait(clv_backend *b, int slot) {
    (void)b;
    CLV_CHECK(slot >= 0 && slot < CLV_STAGE_SLOTS, "devsim: stage slot out of range");
}
static void ds_destroy(clv_backend *b) {
    if (!b) return;
    inner(b)->ops->destroy(inner(b));
    free(b);
}

static const clv_backend_ops k_devsim_ops = {
    .name = "devsim",
    .alloc = ds_alloc,
    .free = ds_free,
    .matmul = ds_matmul,
    .rmsnorm = ds_rmsnorm,
    .rope = ds_rope,
    .kv_store = ds_kv_store,
    .attention = ds_attention,
    .silu_mul = ds_silu_mul,
    .add = ds_add,
    .embed = ds_embed,
    .copy = ds_copy,
    .to_device = ds_to_device,
    .to_host = ds_to_host,
    .sync = ds_sync,
    .check = ds_check,
    .stage = ds_stage,
    .stage_wait = ds_stage_wait,
    .stage_release = ds_stage_wait,
    .destroy = ds_destroy,
};

clv_backend *clv_devsim_backend_new(clv_backend *cpu) {
    if (!cpu) return NULL;
    clv_backend *b = calloc(1, sizeof *b);
    if (!b) {
        cpu->ops->destroy(cpu);
        return NULL;
    }
    b->ops = &k_devsim_ops;
    b->host_memory = false;
    b->impl = cpu;
    snprintf(b->name, sizeof b->name, "%s", cpu->name);
    return b;
}
