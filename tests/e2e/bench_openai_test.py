#!/usr/bin/python3
"""tandem-bench --backend openai against a fake OpenAI-compatible server.

Run by CTest (label integration, tests/e2e/bench.cmake). Tandem has no HTTP
API yet, so this file is also the server: `bench_openai_test.py --serve` is a
standard-library ThreadingHTTPServer on 127.0.0.1 (port 0, printed on stdout)
that speaks the streamed /v1/completions shape: one SSE event per token,
DELAY_MS apart, then usage and `data: [DONE]`. The "model" field of a request
picks its behaviour (see Handler.do_POST). Every POST body and Authorization
header is appended to a file the checks read. The test starts it, always
stops it by PID, and asserts counts, request bodies and orderings, never
timing values. Prints one PASS/FAIL line per check, then "N passed, M failed";
exits non-zero on any failure.

  bench_openai_test.py --bench build/bin/tandem-bench --work DIR
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DELAY_MS = 50  # between a stream's events (model "fast": 5)
MODEL = "fake-model"  # the first (only) id of GET /v1/models

PASSED, FAILED = [], []


def check(name, cond, detail=""):
    (PASSED if cond else FAILED).append(name)
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else ": " + str(detail)[:2000]), flush=True)
    return cond


# ------------------------------------------------------------------ the fake server


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, as real servers

    def log_message(self, *args):
        pass

    def send_json(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}, {"id": "other"}]})
        elif self.path == "/stats":
            with self.server.lock:
                self.send_json(200, {"peak": self.server.peak})
        else:
            self.send_json(404, {"error": {"message": "no route " + self.path}})

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def event(self, obj):
        self.chunk(b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.lock:
            with open(self.server.bodies, "a") as f:
                f.write(json.dumps({"path": self.path, "auth": self.headers.get("Authorization"),
                                    "body": body.decode()}) + "\n")
        req = json.loads(body)
        model, n = req.get("model"), req.get("max_tokens", 16)
        if self.path != "/v1/completions":
            return self.send_json(404, {"error": {"message": "no route " + self.path}})
        if model == "error400":
            return self.send_json(400, {"error": {"code": 400, "type": "invalid_request_error",
                                                  "message": "the prompt is too long for this fake"}})
        if model == "slow":
            time.sleep(3)
        with self.server.lock:
            self.server.active += 1
            self.server.peak = max(self.server.peak, self.server.active)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.stream(req, model, n)
            self.chunk(b"")  # the last chunk
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout check)
        finally:
            with self.server.lock:
                self.server.active -= 1

    def stream(self, req, model, n):
        """fake-model (OpenAI/vLLM shape): n token events, the last with finish_reason, then a
        choices-less usage event. llama-style: n token events, then an empty-text event carrying
        finish_reason and usage. no-usage: n events, no usage. midstream-error: 2 events, an error
        event in data. llama-error: 2 events, an `error:` event, [DONE] (llama-server's KV-full error)."""
        delay = (5 if model == "fast" else DELAY_MS) / 1000.0
        usage = {"prompt_tokens": len(req["prompt"]), "completion_tokens": n, "total_tokens": len(req["prompt"]) + n}
        for i in range(n):
            if i:
                time.sleep(delay)
            if model == "midstream-error" and i == 2:
                self.event({"error": {"message": "slot crashed", "code": 500}})
                return
            if model == "llama-error" and i == 2:  # llama-server's shape: an `error:` field, then [DONE]
                self.chunk(b'error: {"code": 500, "message": "Input prompt is too big compared to KV size.", '
                           b'"type": "server_error"}\n\n')
                break
            last = i == n - 1 and model not in ("llama-style",)
            text = "" if i == 1 else "t%d" % i  # a token may decode to no text
            self.event({"id": "cmpl-1", "object": "text_completion", "model": model,
                        "choices": [{"index": 0, "text": text, "finish_reason": "length" if last else None}]})
        if model == "llama-error":
            pass
        elif model == "llama-style":
            self.event({"choices": [{"index": 0, "text": "", "finish_reason": "length"}], "usage": usage})
        elif model != "no-usage" and req.get("stream_options", {}).get("include_usage"):
            self.event({"choices": [], "usage": usage})
        self.event(b"[DONE]")


def serve(bodies):
    srv = ThreadingHTTPServer.__new__(ThreadingHTTPServer)
    srv.request_queue_size = 256  # 64 streams connect at once
    srv.daemon_threads = True
    ThreadingHTTPServer.__init__(srv, ("127.0.0.1", 0), Handler)
    srv.lock, srv.bodies, srv.active, srv.peak = threading.Lock(), bodies, 0, 0
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


# ------------------------------------------------------------------ the checks


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bench:
    def __init__(self, args, port):
        self.args, self.port, self.count = args, port, 0
        self.bodies = os.path.join(args.work, "bodies.jsonl")

    def run(self, flags, port=None, timeout=120):
        """Runs tandem-bench; returns (rc, stdout, stderr, json or None, [request records the server saw])."""
        self.count += 1
        out = os.path.join(self.args.work, "run%02d.json" % self.count)
        open(self.bodies, "w").close()
        cmd = [self.args.bench, "--backend", "openai", "--base-url",
               "http://127.0.0.1:%d/v1/" % (port or self.port), "--json-out", out, "--json-detailed"] + flags
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        data = None
        if os.path.exists(out):
            with open(out) as f:
                data = json.load(f)
        with open(self.bodies) as f:
            seen = [json.loads(line) for line in f]
        for s in seen:
            s["body"] = json.loads(s["body"])
        return p.returncode, p.stdout, p.stderr, data, seen

    def stats(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/stats" % self.port, timeout=10) as r:
            return json.load(r)


SHORT = ["--input-len", "16", "--output-len", "8", "--vocab-size", "500", "--seed", "4"]


def expect_complete(name, res, n, out_len, in_len, chunks):
    rc, stdout, stderr, j, seen = res
    if not check("%s: exit 0 and JSON written" % name, rc == 0 and j is not None, (rc, stderr)):
        return None
    reqs = j["requests"]
    check("%s: %d completed, none failed" % (name, n), j["completed"] == n and j["failed"] == 0 and len(reqs) == n,
          {k: j[k] for k in ("completed", "failed", "failures")})
    check("%s: every request has exactly %d output tokens (usage and count agree)" % (name, out_len),
          all(r["output_tokens"] == out_len == r["requested_output_tokens"] == r["usage_completion_tokens"]
              and r["finish_reason"] == "length" and r["status"] == "OK" for r in reqs), reqs[:2])
    check("%s: usage.prompt_tokens == prompt ids sent" % name,
          all(r["usage_prompt_tokens"] == r["requested_input_tokens"] == in_len for r in reqs), reqs[:2])
    check("%s: %d stamped events per request" % (name, chunks), all(r["num_chunks"] == chunks for r in reqs),
          [r["num_chunks"] for r in reqs])
    check("%s: TTFT and one ITL sample per token after the first, per request" % name,
          all(r["ttft_ms"] is not None and len(r["itls_ms"]) == out_len - 1 and all(x >= 0 for x in r["itls_ms"])
              for r in reqs), reqs[:2])
    check("%s: 0 <= TTFT <= E2E, TTFT + sum(ITL) <= E2E" % name,
          all(0 <= r["ttft_ms"] <= r["e2e_ms"] and r["ttft_ms"] + sum(r["itls_ms"]) <= r["e2e_ms"] + 1e-6
              for r in reqs), reqs[:2])
    check("%s: totals" % name, j["total_output_tokens"] == n * out_len and j["total_input_tokens"] == n * in_len
          and j["ttft_ms"]["count"] == n and j["itl_ms"]["count"] == n * (out_len - 1), j)
    check("%s: the server saw %d POST /v1/completions" % (name, n),
          len(seen) == n and all(s["path"] == "/v1/completions" for s in seen), len(seen))
    return j


def check_basic(b):
    """Model from GET /models; the OpenAI/vLLM stream shape; the exact request bodies."""
    res = b.run(["--num-requests", "6", "--concurrency", "3", "--ignore-eos"] + SHORT)
    j = expect_complete("basic", res, 6, 8, 16, 8)
    if not j:
        return None
    stdout, seen = res[1], res[4]
    check("basic: the model is the first id of /v1/models",
          "model fake-model" in stdout and j["config"]["model"] == MODEL and j["config"]["backend"] == "openai"
          and j["config"]["base_url"] == "http://127.0.0.1:%d/v1" % b.port, (stdout, j["config"]))
    bodies = [s["body"] for s in seen]
    check("basic: body fields exactly as asked",
          all(set(x) == {"model", "prompt", "max_tokens", "stream", "stream_options", "temperature", "ignore_eos"}
              and x["model"] == MODEL and x["max_tokens"] == 8 and x["stream"] is True and x["ignore_eos"] is True
              and x["stream_options"] == {"include_usage": True} and x["temperature"] == 0 for x in bodies), bodies[:2])
    check("basic: prompts are 16 integer ids in [3, 500)",
          all(len(x["prompt"]) == 16 and all(isinstance(t, int) and 3 <= t < 500 for t in x["prompt"])
              for x in bodies), bodies[:2])
    check("basic: no Authorization header without a key", all(s["auth"] is None for s in seen), seen[:1])
    return sorted(x["prompt"] for x in bodies)


def check_llama_style(b, prompts):
    """llama-server's shape (a final empty-text event with finish_reason and usage): that event is
    stamped but carries no token; the same seed sends the same prompt ids; key, temperature."""
    res = b.run(["--num-requests", "6", "--concurrency", "6", "--model", "llama-style", "--api-key", "sk-test",
                 "--temperature", "0.5"] + SHORT)
    if not expect_complete("llama-style", res, 6, 8, 16, 9):
        return
    seen = res[4]
    bodies = [s["body"] for s in seen]
    check("llama-style: the same seed sends exactly the same prompt ids", prompts is not None
          and sorted(x["prompt"] for x in bodies) == prompts, bodies[:1])
    check("llama-style: --model, --temperature, no ignore_eos without --ignore-eos",
          all(x["model"] == "llama-style" and x["temperature"] == 0.5 and "ignore_eos" not in x for x in bodies),
          bodies[:1])
    check("llama-style: Authorization: Bearer KEY", all(s["auth"] == "Bearer sk-test" for s in seen), seen[:1])
    other = b.run(["--num-requests", "6", "--model", "llama-style", "--input-len", "16", "--output-len", "8",
                   "--vocab-size", "500", "--seed", "5"])[4]
    check("llama-style: another seed sends other ids", sorted(s["body"]["prompt"] for s in other) != prompts)


def check_lengths(b):
    res = b.run(["--num-requests", "5", "--model", "no-usage", "--input-len-range", "4:40", "--output-len-range",
                 "1:12", "--ignore-eos", "--seed", "2", "--vocab-size", "500"])
    rc, _, stderr, j, seen = res
    if not check("no-usage: exit 0", rc == 0 and j is not None and j["completed"] == 5, (rc, stderr, j)):
        return
    reqs = j["requests"]
    check("no-usage: output tokens == events (no usage sent)",
          all(r["output_tokens"] == r["num_chunks"] == r["requested_output_tokens"] == r["usage_completion_tokens"]
              for r in reqs), reqs)
    check("no-usage: max_tokens and prompt lengths in the bodies are the requested ones",
          sorted((len(s["body"]["prompt"]), s["body"]["max_tokens"]) for s in seen)
          == sorted((r["requested_input_tokens"], r["requested_output_tokens"]) for r in reqs), seen)


def expect_failed(name, res, n, code, words):
    rc, stdout, stderr, j, _ = res
    if not check("%s: exit 0 and JSON written" % name, rc == 0 and j is not None, (rc, stderr)):
        return
    f = j["failures"]
    check("%s: %d failed, all %s" % (name, n, code),
          j["completed"] == 0 and j["failed"] == n and list(f) == [code] and f[code]["count"] == n
          and all(r["status"] == code for r in j["requests"]), f)
    check("%s: the message says %s" % (name, words),
          all(w in f.get(code, {}).get("first_message", "") for w in words)
          and all(all(w in r.get("error", "") for w in words) for r in j["requests"]), f)
    check("%s: no tokens counted" % name, j["total_output_tokens"] == 0 and j["ttft_ms"] is None, j)
    check("%s: the table lists the status" % name, code in stdout, stdout)


def check_errors(b):
    expect_failed("HTTP 400", b.run(["--num-requests", "3", "--model", "error400"] + SHORT), 3,
                  "INVALID_ARGUMENT", ["HTTP 400", "the prompt is too long for this fake"])
    expect_failed("error event mid-stream", b.run(["--num-requests", "2", "--model", "midstream-error"] + SHORT), 2,
                  "INTERNAL", ["slot crashed"])
    expect_failed("llama-server's error: event", b.run(["--num-requests", "2", "--model", "llama-error"] + SHORT),
                  2, "INTERNAL", ["error event: Input prompt is too big compared to KV size."])
    expect_failed("timeout", b.run(["--num-requests", "2", "--model", "slow", "--timeout-s", "1"] + SHORT), 2,
                  "DEADLINE_EXCEEDED", ["imeout"])
    port = free_port()
    expect_failed("connection refused", b.run(["--num-requests", "3", "--model", "m"] + SHORT, port=port), 3,
                  "UNAVAILABLE", ["onnect"])
    rc, _, stderr, j, _ = b.run(["--num-requests", "1"] + SHORT, port=port)
    check("no server and no --model: exit 1 naming /models and --model, nothing run",
          rc == 1 and "/v1/models" in stderr and "--model" in stderr and j is None, (rc, stderr))


def check_many(b):
    res = b.run(["--num-requests", "64", "--model", "fast", "--input-len", "8", "--output-len", "16",
                 "--ignore-eos", "--vocab-size", "500"])
    expect_complete("64 concurrent streams", res, 64, 16, 8, 16)
    peak = b.stats()["peak"]
    check("64 concurrent streams: the server had many in flight at once (peak %d)" % peak, peak >= 32, peak)


def check_flags(b):
    p = subprocess.run([b.args.bench, "--backend", "openai"], capture_output=True, text=True, timeout=30)
    check("--backend openai without --base-url: exit 2 naming it", p.returncode == 2 and "--base-url" in p.stderr,
          p.stderr)
    p = subprocess.run([b.args.bench, "--help"], capture_output=True, text=True, timeout=30)
    check("--help lists --backend, --base-url, --model", p.returncode == 0 and all(
        f in p.stdout for f in ("--backend", "--base-url", "--model")), p.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve", metavar="BODIES", help="run the fake server, recording bodies to this file")
    ap.add_argument("--bench")
    ap.add_argument("--work")
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    t0 = time.monotonic()
    srv = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve",
                            os.path.join(args.work, "bodies.jsonl")], stdout=subprocess.PIPE, text=True)
    try:
        port = int(srv.stdout.readline())
        b = Bench(args, port)
        for step in (check_flags, lambda b: check_llama_style(b, check_basic(b)), check_lengths, check_errors,
                     check_many):
            try:
                step(b)
            except Exception:  # noqa: BLE001
                check("%s ran without an exception" % getattr(step, "__name__", "step"), False,
                      traceback.format_exc())
            if srv.poll() is not None:
                check("fake server still running", False, srv.returncode)
                break
    finally:
        if srv.poll() is None:
            os.kill(srv.pid, signal.SIGTERM)
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(srv.pid, signal.SIGKILL)
            srv.wait(timeout=10)
    print("(%.1fs)" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (len(PASSED), len(FAILED)))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
