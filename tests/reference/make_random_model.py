#!/usr/bin/python3
"""Write a complete random-weight HuggingFace model directory for a named
small shape: config.json, generation_config.json, and model.safetensors (or
model-0000K-of-0000N.safetensors shards + model.safetensors.index.json).

Usage:
  /usr/bin/python3 tests/reference/make_random_model.py --shape NAME --out DIR [--seed S]
  /usr/bin/python3 tests/reference/make_random_model.py --list

From Python:  make_random_model(name, out_dir, seed=None) -> config dict

Weights are drawn from a torch.Generator seeded with the shape's seed (or
--seed), in a fixed order, so the output is byte-for-byte reproducible with
the same torch version.  Scales: projections ~ N(0, 1/fan_in) (q and k a bit
larger so attention is position-sensitive), norm weights 1 + 0.1*N(0,1),
biases 0.2*N(0,1), and the output matrix (lm_head, or the embedding when
tied) ~ N(0, (LOGIT_STD^2)/hidden) so logits have a std of a few units.
"""

import argparse
import json
import os
import sys

import torch

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

LOGIT_STD = 3.0

_BASE = {
    "architecture": "LlamaForCausalLM",
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": None,            # None: not written, = hidden / heads
    "vocab_size": 256,
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "rms_norm_eps": 1e-5,
    "dtype": "F32",              # F32 | F16 | BF16
    "num_shards": 1,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "max_position_embeddings": 2048,
    "extra_config": {},
    "attention_bias": False,  # Llama: q/k/v/o biases
    "mlp_bias": False,        # Llama: gate/up/down biases
    "seed": 0,
}


def _shape(**kw):
    s = dict(_BASE)
    unknown = set(kw) - set(s)
    if unknown:
        raise KeyError(unknown)
    s.update(kw)
    return s


SHAPES = {
    # multi-head attention (kv heads == heads), separate lm_head
    "llama_mha_f32": _shape(
        hidden_size=64, intermediate_size=160, num_attention_heads=4,
        num_key_value_heads=4, vocab_size=384, seed=1001),
    # 4:1 GQA, tied embeddings: no lm_head.weight in the file
    "llama_gqa_f32": _shape(
        hidden_size=64, intermediate_size=160, num_attention_heads=8,
        num_key_value_heads=2, vocab_size=320, tie_word_embeddings=True,
        seed=1002),
    # explicit head_dim (24) != hidden / heads (16)
    "llama_head_dim_f32": _shape(
        hidden_size=64, intermediate_size=160, num_attention_heads=4,
        num_key_value_heads=2, head_dim=24, vocab_size=256, seed=1003),
    # Qwen2: q/k/v biases, 2:1 GQA, tied
    "qwen2_bias_f32": _shape(
        architecture="Qwen2ForCausalLM", hidden_size=96, intermediate_size=240,
        num_attention_heads=6, num_key_value_heads=3, vocab_size=448,
        tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6,
        bos_token_id=None, eos_token_id=3,
        extra_config={"use_sliding_window": False, "sliding_window": 4096,
                      "max_window_layers": 2},
        seed=1004),
    # Llama 3.1 RoPE scaling; head_dim 32 with theta 5e5 puts one frequency
    # in each regime (high: wavelen 6.3 < 8, medium: 14.3, low: >= 32.4 > 32)
    "llama3_rope_f32": _shape(
        hidden_size=96, intermediate_size=240, num_attention_heads=3,
        num_key_value_heads=1, vocab_size=288, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0,
                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 32},
        max_position_embeddings=256, seed=1005),
    # linear RoPE scaling (old-style "type" key)
    "linear_rope_f32": _shape(
        hidden_size=64, intermediate_size=160, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=256,
        rope_scaling={"type": "linear", "factor": 2.0}, seed=1006),
    # Mistral, F16 weights (sliding window larger than any test sequence)
    "mistral_f16": _shape(
        architecture="MistralForCausalLM", hidden_size=64, intermediate_size=160,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=320,
        dtype="F16", extra_config={"sliding_window": 4096}, seed=1007),
    # BF16 weights, eos_token_id as a list
    "llama_bf16": _shape(
        hidden_size=64, intermediate_size=160, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=256, dtype="BF16",
        eos_token_id=[2, 7], seed=1008),
    # Llama with attention_bias (q/k/v/o biases) and mlp_bias (gate/up/down)
    "llama_bias_f32": _shape(
        hidden_size=64, intermediate_size=160, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=256, attention_bias=True,
        mlp_bias=True, seed=1010),
    # Mistral with a sliding window (8) shorter than the test sequences
    "mistral_window_f32": _shape(
        architecture="MistralForCausalLM", hidden_size=64, intermediate_size=160,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=320,
        extra_config={"sliding_window": 8}, seed=1011),
    # weights split over two shard files + model.safetensors.index.json
    "sharded_f32": _shape(
        hidden_size=64, intermediate_size=160, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
        num_shards=2, seed=1009),
}

