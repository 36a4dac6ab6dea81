#!/usr/bin/env bash
# bench/gpu.sh — cleave on a CUDA GPU against Hugging Face transformers on the
# same GPU and the same checkpoint, one table:
#
#   bench/gpu.sh [MODEL_DIR] [-p 512] [-n 128] [-r 3]
#
# MODEL_DIR defaults to the ~1.1B synthetic bf16 Llama (made with cleave synth
# under $WORK when missing). Rows:
#   plain        every module on cuda:0
#   offload      half the layers in CPU RAM, computed on the GPU:
#                  cleave with its prefetch (--offload-exec main), cleave
#                  without it (--no-prefetch: Accelerate's synchronous copies),
#                  cleave computing them on the CPU (--offload-exec local),
#                  transformers with device_map + max_memory (Accelerate hooks)
#   tp2          two ranks: cleave --tp 2 (NCCL with two GPUs; on one GPU the
#                  two ranks share it through host memory), transformers
#                  tp_plan="auto" under torchrun (needs two GPUs: skipped
#                  otherwise, with a line saying so)
# Decode GB/s is weight bytes read per token x tokens/s; the share is of the
# device-to-device copy bandwidth cleave measures on cuda:0 (read + write).
# Knobs: CLEAVE (build/cleave), WORK (/tmp/cleave-gpu), HF_PY (python with torch
# + transformers + accelerate; default: python3 if it imports them, else a
# virtualenv under $WORK made with pip).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
MODEL="" PP=512 TG=128 REPS=3
while [[ $# -gt 0 ]]; do
    case $1 in
    -p) PP=$2; shift 2 ;;
    -n) TG=$2; shift 2 ;;
    -r) REPS=$2; shift 2 ;;
    -h | --help) usage ;;
    -*) usage ;;
    *) MODEL=$1; shift ;;
    esac
done
CLEAVE=${CLEAVE:-build/cleave}
WORK=${WORK:-/tmp/cleave-gpu}
mkdir -p "$WORK"
log() { echo "gpu.sh: $*" >&2; }
[[ -x $CLEAVE ]] || make -s "$CLEAVE" >&2

if [[ -z $MODEL ]]; then
    MODEL=$WORK/tl11
    [[ -f $MODEL/config.json ]] || "$CLEAVE" synth --arch llama --hidden 2048 --layers 22 --heads 32 --kv-heads 4 \
        --intermediate 5632 --vocab 32000 --dtype bf16 --seed 1 --out "$MODEL" >&2
fi
MODEL=$(cd "$MODEL" && pwd)
NL=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['num_hidden_layers'])" "$MODEL/config.json")
NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
[[ $NGPU -ge 1 ]] || { log "no GPU (nvidia-smi lists none)"; exit 1; }

