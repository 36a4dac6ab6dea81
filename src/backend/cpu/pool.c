#include "pool.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../../util/util.h"

#define SPIN_ITERS 20000
#define YIELD_AFTER 2000

typedef struct worker {
    struct clv_pool *pool;
    int id;
    pthread_t th;
} worker;

/* The words every thread touches on every job sit on their own cache lines:
 * the caller writes gen and spins on pending, the workers spin on gen and
 * write pending, and none of that should bounce the line holding fn/ctx. */
struct clv_pool {
    int n;
    worker *w;
    clv_task_fn fn;
    void *ctx;
    _Alignas(64) _Atomic unsigned gen; /* bumped once per job; workers wait for a change */
    _Atomic int sleepers;
    _Atomic int stop;
    _Alignas(64) _Atomic int pending;  /* workers still running the current job */
    _Alignas(64) _Atomic unsigned bar_count; /* threads arrived at the current barrier */
    _Alignas(64) _Atomic unsigned bar_gen;   /* bumped when the last one arrives */
};

static void futex_wait(_Atomic unsigned *addr, unsigned val) {
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}
static void futex_wake_all(_Atomic unsigned *addr) {
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
}

/* Waits inside a job are short when every thread has a core; when there are
 * more threads than free cores the one we wait for may not be running, so
 * after a while give the core away instead of burning its time slice. */
static inline void spin_or_yield(int spins) {
    if (spins < YIELD_AFTER) cpu_relax();
    else sched_yield();
}

static void *worker_main(void *arg) {
    worker *w = arg;
    clv_pool *p = w->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
            if (++spins < SPIN_ITERS) {
                cpu_relax();
                continue;
            }
            atomic_fetch_add(&p->sleepers, 1);
            if (atomic_load_explicit(&p->gen, memory_order_acquire) == seen) futex_wait(&p->gen, seen);
            atomic_fetch_sub(&p->sleepers, 1);
            spins = 0;
        }
        seen = g;
        if (atomic_load(&p->stop)) return NULL;
        p->fn(p->ctx, w->id, p->n);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel);
    }
}

clv_pool *clv_pool_new(int n, const int *cpus) {
    if (n < 1) n = 1;
    clv_pool *p = aligned_alloc(64, (sizeof(clv_pool) + 63) & ~(size_t)63);
    if (!p) return NULL;
    memset(p, 0, sizeof *p);
    p->n = n;
    p->w = calloc((size_t)n, sizeof *p->w);
    if (!p->w) {
        free(p);
        return NULL;
    }
    for (int i = 1; i < n; i++) {
        p->w[i].pool = p;
        p->w[i].id = i;
        CLV_CHECK(pthread_create(&p->w[i].th, NULL, worker_main, &p->w[i]) == 0, "pthread_create");
    }
    if (cpus) {
        for (int i = 0; i < n; i++) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(cpus[i], &set);
            pthread_t th = i == 0 ? pthread_self() : p->w[i].th;
            pthread_setaffinity_np(th, sizeof set, &set); /* best effort */
        }
    }
    return p;
}

int clv_pool_size(const clv_pool *p) { return p->n; }

void clv_pool_run(clv_pool *p, clv_task_fn fn, void *ctx) {
    if (p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    if (atomic_load(&p->sleepers)) futex_wake_all(&p->gen);
    fn(ctx, 0, p->n);
    for (int spins = 0; atomic_load_explicit(&p->pending, memory_order_acquire) != 0; spins++) spin_or_yield(spins);
}

void clv_pool_barrier(clv_pool *p) {
    if (p->n == 1) return;
    unsigned g = atomic_load_explicit(&p->bar_gen, memory_order_acquire);
    if (atomic_fetch_add_explicit(&p->bar_count, 1, memory_order_acq_rel) == (unsigned)p->n - 1) {
        /* last to arrive: reset the count before releasing anyone, so that a
         * thread racing ahead into the next barrier counts from zero */
        atomic_store_explicit(&p->bar_count, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->bar_gen, 1, memory_order_release);
    } else {
        for (int spins = 0; atomic_load_explicit(&p->bar_gen, memory_order_acquire) == g; spins++)
            spin_or_yield(spins);
    }
}

void clv_pool_free(clv_pool *p) {
    if (!p) return;
    atomic_store(&p->stop, 1);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    futex_wake_all(&p->gen);
    for (int i = 1; i < p->n; i++) pthread_join(p->w[i].th, NULL);
    free(p->w);
    free(p);
}
