#include "gguf_cli.h"

#include <stdio.h>
#include <string.h>

#include "../model/gguf_import.h"
#include "../util/util.h"

const char *const clv_cli_import_gguf_help =
    "usage: cleave import-gguf FILE --out DIR [--dtype bf16|f16|f32]\n"
    "\n"
    "Converts a llama.cpp GGUF file (general.architecture llama, mistral, qwen2 or\n"
    "qwen3) into a Hugging Face model folder that cleave and transformers load:\n"
    "config.json, generation_config.json, model.safetensors, tokenizer.json and\n"
    "tokenizer_config.json (with the chat template). Quantised tensors (Q4_0, Q4_1,\n"
    "Q5_0, Q5_1, Q8_0, Q2_K..Q6_K) are dequantised; llama.cpp's q/k row order is\n"
    "undone. A GGUF without tensors gives a tokenizer-only folder.\n"
    "\n"
    "  --out, -o DIR   the folder to create (must not exist, or be empty)\n"
    "  --dtype T       weights dtype: bf16 (default), f16, or f32 (exact: every\n"
    "                  dequantised value is a float32)\n";

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "cleave: error: import-gguf: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see cleave import-gguf --help)\n");
    return 2;
}

int clv_cli_import_gguf(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[0], "import-gguf") != 0 && strcmp(argv[1], "import-gguf") == 0) {
        argc--; /* main's argv: skip the program name */
        argv++;
    }
    const char *file = NULL;
    clv_gguf_import_opts o;
    clv_gguf_import_defaults(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(clv_cli_import_gguf_help, stdout);
            return 0;
        } else if (strcmp(a, "--out") == 0 || strcmp(a, "-o") == 0) {
            if (i + 1 >= argc) return usage_error("%s: missing value", a);
            o.out_dir = argv[++i];
        } else if (strcmp(a, "--dtype") == 0) {
            if (i + 1 >= argc) return usage_error("%s: missing value", a);
            const char *v = argv[++i];
            if (strcmp(v, "bf16") == 0) o.dtype = CLV_DT_BF16;
            else if (strcmp(v, "f16") == 0) o.dtype = CLV_DT_F16;
            else if (strcmp(v, "f32") == 0) o.dtype = CLV_DT_F32;
            else return usage_error("--dtype: '%s' is not one of bf16, f16, f32", v);
        } else if (a[0] == '-' && a[1]) {
            return usage_error("unknown option '%s'", a);
        } else if (file) {
            return usage_error("one GGUF file at a time ('%s' is a second one)", a);
        } else {
            file = a;
        }
    }
    if (!file) return usage_error("%s", "a GGUF FILE is required");
    if (!o.out_dir) return usage_error("%s", "--out DIR is required");

    clv_status st = {0};
    clv_gguf_import_report rep;
    if (clv_gguf_import(file, &o, &rep, &st)) {
        fprintf(stderr, "cleave: error: %s\n", st.msg);
        return 1;
    }
    if (rep.tokenizer_only) {
        clv_info("import-gguf: %s: no tensors; wrote a tokenizer-only folder %s (%s tokenizer) in %.2f s\n", file, o.out_dir,
                 rep.tokenizer_model, rep.seconds);
        return 0;
    }
    char types[512];
    size_t k = 0;
    types[0] = 0;
    for (int t = 0; t < CLV_GGML_TYPE_END; t++)
        if (rep.tensors_of_type[t] && k < sizeof types)
            k += (size_t)snprintf(types + k, sizeof types - k, "%s%d %s", k ? ", " : "", rep.tensors_of_type[t], clv_ggml_type_name(t));
    static const char *dt[] = {[CLV_DT_F32] = "f32", [CLV_DT_F16] = "f16", [CLV_DT_BF16] = "bf16"};
    clv_info("import-gguf: %s (%s) -> %s: %d tensors (%s), %.1f MB -> %.1f MB %s, tokenizer %s, %.2f s\n", file, rep.arch,
             o.out_dir, rep.n_tensors, types, (double)rep.bytes_in / 1e6, (double)rep.bytes_out / 1e6, dt[o.dtype],
             rep.tokenizer_model[0] ? rep.tokenizer_model : "none", rep.seconds);
    return 0;
}
