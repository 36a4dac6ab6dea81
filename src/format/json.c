#include "json.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/util.h"

/* A float the way Python's repr writes it: the shortest form that reads back
 * to the same double, fixed-point (with ".0" on integral values) between 1e-4
 * and 1e16, exponent form outside, so that 4.0 stays a float in config.json. */
void clv_json_add_float(cJSON *obj, const char *key, double v) {
    char buf[64];
    double a = fabs(v);
    if (v == 0 || (a >= 1e-4 && a < 1e16)) {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(buf, sizeof buf, "%.*f", prec, v);
            if (strtod(buf, NULL) == v) break;
        }
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(buf, sizeof buf, "%.*g", prec, v);
            if (strtod(buf, NULL) == v) break;
        }
    }
    cJSON_AddRawToObject(obj, key, buf);
}

/* Python's json.dumps(indent=2), which save_pretrained uses. */
static void print_py(const cJSON *v, int depth, char **buf, size_t *len, size_t *cap) {
#define PUT(str)                                                          \
    do {                                                                  \
        const char *s_ = (str);                                           \
        size_t n_ = strlen(s_);                                           \
        if (*len + n_ + 1 > *cap) {                                       \
            *cap = (*len + n_ + 1) * 2;                                   \
            *buf = realloc(*buf, *cap);                                   \
            CLV_CHECK(*buf != NULL, "realloc");                           \
        }                                                                 \
        memcpy(*buf + *len, s_, n_ + 1);                                  \
        *len += n_;                                                       \
    } while (0)
    bool obj = cJSON_IsObject(v);
    if (obj || cJSON_IsArray(v)) {
        if (!v->child) {
            PUT(obj ? "{}" : "[]");
            return;
        }
        PUT(obj ? "{\n" : "[\n");
        for (const cJSON *c = v->child; c; c = c->next) {
            for (int i = 0; i <= depth; i++) PUT("  ");
            if (obj) {
                /* keys are escaped like any string ('"', '\\' and control characters) */
                bool plain = true;
                for (const unsigned char *k = (const unsigned char *)c->string; *k && plain; k++)
                    plain = *k >= 0x20 && *k != '"' && *k != '\\';
                if (plain) {
                    PUT("\"");
                    PUT(c->string);
                    PUT("\": ");
                } else {
                    cJSON *ks = cJSON_CreateString(c->string);
                    char *q = ks ? cJSON_PrintUnformatted(ks) : NULL;
                    CLV_CHECK(q != NULL, "cJSON_PrintUnformatted");
                    PUT(q);
                    PUT(": ");
                    free(q);
                    cJSON_Delete(ks);
                }
            }
            print_py(c, depth + 1, buf, len, cap);
            PUT(c->next ? ",\n" : "\n");
        }
        for (int i = 0; i < depth; i++) PUT("  ");
        PUT(obj ? "}" : "]");
        return;
    }
    char *s = cJSON_PrintUnformatted(v);
    CLV_CHECK(s != NULL, "cJSON_PrintUnformatted");
    PUT(s);
    free(s);
#undef PUT
}

char *clv_json_print_py(const cJSON *v) {
    size_t len = 0, cap = 256;
    char *buf = malloc(cap);
    CLV_CHECK(buf != NULL, "malloc");
    buf[0] = 0;
    print_py(v, 0, &buf, &len, &cap);
    return buf;
}

