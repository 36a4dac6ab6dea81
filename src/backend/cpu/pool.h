/* A persistent pool of worker threads. clv_pool_run runs fn(ctx, i, n) on all
 * n threads (the caller is thread 0) and returns when every one has finished.
 * Workers spin briefly between jobs, then sleep: decode issues a few hundred
 * jobs per token, so a futex round trip per job would cost more than the work.
 *
 * Inside a job, clv_pool_barrier(p) waits until all n threads have reached it
 * (a spinning sense-reversing barrier: every thread is running the job, so
 * nobody sleeps), which lets one job run several dependent phases — pack the
 * activations, then multiply — without returning to the caller in between. */
#ifndef CLV_POOL_H
#define CLV_POOL_H

typedef void (*clv_task_fn)(void *ctx, int ith, int nth);
typedef struct clv_pool clv_pool;

clv_pool *clv_pool_new(int n_threads, const int *cpus);
void clv_pool_free(clv_pool *p);
int clv_pool_size(const clv_pool *p);
void clv_pool_run(clv_pool *p, clv_task_fn fn, void *ctx);
/* Only from inside a job run by clv_pool_run on this pool, by every thread. */
void clv_pool_barrier(clv_pool *p);

#endif
