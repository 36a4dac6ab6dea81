/* Devices, sizes, and the device-map planner.
 *
 * The planner follows Accelerate's infer_auto_device_map (+ get_balanced_memory
 * for the balanced modes) over the modules a Hugging Face causal LM has, in its
 * order: model.embed_tokens, model.layers.0 .. N-1, model.norm, lm_head. A
 * decoder layer is never split; tied embeddings stay together; the largest
 * remaining module is reserved on the main devices for streaming offloaded
 * weights. Unlike Accelerate it also budgets the KV cache for `ctx` tokens and
 * the activation scratch, so a plan that fits at load still fits at the last
 * token. */
#include "plan.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "../backend/backend.h" /* clv_kv_cache_rows */
#include "../format/json.h"
#include "../util/util.h"

/* ---- devices ------------------------------------------------------------------ */

int clv_device_parse(const char *s, clv_device *d, clv_status *st) {
    static const struct { const char *name; clv_dev_kind kind; } kinds[] = {
        {"cpu", CLV_DEV_CPU}, {"disk", CLV_DEV_DISK}, {"cuda", CLV_DEV_CUDA}};
    int64_t v;
    if (clv_parse_i64(s, &v) && v >= 0 && v < CLV_MAX_DEVICES) { /* Accelerate writes GPUs as integers */
        *d = (clv_device){CLV_DEV_CUDA, (int)v};
        return 0;
    }
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        size_t n = strlen(kinds[i].name);
        if (strncmp(s, kinds[i].name, n) != 0) continue;
        d->kind = kinds[i].kind;
        d->index = -1;
        if (s[n] == 0) return kinds[i].kind == CLV_DEV_CUDA ? (d->index = 0, 0) : 0;
        if (s[n] == ':' && kinds[i].kind != CLV_DEV_DISK && clv_parse_i64(s + n + 1, &v) && v >= 0 &&
            v < CLV_MAX_DEVICES) {
            d->index = (int)v;
            return 0;
        }
        break;
    }
    return clv_fail(st, CLV_EINVAL, "unknown device '%s' (expected cpu, cpu:N, disk, cuda:N)", s);
}

void clv_device_str(const clv_device *d, char *buf, size_t cap) {
    static const char *names[] = {"cuda", "cpu", "disk"};
    if (d->index < 0) snprintf(buf, cap, "%s", names[d->kind]);
    else snprintf(buf, cap, "%s:%d", names[d->kind], d->index);
}

bool clv_device_eq(clv_device a, clv_device b) { return a.kind == b.kind && a.index == b.index; }

/* Hugging Face's order: GPUs, then CPU groups, then the whole CPU, then disk. */
static int device_rank(clv_device d) { return d.kind * 10000 + (d.index < 0 ? 9999 : d.index); }

/* ---- topology ------------------------------------------------------------------ */

static int parse_cpulist(const char *s, int *out, int cap) {
    int n = 0;
    while (*s && *s != '\n') {
        char *end;
        long a = strtol(s, &end, 10), b = a;
        if (end == s) break;
        s = end;
        if (*s == '-') {
            b = strtol(s + 1, &end, 10);
            s = end;
        }
        for (long c = a; c <= b && n < cap; c++) out[n++] = (int)c;
        if (*s == ',') s++;
    }
    return n;
}

static bool read_small(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f) return false;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = 0;
    return n > 0;
}

/* A CPU's core: its lowest-numbered SMT sibling (itself when the kernel does not say). */
static int core_of(const char *root, int c) {
    char p[512], buf[4096];
    snprintf(p, sizeof p, "%s/sys/devices/system/cpu/cpu%d/topology/thread_siblings_list", root, c);
    int sib[CLV_MAX_CPUS], ns = read_small(p, buf, sizeof buf) ? parse_cpulist(buf, sib, CLV_MAX_CPUS) : 0, core = c;
    for (int k = 0; k < ns; k++) core = sib[k] < core ? sib[k] : core;
    return core;
}

/* Orders cpus[0..n) core first (each core's first listed CPU, then the second
 * siblings, ...; stable), fills core[] to match when given, returns the number
 * of distinct cores. */
static int order_by_core(const char *root, int *cpus, int *core, int n) {
    int *c = malloc(sizeof(int) * (size_t)n * 3), *rank = c + n, *out = c + 2 * n, cores = 0, max_rank = 0;
    if (!c) return n; /* left as listed, every CPU counted as a core */
    for (int i = 0; i < n; i++) {
        c[i] = core_of(root, cpus[i]);
        rank[i] = 0;
        for (int j = 0; j < i; j++) rank[i] += c[j] == c[i];
        cores += rank[i] == 0;
        max_rank = rank[i] > max_rank ? rank[i] : max_rank;
    }
    int k = 0;
    for (int r = 0; r <= max_rank; r++)
        for (int i = 0; i < n; i++)
            if (rank[i] == r) out[k++] = i;
    for (int i = 0; i < n; i++) rank[i] = cpus[out[i]]; /* rank is free now: the ordered CPUs */
    for (int i = 0; i < n; i++) out[i] = c[out[i]];      /* and their cores */
    memcpy(cpus, rank, sizeof(int) * (size_t)n);
    if (core) memcpy(core, out, sizeof(int) * (size_t)n);
    free(c);
    return cores;
}

int clv_topology_detect(clv_topology *t, clv_status *st) { return clv_topology_detect_at(t, "", st); }

