#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../util/util.h"

/* Largest header accepted. The reference implementation caps at 100 MB too:
 * a larger header is either corrupt or hostile. */
#define CLV_ST_MAX_HEADER (100u * 1000u * 1000u)

static const struct { const char *name; size_t size; } k_dtypes[CLV_DT_COUNT] = {
    [CLV_DT_F32] = {"F32", 4},   [CLV_DT_F16] = {"F16", 2},       [CLV_DT_BF16] = {"BF16", 2},
    [CLV_DT_F64] = {"F64", 8},   [CLV_DT_I64] = {"I64", 8},       [CLV_DT_I32] = {"I32", 4},
    [CLV_DT_I16] = {"I16", 2},   [CLV_DT_I8] = {"I8", 1},         [CLV_DT_U8] = {"U8", 1},
    [CLV_DT_BOOL] = {"BOOL", 1}, [CLV_DT_F8_E4M3] = {"F8_E4M3", 1}, [CLV_DT_F8_E5M2] = {"F8_E5M2", 1},
    [CLV_DT_U16] = {"U16", 2},   [CLV_DT_U32] = {"U32", 4},       [CLV_DT_U64] = {"U64", 8},
};

const char *clv_dtype_name(clv_dtype dt) { return dt < CLV_DT_COUNT ? k_dtypes[dt].name : "?"; }
size_t clv_dtype_size(clv_dtype dt) { return dt < CLV_DT_COUNT ? k_dtypes[dt].size : 0; }

bool clv_dtype_parse(const char *s, clv_dtype *out) {
    for (int i = 0; i < CLV_DT_COUNT; i++)
        if (strcmp(s, k_dtypes[i].name) == 0) {
            *out = (clv_dtype)i;
            return true;
        }
    return false;
}

