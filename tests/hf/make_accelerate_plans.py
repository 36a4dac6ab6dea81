#!/usr/bin/env python3
"""Record the device maps that transformers + Accelerate compute, for cleave's planner tests.

Run by hand, never by the test suite:

    make                      # build/cleave writes the checkpoints
    python3 tests/hf/make_accelerate_plans.py [--venv /tmp/hfvenv] [--compare]

1. Under any Python 3 the script creates the virtualenv at --venv if it is
   missing, installs tests/hf/requirements-accelerate.txt into it (the pins of
   requirements.txt plus accelerate) and re-executes itself inside it.
2. `build/cleave synth` writes a few tiny bf16 checkpoints into
   tests/fixtures/accelerate/<model>/ (committed, < 1 MB each).
3. For every case (a checkpoint, a device_map mode and a max_memory) it runs
   `AutoModelForCausalLM.from_pretrained(dir, device_map=MODE, max_memory=...)`
   and captures the map that from_pretrained computes: the model is built on
   the meta device in the checkpoint's dtype, then
   transformers.integrations.accelerate._get_device_map runs get_balanced_memory
   (low_zero for balanced_low_0; skipped for sequential) and
   infer_auto_device_map with the model's _no_split_modules. Loading is
   aborted right there, so no weights are read. The same map is recomputed
   from a model built by hand (meta device + from_pretrained's init contexts)
   as a cross-check.
   For information it also records what Accelerate's own
   accelerate.utils.get_balanced_memory / infer_auto_device_map (the functions
   transformers 4.x called, and which transformers 5.x re-implements) give
   for a model built under accelerate.init_empty_weights().
4. Everything goes to tests/fixtures/accelerate/cases.json. With --compare it
   then runs `build/cleave plan ... --accelerate-compat --json` for each case
   and prints where cleave agrees and where it does not.

cleave's cpu:0, cpu:1 play Accelerate's GPUs 0, 1; cleave's cpu is
Accelerate's "cpu" and disk is "disk". Maps are compared per cleave module:
model.embed_tokens, model.layers.<i>, model.norm, lm_head (Accelerate's map
may group them, e.g. "model.layers" or ""; the longest matching prefix
decides). model.rotary_emb (buffers only) is recorded but not compared.
"""

import argparse
import copy
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
REQUIREMENTS = HERE / "requirements-accelerate.txt"


# --------------------------------------------------------------------------
# Stage 1: virtualenv bootstrap (runs under the caller's Python).
# --------------------------------------------------------------------------

def running_in(venv: Path) -> bool:
    return Path(sys.prefix).resolve() == venv.resolve()


