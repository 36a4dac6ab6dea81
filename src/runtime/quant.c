/* --dtype int8 at load: rows split over threads (a 1.1B model is ~1e9 f32
 * divisions; one thread takes seconds). */
#include <pthread.h>
#include <string.h>

#include "../util/util.h"
#include "quant.h"

size_t clv_i8_scales_at(int rows, int cols) { return ((size_t)rows * (size_t)cols + 63) & ~(size_t)63; }
size_t clv_i8_bytes(int rows, int cols) { return clv_i8_scales_at(rows, cols) + sizeof(float) * (size_t)rows; }

static void row_f32(float *out, const void *src, clv_dtype dt, int n) {
    if (dt == CLV_DT_F32) memcpy(out, src, sizeof(float) * (size_t)n);
    else if (dt == CLV_DT_BF16)
        for (int i = 0; i < n; i++) out[i] = clv_bf16_to_f32(((const uint16_t *)src)[i]);
    else
        for (int i = 0; i < n; i++) out[i] = clv_f16_to_f32(((const uint16_t *)src)[i]);
}

typedef struct {
    int8_t *q;
    float *scale;
    const uint8_t *w, *full;
    clv_dtype dt, full_dt;
    int cols, full_cols, r0, r1, rc;
} qjob;

static void *qjob_run(void *arg) {
    qjob *j = arg;
    const int n = j->full && j->full_cols > j->cols ? j->full_cols : j->cols;
    float *row = malloc(sizeof(float) * (size_t)n);
    if (!row) {
        j->rc = CLV_ENOMEM;
        return NULL;
    }
    const size_t rb = (size_t)j->cols * clv_dtype_size(j->dt);
    const size_t fb = j->full ? (size_t)j->full_cols * clv_dtype_size(j->full_dt) : 0;
    for (int r = j->r0; r < j->r1; r++) {
        float amax = 0.0f;
        if (j->full) {
            row_f32(row, j->full + (size_t)r * fb, j->full_dt, j->full_cols);
            amax = clv_absmax(row, j->full_cols);
        }
        row_f32(row, j->w + (size_t)r * rb, j->dt, j->cols);
        if (!j->full) amax = clv_absmax(row, j->cols);
        j->scale[r] = clv_quantize_i8_row(j->q + (size_t)r * j->cols, row, j->cols, amax);
    }
    free(row);
    return NULL;
}

int clv_quantize_rows(int8_t *q, float *scale, const void *w, clv_dtype dt, int rows, int cols, const void *full,
                      clv_dtype full_dt, int full_cols, int n_threads) {
    enum { MAX_THREADS = 64 };
    int nt = n_threads < 1 ? 1 : n_threads > MAX_THREADS ? MAX_THREADS : n_threads;
    if (nt > rows / 16) nt = rows / 16 > 0 ? rows / 16 : 1; /* a few rows are not worth a thread */
    qjob jobs[MAX_THREADS];
    pthread_t th[MAX_THREADS];
    bool started[MAX_THREADS] = {false};
    for (int i = 0; i < nt; i++)
        jobs[i] = (qjob){q, scale, w, full, dt, full_dt, cols, full_cols, (int)((int64_t)rows * i / nt),
                         (int)((int64_t)rows * (i + 1) / nt), 0};
    for (int i = 1; i < nt; i++) started[i] = pthread_create(&th[i], NULL, qjob_run, &jobs[i]) == 0;
    qjob_run(&jobs[0]);
    int rc = jobs[0].rc;
    for (int i = 1; i < nt; i++) {
        if (started[i]) pthread_join(th[i], NULL);
        else qjob_run(&jobs[i]); /* no thread could be had: this one does it */
        if (!rc) rc = jobs[i].rc;
    }
    return rc;
}
