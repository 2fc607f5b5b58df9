#!/usr/bin/python3
"""Trains the bundled `tandem-shakespeare` model: a small Llama-architecture
causal LM (RMSNorm, RoPE with HF rotate_half convention, GQA, SwiGLU, no biases,
tied embeddings) on Tiny Shakespeare with a byte-level BPE tokenizer trained by
bpe_tokenizer.py, and writes a complete HuggingFace model directory:

  config.json  generation_config.json  model.safetensors (BF16)
  tokenizer.json  tokenizer_config.json

Data split: the first 90% of the file (by characters) trains both the
tokenizer and the model; the last 10% is the held-out evaluation split.

Training is seeded and deterministic on CPU (fixed thread count, fixed data
order drawn from a seeded generator).

  /usr/bin/python3 tools/train/train_model.py --out models/tandem-shakespeare
  /usr/bin/python3 tools/train/train_model.py --bench 5   # measure step time only
"""

import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bpe_tokenizer import ByteBPETokenizer, train_bpe  # noqa: E402


# --------------------------------------------------------------------------- model
#
# Speed note: Debian's torch links the reference (netlib) BLAS, so plain fp32
# matmuls run at ~2 GFLOP/s here. Training therefore runs under CPU autocast
# (bfloat16 matmuls through oneDNN, fp32 master weights/optimizer/norms/softmax/
# loss), and fp32 inference routes the projections through a 1x1 convolution
# (oneDNN fp32), which computes exactly x @ W^T.


class Linear(nn.Linear):
    def forward(self, x):
        if torch.is_autocast_cpu_enabled():
            return F.linear(x, self.weight)
        shp = x.shape
        y = F.conv2d(x.reshape(-1, shp[-1], 1, 1), self.weight.unsqueeze(-1).unsqueeze(-1))
        return y.reshape(*shp[:-1], self.weight.shape[0])


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_cos_sin(seq_len, head_dim, theta, device=None):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    pos = torch.arange(seq_len, dtype=torch.float32)
    freqs = torch.outer(pos, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.nh = c["num_attention_heads"]
        self.nkv = c["num_key_value_heads"]
        self.hd = c["head_dim"]
        d = c["hidden_size"]
        self.q_proj = Linear(d, self.nh * self.hd, bias=False)
        self.k_proj = Linear(d, self.nkv * self.hd, bias=False)
        self.v_proj = Linear(d, self.nkv * self.hd, bias=False)
        self.o_proj = Linear(self.nh * self.hd, d, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.nkv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv
        if rep > 1:  # HF repeat_kv: kv head j serves query heads j*rep .. j*rep+rep-1
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.hd))
        att = att.float().masked_fill(mask, float("-inf"))
        att = att.softmax(dim=-1).to(v.dtype)
        y = (att @ v).transpose(1, 2).reshape(b, t, self.nh * self.hd)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, f = c["hidden_size"], c["intermediate_size"]
        self.gate_proj = Linear(d, f, bias=False)
        self.up_proj = Linear(d, f, bias=False)
        self.down_proj = Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = MLP(c)

        self.drop = nn.Dropout(c.get("dropout", 0.0))  # training only; identity in eval

    def forward(self, x, cos, sin, mask):
        x = x + self.drop(self.self_attn(self.input_layernorm(x), cos, sin, mask))
        return x + self.drop(self.mlp(self.post_attention_layernorm(x)))


class Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([Block(c) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class LlamaForCausalLM(nn.Module):
    """Parameter names match HF (model.embed_tokens.weight, model.layers.{i}...);
    lm_head is tied to the embedding."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = Inner(c)
        cos, sin = rope_cos_sin(c["max_position_embeddings"], c["head_dim"], c["rope_theta"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def init_weights(self, std=0.02):
        n = self.c["num_hidden_layers"]
        for name, p in self.named_parameters():
            if p.dim() == 2:
                s = std / math.sqrt(2 * n) if name.endswith(("o_proj.weight", "down_proj.weight")) else std
                nn.init.normal_(p, mean=0.0, std=s)
            else:
                nn.init.ones_(p)

    def forward(self, ids):
        b, t = ids.shape
        x = self.model.embed_tokens(ids)
        cos, sin = self.cos[:t], self.sin[:t]
        mask = torch.ones(t, t, dtype=torch.bool).triu(1)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        x = self.model.norm(x)
        if torch.is_autocast_cpu_enabled():
            return F.linear(x, self.model.embed_tokens.weight)
        shp = x.shape
        w = self.model.embed_tokens.weight
        return F.conv2d(x.reshape(-1, shp[-1], 1, 1), w.unsqueeze(-1).unsqueeze(-1)).reshape(*shp[:-1], w.shape[0])


# --------------------------------------------------------------------------- safetensors

def write_safetensors_bf16(path, tensors):
    """Minimal safetensors writer: 8-byte LE header length, JSON header (padded
    with spaces to a multiple of 8), then the raw data; tensors in sorted order."""
    header = {}
    blobs = []
    off = 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.bfloat16).contiguous()
        raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for raw in blobs:
            f.write(raw)


def read_safetensors(path):
    """Reads a BF16/F32 safetensors file into float32 torch tensors."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        if info["dtype"] == "BF16":
            u16 = np.frombuffer(data[a:b], dtype="<u2").astype(np.uint32) << 16
            arr = u16.view(np.float32)
        elif info["dtype"] == "F32":
            arr = np.frombuffer(data[a:b], dtype="<f4")
        else:
            raise ValueError(info["dtype"])
        out[name] = torch.from_numpy(arr.reshape(info["shape"]).copy())
    return out


# --------------------------------------------------------------------------- data

def line_start_positions(ids, tok):
    """Token positions that begin a line (previous token's text ends in '\\n')."""
    ends_nl = np.zeros(tok.vocab_size, dtype=bool)
    for i in range(len(tok.vocab)):
        ends_nl[i] = tok.id_to_tok[i].endswith("\u010a")  # byte-level '\n'
    arr = np.asarray(ids)
    starts = np.nonzero(ends_nl[arr[:-1]])[0] + 1
    return np.concatenate([[0], starts])


@torch.no_grad()
def evaluate(model, eval_ids, ctx, bos_id, batch=16):
    """Mean CE over every held-out token, non-overlapping windows of `ctx`
    targets, each window's input being BOS + the preceding targets."""
    model.eval()
    total, count = 0.0, 0
    chunks = []
    for i in range(0, len(eval_ids), ctx):
        y = eval_ids[i:i + ctx]
        x = [bos_id] + y[:-1]
        chunks.append((x, y))
    for j in range(0, len(chunks), batch):
        group = chunks[j:j + batch]
        L = max(len(y) for _, y in group)
        for x, y in group:
            if len(y) != L:  # last short chunk on its own
                logits = model(torch.tensor([x]))
                total += F.cross_entropy(logits[0].float(), torch.tensor(y), reduction="sum").item()
                count += len(y)
        xs = [x for x, y in group if len(y) == L]
        ys = [y for x, y in group if len(y) == L]
        if xs:
            logits = model(torch.tensor(xs))
            total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), torch.tensor(ys).reshape(-1),
                                     reduction="sum").item()
            count += len(xs) * L
    model.train()
    return total, count


@torch.no_grad()
def generate(model, tok, prompt, max_new_tokens, greedy, temperature=0.8, top_p=0.95, seed=0):
    model.eval()
    ids = tok.encode(prompt)  # BOS prepended
    g = torch.Generator().manual_seed(seed)
    ctx = model.c["max_position_embeddings"]
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ids[-ctx:]]))[0, -1].double()
        if greedy:
            nxt = int(logits.argmax())
        else:
            probs = (logits / temperature).softmax(-1)
            sp, si = probs.sort(descending=True)
            cum = sp.cumsum(-1)
            keep = (cum - sp) < top_p
            sp = sp * keep
            sp = sp / sp.sum()
            nxt = int(si[torch.multinomial(sp, 1, generator=g)])
        if nxt == tok.eos_id:
            break
        ids.append(nxt)
    return tok.decode(ids)


