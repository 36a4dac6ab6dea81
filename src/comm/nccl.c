/* The NCCL communicator: one CUDA device per rank, bootstrapped over a host
 * communicator (`boot`: shm or MPI), which carries the unique id and first
 * checks that no two ranks share a GPU (NCCL refuses that).
 *
 * Every collective is synchronous for the caller. It first waits for the
 * whole device (cudaDeviceSynchronize: the runtime queues kernels on its
 * backend's streams, which this file does not know, and those kernels must
 * have finished writing the buffer), runs NCCL on a stream of its own, and
 * waits for that stream before returning. Buffers may be memory of this
 * rank's device (or managed memory), used in place, or host memory, staged
 * through a device scratch that grows on demand.
 *
 * NCCL waits forever for a peer that died. So the communicators are
 * non-blocking (ncclConfig_t.blocking = 0): init, split and every launch
 * return at once, and this file polls ncclCommGetAsyncError and
 * cudaStreamQuery against the timeout; past it, or on an asynchronous error,
 * it aborts its communicators (ncclCommAbort stops the kernels) and every
 * later call fails at once. A non-blocking launch costs a helper thread in
 * NCCL (tens of microseconds); CLV_NCCL_BLOCKING=1 makes the communicators
 * blocking instead, which launches faster but can hang in init, split or a
 * first collective's connection setup if a peer stops there (a kernel that
 * waits for a dead peer still times out and is aborted). */
#ifdef CLV_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../util/util.h"
#include "comm.h"

#define SCRATCH_MIN_BYTES ((size_t)1 << 20)

typedef struct {
    int device;
    ncclComm_t world;   /* every rank; broadcast, barrier and group -1 */
    ncclComm_t group;   /* this rank's group of group_size (NULL while group_size == world) */
    cudaStream_t stream;
    void *scratch;      /* device staging for host buffers */
    size_t scratch_bytes;
    bool dead;          /* aborted after a timeout or an error: every later call fails */
    char why[256];
} nccl_impl;

/* ---- checking ---------------------------------------------------------------------- */

static int cuda_check(cudaError_t e, int rank, const char *call, const char *file, int line, clv_status *st) {
    if (e == cudaSuccess) return 0;
    /* clear a non-sticky error (a cudaMalloc that found no memory, say): left
     * set, the backend's next launch check would report it as its own */
    (void)cudaGetLastError();
    return clv_fail(st, CLV_EDEVICE, "rank %d: %s failed: %s (%s) at %s:%d", rank, call, cudaGetErrorName(e),
                    cudaGetErrorString(e), file, line);
}

/* ncclInProgress is not a failure: a non-blocking communicator says that when
 * it took the call and goes on in the background (see wait_ready). */
static int nccl_check(ncclResult_t r, int rank, const char *call, const char *file, int line, clv_status *st) {
    if (r == ncclSuccess || r == ncclInProgress) return 0;
    const char *last = ncclGetLastError(NULL);
    return clv_fail(st, CLV_EDEVICE, "rank %d: %s failed: %s%s%s at %s:%d", rank, call, ncclGetErrorString(r),
                    last && *last ? ": " : "", last && *last ? last : "", file, line);
}

#define CUDA_CALL(rank, call) cuda_check((call), (rank), #call, __FILE__, __LINE__, st)
#define NCCL_CALL(rank, call) nccl_check((call), (rank), #call, __FILE__, __LINE__, st)

/* ---- waiting --------------------------------------------------------------------------- */

/* Collectives take microseconds: poll hard for the first millisecond, then
 * give the core away. */
static void backoff(double waited) {
    if (waited < 1e-3) return;
    if (waited < 20e-3) sched_yield();
    else nanosleep(&(struct timespec){0, 50000}, NULL);
}

/* After a timeout or an error nothing can be assumed about what NCCL has in
 * flight: abort every communicator (that stops their kernels) and refuse
 * later calls. */
