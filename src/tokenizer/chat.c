/* Chat templates: messages -> prompt text, as transformers' apply_chat_template. */
#include <string.h>

#include "jinja.h"
#include "tok_internal.h"

int clv_tok_apply_chat(const clv_tokenizer *t, const char *tmpl, const clv_chat_msg *msgs, int n_msgs,
                       bool add_generation_prompt, char **out, clv_status *st) {
    *out = NULL;
    if (!tmpl) tmpl = t->chat_template;
    if (!tmpl)
        return clv_fail(st, CLV_EINVAL,
                        "%s: no chat template (tokenizer_config.json has no \"chat_template\" and there is no "
                        "chat_template.jinja)", t->name ? t->name : "tokenizer");
    cJSON *vars = cJSON_CreateObject(), *arr = cJSON_CreateArray();
    if (!vars || !arr) {
        cJSON_Delete(vars);
        cJSON_Delete(arr);
        return clv_fail(st, CLV_ENOMEM, "out of memory");
    }
    cJSON_AddItemToObject(vars, "messages", arr);
    for (int i = 0; i < n_msgs; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", msgs[i].role);
        cJSON_AddStringToObject(m, "content", msgs[i].content);
        cJSON_AddItemToArray(arr, m);
    }
    /* what transformers passes: tools/documents None, the special tokens that are set */
    cJSON_AddNullToObject(vars, "tools");
    cJSON_AddNullToObject(vars, "documents");
    cJSON_AddBoolToObject(vars, "add_generation_prompt", add_generation_prompt);
    if (t->bos_str) cJSON_AddStringToObject(vars, "bos_token", t->bos_str);
    if (t->eos_str) cJSON_AddStringToObject(vars, "eos_token", t->eos_str);
    if (t->unk_str) cJSON_AddStringToObject(vars, "unk_token", t->unk_str);
    if (t->pad_str) cJSON_AddStringToObject(vars, "pad_token", t->pad_str);
    int rc = clv_jinja_render(tmpl, strlen(tmpl), vars, out, NULL, st);
    cJSON_Delete(vars);
    return rc;
}
