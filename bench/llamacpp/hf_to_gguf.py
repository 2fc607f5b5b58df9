#!/usr/bin/python3
"""A minimal HF Llama -> GGUF (BF16 matrices, F32 norms) writer, for running
llama.cpp side by side with Tandem on the same checkpoint on hosts without
`transformers` (llama.cpp's convert_hf_to_gguf.py imports it for the vocab;
Debian 12 does not package it). The vocab comes from tokenizer.json
(byte-level BPE: tokens, merges, added tokens as control); Q/K rows are
permuted from HF's rotate-half layout to GGML's interleaved one, as
llama.cpp's converter does. Quantize the result with llama-quantize.

  /usr/bin/python3 bench/llamacpp/hf_to_gguf.py --gguf-py LLAMA_CPP/gguf-py HF_DIR OUT.gguf
"""
import argparse
import json
import os
import sys

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--gguf-py", required=True, help="llama.cpp's gguf-py folder (its GGUF writer)")
ap.add_argument("src")
ap.add_argument("out")
args = ap.parse_args()
sys.path.insert(0, args.gguf_py)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "reference"))
import gguf  # noqa: E402
import safetensors_io  # noqa: E402

src, out = args.src, args.out
cfg = json.load(open(os.path.join(src, "config.json")))
tok = json.load(open(os.path.join(src, "tokenizer.json")))
w = gguf.GGUFWriter(out, "llama")
H, KV, E = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
hd = cfg.get("head_dim", E // H)
w.add_context_length(cfg["max_position_embeddings"])
w.add_embedding_length(E)
w.add_block_count(cfg["num_hidden_layers"])
w.add_feed_forward_length(cfg["intermediate_size"])
w.add_head_count(H)
w.add_head_count_kv(KV)
w.add_rope_freq_base(cfg["rope_theta"])
w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
w.add_rope_dimension_count(hd)
w.add_key_length(hd)
w.add_value_length(hd)
w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
vocab = tok["model"]["vocab"]
n = cfg["vocab_size"]
tokens = [""] * n
for t, i in vocab.items():
    if i < n:
        tokens[i] = t
for a in tok.get("added_tokens", []):
    if a["id"] < n:
        tokens[a["id"]] = a["content"]
types = [gguf.TokenType.NORMAL] * n
for a in tok.get("added_tokens", []):
    if a["id"] < n:
        types[a["id"]] = gguf.TokenType.CONTROL
for i, t in enumerate(tokens):
    if t == "":
        tokens[i] = "[PAD%d]" % i
        types[i] = gguf.TokenType.UNUSED
merges = tok["model"].get("merges", [])
merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
w.add_tokenizer_model("gpt2")
w.add_tokenizer_pre("default")
w.add_token_list(tokens)
w.add_token_types(types)
w.add_token_merges(merges)
w.add_bos_token_id(cfg["bos_token_id"])
w.add_eos_token_id(cfg["eos_token_id"] if isinstance(cfg["eos_token_id"], int) else cfg["eos_token_id"][0])


def permute(x, heads):  # HF rotate_half rows -> GGML's interleaved rope rows
    return x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
         "lm_head.weight": "output.weight"}
per_layer = {"input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
             "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
             "self_attn.o_proj.weight": "attn_output.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
             "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
             "mlp.down_proj.weight": "ffn_down.weight"}
for name, (dtype, arr) in sorted(safetensors_io.load_model_dir(src).items()):
    if name in names:
        gname = names[name]
    else:
        parts = name.split(".")
        gname = "blk.%s.%s" % (parts[2], per_layer[".".join(parts[3:])])
    x = safetensors_io.to_float64(dtype, arr).astype(np.float32)
    if name.endswith("q_proj.weight"):
        x = permute(x, H)
    elif name.endswith("k_proj.weight"):
        x = permute(x, KV)
    if x.ndim == 1:
        w.add_tensor(gname, x)  # norms in F32, as llama.cpp keeps them
    else:
        bits = safetensors_io.float_to_bf16_bits(x)
        w.add_tensor(gname, bits.view(np.uint16), raw_dtype=gguf.GGMLQuantizationType.BF16)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print("wrote", out)