static void abort_all(nccl_impl *im, const char *why) {
    /* the world first: that also joins a split still under way, which may
     * store the new group communicator only then. Aborting is best effort:
     * its result changes nothing about what we report. */
    if (im->world) (void)ncclCommAbort(im->world);
    ncclComm_t g = __atomic_load_n(&im->group, __ATOMIC_ACQUIRE);
    if (g) (void)ncclCommAbort(g);
    im->group = im->world = NULL;
    if (!im->dead) snprintf(im->why, sizeof im->why, "%s", why);
    im->dead = true;
}

static int fail_abort(clv_comm *c, int code, clv_status *st) {
    abort_all(c->impl, st->msg);
    return code;
}

/* comm's asynchronous state into *state; an error (anything but success or
 * in progress) aborts and names the operation. */
static int async_state(clv_comm *c, ncclComm_t comm, const char *what, ncclResult_t *state, clv_status *st) {
    *state = ncclInProgress;
    int rc;
    if ((rc = NCCL_CALL(c->rank, ncclCommGetAsyncError(comm, state)))) return fail_abort(c, rc, st);
    if (*state == ncclSuccess || *state == ncclInProgress) return 0;
    const char *last = ncclGetLastError(NULL);
    clv_fail(st, CLV_EDEVICE, "rank %d: NCCL %s failed: %s%s%s", c->rank, what, ncclGetErrorString(*state),
             last && *last ? ": " : "", last && *last ? last : "");
    return fail_abort(c, CLV_EDEVICE, st);
}

/* The operation that began at t0 has run out of time: abort, naming it. */
static int past_deadline(clv_comm *c, const char *what, double t0, clv_status *st) {
    if (clv_now() - t0 <= c->timeout_s) return 0;
    clv_fail(st, CLV_EDEVICE, "rank %d: NCCL %s did not finish within %g s: a rank died or stalls", c->rank, what,
             c->timeout_s);
    return fail_abort(c, CLV_EDEVICE, st);
}

/* Wait until `comm` has settled after a call that returned ncclInProgress
 * (init, split, a launch on a non-blocking communicator). The timeout counts
 * from t0, when the operation began. */
static int wait_ready(clv_comm *c, ncclComm_t comm, const char *what, double t0, clv_status *st) {
    for (;;) {
        ncclResult_t state = ncclInProgress;
        int rc = async_state(c, comm, what, &state, st);
        if (rc || state == ncclSuccess) return rc;
        if ((rc = past_deadline(c, what, t0, st))) return rc;
        backoff(clv_now() - t0);
    }
}

/* Wait until the work queued on our stream has finished, watching `comm`
 * (NULL: none) for asynchronous errors; the timeout counts from t0. */
static int wait_stream(clv_comm *c, ncclComm_t comm, const char *what, double t0, clv_status *st) {
    nccl_impl *im = c->impl;
    for (unsigned spins = 0;; spins++) {
        cudaError_t e = cudaStreamQuery(im->stream);
        if (e == cudaSuccess) return 0;
        if (e != cudaErrorNotReady) {
            clv_fail(st, CLV_EDEVICE, "rank %d: NCCL %s: cudaStreamQuery failed: %s (%s) at %s:%d", c->rank, what,
                     cudaGetErrorName(e), cudaGetErrorString(e), __FILE__, __LINE__);
            return fail_abort(c, CLV_EDEVICE, st);
        }
        int rc;
        ncclResult_t state;
        if (comm && (spins & 63) == 63 && (rc = async_state(c, comm, what, &state, st))) return rc;
        if ((rc = past_deadline(c, what, t0, st))) return rc;
        backoff(clv_now() - t0);
    }
}

/* A collective was just launched on `comm` (r is what the launch returned):
 * let it settle, then wait for it to finish. */
static int finish_launch(clv_comm *c, ncclComm_t comm, ncclResult_t r, const char *call, int line, const char *what,
                         clv_status *st) {
    double t0 = clv_now();
    int rc;
    if ((rc = nccl_check(r, c->rank, call, __FILE__, line, st))) return fail_abort(c, rc, st);
    if (r == ncclInProgress && (rc = wait_ready(c, comm, what, t0, st))) return rc;
    return wait_stream(c, comm, what, t0, st);
}

