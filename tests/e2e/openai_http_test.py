#!/usr/bin/env python3
"""End-to-end: the OpenAI-compatible HTTP API of `tandem serve --http-port 0`
with curl and raw sockets (the official SDK's test is
clients/node/test/openai_http.test.js, on `tandem up`).

Checks, against `tandem generate` on the same model:
  - GET /v1/models, /health; POST /v1/completions whole and streamed (the SSE
    framing byte by byte: `data: {json}\\n\\n` events, then `data: [DONE]`),
    token-id prompts, n > 1, chat completions;
  - errors: OpenAI's JSON error object with 400 / 404 / 405 / 413 statuses;
    garbage on the socket; the server serves on afterwards;
  - a client that disconnects (streamed or not) cancels its request: the
    engine's running count and KV blocks return to idle, counted as
    cancelled in tandem_requests_total and 499 in tandem_http_requests_total;
  - 64 concurrent streams all get the reference text.

Every server listens on 127.0.0.1 and is stopped by its PID.

  tests/e2e/openai_http_test.py --tandem build/bin/tandem --work DIR
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_util import Proc, free_port, metric  # noqa: E402
from serve_util import FAILED, PASSED, check, generate_one  # noqa: E402

PROMPT = "ROMEO:"
MODEL = "tandem-shakespeare"


def curl(*args, timeout=120):
    """curl -sS with `args`; returns (http status, body)."""
    p = subprocess.run(["curl", "-sS", "--max-time", str(timeout), "-w", "\n%{http_code}"] + list(args),
                       capture_output=True, text=True, timeout=timeout + 10)
    body, _, code = p.stdout.rpartition("\n")
    return int(code or 0), body


def post(base, path, body, *extra):
    return curl("-H", "Content-Type: application/json", "-d", json.dumps(body), *extra, base + path)


def sse_events(raw):
    """The payloads of an SSE body; asserts the framing."""
    assert raw.endswith("\n\n"), repr(raw[-40:])
    events = raw[:-2].split("\n\n")
    out = []
    for e in events:
        assert e.startswith("data: "), repr(e)
        out.append(e[len("data: "):])
    return out


def wait_for(fn, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.1)
    return fn()


def raw_request(port, data, read_until=None, timeout=30):
    """Sends `data` on a fresh socket; returns what came back (up to `read_until` if given)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
            if read_until is not None and read_until in got:
                break
        return got


