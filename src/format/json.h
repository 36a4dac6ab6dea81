/* JSON written the way Python's json.dumps(indent=2) writes it, which is what
 * transformers' save_pretrained produces: so that files cleave writes
 * (config.json, index files) are byte-identical to transformers' own. */
#ifndef CLV_JSON_H
#define CLV_JSON_H

#include <cjson/cJSON.h>

/* Add a float in Python's repr form (4.0 stays "4.0", 1e-06 stays "1e-06"). */
void clv_json_add_float(cJSON *obj, const char *key, double v);
/* indent=2 text, no trailing newline; caller frees. */
char *clv_json_print_py(const cJSON *v);

#endif
