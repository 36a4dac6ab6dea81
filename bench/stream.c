/*
 * stream.c - STREAM-style memory bandwidth probe for cleave.
 *
 * Why this exists: LLM decode is a read-bandwidth-bound reduction over the
 * weights (every weight byte is read once per token and folded into dot
 * products). To say how close the engine gets to the hardware we need the
 * read bandwidth this machine can actually deliver, measured the same way:
 * sum reductions over a buffer far larger than the last-level cache.
 *
 * One sequential stream per core is often limited by how many cache misses
 * a core keeps in flight for it (the hardware prefetcher tracks a stream
 * only so far ahead), not by DRAM: on the Sapphire Rapids VM this was written
 * for, one stream stops near 10 GB/s. Interleaving several independent
 * streams in one loop keeps more misses in flight, which is also what a
 * decode kernel reading several weight rows at once does. So the read test
 * is run with S = 1, 2, 4, 8, 16 streams per thread: each thread splits its
 * share of the buffer into S contiguous chunks and walks all of them in the
 * same loop, one or more cache lines from each chunk per iteration.
 *
 * Copy (c = b) and triad (c = a + q*b) are included for completeness, counted
 * the STREAM way: bytes read + bytes written, ignoring write-allocate (RFO)
 * traffic, so the hardware moves more bytes than reported for them.
 *
 * Build: make -C bench stream   (cc -std=c11 -O3 -march=native -pthread)
 * Usage: bench/stream [--size BYTES[K|M|G]] [-t MAXTHREADS] [-n REPS]
 *                     [--no-avx512] [--no-thp]
 */
#define _GNU_SOURCE /* pthread_setaffinity_np, sched_getaffinity, madvise */

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#else
#define HAVE_X86 0
#endif

#define LINE_DOUBLES 8      /* 64-byte cache line = 8 doubles = 1 zmm */
#define NACC 8              /* independent accumulators: hide FP add latency */
#define BLOCK_DOUBLES 512   /* per-stream chunks are whole 4 KiB pages */
#define MAX_STREAMS 16
#define HUGE_ALIGN ((size_t)2 << 20)

static const int stream_counts[] = {1, 2, 4, 8, 16};
#define N_STREAM_COUNTS ((int)(sizeof stream_counts / sizeof stream_counts[0]))

/* Values chosen so every sum and every copy/triad result is exact in double
 * precision, which lets us verify the kernels really ran. */
#define A_VAL 1.0
#define B_VAL 2.0
#define Q_VAL 3.0

enum kernel { K_INIT, K_READ, K_COPY, K_TRIAD };
static const char *const kernel_name[] = {"init", "read", "copy", "triad"};

/* ------------------------------------------------------------------------ */
/* Kernels                                                                  */
/* ------------------------------------------------------------------------ */

/*
 * Lines read from each stream per loop iteration: at least NACC loads per
 * iteration so the accumulators, not the add latency, bound the loop, and at
 * least one line per stream so every stream advances each iteration.
 */
#define LINES_PER_STREAM(S) ((S) >= NACC ? 1 : NACC / (S))

/*
 * Portable read kernel. Written with an explicit 8-lane inner loop so the
 * compiler vectorises it without needing to reassociate the FP sum.
 * `S` is a compile-time constant at every call site (see READ_FN), which lets
 * the compiler fully unroll the stream loop and keep the accumulators in
 * registers.
 */
static inline __attribute__((always_inline)) double
read_generic_body(const double *p, size_t chunk, const int S)
{
    const int U = LINES_PER_STREAM(S);
    double acc[NACC][LINE_DOUBLES] = {{0}};

    for (size_t i = 0; i < chunk; i += (size_t)U * LINE_DOUBLES) {
        for (int s = 0; s < S; s++) {
            for (int u = 0; u < U; u++) {
                const double *src = p + (size_t)s * chunk + i + (size_t)u * LINE_DOUBLES;
                double *a = acc[(s * U + u) % NACC];
                for (int l = 0; l < LINE_DOUBLES; l++)
                    a[l] += src[l];
            }
        }
    }
    double sum = 0.0;
    for (int k = 0; k < NACC; k++)
        for (int l = 0; l < LINE_DOUBLES; l++)
            sum += acc[k][l];
    return sum;
}

