#!/usr/bin/python3
"""End-to-end checks of `tandem generate` on real model directories.

Run by CTest (label e2e) with the tandem binary and the source tree given as
arguments. Each check asserts exact tokens, exact exit codes or exact
messages. Prints "N passed, M failed" and exits non-zero on any failure.

  cli_generate_test.py --tandem build/bin/tandem --source . --work DIR
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import make_random_model  # noqa: E402

PASSED, FAILED = [], []


def check(name, cond, detail=""):
    (PASSED if cond else FAILED).append(name)
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else ": " + detail))


def run(cmd, timeout=600):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def reference_greedy(source, model_dir, prompt_ids, max_tokens, ignore_eos):
    cmd = [sys.executable, os.path.join(source, "tests", "reference", "llama_reference.py"),
           "--model", model_dir, "--prompt-ids", ",".join(map(str, prompt_ids)),
           "--max-tokens", str(max_tokens)]
    if ignore_eos:
        cmd.append("--ignore-eos")
    rc, out, err = run(cmd)
    assert rc == 0, err
    return json.loads(out.strip().splitlines()[-1])


# The float reference's arithmetic: the defaults are "auto", which picks BF16
# matmuls and a BF16 KV cache for a BF16 checkpoint on a CPU with BF16 dot
# products (test_auto_dtype covers them).
FP32 = ["--dtype", "float32", "--kv-cache-dtype", "fp32"]


def test_bundled_model_greedy_matches_reference(args):
    """The bundled model's greedy output equals the float64 reference's."""
    for prompt in ["ROMEO:", "First Citizen:\nBefore we proceed any further, hear me speak."]:
        rc, out, err = run([args.tandem, "generate", "--prompt", prompt, "--temperature", "0",
                            "--max-tokens", "64", "--json"] + FP32)
        check("bundled generate exits 0 (%r)" % prompt[:12], rc == 0, err)
        if rc != 0:
            continue
        got = json.loads(out)
        ref = reference_greedy(args.source, os.path.join(args.source, "models", "tandem-shakespeare"),
                               got["prompt_token_ids"], 64, ignore_eos=False)
        check("bundled greedy tokens equal reference (%r)" % prompt[:12],
              got["token_ids"] == ref["token_ids"],
              "c++ %s\nref %s" % (got["token_ids"], ref["token_ids"]))
        check("bundled finish_reason equals reference (%r)" % prompt[:12],
              got["finish_reason"] == ref["finish_reason"], "%s vs %s" % (got["finish_reason"], ref["finish_reason"]))
        check("bundled text is non-empty (%r)" % prompt[:12], len(got["text"]) > 0, out)


def test_random_model_prompt_ids(args):
    """--prompt-ids on a model without a tokenizer; eos stop vs --ignore-eos."""
    model = os.path.join(args.work, "cli_llama_bf16")
    shutil.rmtree(model, ignore_errors=True)
    make_random_model.make_random_model("llama_bf16", model)
    ids = [5, 17, 99, 3]
    rc, out, err = run([args.tandem, "generate", "--model", model, "--prompt-ids", ",".join(map(str, ids)),
                        "--max-tokens", "20", "--temperature", "0", "--ignore-eos", "--json"] + FP32)
    check("random model generate exits 0", rc == 0, err)
    if rc == 0:
        got = json.loads(out)
        ref = reference_greedy(args.source, model, ids, 20, ignore_eos=True)
        check("random model greedy equals reference", got["token_ids"] == ref["token_ids"],
              "%s vs %s" % (got["token_ids"], ref["token_ids"]))
        check("prompt ids echoed", got["prompt_token_ids"] == ids, out)
        check("length finish", got["finish_reason"] == "length" and len(got["token_ids"]) == 20, out)
        # Stopping on a chosen token id: generation ends at its first occurrence.
        stop_id = got["token_ids"][7]
        first = got["token_ids"].index(stop_id)
        rc, out, err = run([args.tandem, "generate", "--model", model, "--prompt-ids", ",".join(map(str, ids)),
                            "--max-tokens", "20", "--temperature", "0", "--ignore-eos",
                            "--stop-token-ids", str(stop_id), "--json"])
        stopped = json.loads(out) if rc == 0 else {}
        check("stop token id ends generation", rc == 0 and stopped["token_ids"] == got["token_ids"][:first + 1]
              and stopped["finish_reason"] == "stop", out + err)
    # Same seed, same tokens; sampling at temperature 1.
    outs = []
    for _ in range(2):
        rc, out, err = run([args.tandem, "generate", "--model", model, "--prompt-ids", "1,2,3",
                            "--max-tokens", "16", "--temperature", "1", "--seed", "7", "--ignore-eos", "--json"])
        outs.append(json.loads(out)["token_ids"] if rc == 0 else None)
    check("same seed gives the same tokens", outs[0] is not None and outs[0] == outs[1], str(outs))


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        return set(next((l for l in f if l.startswith("flags")), "").split())


def test_auto_dtype(args):
    """No flags = --dtype auto --kv-cache-dtype auto: for the bundled BF16
    checkpoint a BF16 KV cache, and BF16 matmuls exactly where they are the
    faster arithmetic: AMX, or AVX512_BF16 with the vdpbf16ps kernel taken
    (TANDEM_BF16_DOT forces that choice, which is otherwise measured). The
    logprobs equal the explicit flags' exactly and differ from the other
    arithmetic's."""
    base = [args.tandem, "generate", "--prompt", "ROMEO:", "--temperature", "0", "--max-tokens", "12",
            "--logprobs", "1", "--json"]
    bf16 = ["--dtype", "bfloat16", "--kv-cache-dtype", "bf16"]
    fp32 = ["--dtype", "float32", "--kv-cache-dtype", "bf16"]
    flags = cpu_flags()
    for dot in ("0", "1"):
        env = dict(os.environ, TANDEM_BF16_DOT=dot)
        fast = "amx_bf16" in flags or (dot == "1" and "avx512_bf16" in flags)
        want, other = (bf16, fp32) if fast else (fp32, bf16)
        outs = {}
        for name, extra in [("default", []), ("want", want), ("other", other)]:
            p = subprocess.run(base + extra, capture_output=True, text=True, timeout=600, env=env)
            check("auto dtype (TANDEM_BF16_DOT=%s): generate %s exits 0" % (dot, name), p.returncode == 0, p.stderr)
            outs[name] = [t["logprob"] for t in json.loads(p.stdout)["logprobs"]] if p.returncode == 0 else None
        check("auto dtype (TANDEM_BF16_DOT=%s): the defaults give the logprobs of %s" % (dot, " ".join(want)),
              outs["default"] is not None and outs["default"] == outs["want"], str(outs))
        check("auto dtype (TANDEM_BF16_DOT=%s): and not those of %s" % (dot, " ".join(other)),
              outs["default"] is not None and outs["default"] != outs["other"], str(outs))


