#!/usr/bin/env bash
# bench/accuracy.sh — what a faster way of computing costs in accuracy and
# gains in speed, against the way it replaces (a measurement, not a test:
# nothing here passes or fails).
#
#   bash bench/accuracy.sh [int8|prefill-bf16|kv-bf16] [MODEL_DIR [SPEED_MODEL_DIR]]
#
# Presets (the reference "ref" against the variant "var"):
#   int8          --dtype bf16  against --dtype int8 (weights quantized at load)
#   prefill-bf16  --dtype bf16  against --dtype bf16 --prefill-precision bf16
#                 (prompt activations rounded to bf16, one AMX pass)
#   kv-bf16       --dtype bf16  against --dtype bf16 --kv-dtype bf16
#                 (keys and values stored rounded to bf16; speed after a
#                 4096-token prompt, where decode reads the cache most)
# Accuracy, on MODEL_DIR (default build/smollm2, the real SmolLM2-135M-Instruct
# that `make demo` imports, when it is there; else a synthetic model made in
# $WORK), on the CPU:
#   - logits over a prompt in one pass (a paragraph of English through the
#     model's tokenizer; random ids without one): max and mean |var - ref|,
#     next to the spread of ref's logits; mean and max KL(ref || var) of the
#     next-token distributions; top-1 agreement per position; the prompt's
#     perplexity under each;
#   - greedy generation of 64 tokens (after a chat question with a tokenizer):
#     the first token where var's text leaves ref's, and, teacher-forced
#     along ref's 64 tokens in one pass (so that one early difference does not
#     decide everything after it), how often var's greedy choice is ref's token.
# Speed, on SPEED_MODEL_DIR (default /tmp/tl11, the ~1.1B synthetic model of
# bench/README.md; skipped when absent): `cleave bench -p PP -n TG -t 2 -r 3`
# (512 and 128; kv-bf16: 4096 and 64)
# per way, alternating, ROUNDS times (default 3), each after waiting for an
# idle machine, best of the rounds (the machine is shared: see bench/README.md),
# with bench/stream's read bandwidth first when it is built.
# Knobs: CLEAVE (default build/cleave), WORK (default /tmp/cleave-accuracy),
# ROUNDS, WAIT_IDLE=0.
set -euo pipefail
cd "$(dirname "$0")/.."
CLEAVE=${CLEAVE:-build/cleave}
WORK=${WORK:-/tmp/cleave-accuracy}
PRESET=int8
if [[ $# -gt 0 && ! -d $1 && $1 != */* ]]; then PRESET=$1; shift; fi
PP=512 TG=128
case $PRESET in
int8) REF=(--dtype bf16) VAR=(--dtype int8) REF_NAME=bf16 VAR_NAME=int8 ;;
prefill-bf16) REF=(--dtype bf16) VAR=(--dtype bf16 --prefill-precision bf16) REF_NAME=split VAR_NAME=one-pass ;;
kv-bf16) REF=(--dtype bf16) VAR=(--dtype bf16 --kv-dtype bf16) REF_NAME=kv-f32 VAR_NAME=kv-bf16 PP=4096 TG=64 ;;
*) echo "accuracy: unknown preset '$PRESET' (int8, prefill-bf16, kv-bf16)" >&2; exit 2 ;;
esac
flags() { if [[ $1 == ref ]]; then echo "${REF[@]}"; else echo "${VAR[@]}"; fi; }
MODEL=${1:-build/smollm2}
SPEED=${2:-/tmp/tl11}
ROUNDS=${ROUNDS:-3}
mkdir -p "$WORK"
[[ -x $CLEAVE ]] || make -s "$CLEAVE" >&2

if [[ ! -f $MODEL/config.json ]]; then
    echo "accuracy: $MODEL has no model; using a synthetic one (random weights: a much weaker signal)"
    MODEL=$WORK/synth
    [[ -f $MODEL/config.json ]] || "$CLEAVE" synth --arch llama --hidden 512 --layers 8 --heads 8 --kv-heads 2 \
        --intermediate 1408 --vocab 8192 --dtype bf16 --seed 7 --out "$MODEL" >/dev/null