/*
 * GCC turns plain copy loops into memcpy calls, and glibc's memcpy switches
 * to non-temporal stores for large sizes, which would measure something
 * different from the triad loop. Keep the loop a loop.
 */
#if defined(__GNUC__) && !defined(__clang__)
#define NO_LIBCALL __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define NO_LIBCALL
#endif

static NO_LIBCALL void copy_generic(double *restrict c, const double *restrict b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        c[i] = b[i];
}

static void triad_generic(double *restrict c, const double *restrict a,
                          const double *restrict b, double q, size_t n)
{
    for (size_t i = 0; i < n; i++)
        c[i] = a[i] + q * b[i];
}

#if HAVE_X86
/*
 * AVX-512 versions: one zmm load is exactly one cache line, so the access
 * pattern is explicit rather than left to the vectoriser. Compiled with a
 * target attribute so the file still builds without -march=native; only
 * called after a runtime CPU check.
 */
#define AVX512 __attribute__((target("avx512f")))

static inline AVX512 __attribute__((always_inline)) double
read_avx512_body(const double *p, size_t chunk, const int S)
{
    const int U = LINES_PER_STREAM(S);
    __m512d acc[NACC];
    for (int k = 0; k < NACC; k++)
        acc[k] = _mm512_setzero_pd();

    for (size_t i = 0; i < chunk; i += (size_t)U * LINE_DOUBLES) {
#pragma GCC unroll 16
        for (int s = 0; s < S; s++) {
#pragma GCC unroll 8
            for (int u = 0; u < U; u++) {
                const double *src = p + (size_t)s * chunk + i + (size_t)u * LINE_DOUBLES;
                const int k = (s * U + u) % NACC;
                acc[k] = _mm512_add_pd(acc[k], _mm512_load_pd(src));
            }
        }
    }
    __m512d t = acc[0];
    for (int k = 1; k < NACC; k++)
        t = _mm512_add_pd(t, acc[k]);
    return _mm512_reduce_add_pd(t);
}

static AVX512 void copy_avx512(double *restrict c, const double *restrict b, size_t n)
{
    /* n is a multiple of BLOCK_DOUBLES; 4 lines per iteration for overlap. */
    for (size_t i = 0; i < n; i += 4 * LINE_DOUBLES) {
        __m512d x0 = _mm512_load_pd(b + i);
        __m512d x1 = _mm512_load_pd(b + i + 8);
        __m512d x2 = _mm512_load_pd(b + i + 16);
        __m512d x3 = _mm512_load_pd(b + i + 24);
        _mm512_store_pd(c + i, x0);
        _mm512_store_pd(c + i + 8, x1);
        _mm512_store_pd(c + i + 16, x2);
        _mm512_store_pd(c + i + 24, x3);
    }
}

static AVX512 void triad_avx512(double *restrict c, const double *restrict a,
                                const double *restrict b, double q, size_t n)
{
    const __m512d vq = _mm512_set1_pd(q);
    for (size_t i = 0; i < n; i += 4 * LINE_DOUBLES) {
        for (int u = 0; u < 4; u++) {
            const size_t j = i + (size_t)u * LINE_DOUBLES;
            _mm512_store_pd(c + j, _mm512_fmadd_pd(vq, _mm512_load_pd(b + j),
                                                   _mm512_load_pd(a + j)));
        }
    }
}
#endif /* HAVE_X86 */

/* One function per stream count, so S is a constant inside each. */
#define READ_FN(S)                                                            \
    static double read_generic_##S(const double *p, size_t chunk)             \
    {                                                                         \
        return read_generic_body(p, chunk, S);                                \
    }
READ_FN(1) READ_FN(2) READ_FN(4) READ_FN(8) READ_FN(16)
#undef READ_FN

