#!/usr/bin/env bash
# Device-map benchmarks on the ~1.1B synthetic bf16 model (a benchmark, not a test):
#  - decode and prefill with 0%, 50% and 100% of the layers on disk, cold page cache
#    where /proc/sys/vm/drop_caches can be written, against the disk-read bound;
#  - prefetch on vs off;
#  - pipelined throughput of 1, 2 and 4 sequences over cpu:0 + cpu:1 against one device.
# Usage: bash bench/devmap.sh [MODEL_DIR]   (default: build/bench/tl11, made with cleave synth)
set -u
cd "$(dirname "$0")/.."
C=build/cleave
M=${1:-build/bench/tl11}
[[ -x $C ]] || make -s
if [[ ! -f $M/config.json ]]; then
    $C synth --arch llama --hidden 2048 --layers 22 --heads 32 --kv-heads 4 --intermediate 5632 --vocab 32000 \
        --dtype bf16 --seed 1 --out "$M" >/dev/null
fi
drop() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null && echo cold || echo warm; }
gen() { # gen ARGS... -> "prefill_tok_s decode_tok_s disk_MB_read"
    $C generate -m "$M" --ids "$(seq -s, 1 64)" -n 16 --greedy --ignore-eos --json "$@" 2>/dev/null | tail -n 1 |
        python3 -c "import json,sys; o=json.load(sys.stdin); print(f\"{o['prefill_tok_s']:.2f} {o['decode_tok_s']:.2f} {o['disk_bytes_read']/1e6:.0f}\")"
}
W=$(python3 -c "import os; print(os.path.getsize('$M/model.safetensors'))")
DISK=$($C plan -m "$M" --calibrate 2>/dev/null | sed -n 's/.*disk \([0-9.]*\) GB\/s.*/\1/p')
echo "model $M: $((W / 1000000)) MB of weights; disk read bandwidth (O_DIRECT, plan --calibrate): ${DISK} GB/s"
echo
printf "%-34s %6s %12s %12s %14s %16s\n" placement cache "pp64 tok/s" "tg tok/s" "disk MB read" "disk-bound tg"
half=$((W / 2 / 1000000))MB
for row in "0% on disk|--device-map cpu" \
           "50% on disk, prefetch|--max-memory cpu=$half --ctx 80" \
           "50% on disk, no prefetch|--max-memory cpu=$half --ctx 80 --no-prefetch" \
           "100% on disk, prefetch|--device-map disk --ctx 80" \
           "100% on disk, no prefetch|--device-map disk --ctx 80 --no-prefetch"; do
    IFS='|' read -r name flags <<<"$row"
    cache=$(drop)
    read -r pp tg mb <<<"$(gen $flags)"
    ondisk=$($C plan -m "$M" $flags 2>/dev/null | awk '$1=="disk"{print $2, $3}')
    bound=$(python3 -c "
import sys
v, u = '$ondisk'.split() if '$ondisk' else ('0', 'B')
b = float(v) * {'B': 1, 'KiB': 2**10, 'MiB': 2**20, 'GiB': 2**30}[u]
print(f'{float(\"$DISK\") * 1e9 / b:.2f}' if b > 0 and '$DISK' else '-')")
    printf "%-34s %6s %12s %12s %14s %16s\n" "$name" "$cache" "$pp" "$tg" "$mb" "$bound"
done
echo
echo "pipelined decode over cpu:0 + cpu:1 (layers 0-10 + embedding | layers 11-21 + head) vs all on cpu:0, 1 thread each"
printf '{"": "cpu:0", "model.layers.11": "cpu:1", "model.layers.12": "cpu:1", "model.layers.13": "cpu:1", "model.layers.14": "cpu:1",
 "model.layers.15": "cpu:1", "model.layers.16": "cpu:1", "model.layers.17": "cpu:1", "model.layers.18": "cpu:1", "model.layers.19": "cpu:1",
 "model.layers.20": "cpu:1", "model.layers.21": "cpu:1", "model.norm": "cpu:1", "lm_head": "cpu:1"}\n' >/tmp/cleave-split.json
printf "%-10s %22s %22s\n" sequences "cpu:0 only, tok/s" "cpu:0+cpu:1, tok/s"
for b in 1 2 4; do
    one=$(gen --device-map cpu:0 --batch $b | awk '{print $2}')
    two=$(gen --device-map /tmp/cleave-split.json --batch $b | awk '{print $2}')
    printf "%-10s %22s %22s\n" "$b" "$one" "$two"
done