fi
V=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$MODEL/config.json")
TEXT="The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined \
movable metal type, oil-based ink and a wooden screw press into a system that could produce books quickly \
and cheaply. Within a few decades, printing shops had spread to more than two hundred cities across Europe, \
and the number of books in circulation grew from thousands to millions. Scholars argue that this change \
helped to spread the ideas of the Renaissance and the Reformation, and made scientific results easier to share."
if [[ -f $MODEL/tokenizer.json ]]; then
    IDS=$("$CLEAVE" tokenize -m "$MODEL" -p "$TEXT" | tr -d '[] ')
    Q="Why is the sky blue? Explain it to a ten-year-old."
    GEN=$("$CLEAVE" tokenize -m "$MODEL" --chat "$Q" | tr -d '[] ')
    GENARGS=(--chat "$Q") # the same ids, and the text comes back too
else
    IDS=$(python3 -c "import sys; v=int(sys.argv[1]); print(','.join(str(3 + (i*7919) % (v-3)) for i in range(96)))" "$V")
    GEN=$(echo "$IDS" | cut -d, -f1-16)
    GENARGS=(--ids "$GEN")
fi

ISA=$("$CLEAVE" bench -m "$MODEL" -p 1 -n 1 -r 1 --json 2>/dev/null | tail -n 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["isa"])')
echo "== accuracy: $MODEL, $(echo "$IDS" | tr ',' '\n' | wc -l) prompt tokens, CPU kernels: $ISA"
echo "ref ($REF_NAME): ${REF[*]}; var ($VAR_NAME): ${VAR[*]}"
for w in ref var; do
    # shellcheck disable=SC2046
    "$CLEAVE" logits -m "$MODEL" --ids "$IDS" --out "$WORK/logits-$w.f32" $(flags $w) 2>/dev/null
    # shellcheck disable=SC2046
    "$CLEAVE" generate -m "$MODEL" "${GENARGS[@]}" -n 64 --greedy --ignore-eos --json $(flags $w) 2>/dev/null | tail -n 1 >"$WORK/gen-$w.json"
done
FORCED="$GEN,$(python3 -c "import json,sys; print(','.join(map(str, json.load(open(sys.argv[1]))['ids'][:-1])))" "$WORK/gen-ref.json")"
for w in ref var; do
    # shellcheck disable=SC2046
    "$CLEAVE" logits -m "$MODEL" --ids "$FORCED" --out "$WORK/forced-$w.f32" $(flags $w) 2>/dev/null
done
python3 - "$WORK" "$V" "$IDS" "$GEN" "$REF_NAME" "$VAR_NAME" <<'PY'
import array, json, math, sys
work, V, ids = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3].split(',')]
n_gen_prompt = len(sys.argv[4].split(','))
R, Q = sys.argv[5], sys.argv[6]
def load(p):
    a = array.array('f'); a.frombytes(open(p, 'rb').read()); return a
b, q = load(f"{work}/logits-ref.f32"), load(f"{work}/logits-var.f32")
n = len(b) // V
err = [abs(x - y) for x, y in zip(b, q)]
mean_b = sum(b) / len(b)
spread = math.sqrt(sum((x - mean_b) ** 2 for x in b) / len(b))
def logsoftmax(row):
    m = max(row); s = math.log(sum(math.exp(x - m) for x in row)); return [x - m - s for x in row]
kls, top1, nll_b, nll_q = [], 0, [], []
for p in range(n):
    lb, lq = logsoftmax(b[p*V:(p+1)*V]), logsoftmax(q[p*V:(p+1)*V])
    kls.append(sum(math.exp(x) * (x - y) for x, y in zip(lb, lq)))
    top1 += max(range(V), key=lb.__getitem__) == max(range(V), key=lq.__getitem__)
    if p + 1 < n:
        nll_b.append(-lb[ids[p + 1]]); nll_q.append(-lq[ids[p + 1]])
