/* gemm_lab — prefill matmul and attention timing through the cpu backend, per
 * kernel level, on the 1.1B model's shapes: y[T][N] = x[T][K] . W^T.
 * GFLOP/s counts 2*T*N*K (the model's work, not the hi/lo tile work).
 * The amx level runs twice: "amx" (activations split into bf16 hi + lo, the
 * default) and "amx-bf16" (--prefill-precision bf16: rounded, one pass, and
 * the prompt's attention on the tiles too).
 *
 * Build: make -C bench gemm_lab
 * -m DIR also times every layer's seven matmuls of a Llama checkpoint (1.1B
 * shapes), its weights used in place as the engine uses them: at small T the
 * AMX levels are bound by reading and repacking the weights, and the GB/s
 * column (weight bytes / time) shows how close that is to memory bandwidth.
 *
 * Usage: build/bench/gemm_lab [-T 512] [-t THREADS] [-r REPS] [-l LEVELS] [-m DIR]
 * (LEVELS: amx,amx-bf16,avx512) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "format/safetensors.h"
#include "util/util.h"

int main(int argc, char **argv) {
    int T = 512, nth = 2, reps = 3;
    const char *levels = "amx,amx-bf16,avx512", *model = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-T")) T = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-t")) nth = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-r")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-l")) levels = argv[i + 1];
        else if (!strcmp(argv[i], "-m")) model = argv[i + 1];
    }
    clv_st_set set = {0};
    enum { MAX_MODEL_MATS = 7 * 64 };
    clv_mat mm[MAX_MODEL_MATS];
    int n_mm = 0;
    double mm_bytes = 0;
    if (model) {
        clv_status st = {0};
        if (clv_st_open_dir(&set, model, &st)) return fprintf(stderr, "%s\n", st.msg), 1;
        static const char *names[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                       "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
        for (int l = 0; n_mm + 7 <= MAX_MODEL_MATS; l++) {
            const clv_st_tensor *t = NULL;
            for (int i = 0; i < 7; i++) {
                char name[128];
                snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, names[i]);
                if (!(t = clv_st_find(&set, name))) break;
                if (t->dtype != CLV_DT_BF16 || t->shape[1] > 5632 || t->shape[0] > 5632)
                    return fprintf(stderr, "%s: want bf16 and at most 5632 x 5632\n", name), 1;
                mm[n_mm + i] = (clv_mat){clv_st_data(&set, t), CLV_DT_BF16, (int)t->shape[0], (int)t->shape[1], NULL};
                mm_bytes += 2.0 * t->shape[0] * t->shape[1];
            }
            if (!t) break;
            n_mm += 7;
        }
        if (!n_mm) return fprintf(stderr, "%s: no model.layers.0 q/k/v/o/gate/up/down weights\n", model), 1;
    }
    const struct { const char *name; int N, K; } shapes[] = {
        {"q/o  2048x2048", 2048, 2048}, {"k/v   256x2048", 256, 2048}, {"gate 5632x2048", 5632, 2048},
        {"down 2048x5632", 2048, 5632},
    };
    float *x = clv_alloc(sizeof(float) * (size_t)T * 5632), *y = clv_alloc(sizeof(float) * (size_t)T * 5632);
    uint16_t *w = clv_alloc(2 * (size_t)5632 * 2048);
    uint64_t r = 7;
    for (size_t i = 0; i < (size_t)T * 5632; i++) x[i] = (float)((int)((r = r * 6364136223846793005ull + 1) >> 40) % 2001 - 1000) / 1000.0f;
    for (size_t i = 0; i < (size_t)5632 * 2048; i++) w[i] = clv_f32_to_bf16((float)((int)((r = r * 6364136223846793005ull + 1) >> 40) % 2001 - 1000) / 30000.0f);
    printf("gemm_lab: T=%d, %d threads, bf16 weights, best of %d\n", T, nth, reps);
    char buf[256];
    snprintf(buf, sizeof buf, "%s", levels);
    for (char *lv = strtok(buf, ","); lv; lv = strtok(NULL, ",")) {
        const bool one = strcmp(lv, "amx-bf16") == 0;
        const clv_cpu_kernels *k = clv_cpu_kernels_named(one ? "amx" : lv);
        if (!k) {
            printf("%s: not available\n", lv);
            continue;
        }
        clv_backend *b = clv_cpu_backend_new_with("cpu", nth, NULL, k);
        b->bf16_prefill = one;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            clv_mat m = {w, CLV_DT_BF16, shapes[s].N, shapes[s].K, NULL};
            double best = 1e30;
            for (int rep = 0; rep < reps + 1; rep++) { /* first run warms (scratch growth) */
                double t0 = clv_now();
                b->ops->matmul(b, y, x, &m, NULL, T);
                double dt = clv_now() - t0;
                if (rep && dt < best) best = dt;
            }
            printf("%-8s %s  %8.2f ms  %7.1f GFLOP/s\n", lv, shapes[s].name, best * 1e3,
                   2.0 * T * shapes[s].N * shapes[s].K / best / 1e9);
        }
        if (n_mm) { /* the checkpoint's matmuls, layer after layer */
            double best = 1e30;
            for (int rep = 0; rep < reps + 1; rep++) {
                double t0 = clv_now();
                for (int i = 0; i < n_mm; i++) b->ops->matmul(b, y, x, &mm[i], NULL, T);
                double dt = clv_now() - t0;
                if (rep && dt < best) best = dt;
            }
            printf("%-8s model: %d layers' matmuls  %8.2f ms  %7.2f GB/s of weights\n", lv, n_mm / 7, best * 1e3,
                   mm_bytes / best / 1e9);
        }
        /* attention over a T-token prompt, 32 heads / 4 kv heads, head_dim 64 */
        const int nh = 32, nkv = 4, hd = 64;
        float *q = clv_alloc(sizeof(float) * (size_t)T * nh * hd), *o = clv_alloc(sizeof(float) * (size_t)T * nh * hd);
        float *kv = clv_alloc(sizeof(float) * (size_t)T * nkv * hd);
        for (size_t i = 0; i < (size_t)T * nh * hd; i++) q[i] = (float)((int)((r = r * 6364136223846793005ull + 1) >> 40) % 2001 - 1000) / 1000.0f;
        for (size_t i = 0; i < (size_t)T * nkv * hd; i++) kv[i] = (float)((int)((r = r * 6364136223846793005ull + 1) >> 40) % 2001 - 1000) / 1000.0f;
        for (int bf = 0; bf < 2; bf++) { /* f32 and bf16 caches (amx-bf16: the prompt's attention on the tiles) */
            const clv_dtype kdt = bf ? CLV_DT_BF16 : CLV_DT_F32;
            const size_t cb = clv_kv_cache_bytes(T, nkv, hd, kdt);
            void *kc = b->ops->alloc(b, cb), *vc = b->ops->alloc(b, cb);
            clv_attn_args a = {.T = T, .pos0 = 0, .n_heads = nh, .n_kv_heads = nkv, .head_dim = hd, .window = 0,
                               .scale = 0.125f, .ctx = T, .kv_dt = kdt};
            b->ops->kv_store(b, kc, vc, kv, kv, &a);
            double best = 1e30;
            for (int rep = 0; rep < reps + 1; rep++) {
                double t0 = clv_now();
                b->ops->attention(b, o, q, kc, vc, &a);
                double dt = clv_now() - t0;
                if (rep && dt < best) best = dt;
            }
            printf("%-8s attention T=%d 32/4 heads hd 64, %-4s cache  %8.2f ms  %7.1f GFLOP/s\n", lv, T, bf ? "bf16" : "f32",
                   best * 1e3, 4.0 * nh * hd * (T * (T + 1) / 2.0) / best / 1e9);
            /* one decoded token over the same T keys (the key-split path) */
            clv_attn_args d = a;
            d.T = 1, d.pos0 = T - 1;
            best = 1e30;
            for (int rep = 0; rep < 20 * reps + 1; rep++) {
                double t0 = clv_now();
                b->ops->attention(b, o, q + (size_t)(T - 1) * nh * hd, kc, vc, &d);
                double dt = clv_now() - t0;
                if (rep && dt < best) best = dt;
            }
            printf("%-8s attention decode, %d keys, %-4s cache    %8.3f ms  %7.1f GB/s of K and V (one layer's cache)\n", lv, T,
                   bf ? "bf16" : "f32", best * 1e3, (double)(2 * cb) / best / 1e9);
            /* the same over 22 layers' caches, one after the other as a decoded token reads them:
             * from memory, not from the last level cache */
            enum { LAYERS = 22 };
            void *lk[LAYERS], *lv_[LAYERS];
            for (int l = 0; l < LAYERS; l++) {
                lk[l] = b->ops->alloc(b, cb), lv_[l] = b->ops->alloc(b, cb);
                b->ops->kv_store(b, lk[l], lv_[l], kv, kv, &a);
            }
            best = 1e30;
            for (int rep = 0; rep < 5 * reps + 1; rep++) {
                double t0 = clv_now();
                for (int l = 0; l < LAYERS; l++) b->ops->attention(b, o, q + (size_t)(T - 1) * nh * hd, lk[l], lv_[l], &d);
                double dt = clv_now() - t0;
                if (rep && dt < best) best = dt;
            }
            printf("%-8s attention decode, %d keys, %-4s cache    %8.3f ms  %7.1f GB/s of K and V (%d layers)\n", lv, T,
                   bf ? "bf16" : "f32", best * 1e3, (double)(2 * cb) * LAYERS / best / 1e9, LAYERS);
            for (int l = 0; l < LAYERS; l++) b->ops->free(b, lk[l]), b->ops->free(b, lv_[l]);
            b->ops->free(b, kc), b->ops->free(b, vc);
        }
        clv_free(q), clv_free(o), clv_free(kv);
        b->ops->destroy(b);
    }
    return 0;
}
