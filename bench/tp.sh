#!/usr/bin/env bash
# Tensor-parallel benchmarks (a benchmark, not a test): decode tokens/s of the ~1.1B
# synthetic bf16 model for TP=2 (2 processes x 1 thread) against 1 process x 1 thread
# and 1 process x 2 threads, and all-reduce latency against message size.
# Usage: bash bench/tp.sh [MODEL_DIR]   (default: build/bench/tl11)
set -u
cd "$(dirname "$0")/.."
C=build/cleave
M=${1:-build/bench/tl11}
[[ -x $C ]] || make -s
if [[ ! -f $M/config.json ]]; then
    $C synth --arch llama --hidden 2048 --layers 22 --heads 32 --kv-heads 4 --intermediate 5632 --vocab 32000 \
        --dtype bf16 --seed 1 --out "$M" >/dev/null
fi
gen() {
    $C generate -m "$M" --ids "$(seq -s, 1 64)" -n 32 --greedy --ignore-eos --json "$@" 2>/dev/null | tail -n 1 |
        python3 -c "import json,sys; o=json.load(sys.stdin); print(f\"{o['prefill_tok_s']:.2f} {o['decode_tok_s']:.2f}\")"
}
printf "%-28s %12s %12s\n" configuration "pp64 tok/s" "tg tok/s"
for row in "1 process x 1 thread|-t 1" "1 process x 2 threads|-t 2" "TP=2: 2 processes x 1 thread|--tp 2"; do
    IFS='|' read -r name flags <<<"$row"
    read -r pp tg <<<"$(gen $flags)"
    printf "%-28s %12s %12s\n" "$name" "$pp" "$tg"
done
echo
$C bench --comm --tp 2
command -v mpirun >/dev/null && OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np 2 $C bench --comm 2>/dev/null
