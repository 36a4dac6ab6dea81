"""Stand-in tokenizer for benchmarking a checkpoint that has none (cleave synth
writes none): a Llama-style byte-fallback BPE tokenizer.json plus
tokenizer_config.json with exactly VOCAB tokens — <unk> <s> </s>, the 256 byte
tokens, then fillers — so that llama.cpp's convert_hf_to_gguf.py accepts the
folder. It changes no weight; benchmarks feed token ids, not text.

usage: make_tokenizer.py DIR VOCAB"""
import json, sys
d, V = sys.argv[1], int(sys.argv[2])
vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256): vocab["<0x%02X>" % b] = len(vocab)
i = 0
while len(vocab) < V:
    vocab["\u2581t%d" % i] = len(vocab); i += 1
tok = {
  "version": "1.0", "truncation": None, "padding": None,
  "added_tokens": [{"id": k, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True} for t, k in [("<unk>",0),("<s>",1),("</s>",2)]],
  "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
  "pre_tokenizer": None,
  "post_processor": None,
  "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False, "vocab": vocab, "merges": []},
}
json.dump(tok, open(d + "/tokenizer.json", "w"))
json.dump({"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False, "model_max_length": 4096}, open(d + "/tokenizer_config.json", "w"))