#define LAUNCH(c, comm, what, call) finish_launch((c), (comm), (call), #call, __LINE__, (what), st)

/* ---- buffers ------------------------------------------------------------------------------ */

/* Start a collective: right device, and every kernel that may still write the
 * caller's buffers has finished (the whole device, since the backend's
 * streams are not known here). */
static int op_begin(clv_comm *c, const char *what, clv_status *st) {
    nccl_impl *im = c->impl;
    int rc;
    if (im->dead)
        return clv_fail(st, CLV_EDEVICE, "rank %d: NCCL %s: the communicator was aborted after an earlier failure (%s)",
                        c->rank, what, im->why);
    if ((rc = CUDA_CALL(c->rank, cudaSetDevice(im->device)))) return rc;
    return CUDA_CALL(c->rank, cudaDeviceSynchronize());
}

/* Whether NCCL can use p in place: memory of this rank's device, or managed
 * memory. Host memory, pinned or not, is staged. */
static int on_device(clv_comm *c, const void *p, bool *dev, clv_status *st) {
    nccl_impl *im = c->impl;
    struct cudaPointerAttributes a;
    memset(&a, 0, sizeof a);
    cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e == cudaErrorInvalidValue) {
        /* runtimes before CUDA 11 say this of plain host memory */
        (void)cudaGetLastError();
        *dev = false;
        return 0;
    }
    int rc;
    if ((rc = CUDA_CALL(c->rank, e))) return rc;
    if (a.type == cudaMemoryTypeDevice && a.device != im->device)
        return clv_fail(st, CLV_EINVAL, "rank %d: a collective buffer lives on CUDA device %d, this rank's NCCL "
                        "device is %d", c->rank, a.device, im->device);
    *dev = a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
    return 0;
}

static int scratch_reserve(clv_comm *c, size_t bytes, clv_status *st) {
    nccl_impl *im = c->impl;
    if (bytes <= im->scratch_bytes) return 0;
    size_t cap = im->scratch_bytes * 2 > bytes ? im->scratch_bytes * 2 : bytes;
    if (cap < SCRATCH_MIN_BYTES) cap = SCRATCH_MIN_BYTES;
    int rc;
    if (im->scratch && (rc = CUDA_CALL(c->rank, cudaFree(im->scratch)))) return rc;
    im->scratch = NULL, im->scratch_bytes = 0;
    if ((rc = CUDA_CALL(c->rank, cudaMalloc(&im->scratch, cap)))) return rc;
    im->scratch_bytes = cap;
    return 0;
}

static int copy(clv_comm *c, void *dst, const void *src, size_t bytes, clv_status *st) {
    nccl_impl *im = c->impl;
    return CUDA_CALL(c->rank, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, im->stream));
}

static bool overlap(const void *a, size_t na, const void *b, size_t nb) {
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return pa < pb + nb && pb < pa + na;
}

/* Whether this rank is in `group` (if not, it passes through), with the
 * group's size and this rank's place in it. */
static bool in_group(const clv_comm *c, int group, int *size, int *idx) {
    if (group < 0) {
        *size = c->world, *idx = c->rank;
        return true;
    }
    *size = c->group_size, *idx = c->rank % c->group_size;
    return c->rank / c->group_size == group;
}

/* The communicator of a group this rank is in (after op_begin: not dead). */
static ncclComm_t group_comm(const clv_comm *c, int group) {
    const nccl_impl *im = c->impl;
    return group < 0 || c->group_size == c->world ? im->world : im->group;
}

/* ---- collectives -------------------------------------------------------------------------- */

