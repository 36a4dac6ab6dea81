/* Minimal test harness: CHECK records a failure and goes on; each test file's
 * main returns non-zero when anything failed. */
#ifndef CLV_TEST_CHECK_H
#define CLV_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int g_checks, g_failures;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        g_checks++;                                                        \
        if (!(cond)) {                                                     \
            g_failures++;                                                  \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fputc('\n', stderr);                                           \
        }                                                                  \
    } while (0)

/* The call failed, and its message mentions `needle`. */
#define CHECK_ERR(rc, st, needle)                                                                 \
    CHECK((rc) != 0 && strstr((st).msg, (needle)) != NULL, "rc=%d, want an error mentioning '%s', got '%s'", \
          (int)(rc), (needle), (st).msg)

static inline int check_report(const char *name) {
    printf("%s: %d checks, %d failures\n", name, g_checks, g_failures);
    return g_failures ? 1 : 0;
}

#endif