# Half the layers on the GPU: a device map with layers [0, NL/2) on cuda:0.
half_map() { # half_map DEVICE_OF_REST
    python3 - "$NL" "$1" <<'PY'
import json, sys
n, rest = int(sys.argv[1]), sys.argv[2]
m = {"model.embed_tokens": "cuda:0", "model.norm": "cuda:0", "lm_head": "cuda:0"}
m.update({f"model.layers.{i}": ("cuda:0" if i < n // 2 else rest) for i in range(n)})
print(json.dumps(m))
PY
}
half_map cpu >"$WORK/half.json"

declare -A ROW
cleave_row() { # cleave_row NAME ARGS...
    local name=$1 j; shift
    if j=$("$CLEAVE" bench -m "$MODEL" -p "$PP" -n "$TG" -r "$REPS" --json "$@" 2>"$WORK/err.txt" | tail -n 1); then
        ROW[$name]=$(python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(d['pp_tok_s'], d['tg_tok_s'], d['decode_bytes_per_token'], d.get('gpu_copy_gbs', 0))" "$j")
        log "$name: ${ROW[$name]}"
    else
        log "$name failed: $(tail -n 3 "$WORK/err.txt")"
    fi
}
cleave_row "cleave plain" --device-map cuda:0
cleave_row "cleave offload (prefetch)" --device-map "$WORK/half.json" --offload-exec main
cleave_row "cleave offload (no prefetch)" --device-map "$WORK/half.json" --offload-exec main --no-prefetch
cleave_row "cleave offload (cpu computes)" --device-map "$WORK/half.json" --offload-exec local
cleave_row "cleave tp2" --tp 2 --device-map cuda

# ---- transformers ----------------------------------------------------------------------------
HF_PY=${HF_PY:-}
if [[ -z $HF_PY ]]; then
    if python3 -c "import torch, transformers, accelerate" 2>/dev/null; then HF_PY=python3
    else
        [[ -x $WORK/venv/bin/python ]] || { python3 -m venv "$WORK/venv" && "$WORK/venv/bin/pip" install -q torch transformers accelerate safetensors >&2; }
        HF_PY=$WORK/venv/bin/python
    fi
fi
cat >"$WORK/hf_bench.py" <<'PY'
import json, os, sys, time, torch, transformers
model_dir, pp, tg, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
kw = dict(dtype=torch.bfloat16)
if mode == "plain":
    kw["device_map"] = "cuda:0"
elif mode == "offload":
    kw["device_map"] = json.load(open(sys.argv[5]))
elif mode == "tp2":
    kw["tp_plan"] = "auto"
m = transformers.AutoModelForCausalLM.from_pretrained(model_dir, **kw).eval()
dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
g = torch.Generator().manual_seed(12345)
ids = torch.randint(3, m.config.vocab_size, (1, pp), generator=g).to(dev)
with torch.inference_mode():
    m(ids[:, :16]); torch.cuda.synchronize()
    t0 = time.perf_counter(); m(ids); torch.cuda.synchronize(); t1 = time.perf_counter()
    t2 = time.perf_counter()
    out = m.generate(ids, max_new_tokens=tg, min_new_tokens=tg, do_sample=False, eos_token_id=None, pad_token_id=0)
    torch.cuda.synchronize(); t3 = time.perf_counter()
assert out.shape[1] == pp + tg, out.shape
prefill = t1 - t0
if int(os.environ.get("RANK", 0)) == 0:
    print(pp / prefill, tg / max((t3 - t2) - prefill, 1e-9))
PY
hf_row() { # hf_row NAME MODE [MAP]
    local name=$1 r; shift
    if r=$("$HF_PY" "$WORK/hf_bench.py" "$MODEL" "$PP" "$TG" "$@" 2>"$WORK/hf_err.txt" | tail -n 1); then
        ROW[$name]="$r"
        log "$name: $r"
    else
        log "$name failed: $(tail -n 3 "$WORK/hf_err.txt")"
    fi
}
HF_NOTE="transformers not importable"
if "$HF_PY" -c "import torch, transformers, accelerate" 2>/dev/null; then
    HF_NOTE=$("$HF_PY" -c "import torch, transformers, accelerate; print(f'transformers {transformers.__version__}, accelerate {accelerate.__version__}, torch {torch.__version__}')")
    hf_row "transformers plain" plain
    hf_row "transformers offload (accelerate)" offload "$WORK/half.json"
    if [[ $NGPU -ge 2 ]]; then
        TORCHRUN=$(dirname "$HF_PY")/torchrun
        [[ -x $TORCHRUN ]] || TORCHRUN="$HF_PY -m torch.distributed.run"
        if r=$($TORCHRUN --nproc-per-node 2 "$WORK/hf_bench.py" "$MODEL" "$PP" "$TG" tp2 2>"$WORK/hf_err.txt" | tail -n 1); then
            ROW["transformers tp2 (tp_plan auto)"]=$r
        else
            log "transformers tp2 failed: $(tail -n 3 "$WORK/hf_err.txt")"
        fi
    else
        log "transformers tp_plan=\"auto\" needs two GPUs (NCCL refuses two ranks on one); this machine has $NGPU"
    fi
fi

# ---- the table ---------------------------------------------------------------------------------
read -r _ _ BYTES COPY <<<"${ROW[cleave plain]:-0 0 0 0}"
echo
echo "model: $MODEL ($(python3 -c "print(f'{$BYTES/1e6:.1f}')") MB of weights read per generated token)"
echo "date: $(date -u +%Y-%m-%d), gpu: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -n 1) x $NGPU"
echo "cleave $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $HF_NOTE"
echo "cuda:0 device copy bandwidth (read + write): $COPY GB/s"
echo
printf '| %-36s | %10s | %10s | %9s | %9s |\n' run "pp$PP t/s" "tg$TG t/s" "tg GB/s" "% of copy"
printf '|%s|%s|%s|%s|%s|\n' -------------------------------------- ------------: ------------: -----------: -----------:
for name in "cleave plain" "transformers plain" "cleave offload (prefetch)" "cleave offload (no prefetch)" \
    "cleave offload (cpu computes)" "transformers offload (accelerate)" "cleave tp2" "transformers tp2 (tp_plan auto)"; do
    [[ -n ${ROW[$name]:-} ]] || continue
    read -r pp tg _ <<<"${ROW[$name]}"
    python3 -c "
import sys
n, pp, tg, by, bw = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
gbs = tg * by / 1e9
print('| %-36s | %10.1f | %10.1f | %9.1f | %8.0f%% |' % (n, pp, tg, gbs, 100 * gbs / bw if bw else 0))" "$name" "$pp" "$tg" "$BYTES" "$COPY"
done
