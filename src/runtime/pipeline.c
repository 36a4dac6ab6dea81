/* Pipelined batches over a device map: layer stages on different compute
 * devices work at the same time on different sequences. Accelerate runs one
 * device at a time; with B sequences in flight over S stages, all S devices
 * are busy once the pipeline fills. */
#include <pthread.h>
#include <sched.h>
#include <string.h>

#include "../util/util.h"
#include "runtime.h"

typedef struct stage {
    int l0, l1;  /* layers [l0, l1) */
    int dev;     /* plan device that computes them */
} stage;

/* Stages: maximal runs of consecutive layers with one compute device. */
static int make_stages(const clv_model *m, stage *sg, int cap) {
    const clv_plan *p = &m->plan;
    int n = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        int d = p->exec[p->layer_dev[l]];
        if (n && sg[n - 1].dev == d) {
            sg[n - 1].l1 = l + 1;
            continue;
        }
        if (n == cap) return -1;
        sg[n++] = (stage){l, l + 1, d};
    }
    return n;
}

int clv_model_pipeline_stages(const clv_model *m) {
    stage sg[CLV_MAX_DEVICES];
    int n = make_stages(m, sg, CLV_MAX_DEVICES);
    if (n <= 1 || m->streamer || m->comm) return 1;
    for (int i = 0; i < n; i++)
        if (!m->be[sg[i].dev]->host_memory) return 1; /* stage threads would share one device's queue */
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (sg[i].dev == sg[j].dev) return 1; /* one device's pool cannot serve two threads */
    return n;
}

typedef struct run {
    clv_session **ss;
    int B;
    const int32_t *const *ids;
    const int *n;
    float **logits;
    stage sg[CLV_MAX_DEVICES];
    int S;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int *progress;      /* [B]: stages sequence b has finished */
    int failed;
    clv_status err;
} run;

typedef struct stage_arg {
    run *r;
    int k;
} stage_arg;

static void *stage_main(void *arg) {
    stage_arg *sa = arg;
    run *r = sa->r;
    const int k = sa->k;
    const stage *sg = &r->sg[k];
    const clv_model *m = r->ss[0]->m;
    /* run where this device's cores are */
    const clv_device *dev = &m->plan.devices[sg->dev];
    if (dev->kind == CLV_DEV_CPU && dev->index >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        for (int i = 0; i < m->topo.group_ncpus[dev->index]; i++) CPU_SET(m->topo.group_cpus[dev->index][i], &set);
        pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    }
    for (int b = 0; b < r->B; b++) {
        pthread_mutex_lock(&r->mu);
        while (!r->failed && r->progress[b] < k) pthread_cond_wait(&r->cv, &r->mu);
        int failed = r->failed;
        pthread_mutex_unlock(&r->mu);
        if (failed) break;
        clv_status st = {0};
        clv_session *s = r->ss[b];
        int rc = 0;
        if (k == 0) rc = clv_session_embed(s, r->ids[b], r->n[b], &st);
        if (!rc) rc = clv_session_layers(s, sg->l0, sg->l1, r->n[b], &st);
        if (!rc && k == r->S - 1) {
            rc = clv_session_head(s, r->n[b], r->logits[b], &st);
            s->pos += r->n[b];
        }
        pthread_mutex_lock(&r->mu);
        if (rc && !r->failed) {
            r->failed = 1;
            r->err = st;
        }
        r->progress[b] = k + 1;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        if (rc) break;
    }
    return NULL;
}

int clv_batch_eval(clv_session **ss, int B, const int32_t *const *ids, const int *n, float **logits, clv_status *st) {
    if (B < 1) return 0;
    clv_model *m = ss[0]->m;
    bool pipelined = clv_model_pipeline_stages(m) > 1;
    for (int b = 0; b < B && pipelined; b++) {
        if (n[b] < 1 || n[b] > ss[b]->max_t || ss[b]->pos + n[b] > ss[b]->ctx) pipelined = false;
        for (int i = 0; i < n[b] && pipelined; i++) pipelined = ids[b][i] >= 0 && ids[b][i] < m->cfg.vocab;
    }
    if (!pipelined) {
        for (int b = 0; b < B; b++) {
            int rc = clv_session_eval(ss[b], ids[b], n[b], logits[b], 0, st);
            if (rc) return rc;
        }
        return 0;
    }
    run r = {.ss = ss, .B = B, .ids = ids, .n = n, .logits = logits};
    r.S = make_stages(m, r.sg, CLV_MAX_DEVICES);
    r.progress = calloc((size_t)B, sizeof(int));
    if (!r.progress) return clv_fail(st, CLV_ENOMEM, "out of memory");
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    pthread_t th[CLV_MAX_DEVICES];
    stage_arg args[CLV_MAX_DEVICES];
    int started = 0;
    for (int k = 0; k < r.S; k++) {
        args[k] = (stage_arg){&r, k};
        if (pthread_create(&th[k], NULL, stage_main, &args[k]) != 0) {
            pthread_mutex_lock(&r.mu);
            r.failed = 1;
            clv_fail(&r.err, CLV_EIO, "cannot start pipeline stage %d", k);
            pthread_cond_broadcast(&r.cv);
            pthread_mutex_unlock(&r.mu);
            break;
        }
        started++;
    }
    for (int k = 0; k < started; k++) pthread_join(th[k], NULL);
    pthread_mutex_destroy(&r.mu);
    pthread_cond_destroy(&r.cv);
    free(r.progress);
    if (r.failed) {
        *st = r.err;
        return st->code ? st->code : CLV_EIO;
    }
    return 0;
}
