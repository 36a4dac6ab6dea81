/* model — convert a llama.cpp GGUF file into a Hugging Face model folder.
 *
 * The folder is what transformers' save_pretrained would write for the same
 * model, so cleave (and transformers) load it like any other checkpoint:
 *
 *   config.json             from the {arch}.* hyper-parameters
 *   generation_config.json  bos/eos ids (+ general.sampling.* when present)
 *   model.safetensors       tensors renamed to transformers' names, dequantised
 *                           to bf16 (default), f16 or f32; the q/k row permutation
 *                           llama.cpp applies to llama-family models is undone
 *   tokenizer.json          a `tokenizers` BPE model built from tokenizer.ggml.*
 *   tokenizer_config.json   special tokens and the chat template
 *
 * Architectures: llama, mistral, qwen2, qwen3 (general.architecture). A file
 * without tensors (a vocabulary-only GGUF) gives a tokenizer-only folder.
 * Everything is written into DIR.tmp.<pid> and renamed to DIR at the end, so
 * a failure never leaves a half-written folder behind. */
#ifndef CLV_GGUF_IMPORT_H
#define CLV_GGUF_IMPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "../format/gguf.h"
#include "../format/safetensors.h"
#include "cleave.h"

typedef struct clv_gguf_import_opts {
    const char *out_dir;
    clv_dtype dtype; /* CLV_DT_BF16, CLV_DT_F16 or CLV_DT_F32 */
} clv_gguf_import_opts;

typedef struct clv_gguf_import_report {
    char arch[32];            /* general.architecture */
    char tokenizer_model[32]; /* tokenizer.ggml.model, "" when none */
    int n_tensors;            /* written */
    int tensors_of_type[CLV_GGML_TYPE_END]; /* source types */
    uint64_t bytes_in;        /* source tensor bytes */
    uint64_t bytes_out;       /* model.safetensors size */
    bool tokenizer_only;
    double seconds;
} clv_gguf_import_report;

void clv_gguf_import_defaults(clv_gguf_import_opts *o);
/* Convert `path` into o->out_dir, which must not exist (or be an empty folder). */
int clv_gguf_import(const char *path, const clv_gguf_import_opts *o, clv_gguf_import_report *rep, clv_status *st);

/* The pieces, for tests. Each writes one file into `dir`. */
int clv_gguf_write_tokenizer(const clv_gguf *g, const char *dir, clv_status *st);
int clv_gguf_write_tokenizer_config(const clv_gguf *g, const char *dir, int64_t max_len, clv_status *st);

/* llama.cpp stores q_proj/k_proj rows of llama-family models interleaved per
 * head (rotary pairs adjacent); Hugging Face keeps the two halves apart. Row
 * `hf_row` of the Hugging Face matrix is row clv_gguf_unpermute_row(...) of the
 * GGUF one, for heads of `rows_per_head` rows (even). */
static inline int64_t clv_gguf_unpermute_row(int64_t hf_row, int64_t rows_per_head) {
    int64_t h = hf_row / rows_per_head, i = hf_row % rows_per_head, half = rows_per_head / 2;
    return h * rows_per_head + (i % half) * 2 + i / half;
}

#endif
