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
  compare  side by side with llama.cpp: `tandem up` with its default flags
           (only --model) through tandem-bench's gRPC backend, then, given
           --llama-server BIN --gguf FILE, llama-server (-np <concurrency>,
           flash attention, -c <concurrency * (in + out + 16)>, -t
           <threads>) through tandem-bench --backend openai, on the same
           workload (default: the target's, greedy, same seed).
  routing  issue 18's acceptance: `tandem up` with 2 prefill + 2 decode
           workers (default flags), `--routing kv-aware` against
           `--routing least-loaded`, alternated --repeats times, one cluster
           per run, on 64 prompts of one of 8 shared 384-token prefixes + 64
           tokens, 16 output tokens, concurrency 8; prints each run and the
           ratio of the medians (TTFT p50, output tok/s).

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
import socket
import threading
import time
import urllib.error
import urllib.request

BENCH_TIMEOUT_S = 1800  # the longest a single tandem-bench run may take


def stop_child(proc, log):
    """SIGTERM `proc` by its PID, SIGKILL its process group after 10 s; close its log."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    log.close()


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
        stop_child(self.proc, self.log)


def up(args, extra):
    argv = [os.path.join(args.bin_dir, "tandem"), "up", "--port", "0", "--model", args.model] + extra
    return Server(argv, r"tandem up: ready on (127\.0\.0\.1:\d+)", os.path.join(args.out, "server.log"))


def serve(args, extra):
    argv = [os.path.join(args.bin_dir, "tandem"), "serve", "--port", "0", "--host", "127.0.0.1",
            "--model", args.model] + extra
    return Server(argv, r"listening on (127\.0\.0\.1:\d+)", os.path.join(args.out, "server.log"))


def bench(args, addr, name, flags):
    """Runs tandem-bench at `addr` (gRPC), or with the backend given in `flags` when addr is None."""
    out = os.path.join(args.out, name + ".json")
    argv = [os.path.join(args.bin_dir, "tandem-bench")] + (["--addr", addr] if addr else []) + [
        "--max-model-len", str(args.max_model_len), "--vocab-size", str(args.vocab_size), "--json-out", out] + flags
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


def run_routing(args):
    print(cpu_summary() + "\n", flush=True)
    workload = ["--dataset", "prefix", "--prefix-len", "384", "--num-prefixes", "8", "--input-len", "64",
                "--output-len", "16", "--num-requests", str(args.num_requests), "--concurrency", "8", "--ignore-eos",
                "--seed", "1", "--temperature", "0"]
    cluster = ["--prefill-workers", "2", "--decode-workers", "2"]
    if args.num_kv_blocks:
        cluster += ["--num-kv-blocks", str(args.num_kv_blocks)]
    modes = ("kv-aware", "least-loaded")
    runs = {m: [] for m in modes}
    for rep in range(args.repeats):
        for mode in modes:  # alternated, so a noisy stretch of the host hits both
            srv = up(args, cluster + ["--routing", mode])
            try:
                runs[mode].append(point(bench(args, srv.addr, "%s-%d" % (mode, rep), workload)))
            finally:
                srv.stop()

    def median(xs):
        xs = sorted(xs)
        n = len(xs)
        return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    ttft = {m: [r["ttft_ms"]["p50"] for r in runs[m]] for m in modes}
    tput = {m: [r["output_throughput"] for r in runs[m]] for m in modes}
    print("\n| | kv-aware | least-loaded | ratio (medians) |")
    print("|---|---|---|---|")
    print("| TTFT p50 (ms) | %s (median %.0f) | %s (median %.0f) | **%.2fx** |" % (
        ", ".join("%.0f" % x for x in ttft["kv-aware"]), median(ttft["kv-aware"]),
        ", ".join("%.0f" % x for x in ttft["least-loaded"]), median(ttft["least-loaded"]),
        median(ttft["least-loaded"]) / median(ttft["kv-aware"])))
    print("| output tok/s | %s (median %.1f) | %s (median %.1f) | %.2fx |" % (
        ", ".join("%.1f" % x for x in tput["kv-aware"]), median(tput["kv-aware"]),
        ", ".join("%.1f" % x for x in tput["least-loaded"]), median(tput["least-loaded"]),
        median(tput["kv-aware"]) / median(tput["least-loaded"])))


class LlamaServer:
    """A llama-server child on 127.0.0.1 at a free port, ready once GET /health answers 200."""

    def __init__(self, binary, argv, log_path, ready_timeout_s=600):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.argv = [binary] + argv + ["--host", "127.0.0.1", "--port", str(self.port)]
        print("$ " + " ".join(self.argv), flush=True)
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/health" % self.port, timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or 503 while the model loads
            time.sleep(0.5)
        self.stop()
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise RuntimeError("llama-server did not become healthy: %s\n%s" % (" ".join(self.argv), tail))

    @property
    def base_url(self):
        return "http://127.0.0.1:%d/v1" % self.port

    def stop(self):
        stop_child(self.proc, self.log)


def cpu_summary():
    """lscpu's model name line and whether the CPU has AMX / AVX512-BF16."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        lscpu = ""
    name = next((line.strip() for line in lscpu.splitlines() if line.startswith("Model name")), "Model name: ?")
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    amx = sorted(f for f in flags if f.startswith("amx"))
    return "%s\nAMX: %s; AVX512-BF16: %s; cores available: %d" % (
        re.sub(r"\s+", " ", name), ", ".join(amx) if amx else "no", "yes" if "avx512_bf16" in flags else "no",
        len(os.sched_getaffinity(0)))


def llama_flash_attn(binary):
    """The flash-attention flag as this build spells it: `-fa on` (newer) or `-fa` (older, boolean)."""
    r = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60)
    line = next((x for x in (r.stdout + r.stderr).splitlines() if "--flash-attn" in x), "")
    if not line:
        return []
    return ["-fa", "on"] if re.search(r"on\|off|\[on", line) else ["-fa"]


