#!/usr/bin/python3
"""End-to-end checks of `tandem serve` through the Python client (clients/python).

Run by CTest (label e2e, tests/e2e/serve.cmake). Starts `tandem serve --port 0`
on 127.0.0.1 itself (and a second one with a 16-block KV pool for the leak
checks), always stops them by PID, and compares what the server streams with
what `tandem generate` computes in-process. Prints one PASS/FAIL line per
check, then "N passed, M failed"; exits non-zero on any failure.

  serve_test.py --tandem build/bin/tandem --source . --work DIR
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_util import PASSAGES, ServeProc, decode, field_bytes, make_prompts, malformed_requests, varint  # noqa: E402

PASSED, FAILED = [], []
_print_lock = threading.Lock()


def check(name, cond, detail=""):
    (PASSED if cond else FAILED).append(name)
    with _print_lock:
        print(("PASS " if cond else "FAIL ") + name + ("" if cond else ": " + str(detail)[:2000]), flush=True)
    return cond


def run(cmd, timeout=300):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


# ------------------------------------------------------------ the server

def wait_serving(client, timeout=30):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            status = client.health(timeout=2)
            if status == "SERVING":
                return True, status
            last = status
        except Exception as e:  # noqa: BLE001 — not up yet
            last = e
        time.sleep(0.1)
    return False, last


# ------------------------------------------------------------ prompts

# (max_tokens, ignore_eos, stop_token_ids) groups: `tandem generate` takes one
# of each per run. The bundled model never picks eos greedily within these
# lengths, so newline stop ids ("\n", "\n\n") make some requests end early.
GROUPS = [(8, False, []), (24, True, []), (40, False, [10, 272]), (64, True, [10])]


def generate_many(args, prompts, max_tokens, ignore_eos, stop_ids, tag):
    path = os.path.join(args.work, "prompts_%s.txt" % tag)
    with open(path, "w") as f:
        f.write("\n".join(prompts) + "\n")
    cmd = [args.tandem, "generate", "--prompts-file", path, "--temperature", "0",
           "--max-tokens", str(max_tokens), "--json"] + (["--ignore-eos"] if ignore_eos else [])
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


def generate_one(args, prompt, *flags):
    rc, out, err = run([args.tandem, "generate", "--prompt", prompt, "--json"] + list(flags))
    if rc != 0:
        raise RuntimeError("generate failed (%d): %s" % (rc, err))
    return json.loads(out.splitlines()[0])


# ------------------------------------------------------------ checks

def check_concurrent_greedy(args, tc, client):
    """a. 32 concurrent mixed requests equal `tandem generate` exactly."""
    prompts = make_prompts(32)
    expected = [None] * len(prompts)
    for g, (mt, ie, stop_ids) in enumerate(GROUPS):
        idx = [i for i in range(len(prompts)) if i % len(GROUPS) == g]
        rows = generate_many(args, [prompts[i] for i in idx], mt, ie, stop_ids, "g%d" % g)
        for i, r in zip(idx, rows):
            expected[i] = r
    longest = max(len(r["prompt_token_ids"]) for r in expected)
    check("a: prompts are of mixed lengths (1..%d tokens)" % longest, longest >= 40,
          [len(r["prompt_token_ids"]) for r in expected])

    barrier = threading.Barrier(len(prompts))

    def one(i):
        mt, ie, stop_ids = GROUPS[i % len(GROUPS)]
        kw = dict(temperature=0, max_tokens=mt, ignore_eos=ie, stop_token_ids=stop_ids, timeout=120,
                  request_id="a-%d" % i)
        barrier.wait(timeout=60)
        if i % 8 == 3:  # some as token ids
            return client.generate_text(prompt_token_ids=expected[i]["prompt_token_ids"], **kw)
        return client.generate_text(prompts[i], **kw)

    t0 = time.monotonic()
    with ThreadPoolExecutor(len(prompts)) as pool:
        futures = [pool.submit(one, i) for i in range(len(prompts))]
        results = []
        for f in futures:
            try:
                results.append(f.result())
            except Exception as e:  # noqa: BLE001
                results.append(e)
    elapsed = time.monotonic() - t0
    bad = []
    for i, (got, want) in enumerate(zip(results, expected)):
        if isinstance(got, Exception):
            bad.append("#%d raised %r" % (i, got))
            continue
        want_usage = tc.Usage(len(want["prompt_token_ids"]), len(want["token_ids"]))
        if (got.token_ids != want["token_ids"] or got.text != want["text"]
                or got.finish_reason != want["finish_reason"] or got.usage != want_usage
                or got.request_id != "a-%d" % i):
            bad.append("#%d %r (max_tokens, ignore_eos, stop ids %s): server %r vs generate %r" % (
                i, prompts[i][:30], GROUPS[i % 4],
                (got.token_ids, got.text, got.finish_reason, got.usage, got.request_id),
                (want["token_ids"], want["text"], want["finish_reason"], want_usage)))
    check("a: 32 concurrent greedy requests equal `tandem generate` (tokens, text, finish, usage, id) "
          "[%.1fs]" % elapsed, not bad, "\n  ".join(bad[:4]) + ("\n  (%d bad)" % len(bad)))
    stops = sum(1 for r in expected if r["finish_reason"] == "stop")
    check("a: the mix has early stops and full lengths (%d of 32 stopped early)" % stops, 4 <= stops <= 28, stops)


def check_streaming(args, tc, client):
    """b. Chunks stream; finish and usage on the last only; counts exact."""
    prompt = "JULIET: O Romeo, Romeo! wherefore art thou Romeo?"
    want = generate_one(args, prompt, "--temperature", "0", "--max-tokens", "32", "--ignore-eos")
    chunks, times = [], []
    t0 = time.monotonic()
    for c in client.generate(prompt, temperature=0, max_tokens=32, ignore_eos=True, timeout=60):
        times.append(time.monotonic() - t0)
        chunks.append(c)
    check("b: a 32-token generation streams in >= 2 chunks (%d)" % len(chunks), len(chunks) >= 2, len(chunks))
    if len(chunks) < 2:
        return
    check("b: the first chunk arrives before the last (%.3fs < %.3fs)" % (times[0], times[-1]),
          times[0] < times[-1], times)
    check("b: the first chunk carries a token", len(chunks[0].token_ids) >= 1, chunks[0])
    check("b: finish_reason only on the last chunk",
          all(c.finish_reason is None for c in chunks[:-1]) and chunks[-1].finish_reason == "length",
          [c.finish_reason for c in chunks])
    check("b: usage only on the last chunk", all(c.usage is None for c in chunks[:-1]),
          [c.usage for c in chunks])
    check("b: usage exact (prompt %d, completion 32)" % len(want["prompt_token_ids"]),
          chunks[-1].usage == tc.Usage(len(want["prompt_token_ids"]), 32), chunks[-1].usage)
    ids = [t for c in chunks for t in c.token_ids]
    check("b: streamed tokens and text equal generate's",
          ids == want["token_ids"] and "".join(c.text for c in chunks) == want["text"],
          "%s %r vs %s %r" % (ids, "".join(c.text for c in chunks), want["token_ids"], want["text"]))
    # logprobs: one entry per token, chosen token first-class.
    lp_chunks = list(client.generate(prompt, temperature=0, max_tokens=8, ignore_eos=True, logprobs=3,
                                     timeout=60))
    lps = [l for c in lp_chunks for l in c.logprobs]
    ok = (len(lps) == 8 and all(len(c.logprobs) == len(c.token_ids) for c in lp_chunks)
          and [l.token_id for l in lps] == want["token_ids"][:8]
          and all(len(l.top_logprobs) == 3 and l.top_logprobs[0][0] == l.token_id
                  and abs(l.top_logprobs[0][1] - l.logprob) < 1e-5 for l in lps))
    check("b: logprobs=3: one entry per token, greedy token is the top one", ok, lps[:3])
    wl = generate_one(args, prompt, "--temperature", "0", "--max-tokens", "8", "--ignore-eos", "--logprobs", "3")
    wl = [(l["token_id"], l["logprob"], [(t["token_id"], t["logprob"]) for t in l["top_logprobs"]])
          for l in wl["logprobs"]]
    close = len(wl) == len(lps) and all(
        a[0] == b[0] and abs(a[1] - b[1]) < 1e-4 and [t for t, _ in a[2]] == [t for t, _ in b[2]]
        and all(abs(x - y) < 1e-4 for (_, x), (_, y) in zip(a[2], b[2])) for a, b in zip(lps, wl))
    check("b: logprobs equal `generate --logprobs 3` (1e-4)", close, "%s\nvs %s" % (lps[:2], wl[:2]))


def check_seeded(args, tc, client):
    """c. Seeded sampling equals `tandem generate --seed`, alone and batched."""
    prompt = "LADY MACBETH: Out, damned spot! out, I say!"
    want = generate_one(args, prompt, "--temperature", "0.8", "--seed", "1234", "--max-tokens", "48",
                        "--ignore-eos")
    got = client.generate_text(prompt, temperature=0.8, seed=1234, max_tokens=48, ignore_eos=True, timeout=60)
    check("c: seeded sampling (seed 1234, T 0.8) equals generate", got.token_ids == want["token_ids"]
          and got.text == want["text"], "%s vs %s" % (got.token_ids, want["token_ids"]))
    # The same seed gives the same tokens whatever else is batched with it.
    with ThreadPoolExecutor(4) as pool:
        others = [pool.submit(client.generate_text, PASSAGES[i], temperature=1.0, max_tokens=40,
                              ignore_eos=True, timeout=60) for i in range(3)]
        mine = pool.submit(client.generate_text, prompt, temperature=0.8, seed=1234, max_tokens=48,
                           ignore_eos=True, timeout=60)
        got2 = mine.result()
        for f in others:
            f.result()
    check("c: seeded sampling is the same when batched with other requests",
          got2.token_ids == want["token_ids"], "%s vs %s" % (got2.token_ids, want["token_ids"]))
    other = client.generate_text(prompt, temperature=0.8, seed=4321, max_tokens=48, ignore_eos=True, timeout=60)
    check("c: another seed gives other tokens", other.token_ids != want["token_ids"], other.token_ids)


def check_stop_strings(args, tc, client):
    """d. Stop strings end the text right before them, finish STOP."""
    prompt = "ROMEO:"
    base = generate_one(args, prompt, "--temperature", "0", "--max-tokens", "40", "--ignore-eos")
    text = base["text"]
    # A stop string inside the text, spanning a token boundary.
    start = len(text) // 2
    stop = text[start:start + 5]
    idx = text.find(stop)
    got = client.generate_text(prompt, temperature=0, max_tokens=40, ignore_eos=True, stop=stop, timeout=60)
    check("d: stop %r: text ends right before it, finish stop" % stop,
          got.text == text[:idx] and got.finish_reason == "stop",
          "%r %s vs %r" % (got.text, got.finish_reason, text[:idx]))
    want = generate_one(args, prompt, "--temperature", "0", "--max-tokens", "40", "--ignore-eos",
                        "--stop", stop)
    check("d: stop-string result equals `generate --stop` (text, tokens, finish)",
          (got.text, got.token_ids, got.finish_reason) == (want["text"], want["token_ids"], want["finish_reason"]),
          "%r vs %r" % ((got.text, got.token_ids, got.finish_reason),
                        (want["text"], want["token_ids"], want["finish_reason"])))
    check("d: usage.completion_tokens counts the streamed tokens",
          got.usage is not None and got.usage.completion_tokens == len(got.token_ids), got.usage)
    # Two stop strings, the earlier match wins; one never matches.
    stop2 = text[start // 2:start // 2 + 3]
    idx2 = min(text.find(stop2), idx)
    got = client.generate_text(prompt, temperature=0, max_tokens=40, ignore_eos=True,
                               stop=["#never#", stop, stop2], timeout=60)
    check("d: the earliest of several stop strings wins",
          got.text == text[:idx2] and got.finish_reason == "stop", "%r vs %r" % (got.text, text[:idx2]))
    # A stop string whose prefix ends the output: the held-back text is
    # flushed when max_tokens is reached.
    for stop3 in [text[-2:] + "#ZZ", text[-1:] + "#"]:
        got = client.generate_text(prompt, temperature=0, max_tokens=40, ignore_eos=True, stop=stop3, timeout=60)
        check("d: held-back prefix of stop %r is flushed at max_tokens (finish length)" % stop3,
              got.text == text and got.finish_reason == "length" and got.token_ids == base["token_ids"],
              "%r %s" % (got.text, got.finish_reason))
    # A stop string in the first token: empty text. One in the prompt: no match.
    got = client.generate_text(prompt, temperature=0, max_tokens=40, ignore_eos=True, stop=text[:1], timeout=60)
    check("d: a stop string in the first token gives empty text, finish stop",
          got.text == "" and got.finish_reason == "stop" and len(got.token_ids) == 1, got)
    got = client.generate_text(prompt, temperature=0, max_tokens=40, ignore_eos=True, stop="ROMEO", timeout=60)
    check("d: a stop string only in the prompt does not match", got.text == text and got.finish_reason == "length",
          got)
    # A stop token id ends generation and is returned as the last token.
    tok = base["token_ids"][5]
    k = base["token_ids"].index(tok)
    got = client.generate_text(prompt, temperature=0, max_tokens=40, ignore_eos=True, stop_token_ids=[tok],
                               timeout=60)
    check("d: stop_token_ids: ends on the stop token, finish stop",
          got.token_ids == base["token_ids"][:k + 1] and got.finish_reason == "stop",
          "%s %s vs %s" % (got.token_ids, got.finish_reason, base["token_ids"][:k + 1]))


def check_malformed(args, tc, client, addr):
    """e. Malformed requests: exact status code and the field in the message."""
    import grpc
    INVALID = grpc.StatusCode.INVALID_ARGUMENT
    long_ids = [5 + i % 100 for i in range(250)]  # 250 tokens: 6 more fill the 256-token context
    table = malformed_requests(INVALID)
    for name, kw, code, needle in table:
        try:
            r = client.generate_text(timeout=30, **kw)
            check("e: %s -> %s naming %r" % (name, code.name, needle), False, "succeeded: %r" % (r,))
        except tc.TandemError as e:
            check("e: %s -> %s naming %r" % (name, code.name, needle),
                  e.code == code and needle in e.details and isinstance(e, tc.InvalidArgumentError),
                  "%s %r" % (e.code, e.details))
    # Limits that are still valid.
    ok_cases = [
        ("exactly the context (250 + 6 = 256)", dict(prompt_token_ids=long_ids, max_tokens=6, ignore_eos=True)),
        ("16 stop strings", dict(prompt="ROMEO:", stop=["#%d#" % i for i in range(16)], max_tokens=4)),
        ("boundary values (top_p 1, top_k -1, min_p 1, penalties +-2, logprobs 20)",
         dict(prompt="ROMEO:", top_p=1, top_k=-1, min_p=1, frequency_penalty=2, presence_penalty=-2,
              logprobs=20, max_tokens=4)),
        ("max_tokens 0 means 16", dict(prompt="ROMEO:", max_tokens=0, ignore_eos=True, temperature=0)),
    ]
    for name, kw in ok_cases:
        try:
            r = client.generate_text(timeout=60, **kw)
            n = 16 if name.startswith("max_tokens 0") else (6 if "context" in name else None)
            check("e: accepted: %s" % name, r.finish_reason is not None and (n is None or len(r.token_ids) == n), r)
        except tc.TandemError as e:
            check("e: accepted: %s" % name, False, e)

    # Unknown fields: raw bytes appended to a valid request.
    raw = grpc.insecure_channel(addr)
    call = raw.unary_stream("/tandem.v1.Generation/Generate", request_serializer=lambda b: b,
                            response_deserializer=tc.pb2.GenerateResponse.FromString)
    good = client.request("ROMEO:", max_tokens=4).SerializeToString()
    unknown_top = good + varint(99 << 3 | 0) + varint(1)        # field 99 = 1 in GenerateRequest
    unknown_sampling = good + field_bytes(4, varint(77 << 3 | 0) + varint(5))  # sampling merges in field 77
    for name, payload, where in [("GenerateRequest", unknown_top, "request"),
                                 ("SamplingParams", unknown_sampling, "sampling")]:
        try:
            list(call(payload, timeout=30))
            check("e: unknown field in %s -> INVALID_ARGUMENT naming 'unknown field'" % name, False, "succeeded")
        except grpc.RpcError as e:
            check("e: unknown field in %s -> INVALID_ARGUMENT naming 'unknown field'" % name,
                  e.code() == INVALID and "unknown field" in e.details() and where in e.details(),
                  "%s %r" % (e.code(), e.details()))
    # The same bytes without the unknown field work through the raw channel.
    try:
        chunks = list(call(good, timeout=30))
        check("e: the raw request without the unknown field succeeds", chunks and chunks[-1].finish_reason != 0,
              chunks)
    except grpc.RpcError as e:
        check("e: the raw request without the unknown field succeeds", False, e)
    raw.close()
    try:
        client.generate("ROMEO:", temprature=0)
        check("e: client rejects a misspelled sampling keyword (TypeError)", False, "no error")
    except TypeError:
        check("e: client rejects a misspelled sampling keyword (TypeError)", True)


def still_works(tc, client, want, label):
    got = client.generate_text("ROMEO:", temperature=0, max_tokens=16, ignore_eos=True, timeout=60)
    check(label, client.health() == "SERVING" and got.token_ids == want["token_ids"],
          "%s vs %s" % (got.token_ids, want["token_ids"]))


def check_cancellation(args, tc, client, want):
    """f. Closing a stream cancels it; the server carries on."""
    stream = client.generate("ROMEO:", temperature=0, max_tokens=200, ignore_eos=True, timeout=60)
    first = [next(stream), next(stream)]
    stream.close()
    rest = list(stream)
    check("f: read 2 chunks of a 200-token generation, then cancel", len(first) == 2 and rest == [],
          (first, rest))
    still_works(tc, client, want, "f: after a cancel the server is SERVING and a request still works")
    errors = []
    for i in range(20):
        try:
            with client.generate(PASSAGES[i % 4][:30], temperature=0.7, max_tokens=200, ignore_eos=True,
                                 timeout=60) as s:
                next(s)
                if i % 2:
                    next(s)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
    check("f: 20 cancellations in a row raise nothing", not errors, errors[:3])
    # Cancel while 8 others run.
    with ThreadPoolExecutor(8) as pool:
        bg = [pool.submit(client.generate_text, PASSAGES[i % 4], temperature=0, max_tokens=24,
                          ignore_eos=True, timeout=60) for i in range(8)]
        for _ in range(5):
            with client.generate("ROMEO:", max_tokens=200, ignore_eos=True, timeout=60) as s:
                next(s)
        ok = all(len(f.result().token_ids) == 24 for f in bg)
    check("f: cancellations among running requests leave the others intact", ok)
    still_works(tc, client, want, "f: after 26 cancellations the server still works")
    firsts = kill_clients(args, client_addr(client), 3)
    check("f: 3 C++ clients SIGKILLed mid-stream had streamed text", all(f.startswith(b"ROMEO:") for f in firsts),
          firsts)
    still_works(tc, client, want, "f: after clients are killed mid-stream the server still works")


def client_addr(client):
    return client.addr


def kill_clients(args, addr, n):
    """Starts `tandem client` streams of 200 tokens and SIGKILLs each once text arrives."""
    firsts = []
    for _ in range(n):
        p = subprocess.Popen([args.tandem, "client", "--addr", addr, "--prompt", "ROMEO:", "--max-tokens", "200",
                              "--ignore-eos", "--temperature", "0"], stdout=subprocess.PIPE)
        try:
            firsts.append(p.stdout.read(10))
        finally:
            p.kill()
            p.wait(timeout=30)
            p.stdout.close()
    return firsts


def check_utf8(args, tc, client):
    """k. Near-uniform sampling emits stray bytes: every chunk still parses
    (valid UTF-8) and the whole equals `tandem generate`."""
    bad, odd = [], 0
    for seed in (1, 3, 4):
        try:
            chunks = list(client.generate("ROMEO:", temperature=50, top_p=1, top_k=0, seed=seed, max_tokens=60,
                                          ignore_eos=True, timeout=60))
        except tc.TandemError as e:
            bad.append("seed %d: %s" % (seed, e))
            continue
        want = generate_one(args, "ROMEO:", "--temperature", "50", "--top-p", "1", "--top-k", "0", "--seed",
                            str(seed), "--max-tokens", "60", "--ignore-eos")
        text = "".join(c.text for c in chunks)
        ids = [t for c in chunks for t in c.token_ids]
        odd += sum(ord(ch) > 127 for ch in text)
        if ids != want["token_ids"] or text != want["text"]:
            bad.append("seed %d: %r vs %r" % (seed, text, want["text"]))
    check("k: byte-soup sampling streams valid UTF-8 equal to generate (%d non-ASCII chars)" % odd, not bad, bad)


def check_deadline(args, tc, client, want):
    """g. A 1 ms deadline gives DEADLINE_EXCEEDED; the server carries on."""
    import grpc
    try:
        r = client.generate_text("ROMEO:", max_tokens=64, ignore_eos=True, timeout=0.001)
        check("g: 1 ms timeout -> DEADLINE_EXCEEDED", False, "succeeded: %r" % (r,))
    except tc.TandemError as e:
        check("g: 1 ms timeout -> DEADLINE_EXCEEDED",
              e.code == grpc.StatusCode.DEADLINE_EXCEEDED and isinstance(e, tc.DeadlineExceededError), e)
    # A deadline that passes mid-stream.
    try:
        n = 0
        for c in client.generate("ROMEO:", max_tokens=200, ignore_eos=True, temperature=0, timeout=0.3):
            n += len(c.token_ids)
            time.sleep(0.05)
        check("g: a deadline passing mid-stream -> DEADLINE_EXCEEDED", False, "finished with %d tokens" % n)
    except tc.DeadlineExceededError:
        check("g: a deadline passing mid-stream -> DEADLINE_EXCEEDED", True)
    except Exception as e:  # noqa: BLE001
        check("g: a deadline passing mid-stream -> DEADLINE_EXCEEDED", False, repr(e))
    still_works(tc, client, want, "g: after deadlines the server still works")


def check_block_leaks(args, tc, source_client_cls, server_log):
    """f/g on a 16-block KV pool: after cancellations and deadlines, a request
    needing the whole pool (256 tokens) still runs, so nothing leaked."""
    srv = ServeProc(args.tandem, ["--num-kv-blocks", "16"], server_log)
    try:
        if not check("leak: small-pool server starts", srv.wait_listening(), srv.log_tail()):
            return
        client = source_client_cls(srv.addr)
        ok, st = wait_serving(client)
        if not check("leak: small-pool server SERVING", ok, st):
            return
        full = dict(prompt_token_ids=[5 + i % 100 for i in range(200)], max_tokens=56, ignore_eos=True,
                    temperature=0)
        r0 = client.generate_text(timeout=60, **full)
        check("leak: a 256-token request fits the 16-block pool", len(r0.token_ids) == 56, r0)
        # 12 concurrent requests need ~3x the pool: queueing/preemption must
        # not change greedy tokens.
        prompts = [PASSAGES[i % 4][:10 + 7 * i] for i in range(12)]
        rows = generate_many(args, prompts, 64, True, [], "small")
        with ThreadPoolExecutor(12) as pool:
            fs = [pool.submit(client.generate_text, p, temperature=0, max_tokens=64, ignore_eos=True, timeout=120)
                  for p in prompts]
            bad = []
            for i, (f, w) in enumerate(zip(fs, rows)):
                try:
                    if f.result().token_ids != w["token_ids"]:
                        bad.append("#%d %s vs %s" % (i, f.result().token_ids, w["token_ids"]))
                except tc.TandemError as e:
                    bad.append("#%d %s" % (i, e))
        check("leak: 12 concurrent requests on 16 blocks (preemption) equal generate", not bad, bad[:3])
        kill_clients(args, srv.addr, 3)
        for i in range(10):
            with client.generate(PASSAGES[i % 4][:30], max_tokens=200, ignore_eos=True, timeout=60) as s:
                next(s)
                next(s)
        for _ in range(5):
            try:
                client.generate_text("ROMEO:", max_tokens=200, ignore_eos=True, timeout=0.001)
            except tc.DeadlineExceededError:
                pass
        try:
            for c in client.generate("ROMEO:", max_tokens=200, ignore_eos=True, timeout=0.2):
                time.sleep(0.05)
        except tc.DeadlineExceededError:
            pass
        time.sleep(0.5)  # let the server see the last cancellation
        try:
            r1 = client.generate_text(timeout=30, **full)
            check("leak: after preemption, 3 killed clients, 10 cancels and 6 deadlines the whole pool is free "
                  "(same 56 tokens)", r1.token_ids == r0.token_ids, "%s vs %s" % (r1.token_ids, r0.token_ids))
        except tc.TandemError as e:
            check("leak: after preemption, 3 killed clients, 10 cancels and 6 deadlines the whole pool is free "
                  "(same 56 tokens)", False,
                  "%s (blocks leaked?)" % e)
        client.close()
    finally:
        rc = srv.stop(sig=signal.SIGINT)
        check("leak: small-pool server exits 0 on SIGINT", rc == 0, "rc %s\n%s" % (rc, srv.log_tail()))


def check_health_reflection(args, tc, client, addr):
    """h. grpc.health.v1 and server reflection, with hand-encoded messages."""
    import grpc
    from google.protobuf import descriptor_pb2
    ch = grpc.insecure_channel(addr)
    ident = dict(request_serializer=lambda b: b, response_deserializer=lambda b: b)
    health = ch.unary_unary("/grpc.health.v1.Health/Check", **ident)
    resp = decode(health(b"", timeout=10))
    check("h: Health/Check('') -> SERVING", resp == [(1, 1)], resp)
    try:
        resp = health(field_bytes(1, b"no.such.Service"), timeout=10)
        check("h: Health/Check(unknown service) -> NOT_FOUND", False, decode(resp))
    except grpc.RpcError as e:
        check("h: Health/Check(unknown service) -> NOT_FOUND", e.code() == grpc.StatusCode.NOT_FOUND, e)

    refl = ch.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", **ident)
    # ServerReflectionRequest { list_services = 7 : "*" }, then
    # { file_containing_symbol = 4 : "tandem.v1.Generation" }.
    responses = list(refl(iter([field_bytes(7, b"*"), field_bytes(4, b"tandem.v1.Generation")]), timeout=10))
    check("h: reflection answers both requests", len(responses) == 2, len(responses))
    if len(responses) != 2:
        ch.close()
        return
    services = []
    for num, v in decode(responses[0]):
        if num == 6:  # list_services_response { repeated ServiceResponse service = 1 { name = 1 } }
            services = [dict(decode(s)).get(1, b"").decode() for n, s in decode(v) if n == 1]
    check("h: reflection lists tandem.v1.Generation", "tandem.v1.Generation" in services, services)
    check("h: reflection lists grpc.health.v1.Health", "grpc.health.v1.Health" in services, services)
    methods = None
    for num, v in decode(responses[1]):
        if num == 4:  # file_descriptor_response { repeated bytes file_descriptor_proto = 1 }
            for n, fd_bytes in decode(v):
                fd = descriptor_pb2.FileDescriptorProto.FromString(fd_bytes)
                for s in fd.service:
                    if fd.package == "tandem.v1" and s.name == "Generation":
                        methods = {m.name: m.server_streaming for m in s.method}
    check("h: reflection serves the descriptor of Generate (server streaming)", methods == {"Generate": True},
          methods)
    ch.close()


def check_example(args, addr, want):
    """i. clients/python/example.py streams the text."""
    example = os.path.join(args.source, "clients", "python", "example.py")
    rc, out, err = run([sys.executable, example, "--addr", addr, "--prompt", "ROMEO:", "--max-tokens", "16",
                        "--temperature", "0"], timeout=120)
    check("i: example.py exits 0", rc == 0, err)
    check("i: example.py prints the prompt and the streamed completion", out == "ROMEO:" + want["text"] + "\n",
          "%r vs %r" % (out, "ROMEO:" + want["text"] + "\n"))
    check("i: example.py reports finish and usage", "[finish: length, prompt tokens: 3, completion tokens: 16]"
          in err, err)


def check_cpp_client(args, addr):
    """j. The C++ `tandem client --json` equals generate's output."""
    prompt = "First Citizen: Before we proceed any further, hear me speak."
    want = generate_one(args, prompt, "--temperature", "0", "--max-tokens", "24")
    rc, out, err = run([args.tandem, "client", "--addr", addr, "--prompt", prompt, "--temperature", "0",
                        "--max-tokens", "24", "--json"], timeout=120)
    if not check("j: tandem client --json exits 0", rc == 0, err):
        return
    got = json.loads(out.splitlines()[-1])
    check("j: tandem client --json equals generate (tokens, text, finish, usage)",
          got.get("token_ids") == want["token_ids"] and got.get("text") == want["text"]
          and got.get("finish_reason") == want["finish_reason"]
          and got.get("usage") == {"prompt_tokens": len(want["prompt_token_ids"]),
                                   "completion_tokens": len(want["token_ids"])},
          "%s\nvs %s" % (got, want))
    rc, out, err = run([args.tandem, "client", "--addr", addr, "--prompt", "ROMEO:", "--top-p", "0"], timeout=60)
    check("j: tandem client reports INVALID_ARGUMENT and exits non-zero", rc != 0 and "sampling.top_p" in err,
          "rc %d %r" % (rc, err))


