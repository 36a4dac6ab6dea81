/* The CUDA backend: one instance per GPU, ops queued in order on one compute
 * stream (cuBLAS bound to it), weight staging on a second, copy stream.
 *
 * Errors are sticky (backend.h): every CUDA and cuBLAS call goes through CU()
 * or CUBLAS(), which on failure records the first message, naming the call,
 * file, line, rank and device; every op after that does nothing, and check()
 * hands the message to the caller. Kernels live in kernels.cu.
 *
 * Streams and events:
 *   compute  every op, to_device / to_host / copy, cuBLAS
 *   copy     stage(): waits for slot_free[slot] (recorded on compute by the
 *            slot's last stage_release), copies, records slot_ready[slot];
 *            stage_wait makes compute wait for slot_ready[slot].
 * Both streams are non-blocking (no implicit sync with the legacy stream). */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* util.h is C11; its _Noreturn is spelled [[noreturn]] in C++. */
#define _Noreturn [[noreturn]]
extern "C" {
#include "../../util/util.h"
#include "../backend.h"
#include "plugin.h"
}
#undef _Noreturn

#include "cuda.h"
#include "cuda_kernels.h"

/* Matmuls with more tokens than this go to cuBLAS. */
#define GEMM_MIN_T (CLV_CUDA_GEMV_MAX_T + 1)

typedef struct cuda_impl {
    int device;
    int n_sm;
    cudaStream_t compute, copy;
    cublasHandle_t blas;
    cudaEvent_t slot_ready[CLV_STAGE_SLOTS], slot_free[CLV_STAGE_SLOTS];
    bool slot_released[CLV_STAGE_SLOTS]; /* slot_free has been recorded at least once */
    /* matmul (cuBLAS path): x as hi + lo 16-bit halves, then T inverse scales; grown on demand */
    void *mm_scratch;
    size_t mm_cap;
    /* attention split partials, sized once for the most splits attn_splits() picks */
    float *attn_part;
    size_t attn_part_cap; /* floats */
    bool failed;
    char err[1024];
} cuda_impl;

static cuda_impl *impl_of(clv_backend *b) { return (cuda_impl *)b->impl; }

/* ---- errors ------------------------------------------------------------------ */

/* Record the first error; later ones are consequences. */
static void set_error(cuda_impl *im, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(cuda_impl *im, const char *fmt, ...) {
    if (im->failed) return;
    im->failed = true;
    int n = snprintf(im->err, sizeof im->err, "cuda:%d (rank %d): ", im->device, clv_log_rank());
    if (n < 0 || (size_t)n >= sizeof im->err) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(im->err + n, sizeof im->err - (size_t)n, fmt, ap);
    va_end(ap);
}

static bool cu_ok(cuda_impl *im, cudaError_t e, const char *call, const char *file, int line) {
    if (e == cudaSuccess) return true;
    (void)cudaGetLastError(); /* clear a non-sticky error so it is not reported again by an unrelated launch */
    set_error(im, "%s failed at %s:%d: %s", call, file, line, cudaGetErrorString(e));
    return false;
}

static bool cublas_ok(cuda_impl *im, cublasStatus_t e, const char *call, const char *file, int line) {
    if (e == CUBLAS_STATUS_SUCCESS) return true;
    set_error(im, "%s failed at %s:%d: %s", call, file, line, cublasGetStatusString(e));
    return false;
}

#define CU(im, call) cu_ok((im), (call), #call, __FILE__, __LINE__)
#define CUBLAS(im, call) cublas_ok((im), (call), #call, __FILE__, __LINE__)

/* Every op starts here: nothing runs after an error, and the calls below go
 * to this backend's device (a process may drive several). */
static cuda_impl *enter(clv_backend *b) {
    cuda_impl *im = impl_of(b);
    if (im->failed) return NULL;
    if (!CU(im, cudaSetDevice(im->device))) return NULL;
    return im;
}

/* ---- memory -------------------------------------------------------------------- */

/* Zeroed device memory. The memset runs on the compute stream and is waited
 * for, so copies on the copy stream (stage) can never race it. */
static void *cuda_alloc(clv_backend *b, size_t bytes) {
    cuda_impl *im = enter(b);
    if (!im) return NULL;
    void *p = NULL;
    if (!CU(im, cudaMalloc(&p, bytes ? bytes : 1))) return NULL;
    if (!CU(im, cudaMemsetAsync(p, 0, bytes, im->compute)) || !CU(im, cudaStreamSynchronize(im->compute))) {
        cudaFree(p);
        return NULL;
    }
    return p;
}

/* Waits for both streams first: queued work may still use p. */
static void cuda_free(clv_backend *b, void *p) {
    cuda_impl *im = impl_of(b);
    if (!p) return;
    if (im->failed) { /* best effort: the device may be unusable */
        cudaSetDevice(im->device);
        cudaFree(p);
        (void)cudaGetLastError();
        return;
    }
    if (CU(im, cudaSetDevice(im->device)) && CU(im, cudaStreamSynchronize(im->compute)) &&
        CU(im, cudaStreamSynchronize(im->copy)))
        CU(im, cudaFree(p));
}

static void *cuda_alloc_host(clv_backend *b, size_t bytes) {
    cuda_impl *im = enter(b);
    if (!im) return NULL;
    void *p = NULL;
    if (!CU(im, cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocPortable))) return NULL;
    memset(p, 0, bytes);
    return p;
}