int clv_topology_detect_at(clv_topology *t, const char *root, clv_status *st) {
    memset(t, 0, sizeof *t);
    char buf[4096], p[512];
    snprintf(p, sizeof p, "%s/sys/devices/system/cpu/online", root);
    if (read_small(p, buf, sizeof buf)) t->n_cpus = parse_cpulist(buf, t->cpus, CLV_MAX_CPUS);
    if (t->n_cpus == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        t->n_cpus = n > 0 ? (int)(n < CLV_MAX_CPUS ? n : CLV_MAX_CPUS) : 1;
        for (int i = 0; i < t->n_cpus; i++) t->cpus[i] = i;
    }
    t->n_cores = order_by_core(root, t->cpus, t->cpu_core, t->n_cpus);
    /* NUMA nodes with CPUs, when there are several */
    for (int node = 0; node < CLV_MAX_DEVICES; node++) {
        snprintf(p, sizeof p, "%s/sys/devices/system/node/node%d/cpulist", root, node);
        if (!read_small(p, buf, sizeof buf)) break;
        int g = t->n_groups, n = parse_cpulist(buf, t->group_cpus[g], CLV_MAX_GROUP_CPUS);
        if (n == 0) continue;
        t->group_ncpus[g] = n;
        t->group_ncores[g] = order_by_core(root, t->group_cpus[g], NULL, n);
        t->n_groups++;
    }
    t->numa = t->n_groups > 1;
    if (!t->numa) {
        /* one node: a group per physical core (SMT siblings together) */
        int gcore[CLV_MAX_DEVICES];
        t->n_groups = 0;
        memset(t->group_ncpus, 0, sizeof t->group_ncpus);
        for (int i = 0; i < t->n_cpus; i++) {
            int g = -1;
            for (int k = 0; k < t->n_groups; k++)
                if (gcore[k] == t->cpu_core[i]) g = k;
            if (g < 0) {
                if (t->n_groups == CLV_MAX_DEVICES) continue;
                g = t->n_groups++;
                gcore[g] = t->cpu_core[i];
                t->group_ncores[g] = 1;
            }
            if (t->group_ncpus[g] < CLV_MAX_GROUP_CPUS) t->group_cpus[g][t->group_ncpus[g]++] = t->cpus[i];
        }
    }
    snprintf(p, sizeof p, "%s/proc/meminfo", root);
    if (read_small(p, buf, sizeof buf)) {
        char *m = strstr(buf, "MemAvailable:");
        if (m) t->mem_available = (uint64_t)strtoull(m + 13, NULL, 10) * 1024;
    }
    if (!t->mem_available) return clv_fail(st, CLV_EIO, "cannot read MemAvailable from %s", p);
    return 0;
}

int clv_topology_share(const clv_topology *t, int part, int parts, int *out, int *cores) {
    const int per = parts > 0 ? t->n_cores / parts : 0;
    *cores = per;
    if (per < 1 || part < 0 || part >= parts) return 0;
    int n = 0;
    for (int i = 0; i < t->n_cpus; i++) {
        int core = 0; /* which core, counted in the core-first list's first section */
        while (core < t->n_cores && t->cpu_core[core] != t->cpu_core[i]) core++;
        if (core / per == part) out[n++] = t->cpus[i];
    }
    return n;
}

int clv_topology_threads(const clv_topology *t, int group) {
    int n = group < 0 ? t->n_cores : group < t->n_groups ? t->group_ncores[group] : 0;
    return n > 0 ? n : 1;
}

/* ---- sizes ------------------------------------------------------------------------ */

int clv_size_parse(const char *s, uint64_t *out, clv_status *st) {
    const char *p = s;
    while (isdigit((unsigned char)*p) || *p == '.') p++;
    if (p == s) return clv_fail(st, CLV_EINVAL, "size '%s': expected a number with an optional unit (e.g. 2GiB, 500MB, 1000000)", s);
    char num[64];
    if ((size_t)(p - s) >= sizeof num) return clv_fail(st, CLV_EINVAL, "size '%s': number too long", s);
    memcpy(num, s, (size_t)(p - s));
    num[p - s] = 0;
    double v;
    if (!clv_parse_f64(num, &v) || v < 0) return clv_fail(st, CLV_EINVAL, "size '%s': '%s' is not a number", s, num);
    static const struct { const char *unit; double mult; } units[] = {
        {"", 1}, {"b", 1}, {"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
        {"kib", 1024.0}, {"mib", 1048576.0}, {"gib", 1073741824.0}, {"tib", 1099511627776.0}};
    char unit[8];
    size_t ul = strlen(p);
    if (ul >= sizeof unit) return clv_fail(st, CLV_EINVAL, "size '%s': unknown unit '%s' (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)", s, p);
    for (size_t i = 0; i <= ul; i++) unit[i] = (char)tolower((unsigned char)p[i]);
    if (ul >= 2 && p[ul - 1] == 'b')
        return clv_fail(st, CLV_EINVAL,
                        "size '%s' is ambiguous: a lowercase 'b' after a prefix means bits in some tools; write %s%.*sB for bytes",
                        s, num, (int)(ul - 1), p);
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(unit, units[i].unit) == 0) {
            double bytes = v * units[i].mult;
            if (bytes > 1.8e19) return clv_fail(st, CLV_EINVAL, "size '%s' is too large", s);
            if (units[i].mult == 1 && floor(v) != v) return clv_fail(st, CLV_EINVAL, "size '%s': bytes must be a whole number", s);
            *out = (uint64_t)(bytes + 0.5); /* < 2^64 */
            return 0;
        }
    if (strcmp(unit, "k") == 0 || strcmp(unit, "m") == 0 || strcmp(unit, "g") == 0 || strcmp(unit, "t") == 0)
        return clv_fail(st, CLV_EINVAL, "size '%s' is ambiguous: write %sB (powers of 10) or %siB (powers of 2)", s, p, p);
    return clv_fail(st, CLV_EINVAL, "size '%s': unknown unit '%s' (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)", s, p);
}