static int nccl_allreduce(clv_comm *c, float *buf, size_t n, int group, clv_status *st) {
    nccl_impl *im = c->impl;
    int gs, idx, rc;
    if (!in_group(c, group, &gs, &idx) || n == 0) return 0;
    if ((rc = op_begin(c, "all-reduce", st))) return rc;
    ncclComm_t comm = group_comm(c, group);
    size_t bytes = n * sizeof(float);
    bool dev;
    if ((rc = on_device(c, buf, &dev, st))) return rc;
    float *d = buf;
    if (!dev) {
        if ((rc = scratch_reserve(c, bytes, st)) || (rc = copy(c, im->scratch, buf, bytes, st))) return rc;
        d = im->scratch;
    }
    if ((rc = LAUNCH(c, comm, "all-reduce", ncclAllReduce(d, d, n, ncclFloat32, ncclSum, comm, im->stream)))) return rc;
    if (dev) return 0;
    if ((rc = copy(c, buf, d, bytes, st))) return rc;
    return wait_stream(c, NULL, "all-reduce", clv_now(), st);
}

static int nccl_allgather(clv_comm *c, const float *in, float *out, size_t n, int group, clv_status *st) {
    nccl_impl *im = c->impl;
    int gs, idx, rc;
    if (!in_group(c, group, &gs, &idx) || n == 0) return 0;
    if ((rc = op_begin(c, "all-gather", st))) return rc;
    ncclComm_t comm = group_comm(c, group);
    uint64_t ob64;
    if (!clv_mul_ok((uint64_t)n * sizeof(float), (uint64_t)gs, &ob64) || ob64 > SIZE_MAX)
        return clv_fail(st, CLV_EINVAL, "rank %d: NCCL all-gather of %zu floats from %d ranks overflows", c->rank, n, gs);
    size_t nb = n * sizeof(float), ob = (size_t)ob64;
    bool in_dev, out_dev;
    if ((rc = on_device(c, in, &in_dev, st)) || (rc = on_device(c, out, &out_dev, st))) return rc;
    float *dout = out;
    const float *din = in;
    bool in_place = in == out + (size_t)idx * n, overlaps = overlap(in, nb, out, ob);
    /* out staged: the scratch holds all of it, and `in` joins it in place */
    if (!out_dev) {
        if ((rc = scratch_reserve(c, ob, st))) return rc;
        dout = im->scratch;
    }
    if (in_dev && (!overlaps || in_place)) {
        din = in; /* NCCL reads it where it is (in place when it is our slot of out) */
    } else if (!out_dev || !overlaps) {
        /* copied into our slot of the device output: an in-place all-gather */
        if ((rc = copy(c, dout + (size_t)idx * n, in, nb, st))) return rc;
        din = dout + (size_t)idx * n;
    } else {
        /* in overlaps out elsewhere than our slot (e.g. in == out): take a copy first */
        if ((rc = scratch_reserve(c, nb, st)) || (rc = copy(c, im->scratch, in, nb, st))) return rc;
        din = im->scratch;
    }
    if ((rc = LAUNCH(c, comm, "all-gather", ncclAllGather(din, dout, n, ncclFloat32, comm, im->stream)))) return rc;
    if (out_dev) return 0;
    if ((rc = copy(c, out, dout, ob, st))) return rc;
    return wait_stream(c, NULL, "all-gather", clv_now(), st);
}

static int nccl_broadcast(clv_comm *c, void *buf, size_t bytes, int root, clv_status *st) {
    nccl_impl *im = c->impl;
    int rc;
    if (root < 0 || root >= c->world)
        return clv_fail(st, CLV_EINVAL, "rank %d: broadcast from rank %d of %d", c->rank, root, c->world);
    if (bytes == 0) return 0;
    if ((rc = op_begin(c, "broadcast", st))) return rc;
    bool dev;
    if ((rc = on_device(c, buf, &dev, st))) return rc;
    void *d = buf;
    if (!dev) {
        if ((rc = scratch_reserve(c, bytes, st))) return rc;
        d = im->scratch;
        if (c->rank == root && (rc = copy(c, d, buf, bytes, st))) return rc;
    }
    if ((rc = LAUNCH(c, im->world, "broadcast", ncclBroadcast(d, d, bytes, ncclUint8, root, im->world, im->stream))))
        return rc;
    if (dev || c->rank == root) return 0;
    if ((rc = copy(c, buf, d, bytes, st))) return rc;
    return wait_stream(c, NULL, "broadcast", clv_now(), st);
}

