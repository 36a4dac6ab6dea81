#!/usr/bin/env python3
"""Regenerate the golden Hugging Face reference fixtures used by cleave's tests.

Run by hand, never by the test suite:

    python3 tests/hf/make_fixtures.py --venv /tmp/hfvenv --out tests/fixtures/hf

The script works in two stages:

1. Under any Python 3 it creates a virtualenv at --venv (if missing), installs
   the pinned packages from tests/hf/requirements.txt into it, and re-executes
   itself with the virtualenv's interpreter.
2. Inside the virtualenv it builds one tiny, randomly initialised causal LM per
   case with transformers' own model classes, saves each checkpoint exactly as
   transformers writes it, reloads it in float32, and records:
     <case>/expected_logits.f32  little-endian float32 logits, [n_prompt, vocab]
     <case>/expected.json        prompt ids, greedy continuation, versions, ...

Everything runs on the CPU, single-threaded and seeded, so a rerun with the
same pinned versions reproduces the files bit for bit.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"

N_NEW_TOKENS = 16       # greedy continuation length recorded per case
SEED = 1234             # base seed; case i tries SEED + 1000*i + attempt
MIN_MARGIN = 1e-2       # smallest top-1/top-2 logit gap accepted for argmax
MIN_DISTINCT = 8        # fewest distinct ids accepted in a greedy continuation
MAX_ATTEMPTS = 200      # seeds tried per case before giving up


# --------------------------------------------------------------------------
# Stage 1: virtualenv bootstrap (runs under the caller's Python).
# --------------------------------------------------------------------------

def running_in(venv: Path) -> bool:
    """True when this interpreter belongs to the virtualenv at `venv`."""
    return Path(sys.prefix).resolve() == venv.resolve()


def bootstrap(venv: Path) -> None:
    """Create/refresh the virtualenv and re-execute this script inside it.

    PyPI only carries CUDA builds of torch for linux x86_64: libtorch links
    libcudart, cuBLAS, cuDNN, NCCL, cuFile, NVSHMEM, ... at load time, so
    `pip install --no-deps torch` fails to import ("libcufile.so.0: cannot open
    shared object file") and there is no CPU-only wheel on PyPI to fall back to.
    The nvidia-* wheels are therefore installed as ordinary dependencies
    (several GB); they are only loaded, never used: all computation is on CPU.
    """
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating virtualenv at {venv}", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(venv)])
    # With every requirement pinned and already satisfied this is a no-op.
    print(f"installing {REQUIREMENTS.name} into {venv}", flush=True)
    subprocess.check_call([str(python), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", "-r", str(REQUIREMENTS)])
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


# --------------------------------------------------------------------------
# Stage 2: fixture generation (runs inside the virtualenv).
# --------------------------------------------------------------------------

def case_specs():
    """The fixture cases: model class, config overrides, dtype and prompt length.

    Shared defaults (applied to every case unless overridden): 2 layers,
    bos/eos ids 1/2, eager attention. Sizes are chosen so every head_dim is 16
    and the whole fixture tree stays around 2 MB.
    """
    import torch
    from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig,
                              MistralForCausalLM, Phi3Config, Phi3ForCausalLM,
                              Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                              Qwen3ForCausalLM)

    return [
        dict(
            name="llama_mha_f32",
            about="Llama, multi-head attention (heads == kv_heads), default RoPE, untied lm_head, float32.",
            config_cls=LlamaConfig, model_cls=LlamaForCausalLM, dtype=torch.float32,
            config=dict(vocab_size=256, hidden_size=64, intermediate_size=160,
                        num_attention_heads=4, num_key_value_heads=4,
                        max_position_embeddings=256, tie_word_embeddings=False),
            n_prompt=10,
        ),
        dict(
            name="llama_gqa_bf16_llama3rope",
            about="Llama, GQA 4q/2kv, llama3 RoPE scaling (theta 1e4, head_dim 16, original context 32: "
                  "the 8 frequency pairs cover the unscaled, smoothed and divided-by-factor bands), bfloat16.",
            config_cls=LlamaConfig, model_cls=LlamaForCausalLM, dtype=torch.bfloat16,
            config=dict(vocab_size=256, hidden_size=64, intermediate_size=160,
                        num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=256, tie_word_embeddings=False,
                        rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0,
                                             low_freq_factor=1.0, high_freq_factor=4.0,
                                             original_max_position_embeddings=32)),
            n_prompt=11,
        ),
        dict(
            name="llama_mqa_f16_linear_tied",
            about="Llama, multi-query attention (1 kv head), linear RoPE scaling factor 2, "
                  "tied embeddings (no lm_head tensor in the file), float16.",
            config_cls=LlamaConfig, model_cls=LlamaForCausalLM, dtype=torch.float16,
            config=dict(vocab_size=192, hidden_size=64, intermediate_size=128,
                        num_attention_heads=4, num_key_value_heads=1,
                        max_position_embeddings=256, tie_word_embeddings=True,
                        rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=2.0)),
            n_prompt=9,
        ),
        dict(
            name="mistral_sliding_f32",
            about="Mistral, GQA 4q/2kv, sliding_window 4 with a 12-token prompt (query i sees keys "
                  "i-3..i), float32.",
            config_cls=MistralConfig, model_cls=MistralForCausalLM, dtype=torch.float32,
            config=dict(vocab_size=160, hidden_size=64, intermediate_size=160,
                        num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=256, sliding_window=4, tie_word_embeddings=False),
            n_prompt=12,
        ),
        dict(
            name="qwen2_bias_bf16",
            about="Qwen2, q/k/v projection biases, GQA 4q/2kv, untied, sliding window off "
                  "(use_sliding_window false), bfloat16.",
            config_cls=Qwen2Config, model_cls=Qwen2ForCausalLM, dtype=torch.bfloat16,
            config=dict(vocab_size=224, hidden_size=64, intermediate_size=176,
                        num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=256, tie_word_embeddings=False,
                        rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
            n_prompt=10,
        ),
        dict(
            name="qwen3_qknorm_yarn_f32",
            about="Qwen3, hidden 48 with 4 heads of head_dim 16 (q width 64 != hidden), per-head "
                  "q_norm/k_norm, YaRN factor 4 over original context 16 (theta 1e3 so the "
                  "correction ramp has a fractional step), GQA 4q/2kv, float32.",
            config_cls=Qwen3Config, model_cls=Qwen3ForCausalLM, dtype=torch.float32,
            config=dict(vocab_size=200, hidden_size=48, intermediate_size=128,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                        max_position_embeddings=64, tie_word_embeddings=False,
                        rope_parameters=dict(rope_type="yarn", rope_theta=1000.0, factor=4.0,
                                             original_max_position_embeddings=16)),
            n_prompt=12,
        ),
        dict(
            name="qwen3_sharded_bf16",
            about="Qwen3, tied embeddings, saved in several safetensors shards with "
                  "model.safetensors.index.json, GQA 4q/2kv, bfloat16.",
            config_cls=Qwen3Config, model_cls=Qwen3ForCausalLM, dtype=torch.bfloat16,
            config=dict(vocab_size=256, hidden_size=64, intermediate_size=192,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                        max_position_embeddings=256, tie_word_embeddings=True,
                        rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
            n_prompt=8,
            max_shard_size="100KB",
        ),
        # Appended last so the earlier cases keep their index (and seeds).
        dict(
            name="phi3_fused_f32",
            about="Phi3, fused self_attn.qkv_proj (q, k, v rows) and mlp.gate_up_proj (gate, up rows), "
                  "GQA 4q/2kv, default RoPE (partial_rotary_factor 1.0, no longrope), no sliding window, "
                  "untied, float32.",
            config_cls=Phi3Config, model_cls=Phi3ForCausalLM, dtype=torch.float32,
            # pad_token_id: Phi3Config defaults it to 32000, outside this vocab.
            config=dict(vocab_size=128, hidden_size=64, intermediate_size=96,
                        num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=256, original_max_position_embeddings=256,
                        tie_word_embeddings=False, sliding_window=None, pad_token_id=0,
                        rope_parameters=dict(rope_type="default", rope_theta=10000.0,
                                             partial_rotary_factor=1.0)),
            n_prompt=10,
        ),
    ]


def reinit_weights(model, generator):
    """Re-initialise every parameter so logits have a wide spread.

    transformers' default init (std 0.02) gives nearly flat logits, so greedy
    argmax would be decided by rounding noise. Here:
      Linear weight  ~ N(0, 1/sqrt(in_features))   (unit-variance outputs)
      Linear bias    ~ N(0, 0.1)
      Embedding      ~ N(0, 1)            untied models
                     ~ N(0, 1/sqrt(hidden))  tied models (see below)
      lm_head        ~ N(0, 2/sqrt(hidden))        (untied models only)
      norm weights   ~ 1 + N(0, 0.1)               (RMSNorm, incl. q_norm/k_norm)

    With tied embeddings and N(0, 1) rows, the input token's own embedding
    dominates the residual stream and hence its own logit, so greedy decoding
    just repeats the last prompt token; unit-norm rows keep the residual
    dominated by the blocks and the continuation varied.
    Every parameter is covered exactly once (a tied lm_head is the embedding).
    """
    import torch

    def normal_(tensor, std, mean=0.0):
        with torch.no_grad():
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * std + mean)

    done = set()
    hidden = model.config.hidden_size
    lm_head = model.get_output_embeddings()
    tied = model.config.tie_word_embeddings
    for module in model.modules():
        if module is lm_head:
            if tied:
                continue  # same tensor as the embedding, initialised there
            normal_(module.weight, 2.0 / hidden ** 0.5)
            done.add(id(module.weight))
        elif isinstance(module, torch.nn.Linear):
            normal_(module.weight, 1.0 / module.in_features ** 0.5)
            done.add(id(module.weight))
            if module.bias is not None:
                normal_(module.bias, 0.1)
                done.add(id(module.bias))
        elif isinstance(module, torch.nn.Embedding):
            normal_(module.weight, 1.0 / hidden ** 0.5 if tied else 1.0)
            done.add(id(module.weight))
        elif "RMSNorm" in type(module).__name__:
            normal_(module.weight, 0.1, mean=1.0)
            done.add(id(module.weight))
    missed = [n for n, p in model.named_parameters() if id(p) not in done]
    assert not missed, f"parameters not re-initialised: {missed}"
    if tied:
        assert lm_head.weight is model.get_input_embeddings().weight


def top2_margins(logits):
    """Gap between the largest and second-largest logit of each row."""
    import torch

    top2 = torch.topk(logits, 2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def run_reference(model, prompt):
    """Prompt logits plus greedy continuation, checked two ways.

    The greedy ids come from generate() (KV cache, eos disabled so all
    N_NEW_TOKENS are produced even when the eos id is the argmax) and must
    equal plain argmax decoding by full recomputation without a cache.
    """
    import torch

    with torch.no_grad():
        logits = model(prompt, use_cache=False).logits[0]           # [n_prompt, vocab]
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt),
                             do_sample=False, max_new_tokens=N_NEW_TOKENS,
                             eos_token_id=None, pad_token_id=0)
        greedy = out[0, prompt.shape[1]:].tolist()

        ids, greedy_margins = prompt, []
        for _ in range(N_NEW_TOKENS):
            step = model(ids, use_cache=False).logits[0, -1]
            greedy_margins.append(float(top2_margins(step)))
            ids = torch.cat([ids, step.argmax().view(1, 1)], dim=1)
    greedy_ref = ids[0, prompt.shape[1]:].tolist()
    assert greedy == greedy_ref, (greedy, greedy_ref)
    return {
        "logits": logits,
        "greedy": greedy,
        "prompt_margin": float(top2_margins(logits).min()),
        "greedy_margin": min(greedy_margins),
    }


def acceptable(ref):
    """Seed filter: argmax must be decided by a clear margin everywhere (so an
    engine that differs from torch by float32 rounding still agrees), and the
    continuation must be varied (not one token repeated)."""
    return (min(ref["prompt_margin"], ref["greedy_margin"]) > MIN_MARGIN
            and len(set(ref["greedy"])) >= MIN_DISTINCT)


def build(spec, seed):
    """Build the case's model with transformers' classes and re-initialise it."""
    import torch

    config = spec["config_cls"](num_hidden_layers=2, bos_token_id=1, eos_token_id=2,
                                attn_implementation="eager", **spec["config"])
    torch.manual_seed(seed)
    model = spec["model_cls"](config)
    assert model.config._attn_implementation == "eager"
    reinit_weights(model, torch.Generator().manual_seed(seed))
    # Round the parameters (not the buffers: model.to() would also round the
    # float32 RoPE inv_freq buffer) to the storage dtype, so the in-memory model
    # equals what a float32 reload of the saved checkpoint gives.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(spec["dtype"]).to(torch.float32))
    return model.eval()


def make_prompt(vocab, n, seed):
    """Deterministic prompt ids in [3, vocab): no pad (0), bos (1) or eos (2)."""
    import torch

    return torch.randint(3, vocab, (1, n), generator=torch.Generator().manual_seed(seed))


def rope_summary(model):
    """The rotary tables transformers actually uses, for debugging the engine."""
    rotary = model.model.rotary_emb
    return {
        "rope_type": rotary.rope_type,
        "inv_freq": [float(x) for x in rotary.inv_freq],
        "attention_scaling": float(rotary.attention_scaling),
    }


def check_sliding_window(model, prompt, window):
    """Show that transformers applies the sliding window with the attention
    implementation used: logits must equal a full-causal copy's at positions
    < window and differ from then on."""
    import copy

    import torch

    full = copy.deepcopy(model)
    full.config.sliding_window = None
    with torch.no_grad():
        a = model(prompt, use_cache=False).logits[0]
        b = full(prompt, use_cache=False).logits[0]
    diff = (a - b).abs().amax(dim=-1)
    assert float(diff[:window].max()) == 0.0, "sliding window changed early positions"
    assert float(diff[window:].min()) > 1e-3, "sliding window had no effect"
    return {"sliding_window_applied": True,
            "max_abs_logit_diff_vs_full_causal": [float(d) for d in diff]}


def make_case(spec, index, out_dir, versions):
    import torch

    name = spec["name"]

    # ---- pick the first acceptable seed (deterministic) ------------------
    for attempt in range(MAX_ATTEMPTS):
        seed = SEED + 1000 * index + attempt
        model = build(spec, seed)
        prompt = make_prompt(model.config.vocab_size, spec["n_prompt"], seed)
        ref = run_reference(model, prompt)
        if acceptable(ref):
            break
    else:
        raise RuntimeError(f"{name}: no acceptable seed in {MAX_ATTEMPTS} attempts")

    # ---- save exactly as transformers writes it ---------------------------
    case_dir = out_dir / name
    if case_dir.exists():
        for f in case_dir.iterdir():
            f.unlink()
    case_dir.mkdir(parents=True, exist_ok=True)
    model.to(spec["dtype"]).save_pretrained(
        case_dir, **({"max_shard_size": spec["max_shard_size"]} if "max_shard_size" in spec else {}))

    gen_cfg = json.loads((case_dir / "generation_config.json").read_text())
    assert not gen_cfg.get("do_sample", False), gen_cfg
    shards = sorted(p.name for p in case_dir.glob("*.safetensors"))
    if "max_shard_size" in spec:
        assert len(shards) >= 2 and (case_dir / "model.safetensors.index.json").exists(), shards
    else:
        assert shards == ["model.safetensors"], shards

    # ---- reload in float32 (bf16/f16 upcast exactly) and record -----------
    model, info = spec["model_cls"].from_pretrained(
        case_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    model.eval()
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert model.config._attn_implementation == "eager"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    reloaded = run_reference(model, prompt)
    assert torch.equal(reloaded["logits"], ref["logits"]), f"{name}: reload changed the logits"
    assert reloaded["greedy"] == ref["greedy"]

    reloaded["logits"].numpy().astype("<f4").tofile(case_dir / "expected_logits.f32")

    greedy = reloaded["greedy"]
    eos = model.config.eos_token_id
    expected = {
        "prompt_ids": prompt[0].tolist(),
        "greedy_ids": greedy,
        "n_new": N_NEW_TOKENS,
        "transformers": versions["transformers"],
        "torch": versions["torch"],
        "compute_dtype": "float32",
        "saved_dtype": str(spec["dtype"]).replace("torch.", ""),
        "attn_implementation": "eager",
        "logits_shape": [spec["n_prompt"], model.config.vocab_size],
        "seed": seed,
        "eos_token_id": eos,
        # Index into greedy_ids of the first eos, or null: an engine that stops
        # at eos should compare only greedy_ids[:first_eos_index + 1].
        "first_eos_index": greedy.index(eos) if eos in greedy else None,
        "min_top2_margin_prompt": reloaded["prompt_margin"],
        "min_top2_margin_greedy": reloaded["greedy_margin"],
        "rope": rope_summary(model),
        "about": spec["about"],
    }
    if model.config.model_type == "mistral":
        expected.update(check_sliding_window(model, prompt, model.config.sliding_window))
    if model.config.model_type == "phi3":
        # Fused projections, default RoPE over the whole head, full causal.
        attn = model.model.layers[0].self_attn
        head_dim = model.config.hidden_size // model.config.num_attention_heads
        assert tuple(attn.qkv_proj.weight.shape) == (
            (model.config.num_attention_heads + 2 * model.config.num_key_value_heads) * head_dim,
            model.config.hidden_size)
        assert tuple(model.model.layers[0].mlp.gate_up_proj.weight.shape) == (
            2 * model.config.intermediate_size, model.config.hidden_size)
        assert model.config.sliding_window is None
        assert model.config.rope_parameters["rope_type"] == "default"
        assert model.config.rope_parameters.get("partial_rotary_factor", 1.0) == 1.0
    if hasattr(model.config, "use_sliding_window"):
        # Qwen2/Qwen3 ignore sliding_window unless use_sliding_window is true:
        # the config then stores sliding_window null and only full attention.
        assert model.config.sliding_window is None
        assert all(t == "full_attention" for t in model.config.layer_types)
        expected["layer_types"] = list(model.config.layer_types)
    (case_dir / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")

    size = sum(p.stat().st_size for p in case_dir.iterdir())
    print(f"{name:28s} {size / 1024:7.1f} KiB  seed={seed}  shards={len(shards)}  "
          f"margins={reloaded['prompt_margin']:.3f}/{reloaded['greedy_margin']:.3f}  "
          f"greedy={greedy}", flush=True)
    return size


def generate_all(out_dir: Path, only=None) -> None:
    # CPU only, one thread, deterministic kernels: reproducible to the bit.
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import numpy
    import safetensors
    import torch
    import transformers

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    versions = {"transformers": transformers.__version__, "torch": torch.__version__,
                "safetensors": safetensors.__version__, "numpy": numpy.__version__}
    print("versions:", versions, flush=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    specs = case_specs()
    if only:
        unknown = set(only) - {s["name"] for s in specs}
        if unknown:
            raise SystemExit(f"unknown case(s): {sorted(unknown)}")
    total = 0
    # A case's seed depends on its index in the full list, so --only
    # reproduces exactly what a full run writes for that case.
    for index, spec in enumerate(specs):
        if only and spec["name"] not in only:
            continue
        total += make_case(spec, index, out_dir, versions)
    print(f"total {total / 1024:.1f} KiB in {out_dir}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, required=True,
                        help="virtualenv to create/use for torch + transformers")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder, e.g. tests/fixtures/hf")
    parser.add_argument("--only", action="append", metavar="CASE",
                        help="generate only this case (repeatable); other case folders are untouched")
    args = parser.parse_args()
    args.venv = args.venv.absolute()
    if not running_in(args.venv):
        bootstrap(args.venv)  # does not return
    generate_all(args.out.absolute(), args.only)


if __name__ == "__main__":
    main()
