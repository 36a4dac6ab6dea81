/* cleave — command-line front end. Parses flags, calls the library, prints.
 * The only place in the project that exits. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../backend/backend.h"
#include "../comm/comm.h"
#include "gguf_cli.h"
#include "tokcli.h"
#include "../model/synth.h"
#include "../runtime/runtime.h"
#include "../util/util.h"
#include "cleave.h"

#define PLACEMENT_HELP                                                                              \
    "placement:\n"                                                                                  \
    "  --device-map MAP       auto | balanced | balanced_low_0 | sequential | DEVICE | FILE.json\n"  \
    "                         (DEVICE: cuda:N, cpu, cpu:N, disk; FILE: module -> device, as\n"     \
    "                         `plan --json` writes it). auto and the balanced modes use every\n"  \
    "                         GPU, then the CPU, then disk\n"                                      \
    "                         Default: cpu, or auto when --max-memory is given\n"                \
    "  --max-memory LIST      budgets, e.g. cuda:0=20GiB,cpu=8GiB,disk=20GB (B, KB/MB/GB = 10^3..,\n" \
    "                         KiB/MiB/GiB = 2^10..). auto, balanced* and sequential then use\n"   \
    "                         only the listed devices and disk (and the CPU when no compute\n"     \
    "                         device is listed); without it, every device's free memory\n"       \
    "  --ctx N                KV cache tokens to budget and allocate\n"                             \
    "  --no-prefetch          read disk-tier weights synchronously (to measure prefetching)\n"      \
    "  --offload-exec auto|main|local  who computes layers stored in CPU RAM: the main (first)\n" \
    "                         device, their weights streamed to it two layers at a time, the\n"  \
    "                         next copying while one computes (Accelerate copies with no\n"     \
    "                         prefetch), or the CPU holding them. auto: main when it is a GPU\n"  \
    "  --dtype auto|f32|bf16|f16|int8  convert weights at load (auto: as stored). int8: every\n"   \
    "                         matrix to int8 with one f32 scale per row (activations stay f32);\n" \
    "                         CPU devices only, weights in RAM (no disk tier)\n"                 \
    "  --prefill-precision f32|bf16  prompt matmuls (16+ tokens) on AMX tiles or tensor cores:\n"  \
    "                         f32 (default) splits the activations into bf16 hi + lo, two passes,\n" \
    "                         f32-level accuracy; bf16 rounds them to bf16, one pass (about 2x\n" \
    "                         the matrix throughput; transformers' and llama.cpp's rounding);\n" \
    "                         on AMX the prompt's attention as well (q, k, v and the softmax\n"  \
    "                         weights in bf16 on the tiles). Decode, and f32 weights' matmuls,\n" \
    "                         are unaffected\n"                                                  \
    "  --kv-dtype f32|bf16    KV cache elements: f32 (default) or rounded to bf16 (half the\n"   \
    "                         cache memory and half the bytes decode attention reads; the\n"   \
    "                         cache dtype transformers uses for a bf16 model)\n"              \
    "  --offload-folder DIR   where disk-tier weights that need converting are written; weights\n" \
    "                         already in the right dtype are read from the checkpoint itself\n"  \
    "  --tp N                 tensor parallelism over N ranks (one process each; started here\n"    \
    "                         unless launched by cleave launch, torchrun or mpirun)\n"             \
    "  --pp M                 with --tp N: a TP x PP mesh of N*M ranks, M stages of consecutive\n" \
    "                         layers, each split over N ranks (e.g. TP in a host, stages across)\n" \
    "  --tp-plan auto|FILE    auto (q/k/v, gate, up colwise; o, down rowwise; lm_head vocab-split)\n" \
    "                         or a JSON object of module patterns ('*' = layer index) -> strategy\n" \
    "  cpu:N is a NUMA node, or a physical core on a one-node machine; disk-tier layers are\n"     \
    "  streamed into RAM and run on the first compute device. With --tp, each rank uses one\n"   \
    "  GPU, its local rank modulo the GPUs there are, as cuda:0.\n"

static const char *k_usage =
    "cleave " CLV_VERSION " — run Hugging Face causal-LM checkpoints\n"
    "\n"
    "usage: cleave <command> [options]   (cleave <command> --help for its options)\n"
    "\n"
    "commands:\n"
    "  generate   generate from a prompt (text, a chat message, or token ids)\n"
    "  chat       interactive chat with streaming output\n"
    "  tokenize   print the token ids of a text as one JSON array\n"
    "  logits     write the logits of every prompt position to a file\n"
    "  info       print the normalised config and the tensor inventory\n"
    "  plan       show where a device map puts every layer, bytes per device, predicted speed\n"
    "  launch     start one process per rank (torchrun-style) for tensor parallelism\n"
    "  synth      write a random-weight checkpoint in transformers' layout\n"
    "  import-gguf  convert a llama.cpp GGUF file into a Hugging Face model folder\n"
    "  bench      prompt-processing and decode speed (pp / tg, achieved GB/s)\n";

static const char *k_generate_help =
    "usage: cleave generate -m DIR (-p TEXT | --chat MSG [--system S] | --ids 1,2,3) [-n N] [sampling]\n"
    "                       [--json] [placement]\n"
    "\n"
    "  -m, --model DIR        model folder (config.json, *.safetensors, tokenizer.json)\n"
    "  -p, --prompt TEXT      prompt text (tokenized with tokenizer.json; text streams out)\n"
    "  --chat MSG             a user message, rendered with the chat template\n"
    "  --system S             a system message for --chat\n"
    "  --ids LIST             prompt token ids, comma-separated (generated ids are printed)\n"
    "  -n, --n-predict N      tokens to generate (default: generation_config.json's\n"
    "                         max_new_tokens, else 32); stops early at an eos id\n"
    "  --greedy               argmax decoding\n"
    "  --temperature T        sample with temperature T (> 0)\n"
    "  --top-k K              keep the K most likely tokens (0: off)\n"
    "  --top-p P              keep the smallest set with probability mass >= P\n"
    "  --min-p M              drop tokens below M x the top probability\n"
    "  --repetition-penalty R penalise tokens already seen (1: off)\n"
    "  --seed S               sampling seed (default 0); same seed, same tokens\n"
    "  --ignore-eos           do not stop at eos ids\n"
    "  --batch B              B independent sequences of the prompt (sequence b sampled with\n"
    "                         seed S+b); over several compute devices they are pipelined\n"
    "  --json                 print one JSON object as the last line of stdout\n"
    "  -t, --threads N        CPU threads per device (default: the device's cores)\n"
    "\n" PLACEMENT_HELP "\n"
    "Without --greedy or a sampling flag, generation_config.json decides: do_sample\n"
    "true samples with its temperature/top_k/top_p/min_p, otherwise greedy. Any\n"
    "sampling flag implies sampling; unspecified ones keep those defaults.\n";

static const char *k_logits_help =
    "usage: cleave logits -m DIR --ids 1,2,3 --out FILE [-t THREADS] [--one-by-one] [placement]\n"
    "\n"
    "Writes the logits of every prompt position as little-endian float32,\n"
    "shape [number of ids, vocab], row-major. The prompt goes through in one\n"
    "prefill pass; --one-by-one feeds it a token at a time through the decode path.\n"
    "\n" PLACEMENT_HELP;

static const char *k_info_help = "usage: cleave info -m DIR\n\nPrints the normalised config and every tensor (name, dtype, shape, file).\n";

static const char *k_plan_help =
    "usage: cleave plan -m DIR [placement] [--ctx N] [--json] [--calibrate] [--accelerate-compat]\n"
    "\n"
    "Prints the device map (layer ranges per device), the bytes of weights, KV cache,\n"
    "activation scratch and disk staging per device against its budget, and the\n"
    "predicted decode tokens/s (bytes per tier / that tier's bandwidth: defaults\n"
    "20 GB/s RAM and 2 GB/s disk; --calibrate measures both here).\n"
    "  --json               print only the device map, in the form --device-map FILE reads\n"
    "  --accelerate-compat  budget weights only, as Accelerate's infer_auto_device_map does\n"
    "  --ctx N              KV cache tokens to budget (default: max_position_embeddings,\n"
    "                       halved until the cache pushes no weights to a slower tier)\n"
    "\n" PLACEMENT_HELP;

static const char *k_launch_help =
    "usage: cleave launch --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P]\n"
    "                     -- COMMAND [ARGS...]\n"
    "\n"
    "Starts N processes of COMMAND on this host, as torchrun does, each with RANK,\n"
    "WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set\n"
    "(ranks R*N .. R*N+N-1 of N*M). If one rank fails, the others are stopped and\n"
    "its exit status is returned. Ranks on one host talk through shared memory;\n"
    "ranks on several hosts need MPI (start those with mpirun).\n";

static const char *k_chat_help =
    "usage: cleave chat -m DIR [--system S] [-n MAX_PER_TURN] [sampling] [placement]\n"
    "\n"
    "Interactive chat: type a message, the answer streams back. The conversation\n"
    "is rendered with the model's chat template each turn; only the new tokens are\n"
    "computed (the KV cache keeps the rest). An empty line or end of input quits.\n"
    "\n"
    "  -m, --model DIR        model folder (with a chat template in tokenizer_config.json)\n"
    "  --system S             a system message\n"
    "  -n, --n-predict N      at most N tokens per answer (default 512; each turn needs\n"
    "                         the conversation plus N tokens to fit the context)\n"
    "  sampling               --greedy, --temperature, --top-k, --top-p, --min-p,\n"
    "                         --repetition-penalty, --seed: as for generate (default:\n"
    "                         generation_config.json)\n"
    "  -t, --threads N        CPU threads per device (default: the device's cores)\n"
    "\n" PLACEMENT_HELP;

static const char *k_synth_help =
    "usage: cleave synth --arch llama|mistral|qwen2|qwen3|phi3 --hidden H --layers L --heads N\n"
    "                    --kv-heads K --intermediate I --vocab V --dtype f32|bf16|f16\n"
    "                    --seed S --out DIR [--shards N] [--tie] [--head-dim D]\n"
    "                    [--max-pos P] [--rope-scaling linear|llama3|yarn --rope-factor F\n"
    "                    --rope-orig-max-pos P] [--rope-theta T] [--sliding-window W]\n"
    "                    [--attention-bias]\n"
    "\n"
    "Writes config.json, generation_config.json and model.safetensors (or N shards\n"
    "and model.safetensors.index.json) with random weights, deterministic per seed.\n";

static const char *k_bench_help =
    "usage: cleave bench -m DIR [-p 512] [-n 128] [-t THREADS] [-r REPS] [--json] [placement]\n"
    "       cleave bench --comm [--tp N]   all-reduce latency against message size (default N = 2)\n"
    "\n"
    "pp: prompt processing of P random tokens in one pass (tokens/s).\n"
    "tg: N decoded tokens after it (tokens/s), with the weight bytes read per token\n"
    "and the achieved GB/s (10^9 bytes/s). Best of REPS runs (default 3).\n"
    "\n" PLACEMENT_HELP;

static _Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static _Noreturn void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cleave: error: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void die_st(const clv_status *st) { die("%s", st->msg); }

/* ---- flag parsing ---------------------------------------------------------- */

