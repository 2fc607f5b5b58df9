#!/usr/bin/python3
"""Self-checks of the float64 reference (no C++ involved).

  /usr/bin/python3 tests/reference/test_reference_self.py [-k SUBSTRING]

Prints one line per test and finally "N passed, M failed"; exits non-zero on
any failure.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import traceback

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, HERE)
import make_random_model  # noqa: E402
import safetensors_io  # noqa: E402
from llama_reference import (Config, KVCache, LlamaReference, apply_rope,  # noqa: E402
                             rms_norm, rope_cos_sin, rope_inv_freq)

torch.set_num_threads(1)
TMP = tempfile.mkdtemp(prefix="tandem_ref_selftest_")
TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


_model_cache = {}


def model_for(shape):
    """(model dir, LlamaReference) for a named shape, written once."""
    if shape not in _model_cache:
        d = os.path.join(TMP, shape)
        make_random_model.make_random_model(shape, d)
        _model_cache[shape] = (d, LlamaReference.from_pretrained(d))
    return _model_cache[shape]


def reload_with(shape, cfg_changes=None, weight_fn=None):
    """A fresh LlamaReference from the shape's files with config edits and/or
    a function editing the weights dict in place."""
    d, _ = model_for(shape)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(cfg_changes or {})
    stored = safetensors_io.load_model_dir(d)
    weights = {n: torch.from_numpy(safetensors_io.to_float64(dt, a))
               for n, (dt, a) in stored.items()}
    if weight_fn:
        weight_fn(weights)
    return LlamaReference(Config(cfg), weights)


def assert_close(a, b, tol, what=""):
    diff = float((a - b).abs().max())
    assert diff <= tol, "%s: max diff %g > %g" % (what, diff, tol)


# --------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------

@test
def safetensors_roundtrip_all_dtypes():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    tensors = {
        "a.f64": x.astype(np.float64),
        "b.f32": x,
        "c.f16": safetensors_io.encode(x, "F16"),
        "d.bf16": safetensors_io.encode(x, "BF16"),
        "e.i32": np.arange(7, dtype=np.int32),
        "f.scalar": np.array(1.5, dtype=np.float32),
    }
    path = os.path.join(TMP, "rt.safetensors")
    safetensors_io.save_file(tensors, path, metadata={"k": "v"})
    header, meta, start = safetensors_io.read_header(path)
    assert start % 8 == 0, "data start not 8-aligned"
    assert meta == {"format": "pt", "k": "v"}, meta
    loaded, _ = safetensors_io.load_file(path)
    assert loaded["a.f64"][0] == "F64" and np.array_equal(loaded["a.f64"][1], x)
    assert loaded["b.f32"][0] == "F32" and np.array_equal(loaded["b.f32"][1], x)
    assert loaded["c.f16"][0] == "F16"
    assert np.array_equal(loaded["c.f16"][1], x.astype(np.float16))
    assert loaded["d.bf16"][0] == "BF16" and loaded["d.bf16"][1].dtype == np.uint16
    bf = safetensors_io.to_float64("BF16", loaded["d.bf16"][1])
    assert np.all(np.abs(bf - x) <= np.abs(x) * 2.0 ** -8), "bf16 rounding"
    assert loaded["e.i32"][0] == "I32" and loaded["e.i32"][1].tolist() == list(range(7))
    assert loaded["f.scalar"][1].shape == () and float(loaded["f.scalar"][1]) == 1.5
    # the raw layout: offsets are contiguous and sorted by name
    spans = sorted(tuple(v["data_offsets"]) for v in header.values())
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


@test
def bf16_round_to_nearest_even():
    vals = np.array([1.0, -2.0, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8,
                     1.0 + 2.0 ** -8 + 2.0 ** -20, float("nan"), float("inf"),
                     3.4e38], dtype=np.float32)
    bits = safetensors_io.float_to_bf16_bits(vals).tolist()
    expected = [0x3F80, 0xC000, 0x3F80, 0x3F82, 0x3F81, 0x7FC0, 0x7F80, 0x7F80]
    assert bits == expected, [hex(b) for b in bits]
    back = safetensors_io.bf16_bits_to_float32(np.array([0x3F80, 0xC000, 0x3F81],
                                                        dtype=np.uint16))
    assert back.tolist() == [1.0, -2.0, 1.0 + 2.0 ** -7]


@test
def sharded_dir_equals_single_file():
    rng = np.random.default_rng(1)
    tensors = {"t%d" % i: rng.standard_normal((4, i + 1)).astype(np.float32)
               for i in range(5)}
    d1 = os.path.join(TMP, "single")
    d2 = os.path.join(TMP, "sharded")
    safetensors_io.save_model_dir(tensors, d1)
    safetensors_io.save_model_dir(tensors, d2, num_shards=3)
    with open(os.path.join(d2, safetensors_io.INDEX_FILE_NAME)) as f:
        index = json.load(f)
    assert len(set(index["weight_map"].values())) == 3
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in tensors.values())
    a = safetensors_io.load_model_dir(d1)
    b = safetensors_io.load_model_dir(d2)
    assert sorted(a) == sorted(b) == sorted(tensors)
    for n in tensors:
        assert np.array_equal(a[n][1], b[n][1]) and np.array_equal(a[n][1], tensors[n])


@test
def random_model_files_match_shape_specs():
    for name, spec in make_random_model.SHAPES.items():
        d, model = model_for(name)
        stored = safetensors_io.load_model_dir(d)
        dtypes = {dt for dt, _ in stored.values()}
        assert dtypes == {spec["dtype"]}, (name, dtypes)
        sharded = os.path.exists(os.path.join(d, safetensors_io.INDEX_FILE_NAME))
        assert sharded == (spec["num_shards"] > 1), name
        assert ("lm_head.weight" in stored) == (not spec["tie_word_embeddings"]), name
        has_bias = any(n.endswith(".bias") for n in stored)
        assert has_bias == (spec["architecture"] == "Qwen2ForCausalLM" or spec["attention_bias"] or spec["mlp_bias"]), name
        c = model.config
        if spec["head_dim"] is not None:
            assert c.head_dim == spec["head_dim"] != c.hidden_size // c.num_heads
    assert model_for("llama_bf16")[1].config.eos_token_ids == [2, 7]


@test
def random_model_is_reproducible():
    d1 = os.path.join(TMP, "repro1")
    d2 = os.path.join(TMP, "repro2")
    make_random_model.make_random_model("sharded_f32", d1)
    make_random_model.make_random_model("sharded_f32", d2)
    files = sorted(os.listdir(d1))
    assert files == sorted(os.listdir(d2))
    for fname in files:
        with open(os.path.join(d1, fname), "rb") as f1, \
                open(os.path.join(d2, fname), "rb") as f2:
            assert f1.read() == f2.read(), fname


# --------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------

@test
def rms_norm_matches_formula():
    x = torch.randn(3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w = torch.linspace(0.5, 1.5, 8, dtype=torch.float64)
    y = rms_norm(x, w, 1e-5)
    for r in range(3):
        ms = sum(float(v) ** 2 for v in x[r]) / 8
        for i in range(8):
            expect = float(x[r, i]) / math.sqrt(ms + 1e-5) * float(w[i])
            assert abs(float(y[r, i]) - expect) < 1e-12


@test
def rope_position_zero_is_identity():
    d = 16
    inv = rope_inv_freq(d, 10000.0)
    x = torch.randn(2, 1, d, dtype=torch.float64)
    cos, sin = rope_cos_sin(torch.tensor([0]), inv)
    assert torch.equal(apply_rope(x, cos, sin), x)


@test
def rope_rotates_pairs_i_and_i_plus_half():
    d, theta = 12, 10000.0
    inv = rope_inv_freq(d, theta)
    x = torch.randn(1, 3, d, dtype=torch.float64)
    pos = torch.tensor([0, 5, 17])
    cos, sin = rope_cos_sin(pos, inv)
    y = apply_rope(x, cos, sin)
    for t in range(3):
        for i in range(d // 2):
            ang = int(pos[t]) * (1.0 / theta ** (2 * i / d))
            a, b = float(x[0, t, i]), float(x[0, t, i + d // 2])
            assert abs(float(y[0, t, i]) - (a * math.cos(ang) - b * math.sin(ang))) < 1e-12
            assert abs(float(y[0, t, i + d // 2]) - (b * math.cos(ang) + a * math.sin(ang))) < 1e-12


@test
def rope_dot_product_depends_on_relative_position_only():
    d = 16
    inv = rope_inv_freq(d, 10000.0)
    q = torch.randn(1, 1, d, dtype=torch.float64)
    k = torch.randn(1, 1, d, dtype=torch.float64)

    def rot(x, p):
        cos, sin = rope_cos_sin(torch.tensor([p]), inv)
        return apply_rope(x, cos, sin)

    a = float((rot(q, 7) * rot(k, 3)).sum())
    b = float((rot(q, 104) * rot(k, 100)).sum())
    assert abs(a - b) < 1e-10, (a, b)


def hf_style_llama3(inv_freq, factor, low, high, old_len):
    """A vectorized transcription of transformers' _compute_llama3_parameters."""
    low_wl = old_len / low
    high_wl = old_len / high
    wavelen = 2 * math.pi / inv_freq
    out = torch.where(wavelen > low_wl, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wavelen < high_wl) * ~(wavelen > low_wl)
    return torch.where(medium, smoothed, out)


