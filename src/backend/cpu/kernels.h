/* CPU compute kernels, one implementation per instruction set, chosen at run
 * time. Each computes a slice of the output so that the backend can spread
 * the work over its threads. */
#ifndef CLV_CPU_KERNELS_H
#define CLV_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "../backend.h"

typedef struct clv_cpu_kernels {
    const char *isa;
    /* y[t][n] = sum_k x[t][k] * w[n][k], for t < T and n0 <= n < n1.
     * y has row stride ldy; w is [N][K] in the kernel's dtype. */
    void (*mm_f32)(float *y, int ldy, const float *x, const float *w, int T, int K, int n0, int n1);
    void (*mm_bf16)(float *y, int ldy, const float *x, const uint16_t *w, int T, int K, int n0, int n1);
    void (*mm_f16)(float *y, int ldy, const float *x, const uint16_t *w, int T, int K, int n0, int n1);
    float (*dot)(const float *a, const float *b, int n);
    void (*axpy)(float *y, float a, const float *x, int n); /* y += a*x */
    void (*scale)(float *y, float a, int n);                 /* y *= a */
} clv_cpu_kernels;

const clv_cpu_kernels *clv_cpu_kernels_get(void);
extern const clv_cpu_kernels clv_kernels_scalar, clv_kernels_avx2, clv_kernels_avx512;

#endif