typedef struct args {
    int argc, i;
    char **argv;
    const char *cmd, *help;
} args;

static bool flag(args *a, const char *s1, const char *s2) {
    const char *f = a->argv[a->i];
    return strcmp(f, s1) == 0 || (s2 && strcmp(f, s2) == 0);
}
static const char *value(args *a) {
    if (a->i + 1 >= a->argc) die("%s %s: missing value (see cleave %s --help)", a->cmd, a->argv[a->i], a->cmd);
    return a->argv[++a->i];
}
/* A value that must not be empty: "" would otherwise read as the default. */
static const char *word_value(args *a) {
    const char *f = a->argv[a->i], *v = value(a);
    if (!*v) die("%s %s: empty value (see cleave %s --help)", a->cmd, f, a->cmd);
    return v;
}
static int64_t int_value(args *a, int64_t lo, int64_t hi) {
    const char *f = a->argv[a->i], *v = value(a);
    int64_t x;
    if (!clv_parse_i64(v, &x) || x < lo || x > hi)
        die("%s %s: '%s' is not an integer in [%lld, %lld]", a->cmd, f, v, (long long)lo, (long long)hi);
    return x;
}
static double num_value(args *a) {
    const char *f = a->argv[a->i], *v = value(a);
    double x;
    if (!clv_parse_f64(v, &x)) die("%s %s: '%s' is not a number", a->cmd, f, v);
    return x;
}
static _Noreturn void unknown(args *a) {
    die("%s: unknown option '%s' (see cleave %s --help)", a->cmd, a->argv[a->i], a->cmd);
}
static void help_if_asked(args *a) {
    if (flag(a, "-h", "--help")) {
        fputs(a->help, stdout);
        exit(0);
    }
}

/* ---- shared: placement flags and loading ---------------------------------------- */

/* ---- ranks: tensor parallelism, one process per rank ------------------------------- */

static int g_tp = 0;                 /* --tp N; 0: not given */
static int g_pp = 1;                 /* --pp M: pipeline stages of a TP x PP mesh */
static const char *g_tp_plan_path;   /* --tp-plan FILE */
static char *g_tp_plan_text;
static clv_comm *g_comm;
static clv_comm *g_boot; /* the host communicator NCCL was bootstrapped over */
#define LOCAL_MAX_RANKS 64 /* ranks one `--tp N [--pp M]` starts on this host: the shared-memory communicator's limit */
static pid_t g_children[LOCAL_MAX_RANKS];
static int g_n_children;

static int rank0(void) { return !g_comm || g_comm->rank == 0; }

