#!/usr/bin/python3
"""End-to-end checks of `tandem serve` through the Python client (clients/python).

Run by CTest (label e2e, tests/e2e/serve.cmake). Starts `tandem serve --port 0`
on 127.0.0.1 itself (and a second one with a 16-block KV pool for the leak
checks), always stops them by PID, and compares what the server streams with
what `tandem generate` computes in-process. Prints one PASS/FAIL line per
check, then "N passed, M failed"; exits non-zero on any failure.

  serve_test.py --tandem build/bin/tandem --source . --work DIR

The bad-input and fault checks are in serve_test_faults.py, the shared
report and helpers in serve_util.py.
"""

import argparse
import json
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_util import PASSAGES, ServeProc, decode, field_bytes, make_prompts  # noqa: E402
from serve_test_faults import (check_block_leaks, check_cancellation, check_deadline, check_malformed,  # noqa: E402
                               check_utf8, still_works)
from serve_util import FAILED, GROUPS, PASSED, check, generate_many, generate_one, run, wait_serving  # noqa: E402

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
