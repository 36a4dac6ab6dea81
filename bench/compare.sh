#!/usr/bin/env bash
# bench/compare.sh — cleave against its peers on one checkpoint, one table:
# pp (prompt tokens/s), tg (generated tokens/s), and tg as a share of the
# memory-bandwidth limit that bench/stream measures for the same thread count.
#
#   bench/compare.sh MODEL_DIR [-t "1 2"] [-p 512] [-n 128] [-r 3]
#
# Peers, each skipped (with a line saying why) when not set up:
#   llama.cpp     LLAMA_BENCH=/path/to/llama-bench and LLAMA_CPP_DIR=/path/to/llama.cpp
#                 (its convert_hf_to_gguf.py makes a bf16 GGUF of MODEL_DIR, cached
#                 under $WORK; a checkpoint without a tokenizer gets a stand-in
#                 byte-fallback tokenizer.json, which changes no weight); its
#                 tg is timed after a -p token context (-d), as the others' are
#   transformers  HF_VENV (default /tmp/hfvenv: torch + transformers; created with
#                 pip when missing): greedy generate of -n tokens after a -p token
#                 prompt in bf16, prefill timed separately
# Other knobs: CLEAVE (default build/cleave), STREAM (default bench/stream),
# WORK (default /tmp/cleave-compare), LLAMA_CPP_COMMIT (printed when LLAMA_CPP_DIR
# is not a git checkout), WAIT_IDLE=0 to skip waiting for an idle machine
# before each measurement (shared machines: see bench/README.md).
#
# The share of bandwidth is tg x (bytes of weights read per token, as cleave
# counts them: every matrix plus one embedding row) / stream's best read GB/s
# with as many threads, measured right before that row's engine runs (a shared
# host's bandwidth drifts from minute to minute; the BW column shows the value
# each row is divided by).
# cleave runs twice: as it is by default (a prompt's activations split into
# bf16 hi + lo, f32-level accuracy) and as "cleave-bf16pp" with
# --prefill-precision bf16 (rounded to bf16 like the peers' bf16 paths).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 1 && $1 != -h && $1 != --help ]] || usage
MODEL=$(cd "$1" && pwd); shift
THREADS="1 2" PP=512 TG=128 REPS=3
while [[ $# -gt 0 ]]; do
    case $1 in
    -t) THREADS=$2; shift 2 ;;
    -p) PP=$2; shift 2 ;;
    -n) TG=$2; shift 2 ;;
    -r) REPS=$2; shift 2 ;;
    *) usage ;;
    esac
done
CLEAVE=${CLEAVE:-build/cleave}
STREAM=${STREAM:-bench/stream}
WORK=${WORK:-/tmp/cleave-compare}
HF_VENV=${HF_VENV:-/tmp/hfvenv}
mkdir -p "$WORK"
log() { echo "compare: $*" >&2; }

source bench/idle.sh

[[ -x $CLEAVE ]] || make -s "$CLEAVE" >&2
[[ -x $STREAM ]] || make -s -C bench stream >&2

declare -A ROW # ROW[engine,threads] = "pp tg"
BYTES=$("$CLEAVE" bench -m "$MODEL" -p 1 -n 1 -r 1 -t 1 --json | python3 -c "import json,sys; print(json.load(sys.stdin)['decode_bytes_per_token'])")

# ---- bandwidth limit --------------------------------------------------------------
# bw_now ENGINE T: stream's best read GB/s with T threads, now, as BW[ENGINE,T]
declare -A BW
bw_now() {
    BW[$1,$2]=$("$STREAM" -t "$2" -n 5 | sed -n "s/^read_bw_gbs.*threads=$2 \([0-9.]*\).*/\1/p")
    [[ -n ${BW[$1,$2]} ]] || { log "bench/stream printed no read_bw_gbs line for $2 thread(s)"; exit 1; }
    log "stream, $2 thread(s), before $1: ${BW[$1,$2]} GB/s"
}

