/* libFuzzer target: model.safetensors.index.json parsing. */
#include <stdint.h>
#include <stdlib.h>

#include "format/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    clv_st_index idx;
    clv_status st;
    if (clv_st_parse_index((const char *)data, size, "fuzz.index.json", &idx, &st) == 0) {
        for (int i = 0; i < idx.n_entries; i++)
            if (idx.shard_of[i] < 0 || idx.shard_of[i] >= idx.n_shards) abort();
        clv_st_index_free(&idx);
    }
    return 0;
}
