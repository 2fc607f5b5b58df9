#!/usr/bin/python3
"""Independent float64 PyTorch reference of the Llama family
(LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM), following the
HuggingFace transformers semantics.  Clarity over speed.

Usage:
  /usr/bin/python3 tests/reference/llama_reference.py --model DIR \
      --prompt-ids 1,2,3 --max-tokens N [--ignore-eos] [--logits-out FILE] \
      [--no-kv-cache] [--threads T]

Prints one JSON line:
  {"prompt_token_ids": [...], "token_ids": [...], "finish_reason": "length"|"stop"}
token_ids are the generated tokens only; on "stop" the eos token that ended
generation is the last element.  --logits-out writes a JSON array with one
row (list of vocab_size floats) per generated token: the logits from which
that token was picked by argmax.

Everything is computed in float64: F32/F16/BF16 weights are converted
exactly to float64 at load time.
"""

import argparse
import json
import math
import os
import sys

import torch

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

DTYPE = torch.float64

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM",
                           "Qwen2ForCausalLM")


# --------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------

class Config:
    """The fields of config.json that the forward pass needs, with HF defaults."""

    def __init__(self, cfg, generation_cfg=None):
        archs = cfg.get("architectures") or []
        arch = archs[0] if archs else None
        if arch is None:
            arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                    "qwen2": "Qwen2ForCausalLM"}.get(cfg.get("model_type"))
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ValueError("unsupported architecture %r" % (arch,))
        self.architecture = arch
        self.vocab_size = int(cfg["vocab_size"])
        self.hidden_size = int(cfg["hidden_size"])
        self.intermediate_size = int(cfg["intermediate_size"])
        self.num_layers = int(cfg["num_hidden_layers"])
        self.num_heads = int(cfg["num_attention_heads"])
        kv = cfg.get("num_key_value_heads")
        self.num_kv_heads = int(kv) if kv is not None else self.num_heads
        hd = cfg.get("head_dim")
        self.head_dim = int(hd) if hd is not None else self.hidden_size // self.num_heads
        if self.num_heads % self.num_kv_heads != 0:
            raise ValueError("num_attention_heads must be a multiple of "
                             "num_key_value_heads")
        if self.head_dim % 2 != 0:
            raise ValueError("head_dim must be even for RoPE")
        self.rms_norm_eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.rope_theta = float(cfg.get("rope_theta", 10000.0))
        self.rope_scaling = cfg.get("rope_scaling")
        self.tie_word_embeddings = bool(cfg.get("tie_word_embeddings", False))
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError("unsupported hidden_act %r" % (act,))

        # which linear layers carry a bias
        if arch == "Qwen2ForCausalLM":
            self.qkv_bias, self.o_bias, self.mlp_bias = True, False, False
        elif arch == "LlamaForCausalLM":
            ab = bool(cfg.get("attention_bias", False))
            self.qkv_bias, self.o_bias = ab, ab
            self.mlp_bias = bool(cfg.get("mlp_bias", False))
        else:  # Mistral
            self.qkv_bias, self.o_bias, self.mlp_bias = False, False, False

        # sliding window attention: a query at position p attends to keys at
        # positions k with p - window < k <= p.
        self.sliding_window = None
        if arch == "MistralForCausalLM":
            sw = cfg.get("sliding_window")
            self.sliding_window = int(sw) if sw is not None else None
        elif arch == "Qwen2ForCausalLM" and cfg.get("use_sliding_window", False):
            raise NotImplementedError("Qwen2 use_sliding_window=true is not "
                                      "implemented by the reference")

        # eos / bos: generation_config.json wins over config.json (as HF
        # generate() does); either may be an int or a list of ints.
        def ids(value):
            if value is None:
                return []
            if isinstance(value, list):
                return [int(v) for v in value]
            return [int(value)]

        gen = generation_cfg or {}
        eos = gen.get("eos_token_id", cfg.get("eos_token_id"))
        bos = gen.get("bos_token_id", cfg.get("bos_token_id"))
        self.eos_token_ids = ids(eos)
        self.bos_token_ids = ids(bos)


# --------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------

def rms_norm(x, weight, eps):
    """x * rsqrt(mean(x^2) + eps) * weight, over the last dimension."""
    variance = x.pow(2).mean(dim=-1, keepdim=True)
    return x * torch.rsqrt(variance + eps) * weight


def linear(x, weight, bias=None):
    """y = x W^T (+ b); weight has shape [out_features, in_features]."""
    y = x @ weight.t()
    if bias is not None:
        y = y + bias
    return y


def quantize_tokens_int8(x):
    """x [T, K] float64 -> per-row symmetric int8 dequantized, in float64,
    the float32 arithmetic of the engine's activation quantizer."""
    x32 = x.to(torch.float32)
    scale = x32.abs().amax(dim=-1, keepdim=True) / torch.tensor(127.0, dtype=torch.float32)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(x32 / safe), -127, 127)  # torch.round: half to even
    q = torch.where(scale > 0, q, torch.zeros_like(q))
    return q.to(torch.float64) * scale.to(torch.float64)