def bootstrap(venv: Path) -> None:
    """Create the virtualenv if needed, install the pins, re-execute inside it.
    (torch's PyPI wheels pull the nvidia-* wheels; see tests/hf/README.md.)"""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating virtualenv at {venv}", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(venv)])
    print(f"installing {REQUIREMENTS.name} into {venv}", flush=True)
    subprocess.check_call([str(python), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", "-r", str(REQUIREMENTS)])
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


# --------------------------------------------------------------------------
# Checkpoints and cases
# --------------------------------------------------------------------------

# name -> (cleave synth flags, what it is for). All bf16.
MODELS = {
    "llama12_untied": (
        "--arch llama --hidden 48 --layers 12 --heads 4 --kv-heads 2 --intermediate 96 "
        "--vocab 512 --dtype bf16 --seed 1",
        "Llama, 12 layers, untied lm_head; the embedding (48 KiB) is a little larger than "
        "a decoder layer (40.7 KiB). head_dim 12: rotary_emb holds 2 x 6 float32 buffers (48 B)."),
    "qwen3_12_tied": (
        "--arch qwen3 --hidden 48 --layers 12 --heads 4 --kv-heads 2 --head-dim 16 "
        "--intermediate 96 --vocab 640 --dtype bf16 --tie --seed 2",
        "Qwen3, 12 layers, tied embeddings (no lm_head tensor), q_norm/k_norm, explicit head_dim 16 "
        "(rotary_emb buffers: 64 B); embedding 60 KiB, layer 45.3 KiB."),
    "llama8_small_vocab": (
        "--arch llama --hidden 32 --layers 8 --heads 4 --kv-heads 2 --intermediate 96 "
        "--vocab 128 --dtype bf16 --seed 3",
        "Llama, 8 layers, untied, small vocabulary: a decoder layer (24.1 KiB) is the largest "
        "module, far above any single Linear or the embedding (8 KiB)."),
    "qwen2_8_tied_big_vocab": (
        "--arch qwen2 --hidden 32 --layers 8 --heads 4 --kv-heads 2 --intermediate 64 "
        "--vocab 1024 --dtype bf16 --tie --seed 4",
        "Qwen2, 8 layers, q/k/v biases, tied embeddings with a large vocabulary: the embedding "
        "(64 KiB) is 3.5 decoder layers (18.3 KiB), so get_balanced_memory's buffer "
        "(1.25 x the largest leaf module) is far above 1.25 x one layer."),
}

# Documented, justified differences: case name -> (why, fn). The case then gets
# "difference": {"why": ..., "cleave_expected": fn(case)}, and the test checks
# cleave against cleave_expected instead of Accelerate's map. None at present:
# every difference found so far is a rule cleave's --accelerate-compat should
# follow (see tests/fixtures/accelerate/README.md).
DIFFERENCES = {}


def module_bytes(model_dir: Path):
    """Weight bytes per cleave module, from the safetensors header (no torch)."""
    import struct
    sizes = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            b = meta["data_offsets"][1] - meta["data_offsets"][0]
            parts = name.split(".")
            key = ".".join(parts[:3]) if parts[:2] == ["model", "layers"] else ".".join(parts[:-1])
            sizes[key] = sizes.get(key, 0) + b
    return sizes


def kb(x: float) -> str:
    return f"{max(1, round(x / 1000))}KB"


def case_specs(model: str, sizes: dict, rotary: int):
    """(suffix, mode, budgets {cleave device: size string}, about) for one checkpoint.
    `sizes`: weight bytes per module; `rotary`: bytes of model.rotary_emb's buffers."""
    T = sum(sizes.values())
    E = sizes["model.embed_tokens"]
    head = sizes.get("lm_head", 0)
    layer = max(v for k, v in sizes.items() if k.startswith("model.layers."))
    gpu2 = lambda a, b: {"cpu:0": kb(a * T), "cpu:1": kb(b * T)}
    specs = []
    for mode in ("auto", "balanced", "balanced_low_0", "sequential"):
        specs.append(("gpu2-fit", mode, gpu2(0.6, 0.6),
                      "two devices of 0.6 x the model each: everything fits; balanced caps device 0"))
    for mode in ("auto", "balanced_low_0", "sequential"):
        specs.append(("gpu2-offload", mode, gpu2(0.3, 0.45),
                      "two devices holding 0.75 x the model: the tail goes to disk; device 0 keeps "
                      "room for the largest remaining layer"))
        specs.append(("gpu2-lopsided", mode, gpu2(0.2, 1.2),
                      "a small device 0 and a large device 1"))
    for mode in ("balanced", "balanced_low_0"):
        specs.append(("gpu2-big", mode, gpu2(2, 2),
                      "two devices of 2 x the model: get_balanced_memory alone decides the split "
                      "(total/2 + 1.25 x buffer on device 0)"))
    for mode in ("auto", "sequential"):
        specs.append(("gpu1", mode, {"cpu:0": kb(0.7 * T)},
                      "one device of 0.7 x the model: no balancing (one device), the rest on disk"))
        specs.append(("gpu0-empty", mode, {"cpu:0": "0", "cpu:1": kb(0.8 * T)},
                      "device 0 has a zero budget: it is still Accelerate's main device, so device 1 "
                      "reserves nothing"))
        specs.append(("cpu-offload", mode, {"cpu": kb(0.5 * T)},
                      "cpu only (Accelerate's 'cpu', a main device), half the model: the rest on disk"))
    specs.append(("cpu-fit", "auto", {"cpu": kb(1.2 * T)}, "cpu only, room for everything"))
    specs.append(("cpu-tiny", "sequential", {"cpu": "10KB"},
                  "cpu smaller than the embedding plus the reserve: everything on disk"))
    specs.append(("cpu-exact-total", "sequential", {"cpu": str(T)},
                  "cpu budget = the sum of the weight tensors exactly: rotary_emb's float32 buffers "
                  "(counted by transformers) decide what no longer fits"))
    # embedding + 4 layers + the reserve (the largest module still to place: a layer, or an
    # untied lm_head when larger)
    exact = E + 4 * layer + max(layer, head)
    specs.append(("cpu-exact-4-layers", "sequential", {"cpu": str(exact)},
                  "cpu budget = embedding + 4 layers + the reserve (max(layer, lm_head)), to the "
                  "byte: '<=' keeps layer 3 on cpu"))
    specs.append(("cpu-exact-4-layers-minus-1", "sequential", {"cpu": str(exact - 1)},
                  "one byte less than cpu-exact-4-layers: layer 3 goes to disk"))
    specs.append(("gpu1-only", "auto", {"cpu:1": kb(0.7 * T)},
                  "only device 1: it is Accelerate's main device (gpus[0]) and keeps the reserve"))
    # device 0 (main: reserves max(layer, lm_head) while layers remain) takes the embedding
    # + 3 layers to the byte; device 1 (not main: no reserve) exactly 4 layers
    b0, b1 = E + 3 * layer + max(layer, head), 4 * layer
    for suffix, x0, x1 in (("", b0, b1), ("-minus-1-on-0", b0 - 1, b1), ("-minus-1-on-1", b0, b1 - 1)):
        specs.append((f"gpu2-exact{suffix}", "sequential", {"cpu:0": str(x0), "cpu:1": str(x1)},
                      "device 0 = embedding + 3 layers + the reserve, device 1 = 4 layers, to the byte"
                      + (" (one byte less on " + suffix[-1] + ")" if suffix else "")))
    # balanced_low_0 with two devices: device 0 is capped at total - budget(1), where the
    # total counts rotary_emb's buffers; chosen so that cap = embedding + 2 layers + reserve
    b1 = T + rotary - (E + 2 * layer + max(layer, head))
    specs.append(("gpu2-low0-exact", "balanced_low_0", {"cpu:0": kb(T), "cpu:1": str(b1)},
                  "balanced_low_0: device 0's cap (total - device 1) is embedding + 2 layers + the "
                  "reserve exactly, when the total includes rotary_emb's buffers"))
    specs.append(("gpu2-disk-budget", "sequential",
                  {"cpu:0": kb(0.3 * T), "cpu:1": kb(0.45 * T), "disk": "1KB"},
                  "a disk budget is ignored by Accelerate (disk takes everything left)"))
    return [(f"{model}/{s}/{mode}", mode, b, about) for s, mode, b, about in specs]


def parse_size(s: str) -> int:
    for unit, mult in (("KB", 10**3), ("MB", 10**6), ("GB", 10**9)):
        if s.endswith(unit):
            return int(round(float(s[:-len(unit)]) * mult))
    return int(s)


def to_accelerate_memory(budgets: dict) -> dict:
    out = {}
    for dev, size in budgets.items():
        key = int(dev.split(":")[1]) if dev.startswith("cpu:") else dev
        out[key] = parse_size(size)
    return out


def dev_name(d) -> str:
    """Accelerate's device -> cleave's: GPU ints are cpu:N."""
    if isinstance(d, int):
        return f"cpu:{d}"
    if hasattr(d, "type"):  # torch.device
        return f"cpu:{d.index}" if d.type == "cuda" else str(d)
    return str(d)


def cleave_modules(n_layers: int):
    return ["model.embed_tokens"] + [f"model.layers.{i}" for i in range(n_layers)] + ["model.norm", "lm_head"]


def expand(raw: dict, n_layers: int) -> dict:
    """Accelerate's (possibly grouped) map -> one entry per cleave module."""
    out = {}
    for m in cleave_modules(n_layers) + ["model.rotary_emb"]:
        best = None
        for k in raw:
            if k == "" or m == k or m.startswith(k + "."):
                if best is None or len(k) > len(best):
                    best = k
        if best is None:
            raise RuntimeError(f"{m} is not covered by {raw}")
        out[m] = dev_name(raw[best])
    return out


# --------------------------------------------------------------------------
# Stage 2: the maps (inside the virtualenv).
# --------------------------------------------------------------------------

class _Captured(Exception):
    pass


def from_pretrained_map(model_dir: Path, mode: str, max_memory: dict):
    """The device map from_pretrained computes, and the model it computed it for."""
    import transformers.modeling_utils as mu
    from transformers import AutoModelForCausalLM

    got = {}
    original = mu._get_device_map

    def spy(model, device_map, mm, hf_quantizer):
        got["map"] = original(model, device_map, mm, hf_quantizer)
        got["model"] = model
        raise _Captured

    mu._get_device_map = spy
    try:
        AutoModelForCausalLM.from_pretrained(str(model_dir), device_map=mode, max_memory=copy.deepcopy(max_memory))
        raise RuntimeError("from_pretrained did not compute a device map")
    except _Captured:
        pass
    finally:
        mu._get_device_map = original
    return got["map"], got["model"]


def by_hand_map(model_dir: Path, mode: str, max_memory: dict):
    """The same computation spelled out: meta model in the checkpoint's dtype, then
    get_balanced_memory (unless sequential) and infer_auto_device_map."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.integrations import accelerate as hfa
    from transformers.utils.generic import ContextManagers

    config = AutoConfig.from_pretrained(str(model_dir))
    dtype = config.dtype if isinstance(config.dtype, torch.dtype) else getattr(torch, config.dtype)
    cls = AutoModelForCausalLM._model_mapping[type(config)]
    with ContextManagers(cls.get_init_context(dtype, False, False, None)):
        model = cls(config)
    assert all(p.device.type == "meta" for p in model.parameters())
    if mode != "sequential":
        mm = hfa.get_balanced_memory(model, max_memory=copy.deepcopy(max_memory),
                                     no_split_module_classes=model._no_split_modules,
                                     low_zero=(mode == "balanced_low_0"))
    else:
        mm = hfa.get_max_memory(copy.deepcopy(max_memory))
    dm = hfa.infer_auto_device_map(model, max_memory=mm, no_split_module_classes=model._no_split_modules)
    return dm, mm, model


def accelerate_utils_map(model_dir: Path, mode: str, max_memory: dict):
    """Accelerate's own functions on a model built under init_empty_weights()."""
    import torch
    from accelerate import init_empty_weights
    from accelerate.utils import get_balanced_memory, get_max_memory, infer_auto_device_map
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_dir))
    dtype = config.dtype if isinstance(config.dtype, torch.dtype) else getattr(torch, config.dtype)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    nsm = model._no_split_modules
    if mode != "sequential":
        mm = get_balanced_memory(model, max_memory=copy.deepcopy(max_memory), no_split_module_classes=nsm,
                                 dtype=dtype, low_zero=(mode == "balanced_low_0"))
    else:
        mm = get_max_memory(copy.deepcopy(max_memory))
    return infer_auto_device_map(model, max_memory=mm, no_split_module_classes=nsm, dtype=dtype), mm