void clv_size_str(uint64_t b, char *buf, size_t cap) {
    if (b >= (1ull << 30)) snprintf(buf, cap, "%.2f GiB", b / 1073741824.0);
    else if (b >= (1ull << 20)) snprintf(buf, cap, "%.1f MiB", b / 1048576.0);
    else if (b >= 1024) snprintf(buf, cap, "%.1f KiB", b / 1024.0);
    else snprintf(buf, cap, "%llu B", (unsigned long long)b);
}

/* ---- plans ---------------------------------------------------------------------- */

static bool is_compute(clv_device d) { return d.kind != CLV_DEV_DISK; }

/* RAM that streaming a unit of `w` bytes from disk needs on its compute device:
 * two slots (one computing, one being read), each with page-alignment slack for
 * the unit's tensors. */
static uint64_t staging_for(uint64_t w) { return w ? 2 * (w + 8 * 8192) : 0; }

void clv_plan_single(clv_plan *p, const clv_config *c, clv_device d) {
    memset(p, 0, sizeof *p);
    p->n_devices = 1;
    p->devices[0] = d;
    p->budget[0] = UINT64_MAX;
    p->exec[0] = 0;
    p->n_layers = c->n_layers;
    p->tp_size = 1;
}

typedef struct module {
    clv_module_kind kind;
    int layer;
    uint64_t w, kv;
    char name[48];
} module;

static int build_modules(const clv_config *c, const clv_module_sizes *ms, int ctx, bool rotary, module *m) {
    int n = 0;
    m[n++] = (module){CLV_MOD_EMBED, -1, ms->embed, 0, "model.embed_tokens"};
    for (int l = 0; l < c->n_layers; l++) {
        m[n] = (module){CLV_MOD_LAYER, l, ms->layer[l], (uint64_t)clv_kv_cache_rows(ctx) * ms->kv_per_token_layer, ""};
        snprintf(m[n].name, sizeof m[n].name, "model.layers.%d", l);
        n++;
    }
    m[n++] = (module){CLV_MOD_NORM, -1, ms->norm, 0, "model.norm"};
    /* transformers counts model.rotary_emb's float32 buffers, between the norm and the head */
    if (rotary) m[n++] = (module){CLV_MOD_ROTARY, -1, ms->rotary, 0, "model.rotary_emb"};
    if (!c->tie_embeddings) m[n++] = (module){CLV_MOD_HEAD, -1, ms->head, 0, "lm_head"};
    return n;
}

static int *module_slot(clv_plan *p, const module *m) {
    switch (m->kind) {
    case CLV_MOD_EMBED: return &p->embed_dev;
    case CLV_MOD_LAYER: return &p->layer_dev[m->layer];
    case CLV_MOD_NORM: return &p->norm_dev;
    case CLV_MOD_ROTARY: return &p->rotary_dev;
    default: return &p->head_dev;
    }
}

static int add_device(clv_plan *p, clv_device d, uint64_t budget) {
    for (int i = 0; i < p->n_devices; i++)
        if (clv_device_eq(p->devices[i], d)) return i;
    if (p->n_devices == CLV_MAX_DEVICES) return -1;
    p->devices[p->n_devices] = d;
    p->budget[p->n_devices] = budget;
    return p->n_devices++;
}

static void sort_devices(clv_plan *p) {
    for (int i = 1; i < p->n_devices; i++)
        for (int j = i; j > 0 && device_rank(p->devices[j]) < device_rank(p->devices[j - 1]); j--) {
            clv_device td = p->devices[j];
            p->devices[j] = p->devices[j - 1];
            p->devices[j - 1] = td;
            uint64_t tb = p->budget[j];
            p->budget[j] = p->budget[j - 1];
            p->budget[j - 1] = tb;
        }
}

static uint64_t default_budget(clv_device d, const clv_topology *t) {
    if (d.kind == CLV_DEV_DISK) return UINT64_MAX; /* weights are read in place from the checkpoint */
    if (d.kind == CLV_DEV_CPU && d.index >= 0) return t->mem_available / (uint64_t)(t->n_groups ? t->n_groups : 1);
    if (d.kind == CLV_DEV_CUDA) return d.index >= 0 && d.index < t->n_gpus ? t->gpu_free[d.index] : 0;
    return t->mem_available;
}

static int check_device(clv_device d, const clv_topology *t, clv_status *st) {
    char name[32];
    clv_device_str(&d, name, sizeof name);
    if (d.kind == CLV_DEV_CUDA && t->n_gpus == 0)
        return clv_fail(st, CLV_EUNSUPPORTED, "device %s: no CUDA device can be used: %s (devices: cpu, cpu:0..%d, disk)",
                        name, t->gpu_why[0] ? t->gpu_why : "none found", t->n_groups - 1);
    if (d.kind == CLV_DEV_CUDA && d.index >= t->n_gpus)
        return clv_fail(st, CLV_EINVAL, "device %s: this machine has cuda:0..cuda:%d", name, t->n_gpus - 1);
    if (d.kind == CLV_DEV_CPU && d.index >= t->n_groups)
        return clv_fail(st, CLV_EINVAL, "device %s: this machine has cpu:0..cpu:%d (%s)", name, t->n_groups - 1,
                        t->numa ? "one per NUMA node" : "one per physical core");
    return 0;
}

