/* comm — communicators between the ranks of one job, behind one vtable:
 * single process (no-op), shared memory between the processes of one host,
 * MPI across hosts, NCCL between GPUs. Every collective has a
 * timeout: a rank that died or stalls becomes an error naming it on every
 * other rank, never a hang. Knows nothing about models. */
#ifndef CLV_COMM_H
#define CLV_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "cleave.h"

typedef struct clv_comm clv_comm;

/* Groups: the ranks are split into consecutive blocks of `group_size` (the
 * tensor-parallel groups of a TP x PP mesh). A collective over group g
 * combines the ranks g*group_size .. (g+1)*group_size-1; group -1 is every
 * rank. Every rank of the communicator makes every call, in the same order;
 * ranks outside the group pass through with their buffers unchanged. */
typedef struct clv_comm_ops {
    const char *name;
    /* buf[0..n) = sum over the group's ranks of buf[0..n), on each of them */
    int (*allreduce_sum)(clv_comm *c, float *buf, size_t n, int group, clv_status *st);
    /* out[i*n .. (i+1)*n) = in[0..n) of the group's i-th rank, on each of them */
    int (*allgather)(clv_comm *c, const float *in, float *out, size_t n, int group, clv_status *st);
    /* buf[0..bytes) from `root` to every rank */
    int (*broadcast)(clv_comm *c, void *buf, size_t bytes, int root, clv_status *st);
    int (*barrier)(clv_comm *c, clv_status *st);
    /* collective: make groups of `group_size` consecutive ranks */
    int (*set_group_size)(clv_comm *c, int group_size, clv_status *st);
    void (*destroy)(clv_comm *c);
} clv_comm_ops;

struct clv_comm {
    const clv_comm_ops *ops;
    int rank, world;
    int local_rank, local_world;
    int group_size; /* world unless set_group_size said otherwise */
    double timeout_s;
    bool device_buffers; /* collectives also take memory of this rank's CUDA device (NCCL) */
    void *impl;
};

/* Where this process sits in a job, from the environment the launchers set:
 * cleave launch / torchrun (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
 * MASTER_ADDR, MASTER_PORT) or mpirun (OMPI_COMM_WORLD_*). */
typedef struct clv_rankinfo {
    int rank, world, local_rank, local_world;
    char master_addr[128];
    int master_port;
    int mpi; /* started by mpirun */
} clv_rankinfo;
int clv_rankinfo_from_env(clv_rankinfo *ri, clv_status *st);

/* The communicator for this job: single when world == 1, shared memory when
 * every rank is on this host, MPI otherwise (or when started by mpirun). */
int clv_comm_open(clv_comm **out, const clv_rankinfo *ri, double timeout_s, clv_status *st);
void clv_comm_close(clv_comm *c);

int clv_comm_single(clv_comm **out, clv_status *st);
int clv_comm_shm(clv_comm **out, const clv_rankinfo *ri, double timeout_s, clv_status *st);
int clv_comm_mpi(clv_comm **out, const clv_rankinfo *ri, double timeout_s, clv_status *st); /* CLV_EUNSUPPORTED without MPI */
/* NCCL over the ranks' GPUs, one CUDA device per rank (`device` on this rank).
 * `boot` (every rank, any host communicator) carries the unique id and checks
 * that no two ranks share a GPU, which NCCL refuses (CLV_EUNSUPPORTED then: stay on
 * `boot` and stage through host memory). Collectives take device or host
 * pointers. `boot` must outlive the result. CLV_EUNSUPPORTED without NCCL. */
int clv_comm_nccl(clv_comm **out, clv_comm *boot, int device, double timeout_s, clv_status *st);
bool clv_nccl_built(void);

/* ---- launching one process per rank ---------------------------------------------- */

/* Run argv as `nproc` local processes with the rank environment set (ranks
 * node_rank*nproc + i). Waits for all; if one fails, the others are stopped.
 * Returns the first non-zero exit status (0 when all succeed). */
int clv_launch(char *const argv[], int nproc, int nnodes, int node_rank, const char *master_addr, int master_port,
               clv_status *st);

#endif