def custom_template_and_name(args, ref):
    """--chat-template FILE and --served-model-name: a template that renders
    BOS + PROMPT whatever the messages makes chat equal the completion of
    PROMPT (the template's BOS text is the BOS token, not added twice)."""
    template = os.path.join(args.work, "fixed.jinja")
    with open(template, "w") as f:
        f.write("{{ bos_token }}" + PROMPT)
    srv = Proc("serve-custom", [args.tandem, "serve", "--host", "127.0.0.1", "--port", "0", "--http-port", "0",
                                "--chat-template", template, "--served-model-name", "bard"],
               os.path.join(args.work, "serve_custom.log"))
    try:
        m = srv.wait_line(r"OpenAI HTTP API on 127\.0\.0\.1:(\d+) \(model bard\)", timeout=120)
        if not check("--served-model-name names the model", m is not None, srv.log_tail()):
            return
        base = "http://127.0.0.1:%s" % m.group(1)
        code, body = curl(base + "/v1/models")
        check("/v1/models lists the served name", code == 200 and json.loads(body)["data"][0]["id"] == "bard", body)
        code, body = post(base, "/v1/chat/completions", {
            "model": "bard", "messages": [{"role": "user", "content": "ignored"}], "max_tokens": 16,
            "temperature": 0, "ignore_eos": True})
        reply = json.loads(body)
        check("--chat-template: chat equals the completion of the rendered prompt",
              code == 200 and reply["choices"][0]["message"]["content"] == ref["text"] and
              reply["usage"]["prompt_tokens"] == len(ref["prompt_token_ids"]), (code, body, ref["text"]))
        code, body = post(base, "/v1/completions", {"model": MODEL, "prompt": PROMPT})
        check("the directory's name is not served under another name", code == 404, (code, body))
    finally:
        check("serve (custom) exits 0 on SIGTERM", srv.stop() == 0, srv.log_tail())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)

    ref = generate_one(args, PROMPT, "--temperature", "0", "--ignore-eos", "--max-tokens", "16")
    metrics_port = free_port()
    srv = Proc("serve", [args.tandem, "serve", "--host", "127.0.0.1", "--port", "0", "--http-port", "0",
                         "--metrics-port", str(metrics_port)], os.path.join(args.work, "serve.log"))
    try:
        m = srv.wait_line(r"OpenAI HTTP API on 127\.0\.0\.1:(\d+) \(model (\S+)\)", timeout=120)
        if not check("serve prints its HTTP API line", m is not None, srv.log_tail()):
            return 1
        port = int(m.group(1))
        check("the model id is the model directory's name", m.group(2) == MODEL, m.group(2))
        if not check("serve listens", srv.wait_line(r"listening on", timeout=60) is not None, srv.log_tail()):
            return 1
        base = "http://127.0.0.1:%d" % port

        code, body = curl(base + "/health")
        check("GET /health: 200", code == 200, (code, body))
        code, body = curl(base + "/v1/models")
        models = json.loads(body)
        check("GET /v1/models lists the model", code == 200 and [d["id"] for d in models["data"]] == [MODEL], body)

        greedy = {"model": MODEL, "prompt": PROMPT, "max_tokens": 16, "temperature": 0, "ignore_eos": True}
        code, body = post(base, "/v1/completions", greedy)
        whole = json.loads(body)
        check("completion: text equals tandem generate", code == 200 and whole["choices"][0]["text"] == ref["text"],
              (code, body, ref["text"]))
        check("completion: usage", whole["usage"] == {"prompt_tokens": len(ref["prompt_token_ids"]),
                                                       "completion_tokens": 16,
                                                       "total_tokens": len(ref["prompt_token_ids"]) + 16},
              whole.get("usage"))
        code, body = post(base, "/v1/completions", dict(greedy, prompt=ref["prompt_token_ids"]))
        check("completion of token ids: same text", code == 200 and json.loads(body)["choices"][0]["text"] == ref["text"],
              body)

        code, body = post(base, "/v1/completions", dict(greedy, stream=True, stream_options={"include_usage": True}), "-N")
        try:
            events = sse_events(body)
            framing = True
        except AssertionError as e:
            events, framing = [], str(e)
        check("stream: SSE framing", code == 200 and framing is True, (code, framing))
        if events:
            check("stream: ends with [DONE]", events[-1] == "[DONE]", events[-3:])
            chunks = [json.loads(e) for e in events[:-1]]
            text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
            check("stream: text equals tandem generate", text == ref["text"], (text, ref["text"]))
            check("stream: usage last, with no choices", chunks[-1]["choices"] == [] and
                  chunks[-1]["usage"]["completion_tokens"] == 16, chunks[-1])
            check("stream: the finish reason on the last choice chunk",
                  chunks[-2]["choices"][0]["finish_reason"] == "length", chunks[-2])

        code, body = post(base, "/v1/completions", dict(greedy, n=3, seed=1, temperature=1.0, max_tokens=8))
        out = json.loads(body)
        check("n=3: three choices, indexed", code == 200 and [c["index"] for c in out["choices"]] == [0, 1, 2], body)
        check("n=3: usage counts every choice", out["usage"]["completion_tokens"] == 24, out.get("usage"))

        chat = {"model": MODEL, "messages": [{"role": "user", "content": "Who art thou?"}], "max_tokens": 8,
                "temperature": 0, "ignore_eos": True}
        code, body = post(base, "/v1/chat/completions", chat)
        reply = json.loads(body)
        check("chat: an assistant message", code == 200 and reply["choices"][0]["message"]["role"] == "assistant" and
              reply["usage"]["completion_tokens"] == 8, body)

        # Errors: OpenAI's object and status.
        code, body = post(base, "/v1/completions", dict(greedy, temperature=-1))
        err = json.loads(body).get("error", {})
        check("400 names the parameter", code == 400 and err.get("param") == "temperature" and
              err.get("type") == "invalid_request_error", (code, body))
        code, body = post(base, "/v1/completions", dict(greedy, model="nope"))
        check("404 for another model", code == 404 and "nope" in json.loads(body)["error"]["message"], (code, body))
        code, body = curl(base + "/v1/completions")
        check("405 for GET on a POST route", code == 405, (code, body))
        code, body = curl("-H", "Content-Type: application/json", "--data-binary", "{not json", base + "/v1/completions")
        check("400 for malformed JSON", code == 400 and json.loads(body)["error"]["message"] == "body: not valid JSON",
              (code, body))
        big = os.path.join(args.work, "big.json")
        with open(big, "w") as f:
            f.write('{"prompt": "' + "a" * (9 << 20) + '"}')
        code, body = curl("-H", "Content-Type: application/json", "--data-binary", "@" + big, base + "/v1/completions")
        check("413 for a body over 8 MiB", code == 413, (code, body[:200]))
        garbage = raw_request(port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        check("garbage on the socket: 400 and closed", garbage.startswith(b"HTTP/1.1 400"), garbage[:200])

        # Disconnects cancel.
        running = lambda: metric(metrics_port, "tandem_num_requests_running")  # noqa: E731
        used = lambda: metric(metrics_port, "tandem_kv_blocks_used")  # noqa: E731
        idle_blocks = used()
        cancelled0 = metric(metrics_port, "tandem_requests_total", status="cancelled")
        # Eight choices to the end of the bundled model's 256-token context:
        # still running long after the first event.
        long = dict(greedy, max_tokens=250, n=8)
        req = json.dumps(dict(long, stream=True)).encode()
        head = ("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n\r\n" % len(req)).encode()
        got = raw_request(port, head + req, read_until=b'"text":', timeout=60)
        check("a long stream starts", b"200 OK" in got and b'"text":' in got, got[:300])
        check("a streamed request whose client left is cancelled (its 8 choices)",
              wait_for(lambda: metric(metrics_port, "tandem_requests_total", status="cancelled") == cancelled0 + 8),
              metric(metrics_port, "tandem_requests_total", status="cancelled"))
        req = json.dumps(long).encode()
        head = ("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n\r\n" % len(req)).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(head + req)
            wait_for(lambda: running() == 8, timeout=30)
        check("a whole request whose client left is cancelled (its 8 choices)",
              wait_for(lambda: metric(metrics_port, "tandem_requests_total", status="cancelled") == cancelled0 + 16),
              metric(metrics_port, "tandem_requests_total", status="cancelled"))
        check("nothing runs and no KV block is held after the disconnects",
              wait_for(lambda: running() == 0 and used() == idle_blocks), (running(), used(), idle_blocks))
        check("499 counted for the disconnects",
              metric(metrics_port, "tandem_http_requests_total", endpoint="completions", code="499") == 2)

        # Keep-alive: two requests on one connection.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        statuses = []
        for _ in range(2):
            conn.request("POST", "/v1/completions", body=json.dumps(dict(greedy, max_tokens=2)),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            statuses.append(r.status)
        conn.close()
        check("keep-alive: two requests on one connection", statuses == [200, 200], statuses)

        # 64 concurrent streams.
        def one_stream(_):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            c.request("POST", "/v1/completions", body=json.dumps(dict(greedy, stream=True)),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            raw = r.read().decode()
            c.close()
            evs = sse_events(raw)
            return r.status, "".join(json.loads(e)["choices"][0]["text"] for e in evs[:-1]), evs[-1]

        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            results = list(pool.map(one_stream, range(64)))
        check("64 concurrent streams: all 200, [DONE], reference text",
              all(r == (200, ref["text"], "[DONE]") for r in results),
              [r for r in results if r != (200, ref["text"], "[DONE]")][:3])
        check("the server is still healthy", curl(base + "/health")[0] == 200)
    finally:
        rc = srv.stop()
    check("serve exits 0 on SIGTERM", rc == 0, srv.log_tail())
    custom_template_and_name(args, ref)
    print("openai_http_test: %d passed, %d failed" % (len(PASSED), len(FAILED)))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
