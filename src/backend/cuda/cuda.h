/* cuda — what the CUDA backend offers beyond the backend vtable (for benchmarks). */
#ifndef CLV_CUDA_H
#define CLV_CUDA_H

#ifdef __cplusplus
extern "C" {
#endif

/* Device-to-device copy bandwidth of `device` in GB/s (1e9 bytes/s), counting
 * the bytes read and the bytes written: the best of a few 1 GiB cudaMemcpy
 * calls timed with events. 0 when it cannot be measured (no device, no memory,
 * a build without CUDA). */
double clv_cuda_copy_bandwidth(int device);

#ifdef __cplusplus
}
#endif

#endif