static void cuda_free_host(clv_backend *b, void *p) {
    cuda_impl *im = impl_of(b);
    if (!p) return;
    if (im->failed) {
        cudaFreeHost(p);
        (void)cudaGetLastError();
        return;
    }
    if (CU(im, cudaSetDevice(im->device)) && CU(im, cudaStreamSynchronize(im->compute)) &&
        CU(im, cudaStreamSynchronize(im->copy)))
        CU(im, cudaFreeHost(p));
}

/* Scratch grown to the largest request; the old buffer may still be read by
 * queued kernels, so growing waits for the compute stream first. */
static void *scratch_get(cuda_impl *im, void **p, size_t *cap, size_t bytes) {
    if (*cap >= bytes) return *p;
    if (*p) {
        if (!CU(im, cudaStreamSynchronize(im->compute)) || !CU(im, cudaFree(*p))) return NULL;
        *p = NULL;
        *cap = 0;
    }
    size_t want = bytes + bytes / 4; /* some headroom: prefill chunks vary a little */
    if (!CU(im, cudaMalloc(p, want))) {
        *p = NULL;
        return NULL;
    }
    *cap = want;
    return *p;
}

/* ---- copies -------------------------------------------------------------------- */

static void cuda_copy(clv_backend *b, void *dst, const void *src, size_t bytes) {
    cuda_impl *im = enter(b);
    if (!im || bytes == 0) return;
    CU(im, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, im->compute));
}

/* Synchronous: the host buffer may be reused (or be pinned memory the caller
 * rewrites) as soon as this returns. */
static void cuda_to_device(clv_backend *b, void *dst, const void *src_host, size_t bytes) {
    cuda_impl *im = enter(b);
    if (!im || bytes == 0) return;
    if (CU(im, cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, im->compute)))
        CU(im, cudaStreamSynchronize(im->compute));
}

/* Queued after every op before it, then waited for. */
static void cuda_to_host(clv_backend *b, void *dst_host, const void *src, size_t bytes) {
    cuda_impl *im = enter(b);
    if (!im || bytes == 0) return;
    if (CU(im, cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, im->compute)))
        CU(im, cudaStreamSynchronize(im->compute));
}

static void cuda_sync(clv_backend *b) {
    cuda_impl *im = enter(b);
    if (!im) return;
    if (CU(im, cudaStreamSynchronize(im->compute))) CU(im, cudaStreamSynchronize(im->copy));
}

/* Also picks up a failure of work already queued (an illegal address in a
 * kernel, say) without waiting for it: cudaStreamQuery reports it. */
static int cuda_check(clv_backend *b, clv_status *st) {
    cuda_impl *im = impl_of(b);
    if (!im->failed && CU(im, cudaSetDevice(im->device))) {
        cudaError_t e = cudaStreamQuery(im->compute);
        if (e != cudaErrorNotReady) cu_ok(im, e, "cudaStreamQuery(im->compute)", __FILE__, __LINE__);
    }
    if (!im->failed) return 0;
    return clv_fail(st, CLV_EDEVICE, "%s", im->err);
}

