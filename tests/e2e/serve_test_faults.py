"""serve_test's checks of bad input and faults against `tandem serve`:
malformed requests (exact codes, the field named), client cancellation and
killed clients, deadlines, UTF-8 edges, and block leaks on a small pool."""

import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from e2e_util import PASSAGES, ServeProc, field_bytes, malformed_requests, varint
from serve_util import check, generate_many, generate_one, wait_serving

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
