/* The shared-memory communicator: the ranks of one host map one segment with
 * a pair of slots per rank (alternating between consecutive collectives, so
 * one rank may run ahead by one op without a second barrier) and per-rank
 * sequence counters on their own cache lines. Every rank sums the slots in
 * rank order, so all ranks get bit-identical results.
 *
 * Waiting spins briefly, then yields, then sleeps; every few milliseconds it
 * checks that the ranks it waits for are alive (a dead or zombie pid is an
 * error naming the rank at once) and gives up after the timeout. The segment's
 * name is removed as soon as every rank has mapped it, so nothing is left
 * behind in /dev/shm whatever happens later. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../util/util.h"
#include "comm.h"

#define SHM_MAGIC 0x636c6561766531ull /* "cleave1" */
#define SHM_MAX_RANKS 64

typedef struct {
    _Atomic uint64_t arrive; /* last op whose data this rank has published */
    _Atomic uint64_t done;   /* last op whose inputs this rank has finished reading */
    _Atomic int32_t pid;
    _Atomic int32_t failed;  /* set when this rank gave up: the others stop waiting */
    char pad[64 - 24];
} rank_line;

typedef struct {
    uint64_t magic;
    int32_t world;
    _Atomic int32_t attached;
    uint64_t slot_bytes;
    char pad[64 - 24];
    rank_line r[SHM_MAX_RANKS];
} shm_hdr;

typedef struct {
    shm_hdr *hdr;
    uint8_t *data;
    size_t map_bytes;
    uint64_t seq;
    char name[96];
} shm_impl;

static double now_s(void) { return clv_now(); }

static uint8_t *slot_of(shm_impl *im, int rank, uint64_t seq) {
    return im->data + ((size_t)rank * 2 + (seq & 1)) * im->hdr->slot_bytes;
}

static bool pid_dead(int pid) {
    if (pid <= 0) return false;
    if (kill(pid, 0) != 0 && errno == ESRCH) return true;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return true;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *rp = strrchr(buf, ')');
    return rp && (rp[2] == 'Z' || rp[2] == 'X'); /* a zombie waiting for its parent is dead to us */
}

/* Wait until counter(rank) >= target for every rank in `who` (-1: all). */
static int wait_for(clv_comm *c, int field, uint64_t target, int who, const char *what, clv_status *st) {
    shm_impl *im = c->impl;
    double t0 = now_s(), next_check = t0 + 0.005;
    for (uint64_t spins = 0;; spins++) {
        int missing = -1;
        for (int r = 0; r < c->world && missing < 0; r++) {
            if (who >= 0 && r != who) continue;
            _Atomic uint64_t *ctr = field == 0 ? &im->hdr->r[r].arrive : &im->hdr->r[r].done;
            if (atomic_load_explicit(ctr, memory_order_acquire) < target) missing = r;
        }
        if (missing < 0) return 0;
        if (spins < 2000) {
            __builtin_ia32_pause();
            continue;
        }
        double t = now_s();
        if (t >= next_check) {
            next_check = t + 0.005;
            for (int r = 0; r < c->world; r++) {
                if (r == c->rank) continue;
                if (atomic_load(&im->hdr->r[r].failed))
                    return clv_fail(st, CLV_EIO, "rank %d: %s: rank %d failed and left the job", c->rank, what, r);
                if (pid_dead(atomic_load(&im->hdr->r[r].pid)))
                    return clv_fail(st, CLV_EIO, "rank %d: %s: rank %d (pid %d) is gone", c->rank, what, r,
                                    (int)atomic_load(&im->hdr->r[r].pid));
            }
            if (t - t0 > c->timeout_s) {
                atomic_store(&im->hdr->r[c->rank].failed, 1);
                return clv_fail(st, CLV_EIO, "rank %d: %s: rank %d did not respond within %.0f s", c->rank, what, missing,
                                c->timeout_s);
            }
        }
        if (spins < 20000) sched_yield();
        else nanosleep(&(struct timespec){0, 50000}, NULL);
    }
}

/* Start op `seq`: my slot of its parity may be rewritten once every rank has
 * finished reading op seq-2 (the last one that used it). */
static int begin_op(clv_comm *c, const char *what, clv_status *st) {
    shm_impl *im = c->impl;
    im->seq++;
    return im->seq > 2 ? wait_for(c, 1, im->seq - 2, -1, what, st) : 0;
}

static void publish(clv_comm *c) {
    shm_impl *im = c->impl;
    atomic_store_explicit(&im->hdr->r[c->rank].arrive, im->seq, memory_order_release);
}

static void finish(clv_comm *c) {
    shm_impl *im = c->impl;
    atomic_store_explicit(&im->hdr->r[c->rank].done, im->seq, memory_order_release);
}

