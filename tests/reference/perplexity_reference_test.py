#!/usr/bin/python3
"""`tandem perplexity` against the independent float64 PyTorch reference
(llama_reference.py) on the bundled model and the held-out end of Tiny
Shakespeare (the last 10%, as the model's README evaluates it).

For each case the tool writes the token ids it scored (--token-ids-out);
the reference cuts them into the same non-overlapping windows, runs each
from scratch in float64 and scores every token of a window but its first.
Checked: windows and scored tokens exactly; perplexity and mean NLL within
a relative 1e-4 in fp32 (the issue's bar), 1e-3 with --dtype bfloat16
against the reference that rounds every matmul input to BF16 the same way;
the chunked steps inside a window (--step-tokens) change nothing; usage
errors exit 2 with a message.

  perplexity_reference_test.py --tandem build/bin/tandem --model models/tandem-shakespeare \
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
from llama_reference import LlamaReference  # noqa: E402

SKIP = 77
FAILED = []


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + str(detail)[:2000]), flush=True)
    if not ok:
        FAILED.append(name)
    return ok


def reference(model, tokens, context):
    """(mean NLL, scored, windows) in float64 over non-overlapping windows."""
    total, scored, windows = 0.0, 0, 0
    for start in range(0, len(tokens), context):
        window = tokens[start:start + context]
        windows += 1
        if len(window) < 2:
            continue
        logits = model.forward(window)  # [T, V] float64, from an empty cache
        logp = torch.log_softmax(logits[:-1], dim=-1)
        targets = torch.tensor(window[1:], dtype=torch.long)
        total += float(-logp[torch.arange(len(window) - 1), targets].sum())
        scored += len(window) - 1
    return total / scored, scored, windows


def run_tool(args, flags):
    p = subprocess.run([args.tandem, "perplexity", "--model", args.model] + flags, capture_output=True, text=True,
                       timeout=600)
    return p.returncode, p.stdout, p.stderr


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
    heldout = corpus[len(corpus) * 9 // 10:]  # the last 10%: 111,540 characters, as the README holds out
    text_path = os.path.join(args.work, "heldout_head.txt")
    with open(text_path, "w", encoding="utf-8") as f:
        f.write(heldout[:3000])  # about 950 tokens: a few windows, seconds in float64
    ref_fp32 = LlamaReference.from_pretrained(args.model)
    ref_bf16 = LlamaReference.from_pretrained(args.model)
    ref_bf16.bf16_matmul_inputs = True

    cases = [
        ("fp32, context 256 (the model's longest), last window shorter", [], 256, ref_fp32, 1e-4),
        ("fp32, context 100 in steps of 37 tokens", ["--step-tokens", "37"], 100, ref_fp32, 1e-4),
        ("fp32, 301 tokens in windows of 150: the last window is one token and scores nothing",
         ["--max-tokens", "301"], 150, ref_fp32, 1e-4),
        ("bfloat16 matmuls against the BF16-input reference, context 128", ["--dtype", "bfloat16"], 128, ref_bf16,
         1e-3),
    ]
    for i, (label, flags, context, ref, tol) in enumerate(cases):
        ids_path = os.path.join(args.work, "ids%d.json" % i)
        rc, out, err = run_tool(args, ["--text", text_path, "--context", str(context), "--json",
                                       "--token-ids-out", ids_path] + flags)
        if not check("%s: tandem perplexity exits 0" % label, rc == 0, err):
            continue
        got = json.loads(out.strip().splitlines()[-1])
        with open(ids_path) as f:
            tokens = json.load(f)
        want_nll, want_scored, want_windows = reference(ref, tokens, context)
        check("%s: %d windows and %d scored tokens, as the reference cuts them" % (label, want_windows, want_scored),
              got["windows"] == want_windows and got["scored_tokens"] == want_scored
              and got["tokens"] == len(tokens), got)
        rel_nll = abs(got["mean_nll"] - want_nll) / want_nll
        want_ppl = math.exp(want_nll)
        rel_ppl = abs(got["perplexity"] - want_ppl) / want_ppl
        check("%s: perplexity %.6f vs reference %.6f (relative %.2e), mean NLL relative %.2e, both <= %g"
              % (label, got["perplexity"], want_ppl, rel_ppl, rel_nll, tol),
              rel_ppl <= tol and rel_nll <= tol, got)
    # The tokens begin with BOS (the tokenizer adds it), once.
    with open(os.path.join(args.work, "ids0.json")) as f:
        tokens = json.load(f)
    with open(os.path.join(args.model, "config.json")) as f:
        bos = json.load(f)["bos_token_id"]
    check("the text is tokenized once, BOS at the start only", tokens[0] == bos and tokens.count(bos) == 1,
          tokens[:5])

    for flags, what in [(["--context", "1"], "--context 1"), (["--context", "300"], "max_position_embeddings"),
                        (["--text", os.path.join(args.work, "missing.txt")], "cannot read"),
                        (["--dtype", "int3"], "--dtype"), ([], "usage")]:
        full = flags if "--text" in flags or not flags else ["--text", text_path] + flags
        rc, out, err = run_tool(args, full)
        check("usage error %s -> exit 2 naming %r" % (flags or "(no --text)", what), rc == 2 and what in out + err,
              (rc, err[-500:]))
    print("%d failed" % len(FAILED))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
