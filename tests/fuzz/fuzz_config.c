/* libFuzzer target: config.json and generation_config.json normalisation. */
#include <stdint.h>
#include <stdlib.h>

#include "model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    clv_config c;
    clv_status st;
    if (clv_config_parse(&c, (const char *)data, size, "fuzz.json", &st) == 0) {
        if (c.hidden < 1 || c.n_heads < 1 || c.n_kv_heads < 1 || c.n_heads % c.n_kv_heads || c.head_dim % 2) abort();
        double inv[CLV_MAX_HEAD_DIM];
        if (c.head_dim <= CLV_MAX_HEAD_DIM) clv_rope_inv_freq(&c, inv);
        clv_gen_config g = {0};
        clv_gen_config_parse(&g, &c, (const char *)data, size, "fuzz.json", &st);
    }
    return 0;
}
