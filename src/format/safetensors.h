/* format — safetensors reading (strict, bounds-checked, fuzzable) and writing.
 *
 * A checkpoint is a set of one or more files: model.safetensors, or shards
 * listed in model.safetensors.index.json. Files are memory-mapped read-only;
 * tensors are used in place. Never computes. */
#ifndef CLV_SAFETENSORS_H
#define CLV_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cleave.h"

typedef enum clv_dtype {
    CLV_DT_F32, CLV_DT_F16, CLV_DT_BF16, CLV_DT_F64,
    CLV_DT_I64, CLV_DT_I32, CLV_DT_I16, CLV_DT_I8, CLV_DT_U8, CLV_DT_BOOL,
    CLV_DT_F8_E4M3, CLV_DT_F8_E5M2, CLV_DT_U16, CLV_DT_U32, CLV_DT_U64,
    CLV_DT_COUNT
} clv_dtype;

const char *clv_dtype_name(clv_dtype dt);   /* safetensors spelling: "BF16" */
size_t clv_dtype_size(clv_dtype dt);
bool clv_dtype_parse(const char *s, clv_dtype *out);

#define CLV_MAX_DIMS 8

typedef struct clv_st_tensor {
    char *name;
    clv_dtype dtype;
    int ndim;
    int64_t shape[CLV_MAX_DIMS];
    uint64_t begin, end; /* absolute byte range in its file */
    int file;            /* index into clv_st_set.files */
} clv_st_tensor;

typedef struct clv_st_file {
    char *path;
    int fd;
    const uint8_t *map;
    size_t size;
} clv_st_file;

typedef struct clv_st_set {
    int n_files;
    clv_st_file *files;
    int n_tensors;
    clv_st_tensor *tensors; /* sorted by name */
} clv_st_set;

/* Parse one file's header from its first `len` bytes, given the whole file size.
 * Pure function of its input (the fuzz target). On success *tensors holds
 * n entries (offsets absolute, file index = file_idx), caller frees with
 * clv_st_tensors_free. */
int clv_st_parse_header(const uint8_t *buf, size_t len, uint64_t file_size, const char *fname,
                        int file_idx, clv_st_tensor **tensors, int *n, clv_status *st);
void clv_st_tensors_free(clv_st_tensor *t, int n);

/* Parse model.safetensors.index.json text: fills shard file names (unique,
 * in first-seen order) and the tensor -> shard map. Pure (fuzzable). */
typedef struct clv_st_index {
    int n_shards;
    char **shards;
    int n_entries;
    char **names;
    int *shard_of;
} clv_st_index;
int clv_st_parse_index(const char *text, size_t len, const char *fname, clv_st_index *idx,
                       clv_status *st);
void clv_st_index_free(clv_st_index *idx);

/* Open a model folder's weights. */
int clv_st_open_dir(clv_st_set *set, const char *dir, clv_status *st);
void clv_st_close(clv_st_set *set);
const clv_st_tensor *clv_st_find(const clv_st_set *set, const char *name);
const void *clv_st_data(const clv_st_set *set, const clv_st_tensor *t);
int64_t clv_st_numel(const clv_st_tensor *t);
/* "[2048, 32000]" */
void clv_st_shape_str(const clv_st_tensor *t, char *buf, size_t cap);

/* Writing. The writer takes a list of named tensors and emits one file with
 * a header in the layout `safetensors` writes (sorted names, 8-byte aligned). */
typedef struct clv_st_wtensor {
    const char *name;
    clv_dtype dtype;
    int ndim;
    int64_t shape[CLV_MAX_DIMS];
    const void *data; /* numel * dtype size bytes */
} clv_st_wtensor;
int clv_st_write(const char *path, const clv_st_wtensor *t, int n, const char *metadata_format,
                 clv_status *st);
/* The same, producing each tensor's bytes only when it is written: `data` is
 * ignored and fill(ctx, i, buf, bytes, st) writes tensor t[i]'s bytes into a
 * scratch buffer (as large as the largest tensor), so a converter never holds
 * more than one tensor in memory. A non-zero return from fill aborts the
 * write (no file is left behind) and is returned. */
typedef int (*clv_st_fill_fn)(void *ctx, int i, void *buf, size_t bytes, clv_status *st);
int clv_st_write_cb(const char *path, const clv_st_wtensor *t, int n, const char *metadata_format,
                    clv_st_fill_fn fill, void *ctx, clv_status *st);

#endif
