#!/usr/bin/python3
"""End-to-end checks of tandem-bench (bench/load) against a live `tandem serve`.

Run by CTest (label e2e, tests/e2e/bench.cmake). Starts `tandem serve --port 0`
on 127.0.0.1 with the bundled model, always stops it by PID, and runs short,
bounded benchmarks in every mode. Assertions are on counts and token totals
only (every run uses --ignore-eos, so each request generates exactly its
requested length; token-id prompts get no BOS, so the server's
usage.prompt_tokens equals the prompt sent), never on timing values. Prints
one PASS/FAIL line per check, then "N passed, M failed"; exits non-zero on any
failure.

  bench_test.py --tandem build/bin/tandem --bench build/bin/tandem-bench --work DIR
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_util import ServeProc, free_port  # noqa: E402

PASSED, FAILED = [], []


def check(name, cond, detail=""):
    (PASSED if cond else FAILED).append(name)
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else ": " + str(detail)[:2000]), flush=True)
    return cond


class Bench:
    def __init__(self, args, addr):
        self.args, self.addr = args, addr
        self.count = 0

    def run(self, flags, env=None, addr=None, timeout=300):
        """Runs tandem-bench with --json-out; returns (rc, stdout, stderr, json or None)."""
        self.count += 1
        out = os.path.join(self.args.work, "run%02d.json" % self.count)
        if os.path.exists(out):
            os.remove(out)
        cmd = [self.args.bench, "--addr", addr or self.addr, "--json-out", out] + flags
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        data = None
        if os.path.exists(out):
            with open(out) as f:
                data = json.load(f)
        return p.returncode, p.stdout, p.stderr, data


SHORT = ["--input-len", "16", "--output-len", "8", "--ignore-eos", "--json-detailed"]


def expect_exact(name, res, n, out_lens=None, in_lens=None):
    """Every request completed; each generated exactly what it asked for and the
    server counted exactly the prompt sent; the totals are the sums."""
    rc, stdout, stderr, j = res
    if not check("%s: exit 0 and JSON written" % name, rc == 0 and j is not None, stderr):
        return None
    reqs = j["requests"]
    check("%s: completed == num-requests == %d" % (name, n),
          j["completed"] == n and j["failed"] == 0 and j["num_requests"] == n and len(reqs) == n,
          {k: j[k] for k in ("completed", "failed", "num_requests", "failures")})
    check("%s: every request generated exactly its requested length" % name,
          all(r["output_tokens"] == r["requested_output_tokens"] == r["usage_completion_tokens"]
              and r["finish_reason"] == "length" and r["status"] == "OK" for r in reqs), reqs[:3])
    check("%s: usage.prompt_tokens == prompt ids sent (no BOS on token-id prompts)" % name,
          all(r["usage_prompt_tokens"] == r["requested_input_tokens"] for r in reqs), reqs[:3])
    check("%s: one ITL sample per output token after the first" % name,
          all(len(r["itls_ms"]) == r["output_tokens"] - 1 for r in reqs), reqs[:3])
    want_out = sum(r["requested_output_tokens"] for r in reqs)
    want_in = sum(r["requested_input_tokens"] for r in reqs)
    check("%s: total output tokens == sum of requested lengths (%d)" % (name, want_out),
          j["total_output_tokens"] == want_out == j["total_requested_output_tokens"], j["total_output_tokens"])
    check("%s: total input tokens == sum of prompt lengths (%d)" % (name, want_in),
          j["total_input_tokens"] == want_in == j["total_requested_input_tokens"], j["total_input_tokens"])
    if out_lens is not None:
        check("%s: requested output lengths as configured" % name,
              all(out_lens(r["requested_output_tokens"]) for r in reqs),
              [r["requested_output_tokens"] for r in reqs])
    if in_lens is not None:
        check("%s: prompt lengths as configured" % name,
              all(in_lens(r["requested_input_tokens"]) for r in reqs), [r["requested_input_tokens"] for r in reqs])
    check("%s: the table is printed" % name,
          "Completed requests" in stdout and ("%d" % n) in stdout and "TTFT" in stdout, stdout)
    counts = (j["ttft_ms"]["count"], j["e2el_ms"]["count"], j["tpot_ms"]["count"], j["itl_ms"]["count"])
    want_counts = (n, n, sum(1 for r in reqs if r["output_tokens"] >= 2), sum(len(r["itls_ms"]) for r in reqs))
    check("%s: summary sample counts" % name, counts == want_counts, (counts, want_counts))
    return j


def check_rate(b):
    j = expect_exact("rate", b.run(["--request-rate", "50", "--num-requests", "12"] + SHORT), 12,
                     out_lens=lambda x: x == 8, in_lens=lambda x: x == 16)
    if j:
        check("rate: point label and JSON config", j["label"] == "rate=50" and j["request_rate"] == 50
              and j["max_concurrency"] == 0 and j["config"]["dataset"] == "random", j["label"])
        check("rate: totals 96 out, 192 in", j["total_output_tokens"] == 96 and j["total_input_tokens"] == 192)


def check_bursty_rate_with_cap(b):
    j = expect_exact("rate+cap", b.run(["--request-rate", "30", "--burstiness", "0.5", "--concurrency", "2",
                                        "--num-requests", "8"] + SHORT), 8)
    if j:
        check("rate+cap: label", j["label"] == "rate=30,concurrency=2" and j["max_concurrency"] == 2, j["label"])


def check_concurrency_ranges(b):
    flags = ["--concurrency", "3", "--num-requests", "10", "--input-len-range", "4:24",
             "--output-len-range", "1:12", "--ignore-eos", "--json-detailed", "--seed", "5"]
    j = expect_exact("concurrency", b.run(flags), 10, out_lens=lambda x: 1 <= x <= 12,
                     in_lens=lambda x: 4 <= x <= 24)
    if j:
        check("concurrency: label", j["label"] == "concurrency=3" and j["max_concurrency"] == 3, j["label"])
        again = b.run(flags)[3]
        same = again and [(r["requested_input_tokens"], r["requested_output_tokens"]) for r in again["requests"]] \
            == [(r["requested_input_tokens"], r["requested_output_tokens"]) for r in j["requests"]]
        check("concurrency: the same seed draws the same lengths", same)


def check_sharegpt(b):
    j = expect_exact("sharegpt-like", b.run(["--dataset", "sharegpt-like", "--max-model-len", "48",
                                             "--concurrency", "4", "--num-requests", "8", "--ignore-eos",
                                             "--json-detailed", "--seed", "3"]), 8)
    if j:
        check("sharegpt-like: lengths clamped to --max-model-len 48",
              all(r["requested_input_tokens"] >= 4 and r["requested_output_tokens"] >= 1
                  and r["requested_input_tokens"] + r["requested_output_tokens"] <= 48 for r in j["requests"]),
              j["requests"])


def check_prefix(b):
    j = expect_exact("prefix", b.run(["--dataset", "prefix", "--prefix-len", "32", "--input-len", "8",
                                      "--output-len", "4", "--concurrency", "4", "--num-requests", "8",
                                      "--ignore-eos", "--json-detailed"]), 8,
                     out_lens=lambda x: x == 4, in_lens=lambda x: x == 40)
    if j:
        check("prefix: 8 prompts of 32 + 8 ids", j["total_input_tokens"] == 320, j["total_input_tokens"])


def check_multi_turn(b):
    # 8 conversations x 3 turns of 16-id messages and 16 output tokens: turn
    # k's prompt is the conversation so far (earlier messages and outputs).
    j = expect_exact("multi-turn", b.run(["--dataset", "multi-turn", "--num-turns", "3", "--input-len", "16",
                                          "--output-len", "16", "--concurrency", "4", "--num-requests", "24",
                                          "--ignore-eos", "--json-detailed"]), 24,
                     out_lens=lambda x: x == 16)
    if j:
        got = [r["requested_input_tokens"] for r in j["requests"]]
        check("multi-turn: each turn's prompt holds the conversation so far (16, 48, 80 ids)",
              got == [16, 48, 80] * 8 and j["total_input_tokens"] == 1152, (got, j["total_input_tokens"]))
    rc, _, stderr, _ = b.run(["--dataset", "multi-turn", "--num-turns", "3", "--num-requests", "4"] + SHORT)
    check("multi-turn: --num-requests not a multiple of --num-turns is refused",
          rc == 2 and "multiples of --num-turns" in stderr, (rc, stderr))


def check_warmup(b):
    flags = ["--concurrency", "2", "--num-requests", "5", "--input-len-range", "4:20", "--output-len-range", "2:9",
             "--ignore-eos", "--json-detailed", "--seed", "9"]
    j = expect_exact("warmup", b.run(flags + ["--warmup", "3"]), 5)
    if j:
        check("warmup: 3 warmup requests ran, none in the stats",
              j["warmup_completed"] == 3 and j["warmup_failed"] == 0 and j["num_requests"] == 5,
              (j["warmup_completed"], j["warmup_failed"]))
        plain = b.run(flags)[3]
        check("warmup: the measured requests do not depend on --warmup",
              plain and [(r["requested_input_tokens"], r["requested_output_tokens"]) for r in plain["requests"]]
              == [(r["requested_input_tokens"], r["requested_output_tokens"]) for r in j["requests"]])


def check_sweep(b, kind, values, labels):
    rc, stdout, stderr, j = b.run(["--sweep", "%s=%s" % (kind, values), "--num-requests", "4", "--warmup", "1"]
                                  + SHORT)
    name = "sweep %s" % kind
    if not check("%s: exit 0 and JSON written" % name, rc == 0 and j is not None, stderr):
        return
    points = j["points"]
    check("%s: one point per value" % name, [p["label"] for p in points] == labels, [p["label"] for p in points])
    check("%s: every point completed exactly" % name,
          all(p["completed"] == 4 and p["failed"] == 0 and p["warmup_completed"] == 1
              and p["total_output_tokens"] == 32 and p["total_input_tokens"] == 64 for p in points), points)
    png = j["plot"]
    ok = os.path.isfile(png) and os.path.getsize(png) > 0
    if ok:
        with open(png, "rb") as f:
            ok = f.read(8) == b"\x89PNG\r\n\x1a\n"
    check("%s: PNG written, non-empty" % name, ok, png)
    check("%s: gnuplot script kept beside it" % name, os.path.isfile(png[:-4] + ".gp"))


def check_sweep_without_gnuplot(b):
    env = dict(os.environ, PATH="/nonexistent")
    rc, _, stderr, j = b.run(["--sweep", "rates=1", "--num-requests", "1"] + SHORT, env=env)
    check("sweep without gnuplot on PATH: exit 1 naming gnuplot, nothing run",
          rc == 1 and "gnuplot" in stderr and j is None, (rc, stderr))


def check_failures(b):
    rc, stdout, stderr, j = b.run(["--num-requests", "4"] + SHORT, addr="127.0.0.1:%d" % free_port())
    ok = rc == 0 and j is not None
    if check("bad address: exit 0 and JSON written", ok, stderr):
        check("bad address: 4 failed, all UNAVAILABLE",
              j["completed"] == 0 and j["failed"] == 4 and list(j["failures"]) == ["UNAVAILABLE"]
              and j["failures"]["UNAVAILABLE"]["count"] == 4
              and all(r["status"] == "UNAVAILABLE" for r in j["requests"]), j["failures"])
        check("bad address: no tokens, empty summaries",
              j["total_output_tokens"] == 0 and j["ttft_ms"] is None, j)
        check("bad address: the table lists the status", "UNAVAILABLE" in stdout, stdout)
    # 250 prompt ids + 10 > the bundled model's 256 positions: the server refuses each.
    rc, stdout, stderr, j = b.run(["--num-requests", "3", "--input-len", "250", "--output-len", "10",
                                   "--max-model-len", "4096", "--json-detailed"])
    if check("over-long requests: exit 0 and JSON written", rc == 0 and j is not None, stderr):
        check("over-long requests: 3 failed, all INVALID_ARGUMENT naming max_tokens",
              j["completed"] == 0 and j["failed"] == 3 and list(j["failures"]) == ["INVALID_ARGUMENT"]
              and j["failures"]["INVALID_ARGUMENT"]["count"] == 3
              and "max_tokens" in j["failures"]["INVALID_ARGUMENT"]["first_message"], j["failures"])


def check_goodput(b):
    rc, _, stderr, j = b.run(["--concurrency", "4", "--num-requests", "6", "--slo-ttft-ms", "1e9",
                              "--slo-tpot-ms", "1e9"] + SHORT)
    if check("goodput: exit 0", rc == 0 and j is not None, stderr):
        check("goodput: with unmissable SLOs every completed request is good",
              j["good_requests"] == j["completed"] == 6 and j["goodput"] is not None
              and j["slo"] == {"ttft_ms": 1e9, "tpot_ms": 1e9}, j)
    rc, _, _, j = b.run(["--num-requests", "2"] + SHORT)
    check("goodput: absent without SLOs", rc == 0 and j is not None and j["goodput"] is None)


def check_bad_flags(b):
    p = subprocess.run([b.args.bench, "--num-requests", "0"], capture_output=True, text=True, timeout=30)
    check("bad flag: exit 2 naming it", p.returncode == 2 and "--num-requests" in p.stderr, p.stderr)
    p = subprocess.run([b.args.bench, "--help"], capture_output=True, text=True, timeout=30)
    check("--help: exit 0 listing the flags", p.returncode == 0 and "--request-rate" in p.stdout
          and "--sweep" in p.stdout, p.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    t0 = time.monotonic()

    check_bad_flags(Bench(args, "127.0.0.1:1"))
    srv = ServeProc(args.tandem, [], os.path.join(args.work, "serve.log"))
    try:
        if not check("server listening", srv.wait_listening(), srv.log_tail()):
            return 1
        b = Bench(args, "127.0.0.1:%d" % srv.port)
        steps = [check_rate, check_bursty_rate_with_cap, check_concurrency_ranges, check_sharegpt, check_prefix,
                 check_multi_turn,
                 check_warmup, lambda b: check_sweep(b, "concurrency", "1,2", ["concurrency=1", "concurrency=2"]),
                 lambda b: check_sweep(b, "rates", "40,inf", ["rate=40", "rate=inf"]),
                 check_sweep_without_gnuplot, check_failures, check_goodput]
        for step in steps:
            try:
                step(b)
            except Exception:  # noqa: BLE001
                check("%s ran without an exception" % getattr(step, "__name__", "step"), False,
                      traceback.format_exc())
            if srv.proc.poll() is not None:
                check("server still running", False, srv.log_tail())
                break
    finally:
        alive = srv.proc.poll() is None
        rc = srv.stop()
        check("server exits 0 on SIGTERM", alive and rc == 0, "alive %s rc %s" % (alive, rc))

    print("(%.1fs)" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (len(PASSED), len(FAILED)))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