def silu(x):
    return x * torch.sigmoid(x)


def rope_inv_freq(head_dim, theta, rope_scaling=None):
    """inv_freq[i] = 1 / theta^(2i/d), i = 0..d/2-1, then the rope_scaling
    adjustment (float64)."""
    exponents = torch.arange(0, head_dim, 2, dtype=DTYPE) / head_dim
    inv_freq = 1.0 / (theta ** exponents)
    if not rope_scaling:
        return inv_freq
    rope_type = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        # positions / factor  <=>  inv_freq / factor
        return inv_freq / float(rope_scaling["factor"])
    if rope_type == "llama3":
        return llama3_scale_inv_freq(
            inv_freq,
            factor=float(rope_scaling["factor"]),
            low_freq_factor=float(rope_scaling["low_freq_factor"]),
            high_freq_factor=float(rope_scaling["high_freq_factor"]),
            original_max_position_embeddings=float(
                rope_scaling["original_max_position_embeddings"]))
    raise NotImplementedError("rope_scaling type %r is not implemented" % rope_type)


def llama3_scale_inv_freq(inv_freq, factor, low_freq_factor, high_freq_factor,
                          original_max_position_embeddings):
    """Llama 3.1 frequency-dependent RoPE scaling, one frequency at a time:
      wavelen = 2*pi / f
      wavelen <  L / high_freq_factor  (high frequency): f unchanged
      wavelen >  L / low_freq_factor   (low frequency):  f / factor
      otherwise (medium): s = (L / wavelen - low) / (high - low),
                          f' = (1 - s) * f / factor + s * f
    with L = original_max_position_embeddings."""
    L = original_max_position_embeddings
    low_freq_wavelen = L / low_freq_factor
    high_freq_wavelen = L / high_freq_factor
    out = []
    for f in inv_freq.tolist():
        wavelen = 2.0 * math.pi / f
        if wavelen < high_freq_wavelen:
            out.append(f)
        elif wavelen > low_freq_wavelen:
            out.append(f / factor)
        else:
            s = (L / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append((1.0 - s) * f / factor + s * f)
    return torch.tensor(out, dtype=DTYPE)


def rope_cos_sin(positions, inv_freq):
    """positions [T] -> cos, sin [T, head_dim] in HF layout: the angle table
    pos * inv_freq [T, d/2] concatenated with itself."""
    angles = positions.to(DTYPE)[:, None] * inv_freq[None, :]
    emb = torch.cat([angles, angles], dim=-1)
    return torch.cos(emb), torch.sin(emb)


def rotate_half(x):
    """[x1, x2] -> [-x2, x1] with x1 = x[..., :d/2], x2 = x[..., d/2:]."""
    half = x.shape[-1] // 2
    x1 = x[..., :half]
    x2 = x[..., half:]
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x, cos, sin):
    """x [heads, T, d], cos/sin [T, d]: element pairs (i, i + d/2) rotate by
    the angle pos * inv_freq[i]."""
    return x * cos[None, :, :] + rotate_half(x) * sin[None, :, :]


def repeat_kv(x, n_rep):
    """[kv_heads, S, d] -> [kv_heads * n_rep, S, d]; kv head j serves query
    heads j*n_rep .. (j+1)*n_rep - 1."""
    if n_rep == 1:
        return x
    return x.repeat_interleave(n_rep, dim=0)


# --------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------

class KVCache:
    """Per-layer keys/values after RoPE: lists of [kv_heads, S, head_dim]."""

    def __init__(self, num_layers):
        self.keys = [None] * num_layers
        self.values = [None] * num_layers

    @property
    def length(self):
        return 0 if self.keys[0] is None else self.keys[0].shape[1]