/* ---- weight staging -------------------------------------------------------------
 * src_host should be pinned (alloc_host) for the copy to run beside the
 * compute ops; from pageable memory the driver stages it through its own
 * buffer and the call may block until the copy is done. */

static bool slot_ok(cuda_impl *im, int slot, const char *op) {
    if (slot >= 0 && slot < CLV_STAGE_SLOTS) return true;
    set_error(im, "%s: slot %d is not in 0..%d", op, slot, CLV_STAGE_SLOTS - 1);
    return false;
}

static void cuda_stage(clv_backend *b, int slot, void *dst, const void *src_host, size_t bytes) {
    cuda_impl *im = enter(b);
    if (!im || !slot_ok(im, slot, "stage")) return;
    if (im->slot_released[slot] && !CU(im, cudaStreamWaitEvent(im->copy, im->slot_free[slot], 0))) return;
    if (bytes && !CU(im, cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, im->copy))) return;
    CU(im, cudaEventRecord(im->slot_ready[slot], im->copy));
}

/* A slot never staged has an unrecorded event: waiting on it is a no-op. */
static void cuda_stage_wait(clv_backend *b, int slot) {
    cuda_impl *im = enter(b);
    if (!im || !slot_ok(im, slot, "stage_wait")) return;
    CU(im, cudaStreamWaitEvent(im->compute, im->slot_ready[slot], 0));
}

static void cuda_stage_release(clv_backend *b, int slot) {
    cuda_impl *im = enter(b);
    if (!im || !slot_ok(im, slot, "stage_release")) return;
    if (CU(im, cudaEventRecord(im->slot_free[slot], im->compute))) im->slot_released[slot] = true;
}

/* ---- ops ------------------------------------------------------------------------ */

static bool weight_type(cuda_impl *im, const clv_mat *w, const char *op, int *wt) {
    size_t es;
    switch (w->dt) {
    case CLV_DT_F32: *wt = CLV_CUDA_W_F32, es = 4; break;
    case CLV_DT_BF16: *wt = CLV_CUDA_W_BF16, es = 2; break;
    case CLV_DT_F16: *wt = CLV_CUDA_W_F16, es = 2; break;
    default: set_error(im, "%s: weights of dtype %s are not supported", op, clv_dtype_name(w->dt)); return false;
    }
    if ((uintptr_t)w->data % es != 0) {
        set_error(im, "%s: %s weights at %p are not aligned to their element size", op, clv_dtype_name(w->dt),
                  w->data);
        return false;
    }
    return true;
}

/* T <= 8: the GEMV kernel (weights read once). Larger T: cuBLAS, row-major
 * W[rows][cols] being column-major cols x rows, so y^T (rows x T, ld rows) =
 * W^T-op(W) * x^T; 16-bit weights take x as hi + lo (kernels.cu) in two GEMMs
 * with f32 accumulation (with bf16_prefill, hi alone in one GEMM: x rounded to
 * the weights' 16-bit type); f32 weights use SGEMM in the default math mode
 * (no TF32). Bias (and f16's per-token scale) are applied afterwards. */
static void cuda_matmul(clv_backend *b, float *y, const float *x, const clv_mat *w, const float *bias, int T) {
    cuda_impl *im = enter(b);
    int wt;
    if (!im || T <= 0 || w->rows <= 0 || !weight_type(im, w, "matmul", &wt)) return;
    const int rows = w->rows, cols = w->cols;
    if (T < GEMM_MIN_T) {
        CU(im, clv_cuda_gemv(im->compute, wt, y, x, w->data, bias, rows, cols, T, im->n_sm));
        return;
    }
    const float one = 1.0f, zero = 0.0f;
    if (wt == CLV_CUDA_W_F32) {
        if (!CUBLAS(im, cublasSgemm(im->blas, CUBLAS_OP_T, CUBLAS_OP_N, rows, T, cols, &one, (const float *)w->data,
                                    cols, x, cols, &zero, y, rows)))
            return;
        CU(im, clv_cuda_scale_bias(im->compute, y, NULL, bias, rows, T));
        return;
    }
    const size_t half_bytes = ((size_t)T * cols * 2 + 255) & ~(size_t)255;
    char *s = (char *)scratch_get(im, &im->mm_scratch, &im->mm_cap, 2 * half_bytes + sizeof(float) * (size_t)T);
    if (!s) return;
    void *hi = s, *lo = s + half_bytes;
    float *inv_scale = wt == CLV_CUDA_W_F16 ? (float *)(s + 2 * half_bytes) : NULL;
    const cudaDataType dt = wt == CLV_CUDA_W_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    if (!CU(im, clv_cuda_split_x(im->compute, wt, hi, lo, inv_scale, x, T, cols))) return;
    if (!CUBLAS(im, cublasGemmEx(im->blas, CUBLAS_OP_T, CUBLAS_OP_N, rows, T, cols, &one, w->data, dt, cols, hi, dt,
                                 cols, &zero, y, CUDA_R_32F, rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)))
        return;
    if (!b->bf16_prefill && /* else hi alone: x rounded to 16 bits, one pass */
        !CUBLAS(im, cublasGemmEx(im->blas, CUBLAS_OP_T, CUBLAS_OP_N, rows, T, cols, &one, w->data, dt, cols, lo, dt,
                                 cols, &one, y, CUDA_R_32F, rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)))
        return;
    CU(im, clv_cuda_scale_bias(im->compute, y, inv_scale, bias, rows, T));
}