/* A device-map file that puts a module on a GPU ("cuda:N", or Accelerate's bare integer). */
static bool map_names_gpu(const char *path) {
    char *text = NULL;
    size_t len;
    clv_status st = {0};
    if (!clv_file_exists(path) || clv_read_file(path, &text, &len, &st)) return false;
    bool gpu = strstr(text, "cuda") != NULL;
    for (const char *p = text; !gpu && (p = strchr(p, ':')); p++) {
        const char *v = p + 1;
        while (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r') v++;
        gpu = *v >= '0' && *v <= '9';
    }
    free(text);
    return gpu;
}

/* Join (or start) the job this process is a rank of, and attach it to lo. */
static void start_ranks(args *a, clv_load_opts *lo) {
    clv_status st = {0};
    clv_rankinfo ri;
    if (clv_rankinfo_from_env(&ri, &st)) die_st(&st);
    int want = (g_tp > 0 ? g_tp : 1) * g_pp;
    if (ri.world == 1 && want > 1) {
        /* `--tp N [--pp M]` on its own: this process is rank 0 and starts the others */
        if (want > LOCAL_MAX_RANKS)
            die("--tp %d x --pp %d is %d ranks: at most %d start on one host (launch more across hosts with mpirun)",
                g_tp > 0 ? g_tp : 1, g_pp, want, LOCAL_MAX_RANKS);
        g_tp = want;
        ri.world = ri.local_world = g_tp;
        ri.master_port = 20000 + (int)(getpid() % 40000);
        snprintf(ri.master_addr, sizeof ri.master_addr, "127.0.0.1");
        pid_t parent = getpid();
        for (int r = 1; r < g_tp; r++) {
            pid_t p = fork();
            if (p < 0) die("cannot start rank %d: %s", r, strerror(errno));
            if (p == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive rank 0 */
                if (getppid() != parent) _exit(1);
                char v[32];
                snprintf(v, sizeof v, "%d", r), setenv("RANK", v, 1), setenv("LOCAL_RANK", v, 1);
                snprintf(v, sizeof v, "%d", g_tp), setenv("WORLD_SIZE", v, 1), setenv("LOCAL_WORLD_SIZE", v, 1);
                snprintf(v, sizeof v, "%d", ri.master_port), setenv("MASTER_PORT", v, 1);
                setenv("MASTER_ADDR", ri.master_addr, 1);
                execv("/proc/self/exe", a->argv);
                _exit(127);
            }
            g_children[g_n_children++] = p;
        }
    } else if (ri.world > 1 && g_tp > 0 && g_tp * g_pp != ri.world) {
        die("--tp %d x --pp %d does not match the job's WORLD_SIZE %d", g_tp, g_pp, ri.world);
    }
    lo->pp = g_pp;
    if (ri.world == 1) return;
    const char *to = getenv("CLV_COMM_TIMEOUT");
    double timeout = 60;
    if (to && !clv_parse_f64(to, &timeout)) die("CLV_COMM_TIMEOUT=%s is not a number of seconds", to);
    if (clv_comm_open(&g_comm, &ri, timeout, &st)) die_st(&st);
    clv_log_set_rank(g_comm->rank);
    /* each local rank gets its share of the physical cores (with their SMT
     * siblings) and, by default, a thread per core of it */
    clv_topology *topo = malloc(sizeof *topo);
    if (!topo) die("out of memory");
    if (clv_topology_detect(topo, &st)) die_st(&st);
    int *cpus = malloc(sizeof(int) * (size_t)topo->n_cpus), cores = 0;
    if (!cpus) die("out of memory");
    int n = clv_topology_share(topo, ri.local_rank, ri.local_world, cpus, &cores);
    if (lo->n_threads == 0) lo->n_threads = cores > 0 ? cores : 1;
    if (n > 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        for (int i = 0; i < n; i++)
            if (cpus[i] < CPU_SETSIZE) CPU_SET(cpus[i], &set);
        sched_setaffinity(0, sizeof set, &set);
    }
    free(cpus);
    free(topo);
    /* ranks on GPUs all-reduce with NCCL, one GPU each; ranks sharing a GPU
     * (or a build without NCCL) stage through host memory instead */
    const char *dm = lo->device_map;
    bool planned = dm && (strcmp(dm, "auto") == 0 || strcmp(dm, "balanced") == 0 || strcmp(dm, "balanced_low_0") == 0 ||
                          strcmp(dm, "sequential") == 0);
    bool gpu = (dm && strstr(dm, "cuda")) || (lo->max_memory && strstr(lo->max_memory, "cuda")) ||
               (planned && !lo->max_memory) /* the planned modes use every GPU there is */ ||
               (dm && (clv_parse_i64(dm, &(int64_t){0}) || map_names_gpu(dm)));
    char why[160];
    int n_gpus = gpu ? clv_cuda_device_count(why, sizeof why) : 0;
    if (n_gpus > 0 && clv_nccl_built()) {
        clv_comm *nc;
        int rc = clv_comm_nccl(&nc, g_comm, ri.local_rank % n_gpus, timeout, &st);
        if (rc == 0) {
            g_boot = g_comm;
            g_comm = nc;
        } else if (rc == CLV_EUNSUPPORTED) {
            clv_info("%s\n", st.msg);
        } else {
            die_st(&st);
        }
    } else if (n_gpus > 0) {
        clv_info("this build has no NCCL: GPU ranks all-reduce through host memory (%s)\n", g_comm->ops->name);
    }
    lo->comm = g_comm;
    if (g_tp_plan_path) {
        size_t len;
        if (clv_read_file(g_tp_plan_path, &g_tp_plan_text, &len, &st)) die_st(&st);
        lo->tp_plan = g_tp_plan_text;
        lo->tp_plan_path = g_tp_plan_path;
    }
}

/* Rank 0 waits for the ranks it started: a failed rank fails the job. */
static int finish_ranks(int rc) {
    for (int i = 0; i < g_n_children; i++) {
        int status;
        if (waitpid(g_children[i], &status, 0) == g_children[i] && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
            fprintf(stderr, "cleave: error: rank %d %s\n", i + 1, WIFSIGNALED(status) ? "was killed" : "failed");
            rc = rc ? rc : 1;
        }
    }
    clv_comm_close(g_comm);
    clv_comm_close(g_boot);
    g_comm = g_boot = NULL;
    free(g_tp_plan_text);
    return rc;
}

static bool placement_flag(args *a, clv_load_opts *lo) {
    if (flag(a, "--tp", NULL)) g_tp = (int)int_value(a, 1, 4096);
    else if (flag(a, "--pp", NULL)) g_pp = (int)int_value(a, 1, 4096);
    else if (flag(a, "--tp-plan", NULL)) {
        const char *v = word_value(a);
        g_tp_plan_path = strcmp(v, "auto") == 0 ? NULL : v;
    } else if (flag(a, "--device-map", NULL)) lo->device_map = word_value(a);
    else if (flag(a, "--max-memory", NULL)) lo->max_memory = word_value(a);
    else if (flag(a, "--ctx", NULL)) lo->ctx = (int)int_value(a, 1, INT32_MAX);
    else if (flag(a, "--no-prefetch", NULL)) lo->no_prefetch = true;
    else if (flag(a, "--offload-exec", NULL)) lo->offload_exec = word_value(a);
    else if (flag(a, "--dtype", NULL)) lo->dtype = word_value(a);
    else if (flag(a, "--prefill-precision", NULL)) lo->prefill_precision = value(a);
    else if (flag(a, "--kv-dtype", NULL)) lo->kv_dtype = word_value(a);
    else if (flag(a, "--offload-folder", NULL)) lo->offload_folder = value(a);
    else if (flag(a, "-t", "--threads")) lo->n_threads = (int)int_value(a, 1, 4096);
    else return false;
    return true;
}

static clv_model *load_model(const char *dir, const clv_load_opts *lo) {
    if (!dir) die("-m DIR is required");
    if (g_tp_plan_path && !lo->comm) {
        /* validate a manual plan even without ranks: a typo is an error, never ignored */
        clv_status st0 = {0};
        char *text;
        size_t len;
        clv_config c0;
        clv_gen_config g0;
        clv_tp_plan tp0;
        if (clv_read_file(g_tp_plan_path, &text, &len, &st0) || clv_config_load(&c0, &g0, dir, &st0) ||
            clv_tp_plan_make(&tp0, &c0, g_tp > 0 ? g_tp : 1, 0, text, g_tp_plan_path, &st0))
            die_st(&st0);
        free(text);
    }
    clv_status st = {0};
    clv_model *m;
    if (clv_model_load(&m, dir, lo, &st)) die_st(&st);
    return m;
}

static const char *be_desc(const clv_model *m) {
    static char buf[256];
    size_t k = 0;
    buf[0] = 0;
    for (int d = 0; d < m->plan.n_devices && k < sizeof buf; d++)
        if (m->be[d] && strcmp(m->be[d]->ops->name, "cpu") == 0)
            k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%s x%d", k ? ", " : "", m->be[d]->name,
                                  clv_cpu_backend_threads(m->be[d]));
        else if (m->be[d])
            k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%s (%s)", k ? ", " : "", m->be[d]->name, m->be[d]->ops->name);
    return buf;
}

static void ids_check(const clv_model *m, const int32_t *ids, int n) {
    for (int i = 0; i < n; i++)
        if (ids[i] >= m->cfg.vocab) die("--ids: token id %d is outside the vocabulary (0..%d)", ids[i], m->cfg.vocab - 1);
}

/* ---- generate ------------------------------------------------------------------ */

static bool is_eos(const clv_config *c, int id) {
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == id) return true;
    return false;
}