def module_sizes_summary(model):
    """What transformers counts (bytes): the sizes its planner works with."""
    from transformers.integrations.accelerate import compute_module_sizes
    sizes, leaves = compute_module_sizes(model)
    n = model.config.num_hidden_layers
    keep = ["", "model.embed_tokens"] + [f"model.layers.{i}" for i in range(n)] + \
        ["model.norm", "model.rotary_emb", "lm_head"]
    return {"module_bytes": {k if k else "(total)": sizes.get(k, 0) for k in keep},
            "largest_leaf_module": max(leaves.items(), key=lambda kv: kv[1]),
            "tied_keys_not_counted": sorted(getattr(model, "all_tied_weights_keys", {}).keys()),
            "buffers": {n: f"{b.dtype} {list(b.shape)}" for n, b in model.named_buffers()}}


def generate(out_dir: Path, cleave: Path):
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # Accelerate's devices are only names here
    import logging
    import warnings
    import accelerate
    import safetensors
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    logging.getLogger("accelerate.utils.modeling").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    versions = {"transformers": transformers.__version__, "accelerate": accelerate.__version__,
                "torch": torch.__version__, "safetensors": safetensors.__version__,
                "python": sys.version.split()[0]}
    print("versions:", versions, flush=True)
    if not cleave.exists():
        sys.exit(f"{cleave} is missing: run make first")

    out_dir.mkdir(parents=True, exist_ok=True)
    rel_out = os.path.relpath(out_dir, ROOT)
    models, cases = {}, []
    for name, (flags, about) in MODELS.items():
        d = out_dir / name
        if d.exists():
            shutil.rmtree(d)
        subprocess.check_call([str(cleave), "synth", *flags.split(), "--out", str(d)], stdout=subprocess.DEVNULL)
        size = sum(p.stat().st_size for p in d.iterdir())
        assert size < 1_000_000, f"{name}: {size} bytes, keep the checkpoints under 1 MB"
        sizes = module_bytes(d)
        n_layers = json.loads((d / "config.json").read_text())["num_hidden_layers"]
        _, meta_model = from_pretrained_map(d, "sequential", {"cpu": 10**12})
        rotary = sum(b.numel() * b.element_size() for b in meta_model.model.rotary_emb.buffers())
        models[name] = {"synth": flags, "about": about, "dir": f"{rel_out}/{name}", "files_bytes": size,
                        "weight_bytes": {"(total)": sum(sizes.values()),
                                         **{m: sizes[m] for m in cleave_modules(n_layers) if m in sizes}},
                        "dtype": str(meta_model.dtype).replace("torch.", ""),
                        "no_split_modules": list(meta_model._no_split_modules),
                        "transformers_sizes": module_sizes_summary(meta_model)}
        print(f"{name}: {size / 1024:.1f} KiB on disk, {sum(sizes.values())} weight bytes", flush=True)

        for case_name, mode, budgets, why in case_specs(name, sizes, rotary):
            mm = to_accelerate_memory(budgets)
            mem_arg = ",".join(f"{k}={v}" for k, v in budgets.items())
            args = ["plan", "-m", f"{rel_out}/{name}", "--device-map", mode, "--max-memory", mem_arg,
                    "--accelerate-compat", "--json"]
            case = {"name": case_name, "model": name, "device_map": mode, "max_memory": budgets,
                    "accelerate_max_memory": {str(k): v for k, v in mm.items()}, "about": why,
                    "cleave_args": args, "cleave_command": shlex.join(["build/cleave", *args])}
            try:
                raw, _ = from_pretrained_map(d, mode, mm)
            except Exception as e:  # noqa: BLE001 - recorded, a case may document it
                case["accelerate_error"] = f"{type(e).__name__}: {e}"
                raw = None
            if raw is not None:
                hand, inferred, _ = by_hand_map(d, mode, mm)
                assert dict(hand) == dict(raw), (case_name, hand, raw)
                full = expand(raw, n_layers)
                case["accelerate_raw"] = {k: dev_name(v) for k, v in raw.items()}
                case["max_memory_used_by_infer_auto_device_map"] = {str(k): int(v) for k, v in inferred.items()}
                case["rotary_emb"] = full.pop("model.rotary_emb")
                case["expected"] = full
            try:
                amap, amm = accelerate_utils_map(d, mode, mm)
                a_full = expand(amap, n_layers)
                a_full.pop("model.rotary_emb")
                case["accelerate_utils"] = {
                    "max_memory": {str(k): int(v) for k, v in amm.items()},
                    "same_as_from_pretrained": raw is not None and a_full == case.get("expected"),
                    "map": a_full}
            except Exception as e:  # noqa: BLE001
                case["accelerate_utils"] = {"error": f"{type(e).__name__}: {e}"}
            if case_name in DIFFERENCES:
                why_diff, fn = DIFFERENCES[case_name]
                case["difference"] = {"why": why_diff, "cleave_expected": fn(case)}
            cases.append(case)

    doc = {"about": "Device maps computed by transformers' from_pretrained (Accelerate's planner as "
                    "transformers runs it), one per case; written by tests/hf/make_accelerate_plans.py. "
                    "Devices: Accelerate's GPU N is cleave's cpu:N.",
           "versions": versions, "models": models, "cases": cases}
    (out_dir / "cases.json").write_text(dump_json(doc) + "\n")
    print(f"{len(cases)} cases -> {out_dir / 'cases.json'}", flush=True)
    return doc