int64_t clv_st_numel(const clv_st_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

void clv_st_shape_str(const clv_st_tensor *t, char *buf, size_t cap) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, cap - k, "[");
    for (int i = 0; i < t->ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

void clv_st_tensors_free(clv_st_tensor *t, int n) {
    if (!t) return;
    for (int i = 0; i < n; i++) free(t[i].name);
    free(t);
}

static int cmp_by_name(const void *a, const void *b) {
    return strcmp(((const clv_st_tensor *)a)->name, ((const clv_st_tensor *)b)->name);
}
static int cmp_by_begin(const void *a, const void *b) {
    const clv_st_tensor *x = *(const clv_st_tensor *const *)a, *y = *(const clv_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* A JSON number that is an exact non-negative integer representable in a double. */
static bool json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || floor(d) != d) return false;
    *out = (uint64_t)d;
    return true;
}

int clv_st_parse_header(const uint8_t *buf, size_t len, uint64_t file_size, const char *fname,
                        int file_idx, clv_st_tensor **tensors_out, int *n_out, clv_status *st) {
    *tensors_out = NULL;
    *n_out = 0;
    if (len < 8 || file_size < 8)
        return clv_fail(st, CLV_EFORMAT, "%s: file is %llu bytes, too short for the 8-byte header length",
                        fname, (unsigned long long)file_size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen < 2 || hlen > CLV_ST_MAX_HEADER || hlen > file_size - 8)
        return clv_fail(st, CLV_EFORMAT,
                        "%s: header length %llu is invalid (file is %llu bytes; header must be 2..%u bytes and fit in the file)",
                        fname, (unsigned long long)hlen, (unsigned long long)file_size, CLV_ST_MAX_HEADER);
    if (len < 8 + hlen)
        return clv_fail(st, CLV_EFORMAT, "%s: header truncated (%zu of %llu bytes)", fname, len,
                        (unsigned long long)(8 + hlen));
    const char *json = (const char *)buf + 8;
    if (json[0] != '{')
        return clv_fail(st, CLV_EFORMAT, "%s: header does not start with '{'", fname);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, (size_t)hlen, &end, 0);
    if (!root || !cJSON_IsObject(root)) {
        long at = root ? 0 : (long)(cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - json : -1);
        cJSON_Delete(root);
        return clv_fail(st, CLV_EFORMAT, "%s: header is not a valid JSON object (error near byte %ld)", fname, at);
    }
    for (const char *p = end; p < json + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != 0) {
            cJSON_Delete(root);
            return clv_fail(st, CLV_EFORMAT, "%s: unexpected bytes after the header's JSON object", fname);
        }

    uint64_t data_size = file_size - 8 - hlen;
    int cap = cJSON_GetArraySize(root), n = 0;
    clv_st_tensor *ts = calloc((size_t)(cap > 0 ? cap : 1), sizeof *ts);
    if (!ts) {
        cJSON_Delete(root);
        return clv_fail(st, CLV_ENOMEM, "%s: out of memory reading header", fname);
    }
    int rc = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        const char *name = e->string ? e->string : "";
        if (strcmp(name, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) {
                rc = clv_fail(st, CLV_EFORMAT, "%s: __metadata__ is not an object", fname);
                goto done;
            }
            continue;
        }
        if (!cJSON_IsObject(e)) {
            rc = clv_fail(st, CLV_EFORMAT, "%s: tensor '%s': entry is not an object", fname, name);
            goto done;
        }
        clv_st_tensor *t = &ts[n];
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsString(dt) || !clv_dtype_parse(dt->valuestring, &t->dtype)) {
            rc = clv_fail(st, CLV_EFORMAT, "%s: tensor '%s': dtype %s%s%s is not a safetensors dtype", fname, name,
                          cJSON_IsString(dt) ? "'" : "", cJSON_IsString(dt) ? dt->valuestring : "(missing or not a string)",
                          cJSON_IsString(dt) ? "'" : "");
            goto done;
        }
        if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) > CLV_MAX_DIMS) {
            rc = clv_fail(st, CLV_EFORMAT, "%s: tensor '%s': shape is missing, not an array, or has more than %d dims",
                          fname, name, CLV_MAX_DIMS);
            goto done;
        }
        t->ndim = cJSON_GetArraySize(sh);
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            uint64_t v;
            if (!json_uint(cJSON_GetArrayItem(sh, d), &v) || v > INT64_MAX) {
                rc = clv_fail(st, CLV_EFORMAT, "%s: tensor '%s': shape[%d] is not a non-negative integer", fname, name, d);
                goto done;
            }
            t->shape[d] = (int64_t)v;
            if (!clv_mul_ok(numel, v, &numel)) {
                rc = clv_fail(st, CLV_EFORMAT, "%s: tensor '%s': shape overflows", fname, name);
                goto done;
            }
        }
        uint64_t b, en, bytes;
        if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !json_uint(cJSON_GetArrayItem(off, 0), &b) ||
            !json_uint(cJSON_GetArrayItem(off, 1), &en)) {
            rc = clv_fail(st, CLV_EFORMAT, "%s: tensor '%s': data_offsets must be [begin, end] integers", fname, name);
            goto done;
        }
        if (b > en || en > data_size) {
            rc = clv_fail(st, CLV_EFORMAT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] lie outside the %llu-byte data section",
                          fname, name, (unsigned long long)b, (unsigned long long)en, (unsigned long long)data_size);
            goto done;
        }
        if (!clv_mul_ok(numel, clv_dtype_size(t->dtype), &bytes) || bytes != en - b) {
            char shs[128];
            clv_st_shape_str(t, shs, sizeof shs);
            rc = clv_fail(st, CLV_EFORMAT,
                          "%s: tensor '%s': shape %s x %s (%zu bytes each) needs %llu bytes but data_offsets span %llu",
                          fname, name, shs, clv_dtype_name(t->dtype), clv_dtype_size(t->dtype),
                          (unsigned long long)(numel * clv_dtype_size(t->dtype)), (unsigned long long)(en - b));
            goto done;
        }
        t->name = strdup(name);
        if (!t->name) {
            rc = clv_fail(st, CLV_ENOMEM, "%s: out of memory", fname);
            goto done;
        }
        t->begin = 8 + hlen + b;
        t->end = 8 + hlen + en;
        t->file = file_idx;
        n++;
    }

    /* Duplicate names (JSON allows them; a checkpoint must not). */
    qsort(ts, (size_t)n, sizeof *ts, cmp_by_name);
    for (int i = 1; i < n; i++)
        if (strcmp(ts[i - 1].name, ts[i].name) == 0) {
            rc = clv_fail(st, CLV_EFORMAT, "%s: tensor '%s' appears twice in the header", fname, ts[i].name);
            goto done;
        }

    /* Byte ranges: no overlap, no hole, the whole data section covered. */
    if (n > 0) {
        const clv_st_tensor **by = malloc(sizeof *by * (size_t)n);
        if (!by) {
            rc = clv_fail(st, CLV_ENOMEM, "%s: out of memory", fname);
            goto done;
        }
        for (int i = 0; i < n; i++) by[i] = &ts[i];
        qsort(by, (size_t)n, sizeof *by, cmp_by_begin);
        uint64_t pos = 8 + hlen;
        for (int i = 0; i < n && rc == 0; i++) {
            if (by[i]->begin < pos)
                rc = clv_fail(st, CLV_EFORMAT, "%s: tensors '%s' and '%s' overlap in the data section", fname,
                              by[i - 1]->name, by[i]->name);
            else if (by[i]->begin > pos)
                rc = clv_fail(st, CLV_EFORMAT, "%s: %llu unindexed bytes before tensor '%s' (the data section must have no holes)",
                              fname, (unsigned long long)(by[i]->begin - pos), by[i]->name);
            pos = by[i]->end;
        }
        if (rc == 0 && pos != file_size)
            rc = clv_fail(st, CLV_EFORMAT, "%s: %llu bytes after the last tensor are not indexed by the header", fname,
                          (unsigned long long)(file_size - pos));
        free(by);
    } else if (data_size != 0) {
        rc = clv_fail(st, CLV_EFORMAT, "%s: header lists no tensors but %llu data bytes follow", fname,
                      (unsigned long long)data_size);
    }

