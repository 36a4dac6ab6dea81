/* cuda_emu — run the CUDA backend's kernels (src/backend/cuda/kernels.cu) on
 * the CPU, to check their indexing, splits and barriers on machines without
 * a GPU. Not a performance model and not the real GPU arithmetic (no FMA
 * contraction differences, exact libm): it answers "does every thread
 * compute the right thing with the right data", nothing more.
 *
 * Each block runs its threads as cooperative fibers (ucontext), one after
 * another; __syncthreads and the warp shuffles are barriers at which a fiber
 * yields until every live thread of its block (or warp) has arrived. A
 * barrier that can never complete (divergent __syncthreads, a shuffle with
 * part of a warp gone) aborts with a message. __shared__ becomes `static`:
 * blocks run one at a time, so one copy per kernel is enough.
 *
 * Kernel launches `k<<<grid, block, shm, stream>>>(args)` are rewritten to
 * `emu_launch(emu_cfg(grid, block, shm, stream), k, args)` by run.sh. */
#ifndef CLV_CUDA_EMU_H
#define CLV_CUDA_EMU_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <algorithm>
#include <tuple>
#include <vector>

extern "C" {
float clv_f16_to_f32(uint16_t h);
uint16_t clv_f32_to_f16(float f);
}

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __restrict__ __restrict

using std::max;
using std::min;

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct emu_idx {
    unsigned x, y, z;
};
inline emu_idx threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
typedef struct emu_stream *cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2, cudaErrorNotReady = 600 };
inline cudaError_t cudaGetLastError(void) { return cudaSuccess; }

/* ---- device intrinsics ---------------------------------------------------------------- */

/* Loads must be naturally aligned, as on the GPU (where a misaligned 16-byte load faults). */
template <class T> inline T emu_load(const T *p) {
    if ((uintptr_t)p % sizeof(T)) {
        fprintf(stderr, "cuda_emu: misaligned %zu-byte load at %p\n", sizeof(T), (const void *)p);
        abort();
    }
    return *p;
}
template <class T> inline T __ldg(const T *p) { return emu_load(p); }
template <class T> inline T __ldcs(const T *p) { return emu_load(p); }
inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline float __fmul_rn(float a, float b) {
    volatile float r = a * b;
    return r;
}
inline float __fadd_rn(float a, float b) {
    volatile float r = a + b;
    return r;
}
inline float __fsub_rn(float a, float b) {
    volatile float r = a - b;
    return r;
}