def test_many_prompts_and_batching(args):
    """--prompts-file / --num-prompts print one object per request and a summary;
    every batching strategy gives the same greedy tokens."""
    prompts = os.path.join(args.work, "prompts.txt")
    with open(prompts, "w") as f:
        f.write("ROMEO:\nJULIET:\n\nFirst Citizen:\nWhat say you, my lord?\n")
    runs = {}
    for batching in ["none", "static", "dynamic", "continuous", "paged"]:
        rc, out, err = run([args.tandem, "generate", "--prompts-file", prompts, "--temperature", "0",
                            "--max-tokens", "24", "--json", "--batching", batching,
                            "--max-num-batched-tokens", "7", "--batch-size", "3"])
        check("prompts file with --batching %s exits 0" % batching, rc == 0, err)
        if rc != 0:
            continue
        lines = [json.loads(l) for l in out.strip().splitlines()]
        check("--batching %s: 4 requests + summary" % batching,
              len(lines) == 5 and "summary" in lines[-1] and lines[-1]["summary"]["num_requests"] == 4,
              out)
        runs[batching] = [l["token_ids"] for l in lines[:-1]]
    check("all batching strategies give the same tokens",
          len(runs) == 5 and all(v == runs["paged"] for v in runs.values()), str(runs))
    # The same prompts one at a time through --prompt give the same tokens.
    if "paged" in runs:
        rc, out, err = run([args.tandem, "generate", "--prompt", "First Citizen:", "--temperature", "0",
                            "--max-tokens", "24", "--json"])
        check("batched equals alone", rc == 0 and json.loads(out)["token_ids"] == runs["paged"][2], out + err)
    rc, out, err = run([args.tandem, "generate", "--num-prompts", "5", "--input-len", "12", "--output-len", "9",
                        "--json", "--seed", "3"])
    lines = [json.loads(l) for l in out.strip().splitlines()] if rc == 0 else []
    check("random prompts: 5 requests of 12 prompt and 9 output tokens",
          len(lines) == 6 and all(len(l["prompt_token_ids"]) == 12 and len(l["token_ids"]) == 9
                                  for l in lines[:-1]) and lines[-1]["summary"]["output_tokens"] == 45,
          out + err)


