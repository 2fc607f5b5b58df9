#!/usr/bin/python3
"""Generate the reference fixtures the C++ tests compare against.

Usage:
  /usr/bin/python3 tests/reference/make_reference_fixtures.py --out DIR [--shapes a,b]

For every shape of make_random_model.SHAPES writes
  DIR/<shape>/model/          the random-weight HF model directory
  DIR/<shape>/expected.json   {"shape": name, "vocab_size": V,
                               "max_new_tokens": 32,
                               "cases": [{"prompt_token_ids": [...],
                                          "token_ids": [32 greedy tokens,
                                                        eos ignored],
                                          "logits": [[V floats] x 32]}, ...]}
logits[j] is the float64 logits row from which token_ids[j] was picked.

Prompts (lengths PROMPT_LENGTHS) are drawn from a seeded generator.  Greedy
robustness: at every step the top-1/top-2 logit gap must be at least
GAP_RTOL * max|logit| of that row; a case that violates it gets its prompt
redrawn (at most MAX_TRIES times, then the script fails).
Everything is deterministic: same torch version -> identical output.
"""

import argparse
import json
import os
import sys
import time

import torch

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_random_model  # noqa: E402
from llama_reference import LlamaReference, rope_inv_freq  # noqa: E402

MAX_NEW_TOKENS = 32
PROMPT_LENGTHS = (1, 6, 13, 29)
GAP_RTOL = 1e-3
MAX_TRIES = 50
PROMPT_SEED = 4242


def min_relative_gap(rows):
    """min over rows of (top1 - top2) / max|logit|"""
    worst = float("inf")
    for row in rows:
        top2 = torch.topk(row, 2).values
        gap = float(top2[0] - top2[1]) / float(row.abs().max())
        worst = min(worst, gap)
    return worst


def make_cases(model, shape_index, vocab_size):
    cases = []
    tries_used = []
    for case_index, length in enumerate(PROMPT_LENGTHS):
        for attempt in range(MAX_TRIES):
            g = torch.Generator().manual_seed(
                PROMPT_SEED + 1000 * shape_index + 100 * case_index + attempt)
            prompt = torch.randint(0, vocab_size, (length,), generator=g).tolist()
            result = model.generate(prompt, MAX_NEW_TOKENS, ignore_eos=True)
            if min_relative_gap(result["logits"]) >= GAP_RTOL:
                break
        else:
            raise RuntimeError("could not find a greedy-robust prompt of length "
                               "%d in %d tries" % (length, MAX_TRIES))
        tries_used.append(attempt + 1)
        cases.append({"prompt_token_ids": prompt,
                      "token_ids": result["token_ids"],
                      "logits": result["logits"]})
    return cases, tries_used


def bf16_teacher_forced_logits(model, case):
    """The case's logits rows again, teacher-forced on its tokens, with every
    linear input rounded to BF16 (the engine's --dtype bfloat16)."""
    ids = case["prompt_token_ids"] + case["token_ids"][:-1]
    model.bf16_matmul_inputs = True
    try:
        with torch.no_grad():
            logits = model.forward(ids, 0, None)
    finally:
        model.bf16_matmul_inputs = False
    return logits[len(case["prompt_token_ids"]) - 1:]


def check_rope_scaling_matters(model, cases):
    """For rope-scaled shapes: the same weights without rope_scaling must give
    clearly different logits, already for the short prompts."""
    c = model.config
    scaled_inv_freq = model.inv_freq
    unscaled = rope_inv_freq(c.head_dim, c.rope_theta, None)
    if torch.equal(scaled_inv_freq, unscaled):
        raise RuntimeError("rope_scaling does not change inv_freq")
    model.inv_freq = unscaled
    try:
        diffs = []
        tokens_differ = False
        for case in cases:
            r = model.generate(case["prompt_token_ids"], MAX_NEW_TOKENS,
                               ignore_eos=True)
            diffs.append(float((r["logits"][0] - case["logits"][0]).abs().max()))
            tokens_differ |= r["token_ids"] != case["token_ids"]
    finally:
        model.inv_freq = scaled_inv_freq
    # case 1 has a 6-token prompt: a short position range
    if diffs[1] < 1e-2 or not tokens_differ:
        raise RuntimeError("rope_scaling barely changes results: first-row "
                           "logit diffs %s, tokens differ: %s"
                           % (diffs, tokens_differ))
    return diffs, tokens_differ


def logits_summary(cases):
    rows = torch.stack([row for case in cases for row in case["logits"]])
    return float(rows.std(dim=1).mean()), float(rows.abs().max())


def main(argv=None):
    ap = argparse.ArgumentParser(description="write reference fixtures")
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", default=None,
                    help="comma-separated subset (default: all shapes)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: these models are "
                         "tiny and extra threads only contend on a busy machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))

    names = list(make_random_model.SHAPES)
    if args.shapes:
        wanted = args.shapes.split(",")
        for w in wanted:
            if w not in make_random_model.SHAPES:
                ap.error("unknown shape %s" % w)
        names = [n for n in names if n in wanted]

    t_all = time.time()
    for shape_index, name in enumerate(make_random_model.SHAPES):
        if name not in names:
            continue
        t0 = time.time()
        model_dir = os.path.join(args.out, name, "model")
        make_random_model.make_random_model(name, model_dir)
        model = LlamaReference.from_pretrained(model_dir)
        vocab = model.config.vocab_size
        cases, tries = make_cases(model, shape_index, vocab)
        extra = ""
        if model.config.rope_scaling:
            diffs, _ = check_rope_scaling_matters(model, cases)
            extra = " rope_scaling_first_row_diff=%s" % ",".join(
                "%.3g" % d for d in diffs)
        std, amax = logits_summary(cases)
        out = {
            "shape": name,
            "vocab_size": vocab,
            "max_new_tokens": MAX_NEW_TOKENS,
            "cases": [{"prompt_token_ids": c["prompt_token_ids"],
                       "token_ids": c["token_ids"],
                       "logits": [row.tolist() for row in c["logits"]],
                       "bf16_logits": [row.tolist() for row in
                                       bf16_teacher_forced_logits(model, c)]}
                      for c in cases],
        }
        path = os.path.join(args.out, name, "expected.json")
        with open(path + ".tmp", "w") as f:
            json.dump(out, f)  # json writes floats with repr: full precision
            f.write("\n")
        os.replace(path + ".tmp", path)
        distinct = [len(set(c["token_ids"])) for c in cases]
        print("%-20s vocab=%d prompts=%s tries=%s distinct_tokens=%s "
              "logit_std=%.2f max|logit|=%.2f%s time=%.1fs"
              % (name, vocab, [len(c["prompt_token_ids"]) for c in cases], tries,
                 distinct, std, amax, extra, time.time() - t0))
        sys.stdout.flush()
    print("done: %d shapes in %.1fs -> %s" % (len(names), time.time() - t_all,
                                               args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