struct __half {
    unsigned short b;
};
struct __nv_bfloat16 {
    unsigned short b;
};
inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
inline float __half2float(__half h) { return clv_f16_to_f32(h.b); }
inline __half __float2half_rn(float f) { return __half{clv_f32_to_f16(f)}; }
inline float __bfloat162float(__nv_bfloat16 h) { return __uint_as_float((unsigned)h.b << 16); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{(unsigned short)((u >> 16) | 0x40)};
    return __nv_bfloat16{(unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}

/* ---- fibers ------------------------------------------------------------------------------ */

enum { EMU_RUN, EMU_BLOCK_BAR, EMU_WARP_BAR, EMU_DONE };

struct emu_fiber {
    ucontext_t ctx;
    int state;
    char *stack;
};

struct emu_block {
    std::vector<emu_fiber> f;
    int cur;
    ucontext_t sched;
    void (*body)(void *);
    void *arg;
    double slot[1024]; /* shuffle exchange, one per thread */
};
inline emu_block g_emu;

inline void emu_set_idx(int t) {
    threadIdx.x = (unsigned)t % blockDim.x;
    threadIdx.y = (unsigned)t / blockDim.x % blockDim.y;
    threadIdx.z = (unsigned)t / (blockDim.x * blockDim.y);
}

inline void emu_yield(int state) {
    emu_fiber &me = g_emu.f[g_emu.cur];
    me.state = state;
    swapcontext(&me.ctx, &g_emu.sched);
    emu_set_idx(g_emu.cur);
}

inline void emu_trampoline(void) {
    g_emu.body(g_emu.arg);
    g_emu.f[g_emu.cur].state = EMU_DONE;
}

inline void __syncthreads(void) { emu_yield(EMU_BLOCK_BAR); }

template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int o) {
    (void)mask;
    const int t = g_emu.cur, base = t & ~31;
    g_emu.slot[t] = (double)v;
    emu_yield(EMU_WARP_BAR);
    T r = (T)g_emu.slot[base + ((t & 31) ^ o)];
    emu_yield(EMU_WARP_BAR);
    return r;
}

/* Run one block of n threads, each calling body(arg). */
inline void emu_run_block(int n, void (*body)(void *), void *arg) {
    const size_t stack_bytes = 256 * 1024;
    if ((int)g_emu.f.size() < n) {
        size_t old = g_emu.f.size();
        g_emu.f.resize((size_t)n);
        for (size_t i = old; i < (size_t)n; i++) g_emu.f[i].stack = (char *)malloc(stack_bytes);
    }
    g_emu.body = body;
    g_emu.arg = arg;
    for (int i = 0; i < n; i++) {
        emu_fiber &f = g_emu.f[i];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = stack_bytes;
        f.ctx.uc_link = &g_emu.sched;
        makecontext(&f.ctx, emu_trampoline, 0);
        f.state = EMU_RUN;
    }
    for (;;) {
        bool ran = false;
        for (int i = 0; i < n; i++)
            if (g_emu.f[i].state == EMU_RUN) {
                g_emu.cur = i;
                emu_set_idx(i);
                swapcontext(&g_emu.sched, &g_emu.f[i].ctx);
                ran = true;
            }
        if (ran) continue;
        /* nobody can run: release complete barriers */
        int live = 0, at_block = 0;
        for (int i = 0; i < n; i++) {
            live += g_emu.f[i].state != EMU_DONE;
            at_block += g_emu.f[i].state == EMU_BLOCK_BAR;
        }
        if (live == 0) return;
        bool released = false;
        if (at_block == live) {
            for (int i = 0; i < n; i++)
                if (g_emu.f[i].state == EMU_BLOCK_BAR) g_emu.f[i].state = EMU_RUN;
            released = true;
        }
        for (int w = 0; w * 32 < n; w++) {
            int lanes = 0, waiting = 0;
            for (int i = w * 32; i < w * 32 + 32 && i < n; i++) {
                lanes += g_emu.f[i].state != EMU_DONE;
                waiting += g_emu.f[i].state == EMU_WARP_BAR;
            }
            if (waiting && waiting == 32) {
                for (int i = w * 32; i < w * 32 + 32; i++) g_emu.f[i].state = EMU_RUN;
                released = true;
            } else if (waiting && waiting == lanes) {
                fprintf(stderr, "cuda_emu: a shuffle in warp %d of block (%u,%u) with only %d lanes live\n", w,
                        blockIdx.x, blockIdx.y, lanes);
                abort();
            }
        }
        if (!released) {
            fprintf(stderr, "cuda_emu: deadlock in block (%u,%u): %d threads at __syncthreads, %d live\n",
                    blockIdx.x, blockIdx.y, at_block, live);
            abort();
        }
    }
}

struct emu_cfg {
    dim3 grid, block;
    emu_cfg(dim3 g, dim3 b, size_t shm = 0, cudaStream_t s = 0) : grid(g), block(b) {
        (void)shm;
        (void)s;
    }
};

template <class... P> struct emu_call {
    void (*k)(P...);
    std::tuple<P...> args;
    static void run(void *self) {
        emu_call *c = (emu_call *)self;
        std::apply(c->k, c->args);
    }
};

inline long g_emu_launches;

template <class... P, class... A> void emu_launch(emu_cfg c, void (*k)(P...), A... a) {
    if (c.grid.x == 0 || c.block.x == 0 || c.block.x * c.block.y * c.block.z > 1024) {
        fprintf(stderr, "cuda_emu: invalid launch (%u blocks of %u threads)\n", c.grid.x, c.block.x);
        abort();
    }
    g_emu_launches++;
    emu_call<P...> call{k, std::tuple<P...>((P)a...)};
    gridDim = c.grid;
    blockDim = c.block;
    const int n = (int)(c.block.x * c.block.y * c.block.z);
    for (unsigned z = 0; z < c.grid.z; z++)
        for (unsigned y = 0; y < c.grid.y; y++)
            for (unsigned x = 0; x < c.grid.x; x++) {
                blockIdx.x = x, blockIdx.y = y, blockIdx.z = z;
                emu_run_block(n, emu_call<P...>::run, &call);
            }
}

#include "cuda_rt_emu.h"

#endif
