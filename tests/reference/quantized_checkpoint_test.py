#!/usr/bin/python3
"""Pre-quantized checkpoints through Tandem's loader, against the float64
PyTorch reference running on the weights an independent numpy decoder
(quantized_formats.py) reads from the same files.

For each format a fixture is written from the bundled model; `tandem
perplexity` scores the head of the held-out text on it and the reference
scores the same token windows with the decoded weights (and, for W8A8
layouts, the engine's per-token int8 activation rounding). Checked: the
perplexity within a relative 1e-4 for weight-only layouts and 2e-3 for
W8A8 ones: rounding activations is discontinuous, so the float64 and fp32
computations, 1e-7 apart before a rounding, land on different integers
here and there and the differences compound over the layers (scaling the
reference's activations by 1 +- 1e-7 alone moves its perplexity on these
1,060 tokens by up to 2.6e-4); a wrong scale, row or layout moves it by
far more. For the int8 layout with float32 scales
also that it equals `--quantization int8` at load on the float model to
the last digit (both quantize by the same rule); and that a quantized
checkpoint refuses a second --quantization.

  quantized_checkpoint_test.py --tandem build/bin/tandem --model models/tandem-shakespeare \\
      --text ../shared/data/tinyshakespeare.txt --work DIR

Exits 77 (skipped) when the text is missing.
"""

import argparse
import json
import math
import os
import subprocess
import sys

import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quantized_formats  # noqa: E402
from llama_reference import Config, LlamaReference  # noqa: E402
from perplexity_reference_test import reference  # noqa: E402

SKIP = 77
FAILED = []
CONTEXT = 256


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + str(detail)[:2000]), flush=True)
    if not ok:
        FAILED.append(name)
    return ok


def run_perplexity(args, model, flags):
    p = subprocess.run([args.tandem, "perplexity", "--model", model] + flags, capture_output=True, text=True,
                       timeout=600)
    return p.returncode, p.stdout, p.stderr


def reference_model(model_dir, int8_inputs):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    weights = {n: torch.from_numpy(a) for n, a in quantized_formats.decode_weights(model_dir).items()}
    ref = LlamaReference(Config(cfg), weights)
    if int8_inputs:
        ref.int8_activations_for([m + ".weight" for m in quantized_formats.quantized_modules(model_dir)])
    return ref


def score(args, label, model_dir, text_path, flags):
    """Runs tandem perplexity; returns (result dict, token ids) or (None, None)."""
    ids_path = os.path.join(args.work, label.replace(" ", "_") + "_ids.json")
    rc, out, err = run_perplexity(args, model_dir, ["--text", text_path, "--context", str(CONTEXT), "--json",
                                                    "--token-ids-out", ids_path] + flags)
    if not check("%s: tandem perplexity exits 0" % label, rc == 0, err):
        return None, None
    with open(ids_path) as f:
        return json.loads(out.strip().splitlines()[-1]), json.load(f)


