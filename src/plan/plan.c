#include "plan.h"

#include <string.h>

#include "../util/util.h"

int clv_device_parse(const char *s, clv_device *d, clv_status *st) {
    static const struct { const char *name; clv_dev_kind kind; } kinds[] = {
        {"cpu", CLV_DEV_CPU}, {"disk", CLV_DEV_DISK}, {"cuda", CLV_DEV_CUDA}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        size_t n = strlen(kinds[i].name);
        if (strncmp(s, kinds[i].name, n) != 0) continue;
        d->kind = kinds[i].kind;
        d->index = -1;
        if (s[n] == 0) return 0;
        int64_t v;
        if (s[n] == ':' && kinds[i].kind != CLV_DEV_DISK && clv_parse_i64(s + n + 1, &v) && v >= 0 && v < 1024) {
            d->index = (int)v;
            return 0;
        }
        break;
    }
    return clv_fail(st, CLV_EINVAL, "unknown device '%s' (expected cpu, cpu:N, disk, cuda:N)", s);
}

void clv_device_str(const clv_device *d, char *buf, size_t cap) {
    static const char *names[] = {"cpu", "disk", "cuda"};
    if (d->index < 0) snprintf(buf, cap, "%s", names[d->kind]);
    else snprintf(buf, cap, "%s:%d", names[d->kind], d->index);
}

void clv_plan_single(clv_plan *p, const clv_config *c, clv_device d) {
    memset(p, 0, sizeof *p);
    p->n_devices = 1;
    p->devices[0] = d;
    p->n_layers = c->n_layers;
    p->tp_size = 1;
}

void clv_plan_print(const clv_plan *p, FILE *f) {
    char dev[32];
    clv_device_str(&p->devices[p->embed_dev], dev, sizeof dev);
    fprintf(f, "model.embed_tokens -> %s\n", dev);
    for (int l = 0; l < p->n_layers;) {
        int e = l;
        while (e + 1 < p->n_layers && p->layer_dev[e + 1] == p->layer_dev[l]) e++;
        clv_device_str(&p->devices[p->layer_dev[l]], dev, sizeof dev);
        fprintf(f, "model.layers.%d-%d -> %s\n", l, e, dev);
        l = e + 1;
    }
    clv_device_str(&p->devices[p->norm_dev], dev, sizeof dev);
    fprintf(f, "model.norm -> %s\n", dev);
    clv_device_str(&p->devices[p->head_dev], dev, sizeof dev);
    fprintf(f, "lm_head -> %s\n", dev);
}
