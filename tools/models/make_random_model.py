#!/usr/bin/python3
"""Writes a random-weight HuggingFace Llama model directory at the shape of a
real model, for speed work: the kernels and the serving stack see the real
matrix sizes without a download.

  /usr/bin/python3 tools/models/make_random_model.py --shape smollm2-135m --out DIR [--seed S]
  /usr/bin/python3 tools/models/make_random_model.py --shape tinyllama-1.1b --out DIR

It writes config.json, generation_config.json, model.safetensors (BF16),
tokenizer.json and tokenizer_config.json. The outputs are meaningless text;
only the sizes are real.

Why these choices:
  - Weights ~ N(0, 0.02^2) (HF's initializer_range), norm weights = 1. Every
    projection then sees RMSNorm'ed (rms 1) inputs, so activations stay O(1)
    through all layers and the logits are finite and varied (not one token
    forever), which is all a speed run needs. q/k are wider (QK_STD, below).
  - The tensors are generated and written one at a time (the header is known
    up front from the shapes), so the 1.1B model needs ~1 tensor of memory,
    not the whole model several times over.
  - The tokenizer is a byte-level BPE (the engine's loader reads HF byte-level
    BPE tokenizer.json) with synthetic merges: the 256 byte symbols plus
    merges drawn from a seeded generator until the vocabulary, with the three
    special tokens at its end, has exactly vocab_size entries.

Deterministic: the same --seed and torch version give byte-identical files.
"""

import argparse
import json
import os
import random
import struct
import sys

import torch

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "train"))
import bpe_tokenizer  # noqa: E402  (ByteBPETokenizer writes the HF files)

WEIGHT_STD = 0.02
# q and k are drawn wider: at 0.02 the attention scores are ~0.2 apart, so
# attention averages the whole context uniformly, every position ends up in
# the same state and greedy decoding repeats one token. At 5x the scores
# spread over several units and the context matters.
QK_STD = 0.1

SHAPES = {
    # HuggingFaceTB/SmolLM2-135M
    "smollm2-135m": {
        "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
        "vocab_size": 49152, "tie_word_embeddings": True, "rope_theta": 100000.0,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
    },
    # TinyLlama/TinyLlama-1.1B-Chat-v1.0
    "tinyllama-1.1b": {
        "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
        "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 64,
        "vocab_size": 32000, "tie_word_embeddings": False, "rope_theta": 10000.0,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
    },
}


def tensor_shapes(s):
    """-> [(HF tensor name, shape)] in the fixed generation order."""
    E, I = s["hidden_size"], s["intermediate_size"]
    H, KV, D = s["num_attention_heads"], s["num_key_value_heads"], s["head_dim"]
    V = s["vocab_size"]
    out = [("model.embed_tokens.weight", (V, E))]
    for i in range(s["num_hidden_layers"]):
        p = "model.layers.%d." % i
        out += [
            (p + "input_layernorm.weight", (E,)),
            (p + "self_attn.q_proj.weight", (H * D, E)),
            (p + "self_attn.k_proj.weight", (KV * D, E)),
            (p + "self_attn.v_proj.weight", (KV * D, E)),
            (p + "self_attn.o_proj.weight", (E, H * D)),
            (p + "post_attention_layernorm.weight", (E,)),
            (p + "mlp.gate_proj.weight", (I, E)),
            (p + "mlp.up_proj.weight", (I, E)),
            (p + "mlp.down_proj.weight", (E, I)),
        ]
    out.append(("model.norm.weight", (E,)))
    if not s["tie_word_embeddings"]:
        out.append(("lm_head.weight", (V, E)))
    return out


