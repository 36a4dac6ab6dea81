/* plan — placement as data: which device holds and runs each module (device
 * map) and, with tensor parallelism, how tensors are split across ranks. A
 * plan is a value: printed, saved as JSON, loaded, compared; the executor
 * only reads it. Never touches weight bytes. */
#ifndef CLV_PLAN_H
#define CLV_PLAN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "../format/safetensors.h"
#include "../model/config.h"

typedef enum clv_dev_kind { CLV_DEV_CUDA, CLV_DEV_CPU, CLV_DEV_DISK } clv_dev_kind;

typedef struct clv_device {
    clv_dev_kind kind;
    int index; /* -1: the whole kind ("cpu", "disk"); N: "cpu:N", "cuda:N" */
} clv_device;

#define CLV_MAX_DEVICES 16
#define CLV_MAX_CPUS 1024

#define CLV_MAX_GROUP_CPUS 256

/* What this machine has: CPU groups (NUMA nodes, or physical cores when there
 * is one node), their CPUs, and free memory. CPU lists are ordered core first:
 * one CPU of every core, then the second SMT siblings, and so on, so that the
 * first n_cores entries (group_ncores of a group) are distinct cores. */
typedef struct clv_topology {
    int n_groups;
    int group_ncpus[CLV_MAX_DEVICES];
    int group_ncores[CLV_MAX_DEVICES];
    int group_cpus[CLV_MAX_DEVICES][CLV_MAX_GROUP_CPUS];
    int n_cpus;              /* online CPUs in all */
    int n_cores;             /* physical cores they belong to (SMT siblings counted once) */
    int cpus[CLV_MAX_CPUS];
    int cpu_core[CLV_MAX_CPUS]; /* core of cpus[i]: its lowest-numbered SMT sibling */
    uint64_t mem_available;  /* bytes, MemAvailable */
    bool numa;               /* groups are NUMA nodes (else cores) */
    int n_gpus;              /* CUDA devices (filled by the caller, which can ask the driver) */
    uint64_t gpu_free[CLV_MAX_DEVICES];
    char gpu_why[160];       /* why there are none */
} clv_topology;
int clv_topology_detect(clv_topology *t, clv_status *st);
/* The same from a copy of /sys and /proc under root ("" is the machine's own). */
int clv_topology_detect_at(clv_topology *t, const char *root, clv_status *st);
/* Threads a CPU device runs by default: its physical cores (device -1: "cpu",
 * every core; N: group N). */
int clv_topology_threads(const clv_topology *t, int group);
/* Part `part` of `parts` equal shares of the physical cores (as many as fit;
 * at least one core each): writes the CPUs of its cores, SMT siblings
 * included, to out (room for n_cpus) and returns how many, or 0 when there
 * are fewer cores than parts. *cores gets the share's core count. */
int clv_topology_share(const clv_topology *t, int part, int parts, int *out, int *cores);

int clv_device_parse(const char *s, clv_device *d, clv_status *st);
void clv_device_str(const clv_device *d, char *buf, size_t cap);
bool clv_device_eq(clv_device a, clv_device b);

/* Sizes: plain bytes, KB/MB/GB (10^3..), KiB/MiB/GiB (2^10..), TB/TiB;
 * case-insensitive. Anything else is an error saying why. */
int clv_size_parse(const char *s, uint64_t *out, clv_status *st);
void clv_size_str(uint64_t bytes, char *buf, size_t cap); /* "1.25 GiB" */

typedef enum clv_map_mode {
    CLV_MAP_AUTO,            /* = balanced, as transformers' device_map="auto" */
    CLV_MAP_BALANCED,
    CLV_MAP_BALANCED_LOW_0,
    CLV_MAP_SEQUENTIAL,
    CLV_MAP_DEVICE,          /* everything on one device */
    CLV_MAP_EXPLICIT         /* module -> device, from JSON */
} clv_map_mode;

/* The modules a device map assigns, in Hugging Face's order. */
typedef enum clv_module_kind { CLV_MOD_EMBED, CLV_MOD_LAYER, CLV_MOD_NORM, CLV_MOD_HEAD,
                               CLV_MOD_ROTARY /* model.rotary_emb: buffers only, --accelerate-compat */ } clv_module_kind;