static int cmd_generate(args *a) {
    const char *dir = NULL, *ids_s = NULL, *text = NULL, *chat = NULL, *system = NULL;
    int n_new = -1, batch = 1;
    clv_load_opts lo = {0};
    bool greedy = false, sampling = false, json = false, ignore_eos = false;
    double temp = NAN, top_p = NAN, min_p = NAN, rep = NAN;
    int64_t top_k = -1, seed = 0;
    for (a->i = 2; a->i < a->argc; a->i++) {
        help_if_asked(a);
        if (flag(a, "-m", "--model")) dir = value(a);
        else if (flag(a, "--ids", NULL)) ids_s = value(a);
        else if (flag(a, "-p", "--prompt")) text = value(a);
        else if (flag(a, "--chat", NULL)) chat = value(a);
        else if (flag(a, "--system", NULL)) system = value(a);
        else if (flag(a, "-n", "--n-predict")) n_new = (int)int_value(a, 0, 1 << 24);
        else if (flag(a, "--greedy", NULL)) greedy = true;
        else if (flag(a, "--temperature", NULL)) temp = num_value(a), sampling = true;
        else if (flag(a, "--top-k", NULL)) top_k = int_value(a, 0, INT32_MAX), sampling = true;
        else if (flag(a, "--top-p", NULL)) top_p = num_value(a), sampling = true;
        else if (flag(a, "--min-p", NULL)) min_p = num_value(a), sampling = true;
        else if (flag(a, "--repetition-penalty", NULL)) rep = num_value(a);
        else if (flag(a, "--seed", NULL)) seed = int_value(a, 0, INT64_MAX);
        else if (flag(a, "--json", NULL)) json = true;
        else if (flag(a, "--ignore-eos", NULL)) ignore_eos = true;
        else if (flag(a, "--batch", NULL)) batch = (int)int_value(a, 1, 4096);
        else if (!placement_flag(a, &lo)) unknown(a);
    }
    if (greedy && sampling) die("generate: --greedy cannot be combined with --temperature/--top-k/--top-p/--min-p");
    if (!!ids_s + !!text + !!chat != 1) die("generate: give exactly one of -p TEXT, --chat MSG or --ids 1,2,3");
    if (system && !chat) die("generate: --system goes with --chat");
    clv_status st = {0};
    int32_t *prompt;
    int n_prompt;
    clv_tokenizer *tok = NULL;
    if (ids_s && clv_parse_ids(ids_s, &prompt, &n_prompt, &st)) die_st(&st);
    if (!ids_s && (!dir || clv_cli_prompt(dir, text, chat, system, &prompt, &n_prompt, &tok, &st))) {
        if (!dir) die("-m DIR is required");
        die_st(&st);
    }
    clv_tok_stream *ts = NULL;
    if (tok && clv_tok_stream_new(&ts, tok, true, &st)) die_st(&st);
    if (n_new < 0) {
        /* generation_config.json's max_new_tokens, known only once loaded: peek at it */
        clv_config c0;
        clv_gen_config g0;
        if (dir && clv_config_load(&c0, &g0, dir, &st) == 0) n_new = g0.max_new_tokens > 0 ? g0.max_new_tokens : 32;
        else n_new = 32;
    }
    if (lo.ctx == 0) lo.ctx = n_prompt + (n_new > 0 ? n_new : 1);
    if (n_prompt + n_new > lo.ctx) die("generate: prompt (%d) + -n (%d) exceeds --ctx %d", n_prompt, n_new, lo.ctx);
    int ctx = lo.ctx;
    start_ranks(a, &lo);
    clv_model *m = load_model(dir, &lo);
    ids_check(m, prompt, n_prompt);
    const clv_gen_config *g = &m->gen;

    clv_sampler_cfg sc = {
        .greedy = greedy || (!sampling && !g->do_sample),
        .temperature = (float)(isnan(temp) ? g->temperature : temp),
        .top_k = (int)(top_k >= 0 ? top_k : g->top_k),
        .top_p = (float)(isnan(top_p) ? g->top_p : top_p),
        .min_p = (float)(isnan(min_p) ? g->min_p : min_p),
        .repetition_penalty = (float)(isnan(rep) ? g->repetition_penalty : rep),
        .seed = (uint64_t)seed,
    };
    /* B independent sequences (--batch): the same prompt, sequence b sampled
     * with seed + b. Over a device map with several compute devices they are
     * pipelined: each device works on a different sequence at the same time. */
    const int B = batch;
    clv_sampler *smp = calloc((size_t)B, sizeof *smp);
    clv_session **ss = calloc((size_t)B, sizeof *ss);
    float **logits = calloc((size_t)B, sizeof *logits);
    int32_t **hist = calloc((size_t)B, sizeof *hist);
    int *n_gen = calloc((size_t)B, sizeof(int)), *one = calloc((size_t)B, sizeof(int)), *act = calloc((size_t)B, sizeof(int));
    const int32_t **feed = calloc((size_t)B, sizeof *feed);
    clv_session **ass = calloc((size_t)B, sizeof *ass);
    float **alog = calloc((size_t)B, sizeof *alog);
    bool *done = calloc((size_t)B, sizeof(bool));
    if (!smp || !ss || !logits || !hist || !n_gen || !one || !act || !feed || !ass || !alog || !done) die("out of memory");
    for (int b = 0; b < B; b++) {
        clv_sampler_cfg sb = sc;
        sb.seed = sc.seed + (uint64_t)b;
        if (clv_sampler_init(&smp[b], &sb, m->cfg.vocab, &st) || clv_session_new(&ss[b], m, ctx, &st)) die_st(&st);
        logits[b] = malloc(sizeof(float) * (size_t)m->cfg.vocab);
        hist[b] = malloc(sizeof(int32_t) * (size_t)(n_prompt + n_new + 1));
        if (!logits[b] || !hist[b]) die("out of memory");
        memcpy(hist[b], prompt, sizeof(int32_t) * (size_t)n_prompt);
        feed[b] = prompt;
        one[b] = n_prompt;
    }

    double t0 = clv_now();
    if (clv_batch_eval(ss, B, feed, one, logits, &st)) die_st(&st);
    double t1 = clv_now(), t_first = t1;
    int total = 0, steps = 0;
    for (;;) {
        int na = 0;
        for (int b = 0; b < B; b++) {
            if (done[b] || n_gen[b] >= n_new) {
                done[b] = true;
                continue;
            }
            /* sampled once, on rank 0, and sent to every rank: all ranks see the same tokens */
            int nh = n_prompt + n_gen[b];
            int32_t tok = rank0() ? clv_sampler_next(&smp[b], logits[b], hist[b], nh) : 0;
            if (g_comm && g_comm->ops->broadcast(g_comm, &tok, sizeof tok, 0, &st)) die_st(&st);
            hist[b][nh] = tok;
            n_gen[b]++;
            total++;
            if (B == 1 && !json && rank0()) {
                if (ts) { /* text streams out as it is produced, never a broken UTF-8 sequence */
                    const char *piece;
                    size_t len;
                    if (clv_tok_stream_push(ts, tok, &piece, &len, &st)) die_st(&st);
                    fwrite(piece, 1, len, stdout);
                } else {
                    printf("%s%d", n_gen[b] > 1 ? " " : "", tok);
                }
                fflush(stdout);
            }
            if ((!ignore_eos && is_eos(&m->cfg, tok)) || n_gen[b] == n_new) {
                done[b] = true;
                continue;
            }
            ass[na] = ss[b], alog[na] = logits[b], feed[na] = &hist[b][nh], act[na] = 1, na++;
        }
        if (steps++ == 0) t_first = clv_now();
        if (na == 0) break;
        if (clv_batch_eval(ass, na, feed, act, alog, &st)) die_st(&st);
    }
    double t2 = clv_now();
    if (!json && rank0()) {
        if (ts) {
            const char *piece;
            size_t len;
            if (clv_tok_stream_flush(ts, &piece, &len, &st)) die_st(&st);
            fwrite(piece, 1, len, stdout);
        }
        if (B == 1 && n_gen[0]) printf("\n");
        fflush(stdout);
        for (int b = 0; B > 1 && b < B; b++) {
            if (tok) {
                char *out;
                size_t len;
                if (clv_tok_decode(tok, &hist[b][n_prompt], n_gen[b], true, &out, &len, &st)) die_st(&st);
                printf("seq %d: %s\n", b, out);
                free(out);
                continue;
            }
            printf("seq %d:", b);
            for (int i = 0; i < n_gen[b]; i++) printf(" %d", hist[b][n_prompt + i]);
            printf("\n");
        }
    }
    int first_toks = 0;
    for (int b = 0; b < B; b++) first_toks += n_gen[b] > 0;
    double pp = (double)n_prompt * B / (t1 - t0), tg = total > first_toks ? (total - first_toks) / (t2 - t_first) : 0.0;
    clv_info("prompt %d tokens x %d: %.2f tok/s | generated %d tokens: %.2f tok/s | %s | %s%s\n", n_prompt, B, pp, total, tg,
             clv_cpu_isa(), be_desc(m), B > 1 && clv_model_pipeline_stages(m) > 1 ? " | pipelined" : "");
    if (json && rank0()) {
        cJSON *o = cJSON_CreateObject();
        cJSON *ids = cJSON_AddArrayToObject(o, "ids");
        for (int i = 0; i < n_gen[0]; i++) cJSON_AddItemToArray(ids, cJSON_CreateNumber(hist[0][n_prompt + i]));
        if (B > 1) {
            cJSON *all = cJSON_AddArrayToObject(o, "batch");
            for (int b = 0; b < B; b++) {
                cJSON *one_seq = cJSON_CreateArray();
                for (int i = 0; i < n_gen[b]; i++) cJSON_AddItemToArray(one_seq, cJSON_CreateNumber(hist[b][n_prompt + i]));
                cJSON_AddItemToArray(all, one_seq);
            }
        }
        if (tok) {
            char *out;
            size_t len;
            if (clv_tok_decode(tok, &hist[0][n_prompt], n_gen[0], true, &out, &len, &st)) die_st(&st);
            cJSON_AddStringToObject(o, "text", out);
            free(out);
        }
        cJSON_AddNumberToObject(o, "prompt_tokens", n_prompt);
        cJSON_AddNumberToObject(o, "generated_tokens", n_gen[0]);
        cJSON_AddNumberToObject(o, "prefill_tok_s", pp);
        cJSON_AddNumberToObject(o, "decode_tok_s", tg);
        cJSON_AddBoolToObject(o, "greedy", sc.greedy);
        cJSON_AddBoolToObject(o, "stopped_at_eos",
                              n_gen[0] > 0 && !ignore_eos && is_eos(&m->cfg, hist[0][n_prompt + n_gen[0] - 1]));
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        cJSON_AddNumberToObject(o, "max_rss_bytes", (double)ru.ru_maxrss * 1024.0);
        cJSON_AddNumberToObject(o, "disk_bytes_read", m->streamer ? (double)clv_streamer_bytes_read(m->streamer) : 0.0);
        cJSON_AddNumberToObject(o, "tp", m->tp.size);
        cJSON_AddNumberToObject(o, "rank_weight_bytes", (double)m->rank_bytes);
        cJSON_AddNumberToObject(o, "batch_size", B);
        cJSON_AddNumberToObject(o, "pipeline_stages", B > 1 ? clv_model_pipeline_stages(m) : 1);
        char *txt = cJSON_PrintUnformatted(o);
        printf("%s\n", txt);
        free(txt);
        cJSON_Delete(o);
    }
    for (int b = 0; b < B; b++) {
        free(logits[b]);
        free(hist[b]);
        clv_sampler_free(&smp[b]);
        clv_session_free(ss[b]);
    }
    free(smp), free(ss), free(logits), free(hist), free(n_gen), free(one), free(act), free(feed), free(ass), free(alog);
    free(done);
    free(prompt);
    clv_tok_stream_free(ts);
    clv_tok_free(tok);
    clv_model_free(m);
    return finish_ranks(0);
}

