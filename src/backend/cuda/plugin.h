/* plugin — the CUDA backend and the NCCL communicator live in a shared
 * library of their own, build/libcleave_cuda.so, loaded the first time a
 * cuda:N device or NCCL is asked for (cuda_loader.c). A CPU-only run never
 * maps cudart, cuBLAS or NCCL, whose relocations alone would cost a process
 * over 150 MB of resident memory.
 *
 * The library exports one symbol, clv_cuda_plugin(), everything else in it is
 * hidden; it calls back into the executable for logging and errors
 * (clv_fail, clv_info, ...), which the executable exports (-rdynamic). */
#ifndef CLV_CUDA_PLUGIN_H
#define CLV_CUDA_PLUGIN_H

#include "../../comm/comm.h"
#include "../backend.h"

/* raised whenever this table, clv_backend_ops or an op's argument struct changes */
#define CLV_CUDA_PLUGIN_ABI 3

typedef struct clv_cuda_plugin_api {
    int abi; /* CLV_CUDA_PLUGIN_ABI */
    int (*device_count)(char *why, size_t cap);
    int (*mem_info)(int device, uint64_t *free_bytes, uint64_t *total_bytes, clv_status *st);
    clv_backend *(*backend_new)(const char *name, int device, clv_status *st);
    double (*copy_bandwidth)(int device);
    /* NULL when the library was built without NCCL */
    int (*comm_nccl)(clv_comm **out, clv_comm *boot, int device, double timeout_s, clv_status *st);
} clv_cuda_plugin_api;

typedef const clv_cuda_plugin_api *(*clv_cuda_plugin_fn)(void);

#endif