def dump_json(o, indent: int = 0) -> str:
    """JSON with one line per flat object or list (a device map is one line)."""
    flat = lambda v: not isinstance(v, (dict, list)) or (
        all(not isinstance(x, (dict, list)) for x in (v.values() if isinstance(v, dict) else v)))
    if flat(o):
        return json.dumps(o)
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(o, dict):
        items = [f"{inner}{json.dumps(k)}: {dump_json(v, indent + 1)}" for k, v in o.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    return "[\n" + ",\n".join(inner + dump_json(v, indent + 1) for v in o) + "\n" + pad + "]"


def compare(doc: dict, cleave: Path) -> int:
    """cleave plan --accelerate-compat --json against each case."""
    bad = 0
    for c in doc["cases"]:
        want = c["difference"]["cleave_expected"] if "difference" in c else c.get("expected")
        r = subprocess.run([str(cleave), *c["cleave_args"]], cwd=ROOT, capture_output=True, text=True)
        if r.returncode:
            got, detail = None, r.stderr.strip()
        else:
            got, detail = json.loads(r.stdout), ""
        if got == want:
            print(f"same    {c['name']}")
            continue
        bad += 1
        print(f"DIFFER  {c['name']}  {detail}")
        if got and want:
            for k in want:
                if got.get(k) != want[k]:
                    print(f"          {k:20s} transformers {want[k]:6s} cleave {got.get(k)}")
    print(f"{len(doc['cases']) - bad} same, {bad} different")
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=Path("/tmp/hfvenv"),
                        help="virtualenv to create/use (default /tmp/hfvenv)")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "accelerate")
    parser.add_argument("--cleave", type=Path, default=ROOT / "build" / "cleave")
    parser.add_argument("--compare", action="store_true", help="then compare cleave plan with every case")
    args = parser.parse_args()
    args.venv = args.venv.absolute()
    if not running_in(args.venv):
        bootstrap(args.venv)  # does not return
    doc = generate(args.out.absolute(), args.cleave.absolute())
    if args.compare:
        compare(doc, args.cleave.absolute())


if __name__ == "__main__":
    main()