/* ---- chat ------------------------------------------------------------------------ */

static int cmd_chat(args *a) {
    const char *dir = NULL, *system = NULL;
    int max_new = 512;
    clv_load_opts lo = {0};
    bool greedy = false, sampling = false;
    double temp = NAN, top_p = NAN, min_p = NAN, rep = NAN;
    int64_t top_k = -1, seed = 0;
    for (a->i = 2; a->i < a->argc; a->i++) {
        help_if_asked(a);
        if (flag(a, "-m", "--model")) dir = value(a);
        else if (flag(a, "--system", NULL)) system = value(a);
        else if (flag(a, "--repetition-penalty", NULL)) rep = num_value(a);
        else if (flag(a, "-n", "--n-predict")) max_new = (int)int_value(a, 1, 1 << 20);
        else if (flag(a, "--greedy", NULL)) greedy = true;
        else if (flag(a, "--temperature", NULL)) temp = num_value(a), sampling = true;
        else if (flag(a, "--top-k", NULL)) top_k = int_value(a, 0, INT32_MAX), sampling = true;
        else if (flag(a, "--top-p", NULL)) top_p = num_value(a), sampling = true;
        else if (flag(a, "--min-p", NULL)) min_p = num_value(a), sampling = true;
        else if (flag(a, "--seed", NULL)) seed = int_value(a, 0, INT64_MAX);
        else if (!placement_flag(a, &lo)) unknown(a);
    }
    if (!dir) die("chat: -m DIR is required");
    clv_status st = {0};
    clv_tokenizer *tok;
    if (clv_tok_load(&tok, dir, &st)) die_st(&st);
    const char *tmpl = clv_tok_chat_template(tok);
    if (!tmpl) die("chat: %s has no chat template (tokenizer_config.json chat_template)", dir);
    start_ranks(a, &lo);
    clv_model *m = load_model(dir, &lo);
    int ctx = lo.ctx ? lo.ctx : clv_model_ctx(m);
    clv_session *s;
    if (clv_session_new(&s, m, ctx, &st)) die_st(&st);
    const clv_gen_config *g = &m->gen;
    clv_sampler_cfg sc = {.greedy = greedy || (!sampling && !g->do_sample),
                          .temperature = (float)(isnan(temp) ? g->temperature : temp),
                          .top_k = (int)(top_k >= 0 ? top_k : g->top_k),
                          .top_p = (float)(isnan(top_p) ? g->top_p : top_p),
                          .min_p = (float)(isnan(min_p) ? g->min_p : min_p),
                          .repetition_penalty = (float)(isnan(rep) ? g->repetition_penalty : rep),
                          .seed = (uint64_t)seed};
    clv_sampler smp;
    if (clv_sampler_init(&smp, &sc, m->cfg.vocab, &st)) die_st(&st);
    float *logits = malloc(sizeof(float) * (size_t)m->cfg.vocab);
    int32_t *cached = malloc(sizeof(int32_t) * (size_t)ctx);
    int n_cached = 0, n_msgs = 0, cap_msgs = 16;
    clv_chat_msg *msgs = malloc(sizeof *msgs * (size_t)cap_msgs);
    char **owned = calloc((size_t)cap_msgs, sizeof(char *));
    if (!logits || !cached || !msgs || !owned) die("out of memory");
    if (system) msgs[n_msgs++] = (clv_chat_msg){"system", system};
    char line[65536];
    for (;;) {
        /* rank 0 reads the line and every rank receives it */
        int32_t len = 0;
        if (rank0()) {
            printf("> ");
            fflush(stdout);
            if (fgets(line, sizeof line, stdin)) len = (int32_t)strcspn(line, "\n");
        }
        if (g_comm && (g_comm->ops->broadcast(g_comm, &len, sizeof len, 0, &st) ||
                       (len > 0 && g_comm->ops->broadcast(g_comm, line, (size_t)len, 0, &st))))
            die_st(&st);
        if (len <= 0) break;
        line[len] = 0;
        if (n_msgs + 2 > cap_msgs) {
            cap_msgs *= 2;
            msgs = realloc(msgs, sizeof *msgs * (size_t)cap_msgs);
            owned = realloc(owned, sizeof(char *) * (size_t)cap_msgs);
            if (!msgs || !owned) die("out of memory");
        }
        owned[n_msgs] = strdup(line);
        msgs[n_msgs] = (clv_chat_msg){"user", owned[n_msgs]};
        n_msgs++;
        char *rendered;
        int32_t *ids;
        int n;
        if (clv_tok_apply_chat(tok, tmpl, msgs, n_msgs, true, &rendered, &st) ||
            clv_tok_encode(tok, rendered, strlen(rendered), false, &ids, &n, &st))
            die_st(&st);
        free(rendered);
        if (n + max_new > ctx)
            die("chat: the conversation (%d tokens) and -n %d tokens for the answer do not fit the %d-token context "
                "(lower -n or raise --ctx)", n, max_new, ctx);
        /* reuse the cache for the common prefix; compute only the rest */
        int keep = 0;
        while (keep < n_cached && keep < n - 1 && cached[keep] == ids[keep]) keep++;
        clv_session_rewind(s, keep);
        memcpy(cached, ids, sizeof(int32_t) * (size_t)n);
        n_cached = n;
        double t0 = clv_now();
        if (clv_session_eval(s, ids + keep, n - keep, logits, 0, &st)) die_st(&st);
        free(ids);
        clv_tok_stream *ts;
        if (clv_tok_stream_new(&ts, tok, true, &st)) die_st(&st);
        int produced = 0;
        double t1 = clv_now();
        while (produced < max_new) {
            int32_t t = rank0() ? clv_sampler_next(&smp, logits, cached, n_cached) : 0;
            if (g_comm && g_comm->ops->broadcast(g_comm, &t, sizeof t, 0, &st)) die_st(&st);
            produced++;
            cached[n_cached++] = t;
            if (is_eos(&m->cfg, t)) break;
            const char *piece;
            size_t plen;
            if (clv_tok_stream_push(ts, t, &piece, &plen, &st)) die_st(&st);
            if (rank0()) {
                fwrite(piece, 1, plen, stdout);
                fflush(stdout);
            }
            if (clv_session_eval(s, &t, 1, logits, 0, &st)) die_st(&st);
        }
        const char *piece;
        size_t plen;
        if (clv_tok_stream_flush(ts, &piece, &plen, &st)) die_st(&st);
        if (rank0()) fwrite(piece, 1, plen, stdout);
        double t2 = clv_now();
        if (rank0()) printf("\n");
        fflush(stdout);
        clv_info("[%d prompt tokens at %.1f tok/s, %d generated at %.1f tok/s]\n", n - keep, (n - keep) / (t1 - t0), produced,
                 produced / (t2 - t1));
        /* the answer joins the conversation */
        char *answer;
        size_t alen;
        if (clv_tok_decode(tok, cached + n, n_cached - n, true, &answer, &alen, &st)) die_st(&st);
        owned[n_msgs] = answer;
        msgs[n_msgs++] = (clv_chat_msg){"assistant", answer};
        clv_tok_stream_free(ts);
    }
    for (int i = 0; i < n_msgs; i++)
        if (!(system && i == 0)) free(owned[i]);
    free(owned), free(msgs), free(cached), free(logits);
    clv_sampler_free(&smp);
    clv_session_free(s);
    clv_model_free(m);
    clv_tok_free(tok);
    return finish_ranks(0);
}