done:
    cJSON_Delete(root);
    if (rc) {
        clv_st_tensors_free(ts, n);
        return rc;
    }
    *tensors_out = ts;
    *n_out = n;
    return 0;
}

/* ---- index ---------------------------------------------------------------- */

void clv_st_index_free(clv_st_index *idx) {
    for (int i = 0; i < idx->n_shards; i++) free(idx->shards[i]);
    for (int i = 0; i < idx->n_entries; i++) free(idx->names[i]);
    free(idx->shards);
    free(idx->names);
    free(idx->shard_of);
    memset(idx, 0, sizeof *idx);
}

static bool safe_shard_name(const char *s) {
    return *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

int clv_st_parse_index(const char *text, size_t len, const char *fname, clv_st_index *idx, clv_status *st) {
    memset(idx, 0, sizeof *idx);
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return clv_fail(st, CLV_EFORMAT, "%s: not a valid JSON object", fname);
    }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return clv_fail(st, CLV_EFORMAT, "%s: \"weight_map\" is missing or not an object", fname);
    }
    int cap = cJSON_GetArraySize(wm), rc = 0;
    idx->names = calloc((size_t)cap + 1, sizeof(char *));
    idx->shard_of = calloc((size_t)cap + 1, sizeof(int));
    idx->shards = calloc((size_t)cap + 1, sizeof(char *));
    if (!idx->names || !idx->shard_of || !idx->shards) {
        rc = clv_fail(st, CLV_ENOMEM, "%s: out of memory", fname);
        goto done;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e) || !safe_shard_name(e->valuestring)) {
            rc = clv_fail(st, CLV_EFORMAT, "%s: weight_map[\"%s\"] must be a file name in the model folder", fname,
                          e->string);
            goto done;
        }
        for (int i = 0; i < idx->n_entries; i++)
            if (strcmp(idx->names[i], e->string) == 0) {
                rc = clv_fail(st, CLV_EFORMAT, "%s: tensor '%s' is listed twice in weight_map", fname, e->string);
                goto done;
            }
        int s = 0;
        while (s < idx->n_shards && strcmp(idx->shards[s], e->valuestring) != 0) s++;
        if (s == idx->n_shards) {
            if (!(idx->shards[s] = strdup(e->valuestring))) goto oom;
            idx->n_shards++;
        }
        if (!(idx->names[idx->n_entries] = strdup(e->string))) goto oom;
        idx->shard_of[idx->n_entries++] = s;
    }
    if (idx->n_entries == 0) rc = clv_fail(st, CLV_EFORMAT, "%s: weight_map is empty", fname);
    goto done;
oom:
    rc = clv_fail(st, CLV_ENOMEM, "%s: out of memory", fname);
done:
    cJSON_Delete(root);
    if (rc) clv_st_index_free(idx);
    return rc;
}

/* ---- opening a folder ------------------------------------------------------ */

