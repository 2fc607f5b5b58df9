"""What the cluster test compares against: `tandem generate` run on the same
prompts (generate_many, generate_one, mixed_expected over the GROUPS of
max_tokens / ignore_eos / stop ids), the big token-id prompts of the pool
checks, and same_as (a Completion against a `generate` row)."""

import json
import os

import cluster_state as state
from cluster_procs import bin_path
from cluster_state import run


# (max_tokens, ignore_eos, stop_token_ids) groups: `tandem generate` takes one
# of each per run. Newline stop ids ("\n", "\n\n") end some requests early.
GROUPS = [(8, False, []), (24, True, []), (40, False, [10, 272]), (48, True, [10])]


def generate_many(prompts, max_tokens, ignore_eos, stop_ids, tag, extra=()):
    path = os.path.join(state.ARGS.work, "prompts_%s.txt" % tag)
    with open(path, "w") as f:
        f.write("\n".join(prompts) + "\n")
    cmd = [bin_path("tandem"), "generate", "--prompts-file", path, "--temperature", "0",
           "--max-tokens", str(max_tokens), "--json"] + (["--ignore-eos"] if ignore_eos else []) + list(extra)
    if stop_ids:
        cmd += ["--stop-token-ids", ",".join(map(str, stop_ids))]
    rc, out, err = run(cmd)
    if rc != 0:
        raise RuntimeError("generate failed (%d): %s" % (rc, err))
    rows = [json.loads(l) for l in out.splitlines() if l.strip()]
    rows = [r for r in rows if "summary" not in r]
    rows.sort(key=lambda r: int(r["request_id"]))
    if len(rows) != len(prompts):
        raise RuntimeError("generate printed %d results for %d prompts" % (len(rows), len(prompts)))
    return rows


def generate_one(prompt=None, ids=None, flags=()):
    cmd = [bin_path("tandem"), "generate", "--json"]
    cmd += ["--prompt", prompt] if prompt is not None else ["--prompt-ids", ",".join(map(str, ids))]
    rc, out, err = run(cmd + list(flags))
    if rc != 0:
        raise RuntimeError("generate failed (%d): %s" % (rc, err))
    return json.loads(out.splitlines()[0])


def mixed_expected(prompts, extra=(), tag=""):
    expected = [None] * len(prompts)
    for g, (mt, ie, stop_ids) in enumerate(GROUPS):
        idx = [i for i in range(len(prompts)) if i % len(GROUPS) == g]
        rows = generate_many([prompts[i] for i in idx], mt, ie, stop_ids, "g%d%s" % (g, tag), extra)
        for i, r in zip(idx, rows):
            expected[i] = r
    return expected


def big_prompt(i, n=200):
    """A distinct prompt of n token ids (its first block differs from every other's)."""
    return [5 + ((i * 31 + j * (7 + i % 5)) % 1900) for j in range(n)]


def same_as(got, want, request_id=None):
    """None when `got` (a Completion) equals the `tandem generate` row `want`, else why not."""
    if isinstance(got, Exception):
        return "raised %r" % (got,)
    want_usage = state.tc.Usage(len(want["prompt_token_ids"]), len(want["token_ids"]))
    mine = (got.token_ids, got.text, got.finish_reason, got.usage)
    theirs = (want["token_ids"], want["text"], want["finish_reason"], want_usage)
    if mine != theirs:
        return "got %r\n     want %r" % (mine, theirs)
    if request_id is not None and got.request_id != request_id:
        return "request_id %r, want %r" % (got.request_id, request_id)
    return None