#if HAVE_X86
#define READ_FN(S)                                                            \
    static AVX512 double read_avx512_##S(const double *p, size_t chunk)       \
    {                                                                         \
        return read_avx512_body(p, chunk, S);                                 \
    }
READ_FN(1) READ_FN(2) READ_FN(4) READ_FN(8) READ_FN(16)
#undef READ_FN
#endif

typedef double (*read_fn)(const double *, size_t);

static int use_avx512;

static read_fn pick_read(int streams)
{
#if HAVE_X86
    if (use_avx512) {
        switch (streams) {
        case 1: return read_avx512_1;
        case 2: return read_avx512_2;
        case 4: return read_avx512_4;
        case 8: return read_avx512_8;
        case 16: return read_avx512_16;
        }
    }
#endif
    switch (streams) {
    case 1: return read_generic_1;
    case 2: return read_generic_2;
    case 4: return read_generic_4;
    case 8: return read_generic_8;
    case 16: return read_generic_16;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Threads                                                                  */
/* ------------------------------------------------------------------------ */

static double *arr_a, *arr_b, *arr_c;
static size_t n_elems;         /* doubles per array */
static int cpu_list[CPU_SETSIZE];
static int n_cpus;

struct job {
    enum kernel kernel;
    int threads;
    int streams;
    size_t part;               /* doubles per thread (unused for K_INIT) */
    read_fn read;
    pthread_barrier_t barrier;
    double seconds;            /* one pass, written by thread 0 */
    double sums[CPU_SETSIZE];  /* per-thread read sums, checked afterwards */
};

struct worker {
    struct job *job;
    int tid;
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Pin to one CPU of our affinity mask so threads do not migrate mid-run and
 * two threads never share a core. Failure only costs accuracy, so warn. */
static void pin_self(int tid)
{
    if (n_cpus == 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu_list[tid % n_cpus], &set);
    int err = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    if (err)
        fprintf(stderr, "warning: pinning thread %d failed: %s\n", tid, strerror(err));
}

static void run_kernel(const struct job *job, int tid, double *sum_out)
{
    const size_t off = (size_t)tid * job->part;

    switch (job->kernel) {
    case K_INIT: {
        /* First touch happens here, in parallel, by the thread (and hence
         * the core / NUMA node) that will later use the pages. */
        size_t lo = n_elems * (size_t)tid / (size_t)job->threads;
        size_t hi = n_elems * (size_t)(tid + 1) / (size_t)job->threads;
        for (size_t i = lo; i < hi; i++) {
            arr_a[i] = A_VAL;
            arr_b[i] = B_VAL;
            arr_c[i] = 0.0;
        }
        break;
    }
    case K_READ:
        /* Storing the sum where main() checks it keeps the loads alive. */
        *sum_out = job->read(arr_a + off, job->part / (size_t)job->streams);
        break;
    case K_COPY:
#if HAVE_X86
        if (use_avx512) {
            copy_avx512(arr_c + off, arr_b + off, job->part);
            break;
        }
#endif
        copy_generic(arr_c + off, arr_b + off, job->part);
        break;
    case K_TRIAD:
#if HAVE_X86
        if (use_avx512) {
            triad_avx512(arr_c + off, arr_a + off, arr_b + off, Q_VAL, job->part);
            break;
        }
#endif
        triad_generic(arr_c + off, arr_a + off, arr_b + off, Q_VAL, job->part);
        break;
    }
}

/* One timed pass of the job's kernel. The timer starts when all threads are
 * released together and stops when the slowest one is done. */
static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct job *job = w->job;
    double t0 = 0.0;

    pin_self(w->tid);
    pthread_barrier_wait(&job->barrier);
    if (w->tid == 0)
        t0 = now_seconds();
    run_kernel(job, w->tid, &job->sums[w->tid]);
    pthread_barrier_wait(&job->barrier);
    if (w->tid == 0)
        job->seconds = now_seconds() - t0;
    return NULL;
}

static void run_job(struct job *job)
{
    pthread_t th[CPU_SETSIZE];
    struct worker wk[CPU_SETSIZE];

    int err = pthread_barrier_init(&job->barrier, NULL, (unsigned)job->threads);
    if (err) {
        fprintf(stderr, "pthread_barrier_init: %s\n", strerror(err));
        exit(1);
    }
    for (int t = 0; t < job->threads; t++) {
        wk[t] = (struct worker){job, t};
        err = pthread_create(&th[t], NULL, worker_main, &wk[t]);
        if (err) {
            fprintf(stderr, "pthread_create: %s\n", strerror(err));
            exit(1);
        }
    }
    for (int t = 0; t < job->threads; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&job->barrier);
}

/* ------------------------------------------------------------------------ */
/* Driver                                                                   */
/* ------------------------------------------------------------------------ */

/* Anonymous mapping, 2 MiB aligned and advised for transparent huge pages:
 * with 4 KiB pages a 1 GiB sweep takes a TLB miss every 4 KiB per stream,
 * which is an artefact of the page size rather than the memory system. */
static double *alloc_array(size_t bytes, int want_thp)
{
    size_t len = bytes + HUGE_ALIGN;
    void *raw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
        fprintf(stderr, "mmap %zu bytes: %s\n", len, strerror(errno));
        exit(1);
    }
    uintptr_t p = ((uintptr_t)raw + HUGE_ALIGN - 1) & ~(uintptr_t)(HUGE_ALIGN - 1);
#ifdef MADV_HUGEPAGE
    if (want_thp)
        (void)madvise((void *)p, bytes, MADV_HUGEPAGE); /* best effort */
#else
    (void)want_thp;
#endif
    /* Deliberately not released: the process ends right after the tests. */
    return (double *)p;
}

/*
 * CPU time the whole machine spent busy (and stolen by the hypervisor),
 * in seconds, from /proc/stat. Used to tell whether something else ran
 * during the measurement, which on a 2-core machine ruins the 2-thread
 * numbers. Returns -1 where /proc/stat is unavailable.
 */
static int machine_cpu_seconds(double *busy, double *steal)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu",
                   &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 8)
        return -1;
    double hz = (double)sysconf(_SC_CLK_TCK);
    /* user nice system [idle iowait] irq softirq; steal kept separate */
    *busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / hz;
    *steal = (double)v[7] / hz;
    return 0;
}