static int map_file(clv_st_file *f, const char *path, clv_status *st) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    if (!(f->path = strdup(path))) return clv_fail(st, CLV_ENOMEM, "out of memory");
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) return clv_fail(st, CLV_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(f->fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        return clv_fail(st, CLV_EIO, "%s: not a regular file", path);
    f->size = (size_t)sb.st_size;
    if (f->size < 8)
        return clv_fail(st, CLV_EFORMAT, "%s: file is %zu bytes, too short for the 8-byte header length", path, f->size);
    void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, f->fd, 0);
    if (m == MAP_FAILED) return clv_fail(st, CLV_EIO, "%s: mmap failed: %s", path, strerror(errno));
    f->map = m;
    return 0;
}

static int add_file(clv_st_set *set, const char *path, clv_status *st) {
    clv_st_file *nf = realloc(set->files, sizeof *nf * (size_t)(set->n_files + 1));
    if (!nf) return clv_fail(st, CLV_ENOMEM, "out of memory");
    set->files = nf;
    clv_st_file *f = &set->files[set->n_files++];
    int rc = map_file(f, path, st);
    if (rc) return rc;
    clv_st_tensor *ts;
    int n;
    rc = clv_st_parse_header(f->map, f->size, f->size, path, set->n_files - 1, &ts, &n, st);
    if (rc) return rc;
    clv_st_tensor *all = realloc(set->tensors, sizeof *all * (size_t)(set->n_tensors + n + 1));
    if (!all) {
        clv_st_tensors_free(ts, n);
        return clv_fail(st, CLV_ENOMEM, "out of memory");
    }
    memcpy(all + set->n_tensors, ts, sizeof *ts * (size_t)n);
    free(ts); /* names now owned by set */
    set->tensors = all;
    set->n_tensors += n;
    return 0;
}

int clv_st_open_dir(clv_st_set *set, const char *dir, clv_status *st) {
    memset(set, 0, sizeof *set);
    char path[4096];
    int rc;
    clv_st_index idx = {0};
    if ((rc = clv_path_join(path, sizeof path, dir, "model.safetensors.index.json", st))) return rc;
    if (clv_file_exists(path)) {
        char *text;
        size_t len;
        if ((rc = clv_read_file(path, &text, &len, st))) return rc;
        rc = clv_st_parse_index(text, len, path, &idx, st);
        free(text);
        if (rc) return rc;
        for (int s = 0; s < idx.n_shards && !rc; s++) {
            char sp[4096];
            if ((rc = clv_path_join(sp, sizeof sp, dir, idx.shards[s], st))) break;
            if (!clv_file_exists(sp)) {
                rc = clv_fail(st, CLV_EIO, "%s/model.safetensors.index.json names shard '%s', which does not exist in %s",
                              dir, idx.shards[s], dir);
                break;
            }
            rc = add_file(set, sp, st);
        }
    } else {
        if ((rc = clv_path_join(path, sizeof path, dir, "model.safetensors", st))) return rc;
        if (!clv_file_exists(path))
            return clv_fail(st, CLV_EIO, "%s: no model.safetensors or model.safetensors.index.json", dir);
        rc = add_file(set, path, st);
    }
    if (rc) goto fail;

    qsort(set->tensors, (size_t)set->n_tensors, sizeof *set->tensors, cmp_by_name);
    for (int i = 1; i < set->n_tensors; i++)
        if (strcmp(set->tensors[i - 1].name, set->tensors[i].name) == 0) {
            rc = clv_fail(st, CLV_EFORMAT, "tensor '%s' appears in both %s and %s", set->tensors[i].name,
                          set->files[set->tensors[i - 1].file].path, set->files[set->tensors[i].file].path);
            goto fail;
        }
    if (idx.n_shards) {
        /* The index and the shards must agree exactly. */
        for (int i = 0; i < idx.n_entries; i++) {
            const clv_st_tensor *t = clv_st_find(set, idx.names[i]);
            if (!t || t->file != idx.shard_of[i]) {
                rc = clv_fail(st, CLV_EFORMAT, "model.safetensors.index.json says tensor '%s' is in %s, but that shard does not contain it",
                              idx.names[i], idx.shards[idx.shard_of[i]]);
                goto fail;
            }
        }
        if (set->n_tensors != idx.n_entries)
            for (int i = 0; i < set->n_tensors; i++) {
                bool listed = false;
                for (int j = 0; j < idx.n_entries && !listed; j++) listed = strcmp(idx.names[j], set->tensors[i].name) == 0;
                if (!listed) {
                    rc = clv_fail(st, CLV_EFORMAT, "%s: tensor '%s' is not listed in model.safetensors.index.json",
                                  set->files[set->tensors[i].file].path, set->tensors[i].name);
                    goto fail;
                }
            }
    }
    clv_st_index_free(&idx);
    return 0;
fail:
    clv_st_index_free(&idx);
    clv_st_close(set);
    return rc;
}

