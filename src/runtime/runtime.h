/* runtime — the executor. Binds checkpoint tensors to the architecture's
 * slots, owns KV caches and run state, and walks the layers in the order the
 * plan says, each on its device's backend. */
#ifndef CLV_RUNTIME_H
#define CLV_RUNTIME_H

#include "../backend/backend.h"
#include "../format/safetensors.h"
#include "../model/arch.h"
#include "../model/config.h"
#include "../comm/comm.h"
#include "../plan/plan.h"
#include "../plan/tp.h"
#include "stream.h"
#include "cleave.h"

typedef struct clv_layer_w {
    clv_mat q, k, v, o, gate, up, down;
    const float *attn_norm, *ffn_norm, *q_norm, *k_norm; /* f32 copies */
    const float *q_bias, *k_bias, *v_bias, *o_bias, *gate_bias, *up_bias, *down_bias; /* NULL if absent */
} clv_layer_w;

/* A disk-tier unit (a layer, or the head) and which slot each of its tensors fills. */
typedef struct clv_unit_map {
    int layer;                       /* -1: the lm_head */
    clv_wslot slot[CLV_STREAM_MAX_TENSORS];
} clv_unit_map;

struct clv_model {
    clv_config cfg;
    clv_gen_config gen;
    clv_plan plan;
    clv_topology topo;
    clv_st_set st;
    clv_mat embed, lm_head;
    const float *norm;
    clv_layer_w *layers;
    float *vec_arena;               /* every 1-D tensor as f32 */
    size_t vec_floats;
    clv_backend *be[CLV_MAX_DEVICES]; /* per plan device that computes; NULL for disk */
    uint64_t weight_bytes;          /* bytes of every tensor in the checkpoint */
    uint64_t decode_bytes;          /* bytes read per decoded token (matrices + one embedding row) */
    /* disk tier */
    clv_streamer *streamer;
    int n_units;
    clv_stream_unit *units;
    clv_unit_map *unit_map;
    int *layer_unit;                /* [n_layers] unit index, -1 if resident */
    int head_unit;                  /* -1 if resident */
    int prefill_chunk;
    clv_dtype want_dt;              /* --dtype; CLV_DT_COUNT: as stored */
    int load_threads;               /* threads converting weights at load (-t, else the physical cores) */
    bool bf16_prefill;              /* --prefill-precision bf16 (every backend's bf16_prefill) */
    clv_dtype kv_dt;                /* --kv-dtype: the KV caches' elements (CLV_DT_F32 or CLV_DT_BF16) */
    clv_st_set offload;             /* converted disk-tier weights (n_files 0: none) */
    /* tensor parallelism */
    clv_tp_plan tp;
    clv_comm *comm;                 /* not owned */
    int pp, stage;                  /* pipeline stages, and this rank's */
    int stage_of[CLV_MAX_LAYERS];   /* which stage holds each layer */
    void **owned;                   /* rank-local copies of strided (rowwise) slices */
    int n_owned;
    uint64_t rank_bytes;            /* weight bytes this rank holds */
    /* devices with their own memory (GPUs) */
    float *dev_vec[CLV_MAX_DEVICES]; /* vec_arena's copy on each such device */
    int gpu_base;                   /* this process's cuda:0 is GPU gpu_base of the machine */
    void **dev_owned;               /* device allocations of resident weights */
    int *dev_owned_be, n_dev_owned;
    bool embed_on_host;             /* embedding rows are looked up on the host, then copied */
    /* modules stored in host RAM or on disk, computed by a device: streamed
     * through CLV_STAGE_SLOTS device buffers, the next one in flight while the
     * current one computes. Unit u: layer u, or the head when u == n_layers. */
    bool *dstream;                  /* [n_layers + 1] */
    int *dnext, *dorder;            /* [n_layers + 1] next streamed unit; its place in the order */
    void **dpinned;                 /* [n_layers + 1] pinned host copy (or NULL) */
    int stream_dev;                 /* plan device that computes them */
    void *slot_buf[CLV_STAGE_SLOTS];
    int slot_unit[CLV_STAGE_SLOTS]; /* unit whose weights are (being) copied into the slot; -1 none */
    size_t slot_bytes;
};

/* Activations of one memory space, [max_t][...]: host memory (shared by
 * every host-memory backend) or one device's. */
