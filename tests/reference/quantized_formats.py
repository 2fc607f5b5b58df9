"""Pre-quantized checkpoint formats, written and decoded with numpy alone,
from the formats' public descriptions (not from Tandem's loader), so the
loader is tested against an independent reading of each format.

Formats (config.json's quantization_config decides):
  compressed-tensors "int-quantized": `<module>.weight` I8 [out, in],
      `<module>.weight_scale` [out, 1] (strategy channel) or [1] (tensor);
      W = q * scale (minus `weight_zero_point` when asymmetric).
  compressed-tensors "float-quantized": `<module>.weight` F8_E4M3 [out, in]
      (OCP E4M3: bias 7, no infinities, NaN = S.1111.111) and
      `<module>.weight_scale` as above; W = e4m3(code) * scale.
  compressed-tensors "pack-quantized" (4-bit): `weight_packed` I32
      [out, ceil(in/8)]: value j of a row in bits 4(j%8).. of word j/8, each
      stored as the signed value + 8; `weight_shape` I64 [2] = [out, in];
      `weight_scale` [out, in/group]; asymmetric: `weight_zero_point` I32
      [ceil(out/8), in/group], packed the same way along the output
      dimension; W = (q - zero_point) * scale (signed q, zero point).
  AutoAWQ GEMM: `qweight` I32 [in, out/8] (eight output channels per word,
      nibble i holding channel 8c + (0, 2, 4, 6, 1, 3, 5, 7)[i]), `qzeros`
      I32 [in/group, out/8] packed the same way, `scales` F16
      [in/group, out]; W[o][i] = (q - z) * s of input i's group.
  AutoGPTQ ("gptq" format): `qweight` I32 [in/8, out] (eight consecutive
      input rows per word, row 8r + j in nibble j), `qzeros` I32
      [groups, out/8] (output channel 8c + j in nibble j, stored minus one),
      `scales` F16 [groups, out], `g_idx` I32 [in] (each input's group);
      W[o][i] = (q - (stored zero + 1)) * s, both of group g_idx[i].

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


# ---------------------------------------------------------------------------
# FP8 E4M3
# ---------------------------------------------------------------------------

def e4m3_values():
    """The 256 codes' values from the definition (NaN for 0x7F / 0xFF)."""
    v = np.zeros(256)
    for code in range(256):
        e, m = (code >> 3) & 15, code & 7
        mag = np.ldexp(m / 8.0, -6) if e == 0 else np.ldexp(1 + m / 8.0, e - 7)
        v[code] = -mag if code & 0x80 else mag
    v[0x7F] = v[0xFF] = np.nan
    return v


def e4m3_encode(x):
    """float array -> uint8 codes: nearest value, ties to the even code,
    saturating at +-448 (searching the positive codes' sorted values)."""
    mags = e4m3_values()[:0x7F]  # codes 0..126, increasing
    a = np.minimum(np.abs(np.asarray(x, dtype=np.float64)), 448.0)
    hi = np.clip(np.searchsorted(mags, a), 0, 126)
    lo = np.clip(hi - 1, 0, 126)
    d_lo, d_hi = a - mags[lo], mags[hi] - a
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0))
    code = np.where(pick_hi, hi, lo).astype(np.uint8)
    return np.where(np.signbit(x), code | 0x80, code).astype(np.uint8)


def write_compressed_fp8(src, dst, strategy="channel", scale_dtype="F32"):
    """Per-channel (or per-tensor) FP8 weights: scale = max|w| / 448."""
    cfg = _config(src)
    tensors = safetensors_io.load_model_dir(src)
    out = {}
    modules = set(_module_names(cfg))
    for name, stored in tensors.items():
        module = name[:-len(".weight")] if name.endswith(".weight") else None
        if module not in modules:
            out[name] = stored
            continue
        w = safetensors_io.to_float64(*stored).astype(np.float32)
        if strategy == "channel":
            scale = (np.abs(w).max(axis=1, keepdims=True) / np.float32(448)).astype(np.float32)
        else:
            scale = np.full((1,), np.abs(w).max() / np.float32(448), dtype=np.float32)
        # the scale as stored is the one the decoder multiplies by
        scale = safetensors_io.to_float64(*safetensors_io.encode(scale, scale_dtype)).astype(np.float32)
        out[name] = ("F8_E4M3", e4m3_encode(w / np.where(scale > 0, scale, 1)))
        out[module + ".weight_scale"] = safetensors_io.encode(scale, scale_dtype)
    cfg["quantization_config"] = {
        "quant_method": "compressed-tensors", "format": "float-quantized", "quantization_status": "compressed",
        "config_groups": {"group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "float", "symmetric": True, "strategy": strategy, "dynamic": False},
            "input_activations": {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "token",
                                  "dynamic": True}}},
        "ignore": ["lm_head"]}
    _finish(src, dst, cfg, out)