def run_compare(args):
    print(cpu_summary() + "\n", flush=True)
    c, n_in, n_out = args.concurrency, args.input_len, args.output_len
    workload = ["--num-requests", str(args.num_requests), "--concurrency", str(c), "--input-len", str(n_in),
                "--output-len", str(n_out), "--seed", str(args.seed), "--temperature", str(args.temperature)]
    if args.ignore_eos:
        workload.append("--ignore-eos")
    rows = []
    srv = up(args, [])  # Tandem's defaults: only --model
    try:
        rows.append(("Tandem (`tandem up`, defaults)", point(bench(args, srv.addr, "compare-tandem", workload))))
    finally:
        srv.stop()
    if args.llama_server and args.gguf:
        threads = args.threads or len(os.sched_getaffinity(0))
        argv = ["-m", args.gguf, "-np", str(c)] + llama_flash_attn(args.llama_server) + [
            "-c", str(c * (n_in + n_out + args.llama_ctx_slack)), "-t", str(threads)]
        llama = LlamaServer(args.llama_server, argv, os.path.join(args.out, "llama-server.log"))
        try:
            rows.append(("llama-server (%s)" % os.path.basename(args.gguf), point(bench(
                args, None, "compare-llama-server", ["--backend", "openai", "--base-url", llama.base_url] + workload))))
        finally:
            llama.stop()
    elif args.llama_server or args.gguf:
        raise SystemExit("compare: give both --llama-server BIN and --gguf FILE (or neither)")
    for name, r in rows:
        if r["failed"]:
            print("warning: %s: %d requests failed: %s" % (name, r["failed"], json.dumps(r["failures"])))
    print("\n%d requests, %d prompt + %d output tokens, concurrency %d, %s, seed %d, temperature %s\n" % (
        args.num_requests, n_in, n_out, c, "ignore_eos" if args.ignore_eos else "eos allowed", args.seed,
        args.temperature))
    cols = [("output tok/s", lambda r: r["output_throughput"], "%.1f"),
            ("TTFT p50 (ms)", lambda r: r["ttft_ms"]["p50"], "%.0f"),
            ("TTFT p99 (ms)", lambda r: r["ttft_ms"]["p99"], "%.0f"),
            ("ITL p50 (ms)", lambda r: r["itl_ms"]["p50"], "%.1f"),
            ("ITL p99 (ms)", lambda r: r["itl_ms"]["p99"], "%.1f"),
            ("req/s", lambda r: r["request_throughput"], "%.3f"),
            ("completed", lambda r: r["completed"], "%d")]

    def value(r, get):
        try:
            return get(r)
        except (KeyError, TypeError):  # a summary is null when nothing completed
            return float("nan")

    print("| server | " + " | ".join(name for name, _, _ in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, r in rows:
        print("| %s | " % name + " | ".join(fmt % value(r, get) for _, get, fmt in cols) + " |")
    if len(rows) == 2:
        ratios = []
        for _, get, _ in cols[:-1]:
            a, b = value(rows[0][1], get), value(rows[1][1], get)
            ratios.append("%.2fx" % (a / b) if b else "n/a")
        print("| Tandem / llama-server | " + " | ".join(ratios) + " | |")
    print("\n(output tok/s and req/s: higher is better; TTFT and ITL: lower is better. JSON in %s)" % args.out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["target", "ladder", "disagg", "compare", "routing"])
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
    ap.add_argument("--num-requests", type=int, default=None, help="ladder/disagg default 100, compare/routing 64")
    ap.add_argument("--input-range", default=None, help="ladder/disagg prompt lengths A:B (default 32:512 / 64:512)")
    ap.add_argument("--output-choices", default="64,128,256", help="ladder output lengths")
    ap.add_argument("--num-kv-blocks", type=int, default=0,
                    help="ladder: the same KV pool for every mode; routing: each worker's pool "
                         "(0: the server's default budget)")
    ap.add_argument("--repeats", type=int, default=2, help="routing: runs of each policy (default 2)")
    ap.add_argument("--rate", type=float, default=1.0, help="disagg: requests/s")
    ap.add_argument("--slo-ttft-ms", type=float, default=2000)
    ap.add_argument("--slo-tpot-ms", type=float, default=100)
    cmp = ap.add_argument_group("compare")
    cmp.add_argument("--llama-server", default="", help="the llama-server binary (with --gguf: run it too)")
    cmp.add_argument("--gguf", default="", help="the same model as a GGUF file, for llama-server")
    cmp.add_argument("--threads", type=int, default=0, help="llama-server -t (default: the cores available)")
    cmp.add_argument("--llama-ctx-slack", type=int, default=16,
                     help="llama-server -c is concurrency * (input + output + this) (default 16)")
    cmp.add_argument("--concurrency", type=int, default=16)
    cmp.add_argument("--input-len", type=int, default=256)
    cmp.add_argument("--output-len", type=int, default=128)
    cmp.add_argument("--seed", type=int, default=1)
    cmp.add_argument("--temperature", type=float, default=0.0, help="both servers (default 0: greedy)")
    cmp.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false",
                     help="let requests stop at EOS (default: ignore_eos, exact lengths)")
    args = ap.parse_args()
    if args.num_requests is None:
        args.num_requests = 64 if args.what in ("compare", "routing") else 100
    os.makedirs(args.out, exist_ok=True)
    {"target": run_target, "ladder": run_ladder, "disagg": run_disagg, "compare": run_compare,
     "routing": run_routing}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