print(f"logits: max |{Q} - {R}| {max(err):.4f}, mean {sum(err)/len(err):.4f} "
      f"({R} logits: std {spread:.3f}, max |.| {max(abs(x) for x in b):.2f})")
print(f"next-token distributions: KL({R} || {Q}) mean {sum(kls)/n:.2e} nats, max {max(kls):.2e}")
print(f"top-1 agreement: {top1}/{n} positions ({100*top1/n:.1f}%)")
if nll_b:
    print(f"prompt perplexity: {R} {math.exp(sum(nll_b)/len(nll_b)):.3f}, {Q} {math.exp(sum(nll_q)/len(nll_q)):.3f}")
gb, gq = (json.load(open(f"{work}/gen-{d}.json")) for d in ("ref", "var"))
a, c = gb['ids'], gq['ids']
assert gb['prompt_tokens'] == n_gen_prompt, (gb['prompt_tokens'], n_gen_prompt)
first = next((i for i, (x, y) in enumerate(zip(a, c)) if x != y), None)
fb, fq = load(f"{work}/forced-ref.f32"), load(f"{work}/forced-var.f32")
pick = lambda L, p: max(range(V), key=lambda i: L[p*V + i])
self_b = sum(pick(fb, n_gen_prompt - 1 + k) == a[k] for k in range(len(a)))
agree = sum(pick(fq, n_gen_prompt - 1 + k) == a[k] for k in range(len(a)))
print(f"greedy, {len(a)} tokens: free-running, " + ("identical" if first is None else f"the first {first} agree")
      + f"; teacher-forced on {R}'s tokens, {Q} picks the same token at {agree}/{len(a)} ({100*agree/len(a):.1f}%)"
      + ("" if self_b == len(a) else f" [{R} itself: {self_b}/{len(a)}: prefill vs decode rounding]"))
for d, g in ((R, gb), (Q, gq)):
    if 'text' in g:
        print(f"  {d}: {g['text']!r}")
PY

source bench/idle.sh

if [[ -f $SPEED/config.json ]]; then
    echo
    echo "== speed: $SPEED, cleave bench -p $PP -n $TG -t 2 -r 3, best of $ROUNDS rounds ($REF_NAME, $VAR_NAME alternating)"
    if [[ -x bench/stream ]]; then wait_idle; bench/stream 2>&1 | tail -n 1; fi
    for r in $(seq 1 "$ROUNDS"); do
        for w in ref var; do
            wait_idle
            # shellcheck disable=SC2046
            "$CLEAVE" bench -m "$SPEED" -p "$PP" -n "$TG" -t 2 -r 3 --json $(flags $w) 2>/dev/null | tail -n 1 >"$WORK/speed-$w-$r.json"
        done
    done
    python3 - "$WORK" "$ROUNDS" "$REF_NAME" "$VAR_NAME" "$PP" "$TG" <<'PY'
import json, sys
work, rounds, R, Q, PP, TG = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
print(f"{'':8s} {'pp' + PP + ' t/s':>10s} {'tg' + TG + ' t/s':>10s} {'MB per token':>13s} {'tg GB/s':>8s}   rounds (pp / tg)")
best = {}
for w, name in (("ref", R), ("var", Q)):
    runs = [json.load(open(f"{work}/speed-{w}-{r}.json")) for r in range(1, rounds + 1)]
    pp, tg = max(o['pp_tok_s'] for o in runs), max(o['tg_tok_s'] for o in runs)
    best[w] = (pp, tg)
    mb = runs[0]['decode_bytes_per_token'] / 1e6
    print(f"{name:8s} {pp:10.2f} {tg:10.2f} {mb:13.1f} {tg * mb / 1e3:8.2f}   "
          + ", ".join(f"{o['pp_tok_s']:.0f} / {o['tg_tok_s']:.2f}" for o in runs))
print(f"{Q} / {R}: pp {best['var'][0] / best['ref'][0]:.2f}x, tg {best['var'][1] / best['ref'][1]:.2f}x")
PY
else
    echo "(speed skipped: $SPEED has no model; see the header for how to make it)"
fi