/* The ranks [*r0, *r1) of `group`, and whether this rank is one of them. */
static bool group_range(const clv_comm *c, int group, int *r0, int *r1) {
    if (group < 0) {
        *r0 = 0, *r1 = c->world;
        return true;
    }
    *r0 = group * c->group_size, *r1 = *r0 + c->group_size;
    return c->rank >= *r0 && c->rank < *r1;
}

/* Publish `in` in chunks of a slot; once every rank has published, members of
 * the group combine the group's slots into `out` (sum, or gather). */
typedef void (*combine_fn)(shm_impl *im, int g0, int g1, float *out, size_t off, size_t k, size_t n);

static void combine_sum(shm_impl *im, int g0, int g1, float *out, size_t off, size_t k, size_t n) {
    (void)n;
    memcpy(out + off, slot_of(im, g0, im->seq), k * sizeof(float));
    for (int r = g0 + 1; r < g1; r++) {
        const float *sr = (const float *)slot_of(im, r, im->seq);
        for (size_t i = 0; i < k; i++) out[off + i] += sr[i];
    }
}

static void combine_gather(shm_impl *im, int g0, int g1, float *out, size_t off, size_t k, size_t n) {
    for (int r = g0; r < g1; r++) memcpy(out + (size_t)(r - g0) * n + off, slot_of(im, r, im->seq), k * sizeof(float));
}

static int exchange(clv_comm *c, const float *in, float *out, size_t n, int group, const char *what, combine_fn combine,
                    clv_status *st) {
    shm_impl *im = c->impl;
    int g0, g1;
    bool member = group_range(c, group, &g0, &g1);
    size_t cap = im->hdr->slot_bytes / sizeof(float);
    for (size_t off = 0; off < n; off += cap) {
        size_t k = n - off < cap ? n - off : cap;
        int rc;
        if ((rc = begin_op(c, what, st))) return rc;
        if (member) memcpy(slot_of(im, c->rank, im->seq), in + off, k * sizeof(float));
        publish(c);
        if ((rc = wait_for(c, 0, im->seq, -1, what, st))) return rc;
        if (member) combine(im, g0, g1, out, off, k, n);
        finish(c);
    }
    return 0;
}

static int shm_allreduce(clv_comm *c, float *buf, size_t n, int group, clv_status *st) {
    return exchange(c, buf, buf, n, group, "all-reduce", combine_sum, st);
}

static int shm_allgather(clv_comm *c, const float *in, float *out, size_t n, int group, clv_status *st) {
    return exchange(c, in, out, n, group, "all-gather", combine_gather, st);
}

static int shm_broadcast(clv_comm *c, void *buf, size_t bytes, int root, clv_status *st) {
    shm_impl *im = c->impl;
    size_t cap = im->hdr->slot_bytes;
    for (size_t off = 0; off < bytes || (bytes == 0 && off == 0); off += cap) {
        size_t k = bytes - off < cap ? bytes - off : cap;
        int rc;
        if ((rc = begin_op(c, "broadcast", st))) return rc;
        if (c->rank == root) memcpy(slot_of(im, root, im->seq), (uint8_t *)buf + off, k);
        publish(c);
        if ((rc = wait_for(c, 0, im->seq, root, "broadcast", st))) return rc;
        if (c->rank != root) memcpy((uint8_t *)buf + off, slot_of(im, root, im->seq), k);
        finish(c);
        if (bytes == 0) break;
    }
    return 0;
}

static int shm_barrier(clv_comm *c, clv_status *st) {
    int rc;
    if ((rc = begin_op(c, "barrier", st))) return rc;
    publish(c);
    if ((rc = wait_for(c, 0, ((shm_impl *)c->impl)->seq, -1, "barrier", st))) return rc;
    finish(c);
    return 0;
}

static int shm_groups(clv_comm *c, int gs, clv_status *st) {
    if (gs < 1 || c->world % gs) return clv_fail(st, CLV_EINVAL, "groups of %d do not divide %d ranks", gs, c->world);
    c->group_size = gs;
    return 0;
}

static void shm_destroy(clv_comm *c) {
    shm_impl *im = c->impl;
    if (im) {
        if (im->hdr) munmap(im->hdr, im->map_bytes);
        free(im);
    }
    free(c);
}

static const clv_comm_ops k_shm = {"shm", shm_allreduce, shm_allgather, shm_broadcast, shm_barrier, shm_groups,
                                   shm_destroy};