static void cuda_rmsnorm(clv_backend *b, float *y, const float *x, const float *w, int rows, int dim, float eps) {
    cuda_impl *im = enter(b);
    if (!im) return;
    CU(im, clv_cuda_rmsnorm(im->compute, y, x, w, rows, dim, eps));
}

static void cuda_rope(clv_backend *b, float *x, int T, int n_heads, int hd, int pos0, const float *cos_t,
                      const float *sin_t) {
    cuda_impl *im = enter(b);
    if (!im) return;
    CU(im, clv_cuda_rope(im->compute, x, T, n_heads, hd, pos0, cos_t, sin_t));
}

/* Blocks the attention grid needs to keep every SM busy. */
static long attn_target_blocks(const cuda_impl *im) { return 4L * im->n_sm; }

/* Key splits per query: 1 when T * n_heads blocks already fill the GPU (prefill);
 * for decode enough to reach the target, but no split shorter than 256 keys. */
static int attn_splits(const cuda_impl *im, const clv_attn_args *a) {
    const long blocks = (long)a->T * a->n_heads, target = attn_target_blocks(im);
    if (blocks >= target) return 1;
    long keys = (long)a->pos0 + a->T;
    if (a->window > 0 && a->window < keys) keys = a->window;
    long ns = (target + blocks - 1) / blocks, by_keys = (keys + 255) / 256;
    if (ns > by_keys) ns = by_keys;
    if (ns > 64) ns = 64;
    return ns < 1 ? 1 : (int)ns;
}

static void cuda_kv_store(clv_backend *b, void *kc, void *vc, const float *k, const float *v,
                          const clv_attn_args *a) {
    cuda_impl *im = enter(b);
    if (!im) return;
    CU(im, clv_cuda_kv_store(im->compute, kc, vc, k, v, a));
}

static void cuda_attention(clv_backend *b, float *out, const float *q, const void *kc, const void *vc,
                           const clv_attn_args *a) {
    CLV_ASSERT(a->head_dim > 0 && a->head_dim <= CLV_MAX_HEAD_DIM && a->n_kv_heads > 0 &&
               a->n_heads % a->n_kv_heads == 0);
    cuda_impl *im = enter(b);
    if (!im) return;
    int nsplit = attn_splits(im, a);
    /* attn_splits keeps T*n_heads*nsplit under 2 * target blocks, which the buffer was sized for */
    if (clv_cuda_attn_part_floats(a->T, a->n_heads, a->head_dim, nsplit) > im->attn_part_cap) nsplit = 1;
    CU(im, clv_cuda_attention(im->compute, out, q, kc, vc, a, nsplit, im->attn_part));
}

static void cuda_silu_mul(clv_backend *b, float *g, const float *u, size_t n) {
    cuda_impl *im = enter(b);
    if (!im) return;
    CU(im, clv_cuda_silu_mul(im->compute, g, u, n));
}

static void cuda_add(clv_backend *b, float *y, const float *x, size_t n) {
    cuda_impl *im = enter(b);
    if (!im) return;
    CU(im, clv_cuda_add(im->compute, y, x, n));
}

