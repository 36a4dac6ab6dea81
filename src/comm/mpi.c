/* The MPI communicator, for ranks on several hosts (or started by mpirun).
 * Built only where MPI is (the Makefile compiles this file with mpicc's
 * flags). Collectives are non-blocking calls polled against the timeout, so a
 * stalled job becomes an error instead of a hang; mpirun itself stops the job
 * when a rank dies. */
#ifdef CLV_HAVE_MPI
#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../util/util.h"
#include "comm.h"

static int wait_req(clv_comm *c, MPI_Request *req, const char *what, clv_status *st) {
    double t0 = clv_now();
    for (unsigned spins = 0;; spins++) {
        int done = 0;
        if (MPI_Test(req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return clv_fail(st, CLV_EIO, "rank %d: MPI %s failed", c->rank, what);
        if (done) return 0;
        if (clv_now() - t0 > c->timeout_s)
            return clv_fail(st, CLV_EIO, "rank %d: MPI %s: the other ranks did not respond within %.0f s", c->rank, what,
                            c->timeout_s);
        if (spins > 1000) nanosleep(&(struct timespec){0, 20000}, NULL);
    }
}

/* MPI needs no lockstep: ranks outside a group simply skip its collective. */
static MPI_Comm group_comm(clv_comm *c, int group) {
    if (group < 0) return MPI_COMM_WORLD;
    if (c->rank / c->group_size != group) return MPI_COMM_NULL;
    return *(MPI_Comm *)c->impl;
}

static int mpi_allreduce(clv_comm *c, float *buf, size_t n, int group, clv_status *st) {
    MPI_Request r;
    MPI_Comm comm = group_comm(c, group);
    if (comm == MPI_COMM_NULL) return 0;
    if (MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, comm, &r) != MPI_SUCCESS)
        return clv_fail(st, CLV_EIO, "rank %d: MPI_Iallreduce failed", c->rank);
    return wait_req(c, &r, "all-reduce", st);
}

static int mpi_allgather(clv_comm *c, const float *in, float *out, size_t n, int group, clv_status *st) {
    MPI_Request r;
    MPI_Comm comm = group_comm(c, group);
    if (comm == MPI_COMM_NULL) return 0;
    if (MPI_Iallgather(in, (int)n, MPI_FLOAT, out, (int)n, MPI_FLOAT, comm, &r) != MPI_SUCCESS)
        return clv_fail(st, CLV_EIO, "rank %d: MPI_Iallgather failed", c->rank);
    return wait_req(c, &r, "all-gather", st);
}

static int mpi_broadcast(clv_comm *c, void *buf, size_t bytes, int root, clv_status *st) {
    MPI_Request r;
    if (MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, MPI_COMM_WORLD, &r) != MPI_SUCCESS)
        return clv_fail(st, CLV_EIO, "rank %d: MPI_Ibcast failed", c->rank);
    return wait_req(c, &r, "broadcast", st);
}

static int mpi_barrier(clv_comm *c, clv_status *st) {
    MPI_Request r;
    if (MPI_Ibarrier(MPI_COMM_WORLD, &r) != MPI_SUCCESS) return clv_fail(st, CLV_EIO, "rank %d: MPI_Ibarrier failed", c->rank);
    return wait_req(c, &r, "barrier", st);
}

static int mpi_groups(clv_comm *c, int gs, clv_status *st) {
    if (gs < 1 || c->world % gs) return clv_fail(st, CLV_EINVAL, "groups of %d do not divide %d ranks", gs, c->world);
    MPI_Comm *sub = c->impl;
    if (*sub != MPI_COMM_NULL) MPI_Comm_free(sub);
    if (MPI_Comm_split(MPI_COMM_WORLD, c->rank / gs, c->rank, sub) != MPI_SUCCESS)
        return clv_fail(st, CLV_EIO, "rank %d: MPI_Comm_split failed", c->rank);
    c->group_size = gs;
    return 0;
}

static void mpi_destroy(clv_comm *c) {
    int fin = 0;
    MPI_Finalized(&fin);
    MPI_Comm *sub = c->impl;
    if (!fin && sub && *sub != MPI_COMM_NULL) MPI_Comm_free(sub);
    if (!fin) MPI_Finalize();
    free(c->impl);
    free(c);
}

static const clv_comm_ops k_mpi = {"mpi", mpi_allreduce, mpi_allgather, mpi_broadcast, mpi_barrier, mpi_groups,
                                   mpi_destroy};

int clv_comm_mpi(clv_comm **out, const clv_rankinfo *ri, double timeout_s, clv_status *st) {
    *out = NULL;
    if (!ri->mpi)
        return clv_fail(st, CLV_EUNSUPPORTED, "ranks on several hosts must be started by mpirun (MPI cannot join "
                        "processes started by cleave launch or torchrun across hosts)");
    int provided;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return clv_fail(st, CLV_EIO, "MPI_Init_thread failed");
    clv_comm *c = calloc(1, sizeof *c);
    MPI_Comm *sub = malloc(sizeof *sub);
    if (!c || !sub) {
        free(c);
        free(sub);
        return clv_fail(st, CLV_ENOMEM, "out of memory");
    }
    *sub = MPI_COMM_NULL;
    c->impl = sub;
    c->ops = &k_mpi;
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->world);
    c->group_size = c->world;
    c->local_rank = ri->local_rank;
    c->local_world = ri->local_world;
    c->timeout_s = timeout_s;
    if (c->rank != ri->rank || c->world != ri->world) {
        int r = c->rank, w = c->world;
        mpi_destroy(c);
        return clv_fail(st, CLV_EINVAL, "MPI says rank %d of %d, the environment rank %d of %d", r, w, ri->rank, ri->world);
    }
    *out = c;
    return 0;
}
#else
typedef int clv_mpi_unused;
#endif
