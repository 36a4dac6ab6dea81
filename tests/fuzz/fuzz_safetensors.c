/* libFuzzer target: the safetensors header parser on arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>

#include "format/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    clv_st_tensor *t = NULL;
    int n = 0;
    clv_status st;
    if (clv_st_parse_header(data, size, size, "fuzz.safetensors", 0, &t, &n, &st) == 0) {
        /* every accepted range lies inside the input */
        for (int i = 0; i < n; i++)
            if (t[i].begin > t[i].end || t[i].end > size) abort();
        clv_st_tensors_free(t, n);
    }
    return 0;
}