class LlamaReference:
    def __init__(self, config, weights):
        """config: Config; weights: {HF tensor name: float64 torch tensor}."""
        self.config = config
        self.weights = weights
        c = config
        self.inv_freq = rope_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling)
        # True: what the engine's --dtype bfloat16 computes: every linear
        # layer's input is rounded to fp32 and then to BF16 (nearest even)
        # before the float64 product; weights and everything else unchanged.
        self.bf16_matmul_inputs = False
        # ids of the weight tensors whose layers run W8A8 in the engine (see
        # int8_activations_for): their inputs are quantized per token first.
        self._int8_input_ids = set()
        self._check_weights()

    def int8_activations_for(self, weight_names):
        """The named linear layers' inputs go through the engine's per-token
        int8 quantization (kernels::QuantizeRowInt8): in float32, scale =
        max|x| / 127, q = round-half-even(x / scale) clamped to +-127, and the
        layer sees q * scale (then multiplies in float64 as usual)."""
        self._int8_input_ids = {id(self.weights[n]) for n in weight_names}

    def _linear(self, x, weight, bias=None):
        if self.bf16_matmul_inputs:
            x = x.to(torch.float32).to(torch.bfloat16).to(torch.float64)
        if id(weight) in self._int8_input_ids:
            x = quantize_tokens_int8(x)
        return linear(x, weight, bias)

    # -- loading ---------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        gen_cfg = None
        gen_path = os.path.join(model_dir, "generation_config.json")
        if os.path.exists(gen_path):
            with open(gen_path) as f:
                gen_cfg = json.load(f)
        stored = safetensors_io.load_model_dir(model_dir)
        weights = {}
        for name, (dtype, arr) in stored.items():
            weights[name] = torch.from_numpy(safetensors_io.to_float64(dtype, arr))
        return cls(Config(cfg, gen_cfg), weights)

    def _check_weights(self):
        c = self.config
        H, KV, D, E, I = (c.num_heads, c.num_kv_heads, c.head_dim,
                          c.hidden_size, c.intermediate_size)
        expected = {"model.embed_tokens.weight": (c.vocab_size, E),
                    "model.norm.weight": (E,)}
        for i in range(c.num_layers):
            p = "model.layers.%d." % i
            expected[p + "input_layernorm.weight"] = (E,)
            expected[p + "post_attention_layernorm.weight"] = (E,)
            expected[p + "self_attn.q_proj.weight"] = (H * D, E)
            expected[p + "self_attn.k_proj.weight"] = (KV * D, E)
            expected[p + "self_attn.v_proj.weight"] = (KV * D, E)
            expected[p + "self_attn.o_proj.weight"] = (E, H * D)
            if c.qkv_bias:
                expected[p + "self_attn.q_proj.bias"] = (H * D,)
                expected[p + "self_attn.k_proj.bias"] = (KV * D,)
                expected[p + "self_attn.v_proj.bias"] = (KV * D,)
            if c.o_bias:
                expected[p + "self_attn.o_proj.bias"] = (E,)
            expected[p + "mlp.gate_proj.weight"] = (I, E)
            expected[p + "mlp.up_proj.weight"] = (I, E)
            expected[p + "mlp.down_proj.weight"] = (E, I)
            if c.mlp_bias:
                expected[p + "mlp.gate_proj.bias"] = (I,)
                expected[p + "mlp.up_proj.bias"] = (I,)
                expected[p + "mlp.down_proj.bias"] = (E,)
        for name, shape in expected.items():
            if name not in self.weights:
                raise ValueError("missing tensor %s" % name)
            if tuple(self.weights[name].shape) != shape:
                raise ValueError("tensor %s has shape %s, expected %s"
                                 % (name, tuple(self.weights[name].shape), shape))
        # the output projection: lm_head.weight unless tied or absent
        if c.tie_word_embeddings or "lm_head.weight" not in self.weights:
            self.lm_head = self.weights["model.embed_tokens.weight"]
        else:
            self.lm_head = self.weights["lm_head.weight"]
            if tuple(self.lm_head.shape) != (c.vocab_size, E):
                raise ValueError("lm_head.weight has shape %s"
                                 % (tuple(self.lm_head.shape),))
        unused = set(self.weights) - set(expected) - {"lm_head.weight"}
        if unused:
            sys.stderr.write("llama_reference: ignoring unexpected tensors: %s\n"
                             % sorted(unused))

    def w(self, name):
        return self.weights.get(name)

    # -- forward ---------------------------------------------------------
    def attention(self, layer, x, positions, cache):
        c = self.config
        p = "model.layers.%d.self_attn." % layer
        T = x.shape[0]
        q = self._linear(x, self.w(p + "q_proj.weight"), self.w(p + "q_proj.bias"))
        k = self._linear(x, self.w(p + "k_proj.weight"), self.w(p + "k_proj.bias"))
        v = self._linear(x, self.w(p + "v_proj.weight"), self.w(p + "v_proj.bias"))
        # [T, heads*d] -> [heads, T, d]
        q = q.view(T, c.num_heads, c.head_dim).transpose(0, 1)
        k = k.view(T, c.num_kv_heads, c.head_dim).transpose(0, 1)
        v = v.view(T, c.num_kv_heads, c.head_dim).transpose(0, 1)

        cos, sin = rope_cos_sin(positions, self.inv_freq)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)

        if cache is not None:
            if cache.keys[layer] is not None:
                k = torch.cat([cache.keys[layer], k], dim=1)
                v = torch.cat([cache.values[layer], v], dim=1)
            cache.keys[layer] = k
            cache.values[layer] = v
        S = k.shape[1]
        key_positions = torch.arange(S)

        n_rep = c.num_heads // c.num_kv_heads
        k = repeat_kv(k, n_rep)
        v = repeat_kv(v, n_rep)

        scores = (q @ k.transpose(1, 2)) / math.sqrt(c.head_dim)  # [H, T, S]
        masked = key_positions[None, :] > positions[:, None]        # [T, S]
        if c.sliding_window is not None:
            masked = masked | (positions[:, None] - key_positions[None, :]
                               >= c.sliding_window)
        scores = scores.masked_fill(masked[None, :, :], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out = probs @ v                                             # [H, T, d]
        out = out.transpose(0, 1).reshape(T, c.num_heads * c.head_dim)
        return self._linear(out, self.w(p + "o_proj.weight"), self.w(p + "o_proj.bias"))

    def mlp(self, layer, x):
        p = "model.layers.%d.mlp." % layer
        gate = self._linear(x, self.w(p + "gate_proj.weight"), self.w(p + "gate_proj.bias"))
        up = self._linear(x, self.w(p + "up_proj.weight"), self.w(p + "up_proj.bias"))
        return self._linear(silu(gate) * up, self.w(p + "down_proj.weight"),
                      self.w(p + "down_proj.bias"))

    def forward(self, token_ids, start_pos=0, cache=None):
        """token_ids: list of T ints at positions start_pos .. start_pos+T-1.
        With a cache, start_pos must equal cache.length.  -> logits [T, V]."""
        c = self.config
        if cache is not None and start_pos != cache.length:
            raise ValueError("start_pos %d != cache length %d"
                             % (start_pos, cache.length))
        ids = torch.tensor(token_ids, dtype=torch.long)
        if ids.numel() and (ids.min() < 0 or ids.max() >= c.vocab_size):
            raise ValueError("token id out of range [0, %d)" % c.vocab_size)
        positions = torch.arange(start_pos, start_pos + len(token_ids))
        x = self.weights["model.embed_tokens.weight"][ids]           # [T, E]
        for i in range(c.num_layers):
            p = "model.layers.%d." % i
            h = rms_norm(x, self.w(p + "input_layernorm.weight"), c.rms_norm_eps)
            x = x + self.attention(i, h, positions, cache)
            h = rms_norm(x, self.w(p + "post_attention_layernorm.weight"),
                         c.rms_norm_eps)
            x = x + self.mlp(i, h)
        x = rms_norm(x, self.weights["model.norm.weight"], c.rms_norm_eps)
        return self._linear(x, self.lm_head)

    # -- generation ------------------------------------------------------
    @staticmethod
    def argmax(row):
        """Index of the maximum; the lowest index on ties."""
        best = row.max()
        return int(torch.nonzero(row == best)[0, 0])

    def generate(self, prompt_ids, max_new_tokens, ignore_eos=False,
                 use_cache=True):
        """Greedy decoding.  -> dict(token_ids, logits (list of [V] float64
        tensors), finish_reason)."""
        if not prompt_ids:
            raise ValueError("empty prompt")
        tokens = list(prompt_ids)
        generated, rows = [], []
        finish = "length"
        cache = KVCache(self.config.num_layers) if use_cache else None
        with torch.no_grad():
            for step in range(max_new_tokens):
                if use_cache:
                    if step == 0:
                        logits = self.forward(tokens, 0, cache)
                    else:
                        logits = self.forward(tokens[-1:], len(tokens) - 1, cache)
                else:
                    logits = self.forward(tokens, 0, None)
                row = logits[-1]
                tok = self.argmax(row)
                rows.append(row)
                generated.append(tok)
                tokens.append(tok)
                if not ignore_eos and tok in self.config.eos_token_ids:
                    finish = "stop"
                    break
        return {"token_ids": generated, "logits": rows, "finish_reason": finish}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="HF model directory")
    ap.add_argument("--prompt-ids", required=True,
                    help="comma-separated prompt token ids")
    ap.add_argument("--max-tokens", type=int, required=True)
    ap.add_argument("--ignore-eos", action="store_true")
    ap.add_argument("--logits-out", help="write the logits rows as JSON here")
    ap.add_argument("--no-kv-cache", action="store_true",
                    help="recompute the full sequence for every token")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: these models are "
                         "tiny and extra threads only contend on a busy machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))

    prompt = [int(t) for t in args.prompt_ids.split(",") if t.strip() != ""]
    model = LlamaReference.from_pretrained(args.model)
    result = model.generate(prompt, args.max_tokens, ignore_eos=args.ignore_eos,
                            use_cache=not args.no_kv_cache)
    if args.logits_out:
        with open(args.logits_out, "w") as f:
            json.dump([row.tolist() for row in result["logits"]], f)
            f.write("\n")
    print(json.dumps({"prompt_token_ids": prompt,
                      "token_ids": result["token_ids"],
                      "finish_reason": result["finish_reason"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