/* Who computes the layers stored in CPU RAM: the CPU where they are (LOCAL),
 * or the main (first) device, the weights streamed to it (MAIN, what
 * Accelerate does with a GPU). AUTO is LOCAL unless the main device is a GPU;
 * then the cost model decides: per decoded token, streaming moves the bytes at
 * host-to-device bandwidth, the CPU reads them at its memory bandwidth;
 * prefill always favours the GPU. */
typedef enum clv_offload_exec { CLV_OFFLOAD_AUTO, CLV_OFFLOAD_MAIN, CLV_OFFLOAD_LOCAL } clv_offload_exec;
#define CLV_H2D_GBS_DEFAULT 25.0 /* PCIe 4.0 x16 as measured in practice; PCIe 5 doubles it */
#define CLV_RAM_GBS_DEFAULT 20.0 /* what a few cores of one socket read */
#define CLV_GPU_GBS_DEFAULT 2000.0 /* HBM as a decode kernel reads it (H100: ~3350 peak) */

typedef struct clv_plan_request {
    clv_map_mode mode;
    clv_device device;               /* CLV_MAP_DEVICE */
    const char *map_json;            /* CLV_MAP_EXPLICIT: the file's text */
    const char *map_path;
    int n_budgets;                   /* --max-memory */
    clv_device budget_dev[CLV_MAX_DEVICES];
    uint64_t budget[CLV_MAX_DEVICES];
    int ctx;                         /* KV cache tokens to budget; 0: choose */
    int max_t;                       /* prefill chunk (activation scratch) */
    bool accelerate_compat;          /* budget weights only, as Accelerate does */
    clv_offload_exec offload_exec;   /* who computes the layers stored in CPU RAM when the main device is a GPU */
} clv_plan_request;

typedef struct clv_plan {
    int n_devices;
    clv_device devices[CLV_MAX_DEVICES];
    uint64_t budget[CLV_MAX_DEVICES];
    int exec[CLV_MAX_DEVICES];     /* device that computes what is stored on d (disk -> main) */
    int n_layers;
    int layer_dev[CLV_MAX_LAYERS]; /* index into devices: where the layer's weights live */
    int embed_dev, norm_dev, head_dev;
    int rotary_dev;                /* where Accelerate puts model.rotary_emb (--accelerate-compat; unused) */
    bool tied;
    int ctx, max_t;
    /* accounting per device */
    uint64_t weight_bytes[CLV_MAX_DEVICES], kv_bytes[CLV_MAX_DEVICES], scratch_bytes[CLV_MAX_DEVICES],
        staging_bytes[CLV_MAX_DEVICES];
    uint64_t layer_bytes[CLV_MAX_LAYERS], embed_bytes, norm_bytes, head_bytes, kv_per_token_layer;
    clv_dtype kv_dt; /* the KV caches' elements (--kv-dtype) */
    int tp_size;
} clv_plan;

/* Module sizes from the checkpoint's actual tensors. */
typedef struct clv_module_sizes {
    int n_layers;
    uint64_t layer[CLV_MAX_LAYERS], embed, norm, head; /* head 0 when tied */
    uint64_t leaf_max;        /* largest leaf module: a Linear with its bias, the Embedding, a norm */
    uint64_t rotary;          /* model.rotary_emb's buffers as transformers counts them: inv_freq and
                                 original_inv_freq, float32, ceil(head_dim/2) each */
    uint64_t kv_per_token_layer; /* keys and values of one token in one layer, in kv_dt */
    clv_dtype kv_dt;
    uint64_t scratch_per_token, scratch_fixed;
} clv_module_sizes;

void clv_plan_single(clv_plan *p, const clv_config *c, clv_device d);
/* Plan with `req` over this machine's topology. */
int clv_plan_make(clv_plan *p, const clv_config *c, const clv_module_sizes *ms, const clv_topology *topo,
                  const clv_plan_request *req, clv_status *st);
void clv_plan_print(const clv_plan *p, FILE *f);
/* The device map as JSON: Hugging Face's module -> device form, one entry per
 * module; exactly what --device-map FILE.json reads. Caller frees. */
char *clv_plan_map_json(const clv_plan *p);
/* Predicted decode tokens/s from bytes per tier and each tier's bandwidth (GB/s). */
double clv_plan_predict_tok_s(const clv_plan *p, double ram_gbs, double disk_gbs);

#endif