_TORCH_DTYPE_NAME = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
_MODEL_TYPE = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
               "Qwen2ForCausalLM": "qwen2"}


def build_config(spec):
    """shape spec -> config.json dict"""
    arch = spec["architecture"]
    cfg = {
        "architectures": [arch],
        "model_type": _MODEL_TYPE[arch],
        "hidden_act": "silu",
        "hidden_size": spec["hidden_size"],
        "intermediate_size": spec["intermediate_size"],
        "num_hidden_layers": spec["num_hidden_layers"],
        "num_attention_heads": spec["num_attention_heads"],
        "num_key_value_heads": spec["num_key_value_heads"],
        "vocab_size": spec["vocab_size"],
        "max_position_embeddings": spec["max_position_embeddings"],
        "rms_norm_eps": spec["rms_norm_eps"],
        "rope_theta": spec["rope_theta"],
        "rope_scaling": spec["rope_scaling"],
        "tie_word_embeddings": spec["tie_word_embeddings"],
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": _TORCH_DTYPE_NAME[spec["dtype"]],
        "bos_token_id": spec["bos_token_id"],
        "eos_token_id": spec["eos_token_id"],
    }
    if arch == "LlamaForCausalLM":
        cfg["attention_bias"] = spec["attention_bias"]
        cfg["mlp_bias"] = spec["mlp_bias"]
        cfg["pretraining_tp"] = 1
    if spec["head_dim"] is not None:
        cfg["head_dim"] = spec["head_dim"]
    cfg.update(spec["extra_config"])
    return cfg


