/* cleave — public C API.
 *
 * Handles are opaque; everything a caller can do goes through these functions.
 * No function here exits the process: each returns 0 on success or a negative
 * clv_code, with a message in the clv_status the caller passed. */
#ifndef CLEAVE_H
#define CLEAVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CLV_VERSION "0.1.0"

typedef enum clv_code {
    CLV_OK = 0,
    CLV_EINVAL = -1,      /* bad user input: flag, value, file content */
    CLV_EIO = -2,         /* a file could not be opened, read, mapped or written */
    CLV_ENOMEM = -3,      /* an allocation failed */
    CLV_EFORMAT = -4,     /* a checkpoint file is malformed */
    CLV_EUNSUPPORTED = -5, /* well-formed, but not something cleave implements */
    CLV_EDEVICE = -6       /* a device, its driver or library (CUDA, cuBLAS, NCCL) failed */
} clv_code;

typedef struct clv_status {
    int code;
    char msg[1024];
} clv_status;

typedef struct clv_model clv_model;     /* weights + config, read-only once loaded */
typedef struct clv_session clv_session; /* KV cache + run state for one model */

typedef struct clv_load_opts {
    int n_threads;              /* threads per compute device; 0: the device's cores */
    int ctx;                    /* KV cache tokens the plan budgets; 0: max_position_embeddings,
                                   capped so the cache never pushes weights to a slower tier */
    const char *device_map;     /* NULL: "cpu"; else auto | balanced | balanced_low_0 | sequential
                                   | DEVICE (cpu, cpu:N, cuda:N, disk) | a JSON file of module -> device */
    const char *max_memory;     /* "cuda:0=20GiB,cpu=2GiB,disk=20GB"; unset devices: their free memory */
    int prefill_chunk;          /* tokens per forward chunk; 0: 512 */
    const char *dtype;          /* NULL/"auto": weights as stored; "f32", "bf16", "f16": converted at load */
    const char *prefill_precision; /* NULL/"f32": prompt matmuls keep f32-level accuracy (bf16 hi + lo
                                   activations on the matrix units); "bf16": activations rounded to
                                   bf16, one pass (faster prefill; transformers' and llama.cpp's rounding) */
    const char *kv_dtype;       /* NULL/"f32": KV cache in f32; "bf16": rounded to bf16 (half the
                                   memory and the decode attention reads) */
    const char *offload_folder; /* where disk-tier weights that need converting are written */
    bool no_prefetch;           /* read disk-tier weights synchronously (for measuring prefetch) */
    const char *offload_exec;   /* NULL/"auto" | "main" | "local": who computes the layers stored in CPU RAM:
                                   the main (first) device, their weights streamed to it (as Accelerate
                                   does with a GPU), or the CPU that holds them; auto: main when it is a GPU */
    bool accelerate_compat;     /* plan weights only, exactly as Accelerate does (no KV/scratch budget) */
    /* tensor parallelism: this process is one rank of comm (NULL: no TP) */
    struct clv_comm *comm;
    int pp;                     /* pipeline stages (TP x PP mesh): comm's ranks are pp groups of
                                   world/pp consecutive ranks, each holding consecutive layers; 0: 1 */
    const char *tp_plan;        /* NULL: auto; else the text of a JSON tp plan */
    const char *tp_plan_path;   /* for messages */
} clv_load_opts;

/* Load a Hugging Face model folder (config.json, *.safetensors [+ index]). */
int clv_model_load(clv_model **out, const char *dir, const clv_load_opts *opts, clv_status *st);
void clv_model_free(clv_model *m);
int clv_model_vocab(const clv_model *m);
/* The context length the placement plan budgeted a KV cache for. */
int clv_model_ctx(const clv_model *m);

/* A session owns a KV cache of `ctx` tokens. */
int clv_session_new(clv_session **out, clv_model *m, int ctx, clv_status *st);
void clv_session_free(clv_session *s);
void clv_session_reset(clv_session *s);
/* Forget every token from position pos on (keep the cached prefix). */
void clv_session_rewind(clv_session *s, int pos);

/* Feed `n` tokens at the current position (prefill: one pass, matrix x matrix).
 * If `logits` is non-NULL it receives [n, vocab] floats when all_logits != 0,
 * else [vocab] floats for the last token. */
int clv_session_eval(clv_session *s, const int32_t *ids, int n, float *logits, int all_logits,
                     clv_status *st);

#ifdef __cplusplus
}
#endif
#endif
