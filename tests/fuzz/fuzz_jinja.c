/* libFuzzer target: chat-template rendering (lexer, parser, evaluator) with a
 * fixed conversation. Must never crash, hang or leak; errors are fine. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/jinja.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static cJSON *vars;
    if (!vars)
        vars = cJSON_Parse("{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
                           "{\"role\": \"user\", \"content\": \"Hi \\u00e9 \\ud83d\\ude00\"},"
                           "{\"role\": \"assistant\", \"content\": \"<think>x</think>Hello\", \"tool_calls\": "
                           "[{\"function\": {\"name\": \"f\", \"arguments\": {\"a\": 1.5}}}]}],"
                           "\"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\","
                           "\"tools\": null, \"documents\": null}");
    char *out = NULL;
    clv_status st;
    clv_jinja_render((const char *)data, size, vars, &out, NULL, &st);
    free(out);
    return 0;
}