/* NCCL has no barrier: an all-reduce of one float finishes on a rank only
 * once every rank has joined it. */
static int nccl_barrier(clv_comm *c, clv_status *st) {
    nccl_impl *im = c->impl;
    int rc;
    if ((rc = op_begin(c, "barrier", st)) || (rc = scratch_reserve(c, sizeof(float), st))) return rc;
    float *d = im->scratch;
    return LAUNCH(c, im->world, "barrier", ncclAllReduce(d, d, 1, ncclFloat32, ncclSum, im->world, im->stream));
}

/* Collective: split the world into groups of gs consecutive ranks (color =
 * rank / gs, key = rank, so a rank's place in its group is rank % gs). */
static int nccl_groups(clv_comm *c, int gs, clv_status *st) {
    nccl_impl *im = c->impl;
    int rc;
    if (gs < 1 || c->world % gs) return clv_fail(st, CLV_EINVAL, "groups of %d do not divide %d ranks", gs, c->world);
    if (gs == c->group_size) return 0; /* every rank knows the same: nothing to do anywhere */
    if (im->dead)
        return clv_fail(st, CLV_EDEVICE, "rank %d: NCCL group split: the communicator was aborted after an earlier "
                        "failure (%s)", c->rank, im->why);
    if ((rc = CUDA_CALL(c->rank, cudaSetDevice(im->device)))) return rc;
    if (im->group) {
        ncclComm_t old = im->group;
        im->group = NULL;
        c->group_size = c->world;
        if ((rc = NCCL_CALL(c->rank, ncclCommDestroy(old)))) return fail_abort(c, rc, st);
    }
    if (gs == c->world) {
        c->group_size = gs;
        return 0;
    }
    /* non-blocking: NCCL stores the new communicator into im->group from its
     * own thread once the split is done, and sets the parent's state */
    double t0 = clv_now();
    ncclResult_t r = ncclCommSplit(im->world, c->rank / gs, c->rank, &im->group, NULL);
    if ((rc = nccl_check(r, c->rank, "ncclCommSplit(world, rank / gs, rank, &group, NULL)", __FILE__, __LINE__, st)))
        return fail_abort(c, rc, st);
    if (r == ncclInProgress && (rc = wait_ready(c, im->world, "group split", t0, st))) return rc;
    ncclComm_t g = __atomic_load_n(&im->group, __ATOMIC_ACQUIRE);
    if (!g) {
        clv_fail(st, CLV_EDEVICE, "rank %d: ncclCommSplit into groups of %d gave no communicator", c->rank, gs);
        return fail_abort(c, CLV_EDEVICE, st);
    }
    if ((rc = wait_ready(c, g, "group split", t0, st))) return rc;
    c->group_size = gs;
    return 0;
}

static void nccl_destroy(clv_comm *c) {
    nccl_impl *im = c->impl;
    if (im) {
        if (cudaSetDevice(im->device) != cudaSuccess) (void)cudaGetLastError();
        /* every collective waited for its end, so nothing is in flight:
         * destroying is local (aborted communicators are gone already) */
        ncclResult_t r;
        if (im->group && (r = ncclCommDestroy(im->group)) != ncclSuccess && r != ncclInProgress)
            clv_warn("rank %d: ncclCommDestroy (group) failed: %s\n", c->rank, ncclGetErrorString(r));
        if (im->world && (r = ncclCommDestroy(im->world)) != ncclSuccess && r != ncclInProgress)
            clv_warn("rank %d: ncclCommDestroy failed: %s\n", c->rank, ncclGetErrorString(r));
        cudaError_t e;
        if (im->scratch && (e = cudaFree(im->scratch)) != cudaSuccess)
            clv_warn("rank %d: cudaFree (NCCL scratch) failed: %s\n", c->rank, cudaGetErrorString(e));
        if (im->stream && (e = cudaStreamDestroy(im->stream)) != cudaSuccess)
            clv_warn("rank %d: cudaStreamDestroy failed: %s\n", c->rank, cudaGetErrorString(e));
        free(im);
    }
    free(c);
}

