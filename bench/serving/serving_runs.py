#!/usr/bin/python3
"""Serving benchmarks of issue 6, each a real server plus tandem-bench.

  target   the cluster (`tandem up`, 1 prefill + 1 decode worker) on the
           serving target workload: 64 requests, 256 prompt + 128 output
           tokens, concurrency 16.
  ladder   the batching ladder: `tandem serve --batching X` for none, static,
           dynamic, continuous, paged under 50 concurrent clients, mixed prompt
           lengths, outputs of 64/128/256 tokens.
  disagg   disaggregated (`tandem up`, prefill and decode workers pinned to
           different cores) against colocated (`tandem serve` using every
           core) at the same Poisson request rate: TTFT/ITL percentiles and
           goodput.

Every run writes tandem-bench's JSON to --out and prints a Markdown table.
Run with Debian's /usr/bin/python3. Servers listen on 127.0.0.1 only and are
stopped by their PID (SIGTERM, then SIGKILL after 10 s).
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

BENCH_TIMEOUT_S = 1800  # the longest a single tandem-bench run may take


class Server:
    """A `tandem up` or `tandem serve` child; its address from its output."""

    def __init__(self, argv, ready_pattern, log_path):
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     start_new_session=True)
        self.addr = None
        deadline = time.monotonic() + 300
        rx = re.compile(ready_pattern)
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            self.log.write(line)
            m = rx.search(line)
            if m:
                self.addr = m.group(1)
                break
        if self.addr is None:
            self.stop()
            raise RuntimeError("server did not come up: %s\n%s" % (" ".join(argv), "".join(lines[-20:])))
        # Keep draining stdout so the child never blocks on a full pipe.
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()

    def _drain(self):
        for line in self.proc.stdout:
            self.log.write(line)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


def up(args, extra):
    argv = [os.path.join(args.bin_dir, "tandem"), "up", "--port", "0", "--model", args.model] + extra
    return Server(argv, r"tandem up: ready on (127\.0\.0\.1:\d+)", os.path.join(args.out, "server.log"))


def serve(args, extra):
    argv = [os.path.join(args.bin_dir, "tandem"), "serve", "--port", "0", "--host", "127.0.0.1",
            "--model", args.model] + extra
    return Server(argv, r"listening on (127\.0\.0\.1:\d+)", os.path.join(args.out, "server.log"))


def bench(args, addr, name, flags):
    out = os.path.join(args.out, name + ".json")
    argv = [os.path.join(args.bin_dir, "tandem-bench"), "--addr", addr, "--max-model-len", str(args.max_model_len),
            "--vocab-size", str(args.vocab_size), "--json-out", out] + flags
    print("$ " + " ".join(argv), flush=True)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=BENCH_TIMEOUT_S)
    sys.stdout.write(r.stdout[-3000:])
    if r.returncode != 0:
        raise RuntimeError("tandem-bench failed (%d): %s" % (r.returncode, r.stderr[-2000:]))
    with open(out) as f:
        return json.load(f)


def point(result):
    """The one load point of a non-sweep run."""
    return result["points"][0] if "points" in result else result


def engine_flags(args):
    budget = ["--max-num-batched-tokens", str(args.max_num_batched_tokens)] if args.max_num_batched_tokens else []
    return ["--dtype", args.dtype, "--kv-cache-dtype", args.kv_cache_dtype, "--quantization", args.quantization] + budget


def pinned(args):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return []
    half = len(cpus) // 2
    fmt = lambda cs: ",".join(map(str, cs))
    return ["--prefill-cores", fmt(cpus[:half]), "--decode-cores", fmt(cpus[half:])]


def run_target(args):
    extra = engine_flags(args) + (pinned(args) if args.pin else [])
    if args.prefill_cores:
        extra += ["--prefill-cores", args.prefill_cores]
    if args.decode_cores:
        extra += ["--decode-cores", args.decode_cores]
    srv = up(args, extra)
    try:
        res = point(bench(args, srv.addr, "target", [
            "--num-requests", "64", "--concurrency", "16", "--input-len", "256", "--output-len", "128",
            "--ignore-eos", "--seed", "1"]))
    finally:
        srv.stop()
    print("\n| cluster flags | output tok/s | TTFT p50 (ms) | TTFT p99 (ms) | TPOT p50 (ms) | duration (s) |")
    print("|---|---|---|---|---|---|")
    print("| %s | %.1f | %.0f | %.0f | %.1f | %.1f |" % (
        " ".join(extra), res["output_throughput"], res["ttft_ms"]["p50"], res["ttft_ms"]["p99"],
        res["tpot_ms"]["p50"], res["duration_s"]))


def run_ladder(args):
    rows = []
    for mode in args.modes.split(","):
        kv = ["--num-kv-blocks", str(args.num_kv_blocks)] if args.num_kv_blocks else []
        srv = serve(args, engine_flags(args) + ["--batching", mode, "--batch-size", "16"] + kv)
        try:
            res = point(bench(args, srv.addr, "ladder-" + mode, [
                "--num-requests", str(args.num_requests), "--concurrency", "50", "--input-len-range", args.input_range or "32:512",
                "--output-len-choices", args.output_choices, "--ignore-eos", "--seed", "2"]))
        finally:
            srv.stop()
        rows.append((mode, res))
    print("\n| batching | req/s | output tok/s | TTFT p50 (ms) | TPOT p50 (ms) | e2e p50 (s) |")
    print("|---|---|---|---|---|---|")
    for mode, r in rows:
        print("| %s | %.2f | %.1f | %.0f | %.1f | %.1f |" % (
            mode, r["request_throughput"], r["output_throughput"], r["ttft_ms"]["p50"], r["tpot_ms"]["p50"],
            r["e2el_ms"]["p50"] / 1000))


def run_disagg(args):
    flags = ["--num-requests", str(args.num_requests), "--request-rate", str(args.rate), "--input-len-range",
             args.input_range or "64:512", "--output-len", "128", "--ignore-eos", "--seed", "3", "--slo-ttft-ms",
             str(args.slo_ttft_ms), "--slo-tpot-ms", str(args.slo_tpot_ms)]
    rows = []
    for name in ("disaggregated", "colocated"):
        srv = up(args, engine_flags(args) + pinned(args)) if name == "disaggregated" else serve(args, engine_flags(args))
        try:
            rows.append((name, point(bench(args, srv.addr, name, flags))))
        finally:
            srv.stop()
    print("\n| setup | req/s | TTFT p50 / p99 (ms) | ITL p50 / p99 (ms) | goodput (req/s) |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        print("| %s | %.2f | %.0f / %.0f | %.1f / %.1f | %.2f |" % (
            name, r["request_throughput"], r["ttft_ms"]["p50"], r["ttft_ms"]["p99"], r["itl_ms"]["p50"],
            r["itl_ms"]["p99"], r.get("goodput", float("nan"))))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["target", "ladder", "disagg"])
    ap.add_argument("--bin-dir", default="build/bin")
    ap.add_argument("--model", required=True, help="e.g. a SmolLM2-135M-shape model from tools/models/make_random_model.py")
    ap.add_argument("--out", required=True, help="folder for the JSON results and server logs")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--kv-cache-dtype", default="bf16")
    ap.add_argument("--quantization", default="none", help="none | int8 | fp8 | int4 (weights, at load)")
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--max-num-batched-tokens", type=int, default=0,
                    help="the servers' step token budget (0: their default, 2048)")
    ap.add_argument("--vocab-size", type=int, default=49000, help="prompt ids are drawn below this")
    ap.add_argument("--pin", action="store_true", help="target: pin prefill and decode workers to separate cores")
    ap.add_argument("--prefill-cores", default="", help="target: `tandem up --prefill-cores` (instead of --pin)")
    ap.add_argument("--decode-cores", default="", help="target: `tandem up --decode-cores` (instead of --pin)")
    ap.add_argument("--modes", default="none,static,dynamic,continuous,paged")
    ap.add_argument("--num-requests", type=int, default=100)
    ap.add_argument("--input-range", default=None, help="ladder/disagg prompt lengths A:B (default 32:512 / 64:512)")
    ap.add_argument("--output-choices", default="64,128,256", help="ladder output lengths")
    ap.add_argument("--num-kv-blocks", type=int, default=0,
                    help="ladder: the same KV pool for every mode (0: the server's default budget)")
    ap.add_argument("--rate", type=float, default=1.0, help="disagg: requests/s")
    ap.add_argument("--slo-ttft-ms", type=float, default=2000)
    ap.add_argument("--slo-tpot-ms", type=float, default=100)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    {"target": run_target, "ladder": run_ladder, "disagg": run_disagg}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