/* ids are host memory: checked here, then passed by value in the launches. */
static void cuda_embed(clv_backend *b, float *y, const clv_mat *tab, const int32_t *ids, int T) {
    cuda_impl *im = enter(b);
    int wt;
    if (!im || T <= 0 || !weight_type(im, tab, "embed", &wt)) return;
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= tab->rows) {
            set_error(im, "embed: token id %d (position %d) is outside the table's %d rows", (int)ids[t], t, tab->rows);
            return;
        }
    CU(im, clv_cuda_embed(im->compute, wt, y, tab->data, tab->cols, ids, T));
}

/* ---- lifetime -------------------------------------------------------------------- */

static void impl_free(cuda_impl *im) {
    if (!im) return;
    cudaSetDevice(im->device);
    if (im->compute) cudaStreamSynchronize(im->compute);
    if (im->copy) cudaStreamSynchronize(im->copy);
    if (im->blas) cublasDestroy(im->blas);
    for (int i = 0; i < CLV_STAGE_SLOTS; i++) {
        if (im->slot_ready[i]) cudaEventDestroy(im->slot_ready[i]);
        if (im->slot_free[i]) cudaEventDestroy(im->slot_free[i]);
    }
    if (im->mm_scratch) cudaFree(im->mm_scratch);
    if (im->attn_part) cudaFree(im->attn_part);
    if (im->compute) cudaStreamDestroy(im->compute);
    if (im->copy) cudaStreamDestroy(im->copy);
    (void)cudaGetLastError();
    free(im);
}

static void cuda_destroy(clv_backend *b) {
    if (!b) return;
    impl_free(impl_of(b));
    free(b);
}

static const clv_backend_ops k_cuda_ops = {
    .name = "cuda",
    .alloc = cuda_alloc,
    .free = cuda_free,
    .matmul = cuda_matmul,
    .rmsnorm = cuda_rmsnorm,
    .rope = cuda_rope,
    .kv_store = cuda_kv_store,
    .attention = cuda_attention,
    .silu_mul = cuda_silu_mul,
    .add = cuda_add,
    .embed = cuda_embed,
    .copy = cuda_copy,
    .to_device = cuda_to_device,
    .to_host = cuda_to_host,
    .sync = cuda_sync,
    .check = cuda_check,
    .alloc_host = cuda_alloc_host,
    .free_host = cuda_free_host,
    .stage = cuda_stage,
    .stage_wait = cuda_stage_wait,
    .stage_release = cuda_stage_release,
    .destroy = cuda_destroy,
};

/* ---- entry points ------------------------------------------------------------------ */

/* Never aborts: without a driver or a device cudaGetDeviceCount just fails. */
extern "C" int clv_cuda_device_count(char *why, size_t cap) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        if (why && cap) snprintf(why, cap, "cudaGetDeviceCount failed: %s", cudaGetErrorString(e));
        return 0;
    }
    if (n <= 0 && why && cap) snprintf(why, cap, "the CUDA driver shows no device");
    return n > 0 ? n : 0;
}

static int device_valid(int device, clv_status *st) {
    char why[256];
    int n = clv_cuda_device_count(why, sizeof why);
    if (n == 0) return clv_fail(st, CLV_EDEVICE, "cuda:%d: %s", device, why);
    if (device < 0 || device >= n)
        return clv_fail(st, CLV_EINVAL, "cuda:%d: no such device (this machine shows %d: cuda:0..cuda:%d)", device, n,
                        n - 1);
    return 0;
}

extern "C" int clv_cuda_mem_info(int device, uint64_t *free_bytes, uint64_t *total_bytes, clv_status *st) {
    *free_bytes = *total_bytes = 0;
    int rc = device_valid(device, st);
    if (rc) return rc;
    int prev = 0;
    cudaError_t e = cudaGetDevice(&prev);
    size_t f = 0, t = 0;
    if (e == cudaSuccess) e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaMemGetInfo(&f, &t);
    cudaSetDevice(prev);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return clv_fail(st, CLV_EDEVICE, "cuda:%d (rank %d): cudaMemGetInfo failed: %s", device, clv_log_rank(),
                        cudaGetErrorString(e));
    }
    *free_bytes = f;
    *total_bytes = t;
    return 0;
}