@test
def llama3_scaling_identities_and_regimes():
    d, theta = 32, 500000.0
    base = rope_inv_freq(d, theta)

    def scaled(factor=8.0, low=1.0, high=4.0, old=32):
        return rope_inv_freq(d, theta, {"rope_type": "llama3", "factor": factor,
                                        "low_freq_factor": low,
                                        "high_freq_factor": high,
                                        "original_max_position_embeddings": old})

    assert_close(scaled(factor=1.0), base, 1e-15, "factor 1")
    assert torch.equal(scaled(old=10 ** 12), base), "huge original_max"
    for args in [(8.0, 1.0, 4.0, 32), (8.0, 1.0, 4.0, 8192), (4.0, 2.0, 8.0, 64)]:
        assert_close(scaled(*args), hf_style_llama3(base, *args), 1e-15, str(args))
    s = scaled()
    wavelen = 2 * math.pi / base
    high, low = wavelen < 8, wavelen > 32
    medium = ~high & ~low
    assert high.any() and low.any() and medium.any(), "shape misses a regime"
    assert torch.equal(s[high], base[high])
    assert_close(s[low], base[low] / 8, 1e-18, "low")
    assert bool(((s[medium] < base[medium]) & (s[medium] > base[medium] / 8)).all())


@test
def linear_scaling_is_position_over_factor():
    d = 16
    base = rope_inv_freq(d, 10000.0)
    lin = rope_inv_freq(d, 10000.0, {"type": "linear", "factor": 2.0})
    pos = torch.arange(0, 40)
    c1, s1 = rope_cos_sin(pos, lin)
    c2, s2 = rope_cos_sin(pos.to(torch.float64) / 2.0, base)
    assert_close(c1, c2, 1e-14, "cos")
    assert_close(s1, s2, 1e-14, "sin")
    rt = rope_inv_freq(d, 10000.0, {"rope_type": "linear", "factor": 2.0})
    assert torch.equal(lin, rt)