void clv_st_close(clv_st_set *set) {
    for (int i = 0; i < set->n_files; i++) {
        clv_st_file *f = &set->files[i];
        if (f->map) munmap((void *)f->map, f->size);
        if (f->fd >= 0) close(f->fd);
        free(f->path);
    }
    free(set->files);
    clv_st_tensors_free(set->tensors, set->n_tensors);
    memset(set, 0, sizeof *set);
}

const clv_st_tensor *clv_st_find(const clv_st_set *set, const char *name) {
    int lo = 0, hi = set->n_tensors - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(set->tensors[mid].name, name);
        if (c == 0) return &set->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

const void *clv_st_data(const clv_st_set *set, const clv_st_tensor *t) {
    return set->files[t->file].map + t->begin;
}

/* ---- writing -------------------------------------------------------------- */

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static uint64_t wtensor_bytes(const clv_st_wtensor *t) {
    uint64_t bytes = clv_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++) bytes *= (uint64_t)t->shape[d];
    return bytes;
}

typedef struct { const clv_st_wtensor *t; int i; } wsorted;
static int cmp_wsorted(const void *a, const void *b) {
    return strcmp(((const wsorted *)a)->t->name, ((const wsorted *)b)->t->name);
}

int clv_st_write_cb(const char *path, const clv_st_wtensor *in, int n, const char *metadata_format, clv_st_fill_fn fill,
                    void *ctx, clv_status *st) {
    wsorted *t = malloc(sizeof *t * (size_t)(n ? n : 1));
    if (!t) return clv_fail(st, CLV_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) t[i] = (wsorted){&in[i], i};
    qsort(t, (size_t)n, sizeof *t, cmp_wsorted);
    cJSON *root = cJSON_CreateObject();
    if (metadata_format) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        cJSON_AddStringToObject(meta, "format", metadata_format);
    }
    uint64_t off = 0, biggest = 0;
    for (int i = 0; i < n; i++) {
        uint64_t bytes = wtensor_bytes(t[i].t);
        if (bytes > biggest) biggest = bytes;
        cJSON *e = cJSON_AddObjectToObject(root, t[i].t->name);
        cJSON_AddStringToObject(e, "dtype", clv_dtype_name(t[i].t->dtype));
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t[i].t->ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t[i].t->shape[d]));
        cJSON *o = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)(off + bytes)));
        off += bytes;
    }
    char *hdr = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    void *scratch = fill && n ? malloc(biggest ? (size_t)biggest : 1) : NULL;
    if (!hdr || (fill && n && !scratch)) {
        free(hdr);
        free(scratch);
        free(t);
        return clv_fail(st, CLV_ENOMEM, "%s: out of memory", path);
    }
    size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = 0;
    if (fd < 0) {
        rc = clv_fail(st, CLV_EIO, "%s: cannot create: %s", path, strerror(errno));
        goto out;
    }
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    bool ok = write_all(fd, lenb, 8) == 0 && write_all(fd, hdr, hl) == 0;
    for (size_t i = hl; ok && i < padded; i++) ok = write_all(fd, " ", 1) == 0;
    for (int i = 0; ok && i < n; i++) {
        uint64_t bytes = wtensor_bytes(t[i].t);
        const void *src = t[i].t->data;
        if (fill) {
            if ((rc = fill(ctx, t[i].i, scratch, (size_t)bytes, st))) {
                close(fd);
                unlink(tmp);
                goto out;
            }
            src = scratch;
        }
        ok = write_all(fd, src, bytes) == 0;
    }
    int err = errno;
    if (close(fd) != 0) ok = false;
    if (!ok || rename(tmp, path) != 0) {
        if (ok) err = errno;
        unlink(tmp);
        rc = clv_fail(st, CLV_EIO, "%s: write failed: %s", path, strerror(err));
    }
out:
    free(scratch);
    free(hdr);
    free(t);
    return rc;
}

int clv_st_write(const char *path, const clv_st_wtensor *in, int n, const char *metadata_format, clv_status *st) {
    return clv_st_write_cb(path, in, n, metadata_format, NULL, NULL, st);
}
