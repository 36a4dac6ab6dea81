/* The device-map planner on a made-up machine (three GPUs), for what the
 * machines the suite runs on cannot show: module sizes and budgets chosen so
 * that the greedy pass's estimate of the later GPUs' room is wrong.
 *
 * Layers of 100 MB (80 weights + 20 KV cache at --ctx 16), cuda:1 and cuda:2
 * with 160 MB each. When cuda:0 decides whether to hold back the KV cache of
 * the layers after it, the later GPUs' room (2 x 160 MB) covers what is left
 * (3 layers and the norm, 301 MB), so it holds none back; but each GPU takes
 * one whole layer, the third goes to disk, and its KV cache lands on cuda:0,
 * which has no room left for it. The planner must then place everything
 * again holding the later KV caches back on cuda:0, and the result must fit
 * every budget.
 *
 * Then a GPU that computes the head holds a chunk's logits (vocab x max_t
 * floats, 160 MB here), which the greedy pass does not count: with room for
 * every layer but not for them, cuda:0 must be given fewer layers, not
 * refused. More memory on cuda:0 must never turn a plan into a refusal. */
#include <string.h>

#include "check.h"
#include "plan/plan.h"

#define MB 1000000ull

static void setup(clv_config *c, clv_topology *t, clv_module_sizes *ms, uint64_t logits_row) {
    memset(c, 0, sizeof *c);
    c->n_layers = 6;
    c->tie_embeddings = true;
    c->max_pos = 4096;
    memset(t, 0, sizeof *t);
    t->n_groups = 1, t->n_cpus = 1, t->n_cores = 1;
    t->mem_available = 1000 * MB;
    t->n_gpus = 3;
    for (int g = 0; g < 3; g++) t->gpu_free[g] = 1000 * MB;
    memset(ms, 0, sizeof *ms);
    ms->n_layers = 6;
    ms->embed = 50 * MB, ms->norm = 1 * MB, ms->leaf_max = 50 * MB;
    for (int l = 0; l < 6; l++) ms->layer[l] = 80 * MB;
    ms->kv_dt = CLV_DT_F32;
    ms->kv_per_token_layer = 20 * MB / 16; /* 20 MB at --ctx 16 */
    ms->scratch_fixed = logits_row; /* one token's logits */
}

static int plan(clv_plan *p, uint64_t b0, uint64_t b12, uint64_t logits_row, clv_status *st) {
    clv_config c;
    clv_topology t;
    clv_module_sizes ms;
    setup(&c, &t, &ms, logits_row);
    clv_plan_request r;
    memset(&r, 0, sizeof r);
    r.mode = CLV_MAP_SEQUENTIAL;
    r.ctx = 16, r.max_t = 16;
    r.n_budgets = 3;
    for (int g = 0; g < 3; g++) r.budget_dev[g] = (clv_device){CLV_DEV_CUDA, g};
    r.budget[0] = b0, r.budget[1] = r.budget[2] = b12;
    return clv_plan_make(p, &c, &ms, &t, &r, st);
}

static const char *layer_dev(const clv_plan *p, int l, char *buf) {
    clv_device_str(&p->devices[p->layer_dev[l]], buf, 32);
    return buf;
}

static void check_fits(const clv_plan *p, const char *what) {
    for (int d = 0; d < p->n_devices; d++) {
        const uint64_t total = p->weight_bytes[d] + p->kv_bytes[d] + p->scratch_bytes[d] + p->staging_bytes[d];
        char name[32];
        clv_device_str(&p->devices[d], name, sizeof name);
        CHECK(total <= p->budget[d], "%s: %s needs %llu bytes, budget %llu", what, name, (unsigned long long)total,
              (unsigned long long)p->budget[d]);
    }
}

int main(void) {
    clv_plan p;
    clv_status st = {0};
    char a[32], b[32];

    /* the estimate is wrong: placed again, two layers streamed from disk by cuda:0 */
    int rc = plan(&p, 520 * MB, 160 * MB, 1000, &st);
    CHECK(rc == 0, "cuda:0 520 MB, cuda:1/2 160 MB: no plan: %s", st.msg);
    if (rc == 0) {
        check_fits(&p, "520/160/160");
        CHECK(!strcmp(layer_dev(&p, 1, a), "cuda:0") && !strcmp(layer_dev(&p, 2, b), "cuda:1"),
              "layers 1, 2 on %s, %s (want cuda:0, cuda:1)", a, b);
        CHECK(!strcmp(layer_dev(&p, 3, a), "cuda:2") && !strcmp(layer_dev(&p, 4, b), "disk"),
              "layers 3, 4 on %s, %s (want cuda:2, disk)", a, b);
        const int disk = p.layer_dev[5];
        clv_device_str(&p.devices[p.exec[disk]], a, sizeof a);
        CHECK(p.devices[disk].kind == CLV_DEV_DISK && !strcmp(a, "cuda:0"), "layer 5 not on disk run by cuda:0 (%s)", a);
    }

    /* the estimate holds (two layers per later GPU): one pass, nothing on disk */
    memset(&st, 0, sizeof st);
    rc = plan(&p, 520 * MB, 210 * MB, 1000, &st);
    CHECK(rc == 0, "cuda:0 520 MB, cuda:1/2 210 MB: no plan: %s", st.msg);
    if (rc == 0) {
        check_fits(&p, "520/210/210");
        for (int l = 0; l < 6; l++)
            CHECK(p.devices[p.layer_dev[l]].kind == CLV_DEV_CUDA, "layer %d on %s", l, layer_dev(&p, l, a));
        CHECK(!strcmp(layer_dev(&p, 2, a), "cuda:0") && !strcmp(layer_dev(&p, 3, b), "cuda:1"),
              "layers 2, 3 on %s, %s (want cuda:0, cuda:1)", a, b);
    }

    /* no plan at all: the error names the device */
    memset(&st, 0, sizeof st);
    rc = plan(&p, 200 * MB, 100 * MB, 1000, &st);
    CHECK_ERR(rc, st, "cuda:0 needs");

    /* the head's logits on cuda:0 (10 MB a token, 16 tokens): all six layers
     * fit its 760 MB, the logits with them do not */
    memset(&st, 0, sizeof st);
    rc = plan(&p, 760 * MB, 400 * MB, 10 * MB, &st);
    CHECK(rc == 0, "cuda:0 760 MB with 160 MB of logits, cuda:1/2 400 MB: no plan: %s", st.msg);
    if (rc == 0) {
        check_fits(&p, "760/400/400, logits");
        CHECK(p.scratch_bytes[p.exec[p.head_dev]] >= 160 * MB, "the head's device holds %llu bytes of scratch",
              (unsigned long long)p.scratch_bytes[p.exec[p.head_dev]]);
    }
    /* more memory on cuda:0 never refuses what less allowed */
    int first_ok = 0, refused_after = 0;
    for (int b0 = 100; b0 <= 1200; b0 += 10) {
        memset(&st, 0, sizeof st);
        rc = plan(&p, (uint64_t)b0 * MB, 400 * MB, 10 * MB, &st);
        if (rc == 0) {
            check_fits(&p, "sweep");
            if (!first_ok) first_ok = b0;
        } else if (first_ok && !refused_after)
            refused_after = b0;
    }
    CHECK(first_ok && !refused_after, "cuda:0 budgets from 100 MB: first plan at %d MB, then refused at %d MB", first_ok,
          refused_after);
    return check_report("test_plan");
}