static double self_cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           1e-6 * (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static int parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v <= 0)
        return -1;
    double mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1024.0; end++; break;
    case 'm': case 'M': mul = 1024.0 * 1024; end++; break;
    case 'g': case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
    }
    if (*end == 'i' || *end == 'B') /* allow KiB / MB style suffixes */
        end++;
    if (*end == 'B')
        end++;
    if (*end)
        return -1;
    *out = (size_t)(v * mul);
    return 0;
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [--size BYTES[K|M|G]] [-t MAXTHREADS] [-n REPS] [--no-avx512] [--no-thp]\n"
            "  --size     bytes per array (default 1G; read uses 1 array, triad 3)\n"
            "  -t         test 1..MAXTHREADS threads (default: CPUs in affinity mask)\n"
            "  -n         timed repetitions per config, best reported (default 5)\n"
            "  --no-avx512  use the portable kernels even if AVX-512 is available\n"
            "  --no-thp     do not madvise(MADV_HUGEPAGE) the buffers\n",
            argv0);
}

struct config {
    enum kernel kernel;
    int threads;
    int streams;
    double best, sum, worst; /* GB/s over the timed rounds */
};

/* Run one pass of a config, verify its output, return GB/s. */
static double run_once(const struct config *cfg)
{
    static struct job job; /* large (per-thread sums); reused, one at a time */
    memset(&job, 0, sizeof job);

    /* Each thread's share, rounded down so each stream chunk is whole pages. */
    size_t quantum = (size_t)cfg->streams * BLOCK_DOUBLES;
    job.kernel = cfg->kernel;
    job.threads = cfg->threads;
    job.streams = cfg->streams;
    job.part = n_elems / (size_t)cfg->threads / quantum * quantum;
    job.read = cfg->kernel == K_READ ? pick_read(cfg->streams) : NULL;
    run_job(&job);

    /* Verify results so a broken or elided kernel cannot report a number. */
    size_t total = job.part * (size_t)cfg->threads;
    int ok = 1;
    if (cfg->kernel == K_READ) {
        for (int t = 0; t < cfg->threads; t++)
            ok &= job.sums[t] == A_VAL * (double)job.part;
    } else {
        double want = cfg->kernel == K_COPY ? B_VAL : A_VAL + Q_VAL * B_VAL;
        for (size_t i = 0; i < total; i += 4093) /* spot check */
            ok &= arr_c[i] == want;
        ok &= arr_c[total - 1] == want;
        /* Copy and triad alternate and leave different values in c, so a
         * pass that did not run would also fail this check. */
    }
    if (!ok) {
        fprintf(stderr, "verification failed for %s threads=%d streams=%d\n",
                kernel_name[cfg->kernel], cfg->threads, cfg->streams);
        exit(1);
    }

    double arrays = cfg->kernel == K_READ ? 1.0 : cfg->kernel == K_COPY ? 2.0 : 3.0;
    return arrays * (double)total * sizeof(double) / job.seconds / 1e9;
}

