/* The --dtype int8 quantizer (clv_quantize_i8_row): one scale per row,
 * scale = max|w| / 127, q = round(w / scale) in [-127, 127].
 *   - every element comes back within half a step: |w - q * scale| <= scale / 2
 *     (plus the f32 rounding of w / scale: 2^-24 relative, checked as 1e-6 * scale);
 *   - the largest |w| maps to +-127 and scale is max|w| / 127 exactly as f32 computes it;
 *   - a row of zeros gets scale 0 and q = 0 (no division by zero, no NaN);
 *   - rows of one element, of tiny and of huge magnitudes;
 *   - a column slice quantized with its whole row's max equals that part of the row. */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "util/util.h"

static uint64_t g_rng = 0x2545f4914f6cdd1dull;
static double urand(void) { /* [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / (double)(1ull << 52) - 1.0;
}

static double worst_rel; /* max |w - q s| / s over all rows */

static void check_row(const float *w, int n, const char *what) {
    int8_t *q = malloc((size_t)n);
    const float s = clv_quantize_i8_row(q, w, n, clv_absmax(w, n));
    float amax = 0.0f;
    for (int i = 0; i < n; i++) amax = fabsf(w[i]) > amax ? fabsf(w[i]) : amax;
    CHECK(s == amax / 127.0f, "%s: scale %.9g, want max|w|/127 = %.9g", what, s, amax / 127.0f);
    int bad = 0, big = 0, first_bad = -1;
    for (int i = 0; i < n; i++) {
        const double e = fabs((double)w[i] - (double)q[i] * s);
        if (q[i] == -128 || (s == 0 ? q[i] != 0 : e > 0.5 * s + 1e-6 * s)) {
            if (first_bad < 0) first_bad = i;
            bad++;
        }
        if (s > 0 && e / s > worst_rel) worst_rel = e / s;
        big |= q[i] == 127 || q[i] == -127;
    }
    CHECK(bad == 0, "%s: %d of %d elements off by more than scale/2 (first at %d: w %.9g q %d scale %.9g)", what, bad,
          n, first_bad, first_bad >= 0 ? w[first_bad] : 0.0, first_bad >= 0 ? q[first_bad] : 0, s);
    CHECK(amax == 0 || big, "%s: no element reached +-127", what);
    free(q);
}

int main(void) {
    static const int lens[] = {1, 2, 7, 31, 32, 33, 100, 2048, 5633};
    static const double mags[] = {1e-30, 1e-6, 0.02, 1.0, 3e4, 1e30};
    char what[96];
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (size_t mi = 0; mi < sizeof mags / sizeof mags[0]; mi++)
            for (int rep = 0; rep < 3; rep++) {
                const int n = lens[li];
                float *w = malloc(sizeof(float) * (size_t)n);
                for (int i = 0; i < n; i++) w[i] = (float)(urand() * mags[mi] * (rep == 2 && i % 5 ? 1e-3 : 1.0));
                if (rep == 1) w[n / 2] = (float)(-2.0 * mags[mi]); /* a negative maximum */
                snprintf(what, sizeof what, "n=%d mag=%g rep=%d", n, mags[mi], rep);
                check_row(w, n, what);
                free(w);
            }
    /* zero rows, and a zero row with negative zeros */
    float z[40] = {0};
    int8_t q[40];
    for (int i = 0; i < 40; i++) q[i] = 99;
    const float s0 = clv_quantize_i8_row(q, z, 40, clv_absmax(z, 40));
    int nz = 0;
    for (int i = 0; i < 40; i++) nz += q[i] != 0;
    CHECK(s0 == 0.0f && nz == 0, "zero row: scale %g, %d non-zero values", s0, nz);
    for (int i = 0; i < 40; i++) z[i] = -0.0f, q[i] = 99;
    const float s1 = clv_quantize_i8_row(q, z, 40, clv_absmax(z, 40));
    nz = 0;
    for (int i = 0; i < 40; i++) nz += q[i] != 0;
    CHECK(s1 == 0.0f && nz == 0, "row of -0: scale %g, %d non-zero values", s1, nz);
    /* exact multiples of the step come back exactly */
    float e[255];
    for (int i = 0; i < 255; i++) e[i] = (float)(i - 127) * 0.125f;
    int8_t qe[255];
    const float se = clv_quantize_i8_row(qe, e, 255, clv_absmax(e, 255));
    int off = 0;
    for (int i = 0; i < 255; i++) off += qe[i] != i - 127;
    CHECK(se == 0.125f && off == 0, "steps of 0.125: scale %g, %d values not i - 127", se, off);
    /* a column slice quantized with its whole row's amax (a tensor-parallel rank's
     * part of o_proj / down_proj) gets exactly the whole row's scale and values */
    {
        enum { N = 301, C0 = 77, NC = 150 };
        float w[N];
        int8_t qa[N], qs[NC];
        for (int i = 0; i < N; i++) w[i] = (float)urand();
        w[20] = 1.5f; /* the row's maximum lies outside the slice */
        const float sa = clv_quantize_i8_row(qa, w, N, clv_absmax(w, N));
        const float ss = clv_quantize_i8_row(qs, w + C0, NC, clv_absmax(w, N));
        int diff = 0;
        for (int i = 0; i < NC; i++) diff += qs[i] != qa[C0 + i];
        CHECK(sa == ss && diff == 0, "column slice: scale %.9g vs %.9g, %d values differ", ss, sa, diff);
    }
    printf("  worst round-trip error %.6f scales (bound 0.5)\n", worst_rel);
    return check_report("test_quant");
}