/* ---- logits ---------------------------------------------------------------------- */

static int cmd_logits(args *a) {
    const char *dir = NULL, *ids_s = NULL, *out = NULL;
    clv_load_opts lo = {0};
    bool one_by_one = false;
    for (a->i = 2; a->i < a->argc; a->i++) {
        help_if_asked(a);
        if (flag(a, "-m", "--model")) dir = value(a);
        else if (flag(a, "--ids", NULL)) ids_s = value(a);
        else if (flag(a, "--out", "-o")) out = value(a);
        else if (flag(a, "--one-by-one", NULL)) one_by_one = true;
        else if (flag(a, "--prefill-chunk", NULL)) lo.prefill_chunk = (int)int_value(a, 1, 1 << 20);
        else if (!placement_flag(a, &lo)) unknown(a);
    }
    if (!ids_s || !out) die("logits: --ids and --out are required");
    clv_status st = {0};
    int32_t *ids;
    int n;
    if (clv_parse_ids(ids_s, &ids, &n, &st)) die_st(&st);
    if (lo.ctx == 0) lo.ctx = n;
    start_ranks(a, &lo);
    clv_model *m = load_model(dir, &lo);
    ids_check(m, ids, n);
    clv_session *s;
    if (clv_session_new(&s, m, n, &st)) die_st(&st);
    size_t count = (size_t)n * m->cfg.vocab;
    float *lg = malloc(sizeof(float) * count);
    if (!lg) die("out of memory for %zu logits", count);
    if (one_by_one) {
        for (int i = 0; i < n; i++)
            if (clv_session_eval(s, ids + i, 1, lg + (size_t)i * m->cfg.vocab, 1, &st)) die_st(&st);
    } else if (clv_session_eval(s, ids, n, lg, 1, &st)) {
        die_st(&st);
    }
    if (rank0() && clv_write_file(out, lg, sizeof(float) * count, &st)) die_st(&st);
    clv_info("wrote %d x %d logits to %s\n", n, m->cfg.vocab, out);
    free(lg);
    free(ids);
    clv_session_free(s);
    clv_model_free(m);
    return finish_ranks(0);
}

/* ---- info ------------------------------------------------------------------------ */

static int cmd_info(args *a) {
    const char *dir = NULL;
    for (a->i = 2; a->i < a->argc; a->i++) {
        help_if_asked(a);
        if (flag(a, "-m", "--model")) dir = value(a);
        else unknown(a);
    }
    clv_load_opts lo = {.n_threads = 1, .ctx = 1};
    clv_model *m = load_model(dir, &lo);
    clv_config_print(&m->cfg, stdout);
    printf("weights            %.2f MiB in %d file(s), %d tensors\n", m->weight_bytes / 1048576.0, m->st.n_files,
           m->st.n_tensors);
    printf("\n%-56s %-5s %-16s %s\n", "tensor", "dtype", "shape", "file");
    for (int i = 0; i < m->st.n_tensors; i++) {
        const clv_st_tensor *t = &m->st.tensors[i];
        char shape[96];
        clv_st_shape_str(t, shape, sizeof shape);
        const char *path = m->st.files[t->file].path, *slash = strrchr(path, '/');
        printf("%-56s %-5s %-16s %s\n", t->name, clv_dtype_name(t->dtype), shape, slash ? slash + 1 : path);
    }
    clv_model_free(m);
    return 0;
}

/* ---- plan ------------------------------------------------------------------------- */

/* Read bandwidth of RAM (a 256 MiB buffer, 2 passes) and of the checkpoint's
 * disk (O_DIRECT reads of up to 512 MiB of its largest file), in GB/s. */
static void calibrate(const clv_model *m, double *ram_gbs, double *disk_gbs) {
    size_t n = (256u << 20) / sizeof(uint64_t);
    uint64_t *buf = malloc(n * sizeof *buf), acc = 0;
    if (buf) {
        for (size_t i = 0; i < n; i++) buf[i] = i;
        double best = 1e9;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = clv_now();
            for (size_t i = 0; i < n; i += 8)
                acc += buf[i] ^ buf[i + 1] ^ buf[i + 2] ^ buf[i + 3] ^ buf[i + 4] ^ buf[i + 5] ^ buf[i + 6] ^ buf[i + 7];
            double t = clv_now() - t0;
            best = t < best ? t : best;
        }
        *ram_gbs = (double)(n * sizeof *buf) / best / 1e9;
        free(buf);
    }
    int big = 0;
    for (int f = 1; f < m->st.n_files; f++)
        if (m->st.files[f].size > m->st.files[big].size) big = f;
    int fd = open(m->st.files[big].path, O_RDONLY | O_DIRECT);
    size_t chunk = 8u << 20;
    void *b = aligned_alloc(4096, chunk);
    if (fd >= 0 && b) {
        size_t total = 0, limit = m->st.files[big].size < (512u << 20) ? m->st.files[big].size & ~(size_t)4095 : (512u << 20);
        double t0 = clv_now();
        while (total + chunk <= limit && pread(fd, b, chunk, (off_t)total) == (ssize_t)chunk) total += chunk;
        double t = clv_now() - t0;
        if (total) *disk_gbs = (double)total / t / 1e9;
    }
    if (fd >= 0) close(fd);
    free(b);
    if (acc == 42) fputc(' ', stderr); /* keep the reads */
}