def compare_with_reference(args, label, model_dir, text_path, int8_inputs):
    tol = 2e-3 if int8_inputs else 1e-4
    got, tokens = score(args, label, model_dir, text_path, [])
    if got is None:
        return None
    want_nll, want_scored, _ = reference(reference_model(model_dir, int8_inputs), tokens, CONTEXT)
    want_ppl = math.exp(want_nll)
    rel = abs(got["perplexity"] - want_ppl) / want_ppl
    check("%s: perplexity %.6f vs reference on the decoded weights %.6f (relative %.2e <= %g), %d scored"
          % (label, got["perplexity"], want_ppl, rel, tol, want_scored),
          rel <= tol and got["scored_tokens"] == want_scored, got)
    return got


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
    torch.set_num_threads(1)
    with open(args.text, encoding="utf-8") as f:
        corpus = f.read()
    text_path = os.path.join(args.work, "heldout_head.txt")
    with open(text_path, "w", encoding="utf-8") as f:
        f.write(corpus[len(corpus) * 9 // 10:][:3000])

    # compressed-tensors W8A8 int8, scales stored as BF16 (as llm-compressor
    # writes them) and as F32.
    int8_bf16 = os.path.join(args.work, "ct-int8-bf16-scales")
    quantized_formats.write_compressed_int8(args.model, int8_bf16, scale_dtype="BF16")
    compare_with_reference(args, "compressed-tensors int8, BF16 scales", int8_bf16, text_path, True)

    int8_f32 = os.path.join(args.work, "ct-int8-f32-scales")
    quantized_formats.write_compressed_int8(args.model, int8_f32, scale_dtype="F32")
    got = compare_with_reference(args, "compressed-tensors int8, F32 scales", int8_f32, text_path, True)
    at_load, _ = score(args, "float model with --quantization int8", args.model, text_path,
                       ["--quantization", "int8"])
    if got is not None and at_load is not None:
        check("the F32-scale int8 checkpoint scores exactly what --quantization int8 does at load (%.6f, %.6f)"
              % (got["perplexity"], at_load["perplexity"]),
              got["mean_nll"] == at_load["mean_nll"], (got, at_load))

    rc, out, err = run_perplexity(args, int8_f32, ["--text", text_path, "--quantization", "int8"])
    check("a quantized checkpoint refuses --quantization int8 (exit 2, 'already quantized')",
          rc == 2 and "already quantized" in err, (rc, err[-500:]))

    # Weight-only layouts: FP8 (W8A16) and the 4-bit ones (W4A16) run smooth
    # arithmetic, so the reference holds them to 1e-4.
    fp8 = os.path.join(args.work, "ct-fp8-channel")
    quantized_formats.write_compressed_fp8(args.model, fp8, "channel", "F32")
    got = compare_with_reference(args, "compressed-tensors FP8, per-channel F32 scales", fp8, text_path, False)
    at_load, _ = score(args, "float model with --quantization fp8", args.model, text_path, ["--quantization", "fp8"])
    if got is not None and at_load is not None:
        check("the per-channel FP8 checkpoint scores exactly what --quantization fp8 does at load (%.6f, %.6f)"
              % (got["perplexity"], at_load["perplexity"]), got["mean_nll"] == at_load["mean_nll"], (got, at_load))
    cases = [
        ("compressed-tensors FP8, one BF16 scale per tensor",
         lambda d: quantized_formats.write_compressed_fp8(args.model, d, "tensor", "BF16")),
        ("compressed-tensors int4 pack-quantized, zero points",
         lambda d: quantized_formats.write_compressed_int4(args.model, d, 128, symmetric=False)),
        ("compressed-tensors int4 pack-quantized, symmetric, groups of 64",
         lambda d: quantized_formats.write_compressed_int4(args.model, d, 64, symmetric=True)),
        ("AutoAWQ GEMM int4", lambda d: quantized_formats.write_awq(args.model, d, 128)),
        ("AutoGPTQ int4, symmetric", lambda d: quantized_formats.write_gptq(args.model, d, 128, True)),
        ("AutoGPTQ int4, groups of 32", lambda d: quantized_formats.write_gptq(args.model, d, 32, True)),
        ("AutoGPTQ int4, act-order (desc_act, shuffled g_idx)",
         lambda d: quantized_formats.write_gptq(args.model, d, 128, True, act_order=True)),
    ]
    for label, write in cases:
        d = os.path.join(args.work, label.replace(" ", "_").replace(",", ""))
        write(d)
        compare_with_reference(args, label, d, text_path, False)

    # Tensor parallelism: each rank slices the quantized layers it holds
    # (row ranges; column ranges on group boundaries for the 4-bit ones).
    for label in ("AutoAWQ GEMM int4", "AutoGPTQ int4, groups of 32"):
        d = os.path.join(args.work, label.replace(" ", "_").replace(",", ""))
        outs = []
        for tp in ("1", "2"):
            p = subprocess.run([args.tandem, "generate", "--model", d, "--tp", tp, "--prompt", "ROMEO:",
                                "--temperature", "0", "--max-tokens", "12", "--ignore-eos", "--json"],
                               capture_output=True, text=True, timeout=600)
            outs.append(json.loads(p.stdout)["token_ids"] if p.returncode == 0 else p.stderr)
        check("%s: tandem generate runs at --tp 1 and --tp 2, 12 tokens each" % label,
              all(isinstance(o, list) and len(o) == 12 for o in outs), outs)

    act = os.path.join(args.work, "AutoGPTQ_int4_act-order_(desc_act_shuffled_g_idx)")
    p = subprocess.run([args.tandem, "generate", "--model", act, "--tp", "2", "--prompt", "ROMEO:", "--max-tokens", "4"],
                       capture_output=True, text=True, timeout=600)
    check("an act-order GPTQ checkpoint at --tp 2 fails naming the split and --tp 1",
          p.returncode != 0 and "act-order" in p.stderr and "--tp 1" in p.stderr, (p.returncode, p.stderr[-400:]))

    check_tandem_quantize(args, corpus, text_path)
    print("%d failed" % len(FAILED))
    return 1 if FAILED else 0


def check_kv_cache_scales(args, calib):
    """`tandem quantize --kv-cache-scales`: every layer's per-head k_scale /
    v_scale is fp32(max / 448) of the |K| (after RoPE) and |V| the float64
    reference writes over the same calibration windows (to fp32 rounding of
    the forward), and the checkpoint says so in kv_cache_scheme."""
    import numpy as np
    import safetensors_io
    from llama_reference import KVCache

    out = os.path.join(args.work, "kv-scales")
    if os.path.exists(out):
        import shutil
        shutil.rmtree(out)
    stats = os.path.join(args.work, "kv_stats.json")
    p = subprocess.run([args.tandem, "quantize", "--model", args.model, "--scheme", "w8a8", "--calibration", calib,
                        "--max-tokens", "600", "--kv-cache-scales", "--kv-stats-out", stats, "--out", out],
                       capture_output=True, text=True, timeout=600)
    if not check("tandem quantize --kv-cache-scales exits 0", p.returncode == 0, p.stderr):
        return
    ids_path = os.path.join(args.work, "kv_calib_ids.json")
    rc, _, err = run_perplexity(args, args.model, ["--text", calib, "--max-tokens", "600",
                                                   "--token-ids-out", ids_path])
    if not check("the calibration tokens are listed (tandem perplexity --token-ids-out)", rc == 0, err):
        return
    with open(ids_path) as f:
        tokens = json.load(f)
    ref = reference_model(args.model, False)
    layers = ref.config.num_layers
    k_max = np.zeros((layers, ref.config.num_kv_heads))
    v_max = np.zeros_like(k_max)
    for start in range(0, len(tokens), CONTEXT):  # the windows quantize calibrates on
        cache = KVCache(layers)
        ref.forward(tokens[start:start + CONTEXT], 0, cache)
        for layer in range(layers):
            k_max[layer] = np.maximum(k_max[layer], cache.keys[layer].abs().amax(dim=(1, 2)).numpy())
            v_max[layer] = np.maximum(v_max[layer], cache.values[layer].abs().amax(dim=(1, 2)).numpy())
    with open(stats) as f:
        got = json.load(f)
    worst = max(float(np.max(np.abs(np.asarray(got[n]) - want) / want)) for n, want in (("k_max", k_max),
                                                                                        ("v_max", v_max)))
    check("the |K| and |V| maxima per layer and head match the float64 reference (worst relative %.1e <= 1e-5)"
          % worst, worst <= 1e-5, got)
    tensors = safetensors_io.load_model_dir(out)
    exact = all(
        np.array_equal(tensors["model.layers.%d.self_attn.%s_scale" % (layer, kv)][1],
                       (np.asarray(got[kv + "_max"][layer], dtype=np.float32) / np.float32(448)).astype(np.float32))
        for layer in range(layers) for kv in ("k", "v"))
    check("every k_scale / v_scale is fp32(max / 448), F32 [num_key_value_heads]", exact)
    with open(os.path.join(out, "config.json")) as f:
        scheme = json.load(f)["quantization_config"].get("kv_cache_scheme") or {}
    check("quantization_config carries kv_cache_scheme (8-bit float, static)",
          scheme.get("num_bits") == 8 and scheme.get("type") == "float" and scheme.get("dynamic") is False, scheme)
    rc, out_txt, err = run_perplexity(args, out, ["--text", calib, "--max-tokens", "300", "--kv-cache-dtype", "fp8"])
    check("the checkpoint runs with --kv-cache-dtype fp8 on its own scales", rc == 0 and "static k/v scales" in err,
          (rc, err[-300:]))


def check_tandem_quantize(args, corpus, text_path):
    """`tandem quantize --scheme w8a8-smoothquant` against SmoothQuant
    recomputed here from its own calibration statistics and the float
    weights: the factors it folded into the norms, every int8 row within
    half a step of the smoothed weight, then the reference on the result."""
    import numpy as np
    import safetensors_io

    calib = os.path.join(args.work, "calibration.txt")
    with open(calib, "w", encoding="utf-8") as f:
        f.write(corpus[:len(corpus) * 9 // 10])  # the training part
    out = os.path.join(args.work, "smoothquant")
    stats = os.path.join(args.work, "smoothquant_stats.json")
    if os.path.exists(out):
        import shutil
        shutil.rmtree(out)
    alpha = 0.5
    p = subprocess.run([args.tandem, "quantize", "--model", args.model, "--calibration", calib, "--out", out,
                        "--max-tokens", "4096", "--alpha", str(alpha), "--stats-out", stats, "--json"],
                       capture_output=True, text=True, timeout=600)
    if not check("tandem quantize exits 0", p.returncode == 0, p.stderr):
        return
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    check("it calibrated on 4096 tokens", summary["calibration_tokens"] == 4096, summary)
    with open(stats) as f:
        layers = json.load(f)["layers"]
    orig = {n: safetensors_io.to_float64(*t) for n, t in safetensors_io.load_model_dir(args.model).items()}
    new = safetensors_io.load_model_dir(out)
    deq = quantized_formats.decode_weights(out)
    worst_s, worst_step, worst_scale = 0.0, 0.0, 0.0
    groups = {"input_layernorm": ("qkv", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
              "post_attention_layernorm": ("gate_up", ["mlp.gate_proj", "mlp.up_proj"])}
    for i, stat in enumerate(layers):
        p_ = "model.layers.%d." % i
        for norm, (site, mods) in groups.items():
            x_max = np.asarray(stat[site], dtype=np.float64)
            w_max = np.max(np.stack([np.abs(orig[p_ + m + ".weight"]).max(axis=0) for m in mods]), axis=0)
            want = np.where((x_max > 0) & (w_max > 0),
                            np.clip(x_max ** alpha / w_max ** (1 - alpha), 1e-5, 1e5), 1.0)
            got = orig[p_ + norm + ".weight"] / safetensors_io.to_float64(*new[p_ + norm + ".weight"])
            worst_s = max(worst_s, float(np.max(np.abs(got - want) / want)))
            for m in mods:
                smoothed = orig[p_ + m + ".weight"] * want[None, :]
                scale = safetensors_io.to_float64(*new[p_ + m + ".weight_scale"]).reshape(-1)
                want_scale = np.abs(smoothed).max(axis=1) / 127
                worst_scale = max(worst_scale, float(np.max(np.abs(scale - want_scale) / want_scale)))
                err = np.abs(deq[p_ + m + ".weight"] - smoothed) / scale[:, None]
                worst_step = max(worst_step, float(err.max()))
    check("the norms carry s = max|X|^a / max|W|^(1-a) from its statistics (worst relative %.2e <= 1e-5)"
          % worst_s, worst_s <= 1e-5)
    check("every row's scale is max|W s| / 127 (worst relative %.2e <= 1e-5)" % worst_scale, worst_scale <= 1e-5)
    check("every int8 weight is within half a step of W s (worst %.4f steps <= 0.5001)" % worst_step,
          worst_step <= 0.5001)
    compare_with_reference(args, "tandem quantize w8a8-smoothquant output", out, text_path, True)

    check_kv_cache_scales(args, calib)

    for flags, what, rc_want in [(["--out", out], "not empty", 2),
                                 (["--out", out + "-2", "--alpha", "1.5"], "--alpha", 2),
                                 (["--out", out + "-3", "--model", out], "already quantized", 2)]:
        p = subprocess.run([args.tandem, "quantize", "--model", args.model, "--calibration", calib] + flags,
                           capture_output=True, text=True, timeout=600)
        check("tandem quantize %s -> exit %d naming %r" % (" ".join(flags[2:]) or flags[0], rc_want, what),
              p.returncode == rc_want and what in p.stderr, (p.returncode, p.stderr[-400:]))


if __name__ == "__main__":
    sys.exit(main())