@test
def argmax_takes_lowest_index_on_ties():
    row = torch.tensor([0.0, 3.0, 1.0, 3.0, 3.0], dtype=torch.float64)
    assert LlamaReference.argmax(row) == 1


# --------------------------------------------------------------------------
# whole model
# --------------------------------------------------------------------------

def naive_logits(model, tokens):
    """A second, loop-based forward (per head, per position) to check the
    tensorized one: explicit GQA mapping, causal mask and sliding window."""
    c, W = model.config, model.weights
    n_rep = c.num_heads // c.num_kv_heads
    D = c.head_dim
    x = torch.stack([W["model.embed_tokens.weight"][t] for t in tokens])
    T = len(tokens)

    def lin(v, name):
        y = W[name + ".weight"] @ v
        if name + ".bias" in W:
            y = y + W[name + ".bias"]
        return y

    def rot(vec, pos):
        out = vec.clone()
        for i in range(D // 2):
            ang = pos * float(model.inv_freq[i])
            a, b = vec[i], vec[i + D // 2]
            out[i] = a * math.cos(ang) - b * math.sin(ang)
            out[i + D // 2] = b * math.cos(ang) + a * math.sin(ang)
        return out

    for layer in range(c.num_layers):
        p = "model.layers.%d." % layer
        h = [rms_norm(x[t], W[p + "input_layernorm.weight"], c.rms_norm_eps)
             for t in range(T)]
        qs = [lin(h[t], p + "self_attn.q_proj") for t in range(T)]
        ks = [lin(h[t], p + "self_attn.k_proj") for t in range(T)]
        vs = [lin(h[t], p + "self_attn.v_proj") for t in range(T)]
        new_x = []
        for t in range(T):
            heads_out = []
            for hq in range(c.num_heads):
                hk = hq // n_rep
                q = rot(qs[t][hq * D:(hq + 1) * D], t)
                keys = [s for s in range(t + 1)
                        if c.sliding_window is None or t - s < c.sliding_window]
                scores = torch.stack([
                    (q * rot(ks[s][hk * D:(hk + 1) * D], s)).sum() / math.sqrt(D)
                    for s in keys])
                probs = torch.softmax(scores, dim=0)
                out = sum(probs[j] * vs[s][hk * D:(hk + 1) * D]
                          for j, s in enumerate(keys))
                heads_out.append(out)
            a = lin(torch.cat(heads_out), p + "self_attn.o_proj")
            xt = x[t] + a
            h2 = rms_norm(xt, W[p + "post_attention_layernorm.weight"], c.rms_norm_eps)
            g = lin(h2, p + "mlp.gate_proj")
            u = lin(h2, p + "mlp.up_proj")
            m = lin(g / (1 + torch.exp(-g)) * u, p + "mlp.down_proj")
            new_x.append(xt + m)
        x = torch.stack(new_x)
    xn = rms_norm(x[-1], W["model.norm.weight"], c.rms_norm_eps)
    return model.lm_head @ xn


@test
def forward_matches_naive_loop_implementation():
    tokens = [5, 17, 3, 99, 42, 7, 250]
    for shape in ["llama_mha_f32", "llama_gqa_f32", "llama_head_dim_f32",
                  "qwen2_bias_f32", "llama3_rope_f32", "mistral_f16"]:
        _, model = model_for(shape)
        with torch.no_grad():
            fast = model.forward(tokens)[-1]
        assert_close(fast, naive_logits(model, tokens), 1e-10, shape)


@test
def sliding_window_matches_naive():
    tokens = [5, 17, 3, 99, 42, 7, 250, 11, 31]
    model = reload_with("mistral_f16", {"sliding_window": 3})
    with torch.no_grad():
        fast = model.forward(tokens)[-1]
    assert_close(fast, naive_logits(model, tokens), 1e-10, "window 3")
    full = model_for("mistral_f16")[1].forward(tokens)[-1]
    assert float((fast - full).abs().max()) > 1e-3, "window had no effect"


@test
def kv_cache_generation_equals_full_recompute():
    for shape in make_random_model.SHAPES:
        _, model = model_for(shape)
        prompt = [(7 * i + 3) % model.config.vocab_size for i in range(11)]
        a = model.generate(prompt, 12, ignore_eos=True, use_cache=True)
        b = model.generate(prompt, 12, ignore_eos=True, use_cache=False)
        assert a["token_ids"] == b["token_ids"], shape
        for ra, rb in zip(a["logits"], b["logits"]):
            assert_close(ra, rb, 1e-10, shape)


@test
def chunked_prefill_equals_single_prefill():
    _, model = model_for("llama3_rope_f32")
    tokens = [(11 * i + 1) % model.config.vocab_size for i in range(20)]
    with torch.no_grad():
        full = model.forward(tokens)
        cache = KVCache(model.config.num_layers)
        part1 = model.forward(tokens[:7], 0, cache)
        part2 = model.forward(tokens[7:], 7, cache)
    assert_close(torch.cat([part1, part2]), full, 1e-10, "chunked")


@test
def gqa_equals_mha_with_repeated_kv_weights():
    for shape in ["llama_gqa_f32", "qwen2_bias_f32"]:
        _, gqa = model_for(shape)
        c = gqa.config
        n_rep, D = c.num_heads // c.num_kv_heads, c.head_dim

        def expand(weights):
            for name in list(weights):
                if ".k_proj." in name or ".v_proj." in name:
                    t = weights[name]
                    t = t.view(c.num_kv_heads, D, *t.shape[1:])
                    weights[name] = t.repeat_interleave(n_rep, dim=0).reshape(
                        c.num_heads * D, *t.shape[2:])

        mha = reload_with(shape, {"num_key_value_heads": c.num_heads,
                                  "head_dim": D}, expand)
        assert mha.config.num_kv_heads == mha.config.num_heads
        tokens = [3, 1, 4, 1, 5, 9, 2, 6]
        with torch.no_grad():
            assert_close(mha.forward(tokens), gqa.forward(tokens), 1e-12, shape)


@test
def tied_embedding_equals_explicit_copy():
    _, tied = model_for("llama_gqa_f32")

    def add_head(weights):
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"].clone()

    untied = reload_with("llama_gqa_f32", {"tie_word_embeddings": False}, add_head)
    assert untied.lm_head is not untied.weights["model.embed_tokens.weight"]
    tokens = [1, 2, 3, 4, 5]
    with torch.no_grad():
        assert torch.equal(untied.forward(tokens), tied.forward(tokens))
    # tie_word_embeddings=true wins over a present lm_head.weight (as in HF)
    retied = reload_with("llama_mha_f32", {"tie_word_embeddings": True})
    assert retied.lm_head is retied.weights["model.embed_tokens.weight"]


@test
def rope_scaling_changes_results():
    for shape in ["llama3_rope_f32", "linear_rope_f32"]:
        _, scaled = model_for(shape)
        plain = reload_with(shape, {"rope_scaling": None})
        tokens = [10, 20, 30, 40, 50, 60]
        with torch.no_grad():
            a, b = scaled.forward(tokens), plain.forward(tokens)
        assert torch.equal(a[0], b[0]), "position 0 must not depend on rope"
        assert float((a[-1] - b[-1]).abs().max()) > 0.1, shape


@test
def cli_output_format_and_eos_stop():
    d, model = model_for("llama_bf16")
    prompt = [1, 9, 33]
    first = model.generate(prompt, 1, ignore_eos=True)["token_ids"][0]
    script = os.path.join(HERE, "llama_reference.py")
    logits_path = os.path.join(TMP, "logits.json")
    out = subprocess.run([sys.executable, script, "--model", d, "--prompt-ids",
                          "1,9,33", "--max-tokens", "5", "--ignore-eos",
                          "--logits-out", logits_path],
                         check=True, capture_output=True, text=True).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    res = json.loads(lines[0])
    assert set(res) == {"prompt_token_ids", "token_ids", "finish_reason"}
    assert res["prompt_token_ids"] == prompt and len(res["token_ids"]) == 5
    assert res["finish_reason"] == "length" and res["token_ids"][0] == first
    with open(logits_path) as f:
        rows = json.load(f)
    assert len(rows) == 5 and all(len(r) == model.config.vocab_size for r in rows)
    assert [int(np.argmax(r)) for r in rows] == res["token_ids"]

    # a copy whose eos list contains the first greedy token stops at once
    d2 = os.path.join(TMP, "eos_copy")
    make_random_model.make_random_model("llama_bf16", d2)
    with open(os.path.join(d2, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [100000, first]}, f)
    out = subprocess.run([sys.executable, script, "--model", d2, "--prompt-ids",
                          "1,9,33", "--max-tokens", "5"],
                         check=True, capture_output=True, text=True).stdout
    res = json.loads(out)
    assert res["token_ids"] == [first] and res["finish_reason"] == "stop", res


def main():
    only = None
    if len(sys.argv) == 3 and sys.argv[1] == "-k":
        only = sys.argv[2]
    passed = failed = 0
    for fn in TESTS:
        if only and only not in fn.__name__:
            continue
        try:
            fn()
        except Exception:  # noqa: BLE001
            failed += 1
            print("FAIL %s" % fn.__name__)
            traceback.print_exc()
        else:
            passed += 1
            print("ok   %s" % fn.__name__)
        sys.stdout.flush()
    if not os.environ.get("KEEP_REFERENCE_TMP"):
        shutil.rmtree(TMP, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