# ------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    args.tandem = os.path.abspath(args.tandem)
    args.source = os.path.abspath(args.source)
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    # SIGTERM (CTest timeout) unwinds through the finally blocks below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    # The client generates its stubs on first import, here into the work dir.
    os.environ["TANDEM_CLIENT_STUBS"] = os.path.join(args.work, "stubs")
    sys.path.insert(0, os.path.join(args.source, "clients", "python"))
    t0 = time.monotonic()
    try:
        import tandem_client as tc
    except Exception:  # noqa: BLE001
        check("client package imports (stubs generated)", False, traceback.format_exc())
        print("%d passed, %d failed" % (len(PASSED), len(FAILED)))
        return 1
    check("client package imports, stubs generated into the work dir",
          os.path.isfile(os.path.join(args.work, "stubs", "tandem", "v1", "generation_pb2_grpc.py")))

    try:
        srv = ServeProc(args.tandem, [], os.path.join(args.work, "serve.log"))
    except OSError as e:
        check("server starts", False, e)
        print("%d passed, %d failed" % (len(PASSED), len(FAILED)))
        return 1
    try:
        listening = srv.wait_listening()
        check("server prints its 127.0.0.1 port", listening, "".join(srv.stdout) + srv.log_tail())
        if listening:
            client = tc.TandemClient(srv.addr)
            ok, st = wait_serving(client)
            check("server reports SERVING within 30 s", ok, st)
            if ok:
                want = generate_one(args, "ROMEO:", "--temperature", "0", "--max-tokens", "16", "--ignore-eos")
                steps = [
                    ("a", lambda: check_concurrent_greedy(args, tc, client)),
                    ("b", lambda: check_streaming(args, tc, client)),
                    ("c", lambda: check_seeded(args, tc, client)),
                    ("d", lambda: check_stop_strings(args, tc, client)),
                    ("e", lambda: check_malformed(args, tc, client, srv.addr)),
                    ("f", lambda: check_cancellation(args, tc, client, want)),
                    ("g", lambda: check_deadline(args, tc, client, want)),
                    ("h", lambda: check_health_reflection(args, tc, client, srv.addr)),
                    ("i", lambda: check_example(args, srv.addr, want)),
                    ("j", lambda: check_cpp_client(args, srv.addr)),
                    ("k", lambda: check_utf8(args, tc, client)),
                ]
                for name, step in steps:
                    try:
                        step()
                    except Exception:  # noqa: BLE001
                        check("%s: ran without an exception" % name, False, traceback.format_exc())
                    if srv.proc.poll() is not None:
                        check("server still running after %s" % name, False,
                              "exit %s\n%s" % (srv.proc.returncode, srv.log_tail()))
                        break
                still_works(tc, client, want, "the server still works after all checks")
                client.close()
    finally:
        alive = srv.proc.poll() is None
        rc = srv.stop()
        check("server exits 0 on SIGTERM", alive and rc == 0, "alive %s rc %s\n%s" % (alive, rc, srv.log_tail()))

    try:
        check_block_leaks(args, tc, tc.TandemClient, os.path.join(args.work, "serve_small.log"))
    except Exception:  # noqa: BLE001
        check("leak: ran without an exception", False, traceback.format_exc())

    print("(%.1fs)" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (len(PASSED), len(FAILED)))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
