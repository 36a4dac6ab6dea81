/* plan — placement as data: which device runs each layer (device map) and,
 * later, how each tensor is split across ranks (tp plan). A plan is a value:
 * printed, compared, and read by the executor. Never touches weight bytes. */
#ifndef CLV_PLAN_H
#define CLV_PLAN_H

#include <stdio.h>

#include "../model/config.h"

typedef enum clv_dev_kind { CLV_DEV_CPU, CLV_DEV_DISK, CLV_DEV_CUDA } clv_dev_kind;

typedef struct clv_device {
    clv_dev_kind kind;
    int index; /* -1: the whole kind ("cpu"); N: "cpu:N", "cuda:N" */
} clv_device;

#define CLV_MAX_DEVICES 16

typedef struct clv_plan {
    int n_devices;
    clv_device devices[CLV_MAX_DEVICES];
    int n_layers;
    int layer_dev[CLV_MAX_LAYERS]; /* index into devices */
    int embed_dev, norm_dev, head_dev;
    int tp_size; /* ranks each tensor is split over; 1: none */
} clv_plan;

int clv_device_parse(const char *s, clv_device *d, clv_status *st);
void clv_device_str(const clv_device *d, char *buf, size_t cap);

/* Everything on one device. */
void clv_plan_single(clv_plan *p, const clv_config *c, clv_device d);
void clv_plan_print(const clv_plan *p, FILE *f);

#endif