# --------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="/work/shared/data/tinyshakespeare.txt")
    ap.add_argument("--out", default="models/tandem-shakespeare")
    ap.add_argument("--workdir", default="/tmp/tandem-shakespeare-train", help="logs/checkpoints (outside the repo)")
    ap.add_argument("--vocab-size", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=768)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1, help="residual dropout, training only")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=300)
    ap.add_argument("--bench", type=int, default=0, help="only time this many steps")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.workdir, exist_ok=True)

    with open(args.data, encoding="utf-8") as f:
        text = f.read()
    split = int(len(text) * 0.9)
    train_text, eval_text = text[:split], text[split:]

    t0 = time.time()
    vocab, merges = train_bpe(train_text, args.vocab_size)
    tok = ByteBPETokenizer(vocab, merges)
    train_ids = tok.encode(train_text, add_special_tokens=False)
    eval_ids = tok.encode(eval_text, add_special_tokens=False)
    assert tok.decode(train_ids) == train_text and tok.decode(eval_ids) == eval_text
    print(f"tokenizer: vocab {tok.vocab_size}, train {len(train_ids)} tok / {len(train_text)} chars, "
          f"eval {len(eval_ids)} tok / {len(eval_text)} chars ({time.time() - t0:.1f}s)", flush=True)

    cfg = {
        "vocab_size": tok.vocab_size,
        "hidden_size": args.hidden,
        "intermediate_size": args.ffn,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
        "head_dim": args.hidden // args.heads,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": args.ctx,
    }
    model = LlamaForCausalLM(dict(cfg, dropout=args.dropout))
    model.init_weights()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} params ({n_params * 2 / 1e6:.2f} MB bf16)", flush=True)

    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        p = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * min(1.0, p)))

    # Data: each window starts at a line start, BOS at position 0.
    starts = line_start_positions(train_ids, tok)
    starts = starts[starts + args.ctx <= len(train_ids)]
    train_arr = torch.tensor(train_ids, dtype=torch.long)
    gen = torch.Generator().manual_seed(args.seed)
    T = args.ctx

    def get_batch():
        idx = torch.randint(len(starts), (args.batch,), generator=gen)
        s = torch.from_numpy(starts[idx.numpy()])
        y = torch.stack([train_arr[i:i + T] for i in s.tolist()])
        x = torch.cat([torch.full((args.batch, 1), tok.bos_id, dtype=torch.long), y[:, :-1]], dim=1)
        return x, y

    steps = args.bench if args.bench else args.steps
    log = open(os.path.join(args.workdir, "train_log.txt"), "a")
    t_train = time.time()
    model.train()
    for step in range(steps):
        for gparam in opt.param_groups:
            gparam["lr"] = lr_at(step)
        x, y = get_batch()
        with torch.cpu.amp.autocast(dtype=torch.bfloat16):
            logits = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0 or step == steps - 1:
            el = time.time() - t_train
            msg = f"step {step} loss {loss.item():.4f} lr {lr_at(step):.2e} elapsed {el:.0f}s ({el / (step + 1):.3f}s/step)"
            print(msg, flush=True)
            log.write(msg + "\n")
            log.flush()
        if not args.bench and args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < steps:
            with torch.cpu.amp.autocast(dtype=torch.bfloat16):
                tot, cnt = evaluate(model, eval_ids, T, tok.bos_id)
            msg = f"eval (bf16 autocast) step {step + 1}: {tot / cnt:.4f} nats/token, {tot / math.log(2) / len(eval_text):.4f} bits/char"
            print(msg, flush=True)
            log.write(msg + "\n")
            log.flush()
            torch.save(model.state_dict(), os.path.join(args.workdir, "ckpt.pt"))
    train_time = time.time() - t_train
    if args.bench:
        print(f"bench: {train_time / steps:.3f}s/step, {args.batch * T * steps / train_time:.0f} tok/s")
        return

    # ---- write the HF directory
    os.makedirs(args.out, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if k.startswith("model.")}
    write_safetensors_bf16(os.path.join(args.out, "model.safetensors"), state)
    tok.save(args.out, model_max_length=args.ctx)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg["vocab_size"],
        "hidden_size": cfg["hidden_size"],
        "intermediate_size": cfg["intermediate_size"],
        "num_hidden_layers": cfg["num_hidden_layers"],
        "num_attention_heads": cfg["num_attention_heads"],
        "num_key_value_heads": cfg["num_key_value_heads"],
        "head_dim": cfg["head_dim"],
        "hidden_act": "silu",
        "rms_norm_eps": cfg["rms_norm_eps"],
        "rope_theta": cfg["rope_theta"],
        "rope_scaling": None,
        "max_position_embeddings": cfg["max_position_embeddings"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "tie_word_embeddings": True,
        "bos_token_id": tok.bos_id,
        "eos_token_id": tok.eos_id,
        "pad_token_id": tok.pad_id,
        "torch_dtype": "bfloat16",
        "use_cache": True,
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    gen_cfg = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id,
               "do_sample": True, "temperature": 0.8, "top_p": 0.95}
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump(gen_cfg, f, indent=2)
        f.write("\n")

    # ---- evaluate and sample from the written BF16 weights, in float32
    model32 = LlamaForCausalLM(cfg)
    missing, unexpected = model32.load_state_dict(read_safetensors(os.path.join(args.out, "model.safetensors")),
                                                  strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    tok2 = ByteBPETokenizer.load(args.out)
    assert tok2.encode(eval_text) == [tok.bos_id] + eval_ids
    tot32, cnt = evaluate(model, eval_ids, T, tok.bos_id)
    totbf, _ = evaluate(model32, eval_ids, T, tok.bos_id)
    results = {
        "params": n_params,
        "train_time_s": round(train_time, 1),
        "steps": args.steps, "batch": args.batch, "ctx": T,
        "train_tokens": len(train_ids), "eval_tokens": cnt, "eval_chars": len(eval_text),
        "eval_bytes": len(eval_text.encode("utf-8")),
        "eval_nats_per_token_fp32": tot32 / cnt,
        "eval_nats_per_token_bf16": totbf / cnt,
        "eval_bits_per_char_bf16": totbf / math.log(2) / len(eval_text),
        "eval_bits_per_byte_bf16": totbf / math.log(2) / len(eval_text.encode("utf-8")),
        "samples": {},
    }
    for prompt in ["ROMEO:", "First Citizen:"]:
        results["samples"][prompt + " (greedy)"] = generate(model32, tok2, prompt, 80, greedy=True)
        results["samples"][prompt + " (sampled, T=0.8, top_p=0.95, seed 0)"] = generate(
            model32, tok2, prompt, 80, greedy=False, seed=0)
    results["greedy_ids_ROMEO"] = tok2.encode("ROMEO:")
    with open(os.path.join(args.workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2), flush=True)


if __name__ == "__main__":
    main()
