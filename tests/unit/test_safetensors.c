/* The safetensors reader rejects every malformed header with a message naming
 * the file and the tensor, and reads well-formed ones exactly. */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "format/safetensors.h"
#include "util/util.h"

/* Build a file image: 8-byte length + header + `data_len` zero bytes. */
static uint8_t *image(const char *hdr, size_t data_len, size_t *len) {
    size_t h = strlen(hdr);
    *len = 8 + h + data_len;
    uint8_t *b = calloc(1, *len);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(b + 8, hdr, h);
    return b;
}

static int parse(const char *hdr, size_t data_len, clv_status *st, clv_st_tensor **t, int *n) {
    size_t len;
    uint8_t *b = image(hdr, data_len, &len);
    int rc = clv_st_parse_header(b, len, len, "x.safetensors", 0, t, n, st);
    free(b);
    return rc;
}

static void expect_err(const char *hdr, size_t data_len, const char *needle) {
    clv_status st = {0};
    clv_st_tensor *t = NULL;
    int n = 0;
    int rc = parse(hdr, data_len, &st, &t, &n);
    CHECK_ERR(rc, st, needle);
    CHECK(rc == 0 || strstr(st.msg, "x.safetensors") != NULL, "message does not name the file: %s", st.msg);
    if (rc == 0) clv_st_tensors_free(t, n);
}

static void test_good(void) {
    clv_status st = {0};
    clv_st_tensor *t;
    int n;
    int rc = parse("{\"__metadata__\":{\"format\":\"pt\"},\"b\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[16,28]},"
                   "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}  ",
                   28, &st, &t, &n);
    CHECK(rc == 0, "good header rejected: %s", st.msg);
    if (rc) return;
    CHECK(n == 2, "n=%d", n);
    CHECK(strcmp(t[0].name, "a") == 0 && t[0].dtype == CLV_DT_F32 && t[0].ndim == 1 && t[0].shape[0] == 4, "a");
    CHECK(strcmp(t[1].name, "b") == 0 && t[1].dtype == CLV_DT_BF16 && t[1].shape[1] == 3, "b");
    size_t hl = strlen("{\"__metadata__\":{\"format\":\"pt\"},\"b\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[16,28]},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}  ");
    CHECK(t[0].begin == 8 + hl && t[1].end == 8 + hl + 28, "absolute offsets");
    clv_st_tensors_free(t, n);
    /* a scalar (shape []) is one element */
    rc = parse("{\"s\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[0,2]}}", 2, &st, &t, &n);
    CHECK(rc == 0 && n == 1, "scalar: %s", st.msg);
    if (!rc) clv_st_tensors_free(t, n);
}

static void test_header_length(void) {
    clv_status st = {0};
    clv_st_tensor *t;
    int n;
    uint8_t small[4] = {0};
    CHECK_ERR(clv_st_parse_header(small, 4, 4, "x.safetensors", 0, &t, &n, &st), st, "too short");
    uint8_t b[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'};
    CHECK_ERR(clv_st_parse_header(b, 16, 16, "x.safetensors", 0, &t, &n, &st), st, "header length");
    uint8_t c[16] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    CHECK_ERR(clv_st_parse_header(c, 16, 16, "x.safetensors", 0, &t, &n, &st), st, "header length");
    uint8_t d[16] = {1, 0, 0, 0, 0, 0, 0, 0, '{'};
    CHECK_ERR(clv_st_parse_header(d, 16, 16, "x.safetensors", 0, &t, &n, &st), st, "header length");
}

static void test_bad_headers(void) {
    expect_err("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]", 4, "not a valid JSON");
    expect_err("[1,2,3]", 0, "does not start with '{'");
    expect_err("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x", 4, "after the header");
    expect_err("{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'Q4' is not a safetensors dtype");
    expect_err("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a': dtype");
    expect_err("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    expect_err("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    expect_err("{\"a\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4, "shape is missing");
    expect_err("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
               "overflows");
    expect_err("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "tensor 'a': shape [2] x F32");
    expect_err("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", 4, "outside the 4-byte data section");
    expect_err("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "outside");
    expect_err("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "data_offsets must be");
    expect_err("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}",
               8, "overlap");
    expect_err("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "unindexed bytes before tensor 'a'");
    expect_err("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 12, "after the last tensor");
    expect_err("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               8, "tensor 'a' appears twice");
    expect_err("{\"__metadata__\":[1]}", 0, "__metadata__");
    expect_err("{\"a\":5}", 0, "entry is not an object");
}

static void test_index(void) {
    clv_status st = {0};
    clv_st_index idx;
    const char *good = "{\"metadata\":{},\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\",\"c\":\"s1.safetensors\"}}";
    int rc = clv_st_parse_index(good, strlen(good), "i.json", &idx, &st);
    CHECK(rc == 0 && idx.n_shards == 2 && idx.n_entries == 3 && idx.shard_of[2] == 0, "good index: %s", st.msg);
    if (!rc) clv_st_index_free(&idx);
    const char *bad[][2] = {
        {"{\"weight_map\":{\"a\":\"../x.safetensors\"}}", "must be a file name"},
        {"{\"weight_map\":{\"a\":5}}", "must be a file name"},
        {"{\"metadata\":{}}", "weight_map"},
        {"{\"weight_map\":{}}", "empty"},
        {"{\"weight_map\":{\"a\":\"s\",\"a\":\"s\"}}", "listed twice"},
        {"not json", "not a valid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rc = clv_st_parse_index(bad[i][0], strlen(bad[i][0]), "i.json", &idx, &st);
        CHECK_ERR(rc, st, bad[i][1]);
        if (!rc) clv_st_index_free(&idx);
    }
}

static void test_roundtrip(void) {
    char dir[] = "/tmp/clv_st_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    float a[3] = {1, 2, 3};
    uint16_t b[2] = {clv_f32_to_bf16(0.5f), clv_f32_to_bf16(-2.0f)};
    clv_st_wtensor w[2] = {{"z", CLV_DT_F32, 1, {3}, a}, {"y", CLV_DT_BF16, 2, {1, 2}, b}};
    clv_status st = {0};
    CHECK(clv_st_write(path, w, 2, "pt", &st) == 0, "write: %s", st.msg);
    clv_st_set set;
    int rc = clv_st_open_dir(&set, dir, &st);
    CHECK(rc == 0, "open: %s", st.msg);
    if (!rc) {
        const clv_st_tensor *tz = clv_st_find(&set, "z"), *ty = clv_st_find(&set, "y");
        CHECK(tz && ty, "find");
        if (tz && ty) {
            CHECK(memcmp(clv_st_data(&set, tz), a, sizeof a) == 0, "z data");
            CHECK(clv_bf16_to_f32(((const uint16_t *)clv_st_data(&set, ty))[1]) == -2.0f, "y data");
        }
        CHECK(clv_st_find(&set, "missing") == NULL, "find missing");
        clv_st_close(&set);
    }
    unlink(path);
    rmdir(dir);
    CHECK_ERR(clv_st_open_dir(&set, "/nonexistent-dir", &st), st, "no model.safetensors");
}

int main(void) {
    test_good();
    test_header_length();
    test_bad_headers();
    test_index();
    test_roundtrip();
    return check_report("test_safetensors");
}