static int cmd_plan(args *a) {
    const char *dir = NULL;
    bool json = false, cal = false;
    clv_load_opts lo = {.n_threads = 1};
    for (a->i = 2; a->i < a->argc; a->i++) {
        help_if_asked(a);
        if (flag(a, "-m", "--model")) dir = value(a);
        else if (flag(a, "--json", NULL)) json = true;
        else if (flag(a, "--calibrate", NULL)) cal = true;
        else if (flag(a, "--accelerate-compat", NULL)) lo.accelerate_compat = true;
        else if (!placement_flag(a, &lo)) unknown(a);
    }
    if (g_pp > 1) die("plan --pp: plan prints one process's placement; it does not split pipeline stages");
    clv_model *m = load_model(dir, &lo);
    if (json) {
        char *txt = clv_plan_map_json(&m->plan);
        printf("%s\n", txt);
        free(txt);
        clv_model_free(m);
        return 0;
    }
    double ram = 20.0, disk = 2.0;
    if (cal) calibrate(m, &ram, &disk);
    clv_plan_print(&m->plan, stdout);
    if (g_tp > 1) {
        /* what each rank would hold: its slices of the split tensors + the replicated ones */
        clv_status st = {0};
        char *text = NULL;
        size_t len;
        if (g_tp_plan_path && clv_read_file(g_tp_plan_path, &text, &len, &st)) die_st(&st);
        printf("\n");
        for (int r = 0; r < g_tp; r++) {
            clv_tp_plan tp;
            if (clv_tp_plan_make(&tp, &m->cfg, g_tp, r, text, g_tp_plan_path ? g_tp_plan_path : "auto", &st)) die_st(&st);
            if (r == 0) clv_tp_plan_print(&tp, &m->cfg, stdout);
            uint64_t b = clv_model_tp_bytes(m, &tp);
            char sz[32], all[32];
            clv_size_str(b, sz, sizeof sz);
            clv_size_str(m->weight_bytes, all, sizeof all);
            printf("  rank %d holds %s of %s weights (%.1f%%)\n", r, sz, all, 100.0 * (double)b / (double)m->weight_bytes);
        }
        free(text);
    }
    bool gpu = false;
    for (int d = 0; d < m->plan.n_devices; d++) gpu |= m->plan.devices[d].kind == CLV_DEV_CUDA;
    printf("\npredicted decode: %.2f tok/s (RAM %.1f GB/s, disk %.2f GB/s%s", clv_plan_predict_tok_s(&m->plan, ram, disk),
           ram, disk, cal ? ", measured" : ", defaults: --calibrate measures them");
    if (gpu) printf("; GPU memory %.0f GB/s and host-to-GPU %.0f GB/s assumed", CLV_GPU_GBS_DEFAULT, CLV_H2D_GBS_DEFAULT);
    printf(")\n");
    clv_model_free(m);
    return 0;
}

/* ---- launch ------------------------------------------------------------------------ */

static int cmd_launch(args *a) {
    int nproc = 0, nnodes = 1, node_rank = 0, port = 29500;
    const char *addr = "127.0.0.1";
    for (a->i = 2; a->i < a->argc; a->i++) {
        help_if_asked(a);
        if (flag(a, "--", NULL)) break;
        if (flag(a, "--nproc-per-node", "--nproc_per_node")) nproc = (int)int_value(a, 1, 1024);
        else if (flag(a, "--nnodes", NULL)) nnodes = (int)int_value(a, 1, 1 << 16);
        else if (flag(a, "--node-rank", "--node_rank")) node_rank = (int)int_value(a, 0, 1 << 16);
        else if (flag(a, "--master-addr", "--master_addr")) addr = value(a);
        else if (flag(a, "--master-port", "--master_port")) port = (int)int_value(a, 1, 65535);
        else unknown(a);
    }
    if (nproc < 1) die("launch: --nproc-per-node N is required");
    if (a->i + 1 >= a->argc) die("launch: give the command after --, e.g. cleave launch --nproc-per-node 2 -- cleave generate ...");
    if (node_rank >= nnodes) die("launch: --node-rank %d must be below --nnodes %d", node_rank, nnodes);
    char **cmd = a->argv + a->i + 1;
    /* `cleave` as the command means this very binary */
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0 && strcmp(cmd[0], "cleave") == 0) {
        self[n] = 0;
        cmd[0] = self;
    }
    clv_status st = {0};
    int rc = clv_launch(cmd, nproc, nnodes, node_rank, addr, port, &st);
    if (rc < 0) die_st(&st);
    return rc;
}

/* ---- synth ------------------------------------------------------------------------ */

static int cmd_synth(args *a) {
    clv_synth_opts o;
    clv_synth_defaults(&o);
    bool have_arch = false;
    const char *rope_knob = NULL; /* a --rope-scaling parameter given */
    for (a->i = 2; a->i < a->argc; a->i++) {
        help_if_asked(a);
        if (flag(a, "--arch", NULL)) {
            const char *v = value(a);
            static const char *names[] = {"llama", "mistral", "qwen2", "qwen3", "phi3"};
            int k = 0;
            while (k < 5 && strcmp(v, names[k])) k++;
            if (k == 5) die("synth --arch: '%s' is not one of llama, mistral, qwen2, qwen3, phi3", v);
            o.arch = (clv_arch)k;
            have_arch = true;
        } else if (flag(a, "--hidden", NULL)) o.hidden = (int)int_value(a, 1, 1 << 16);
        else if (flag(a, "--layers", NULL)) o.layers = (int)int_value(a, 1, CLV_MAX_LAYERS);
        else if (flag(a, "--heads", NULL)) o.heads = (int)int_value(a, 1, 1024);
        else if (flag(a, "--kv-heads", NULL)) o.kv_heads = (int)int_value(a, 1, 1024);
        else if (flag(a, "--intermediate", NULL)) o.intermediate = (int)int_value(a, 1, 1 << 20);
        else if (flag(a, "--vocab", NULL)) o.vocab = (int)int_value(a, 3, 1 << 22);
        else if (flag(a, "--head-dim", NULL)) o.head_dim = (int)int_value(a, 2, CLV_MAX_HEAD_DIM);
        else if (flag(a, "--max-pos", NULL)) o.max_pos = (int)int_value(a, 1, INT32_MAX);
        else if (flag(a, "--seed", NULL)) o.seed = (uint64_t)int_value(a, 0, INT64_MAX);
        else if (flag(a, "--shards", NULL)) o.shards = (int)int_value(a, 1, 99999);
        else if (flag(a, "--tie", NULL)) o.tie = true;
        else if (flag(a, "--attention-bias", NULL)) o.attention_bias = true;
        else if (flag(a, "--out", "-o")) o.out_dir = value(a);
        else if (flag(a, "--rope-factor", NULL)) o.rope_factor = num_value(a), rope_knob = "--rope-factor";
        else if (flag(a, "--rope-theta", NULL)) o.rope_theta = num_value(a);
        else if (flag(a, "--rope-orig-max-pos", NULL))
            o.rope_orig_max_pos = (int)int_value(a, 1, INT32_MAX), rope_knob = "--rope-orig-max-pos";
        else if (flag(a, "--sliding-window", NULL)) o.sliding_window = (int)int_value(a, 1, INT32_MAX);
        else if (flag(a, "--rope-scaling", NULL)) {
            const char *v = value(a);
            if (strcmp(v, "linear") == 0) o.rope = CLV_ROPE_LINEAR;
            else if (strcmp(v, "llama3") == 0) o.rope = CLV_ROPE_LLAMA3;
            else if (strcmp(v, "yarn") == 0) o.rope = CLV_ROPE_YARN;
            else die("synth --rope-scaling: '%s' is not one of linear, llama3, yarn", v);
        } else if (flag(a, "--dtype", NULL)) {
            const char *v = value(a);
            if (strcmp(v, "f32") == 0) o.dtype = CLV_DT_F32;
            else if (strcmp(v, "bf16") == 0) o.dtype = CLV_DT_BF16;
            else if (strcmp(v, "f16") == 0) o.dtype = CLV_DT_F16;
            else die("synth --dtype: '%s' is not one of f32, bf16, f16", v);
        } else unknown(a);
    }
    if (!have_arch || !o.out_dir) die("synth: --arch and --out are required (see cleave synth --help)");
    if (rope_knob && o.rope == CLV_ROPE_DEFAULT) die("synth: %s needs --rope-scaling linear|llama3|yarn", rope_knob);
    if (o.rope != CLV_ROPE_DEFAULT && o.rope != CLV_ROPE_LINEAR && !o.rope_orig_max_pos)
        o.rope_orig_max_pos = o.max_pos < 8192 ? o.max_pos : 8192;
    if (o.sliding_window && o.arch == CLV_ARCH_LLAMA) die("synth: --sliding-window needs --arch mistral, qwen2 or qwen3");
    clv_status st = {0};
    if (clv_synth_write(&o, &st)) die_st(&st);
    clv_info("wrote %s\n", o.out_dir);
    return 0;
}

