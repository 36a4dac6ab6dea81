/* --dtype int8: weight matrices quantized at load, one f32 scale per row
 * (clv_quantize_i8_row in util.h has the rule). */
#ifndef CLV_QUANT_H
#define CLV_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "../format/safetensors.h"

/* An int8 matrix as it is held: [rows][cols] int8, then its rows' f32 scales
 * from the first 64-byte boundary at or after clv_i8_scales_at(rows, cols). */
size_t clv_i8_scales_at(int rows, int cols);
size_t clv_i8_bytes(int rows, int cols);

/* q[rows][cols] and scale[rows] from w ([rows][cols] in f32, bf16 or f16),
 * row by row, over up to n_threads threads. full, when not NULL, holds the
 * whole rows ([rows][full_cols] in full_dt) that w's columns are a part of
 * (a tensor-parallel rank's column slice): each row's scale is then the
 * whole row's, so that every rank holds exactly the single-rank values.
 * Returns 0 or CLV_ENOMEM. */
int clv_quantize_rows(int8_t *q, float *scale, const void *w, clv_dtype dt, int rows, int cols, const void *full,
                      clv_dtype full_dt, int full_cols, int n_threads);

#endif
