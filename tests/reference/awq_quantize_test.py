#!/usr/bin/python3
"""`tandem quantize --scheme w4a16` (activation-aware int4, AWQ's scale
search) against facts recomputed here with numpy from the float weights,
the tool's calibration sample (`--sample-out`) and its search results
(`--stats-out`):

- the config is compressed-tensors pack-quantized, 4-bit int, asymmetric,
  groups of 128, lm_head ignored, no input activations; the layout's shapes
  and dtypes; every stored code and zero point a nibble whose signed value
  (stored − 8) lies in −8..7 and the padding nibbles of the zero points 8;
- the smoothing factors: each group's s is max(m^a, 1e-4) normalised by
  sqrt(max · min) for its chosen ratio a and the sample's mean |x| m; the
  norms carry them (norm_new = fp32(norm_orig / s) exactly, and
  norm_orig / norm_new recovers s to 1e-6);
- every code, scale and zero point is exactly the engine's RTN rule
  (engine/kernels/int4_matmul.h), emulated in float32, of the smoothed weight
  built from the float weights and those factors; the independent decoder
  (quantized_formats.decode_weights) reads the same (q − zero) · scale;
- the search, redone in float64 on the sample for every ratio of the grid:
  the tool's errors agree to 1e-4 relative, its chosen ratio's error is the
  grid's minimum (to 1e-4) and never above the a = 0 (plain RTN) error;
- through Tandem's loader: `tandem perplexity` on the output within 1e-4 of
  the float64 reference on the decoded weights (weight only, so the
  computation is smooth); numpy folds the factors into a float copy of the
  model, which keeps the float perplexity (to 1e-5) and which
  `--quantization int4` turns into exactly the output (equal mean NLL: the
  group size is the engine's here); the held-out perplexity within the
  issue's +3% of fp32 (its value beside plain RTN's is printed, not
  asserted: on the bundled model AWQ does not beat RTN held out);
- usage errors exit 2 naming the flag;
- the same numpy checks, the reference and the float equivalence of the
  factors on a random model without GQA (v_proj -> o_proj searched) whose
  widths make the group size 32; there also `--clip`: every group's clip
  factor (v/o/gate/up/down, not q/k) recomputed as the minimum of its
  error over the shrink grid, and the codes the RTN rule of the clipped
  smoothed weight, exactly.

  awq_quantize_test.py --tandem build/bin/tandem --model models/tandem-shakespeare \\
      --text ../shared/data/tinyshakespeare.txt --work DIR

Exits 77 (skipped) when the text is missing.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quantized_checkpoint_test as qct  # noqa: E402
import quantized_formats  # noqa: E402
import safetensors_io  # noqa: E402

SKIP = 77
check = qct.check
GROUPS = {  # group -> (site in the sample file, layers reading it)
    "qkv": ("qkv", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
    "vo": ("o", ["self_attn.o_proj"]),
    "gate_up": ("gate_up", ["mlp.gate_proj", "mlp.up_proj"]),
    "down": ("down", ["mlp.down_proj"]),
}


def rtn_int4(w32, g):
    """The engine's RTN rule in float32: (q, scale, zero) of w [out, in]."""
    out_f, in_f = w32.shape
    v = w32.reshape(out_f, in_f // g, g)
    lo = np.minimum(v.min(axis=2), np.float32(0))
    hi = np.maximum(v.max(axis=2), np.float32(0))
    scale = ((hi - lo) / np.float32(15)).astype(np.float32)
    ok = scale > 0
    safe = np.where(ok, scale, np.float32(1)).astype(np.float32)
    zero = np.clip(np.rint((-lo / safe).astype(np.float32)), 0, 15)
    q = np.clip(np.rint((v / safe[:, :, None]).astype(np.float32)) + zero[:, :, None], 0, 15)
    q = np.where(ok[:, :, None], q, 0).astype(np.int64).reshape(out_f, in_f)
    return q, np.where(ok, scale, np.float32(0)).astype(np.float32), np.where(ok, zero, 0).astype(np.int64)


def dequant(q, scale, zero, g):
    gi = np.arange(q.shape[1]) // g
    return ((q - zero[:, gi]).astype(np.float32) * scale[:, gi]).astype(np.float32)


def awq_scales(mean_abs, a):
    p = np.maximum(np.power(mean_abs.astype(np.float64), a), 1e-4)
    return (p / np.sqrt(p.max() * p.min())).astype(np.float32)


def search_errors(ws, x, mean_abs, ratios, g):
    """err(a) = sum_k ||X W_kᵀ − X (deq(Q(W_k s)) / s)ᵀ||² in float64."""
    x64 = x.astype(np.float64)
    errs = []
    for a in ratios:
        s = awq_scales(mean_abs, a)
        err = 0.0
        for w32 in ws:
            q, sc, z = rtn_int4((w32 * s[None, :]).astype(np.float32), g)
            e = w32.astype(np.float64) - dequant(q, sc, z, g).astype(np.float64) / s.astype(np.float64)[None, :]
            err += float(np.sum((x64 @ e.T) ** 2))
        errs.append(err)
    return errs


CLIP_SITES = {  # module -> (sample site, group whose factors divide its input)
    "self_attn.v_proj": ("qkv", "qkv"), "self_attn.o_proj": ("o", "vo"), "mlp.gate_proj": ("gate_up", "gate_up"),
    "mlp.up_proj": ("gate_up", "gate_up"), "mlp.down_proj": ("down", "down")}


def clip_search(w32, x, chosen, shrinks, g):
    """AWQ's clipping, redone: for every row and group the error
    (w − deq)ᵀ Σ_b (w − deq) of each shrink c (clip to ±fp32(c)·max|w|, then
    RTN), Σ_b = the group's block of xᵀx. -> (w clipped by `chosen`, list of
    (row, group) whose chosen c is not the minimum to 1e-6)."""
    out_f, in_f = w32.shape
    groups = in_f // g
    wg = w32.reshape(out_f, groups, g)
    maxabs = np.abs(wg).max(axis=2)
    errs = []
    for c in shrinks:
        mv = (np.float32(c) * maxabs).astype(np.float32)
        wc = np.clip(wg, -mv[:, :, None], mv[:, :, None]).astype(np.float32)
        q, sc, z = rtn_int4(wc.reshape(out_f, in_f), g)
        e = (w32.astype(np.float64) - dequant(q, sc, z, g).astype(np.float64)).reshape(out_f, groups, g)
        err = np.zeros((out_f, groups))
        for b in range(groups):
            xb = x[:, b * g:(b + 1) * g]
            err[:, b] = np.einsum("ri,ij,rj->r", e[:, b], xb.T @ xb, e[:, b])
        errs.append(err)
    errs = np.stack(errs)
    grid = np.asarray(shrinks, dtype=np.float32)
    idx = np.argmax(grid[:, None, None] == chosen[None], axis=0)
    known = np.any(grid[:, None, None] == chosen[None], axis=0)
    got = np.take_along_axis(errs, idx[None], axis=0)[0]
    ok = known & (got <= errs.min(axis=0) * (1 + 1e-6) + 1e-30) & (got <= errs[0] * (1 + 1e-12) + 1e-30)
    bad = [tuple(v) for v in np.argwhere(~ok)[:5]]
    mv = (chosen * maxabs).astype(np.float32)
    return np.clip(wg, -mv[:, :, None], mv[:, :, None]).astype(np.float32).reshape(out_f, in_f), bad


def run(args, flags, timeout=900):
    return subprocess.run([args.tandem, "quantize"] + flags, capture_output=True, text=True, timeout=timeout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    if not os.path.exists(args.text):
        print("SKIP: no text at %s" % args.text)
        return SKIP
    os.makedirs(args.work, exist_ok=True)
    with open(args.text, encoding="utf-8") as f:
        corpus = f.read()
    calib = os.path.join(args.work, "calibration.txt")
    with open(calib, "w", encoding="utf-8") as f:
        f.write(corpus[:len(corpus) * 9 // 10])  # the training part
    heldout = os.path.join(args.work, "heldout.txt")
    with open(heldout, "w", encoding="utf-8") as f:
        f.write(corpus[len(corpus) * 9 // 10:])
    head = os.path.join(args.work, "heldout_head.txt")
    with open(head, "w", encoding="utf-8") as f:
        f.write(corpus[len(corpus) * 9 // 10:][:3000])

    out = os.path.join(args.work, "w4a16")
    stats_path = os.path.join(args.work, "w4a16_stats.json")
    sample_path = os.path.join(args.work, "w4a16_sample.safetensors")
    if os.path.exists(out):
        shutil.rmtree(out)
    p = run(args, ["--model", args.model, "--calibration", calib, "--scheme", "w4a16", "--out", out,
                   "--stats-out", stats_path, "--sample-out", sample_path, "--json"])
    if not check("tandem quantize --scheme w4a16 exits 0", p.returncode == 0, p.stderr):
        print("%d failed" % len(qct.FAILED))
        return 1
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    check("it calibrated on 16384 tokens in groups of 128",
          summary["calibration_tokens"] == 16384 and summary["group_size"] == 128, summary)

    with open(os.path.join(out, "config.json")) as f:
        qcfg = json.load(f)["quantization_config"]
    grp = qcfg["config_groups"]["group_0"]
    check("config: compressed-tensors pack-quantized, 4-bit int asymmetric groups of 128, lm_head ignored, "
          "no input activations",
          qcfg["quant_method"] == "compressed-tensors" and qcfg["format"] == "pack-quantized"
          and grp["weights"]["num_bits"] == 4 and grp["weights"]["type"] == "int"
          and grp["weights"]["symmetric"] is False and grp["weights"]["strategy"] == "group"
          and grp["weights"]["group_size"] == 128 and grp.get("input_activations") is None
          and qcfg["ignore"] == ["lm_head"] and grp["targets"] == ["Linear"], qcfg)

    with open(stats_path) as f:
        stats = json.load(f)
    verify(args.model, out, stats, sample_path, 128, "")

    check_loaded(args, out, head, heldout, stats)
    check_usage(args, calib, out)
    check_mha(args, calib)
    print("%d failed" % len(qct.FAILED))
    return 1 if qct.FAILED else 0


def verify(model, out, stats, sample_path, g, label):
    """The numpy checks of the module docstring on one output."""
    with open(os.path.join(model, "config.json")) as f:
        cfg = json.load(f)
    sample, _ = safetensors_io.load_file(sample_path)
    ratios = stats["ratios"]
    check(label + "the ratio grid is 0, 0.05, ..., 0.95", np.allclose(ratios, np.arange(20) / 20), ratios)
    orig = {n: safetensors_io.to_float64(*t).astype(np.float32)
            for n, t in safetensors_io.load_model_dir(model).items()}
    new = safetensors_io.load_model_dir(out)
    deq = quantized_formats.decode_weights(out)
    gqa = cfg["num_key_value_heads"] != cfg["num_attention_heads"]
    check(label + "v_proj -> o_proj searched exactly when there is no GQA",
          all((layer["vo"] is None) == gqa for layer in stats["layers"]), gqa)

    bad_s, bad_norm, worst_recover, bad_layout, bad_codes, worst_deq = [], [], 0.0, [], [], 0.0
    bad_search, worst_err_rel, gains = [], 0.0, []
    bad_clip, clipped_groups = [], [0, 0]
    for i, layer in enumerate(stats["layers"]):
        pre = "model.layers.%d." % i
        s = {}
        for gname, (site, mods) in GROUPS.items():
            res = layer[gname]
            if gname == "vo" and gqa:
                if res is not None:
                    bad_s.append((i, "vo searched despite GQA"))
                continue
            mean_abs = sample["layers.%d.%s.mean_abs" % (i, site)][1]
            x = sample["layers.%d.%s.x" % (i, site)][1]
            got_s = np.asarray(res["s"], dtype=np.float32)
            want_s = awq_scales(mean_abs, res["ratio"])
            if np.max(np.abs(got_s.astype(np.float64) / want_s - 1)) > 1e-6:
                bad_s.append((i, gname))
            s[gname] = got_s
            # The search, redone.
            errs = search_errors([orig[pre + m + ".weight"] for m in mods], x, mean_abs, ratios, g)
            rel = np.max(np.abs(np.asarray(res["errors"]) - errs) / np.asarray(errs))
            worst_err_rel = max(worst_err_rel, float(rel))
            k = ratios.index(res["ratio"])
            if not (errs[k] <= min(errs) * (1 + 1e-4) and errs[k] <= errs[0] * (1 + 1e-9)
                    and res["error"] <= res["errors"][0]):
                bad_search.append((i, gname, res["ratio"], errs[k], min(errs), errs[0]))
            gains.append(errs[k] / errs[0])
        for norm, gname in (("input_layernorm", "qkv"), ("post_attention_layernorm", "gate_up")):
            o_ = orig[pre + norm + ".weight"]
            dt, n_ = new[pre + norm + ".weight"]
            if dt != "F32" or not np.array_equal(n_, (o_ / s[gname]).astype(np.float32)):
                bad_norm.append((i, norm))
            worst_recover = max(worst_recover, float(np.max(np.abs(
                (o_.astype(np.float64) / n_) / s[gname] - 1))))
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        one_q = np.ones(cfg["num_attention_heads"] * head_dim, dtype=np.float32)
        s_vo = s.get("vo", one_q)
        smoothed = {
            "self_attn.q_proj": orig[pre + "self_attn.q_proj.weight"] * s["qkv"][None, :],
            "self_attn.k_proj": orig[pre + "self_attn.k_proj.weight"] * s["qkv"][None, :],
            "self_attn.v_proj": orig[pre + "self_attn.v_proj.weight"] * s["qkv"][None, :],
            "self_attn.o_proj": orig[pre + "self_attn.o_proj.weight"] * s_vo[None, :],
            "mlp.gate_proj": orig[pre + "mlp.gate_proj.weight"] * s["gate_up"][None, :],
            "mlp.up_proj": (orig[pre + "mlp.up_proj.weight"] * s["gate_up"][None, :]) / s["down"][:, None],
            "mlp.down_proj": orig[pre + "mlp.down_proj.weight"] * s["down"][None, :],
        }
        if "vo" in s:
            smoothed["self_attn.v_proj"] = smoothed["self_attn.v_proj"] / s["vo"][:, None]
        clips = layer.get("clip") or {}
        if stats.get("clip") and sorted(clips) != sorted(CLIP_SITES):
            bad_clip.append((i, "clipped modules", sorted(clips)))
        for m, w in smoothed.items():
            w = w.astype(np.float32)
            mod = pre + m
            out_f, in_f = w.shape
            if m in clips:
                site, gname = CLIP_SITES[m]
                x = sample["layers.%d.%s.x" % (i, site)][1].astype(np.float64)
                if gname in s:
                    x = x / s[gname].astype(np.float64)[None, :]
                w, bad = clip_search(w, x, np.asarray(clips[m], dtype=np.float32).reshape(out_f, in_f // g),
                                     stats["shrinks"], g)
                if bad:
                    bad_clip.append((mod, bad))
                clipped_groups[0] += int(np.sum(np.asarray(clips[m]) < 1))
                clipped_groups[1] += len(clips[m])
            want_q, want_sc, want_z = rtn_int4(w, g)
            t = {x: new.get(mod + x) for x in (".weight_packed", ".weight_scale", ".weight_zero_point",
                                               ".weight_shape")}
            if (mod + ".weight" in new or any(v is None for v in t.values())
                    or t[".weight_packed"][0] != "I32" or t[".weight_packed"][1].shape != (out_f, in_f // 8)
                    or t[".weight_scale"][0] != "F32" or t[".weight_scale"][1].shape != (out_f, in_f // g)
                    or t[".weight_zero_point"][0] != "I32"
                    or t[".weight_zero_point"][1].shape != ((out_f + 7) // 8, in_f // g)
                    or t[".weight_shape"][0] != "I64" or list(t[".weight_shape"][1]) != [out_f, in_f]):
                bad_layout.append(mod)
                continue
            q = quantized_formats._unpack_rows(t[".weight_packed"][1])
            zp_full = quantized_formats._unpack_rows(t[".weight_zero_point"][1].T.copy()).T
            z = zp_full[:out_f]
            pad_ok = np.all(zp_full[out_f:] == 8)
            in_range = (q.min() >= 0 and q.max() <= 15 and z.min() >= 0 and z.max() <= 15
                        and (q - 8).min() >= -8 and (q - 8).max() <= 7)
            if not (in_range and pad_ok and np.array_equal(q, want_q) and np.array_equal(z, want_z)
                    and np.array_equal(t[".weight_scale"][1], want_sc)):
                bad_codes.append((mod, int(np.sum(q != want_q)), int(np.sum(z != want_z)),
                                  int(np.sum(t[".weight_scale"][1] != want_sc))))
            gi = np.arange(in_f) // g
            want_w = (want_q - want_z[:, gi]) * want_sc.astype(np.float64)[:, gi]  # exact in float64
            worst_deq = max(worst_deq, float(np.max(np.abs(deq[mod + ".weight"] - want_w))))
    check(label + "each group's s is max(mean|x|^a, 1e-4) / sqrt(max min) of its chosen ratio (to 1e-6)",
          not bad_s, bad_s)
    check(label + "the norms carry 1/s: fp32(norm / s) exactly, and norm_orig / norm_new recovers s (worst %.2e <= 1e-6)"
          % worst_recover, not bad_norm and worst_recover <= 1e-6, bad_norm)
    check(label + "every module has the pack-quantized tensors' shapes and dtypes", not bad_layout, bad_layout)
    if stats.get("clip"):
        check(label + "clipping: v/o/gate/up/down searched (not q/k), each group's factor minimises the "
              "recomputed error and is no worse than no clipping; %d of %d groups clipped"
              % (clipped_groups[0], clipped_groups[1]), not bad_clip and clipped_groups[1] > 0, bad_clip[:5])
    check(label + "every code and zero point (0..15, signed -8..7) and scale is the RTN rule of the smoothed weight, "
          "exactly", not bad_codes, bad_codes)
    check(label + "the independent decoder reads (q - zero) * scale of those, exactly (worst %.2e)" % worst_deq,
          worst_deq == 0.0)
    check(label + "the tool's search errors match the float64 recomputation (worst relative %.2e <= 1e-4)"
          % worst_err_rel, worst_err_rel <= 1e-4)
    check(label + "every chosen ratio minimises the recomputed error over the grid and is <= plain RTN's (a = 0); "
          "error / RTN error from %.4f to %.4f" % (min(gains), max(gains)), not bad_search, bad_search)


def check_mha(args, calib):
    """A model without GQA (the random llama_mha_f32 shape, 2 layers, with
    the bundled tokenizer's vocabulary): the v_proj -> o_proj group is
    searched, and widths 64/160 make the group size 32."""
    import make_random_model
    model = os.path.join(args.work, "mha_model")
    if os.path.exists(model):
        shutil.rmtree(model)
    spec = dict(make_random_model.SHAPES["llama_mha_f32"], vocab_size=2048, bos_token_id=2045, eos_token_id=2046)
    make_random_model.write_model(spec, model)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(args.model, name), os.path.join(model, name))
    out = os.path.join(args.work, "mha_w4a16")
    if os.path.exists(out):
        shutil.rmtree(out)
    stats_path = os.path.join(args.work, "mha_stats.json")
    sample_path = os.path.join(args.work, "mha_sample.safetensors")
    p = run(args, ["--model", model, "--calibration", calib, "--scheme", "w4a16", "--out", out,
                   "--max-tokens", "2048", "--stats-out", stats_path, "--sample-out", sample_path, "--json"])
    if not check("MHA: tandem quantize --scheme w4a16 exits 0", p.returncode == 0, p.stderr):
        return
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    check("MHA: groups of 32 (hidden 64, intermediate 160)", summary["group_size"] == 32, summary)
    with open(os.path.join(out, "config.json")) as f:
        got_g = json.load(f)["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"]
    check("MHA: the config says group_size 32", got_g == 32, got_g)
    with open(stats_path) as f:
        stats = json.load(f)
    verify(model, out, stats, sample_path, 32, "MHA: ")
    head = os.path.join(args.work, "heldout_head.txt")
    qct.compare_with_reference(argparse.Namespace(tandem=args.tandem, work=args.work),
                               "MHA w4a16 output", out, head, False)
    smoothed = os.path.join(args.work, "mha_smoothed_float")
    if os.path.exists(smoothed):
        shutil.rmtree(smoothed)
    write_smoothed_float(model, stats, smoothed)
    base, sm = perplexity(args, model, head), perplexity(args, smoothed, head)
    if base is not None and sm is not None:
        rel = abs(sm["perplexity"] / base["perplexity"] - 1)
        check("MHA: the factors (v_proj -> o_proj included) keep the float model: %.6f vs %.6f (relative %.1e "
              "<= 1e-5)" % (sm["perplexity"], base["perplexity"], rel), rel <= 1e-5)
    # --clip on the same model: the clipping search recomputed too.
    clip_out = out + "-clip"
    if os.path.exists(clip_out):
        shutil.rmtree(clip_out)
    clip_stats = os.path.join(args.work, "mha_clip_stats.json")
    p = run(args, ["--model", model, "--calibration", calib, "--scheme", "w4a16", "--clip", "--out", clip_out,
                   "--max-tokens", "2048", "--stats-out", clip_stats, "--sample-out", sample_path])
    if check("MHA: tandem quantize --scheme w4a16 --clip exits 0", p.returncode == 0, p.stderr):
        with open(clip_stats) as f:
            stats = json.load(f)
        verify(model, clip_out, stats, sample_path, 32, "MHA --clip: ")
        qct.compare_with_reference(argparse.Namespace(tandem=args.tandem, work=args.work),
                                   "MHA w4a16 --clip output", clip_out, head, False)
    p = run(args, ["--model", model, "--calibration", calib, "--scheme", "w4a16", "--out", out + "-g128",
                   "--group-size", "128"])
    check("MHA: --group-size 128 -> exit 2 naming --group-size (160 is no multiple)",
          p.returncode == 2 and "--group-size 128" in p.stderr, (p.returncode, p.stderr[-400:]))


def write_smoothed_float(src, stats, dst):
    """The float model with the tool's factors folded in (F32, no rounding
    but fp32's): the model `--quantization int4` must turn into exactly the
    tool's checkpoint, since G = 128 is also the engine's group here."""
    f = {n: safetensors_io.to_float64(*t).astype(np.float32) for n, t in safetensors_io.load_model_dir(src).items()}
    for i, layer in enumerate(stats["layers"]):
        pre = "model.layers.%d." % i
        s = {k: np.asarray(layer[k]["s"], dtype=np.float32) for k in ("qkv", "gate_up", "down")}
        for m in ("q", "k", "v"):
            f[pre + "self_attn.%s_proj.weight" % m] = f[pre + "self_attn.%s_proj.weight" % m] * s["qkv"]
        if layer["vo"] is not None:
            s_vo = np.asarray(layer["vo"]["s"], dtype=np.float32)
            f[pre + "self_attn.v_proj.weight"] = f[pre + "self_attn.v_proj.weight"] / s_vo[:, None]
            f[pre + "self_attn.o_proj.weight"] = f[pre + "self_attn.o_proj.weight"] * s_vo
        f[pre + "input_layernorm.weight"] = f[pre + "input_layernorm.weight"] / s["qkv"]
        f[pre + "mlp.gate_proj.weight"] = f[pre + "mlp.gate_proj.weight"] * s["gate_up"]
        f[pre + "mlp.up_proj.weight"] = (f[pre + "mlp.up_proj.weight"] * s["gate_up"]) / s["down"][:, None]
        f[pre + "post_attention_layernorm.weight"] = f[pre + "post_attention_layernorm.weight"] / s["gate_up"]
        f[pre + "mlp.down_proj.weight"] = f[pre + "mlp.down_proj.weight"] * s["down"]
    quantized_formats._copy_side_files(src, dst)
    safetensors_io.save_model_dir({n: ("F32", v.astype(np.float32)) for n, v in f.items()}, dst)
    shutil.copy(os.path.join(src, "config.json"), os.path.join(dst, "config.json"))


def perplexity(args, model, text, flags=()):
    p = subprocess.run([args.tandem, "perplexity", "--model", model, "--text", text, "--json"] + list(flags),
                       capture_output=True, text=True, timeout=900)
    if not check("tandem perplexity --model %s %s exits 0" % (os.path.basename(model), " ".join(flags)),
                 p.returncode == 0, p.stderr[-500:]):
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def check_loaded(args, out, head, heldout, stats):
    """Tandem's pack-quantized loader on the output: against the float64
    reference on the decoded weights; the smoothing keeps the float model;
    the output is exactly `--quantization int4` of the smoothed float model;
    and the issue's bound on held-out perplexity."""
    qct_args = argparse.Namespace(tandem=args.tandem, work=args.work)
    qct.compare_with_reference(qct_args, "tandem quantize w4a16 output", out, head, False)
    smoothed = os.path.join(args.work, "w4a16_smoothed_float")
    if os.path.exists(smoothed):
        shutil.rmtree(smoothed)
    write_smoothed_float(args.model, stats, smoothed)
    fp32 = perplexity(args, args.model, heldout)
    sm_fp32 = perplexity(args, smoothed, heldout)
    got = perplexity(args, out, heldout)
    sm_int4 = perplexity(args, smoothed, heldout, ["--quantization", "int4"])
    rtn = perplexity(args, args.model, heldout, ["--quantization", "int4"])
    if None in (fp32, sm_fp32, got, sm_int4, rtn):
        return
    rel = abs(sm_fp32["perplexity"] / fp32["perplexity"] - 1)
    check("the smoothing alone keeps the float model: held-out %.6f vs %.6f (relative %.1e <= 1e-5)"
          % (sm_fp32["perplexity"], fp32["perplexity"], rel), rel <= 1e-5)
    check("the output scores exactly what --quantization int4 does on the smoothed float model (mean NLL %.9f, %.9f)"
          % (got["mean_nll"], sm_int4["mean_nll"]),
          got["mean_nll"] == sm_int4["mean_nll"] and got["scored_tokens"] == sm_int4["scored_tokens"])
    cost = got["perplexity"] / fp32["perplexity"] - 1
    # Not asserted: below plain RTN. On the bundled model it is not (see
    # docs/quantization.md): its held-out perplexity barely moves under RTN
    # (+0.09%), and the layer-output errors AWQ minimises do not predict
    # changes that small.
    print("INFO held-out perplexity: fp32 %.4f, w4a16 activation-aware %.4f (%+.3f%%), --quantization int4 %.4f "
          "(%+.3f%%)" % (fp32["perplexity"], got["perplexity"], 100 * cost, rtn["perplexity"],
                         100 * (rtn["perplexity"] / fp32["perplexity"] - 1)))
    check("held-out perplexity within the issue's bound: %+.3f%% <= +3%% vs fp32" % (100 * cost), cost <= 0.03)


def check_usage(args, calib, out):
    cases = [
        (["--scheme", "w4a16", "--calibration", calib, "--out", out + "-g48", "--group-size", "48"],
         "--group-size"),
        (["--scheme", "w8a8", "--out", out + "-g64", "--group-size", "64"], "--group-size"),
        (["--scheme", "w8a8", "--out", out + "-clip", "--clip"], "--clip"),
        (["--scheme", "w4a16", "--out", out + "-nocal"], "--calibration"),
        (["--scheme", "w4a17", "--calibration", calib, "--out", out + "-bad"], "--scheme"),
        (["--scheme", "w4a16", "--calibration", calib, "--out", out], "not empty"),
    ]
    for flags, what in cases:
        p = run(args, ["--model", args.model] + flags)
        check("tandem quantize %s -> exit 2 naming %r" % (" ".join(flags), what),
              p.returncode == 2 and what in p.stderr, (p.returncode, p.stderr[-400:]))


if __name__ == "__main__":
    sys.exit(main())