def test_int8_quantization(args):
    """--quantization int8 (W8A8): runs end to end, repeats exactly, and a prompt
    alone gives the same greedy tokens as in a batch (batch-invariant kernels)."""
    prompts = os.path.join(args.work, "prompts_int8.txt")
    with open(prompts, "w") as f:
        f.write("ROMEO:\nJULIET:\nFirst Citizen:\nWhat say you, my lord?\n")
    batched = []
    for _ in range(2):
        rc, out, err = run([args.tandem, "generate", "--prompts-file", prompts, "--temperature", "0",
                            "--max-tokens", "24", "--json", "--quantization", "int8",
                            "--max-num-batched-tokens", "7"])
        check("int8 prompts file exits 0", rc == 0, err)
        batched.append([json.loads(l)["token_ids"] for l in out.strip().splitlines()[:-1]] if rc == 0 else None)
    check("int8 runs repeat exactly", batched[0] is not None and batched[0] == batched[1], str(batched))
    rc, out, err = run([args.tandem, "generate", "--prompt", "First Citizen:", "--temperature", "0",
                        "--max-tokens", "24", "--json", "--quantization", "int8"])
    check("int8: a prompt alone equals it in a batch",
          rc == 0 and batched[0] is not None and json.loads(out)["token_ids"] == batched[0][2], out + err)
    rc, out, err = run([args.tandem, "generate", "--prompt", "x", "--quantization", "int3"])
    check("unknown --quantization: exit 1, names the flag and the choices",
          rc == 1 and "--quantization 'int3'" in err and "none, int8" in err and "fp8" in err and "int4" in err, err)


def test_fp8_quantization(args):
    """--quantization fp8 (W8A16): runs end to end, repeats exactly, and a prompt
    alone gives the same greedy tokens as in a batch (batch-invariant kernels)."""
    prompts = os.path.join(args.work, "prompts_fp8.txt")
    with open(prompts, "w") as f:
        f.write("ROMEO:\nJULIET:\nFirst Citizen:\nWhat say you, my lord?\n")
    batched = []
    for _ in range(2):
        rc, out, err = run([args.tandem, "generate", "--prompts-file", prompts, "--temperature", "0",
                            "--max-tokens", "24", "--json", "--quantization", "fp8",
                            "--max-num-batched-tokens", "7"])
        check("fp8 prompts file exits 0", rc == 0, err)
        batched.append([json.loads(l)["token_ids"] for l in out.strip().splitlines()[:-1]] if rc == 0 else None)
    check("fp8 runs repeat exactly", batched[0] is not None and batched[0] == batched[1], str(batched))
    rc, out, err = run([args.tandem, "generate", "--prompt", "First Citizen:", "--temperature", "0",
                        "--max-tokens", "24", "--json", "--quantization", "fp8"])
    check("fp8: a prompt alone equals it in a batch",
          rc == 0 and batched[0] is not None and json.loads(out)["token_ids"] == batched[0][2], out + err)