# ---------------------------------------------------------------------------
# 4-bit, group-wise
# ---------------------------------------------------------------------------

def rtn_int4(w, group, symmetric):
    """w [out, in] -> (q uint 0..15 [out, in], scale float16 [out, groups],
    zero int 0..15 [out, groups]) with W ~ (q - zero) * scale. Asymmetric:
    each group's min..max over 15 steps; symmetric: +-max over 15 steps and
    zero 8 (GPTQ's). The stored (float16) scale is the one q is rounded for."""
    out_f, in_f = w.shape
    g = w.reshape(out_f, in_f // group, group).astype(np.float64)
    if symmetric:
        m = np.abs(g).max(axis=2)
        scale = (2 * m / 15).astype(np.float16).astype(np.float64)
        zero = np.full(scale.shape, 8)
    else:
        lo, hi = g.min(axis=2), g.max(axis=2)
        scale = ((hi - lo) / 15).astype(np.float16).astype(np.float64)
        safe = np.where(scale > 0, scale, 1)
        zero = np.clip(np.rint(-lo / safe), 0, 15).astype(np.int64)
    safe = np.where(scale > 0, scale, 1)
    q = np.clip(np.rint(g / safe[:, :, None]) + zero[:, :, None], 0, 15).astype(np.int64)
    return q.reshape(out_f, in_f), scale.astype(np.float16), zero


def _pack_rows(values, order=range(8)):
    """int [rows, n] (0..15, n % 8 == 0) -> int32 [rows, n/8]: value 8c + order[i] in nibble i."""
    v = np.asarray(values, dtype=np.uint32)
    words = np.zeros((v.shape[0], v.shape[1] // 8), dtype=np.uint32)
    for i, j in enumerate(order):
        words |= v[:, j::8] << np.uint32(4 * i)
    return words.view(np.int32)


def _unpack_rows(words, order=range(8)):
    w = np.asarray(words).view(np.uint32)
    out = np.zeros((w.shape[0], w.shape[1] * 8), dtype=np.int64)
    for i, j in enumerate(order):
        out[:, j::8] = (w >> np.uint32(4 * i)) & 0xF
    return out


AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def _write_int4(src, dst, fmt, group=128, symmetric=False, act_order=False):
    cfg = _config(src)
    tensors = safetensors_io.load_model_dir(src)
    out = {}
    modules = set(_module_names(cfg))
    for name, stored in tensors.items():
        module = name[:-len(".weight")] if name.endswith(".weight") else None
        if module not in modules:
            out[name] = stored
            continue
        w = safetensors_io.to_float64(*stored)
        order = np.arange(w.shape[1])
        if act_order:  # GPTQ desc_act: groups of inputs in a data-dependent order (here: a fixed shuffle)
            order = np.random.default_rng(len(out)).permutation(w.shape[1])
        q_sorted, scale, zero = rtn_int4(w[:, order], group, symmetric)
        q = np.empty_like(q_sorted)
        q[:, order] = q_sorted  # back to input order; input order[j] is in group j // group
        g_idx = np.empty(w.shape[1], dtype=np.int32)
        g_idx[order] = np.arange(w.shape[1]) // group
        if fmt == "pack-quantized":
            out[module + ".weight_packed"] = ("I32", _pack_rows(q))  # signed value + 8 == q when zero is 8
            out[module + ".weight_shape"] = ("I64", np.array(w.shape, dtype=np.int64))
            out[module + ".weight_scale"] = ("F16", scale)
            if not symmetric:
                out[module + ".weight_zero_point"] = ("I32", _pack_rows(zero.T).T.copy())
        elif fmt == "awq":
            out[module + ".qweight"] = ("I32", _pack_rows(q.T, AWQ_ORDER))
            out[module + ".qzeros"] = ("I32", _pack_rows(zero.T, AWQ_ORDER))
            out[module + ".scales"] = ("F16", scale.T.copy())
        elif fmt == "gptq":
            out[module + ".qweight"] = ("I32", _pack_rows(q).T.copy())
            out[module + ".qzeros"] = ("I32", _pack_rows((zero - 1).T))
            out[module + ".scales"] = ("F16", scale.T.copy())
            out[module + ".g_idx"] = ("I32", g_idx)
    if fmt == "pack-quantized":
        weights = {"num_bits": 4, "type": "int", "symmetric": symmetric, "strategy": "group", "group_size": group,
                   "dynamic": False}
        cfg["quantization_config"] = {
            "quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None}},
            "ignore": ["lm_head"]}
    elif fmt == "awq":
        cfg["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True,
                                      "version": "gemm", "modules_to_not_convert": None}
    else:
        cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": group, "desc_act": act_order,
                                      "sym": symmetric, "checkpoint_format": "gptq"}
    _finish(src, dst, cfg, out)


def write_compressed_int4(src, dst, group=128, symmetric=False):
    _write_int4(src, dst, "pack-quantized", group, symmetric)


def write_awq(src, dst, group=128):
    _write_int4(src, dst, "awq", group, symmetric=False)


def write_gptq(src, dst, group=128, symmetric=True, act_order=False):
    _write_int4(src, dst, "gptq", group, symmetric, act_order)


def _finish(src, dst, cfg, tensors):
    _copy_side_files(src, dst)
    safetensors_io.save_model_dir(tensors, dst)
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
    if q["quant_method"] in ("awq", "gptq"):
        skip = q.get("modules_to_not_convert") or []
        return [n for n in _module_names(cfg) if not any(_matches(p, n) for p in skip)]
    group = next(iter(q["config_groups"].values()))
    ignore = q.get("ignore") or []
    return [n for n in names
            if any(_matches(t, n) for t in group["targets"]) and not any(_matches(p, n) for p in ignore)]


def _decode_module(q, tensors, module):
    """-> (float64 weight [out, in], names of the tensors it used) or None
    when the module has no stored tensors (a tied lm_head)."""
    method = q["quant_method"]
    f64 = safetensors_io.to_float64
    if method == "awq":
        if module + ".qweight" not in tensors:
            return None
        qv = _unpack_rows(tensors[module + ".qweight"][1], AWQ_ORDER)  # [in, out]
        z = _unpack_rows(tensors[module + ".qzeros"][1], AWQ_ORDER)    # [groups, out]
        s = f64(*tensors[module + ".scales"])                          # [groups, out]
        group = qv.shape[0] // s.shape[0]
        gi = np.arange(qv.shape[0]) // group
        w = (qv - z[gi]) * s[gi]
        return w.T, [module + x for x in (".qweight", ".qzeros", ".scales")]
    if method == "gptq":
        if module + ".qweight" not in tensors:
            return None
        qv = _unpack_rows(tensors[module + ".qweight"][1].T.copy()).T   # [in, out]
        z = _unpack_rows(tensors[module + ".qzeros"][1]) + 1            # [groups, out]
        s = f64(*tensors[module + ".scales"])
        gi = tensors[module + ".g_idx"][1].astype(np.int64)
        w = (qv - z[gi]) * s[gi]
        return w.T, [module + x for x in (".qweight", ".qzeros", ".scales", ".g_idx")]
    fmt = q.get("format")
    group_cfg = next(iter(q["config_groups"].values()))
    fmt = group_cfg.get("format") or fmt
    if fmt == "pack-quantized":
        if module + ".weight_packed" not in tensors:
            return None
        out_f, in_f = (int(v) for v in tensors[module + ".weight_shape"][1])
        qv = _unpack_rows(tensors[module + ".weight_packed"][1])[:, :in_f] - 8  # signed
        s = f64(*tensors[module + ".weight_scale"])                              # [out, groups]
        used = [module + x for x in (".weight_packed", ".weight_shape", ".weight_scale")]
        zp = np.zeros(s.shape)
        if module + ".weight_zero_point" in tensors:
            zp = _unpack_rows(tensors[module + ".weight_zero_point"][1].T.copy()).T[:out_f] - 8
            used.append(module + ".weight_zero_point")
        group = in_f // s.shape[1]
        gi = np.arange(in_f) // group
        return (qv - zp[:, gi]) * s[:, gi], used
    if module + ".weight" not in tensors:
        return None
    dtype, codes = tensors[module + ".weight"]
    scale = f64(*tensors[module + ".weight_scale"]).reshape(-1, 1)
    used = [module + ".weight", module + ".weight_scale"]
    if fmt in ("int-quantized", "naive-quantized") and dtype == "I8":
        w = codes.astype(np.float64)
        if module + ".weight_zero_point" in tensors:
            w = w - tensors[module + ".weight_zero_point"][1].astype(np.float64).reshape(-1, 1)
            used.append(module + ".weight_zero_point")
        return w * scale, used
    if fmt in ("float-quantized", "naive-quantized") and dtype == "F8_E4M3":
        return e4m3_values()[codes] * scale, used
    raise ValueError("decode_weights: %s is %s in format %r" % (module, dtype, fmt))


def decode_weights(directory):
    cfg = _config(directory)
    q = cfg.get("quantization_config") or {}
    tensors = safetensors_io.load_model_dir(directory)
    out = {}
    consumed = set()
    for module in quantized_modules(directory):
        decoded = _decode_module(q, tensors, module)
        if decoded is None:
            continue
        out[module + ".weight"], used = decoded
        consumed.update(used)
    for name, stored in tensors.items():
        if name not in consumed:
            out[name] = safetensors_io.to_float64(*stored)
    return out