/* ---- bench ------------------------------------------------------------------------ */

/* All-reduce latency of this job's communicator for message sizes 1 KiB .. 16 MiB. */
static int bench_comm(args *a) {
    clv_load_opts lo = {0};
    if (g_tp == 1) die("bench --comm measures an all-reduce: give --tp 2 or more (default 2)");
    if (g_tp < 2) g_tp = 2;
    start_ranks(a, &lo);
    if (!g_comm) die("bench --comm needs at least 2 ranks");
    clv_status st = {0};
    size_t max_n = (16u << 20) / sizeof(float);
    float *buf = malloc(max_n * sizeof(float));
    if (!buf) die("out of memory");
    if (rank0()) printf("all-reduce (sum, f32) over %d ranks, %s communicator\n%10s %12s %12s\n", g_comm->world,
                        g_comm->ops->name, "bytes", "latency us", "GB/s");
    for (size_t bytes = 1024; bytes <= (16u << 20); bytes *= 4) {
        size_t n = bytes / sizeof(float);
        for (size_t i = 0; i < n; i++) buf[i] = 1.0f;
        int iters = bytes <= 65536 ? 2000 : bytes <= (1u << 20) ? 200 : 20;
        if (g_comm->ops->barrier(g_comm, &st)) die_st(&st);
        double t0 = clv_now();
        for (int it = 0; it < iters; it++)
            if (g_comm->ops->allreduce_sum(g_comm, buf, n, -1, &st)) die_st(&st);
        double us = (clv_now() - t0) / iters * 1e6;
        if (rank0()) printf("%10zu %12.2f %12.2f\n", bytes, us, (double)bytes / us / 1e3);
    }
    free(buf);
    return finish_ranks(0);
}

static int cmd_bench(args *a) {
    for (int i = 2; i < a->argc; i++)
        if (strcmp(a->argv[i], "--comm") == 0) {
            for (a->i = 2; a->i < a->argc; a->i++) {
                help_if_asked(a);
                if (flag(a, "--comm", NULL)) continue;
                if (flag(a, "--tp", NULL)) g_tp = (int)int_value(a, 1, 4096);
                else unknown(a);
            }
            return bench_comm(a);
        }
    const char *dir = NULL;
    int pp = 512, tg = 128, reps = 3;
    bool json = false;
    clv_load_opts lo = {0};
    for (a->i = 2; a->i < a->argc; a->i++) {
        help_if_asked(a);
        if (flag(a, "-m", "--model")) dir = value(a);
        else if (flag(a, "-p", NULL)) pp = (int)int_value(a, 1, 1 << 20);
        else if (flag(a, "-n", NULL)) tg = (int)int_value(a, 1, 1 << 20);
        else if (flag(a, "-r", "--reps")) reps = (int)int_value(a, 1, 1000);
        else if (flag(a, "--json", NULL)) json = true;
        else if (!placement_flag(a, &lo)) unknown(a);
    }
    if (lo.ctx == 0) lo.ctx = pp + tg;
    start_ranks(a, &lo);
    clv_model *m = load_model(dir, &lo);
    clv_status st = {0};
    clv_session *s;
    if (clv_session_new(&s, m, pp + tg, &st)) die_st(&st);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)pp);
    float *logits = malloc(sizeof(float) * (size_t)m->cfg.vocab);
    uint64_t r = 12345;
    for (int i = 0; i < pp; i++) ids[i] = (int32_t)((r = r * 6364136223846793005ull + 1442695040888963407ull) >> 33) % m->cfg.vocab;
    double best_pp = 0, best_tg = 0;
    for (int rep = 0; rep < reps; rep++) {
        clv_session_reset(s);
        double t0 = clv_now();
        if (clv_session_eval(s, ids, pp, logits, 0, &st)) die_st(&st);
        double t1 = clv_now();
        int32_t tok = ids[pp - 1];
        for (int i = 0; i < tg; i++) {
            if (clv_session_eval(s, &tok, 1, logits, 0, &st)) die_st(&st);
            tok = (tok + 1) % m->cfg.vocab;
        }
        double t2 = clv_now();
        if (pp / (t1 - t0) > best_pp) best_pp = pp / (t1 - t0);
        if (tg / (t2 - t1) > best_tg) best_tg = tg / (t2 - t1);
    }
    double gbs = best_tg * (double)m->decode_bytes / 1e9, copy_gbs = 0;
    /* on a GPU, the share of its measured device copy bandwidth (read + write) */
    for (int d = 0; d < m->plan.n_devices && rank0(); d++)
        if (m->be[d] && strcmp(m->be[d]->ops->name, "cuda") == 0 && copy_gbs == 0)
            copy_gbs = clv_cuda_copy_bandwidth(m->gpu_base + m->plan.devices[d].index);
    if (!rank0()) {
        free(ids);
        free(logits);
        clv_session_free(s);
        clv_model_free(m);
        return finish_ranks(0);
    }
    if (json) {
        printf("{\"pp\":%d,\"tg\":%d,\"devices\":\"%s\",\"isa\":\"%s\",\"prefill_precision\":\"%s\","
               "\"kv_dtype\":\"%s\",\"pp_tok_s\":%.3f,\"tg_tok_s\":%.3f,"
               "\"decode_bytes_per_token\":%llu,\"decode_gb_s\":%.3f,\"disk_bytes_read\":%llu,\"gpu_copy_gbs\":%.1f}\n",
               pp, tg, be_desc(m), clv_cpu_isa(), m->bf16_prefill ? "bf16" : "f32", clv_kv_dtype_name(m->kv_dt), best_pp, best_tg,
               (unsigned long long)m->decode_bytes, gbs,
               (unsigned long long)(m->streamer ? clv_streamer_bytes_read(m->streamer) : 0), copy_gbs);
    } else {
        printf("model    %s (%s, %.1f MiB of weights)\n", dir, clv_arch_name(m->cfg.arch), m->weight_bytes / 1048576.0);
        printf("devices  %s (%s)\n", be_desc(m), clv_cpu_isa());
        printf("pp%-5d  %10.2f tok/s   (prefill precision %s)\n", pp, best_pp, m->bf16_prefill ? "bf16" : "f32");
        printf("tg%-5d  %10.2f tok/s   %.2f GB/s of weights (%.1f MB per token; KV cache %s)\n", tg, best_tg, gbs,
               m->decode_bytes / 1e6, clv_kv_dtype_name(m->kv_dt));
        if (copy_gbs > 0)
            printf("gpu      device copy bandwidth %.1f GB/s (read + write); decode reads weights at %.0f%% of it\n",
                   copy_gbs, 100 * gbs / copy_gbs);
    }
    free(ids);
    free(logits);
    clv_session_free(s);
    clv_model_free(m);
    return finish_ranks(0);
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        fputs(k_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("cleave %s\n", CLV_VERSION);
        return 0;
    }
    static const struct { const char *name; int (*fn)(args *); const char **help; } cmds[] = {
        {"generate", cmd_generate, &k_generate_help}, {"logits", cmd_logits, &k_logits_help},
        {"info", cmd_info, &k_info_help},             {"synth", cmd_synth, &k_synth_help},
        {"plan", cmd_plan, &k_plan_help},             {"launch", cmd_launch, &k_launch_help},
        {"chat", cmd_chat, &k_chat_help},
        {"bench", cmd_bench, &k_bench_help},
    };
    if (strcmp(argv[1], "import-gguf") == 0) return clv_cli_import_gguf(argc - 1, argv + 1);
    if (strcmp(argv[1], "tokenize") == 0) return clv_cli_tokenize(argc, argv);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(argv[1], cmds[i].name) == 0) {
            args a = {argc, 2, argv, cmds[i].name, *cmds[i].help};
            return cmds[i].fn(&a);
        }
    fprintf(stderr, "cleave: unknown command '%s'\n\n%s", argv[1], k_usage);
    return 2;
}