/* get_balanced_memory (transformers 5.x): cap every compute device but the last
 * at an even share plus a buffer of 1.25 x max(largest layer, largest leaf
 * module); with low_0,
 * device 0 only takes what the others cannot. */
static void balance(const clv_plan *p, uint64_t *cap_out, const module *m, int nm, const clv_module_sizes *ms, bool low0) {
    uint64_t *budget = cap_out;
    int idx[CLV_MAX_DEVICES], n = 0;
    for (int d = 0; d < p->n_devices; d++)
        if (is_compute(p->devices[d]) && budget[d] > 0) idx[n++] = d;
    if (n <= 1) return;
    uint64_t total = 0, largest_layer = 0;
    for (int i = 0; i < nm; i++) {
        total += m[i].w + m[i].kv;
        if (m[i].kind == CLV_MOD_LAYER && m[i].w + m[i].kv > largest_layer) largest_layer = m[i].w + m[i].kv;
    }
    uint64_t per = total / (uint64_t)(low0 ? n - 1 : n);
    uint64_t buffer = largest_layer > ms->leaf_max ? largest_layer : ms->leaf_max;
    per += (uint64_t)(1.25 * (double)buffer);
    for (int k = 0; k < n - 1; k++) {
        uint64_t cap = low0 && k == 0 ? budget[idx[0]] : per;
        if (cap < budget[idx[k]]) budget[idx[k]] = cap;
    }
    if (low0) {
        uint64_t others = 0;
        for (int k = 1; k < n; k++) others += budget[idx[k]];
        uint64_t min_zero = total > others ? total - others : 0;
        if (min_zero < budget[idx[0]]) budget[idx[0]] = min_zero;
    }
}

/* infer_auto_device_map over the flat module list. est gets, per device,
 * what the pass counted against its budget at its last placement: scratch,
 * what it reserved, what it holds. */
static void assign_greedy(clv_plan *p, const uint64_t *budget, const module *m, int nm, int main_dev, uint64_t scratch,
                          bool compat, bool hold_all_kv, uint64_t *est) {
    uint64_t used[CLV_MAX_DEVICES] = {0};
    memset(est, 0, sizeof(uint64_t) * CLV_MAX_DEVICES);
    int cur = 0;
    for (int i = 0; i < nm; i++) {
        uint64_t reserve_w = 0, kv_rest = 0, size_rest = 0;
        for (int j = i + 1; j < nm; j++) {
            reserve_w = m[j].w > reserve_w ? m[j].w : reserve_w;
            kv_rest += m[j].kv;
            size_rest += m[j].w + m[j].kv;
        }
        for (;;) {
            int d = cur;
            clv_device dev = p->devices[d];
            if (dev.kind == CLV_DEV_DISK || cur == p->n_devices - 1) {
                *module_slot(p, &m[i]) = d;
                break;
            }
            bool is_main = d == main_dev || (dev.kind == CLV_DEV_CPU && dev.index < 0);
            /* Accelerate reserves one largest layer for streaming offloaded weights;
             * cleave double-buffers them, and keeps its scratch. Modules that spill
             * to a tier the main device computes (disk, or CPU RAM streamed to it)
             * keep their KV cache there: unless the later devices that compute
             * their own modules can take all that is left (by their room, an
             * estimate; hold_all_kv: never), the main device holds back the KV
             * cache of every module still to come. */
            uint64_t own_cap = 0;
            for (int e = d + 1; e < p->n_devices; e++) {
                const uint64_t room = budget[e] > scratch ? budget[e] - scratch : 0; /* each keeps its scratch */
                if (p->exec[e] == e) own_cap = room > UINT64_MAX - own_cap ? UINT64_MAX : own_cap + room;
            }
            const uint64_t kv_res = d == main_dev && (hold_all_kv || size_rest > own_cap) ? kv_rest : 0;
            uint64_t reserve = is_main ? (compat ? reserve_w : staging_for(reserve_w) + kv_res) : 0;
            uint64_t avail = budget[d] > (compat ? 0 : scratch) ? budget[d] - (compat ? 0 : scratch) : 0;
            uint64_t size = m[i].w + m[i].kv;
            if (avail >= reserve && used[d] + size <= avail - reserve) {
                used[d] += size;
                est[d] = (compat ? 0 : scratch) + reserve + used[d];
                *module_slot(p, &m[i]) = d;
                break;
            }
            cur++;
        }
    }
}

/* what device d holds in all, as the accounting counts it */
static uint64_t device_need(const clv_plan *p, int d) {
    return p->weight_bytes[d] + p->kv_bytes[d] + p->scratch_bytes[d] + p->staging_bytes[d];
}