def test_stop_strings(args):
    """A stop string ends generation; the text stops right before it."""
    rc, out, err = run([args.tandem, "generate", "--prompt", "ROMEO:", "--temperature", "0",
                        "--max-tokens", "64", "--json"])
    full = json.loads(out)
    text = full["text"]
    # A stop string that straddles two tokens: the last 2 characters of one token
    # piece and the first of the next (found from the decoded text).
    stop = text[10:14]
    rc, out, err = run([args.tandem, "generate", "--prompt", "ROMEO:", "--temperature", "0",
                        "--max-tokens", "64", "--json", "--stop", stop])
    got = json.loads(out) if rc == 0 else {}
    check("stop string: exit 0, finish stop", rc == 0 and got.get("finish_reason") == "stop", out + err)
    check("stop string: text ends right before the stop", got.get("text") == text[:text.find(stop)],
          "%r vs %r" % (got.get("text"), text[:text.find(stop)]))
    check("stop string: tokens are a prefix of the full run",
          got.get("token_ids") == full["token_ids"][:len(got.get("token_ids", []))] and
          len(got.get("token_ids", [])) < len(full["token_ids"]), out)


def test_errors(args):
    rc, out, err = run([args.tandem, "generate", "--model", "/nonexistent/model", "--prompt-ids", "1"])
    check("missing model: exit 1", rc == 1, "rc=%d" % rc)
    check("missing model: message names config.json", "/nonexistent/model/config.json" in err, err)
    rc, out, err = run([args.tandem, "generate", "--no-such-flag"])
    check("unknown flag: exit 2 and named", rc == 2 and "--no-such-flag" in err, err)
    rc, out, err = run([args.tandem, "generate", "--prompt", "x", "--temperature", "-1"])
    check("negative temperature: exit 1, names temperature", rc == 1 and "temperature" in err, err)
    rc, out, err = run([args.tandem, "generate", "--prompt-ids", "1,99999999"])
    check("out-of-vocabulary prompt id: exit 1", rc == 1 and "vocabulary" in err, err)
    rc, out, err = run([args.tandem, "generate", "--prompt", "x", "--max-tokens", "100000"])
    check("prompt + max_tokens past the context: exit 1", rc == 1 and "context" in err, err)
    rc, out, err = run([args.tandem, "generate", "--prompt", "x", "--batching", "sideways"])
    check("unknown batching: exit 1, lists the strategies", rc == 1 and "none, static, dynamic" in err, err)
    rc, out, err = run([args.tandem, "generate", "--prompt", "x", "--num-kv-blocks", "2", "--max-tokens", "64"])
    check("request larger than the KV pool: exit 1", rc == 1 and "KV blocks" in err, err)
    rc, out, err = run([args.tandem, "generate", "--prompt", "x", "--dtype", "half"])
    check("unknown --dtype: exit 1, names the flag and the choices",
          rc == 1 and "--dtype 'half'" in err and "auto, float32 or bfloat16" in err, err)
    rc, out, err = run([args.tandem, "up", "--prefill-cores", "3-1"])
    check("tandem up --prefill-cores 3-1: exit 2 before starting anything, names the flag and the item",
          rc == 2 and "--prefill-cores" in err and "'3-1'" in err, err)
    rc, out, err = run([args.tandem, "frobnicate"])
    check("unknown command: exit 2", rc == 2 and "unknown command" in err, err)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    test_bundled_model_greedy_matches_reference(args)
    test_random_model_prompt_ids(args)
    test_auto_dtype(args)
    test_many_prompts_and_batching(args)
    test_int8_quantization(args)
    test_fp8_quantization(args)
    test_stop_strings(args)
    test_errors(args)
    print("%d passed, %d failed" % (len(PASSED), len(FAILED)))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