def build_weights(spec, seed):
    """-> {HF tensor name: float32 torch tensor}, drawn in a fixed order."""
    g = torch.Generator().manual_seed(int(seed))

    def normal(shape, std):
        return torch.randn(*shape, generator=g, dtype=torch.float32) * std

    E = spec["hidden_size"]
    I = spec["intermediate_size"]
    H = spec["num_attention_heads"]
    KV = spec["num_key_value_heads"]
    D = spec["head_dim"] if spec["head_dim"] is not None else E // H
    V = spec["vocab_size"]
    tied = spec["tie_word_embeddings"]
    qkv_bias = spec["architecture"] == "Qwen2ForCausalLM"

    # With tied embeddings the token's own embedding sits in the residual
    # stream and lines up with its own output row, which makes random models
    # repeat the input token forever.  Larger layer outputs (o_proj, down_proj)
    # drown that self-term so the generated sequences stay varied.
    res = 4.0 if tied else 1.0
    w = {}
    out_std = LOGIT_STD / E ** 0.5
    # tied: the embedding doubles as the output matrix, so give it the output
    # scale (the first RMSNorm makes the input scale irrelevant anyway)
    w["model.embed_tokens.weight"] = normal((V, E), out_std if tied else 1.0)
    for i in range(spec["num_hidden_layers"]):
        p = "model.layers.%d." % i
        w[p + "input_layernorm.weight"] = 1.0 + normal((E,), 0.1)
        w[p + "self_attn.q_proj.weight"] = normal((H * D, E), 1.5 / E ** 0.5)
        w[p + "self_attn.k_proj.weight"] = normal((KV * D, E), 1.5 / E ** 0.5)
        w[p + "self_attn.v_proj.weight"] = normal((KV * D, E), 1.0 / E ** 0.5)
        if qkv_bias:
            w[p + "self_attn.q_proj.bias"] = normal((H * D,), 0.2)
            w[p + "self_attn.k_proj.bias"] = normal((KV * D,), 0.2)
            w[p + "self_attn.v_proj.bias"] = normal((KV * D,), 0.2)
        if spec["attention_bias"]:
            w[p + "self_attn.q_proj.bias"] = normal((H * D,), 0.2)
            w[p + "self_attn.k_proj.bias"] = normal((KV * D,), 0.2)
            w[p + "self_attn.v_proj.bias"] = normal((KV * D,), 0.2)
            w[p + "self_attn.o_proj.bias"] = normal((E,), 0.2)
        w[p + "self_attn.o_proj.weight"] = normal((E, H * D), res / (H * D) ** 0.5)
        w[p + "post_attention_layernorm.weight"] = 1.0 + normal((E,), 0.1)
        w[p + "mlp.gate_proj.weight"] = normal((I, E), 1.0 / E ** 0.5)
        w[p + "mlp.up_proj.weight"] = normal((I, E), 1.0 / E ** 0.5)
        w[p + "mlp.down_proj.weight"] = normal((E, I), res / I ** 0.5)
        if spec["mlp_bias"]:
            w[p + "mlp.gate_proj.bias"] = normal((I,), 0.2)
            w[p + "mlp.up_proj.bias"] = normal((I,), 0.2)
            w[p + "mlp.down_proj.bias"] = normal((E,), 0.2)
    w["model.norm.weight"] = 1.0 + normal((E,), 0.1)
    if not tied:
        w["lm_head.weight"] = normal((V, E), out_std)
    return w


def write_model(spec, out_dir, seed=None):
    """Write the HF directory for a spec dict. -> config dict"""
    seed = spec["seed"] if seed is None else seed
    os.makedirs(out_dir, exist_ok=True)
    # remove weight files of a previous layout so the directory is unambiguous
    for fname in os.listdir(out_dir):
        if fname.endswith(".safetensors") or fname == safetensors_io.INDEX_FILE_NAME:
            os.remove(os.path.join(out_dir, fname))
    cfg = build_config(spec)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    gen = {"do_sample": False}
    if spec["bos_token_id"] is not None:
        gen["bos_token_id"] = spec["bos_token_id"]
    gen["eos_token_id"] = spec["eos_token_id"]
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)
        f.write("\n")
    weights = build_weights(spec, seed)
    stored = {name: safetensors_io.encode(t.numpy(), spec["dtype"])
              for name, t in weights.items()}
    safetensors_io.save_model_dir(stored, out_dir, num_shards=spec["num_shards"])
    return cfg


def make_random_model(name, out_dir, seed=None):
    """Write the named shape (see SHAPES) to out_dir. -> config dict"""
    if name not in SHAPES:
        raise KeyError("unknown shape %r; known: %s" % (name, ", ".join(SHAPES)))
    return write_model(SHAPES[name], out_dir, seed)


def main(argv=None):
    ap = argparse.ArgumentParser(description="write a random-weight HF model dir")
    ap.add_argument("--shape", choices=sorted(SHAPES))
    ap.add_argument("--out")
    ap.add_argument("--seed", type=int, default=None,
                    help="override the shape's default seed")
    ap.add_argument("--list", action="store_true", help="list the shapes")
    args = ap.parse_args(argv)
    if args.list:
        for name in SHAPES:
            print(name)
        return 0
    if not args.shape or not args.out:
        ap.error("--shape and --out are required")
    make_random_model(args.shape, args.out, args.seed)
    print("wrote %s to %s" % (args.shape, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