static int account(clv_plan *p, const module *m, int nm, const clv_module_sizes *ms, bool compat, clv_status *st) {
    memset(p->weight_bytes, 0, sizeof p->weight_bytes);
    memset(p->kv_bytes, 0, sizeof p->kv_bytes);
    memset(p->scratch_bytes, 0, sizeof p->scratch_bytes);
    memset(p->staging_bytes, 0, sizeof p->staging_bytes);
    uint64_t max_stream = 0;
    bool executes[CLV_MAX_DEVICES] = {0};
    for (int i = 0; i < nm; i++) {
        int d = *module_slot(p, &m[i]), e = p->exec[d];
        p->weight_bytes[d] += m[i].w;
        if (!compat) p->kv_bytes[e] += m[i].kv;
        executes[e] = true;
        if (p->devices[d].kind == CLV_DEV_DISK && m[i].kind != CLV_MOD_EMBED && m[i].w > max_stream) max_stream = m[i].w;
        /* a module stored in CPU RAM and computed by a GPU passes through two device slots */
        if (e != d && p->devices[e].kind == CLV_DEV_CUDA && m[i].kind != CLV_MOD_EMBED && m[i].w > max_stream)
            max_stream = m[i].w;
    }
    if (p->tied) p->head_dev = p->embed_dev;
    if (compat) return 0;
    for (int d = 0; d < p->n_devices; d++) {
        if (!executes[d] || !is_compute(p->devices[d])) continue;
        const uint64_t t = (uint64_t)(p->max_t < p->ctx ? p->max_t : p->ctx);
        p->scratch_bytes[d] = ms->scratch_fixed + ms->scratch_per_token * t;
        /* a GPU computing the head holds a chunk's logits ([max_t][vocab]) before they are copied back */
        if (p->devices[d].kind == CLV_DEV_CUDA && d == p->exec[p->head_dev]) p->scratch_bytes[d] += ms->scratch_fixed * t;
    }
    if (max_stream) {
        int e = p->exec[p->n_devices - 1];
        for (int d = 0; d < p->n_devices; d++)
            if (p->devices[d].kind == CLV_DEV_DISK) e = p->exec[d];
        p->staging_bytes[e] = staging_for(max_stream);
    }
    for (int d = 0; d < p->n_devices; d++) {
        const uint64_t need = device_need(p, d);
        if (need <= p->budget[d]) continue;
        char name[32], a[32], b[32], w[32], kv[32], sc[32], sg[32];
        clv_device_str(&p->devices[d], name, sizeof name);
        clv_size_str(need, a, sizeof a);
        clv_size_str(p->budget[d], b, sizeof b);
        clv_size_str(p->weight_bytes[d], w, sizeof w);
        clv_size_str(p->kv_bytes[d], kv, sizeof kv);
        clv_size_str(p->scratch_bytes[d], sc, sizeof sc);
        clv_size_str(p->staging_bytes[d], sg, sizeof sg);
        return clv_fail(st, CLV_EINVAL,
                        "device %s needs %s (weights %s, KV cache %s for --ctx %d, scratch %s, disk staging %s) but its budget is %s",
                        name, a, w, kv, p->ctx, sc, sg, b);
    }
    return 0;
}

/* Resolve Hugging Face module names against the modules of this model. */
static int resolve_key(const char *key, const module *m, int nm, bool *hit, int *n_hit, clv_status *st) {
    *n_hit = 0;
    for (int i = 0; i < nm; i++) hit[i] = false;
    if (strcmp(key, "model.rotary_emb") == 0) return 0; /* no weights */
    size_t kl = strlen(key);
    for (int i = 0; i < nm; i++) {
        const char *name = m[i].name;
        hit[i] = kl == 0 || strcmp(name, key) == 0 || (strncmp(name, key, kl) == 0 && name[kl] == '.');
        if (hit[i]) (*n_hit)++;
    }
    if (*n_hit == 0 && strcmp(key, "lm_head") != 0) {
        for (int i = 0; i < nm; i++)
            if (strncmp(key, m[i].name, strlen(m[i].name)) == 0 && key[strlen(m[i].name)] == '.')
                return clv_fail(st, CLV_EINVAL, "device map: '%s' is inside %s; a module of this kind is never split across devices",
                                key, m[i].name);
        return clv_fail(st, CLV_EINVAL, "device map: unknown module '%s' (modules: model.embed_tokens, model.layers.0..%d, model.norm, lm_head)",
                        key, m[nm - 1].kind == CLV_MOD_HEAD ? m[nm - 3].layer : m[nm - 2].layer);
    }
    return 0;
}

