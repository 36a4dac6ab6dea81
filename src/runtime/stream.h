/* Streaming of disk-tier weights: a bounded double buffer in RAM and a reader
 * thread that reads the next unit (a layer, or the lm_head) while the current
 * one computes. Reads go around the page cache (O_DIRECT, or a plain read
 * followed by POSIX_FADV_DONTNEED where O_DIRECT is refused), so the model
 * does not quietly become resident. */
#ifndef CLV_STREAM_H
#define CLV_STREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "../format/safetensors.h"
#include "cleave.h"

#define CLV_STREAM_MAX_TENSORS 8 /* a layer has 7 matrices; plan.c budgets page slack for 8 */

typedef struct clv_stream_unit {
    int n;
    const clv_st_tensor *t[CLV_STREAM_MAX_TENSORS];
    uint64_t slot_off[CLV_STREAM_MAX_TENSORS]; /* where tensor i's bytes land in a slot */
    uint64_t bytes;                            /* slot bytes this unit needs (aligned) */
} clv_stream_unit;

typedef struct clv_streamer clv_streamer;

/* Units are streamed in the order given, cyclically (one forward pass walks
 * them in order). */
int clv_streamer_new(clv_streamer **out, const clv_st_set *set, clv_stream_unit *units, int n_units, bool prefetch,
                     clv_status *st);
void clv_streamer_free(clv_streamer *s);
/* Block until unit u is in RAM; returns the base its slot_off are relative to. */
const uint8_t *clv_streamer_acquire(clv_streamer *s, int u, clv_status *st);
/* Done with unit u: its slot may be reused (for the unit two ahead). */
void clv_streamer_release(clv_streamer *s, int u);
uint64_t clv_streamer_bytes_read(const clv_streamer *s);
double clv_streamer_wait_seconds(const clv_streamer *s);

#endif