static const clv_comm_ops k_nccl = {"nccl", nccl_allreduce, nccl_allgather, nccl_broadcast, nccl_barrier, nccl_groups,
                                    nccl_destroy};

/* ---- bootstrap ------------------------------------------------------------------------------- */

/* What each rank tells the others before NCCL starts. Sent through the host
 * communicator's float all-gather, which only moves the bytes. */
typedef struct {
    int32_t ok;      /* 0: this rank could not set up its GPU */
    char host[116];  /* hostname + boot id: PCI bus ids repeat across hosts */
    char bus[64];    /* PCI bus id, "0000:1b:00.0" */
} gpu_entry;
#define ENTRY_FLOATS ((sizeof(gpu_entry) + sizeof(float) - 1) / sizeof(float))

typedef struct {
    int32_t ok;
    ncclUniqueId id;
} id_packet;

static void host_identity(char *buf, size_t cap) {
    char name[64] = {0}, boot[48] = {0};
    if (gethostname(name, sizeof name - 1) != 0) snprintf(name, sizeof name, "?");
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        if (!fgets(boot, sizeof boot, f)) boot[0] = 0;
        fclose(f);
        boot[strcspn(boot, "\n")] = 0;
    }
    snprintf(buf, cap, "%s/%s", name, boot);
}

/* This rank's device, stream and scratch, and the entry it publishes. */
static int setup_local(clv_comm *c, gpu_entry *me, clv_status *st) {
    nccl_impl *im = c->impl;
    int rc, count = 0;
    host_identity(me->host, sizeof me->host);
    if ((rc = CUDA_CALL(c->rank, cudaGetDeviceCount(&count)))) return rc;
    if (im->device < 0 || im->device >= count)
        return clv_fail(st, CLV_EINVAL, "rank %d: CUDA device %d does not exist (this process sees %d)", c->rank,
                        im->device, count);
    if ((rc = CUDA_CALL(c->rank, cudaSetDevice(im->device))) ||
        (rc = CUDA_CALL(c->rank, cudaDeviceGetPCIBusId(me->bus, (int)sizeof me->bus, im->device))) ||
        (rc = CUDA_CALL(c->rank, cudaStreamCreateWithFlags(&im->stream, cudaStreamNonBlocking))) ||
        (rc = scratch_reserve(c, SCRATCH_MIN_BYTES, st)))
        return rc;
    me->ok = 1;
    return 0;
}

/* (1) Every rank's GPU, failures included, so that all ranks decide alike:
 * a rank that could not set up its GPU, or two ranks on one GPU, fail every
 * rank before NCCL could hang on them. */
static int exchange_gpus(clv_comm *c, clv_comm *boot, clv_status *st) {
    gpu_entry me;
    memset(&me, 0, sizeof me);
    clv_status local = {0};
    int local_rc = setup_local(c, &me, &local);
    float mine[ENTRY_FLOATS];
    memset(mine, 0, sizeof mine);
    memcpy(mine, &me, sizeof me);
    float *all = calloc((size_t)c->world * ENTRY_FLOATS, sizeof(float));
    if (!all) return clv_fail(st, CLV_ENOMEM, "out of memory");
    int rc = boot->ops->allgather(boot, mine, all, ENTRY_FLOATS, -1, st);
    for (int r = 0; r < c->world && !rc; r++) {
        gpu_entry e;
        memcpy(&e, all + (size_t)r * ENTRY_FLOATS, sizeof e);
        if (e.ok) continue;
        if (r == c->rank) *st = local, rc = local_rc ? local_rc : CLV_EDEVICE;
        else rc = clv_fail(st, CLV_EDEVICE, "rank %d: rank %d could not set up its GPU for NCCL", c->rank, r);
    }
    for (int a = 0; a < c->world && !rc; a++)
        for (int b = a + 1; b < c->world && !rc; b++) {
            gpu_entry ea, eb;
            memcpy(&ea, all + (size_t)a * ENTRY_FLOATS, sizeof ea);
            memcpy(&eb, all + (size_t)b * ENTRY_FLOATS, sizeof eb);
            ea.host[sizeof ea.host - 1] = eb.host[sizeof eb.host - 1] = 0;
            ea.bus[sizeof ea.bus - 1] = eb.bus[sizeof eb.bus - 1] = 0;
            if (strcmp(ea.host, eb.host) == 0 && strcmp(ea.bus, eb.bus) == 0)
                rc = clv_fail(st, CLV_EUNSUPPORTED, "ranks %d and %d share GPU %s; NCCL needs one GPU per rank", a, b,
                              ea.bus);
        }
    free(all);
    return rc;
}

