/* Rank environment, communicator selection, the single-process communicator,
 * and the process launcher. */
#include "comm.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../util/util.h"

static int env_int(const char *name, int def, int lo, int hi, int *out, clv_status *st) {
    const char *v = getenv(name);
    int64_t x;
    if (!v || !*v) {
        *out = def;
        return 0;
    }
    if (!clv_parse_i64(v, &x) || x < lo || x > hi)
        return clv_fail(st, CLV_EINVAL, "environment %s=%s: expected an integer in [%d, %d]", name, v, lo, hi);
    *out = (int)x;
    return 0;
}

int clv_rankinfo_from_env(clv_rankinfo *ri, clv_status *st) {
    memset(ri, 0, sizeof *ri);
    int rc;
    if (getenv("OMPI_COMM_WORLD_SIZE") && !getenv("RANK")) {
        ri->mpi = 1;
        if ((rc = env_int("OMPI_COMM_WORLD_SIZE", 1, 1, 1 << 20, &ri->world, st)) ||
            (rc = env_int("OMPI_COMM_WORLD_RANK", 0, 0, ri->world - 1, &ri->rank, st)) ||
            (rc = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", ri->world, 1, ri->world, &ri->local_world, st)) ||
            (rc = env_int("OMPI_COMM_WORLD_LOCAL_RANK", ri->rank, 0, ri->local_world - 1, &ri->local_rank, st)))
            return rc;
        return 0;
    }
    if ((rc = env_int("WORLD_SIZE", 1, 1, 1 << 20, &ri->world, st)) ||
        (rc = env_int("RANK", 0, 0, ri->world - 1, &ri->rank, st)) ||
        (rc = env_int("LOCAL_WORLD_SIZE", ri->world, 1, ri->world, &ri->local_world, st)) ||
        (rc = env_int("LOCAL_RANK", ri->rank % ri->local_world, 0, ri->local_world - 1, &ri->local_rank, st)) ||
        (rc = env_int("MASTER_PORT", 29500, 1, 65535, &ri->master_port, st)))
        return rc;
    const char *addr = getenv("MASTER_ADDR");
    snprintf(ri->master_addr, sizeof ri->master_addr, "%s", addr && *addr ? addr : "127.0.0.1");
    return 0;
}

/* ---- single process ---------------------------------------------------------------- */

static int single_allreduce(clv_comm *c, float *buf, size_t n, int group, clv_status *st) {
    (void)c, (void)buf, (void)n, (void)group, (void)st;
    return 0;
}
static int single_allgather(clv_comm *c, const float *in, float *out, size_t n, int group, clv_status *st) {
    (void)c, (void)st, (void)group;
    if (in != out) memmove(out, in, n * sizeof(float));
    return 0;
}
static int single_broadcast(clv_comm *c, void *buf, size_t bytes, int root, clv_status *st) {
    (void)c, (void)buf, (void)bytes, (void)root, (void)st;
    return 0;
}
static int single_barrier(clv_comm *c, clv_status *st) {
    (void)c, (void)st;
    return 0;
}
static int single_groups(clv_comm *c, int gs, clv_status *st) {
    (void)c, (void)gs, (void)st;
    return 0;
}
static void single_destroy(clv_comm *c) { free(c); }

static const clv_comm_ops k_single = {"single", single_allreduce, single_allgather, single_broadcast, single_barrier,
                                      single_groups, single_destroy};

int clv_comm_single(clv_comm **out, clv_status *st) {
    clv_comm *c = calloc(1, sizeof *c);
    if (!c) return clv_fail(st, CLV_ENOMEM, "out of memory");
    c->ops = &k_single;
    c->world = c->local_world = c->group_size = 1;
    *out = c;
    return 0;
}

int clv_comm_open(clv_comm **out, const clv_rankinfo *ri, double timeout_s, clv_status *st) {
    if (ri->world == 1) return clv_comm_single(out, st);
    if (ri->mpi || ri->local_world != ri->world) return clv_comm_mpi(out, ri, timeout_s, st);
    return clv_comm_shm(out, ri, timeout_s, st);
}

void clv_comm_close(clv_comm *c) {
    if (c) c->ops->destroy(c);
}

/* ---- launcher ------------------------------------------------------------------------ */

static volatile sig_atomic_t g_got_signal;
static void on_signal(int sig) { g_got_signal = sig; }

int clv_launch(char *const argv[], int nproc, int nnodes, int node_rank, const char *master_addr, int master_port,
               clv_status *st) {
    if (nproc < 1 || nnodes < 1 || node_rank < 0 || node_rank >= nnodes)
        return clv_fail(st, CLV_EINVAL, "launch: need --nproc-per-node >= 1 and 0 <= --node-rank < --nnodes");
    pid_t *pids = calloc((size_t)nproc, sizeof *pids);
    if (!pids) return clv_fail(st, CLV_ENOMEM, "out of memory");
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    pid_t parent = getpid();
    int started = 0, rc = 0;
    for (int i = 0; i < nproc; i++) {
        pid_t p = fork();
        if (p < 0) {
            rc = clv_fail(st, CLV_EIO, "launch: fork failed: %s", strerror(errno));
            break;
        }
        if (p == 0) {
            /* a rank never outlives its launcher */
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent) _exit(1);
            char v[64];
            snprintf(v, sizeof v, "%d", node_rank * nproc + i), setenv("RANK", v, 1);
            snprintf(v, sizeof v, "%d", nproc * nnodes), setenv("WORLD_SIZE", v, 1);
            snprintf(v, sizeof v, "%d", i), setenv("LOCAL_RANK", v, 1);
            snprintf(v, sizeof v, "%d", nproc), setenv("LOCAL_WORLD_SIZE", v, 1);
            snprintf(v, sizeof v, "%d", master_port), setenv("MASTER_PORT", v, 1);
            setenv("MASTER_ADDR", master_addr, 1);
            execvp(argv[0], argv);
            fprintf(stderr, "cleave launch: cannot run %s: %s\n", argv[0], strerror(errno));
            _exit(127);
        }
        pids[started++] = p;
    }
    /* wait; the first failure stops the others */
    int alive = started, first_bad = 0;
    while (alive > 0) {
        int status;
        pid_t p = waitpid(-1, &status, 0);
        if (p < 0) {
            if (errno == EINTR && g_got_signal) {
                for (int i = 0; i < started; i++)
                    if (pids[i]) kill(pids[i], g_got_signal);
                g_got_signal = 0;
                continue;
            }
            if (errno == EINTR) continue;
            break;
        }
        int idx = -1;
        for (int i = 0; i < started; i++)
            if (pids[i] == p) idx = i;
        if (idx < 0) continue;
        pids[idx] = 0;
        alive--;
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        if (code != 0 && !first_bad) {
            first_bad = code;
            fprintf(stderr, "cleave launch: rank %d (pid %d) %s %d; stopping the other ranks\n", node_rank * nproc + idx,
                    (int)p, WIFSIGNALED(status) ? "was killed by signal" : "exited with status",
                    WIFSIGNALED(status) ? WTERMSIG(status) : code);
            for (int i = 0; i < started; i++)
                if (pids[i]) kill(pids[i], SIGTERM);
        }
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    free(pids);
    if (rc) return rc;
    return first_bad;
}