int main(int argc, char **argv)
{
    size_t size = (size_t)1 << 30;
    int max_threads = 0, reps = 5, want_thp = 1, allow_avx512 = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--size") && i + 1 < argc) {
            if (parse_size(argv[++i], &size)) {
                fprintf(stderr, "bad --size '%s'\n", argv[i]);
                return 2;
            }
        } else if ((!strcmp(a, "-t") || !strcmp(a, "--threads")) && i + 1 < argc) {
            max_threads = atoi(argv[++i]);
        } else if ((!strcmp(a, "-n") || !strcmp(a, "--reps")) && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else if (!strcmp(a, "--no-thp")) {
            want_thp = 0;
        } else if (!strcmp(a, "--no-avx512")) {
            allow_avx512 = 0;
        } else {
            usage(argv[0]);
            return !strcmp(a, "-h") || !strcmp(a, "--help") ? 0 : 2;
        }
    }

    cpu_set_t mask;
    if (sched_getaffinity(0, sizeof mask, &mask) == 0) {
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &mask))
                cpu_list[n_cpus++] = c;
    }
    if (max_threads <= 0)
        max_threads = n_cpus > 0 ? n_cpus : 1;
    if (max_threads > CPU_SETSIZE || reps <= 0) {
        usage(argv[0]);
        return 2;
    }
    if (n_cpus > 0 && max_threads > n_cpus)
        fprintf(stderr, "warning: %d threads on %d CPUs; threads will share cores\n",
                max_threads, n_cpus);

#if HAVE_X86
    __builtin_cpu_init();
    use_avx512 = allow_avx512 && __builtin_cpu_supports("avx512f");
#else
    (void)allow_avx512;
#endif

    /* Whole 4 KiB blocks per stream per thread for every config. */
    size_t quantum = (size_t)max_threads * MAX_STREAMS * BLOCK_DOUBLES;
    n_elems = size / sizeof(double) / quantum * quantum;
    if (n_elems == 0) {
        fprintf(stderr, "--size too small (minimum %zu bytes)\n", quantum * sizeof(double));
        return 2;
    }
    size_t bytes = n_elems * sizeof(double);

    /* Anything that fits in the last-level cache measures the cache. */
    long llc = 0;