static int explicit_map(clv_plan *p, const module *m, int nm, const clv_plan_request *req, const clv_topology *topo,
                        int *assign_dev, clv_status *st) {
    const char *src = req->map_path ? req->map_path : "device map";
    cJSON *root = cJSON_ParseWithOpts(req->map_json, NULL, true); /* nothing after the object */
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return clv_fail(st, CLV_EINVAL, "%s: not a JSON object of module -> device", src);
    }
    for (const cJSON *a = root->child; a; a = a->next)
        for (const cJSON *b = a->next; b; b = b->next)
            if (strcmp(a->string, b->string) == 0) {
                clv_fail(st, CLV_EINVAL, "%s: \"%s\" appears twice", src, a->string);
                cJSON_Delete(root);
                return st->code;
            }
    int best_len[CLV_MAX_LAYERS + 4];
    for (int i = 0; i < nm; i++) best_len[i] = -1, assign_dev[i] = -1;
    int head_dev = -1, rc = 0;
    bool hit[CLV_MAX_LAYERS + 4];
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        clv_device d;
        char dv[32];
        if (cJSON_IsNumber(e)) {
            if (!(e->valuedouble >= 0 && e->valuedouble <= CLV_MAX_DEVICES && floor(e->valuedouble) == e->valuedouble)) {
                rc = clv_fail(st, CLV_EINVAL, "%s: \"%s\": %g is not a GPU index (a whole number 0..%d)", src, e->string,
                              e->valuedouble, CLV_MAX_DEVICES);
                goto done;
            }
            snprintf(dv, sizeof dv, "%d", (int)e->valuedouble);
        }
        else if (cJSON_IsString(e)) snprintf(dv, sizeof dv, "%s", e->valuestring);
        else {
            rc = clv_fail(st, CLV_EINVAL, "%s: \"%s\" must map to a device name", src, e->string);
            goto done;
        }
        if ((rc = clv_device_parse(dv, &d, st)) || (rc = check_device(d, topo, st))) {
            clv_wrap(st, "%s: \"%s\": ", src, e->string);
            goto done;
        }
        int n_hit;
        if ((rc = resolve_key(e->string, m, nm, hit, &n_hit, st))) {
            clv_wrap(st, "%s: ", src);
            goto done;
        }
        if (n_hit == 0 && strcmp(e->string, "lm_head") != 0) continue; /* model.rotary_emb: no weights, no device */
        uint64_t budget = default_budget(d, topo);
        for (int k = 0; k < req->n_budgets; k++)
            if (clv_device_eq(req->budget_dev[k], d)) budget = req->budget[k];
        int di = add_device(p, d, budget);
        if (di < 0) {
            rc = clv_fail(st, CLV_EINVAL, "%s: \"%s\": more than %d devices", src, e->string, CLV_MAX_DEVICES);
            goto done;
        }
        if (strcmp(e->string, "lm_head") == 0 && n_hit == 0) head_dev = di; /* tied: checked below */
        for (int i = 0; i < nm; i++)
            if (hit[i] && (int)strlen(e->string) > best_len[i]) best_len[i] = (int)strlen(e->string), assign_dev[i] = di;
    }
    for (int i = 0; i < nm; i++)
        if (assign_dev[i] < 0) {
            rc = clv_fail(st, CLV_EINVAL, "%s: module %s is not covered (add it, or a \"\" entry for everything)", src, m[i].name);
            goto done;
        }
    if (p->tied && head_dev >= 0 && head_dev != assign_dev[0]) {
        char a[32], b[32];
        clv_device_str(&p->devices[head_dev], a, sizeof a);
        clv_device_str(&p->devices[assign_dev[0]], b, sizeof b);
        rc = clv_fail(st, CLV_EINVAL, "%s: lm_head is tied to model.embed_tokens, so both must be on one device (got %s and %s)",
                      src, a, b);
    }
done:
    cJSON_Delete(root);
    return rc;
}

/* The cost model behind CLV_OFFLOAD_AUTO: one decoded token moves the
 * CPU-stored bytes either over the host link or through the CPU's caches; the
 * bytes cancel, the bandwidths decide. */
static bool stream_to_main(clv_offload_exec x) {
    if (x != CLV_OFFLOAD_AUTO) return x == CLV_OFFLOAD_MAIN;
    return CLV_H2D_GBS_DEFAULT >= CLV_RAM_GBS_DEFAULT;
}