int clv_comm_shm(clv_comm **out, const clv_rankinfo *ri, double timeout_s, clv_status *st) {
    *out = NULL;
    if (ri->world > SHM_MAX_RANKS) return clv_fail(st, CLV_EUNSUPPORTED, "shared memory: at most %d ranks", SHM_MAX_RANKS);
    clv_comm *c = calloc(1, sizeof *c);
    shm_impl *im = calloc(1, sizeof *im);
    if (!c || !im) {
        free(c);
        free(im);
        return clv_fail(st, CLV_ENOMEM, "out of memory");
    }
    c->ops = &k_shm;
    c->impl = im;
    c->rank = ri->rank;
    c->world = ri->world;
    c->group_size = ri->world;
    c->local_rank = ri->local_rank;
    c->local_world = ri->local_world;
    c->timeout_s = timeout_s;
    uint64_t slot = 8u << 20;
    const char *env = getenv("CLV_SHM_SLOT_BYTES");
    int64_t v;
    if (env && clv_parse_i64(env, &v) && v >= 4096) slot = (uint64_t)v;
    im->map_bytes = sizeof(shm_hdr) + (size_t)ri->world * 2 * slot;
    snprintf(im->name, sizeof im->name, "/cleave-%d-%.64s", ri->master_port, ri->master_addr);
    for (char *p = im->name + 1; *p; p++)
        if (*p == '/') *p = '_';

    int fd = -1, rc = 0;
    double t0 = clv_now();
    if (ri->rank == 0) {
        shm_unlink(im->name); /* a segment left by an earlier job on this port */
        fd = shm_open(im->name, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd < 0 || ftruncate(fd, (off_t)im->map_bytes) != 0) {
            rc = clv_fail(st, CLV_EIO, "rank 0: cannot create shared memory %s (%zu bytes): %s", im->name, im->map_bytes,
                          strerror(errno));
            goto fail;
        }
    } else {
        /* wait for rank 0 to create and size it */
        for (;;) {
            fd = shm_open(im->name, O_RDWR, 0600);
            struct stat sb;
            if (fd >= 0 && fstat(fd, &sb) == 0 && (size_t)sb.st_size == im->map_bytes) break;
            if (fd >= 0) close(fd);
            fd = -1;
            if (clv_now() - t0 > timeout_s) {
                rc = clv_fail(st, CLV_EIO, "rank %d: rank 0 did not create shared memory %s within %.0f s (is it running "
                              "with the same MASTER_PORT and WORLD_SIZE?)", ri->rank, im->name, timeout_s);
                goto fail;
            }
            nanosleep(&(struct timespec){0, 2000000}, NULL);
        }
    }
    void *m = mmap(NULL, im->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        rc = clv_fail(st, CLV_EIO, "rank %d: cannot map shared memory %s: %s", ri->rank, im->name, strerror(errno));
        goto fail;
    }
    im->hdr = m;
    im->data = (uint8_t *)m + sizeof(shm_hdr);
    if (ri->rank == 0) {
        im->hdr->world = ri->world;
        im->hdr->slot_bytes = slot;
        atomic_store(&im->hdr->r[0].pid, (int32_t)getpid());
        atomic_store_explicit((_Atomic uint64_t *)&im->hdr->magic, SHM_MAGIC, memory_order_release);
    } else {
        while (atomic_load_explicit((_Atomic uint64_t *)&im->hdr->magic, memory_order_acquire) != SHM_MAGIC) {
            if (clv_now() - t0 > timeout_s) {
                rc = clv_fail(st, CLV_EIO, "rank %d: shared memory %s was never initialised", ri->rank, im->name);
                goto fail;
            }
            nanosleep(&(struct timespec){0, 1000000}, NULL);
        }
        if (im->hdr->world != ri->world) {
            rc = clv_fail(st, CLV_EINVAL, "rank %d: WORLD_SIZE %d, but rank 0 started a job of %d", ri->rank, ri->world,
                          im->hdr->world);
            goto fail;
        }
        atomic_store(&im->hdr->r[ri->rank].pid, (int32_t)getpid());
    }
    atomic_fetch_add(&im->hdr->attached, 1);
    /* everyone attached: the name can go */
    while (atomic_load(&im->hdr->attached) < ri->world) {
        if (clv_now() - t0 > timeout_s) {
            rc = clv_fail(st, CLV_EIO, "rank %d: only %d of %d ranks joined within %.0f s", ri->rank,
                          (int)atomic_load(&im->hdr->attached), ri->world, timeout_s);
            goto fail;
        }
        for (int r = 0; r < ri->world; r++)
            if (r != ri->rank && pid_dead(atomic_load(&im->hdr->r[r].pid))) {
                rc = clv_fail(st, CLV_EIO, "rank %d: rank %d exited before the job started", ri->rank, r);
                goto fail;
            }
        nanosleep(&(struct timespec){0, 200000}, NULL);
    }
    if (ri->rank == 0) shm_unlink(im->name);
    *out = c;
    return 0;
fail:
    if (ri->rank == 0) shm_unlink(im->name);
    if (im->hdr) atomic_store(&im->hdr->r[ri->rank].failed, 1);
    shm_destroy(c);
    return rc;
}