def write_safetensors(path, shapes, seed):
    """Streams BF16 tensors to `path`: norms are ones, q/k N(0, QK_STD^2), the rest N(0, WEIGHT_STD^2)."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes:
        nbytes = 2 * int(torch.Size(shape).numel())
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # keep the data 8-byte aligned
    g = torch.Generator().manual_seed(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape in shapes:
            if name.endswith("norm.weight"):
                t = torch.ones(shape, dtype=torch.float32)
            else:
                std = QK_STD if name.endswith(("q_proj.weight", "k_proj.weight")) else WEIGHT_STD
                t = torch.randn(shape, generator=g, dtype=torch.float32) * std
            # torch's float32 -> bfloat16 rounds to nearest even, as HF does.
            f.write(t.to(torch.bfloat16).view(torch.int16).numpy().tobytes())


def synthetic_bpe(bpe_vocab_size, seed):
    """A byte-level BPE vocabulary of exactly `bpe_vocab_size` entries: the 256
    byte symbols, then merges (left + right) of existing tokens drawn with a
    seeded generator. Merges favour letters and a leading space ('Ġ') so that
    English-looking text tokenises into multi-byte pieces."""
    if bpe_vocab_size < 256:
        raise ValueError("vocab must hold the 256 byte symbols")
    symbols = [bpe_tokenizer.BYTE_ENCODER[b] for b in range(256)]
    vocab = {s: i for i, s in enumerate(symbols)}
    letters = [bpe_tokenizer.BYTE_ENCODER[b] for b in b"etaoinshrdlcumwfgypbvkjxqz"]
    starts = letters + [bpe_tokenizer.BYTE_ENCODER[b] for b in b" ETAOINSHRDLCUMWFGYPBVKJXQZ"]
    rng = random.Random(seed)
    merges = []
    pieces = list(starts)  # tokens that can be extended to the right
    while len(vocab) < bpe_vocab_size:
        # Short pieces first (low ranks), like a trained BPE's merge order.
        left = pieces[min(len(pieces) - 1, int(rng.expovariate(1.0 / max(1, len(pieces) / 4))))]
        right = rng.choice(letters) if rng.random() < 0.8 else rng.choice(pieces[: len(pieces) // 2 + 1])
        new = left + right
        if new in vocab or len(new) > 16:
            continue
        vocab[new] = len(vocab)
        merges.append((left, right))
        pieces.append(new)
    return vocab, merges


def build_config(s, special_ids):
    bos, eos, pad = special_ids
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": s["hidden_size"],
        "intermediate_size": s["intermediate_size"],
        "num_hidden_layers": s["num_hidden_layers"],
        "num_attention_heads": s["num_attention_heads"],
        "num_key_value_heads": s["num_key_value_heads"],
        "head_dim": s["head_dim"],
        "vocab_size": s["vocab_size"],
        "max_position_embeddings": s["max_position_embeddings"],
        "rms_norm_eps": s["rms_norm_eps"],
        "rope_theta": s["rope_theta"],
        "rope_scaling": None,
        "tie_word_embeddings": s["tie_word_embeddings"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": WEIGHT_STD,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": "bfloat16",
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
    }


def write_model(shape_name, out_dir, seed):
    s = SHAPES[shape_name]
    os.makedirs(out_dir, exist_ok=True)
    specials = bpe_tokenizer.SPECIAL_TOKENS
    vocab, merges = synthetic_bpe(s["vocab_size"] - len(specials), seed)
    tok = bpe_tokenizer.ByteBPETokenizer(vocab, merges, specials=specials)
    assert tok.vocab_size == s["vocab_size"]
    tok.save(out_dir, model_max_length=s["max_position_embeddings"])
    special_ids = (tok.bos_id, tok.eos_id, tok.pad_id)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(build_config(s, special_ids), f, indent=2)
        f.write("\n")
    gen = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id,
           "do_sample": True, "temperature": 0.8, "top_p": 0.95}
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensor_shapes(s), seed)


def main(argv=None):
    ap = argparse.ArgumentParser(description="write a random-weight HF model at a real model's shape")
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    write_model(args.shape, args.out, args.seed)
    n = sum(int(torch.Size(sh).numel()) for _, sh in tensor_shapes(SHAPES[args.shape]))
    print("wrote %s (%.1fM parameters, BF16) to %s" % (args.shape, n / 1e6, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