#ifdef _SC_LEVEL3_CACHE_SIZE
    llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
    if (llc > 0 && bytes < 4 * (size_t)llc)
        fprintf(stderr, "warning: %zu MiB is less than 4x the %ld MiB last-level cache; "
                "results will include cache bandwidth\n", bytes >> 20, llc >> 20);
    arr_a = alloc_array(bytes, want_thp);
    arr_b = alloc_array(bytes, want_thp);
    arr_c = alloc_array(bytes, want_thp);

    printf("stream: %zu MiB per array (3 arrays), threads 1..%d on %d CPUs, best of %d, "
           "%s kernels, THP %s\n",
           bytes >> 20, max_threads, n_cpus, reps, use_avx512 ? "AVX-512" : "portable C",
           want_thp ? "advised" : "off");
    fflush(stdout);

    /* Parallel first touch with the most threads we will use. */
    static struct job init;
    init.kernel = K_INIT;
    init.threads = max_threads;
    run_job(&init);

    /* Every config: reads with each stream count, then copy and triad. */
    int n_cfg = max_threads * (N_STREAM_COUNTS + 2);
    struct config *cfg = calloc((size_t)n_cfg, sizeof *cfg);
    if (!cfg) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    int c = 0;
    for (int t = 1; t <= max_threads; t++) {
        for (int i = 0; i < N_STREAM_COUNTS; i++)
            cfg[c++] = (struct config){K_READ, t, stream_counts[i], 0.0, 0.0, 1e300};
        cfg[c++] = (struct config){K_COPY, t, 1, 0.0, 0.0, 1e300};
        cfg[c++] = (struct config){K_TRIAD, t, 1, 0.0, 0.0, 1e300};
    }

    /*
     * Round 0 is the warm-up (untimed: page tables, TLB, caches and CPU
     * frequency settle). The timed rounds then cycle through all configs,
     * rather than repeating one config N times in a row, so that a burst of
     * outside interference (other VMs on the host, background jobs) degrades
     * one sample of every config instead of every sample of one config.
     */
    double busy0 = 0, steal0 = 0, busy1 = 0, steal1 = 0;
    double self0 = self_cpu_seconds(), wall0 = now_seconds();
    int have_stat = machine_cpu_seconds(&busy0, &steal0) == 0;
    for (int r = 0; r <= reps; r++) {
        for (int i = 0; i < n_cfg; i++) {
            double gbs = run_once(&cfg[i]);
            if (r == 0)
                continue;
            if (gbs > cfg[i].best) cfg[i].best = gbs;
            if (gbs < cfg[i].worst) cfg[i].worst = gbs;
            cfg[i].sum += gbs;
        }
    }

    double self_s = self_cpu_seconds() - self0, wall_s = now_seconds() - wall0;
    have_stat = have_stat && machine_cpu_seconds(&busy1, &steal1) == 0;

    printf("\n%-6s %7s %7s %10s %10s %10s\n", "kernel", "threads", "streams",
           "best GB/s", "avg GB/s", "min GB/s");
    double best_read[CPU_SETSIZE + 1] = {0};
    for (int i = 0; i < n_cfg; i++) {
        printf("%-6s %7d %7d %10.2f %10.2f %10.2f\n", kernel_name[cfg[i].kernel],
               cfg[i].threads, cfg[i].streams, cfg[i].best, cfg[i].sum / reps, cfg[i].worst);
        if (cfg[i].kernel == K_READ && cfg[i].best > best_read[cfg[i].threads])
            best_read[cfg[i].threads] = cfg[i].best;
    }

    /* Warn when other work shared the CPUs: the results are then a lower
     * bound, not the machine's limit. 0.05 CPU is scheduler/tick noise. */
    if (have_stat) {
        double others = (busy1 - busy0 - self_s) / wall_s;
        double steal = (steal1 - steal0) / wall_s;
        printf("\nmeasured over %.1f s; other processes used %.2f CPUs, hypervisor steal %.2f CPUs\n",
               wall_s, others > 0 ? others : 0.0, steal);
        if (others > 0.05 || steal > 0.05)
            printf("WARNING: machine was not idle; rerun on a quiet machine for the limit\n");
    }

    printf("\nread_bw_gbs");
    for (int t = 1; t <= max_threads; t++)
        printf(" threads=%d %.2f", t, best_read[t]);
    printf("\n");
    free(cfg);
    return 0;
}
