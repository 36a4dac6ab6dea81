/* libFuzzer target: the GGUF reader on arbitrary bytes, then every accessor
 * and dequantiser on what it accepted. */
#include <stdint.h>
#include <stdlib.h>

#include "format/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    clv_gguf g;
    clv_status st;
    if (clv_gguf_parse(&g, data, size, "fuzz.gguf", &st) != 0) return 0;
    for (int64_t i = 0; i < g.n_kv; i++) {
        const clv_gguf_kv *kv = &g.kv[i];
        int64_t v;
        double f;
        bool b;
        char *s = NULL;
        clv_gguf_get_int(&g, kv->key, INT64_MIN, INT64_MAX, &v, &st);
        clv_gguf_get_float(&g, kv->key, &f, &st);
        clv_gguf_get_bool(&g, kv->key, &b, &st);
        if (clv_gguf_get_str(&g, kv->key, &s, &st) == 0) free(s);
        const clv_gguf_value *a;
        if (clv_gguf_get_array(&g, kv->key, CLV_GGUF_I64, &a, &st) == 0)
            for (uint64_t k = 0; k < a->len && k < 64; k++) (void)clv_gguf_arr_int(a, k);
        if (clv_gguf_get_array(&g, kv->key, CLV_GGUF_F64, &a, &st) == 0)
            for (uint64_t k = 0; k < a->len && k < 64; k++) (void)clv_gguf_arr_float(a, k);
        if (kv->v.type == CLV_GGUF_ARRAY && kv->v.elem == CLV_GGUF_STRING)
            for (uint64_t k = 0; k < kv->v.len; k++)
                if (kv->v.strs[k] < (const char *)data || kv->v.strs[k] + kv->v.str_lens[k] > (const char *)data + size) abort();
    }
    float buf[4096];
    for (int64_t i = 0; i < g.n_tensors; i++) {
        const clv_gguf_tensor *t = &g.tensors[i];
        /* every accepted tensor lies inside the input */
        if (t->data < data || t->size > size || t->data + t->size > data + size) abort();
        uint32_t blk, bytes;
        if (!clv_ggml_type_info(t->type, &blk, &bytes)) abort();
        /* dequantise the first row (or as much of it as fits in buf) */
        int64_t n = t->ne[0] < 4096 ? t->ne[0] : 4096 / blk * blk;
        if (n > 0 && clv_gguf_numel(t) >= n && clv_ggml_can_dequant(t->type)) clv_ggml_dequant(t->type, t->data, buf, n);
    }
    clv_gguf_close(&g);
    return 0;
}