static int plan_once(clv_plan *p, const clv_config *c, const clv_module_sizes *ms, const clv_topology *topo,
                     const clv_plan_request *req, int ctx, clv_status *st) {
    memset(p, 0, sizeof *p);
    p->n_layers = c->n_layers;
    p->tp_size = 1;
    p->tied = c->tie_embeddings;
    p->ctx = ctx;
    p->max_t = req->max_t;
    p->kv_per_token_layer = ms->kv_per_token_layer;
    p->kv_dt = ms->kv_dt;
    for (int l = 0; l < c->n_layers; l++) p->layer_bytes[l] = ms->layer[l];
    p->embed_bytes = ms->embed;
    p->norm_bytes = ms->norm;
    p->head_bytes = ms->head;
    module m[CLV_MAX_LAYERS + 4];
    bool planned = req->mode != CLV_MAP_EXPLICIT && req->mode != CLV_MAP_DEVICE;
    int nm = build_modules(c, ms, req->accelerate_compat ? 0 : ctx, req->accelerate_compat && planned, m), rc;
    int assign_dev[CLV_MAX_LAYERS + 4];

    if (req->mode == CLV_MAP_EXPLICIT || req->mode == CLV_MAP_DEVICE) {
        if (req->mode == CLV_MAP_EXPLICIT && (rc = explicit_map(p, m, nm, req, topo, assign_dev, st))) return rc;
        if (req->mode == CLV_MAP_DEVICE) {
            if ((rc = check_device(req->device, topo, st))) return rc;
            uint64_t budget = default_budget(req->device, topo);
            for (int k = 0; k < req->n_budgets; k++)
                if (clv_device_eq(req->budget_dev[k], req->device)) budget = req->budget[k];
            add_device(p, req->device, budget);
            for (int i = 0; i < nm; i++) assign_dev[i] = 0;
        }
    } else {
        if (req->n_budgets > CLV_MAX_DEVICES - 2)
            return clv_fail(st, CLV_EINVAL, "--max-memory: at most %d devices (disk is added to them)", CLV_MAX_DEVICES - 2);
        for (int k = 0; k < req->n_budgets; k++) {
            if ((rc = check_device(req->budget_dev[k], topo, st))) return rc;
            add_device(p, req->budget_dev[k], req->budget[k]);
        }
        if (req->n_budgets == 0) { /* every GPU, then the CPU, as Accelerate's get_max_memory */
            for (int g = 0; g < topo->n_gpus && g < CLV_MAX_DEVICES - 2; g++)
                add_device(p, (clv_device){CLV_DEV_CUDA, g}, default_budget((clv_device){CLV_DEV_CUDA, g}, topo));
            add_device(p, (clv_device){CLV_DEV_CPU, -1}, default_budget((clv_device){CLV_DEV_CPU, -1}, topo));
        }
        add_device(p, (clv_device){CLV_DEV_DISK, -1}, UINT64_MAX);
    }
    /* "cpu" with "cpu:N" would give the same cores twice */
    bool whole = false, part = false;
    for (int d = 0; d < p->n_devices; d++)
        if (p->devices[d].kind == CLV_DEV_CPU) *(p->devices[d].index < 0 ? &whole : &part) = true;
    if (whole && part) return clv_fail(st, CLV_EINVAL, "use either cpu or cpu:N devices, not both (they share cores)");

    /* a compute device for disk-tier weights: the first one, or the whole CPU */
    int n_before = p->n_devices;
    clv_device before[CLV_MAX_DEVICES];
    memcpy(before, p->devices, sizeof before);
    int main_dev = -1;
    for (int d = 0; d < p->n_devices && main_dev < 0; d++)
        if (is_compute(p->devices[d])) main_dev = d;
    if (main_dev < 0) {
        const clv_device cpu = {CLV_DEV_CPU, -1};
        uint64_t budget = default_budget(cpu, topo);
        for (int k = 0; k < req->n_budgets; k++)
            if (clv_device_eq(req->budget_dev[k], cpu)) budget = req->budget[k];
        main_dev = add_device(p, cpu, budget);
    }
    /* a budget applies to a device of the plan; any other is a mistake, not ignored */
    for (int k = 0; k < req->n_budgets; k++) {
        bool used = false;
        for (int d = 0; d < p->n_devices; d++) used |= clv_device_eq(p->devices[d], req->budget_dev[k]);
        if (!used) {
            char dn[32];
            clv_device_str(&req->budget_dev[k], dn, sizeof dn);
            return clv_fail(st, CLV_EINVAL, "--max-memory gives a budget for %s, which the device map does not use", dn);
        }
    }
    sort_devices(p);
    /* indices moved: remap */
    int remap[CLV_MAX_DEVICES];
    for (int i = 0; i < n_before; i++)
        for (int d = 0; d < p->n_devices; d++)
            if (clv_device_eq(before[i], p->devices[d])) remap[i] = d;
    main_dev = -1;
    for (int d = 0; d < p->n_devices && main_dev < 0; d++)
        if (is_compute(p->devices[d])) main_dev = d;
    for (int d = 0; d < p->n_devices; d++) p->exec[d] = is_compute(p->devices[d]) ? d : main_dev;
    if (req->offload_exec == CLV_OFFLOAD_MAIN || (p->devices[main_dev].kind == CLV_DEV_CUDA && stream_to_main(req->offload_exec)))
        for (int d = 0; d < p->n_devices; d++)
            if (p->devices[d].kind == CLV_DEV_CPU) p->exec[d] = main_dev;

    uint64_t scratch = ms->scratch_fixed + ms->scratch_per_token * (uint64_t)(req->max_t < ctx ? req->max_t : ctx);
    if (req->mode == CLV_MAP_EXPLICIT || req->mode == CLV_MAP_DEVICE) {
        for (int i = 0; i < nm; i++) *module_slot(p, &m[i]) = remap[assign_dev[i]];
    } else {
        /* balancing caps what the greedy pass may put on each device; the
         * accounting below still checks against the real budgets */
        uint64_t cap[CLV_MAX_DEVICES], est[CLV_MAX_DEVICES];
        memcpy(cap, p->budget, sizeof cap);
        if (req->mode != CLV_MAP_SEQUENTIAL) balance(p, cap, m, nm, ms, req->mode == CLV_MAP_BALANCED_LOW_0);
        assign_greedy(p, cap, m, nm, main_dev, scratch, req->accelerate_compat, false, est);
        if (req->accelerate_compat) return account(p, m, nm, ms, true, st);
        /* The greedy pass estimates; the accounting decides. When they
         * disagree, place again: holding back on the main device the KV cache
         * of every module still to come (the estimate may have let modules
         * spill to its tiers with no room held for their cache), and from then
         * on lowering the cap of each device found over budget by what it is
         * over (scratch the estimate does not see, such as the head's logits
         * on a GPU, or disk staging): below what the pass counted on it, so
         * that it takes fewer modules. Caps only go down, so this ends; the
         * last accounting's error is the caller's. */
        for (int round = 0; round < 4 * CLV_MAX_DEVICES; round++) {
            clv_status again = {0}; /* a failure here is not the caller's: st stays clean */
            if (!account(p, m, nm, ms, false, &again)) return 0;
            bool lowered = false;
            for (int d = 0; round > 0 && d < p->n_devices; d++) {
                const uint64_t need = device_need(p, d);
                if (need <= p->budget[d] || cap[d] == 0) continue;
                const uint64_t was = est[d] < cap[d] ? est[d] : cap[d], over = need - p->budget[d];
                cap[d] = was > over ? was - over : 0;
                lowered = true;
            }
            if (round > 0 && !lowered) break;
            assign_greedy(p, cap, m, nm, main_dev, scratch, false, true, est);
        }
    }
    if (p->tied) p->head_dev = p->embed_dev;
    return account(p, m, nm, ms, req->accelerate_compat, st);
}

static bool same_assignment(const clv_plan *a, const clv_plan *b) {
    if (a->embed_dev != b->embed_dev || a->norm_dev != b->norm_dev || a->head_dev != b->head_dev) return false;
    for (int l = 0; l < a->n_layers; l++)
        if (!clv_device_eq(a->devices[a->layer_dev[l]], b->devices[b->layer_dev[l]])) return false;
    return true;
}

