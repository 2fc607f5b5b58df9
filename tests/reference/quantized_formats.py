"""Pre-quantized checkpoint formats, written and decoded with numpy alone,
from the formats' public descriptions (not from Tandem's loader), so the
loader is tested against an independent reading of each format.

Formats (config.json's quantization_config decides):
  compressed-tensors "int-quantized": `<module>.weight` I8 [out, in],
      `<module>.weight_scale` [out, 1] (strategy channel) or [1] (tensor);
      W = q * scale (minus `weight_zero_point` when asymmetric).

decode_weights(model_dir) -> {HF float tensor name: float64 numpy array}:
every tensor a float Llama checkpoint would have, the quantized modules'
`.weight` dequantized, everything else converted from its file dtype.

write_compressed_int8(src, dst, scale_dtype): quantizes a float HF
directory's decoder linear layers per output row, symmetric, with the rule
Tandem's `--quantization int8` documents (scale = max|w| / 127 in float32,
q = round-half-even(w / scale) in float32, clamped to +-127), writes them in
the int-quantized layout with the scales stored as `scale_dtype`, keeps the
LM head, embeddings and norms as they were, and copies the other files.
"""

import json
import os
import re
import shutil

import numpy as np

import safetensors_io

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def _copy_side_files(src, dst):
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):
        if name.endswith(".safetensors") or name in ("model.safetensors.index.json", "config.json"):
            continue
        path = os.path.join(src, name)
        if os.path.isfile(path):
            shutil.copy(path, os.path.join(dst, name))


def _config(directory):
    with open(os.path.join(directory, "config.json")) as f:
        return json.load(f)


def _module_names(cfg):
    return ["model.layers.%d.%s" % (i, m) for i in range(cfg["num_hidden_layers"]) for m in LINEARS]


def quantize_rows_int8(w):
    """float array [out, in] -> (int8 q, float32 scale [out]) by the rule above."""
    w32 = np.asarray(w, dtype=np.float32)
    scale = (np.abs(w32).max(axis=1) / np.float32(127)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1)).astype(np.float32)
    q = np.rint(w32 / safe[:, None])  # float32 division, round half to even
    q = np.where(scale[:, None] > 0, q, 0)
    return np.clip(q, -127, 127).astype(np.int8), scale


def write_compressed_int8(src, dst, scale_dtype="F32"):
    cfg = _config(src)
    tensors = safetensors_io.load_model_dir(src)
    out = {}
    modules = set(_module_names(cfg))
    for name, stored in tensors.items():
        module = name[:-len(".weight")] if name.endswith(".weight") else None
        if module in modules:
            q, scale = quantize_rows_int8(safetensors_io.to_float64(*stored))
            out[name] = ("I8", q)
            out[module + ".weight_scale"] = safetensors_io.encode(scale.reshape(-1, 1), scale_dtype)
        else:
            out[name] = stored
    cfg["quantization_config"] = {
        "quant_method": "compressed-tensors",
        "format": "int-quantized",
        "quantization_status": "compressed",
        "config_groups": {"group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel",
                        "dynamic": False, "group_size": None},
            "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token",
                                  "dynamic": True},
            "output_activations": None}},
        "ignore": ["lm_head"],
    }
    _copy_side_files(src, dst)
    safetensors_io.save_model_dir(out, dst)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def _matches(pattern, name):
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return pattern == "Linear" or pattern == name


def quantized_modules(directory):
    """The module names a checkpoint stores quantized (its decoder linears and
    lm_head, filtered by the config's targets and ignore lists)."""
    cfg = _config(directory)
    q = cfg.get("quantization_config")
    if not q:
        return []
    names = _module_names(cfg) + ["lm_head"]
    group = next(iter(q["config_groups"].values()))
    ignore = q.get("ignore") or []
    return [n for n in names
            if any(_matches(t, n) for t in group["targets"]) and not any(_matches(p, n) for p in ignore)]


def decode_weights(directory):
    cfg = _config(directory)
    q = cfg.get("quantization_config") or {}
    tensors = safetensors_io.load_model_dir(directory)
    out = {}
    quantized = set(quantized_modules(directory))
    consumed = set()
    for module in quantized:
        if module + ".weight" not in tensors:
            continue  # e.g. a tied lm_head that is not stored
        fmt = q.get("format")
        if q.get("quant_method") != "compressed-tensors" or fmt not in ("int-quantized", "naive-quantized"):
            raise ValueError("decode_weights: unsupported format %r" % fmt)
        dtype, codes = tensors[module + ".weight"]
        if dtype != "I8":
            raise ValueError("%s.weight is %s, expected I8" % (module, dtype))
        scale = safetensors_io.to_float64(*tensors[module + ".weight_scale"]).reshape(-1, 1)
        w = codes.astype(np.float64)
        zp_name = module + ".weight_zero_point"
        if zp_name in tensors:
            w = w - tensors[zp_name][1].astype(np.float64).reshape(-1, 1)
            consumed.add(zp_name)
        out[module + ".weight"] = w * scale  # [out, 1] broadcasts per row; [1] per tensor
        consumed.update({module + ".weight", module + ".weight_scale"})
    for name, stored in tensors.items():
        if name not in consumed:
            out[name] = safetensors_io.to_float64(*stored)
    return out