# ---- cleave -------------------------------------------------------------------------
# as it is, and with a prompt's activations rounded to bf16 as the peers do
for t in $THREADS; do
    for row in "cleave|f32" "cleave-bf16pp|bf16"; do
        wait_idle
        bw_now "${row%|*}" "$t"
        j=$("$CLEAVE" bench -m "$MODEL" -p "$PP" -n "$TG" -t "$t" -r "$REPS" --json --prefill-precision "${row#*|}")
        ROW[${row%|*},$t]=$(python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(d['pp_tok_s'], d['tg_tok_s'])" "$j")
        ISA=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['isa'])" "$j")
        log "cleave --prefill-precision ${row#*|} -t $t: ${ROW[${row%|*},$t]}"
    done
done
CLEAVE_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src 2>/dev/null || echo "+changes")

# ---- llama.cpp ------------------------------------------------------------------------
LLAMA_NOTE="not run (set LLAMA_BENCH and LLAMA_CPP_DIR)"
if [[ -n ${LLAMA_BENCH:-} && -n ${LLAMA_CPP_DIR:-} ]]; then
    PY=python3
    [[ -x $HF_VENV/bin/python ]] && PY=$HF_VENV/bin/python
    GGUF=$WORK/$(basename "$MODEL")-bf16.gguf
    if [[ ! -f $GGUF || $GGUF -ot $MODEL/config.json ]]; then
        src=$MODEL
        if [[ ! -f $MODEL/tokenizer.json && ! -f $MODEL/tokenizer.model ]]; then
            src=$WORK/$(basename "$MODEL")-with-tokenizer
            rm -rf "$src" && mkdir -p "$src"
            for f in "$MODEL"/*; do ln -s "$f" "$src/"; done
            V=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$MODEL/config.json")
            "$PY" bench/make_tokenizer.py "$src" "$V"
        fi
        "$PY" -c "import sentencepiece" 2>/dev/null || "$PY" -m pip install -q sentencepiece >&2
        log "converting to $GGUF"
        "$PY" "$LLAMA_CPP_DIR/convert_hf_to_gguf.py" "$src" --outtype bf16 --outfile "$GGUF" >"$WORK/convert.log" 2>&1 ||
            { log "conversion failed, see $WORK/convert.log"; exit 1; }
    fi
    # cleave and transformers decode after the -p token prompt; llama-bench's
    # tg starts from an empty context unless given that depth (-d)
    DEPTH=()
    DEPTH_NOTE="tg from an empty context: this llama-bench has no -d"
    lb_help=$("$LLAMA_BENCH" --help 2>&1 || true)
    if [[ $lb_help == *--n-depth* ]]; then DEPTH=(-d "$PP"); DEPTH_NOTE="tg after $PP tokens (-d $PP)"; fi
    for t in $THREADS; do
        wait_idle
        bw_now llama.cpp "$t"
        { "$LLAMA_BENCH" -m "$GGUF" -p "$PP" -n 0 -t "$t" -r "$REPS" -o json >"$WORK/llama-pp.json" &&
          "$LLAMA_BENCH" -m "$GGUF" -p 0 -n "$TG" "${DEPTH[@]}" -t "$t" -r "$REPS" -o json >"$WORK/llama-tg.json"; } 2>"$WORK/llama.err" ||
            { log "llama-bench failed, see $WORK/llama.err"; exit 1; }
        ROW[llama.cpp,$t]=$(python3 -c "
import json, sys
pp = [r['avg_ts'] for r in json.load(open(sys.argv[1])) if r['n_prompt'] > 0 and r['n_gen'] == 0]
tg = [r['avg_ts'] for r in json.load(open(sys.argv[2])) if r['n_gen'] > 0 and r['n_prompt'] == 0]
print(pp[0] if pp else 0, tg[0] if tg else 0)" "$WORK/llama-pp.json" "$WORK/llama-tg.json")
        log "llama.cpp -t $t: ${ROW[llama.cpp,$t]}"
    done
    commit=${LLAMA_CPP_COMMIT:-$(git -C "$LLAMA_CPP_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)}
    LLAMA_NOTE="llama.cpp $commit (llama-bench, bf16 GGUF, CPU build; $DEPTH_NOTE)"
fi

# ---- transformers ------------------------------------------------------------------------
if [[ ! -x $HF_VENV/bin/python ]]; then
    log "creating $HF_VENV (torch, transformers)"
    python3 -m venv "$HF_VENV" && "$HF_VENV/bin/pip" install -q torch transformers safetensors >&2
fi
HF_NOTE="not run"
if "$HF_VENV/bin/python" -c "import torch, transformers" 2>/dev/null; then
    for t in $THREADS; do
        wait_idle
        bw_now transformers "$t"
        ROW[transformers,$t]=$("$HF_VENV/bin/python" - "$MODEL" "$PP" "$TG" "$t" <<'PY'
import sys, time, torch, transformers
model_dir, pp, tg, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
m = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
g = torch.Generator().manual_seed(12345)
ids = torch.randint(3, m.config.vocab_size, (1, pp), generator=g)
with torch.inference_mode():
    m(ids[:, :16])                                  # warm up
    t0 = time.perf_counter(); m(ids); t1 = time.perf_counter()
    t2 = time.perf_counter()
    out = m.generate(ids, max_new_tokens=tg, min_new_tokens=tg, do_sample=False, eos_token_id=None, pad_token_id=0)
    t3 = time.perf_counter()
assert out.shape[1] == pp + tg, out.shape
prefill = t1 - t0
print(pp / prefill, tg / max((t3 - t2) - prefill, 1e-9))
PY
)
        log "transformers -t $t: ${ROW[transformers,$t]}"
    done
    HF_NOTE=$("$HF_VENV/bin/python" -c "import torch, transformers; print(f'transformers {transformers.__version__}, torch {torch.__version__}')")
fi

# ---- the table -----------------------------------------------------------------------------
echo
echo "model: $MODEL ($(python3 -c "print(f'{$BYTES/1e6:.1f}')") MB of weights read per generated token)"
echo "date: $(date -u +%Y-%m-%d), cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cpus"
echo "cleave $CLEAVE_COMMIT ($ISA kernels); $LLAMA_NOTE; $HF_NOTE"
echo "stream read bandwidth, measured before each row: $(for t in $THREADS; do printf '%s thread(s) %s-%s GB/s  ' "$t" \
    "$(for k in "${!BW[@]}"; do [[ $k == *,$t ]] && echo "${BW[$k]}"; done | sort -g | head -1)" \
    "$(for k in "${!BW[@]}"; do [[ $k == *,$t ]] && echo "${BW[$k]}"; done | sort -g | tail -1)"; done)"
echo
printf '| %-14s | %7s | %10s | %10s | %12s | %8s | %12s |\n' engine threads "pp$PP t/s" "tg$TG t/s" "tg GB/s" "BW GB/s" "tg % of BW"
printf '|%s|%s|%s|%s|%s|%s|%s|\n' ---------------- ---------: ------------: ------------: --------------: ----------: --------------:
for e in cleave cleave-bf16pp llama.cpp transformers; do
    for t in $THREADS; do
        [[ -n ${ROW[$e,$t]:-} ]] || continue
        read -r pp tg <<<"${ROW[$e,$t]}"
        python3 -c "
import sys
e, t, pp, tg, by, bw = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
gbs = tg * by / 1e9
print('| %-14s | %7s | %10.2f | %10.2f | %12.2f | %8.2f | %11.0f%% |' % (e, t, pp, tg, gbs, bw, 100 * gbs / bw))" "$e" "$t" "$pp" "$tg" "$BYTES" "${BW[$e,$t]}"
    done
done