int clv_plan_make(clv_plan *p, const clv_config *c, const clv_module_sizes *ms, const clv_topology *topo,
                  const clv_plan_request *req, clv_status *st) {
    if (req->ctx > 0 || req->accelerate_compat)
        return plan_once(p, c, ms, topo, req, req->ctx > 0 ? req->ctx : c->max_pos, st);
    /* Default context: the model's max_position_embeddings, halved until its KV
     * cache no longer pushes any weights to a slower tier and everything fits. */
    clv_plan base;
    clv_plan_request r0 = *req;
    r0.accelerate_compat = false;
    int rc0 = plan_once(&base, c, ms, topo, &r0, 1, st);
    if (rc0) return rc0;
    int ctx = c->max_pos, floor_ctx = c->max_pos < 256 ? c->max_pos : 256;
    for (;;) {
        clv_status st2 = {0};
        int rc = plan_once(p, c, ms, topo, req, ctx, &st2);
        if (rc == 0 && same_assignment(p, &base)) return 0;
        if (ctx <= floor_ctx) {
            if (rc) *st = st2;
            return rc;
        }
        ctx = ctx / 2 > floor_ctx ? ctx / 2 : floor_ctx;
    }
}

void clv_plan_print(const clv_plan *p, FILE *f) {
    char dev[32], a[32], b[32], w[32], kv[32], sc[32], sg[32];
    fprintf(f, "%-8s %12s %12s %12s %12s %12s %12s\n", "device", "weights", "kv cache", "scratch", "staging", "total",
            "budget");
    for (int d = 0; d < p->n_devices; d++) {
        clv_device_str(&p->devices[d], dev, sizeof dev);
        clv_size_str(p->weight_bytes[d], w, sizeof w);
        clv_size_str(p->kv_bytes[d], kv, sizeof kv);
        clv_size_str(p->scratch_bytes[d], sc, sizeof sc);
        clv_size_str(p->staging_bytes[d], sg, sizeof sg);
        clv_size_str(device_need(p, d), a, sizeof a);
        if (p->budget[d] == UINT64_MAX) snprintf(b, sizeof b, "-");
        else clv_size_str(p->budget[d], b, sizeof b);
        fprintf(f, "%-8s %12s %12s %12s %12s %12s %12s\n", dev, w, kv, sc, sg, a, b);
    }
    fprintf(f, "\nmap (context %d tokens, %s KV cache):\n", p->ctx, clv_kv_dtype_name(p->kv_dt));
    clv_device_str(&p->devices[p->embed_dev], dev, sizeof dev);
    fprintf(f, "  model.embed_tokens       -> %s\n", dev);
    for (int l = 0; l < p->n_layers;) {
        int e = l;
        while (e + 1 < p->n_layers && p->layer_dev[e + 1] == p->layer_dev[l]) e++;
        clv_device_str(&p->devices[p->layer_dev[l]], dev, sizeof dev);
        char range[40];
        if (e > l) snprintf(range, sizeof range, "model.layers.%d-%d", l, e);
        else snprintf(range, sizeof range, "model.layers.%d", l);
        char ex[64] = "";
        if (p->exec[p->layer_dev[l]] != p->layer_dev[l]) {
            char ed[32];
            clv_device_str(&p->devices[p->exec[p->layer_dev[l]]], ed, sizeof ed);
            snprintf(ex, sizeof ex, " (streamed, runs on %s)", ed);
        }
        fprintf(f, "  %-24s -> %s%s\n", range, dev, ex);
        l = e + 1;
    }
    clv_device_str(&p->devices[p->norm_dev], dev, sizeof dev);
    fprintf(f, "  model.norm               -> %s\n", dev);
    clv_device_str(&p->devices[p->head_dev], dev, sizeof dev);
    fprintf(f, "  lm_head                  -> %s%s\n", dev, p->tied ? " (tied to model.embed_tokens)" : "");
}

char *clv_plan_map_json(const clv_plan *p) {
    cJSON *o = cJSON_CreateObject();
    char dev[32];
    clv_device_str(&p->devices[p->embed_dev], dev, sizeof dev);
    cJSON_AddStringToObject(o, "model.embed_tokens", dev);
    for (int l = 0; l < p->n_layers; l++) {
        char key[48];
        snprintf(key, sizeof key, "model.layers.%d", l);
        clv_device_str(&p->devices[p->layer_dev[l]], dev, sizeof dev);
        cJSON_AddStringToObject(o, key, dev);
    }
    clv_device_str(&p->devices[p->norm_dev], dev, sizeof dev);
    cJSON_AddStringToObject(o, "model.norm", dev);
    clv_device_str(&p->devices[p->head_dev], dev, sizeof dev);
    cJSON_AddStringToObject(o, "lm_head", dev);
    char *s = clv_json_print_py(o);
    cJSON_Delete(o);
    return s;
}

double clv_plan_predict_tok_s(const clv_plan *p, double ram_gbs, double disk_gbs) {
    /* decode reads every weight once per token (one embedding row) */
    double t = 0;
    for (int d = 0; d < p->n_devices; d++) {
        uint64_t b = p->weight_bytes[d];
        if (d == p->embed_dev) b -= p->embed_bytes - p->embed_bytes / 1000; /* ~one row of many */
        if (p->tied && d == p->embed_dev) b += p->embed_bytes;              /* the head reads it all */
        /* a GPU reads its own memory; what it streams from host RAM crosses the host link */
        double gbs = p->devices[d].kind == CLV_DEV_DISK   ? disk_gbs
                     : p->devices[d].kind == CLV_DEV_CUDA ? CLV_GPU_GBS_DEFAULT
                     : p->devices[p->exec[d]].kind == CLV_DEV_CUDA ? CLV_H2D_GBS_DEFAULT
                                                                   : ram_gbs;
        t += (double)b / (gbs * 1e9);
    }
    return t > 0 ? 1.0 / t : 0;
}