extern "C" clv_backend *clv_cuda_backend_new(const char *name, int device, clv_status *st) {
    if (device_valid(device, st)) return NULL;
    clv_backend *b = (clv_backend *)calloc(1, sizeof *b);
    cuda_impl *im = (cuda_impl *)calloc(1, sizeof *im);
    if (!b || !im) {
        free(b);
        free(im);
        clv_fail(st, CLV_ENOMEM, "%s: out of host memory", name);
        return NULL;
    }
    im->device = device;
    bool ok = CU(im, cudaSetDevice(device)) &&
              CU(im, cudaDeviceGetAttribute(&im->n_sm, cudaDevAttrMultiProcessorCount, device)) &&
              CU(im, cudaStreamCreateWithFlags(&im->compute, cudaStreamNonBlocking)) &&
              CU(im, cudaStreamCreateWithFlags(&im->copy, cudaStreamNonBlocking));
    for (int i = 0; ok && i < CLV_STAGE_SLOTS; i++)
        ok = CU(im, cudaEventCreateWithFlags(&im->slot_ready[i], cudaEventDisableTiming)) &&
             CU(im, cudaEventCreateWithFlags(&im->slot_free[i], cudaEventDisableTiming));
    /* no TF32 in the f32 GEMMs: the default math mode keeps full f32 unless told otherwise */
    ok = ok && CUBLAS(im, cublasCreate(&im->blas)) && CUBLAS(im, cublasSetStream(im->blas, im->compute)) &&
         CUBLAS(im, cublasSetMathMode(im->blas, CUBLAS_DEFAULT_MATH));
    if (ok) {
        /* decode attention partials: attn_splits keeps T*n_heads*nsplit below 2 * target blocks */
        im->attn_part_cap = (size_t)2 * attn_target_blocks(im) * (CLV_MAX_HEAD_DIM + 2);
        ok = CU(im, cudaMalloc((void **)&im->attn_part, sizeof(float) * im->attn_part_cap));
        if (!ok) im->attn_part = NULL, im->attn_part_cap = 0;
    }
    if (!ok) {
        clv_fail(st, CLV_EDEVICE, "%s: %s", name, im->err);
        impl_free(im);
        free(b);
        return NULL;
    }
    b->ops = &k_cuda_ops;
    b->host_memory = false;
    b->impl = im;
    snprintf(b->name, sizeof b->name, "%s", name);
    return b;
}

extern "C" double clv_cuda_copy_bandwidth(int device) {
    char why[256];
    if (device < 0 || device >= clv_cuda_device_count(why, sizeof why)) return 0;
    const size_t bytes = (size_t)1 << 30;
    void *src = NULL, *dst = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    double best = 0;
    int prev = 0;
    cudaGetDevice(&prev);
    if (cudaSetDevice(device) == cudaSuccess && cudaMalloc(&src, bytes) == cudaSuccess &&
        cudaMalloc(&dst, bytes) == cudaSuccess && cudaMemset(src, 1, bytes) == cudaSuccess &&
        cudaEventCreate(&e0) == cudaSuccess && cudaEventCreate(&e1) == cudaSuccess &&
        cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice) == cudaSuccess /* warm-up */) {
        for (int i = 0; i < 5; i++) {
            float ms = 0;
            if (cudaEventRecord(e0, 0) != cudaSuccess ||
                cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice) != cudaSuccess ||
                cudaEventRecord(e1, 0) != cudaSuccess || cudaEventSynchronize(e1) != cudaSuccess ||
                cudaEventElapsedTime(&ms, e0, e1) != cudaSuccess || ms <= 0) {
                best = 0;
                break;
            }
            const double gbs = 2.0 * (double)bytes / (ms * 1e-3) / 1e9; /* read + write */
            if (gbs > best) best = gbs;
        }
    }
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    if (src) cudaFree(src);
    if (dst) cudaFree(dst);
    (void)cudaGetLastError();
    cudaSetDevice(prev);
    return best;
}

/* ---- the plugin's one export --------------------------------------------------------- */

extern "C" __attribute__((visibility("default"))) const clv_cuda_plugin_api *clv_cuda_plugin(void) {
    static const clv_cuda_plugin_api api = {
        CLV_CUDA_PLUGIN_ABI, clv_cuda_device_count, clv_cuda_mem_info, clv_cuda_backend_new, clv_cuda_copy_bandwidth,
#ifdef CLV_HAVE_NCCL
        clv_comm_nccl,
#else
        NULL,
#endif
    };
    return &api;
}
