/* The CUDA entry points of the library, as the rest of cleave sees them: they
 * load build/libcleave_cuda.so (plugin.h) on first use and call into it. In a
 * build without nvcc there is no library, and they say so. */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../comm/comm.h"
#include "../../util/util.h"
#include "../backend.h"
#include "plugin.h"

#define PLUGIN_NAME "libcleave_cuda.so"

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static const clv_cuda_plugin_api *g_api;
static char g_why[512];

/* Where the library is: $CLV_CUDA_PLUGIN, else next to the executable or one
 * folder up (build/cleave, build/tests/...), else the build folder it was
 * made in. */
static void load(void) {
#ifndef CLV_HAVE_CUDA
    snprintf(g_why, sizeof g_why, "this build has no CUDA backend (nvcc was not found when it was built)");
#else
    char exe[PATH_MAX], cand[3][PATH_MAX + 64];
    int n = 0;
    const char *env = getenv("CLV_CUDA_PLUGIN");
    if (env && *env) {
        snprintf(cand[n++], sizeof cand[0], "%s", env);
    } else {
        ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (len > 0) {
            exe[len] = 0;
            char *slash = strrchr(exe, '/');
            if (slash) {
                *slash = 0;
                snprintf(cand[n++], sizeof cand[0], "%s/%s", exe, PLUGIN_NAME);
                snprintf(cand[n++], sizeof cand[0], "%s/../%s", exe, PLUGIN_NAME);
            }
        }
#ifdef CLV_CUDA_PLUGIN_DIR
        snprintf(cand[n++], sizeof cand[0], "%s/%s", CLV_CUDA_PLUGIN_DIR, PLUGIN_NAME);
#endif
    }
    const char *err = "not found";
    for (int i = 0; i < n && !g_api; i++) {
        if (access(cand[i], R_OK) != 0) continue;
        void *h = dlopen(cand[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            snprintf(g_why, sizeof g_why, "cannot load the CUDA backend %.200s: %.250s", cand[i], dlerror());
            return;
        }
        clv_cuda_plugin_fn fn = (clv_cuda_plugin_fn)dlsym(h, "clv_cuda_plugin");
        const clv_cuda_plugin_api *api = fn ? fn() : NULL;
        if (!api || api->abi != CLV_CUDA_PLUGIN_ABI) {
            snprintf(g_why, sizeof g_why, "%.300s is not a CUDA backend of this cleave (rebuild it with make)", cand[i]);
            return;
        }
        g_api = api;
        err = NULL;
    }
    if (err)
        snprintf(g_why, sizeof g_why, "the CUDA backend %s was not found next to the executable (set CLV_CUDA_PLUGIN)",
                 PLUGIN_NAME);
#endif
}

static const clv_cuda_plugin_api *api(void) {
    pthread_once(&g_once, load);
    return g_api;
}

bool clv_cuda_built(void) { return api() != NULL; }

#ifdef CLV_HAVE_CUDA
/* Without the NVIDIA driver there is nothing to find, and loading the library
 * (cudart, cuBLAS) would cost the process its relocations for nothing. */
static bool driver_present(void) {
    return access("/dev/nvidiactl", F_OK) == 0 || access("/proc/driver/nvidia/version", F_OK) == 0 ||
           getenv("CLV_CUDA_PLUGIN") != NULL;
}
#endif

int clv_cuda_device_count(char *why, size_t cap) {
#ifdef CLV_HAVE_CUDA
    if (!driver_present()) {
        if (why && cap) snprintf(why, cap, "no NVIDIA driver on this machine (no /dev/nvidiactl)");
        return 0;
    }
#endif
    if (api()) return g_api->device_count(why, cap);
    if (why && cap) snprintf(why, cap, "%s", g_why);
    return 0;
}

int clv_cuda_mem_info(int device, uint64_t *free_bytes, uint64_t *total_bytes, clv_status *st) {
    if (api()) return g_api->mem_info(device, free_bytes, total_bytes, st);
    *free_bytes = *total_bytes = 0;
    return clv_fail(st, CLV_EUNSUPPORTED, "%s", g_why);
}

clv_backend *clv_cuda_backend_new(const char *name, int device, clv_status *st) {
    if (api()) return g_api->backend_new(name, device, st);
    clv_fail(st, CLV_EUNSUPPORTED, "%s: %s", name, g_why);
    return NULL;
}

double clv_cuda_copy_bandwidth(int device) { return api() ? g_api->copy_bandwidth(device) : 0; }

bool clv_nccl_built(void) { return api() && g_api->comm_nccl; }

int clv_comm_nccl(clv_comm **out, clv_comm *boot, int device, double timeout_s, clv_status *st) {
    *out = NULL;
    if (api() && g_api->comm_nccl) return g_api->comm_nccl(out, boot, device, timeout_s, st);
    return clv_fail(st, CLV_EUNSUPPORTED, "this build has no NCCL communicator (%s)",
                    g_api ? "nccl.h was not found when it was built" : g_why);
}