typedef struct clv_acts {
    clv_backend *be;            /* NULL: host memory */
    float *x, *xb, *xb2, *q, *k, *v, *att, *g, *u;
    float *logits;              /* [max_t][vocab] (device sets) */
    float *rope_cos, *rope_sin; /* [ctx][head_dim/2] */
    float *zero;                /* [hidden] zeros (device sets) */
} clv_acts;

struct clv_session {
    clv_model *m;
    int ctx;   /* KV cache capacity in tokens */
    int pos;   /* tokens already in the cache */
    int max_t; /* tokens per forward chunk */
    void **k_cache, **v_cache;  /* per layer, on the layer's compute device, in its backend's layout
                                 * (backend.h: clv_kv_cache_bytes) */
    clv_acts host;              /* also the staging between devices */
    clv_acts *dev[CLV_MAX_DEVICES]; /* per plan device with its own memory */
    clv_acts *x_at;             /* where the current hidden states are */
    float *gather;              /* host: vocab-split logits of all ranks */
    uint8_t *embed_row;         /* one embedding row, when the table is on disk */
};

/* Bind every tensor the architecture needs; any missing, extra, mis-shaped or
 * wrongly typed tensor is an error naming it and its file. */
int clv_model_bind(clv_model *m, clv_status *st);
/* Weight bytes one rank holds under a tp plan (its slices + replicated tensors). */
uint64_t clv_model_tp_bytes(const clv_model *m, const clv_tp_plan *tp);
/* Module sizes for the planner, from the checkpoint's actual tensors. */
void clv_model_sizes(const clv_model *m, int max_t, clv_module_sizes *ms);
/* The weights of layer l, streaming them in first if they live on disk (then
 * clv_model_layer_done must follow). */
int clv_model_layer_acquire(clv_model *m, int l, clv_layer_w *tmp, const clv_layer_w **out, clv_status *st);
void clv_model_layer_done(clv_model *m, int l);
int clv_model_head_acquire(clv_model *m, clv_mat *out, clv_status *st);
void clv_model_head_done(clv_model *m);

/* One forward step in pieces (single process): embed T tokens, run layers
 * [l0, l1), then the head over the last token. The caller advances nothing:
 * clv_session_commit moves the position on by T when all pieces ran. */
int clv_session_embed(clv_session *s, const int32_t *ids, int T, clv_status *st);
int clv_session_layers(clv_session *s, int l0, int l1, int T, clv_status *st);
int clv_session_head(clv_session *s, int T, float *logits, clv_status *st);

/* Several independent sequences, one step each (sessions[b] takes n[b] tokens
 * ids[b] and leaves its last-token logits in logits[b]). When the plan puts
 * consecutive layers on different compute devices, the devices work at the
 * same time on different sequences (a pipeline), each device's stage on its
 * own thread. Plans it cannot pipeline (disk-tier layers, a device used by two
 * stages, a chunk longer than the prefill chunk) run the sequences one after
 * another. */
int clv_batch_eval(clv_session **sessions, int B, const int32_t *const *ids, const int *n, float **logits,
                   clv_status *st);
/* The backend that computes what is stored on plan device d. */
clv_backend *clv_model_exec_be(const clv_model *m, int d);
/* Stages the pipeline would use (1: no pipelining). */
int clv_model_pipeline_stages(const clv_model *m);

/* ---- sampling ---------------------------------------------------------------- */

typedef struct clv_sampler_cfg {
    bool greedy;
    float temperature; /* > 0 */
    int top_k;         /* 0: off */
    float top_p;       /* 1: off */
    float min_p;       /* 0: off */
    float repetition_penalty; /* 1: off */
    uint64_t seed;
} clv_sampler_cfg;

typedef struct clv_sampler {
    clv_sampler_cfg cfg;
    uint64_t rng;
    int vocab;
    int *idx;     /* [vocab] candidate ids */
    float *prob;  /* [vocab] */
} clv_sampler;

int clv_sampler_init(clv_sampler *s, const clv_sampler_cfg *cfg, int vocab, clv_status *st);
void clv_sampler_free(clv_sampler *s);
/* Picks the next token. `logits` is modified (penalties, temperature). */
int clv_sampler_next(clv_sampler *s, float *logits, const int32_t *history, int n_history);

#endif