/* (2) Rank 0's unique id to every rank (a failure there, too). */
static int share_id(clv_comm *c, clv_comm *boot, ncclUniqueId *id, clv_status *st) {
    id_packet pkt;
    memset(&pkt, 0, sizeof pkt);
    clv_status local = {0};
    int local_rc = 0, rc;
    if (c->rank == 0) {
        local_rc = nccl_check(ncclGetUniqueId(&pkt.id), c->rank, "ncclGetUniqueId(&id)", __FILE__, __LINE__, &local);
        pkt.ok = local_rc == 0;
    }
    if ((rc = boot->ops->broadcast(boot, &pkt, sizeof pkt, 0, st))) return rc;
    if (!pkt.ok) {
        if (c->rank != 0) return clv_fail(st, CLV_EDEVICE, "rank %d: rank 0 could not create the NCCL unique id", c->rank);
        *st = local;
        return local_rc;
    }
    *id = pkt.id;
    return 0;
}

/* (3) The world communicator, polled against the timeout. */
static int init_world(clv_comm *c, const ncclUniqueId *id, bool blocking, clv_status *st) {
    nccl_impl *im = c->impl;
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = blocking ? 1 : 0;
    int rc;
    if ((rc = CUDA_CALL(c->rank, cudaSetDevice(im->device)))) return rc;
    double t0 = clv_now();
    ncclResult_t r = ncclCommInitRankConfig(&im->world, c->world, *id, c->rank, &cfg);
    if ((rc = nccl_check(r, c->rank, "ncclCommInitRankConfig(&world, world, id, rank, &cfg)", __FILE__, __LINE__, st)))
        return fail_abort(c, rc, st);
    if (r == ncclInProgress && (rc = wait_ready(c, im->world, "initialisation", t0, st))) return rc;
    return 0;
}

int clv_comm_nccl(clv_comm **out, clv_comm *boot, int device, double timeout_s, clv_status *st) {
    *out = NULL;
    clv_comm *c = calloc(1, sizeof *c);
    nccl_impl *im = calloc(1, sizeof *im);
    if (!c || !im) {
        free(c);
        free(im);
        return clv_fail(st, CLV_ENOMEM, "out of memory");
    }
    c->ops = &k_nccl;
    c->impl = im;
    c->rank = boot->rank;
    c->world = boot->world;
    c->local_rank = boot->local_rank;
    c->local_world = boot->local_world;
    c->group_size = boot->world;
    c->timeout_s = timeout_s > 0 ? timeout_s : boot->timeout_s;
    c->device_buffers = true;
    im->device = device;
    const char *env = getenv("CLV_NCCL_BLOCKING");
    bool blocking = env && strcmp(env, "1") == 0;
    ncclUniqueId id;
    int rc;
    if ((rc = exchange_gpus(c, boot, st)) || (rc = share_id(c, boot, &id, st)) || (rc = init_world(c, &id, blocking, st))) {
        nccl_destroy(c);
        return rc;
    }
    int version = 0;
    if (ncclGetVersion(&version) != ncclSuccess) version = 0;
    clv_info("nccl: %d ranks, one GPU each, NCCL %d.%d.%d, %s communicators, timeout %g s\n", c->world,
             version / 10000, version / 100 % 100, version % 100, blocking ? "blocking" : "non-blocking", c->timeout_s);
    *out = c;
    return 0;
}
#else
typedef int clv_nccl_unused;
#endif
