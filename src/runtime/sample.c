/* Sampling, in the order transformers applies its processors: repetition
 * penalty, then (when sampling) temperature, top-k, top-p, min-p. */
#include <math.h>
#include <string.h>

#include "../util/util.h"
#include "runtime.h"

/* splitmix64: small, fast, and the same sequence on every platform. */
static uint64_t next_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double next_unit(uint64_t *s) { return (double)(next_u64(s) >> 11) * 0x1.0p-53; }

int clv_sampler_init(clv_sampler *s, const clv_sampler_cfg *cfg, int vocab, clv_status *st) {
    memset(s, 0, sizeof *s);
    if (!cfg->greedy) {
        if (!(cfg->temperature > 0)) return clv_fail(st, CLV_EINVAL, "--temperature must be > 0 (use --greedy for argmax)");
        if (cfg->top_k < 0) return clv_fail(st, CLV_EINVAL, "--top-k must be >= 0");
        if (!(cfg->top_p > 0 && cfg->top_p <= 1)) return clv_fail(st, CLV_EINVAL, "--top-p must be in (0, 1]");
        if (!(cfg->min_p >= 0 && cfg->min_p <= 1)) return clv_fail(st, CLV_EINVAL, "--min-p must be in [0, 1]");
    }
    if (!(cfg->repetition_penalty > 0)) return clv_fail(st, CLV_EINVAL, "--repetition-penalty must be > 0");
    s->cfg = *cfg;
    s->rng = cfg->seed;
    s->vocab = vocab;
    s->idx = malloc(sizeof(int) * (size_t)vocab);
    s->prob = malloc(sizeof(float) * (size_t)vocab);
    if (!s->idx || !s->prob) {
        clv_sampler_free(s);
        return clv_fail(st, CLV_ENOMEM, "out of memory for the sampler");
    }
    return 0;
}

void clv_sampler_free(clv_sampler *s) {
    free(s->idx);
    free(s->prob);
    s->idx = NULL;
    s->prob = NULL;
}

static const float *g_sort_logits;
static int by_logit_desc(const void *a, const void *b) {
    float x = g_sort_logits[*(const int *)a], y = g_sort_logits[*(const int *)b];
    if (x != y) return x > y ? -1 : 1;
    return *(const int *)a - *(const int *)b; /* ties: lower id first, deterministic */
}

/* Keep the k largest of idx[0..n) at the front, sorted descending. O(n log k). */
static void select_top(int *idx, int n, int k, const float *logits) {
    if (k >= n) {
        g_sort_logits = logits;
        qsort(idx, (size_t)n, sizeof *idx, by_logit_desc);
        return;
    }
    /* min-heap of the best k seen so far, on (logit, -id) */
#define WORSE(a, b) (logits[a] < logits[b] || (logits[a] == logits[b] && (a) > (b)))
    for (int i = 0; i < n; i++) {
        int id = idx[i];
        int pos;
        if (i < k) {
            pos = i;
            while (pos > 0 && WORSE(id, idx[(pos - 1) / 2])) {
                idx[pos] = idx[(pos - 1) / 2];
                pos = (pos - 1) / 2;
            }
            idx[pos] = id;
        } else if (WORSE(idx[0], id)) {
            pos = 0;
            for (;;) {
                int c = 2 * pos + 1;
                if (c >= k) break;
                if (c + 1 < k && WORSE(idx[c + 1], idx[c])) c++;
                if (!WORSE(idx[c], id)) break;
                idx[pos] = idx[c];
                pos = c;
            }
            idx[pos] = id;
        }
    }
#undef WORSE
    g_sort_logits = logits;
    qsort(idx, (size_t)k, sizeof *idx, by_logit_desc);
}

int clv_sampler_next(clv_sampler *s, float *logits, const int32_t *hist, int n_hist) {
    const int V = s->vocab;
    const clv_sampler_cfg *c = &s->cfg;
    if (c->repetition_penalty != 1.0f) {
        /* every token seen so far, once: divide positive logits, multiply negative ones */
        for (int i = 0; i < n_hist; i++) {
            int id = hist[i];
            if (id < 0 || id >= V) continue;
            bool seen = false;
            for (int j = 0; j < i && !seen; j++) seen = hist[j] == id;
            if (seen) continue;
            logits[id] = logits[id] < 0 ? logits[id] * c->repetition_penalty : logits[id] / c->repetition_penalty;
        }
    }
    if (c->greedy) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    int n = V;
    for (int i = 0; i < V; i++) s->idx[i] = i;
    select_top(s->idx, V, c->top_k > 0 && c->top_k < V ? c->top_k : V, logits);
    if (c->top_k > 0 && c->top_k < V) n = c->top_k;
    /* softmax of logits / temperature over the candidates (sorted descending;
     * dividing by a positive temperature keeps the order). Differences to the
     * largest are divided, so a tiny temperature gives probability 1 to the
     * top token and 0 to the rest, never inf - inf. */
    const double mx = logits[s->idx[0]], inv_t = 1.0 / (double)c->temperature;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += (s->prob[i] = (float)exp(((double)logits[s->idx[i]] - mx) * inv_t));
    for (int i = 0; i < n; i++) s->prob[i] = (float)(s->prob[i] / sum);
    if (c->top_p < 1.0f) { /* smallest prefix whose mass reaches top_p */
        double cum = 0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            cum += s->prob[i];
            if (cum >= c->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    if (c->min_p > 0.0f) { /* drop tokens below min_p x the top probability */
        float thr = c->min_p * s->prob[0];
        int keep = 1;
        while (keep < n && s->prob[keep] >= thr) keep++;
        n = keep;
    }
    double total = 0;
    for (int i = 0; i < n; i++) total += s->prob[i];
    double r = next_unit(&s->rng) * total, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += s->prob[i];
        if (r < acc) return s->idx[i];
    }
    return s->idx[n - 1];
}
