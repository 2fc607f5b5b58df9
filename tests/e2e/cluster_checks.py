"""Helpers and checks the cluster test's stages share: the workers' own API
(Stats, a snapshot of every pool, waiting until blocks and reservations are
back to start, a probe Admit), grpc.health.v1 by hand, requests run at once
(concurrent) or with their error caught (safe), and the numbered checks that
several clusters run: 10 health, 1 32 mixed requests, 3 the Admit layout and
the KV bytes moved, 2 seeded sampling, 5b cancellation."""

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cluster_state as state
from cluster_refs import GROUPS, generate_many, generate_one, same_as
from cluster_state import channel, check
from e2e_util import PASSAGES, decode


# ------------------------------------------------------------ wire helpers
# Hand-encoded grpc.health.v1 (no stubs for it on this machine).

def health_check(addr, timeout=5, cluster=False, service=""):
    """grpc.health.v1.Health/Check(service) as [(field, value)] (SERVING is
    [(1, 1)]): on a public port in plaintext, or (`cluster`) on a worker or
    a router's cluster listener over the test CA's mTLS."""
    import grpc
    ch = state.cluster_channel(addr) if cluster else grpc.insecure_channel(addr)
    try:
        call = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
        req = b"" if not service else b"\x0a" + bytes([len(service)]) + service.encode()
        return decode(call(req, timeout=timeout))
    finally:
        ch.close()


# ------------------------------------------------------------ worker API

def decode_stub(addr):
    return state.wpb2_grpc.DecodeWorkerStub(channel(addr))


def prefill_stub(addr):
    return state.wpb2_grpc.PrefillWorkerStub(channel(addr))


def stats(addr, role):
    stub = decode_stub(addr) if role == "decode" else prefill_stub(addr)
    return stub.Stats(state.wpb2.StatsRequest(), timeout=5)


def snapshot(decode_addrs, prefill_addrs):
    """Every worker's Stats (waits, bounded, until each reports its pool)."""
    deadline = time.monotonic() + 5
    for a, role in [(a, "decode") for a in decode_addrs] + [(a, "prefill") for a in prefill_addrs]:
        while stats(a, role).kv_blocks_total == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    return ({a: stats(a, "decode") for a in decode_addrs}, {a: stats(a, "prefill") for a in prefill_addrs})


def brief(s):
    return "used %d free %d total %d reservations %d running %d waiting %d" % (
        s.kv_blocks_used, s.kv_blocks_free, s.kv_blocks_total, s.num_reservations, s.num_running, s.num_waiting)


def wait_released(base, timeout=15):
    """Polls every worker in `base` (a snapshot) until its used blocks and
    reservations are back to the baseline and nothing runs or waits.
    Returns (ok, description of the last state)."""
    dbase, pbase = base
    deadline = time.monotonic() + timeout
    desc = ""
    while True:
        bad = []
        for role, basemap in (("decode", dbase), ("prefill", pbase)):
            for a, b in basemap.items():
                try:
                    s = stats(a, role)
                except Exception as e:  # noqa: BLE001
                    bad.append("%s %s: %s" % (role, a, e))
                    continue
                if (s.kv_blocks_used != b.kv_blocks_used or s.num_reservations != b.num_reservations
                        or s.num_running != 0 or s.num_waiting != 0
                        or s.kv_blocks_used + s.kv_blocks_free != s.kv_blocks_total):
                    bad.append("%s %s: %s (start: %s)" % (role, a, brief(s), brief(b)))
        desc = "; ".join(bad)
        if not bad:
            return True, ""
        if time.monotonic() > deadline:
            return False, desc
        time.sleep(0.1)


def probe_admit(decode_addr, request_id="probe-admit"):
    """Admits a 3-token prompt directly on a decode worker, releases it.
    Returns (AdmitResponse, its serialized size, ReleaseResponse)."""
    stub = decode_stub(decode_addr)
    samp = state.wpb2.ResolvedSampling(temperature=0, top_p=1, top_k=0, min_p=0, repetition_penalty=1, max_tokens=1,
                                       seed=1)
    resp = stub.Admit(state.wpb2.AdmitRequest(request_id=request_id, prompt_token_ids=[5, 6, 7], sampling=samp),
                      timeout=10)
    rel = stub.Release(state.wpb2.ReleaseRequest(request_id=request_id), timeout=10)
    return resp, resp.ByteSize(), rel


# ------------------------------------------------------------ running requests

def concurrent(fn, n, timeout=180):
    """Runs fn(i) for i < n at once (a barrier lines them up); results or exceptions."""
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait(timeout=60)
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        out = []
        for f in futures:
            try:
                out.append(f.result(timeout=timeout))
            except Exception as e:  # noqa: BLE001
                out.append(e)
    return out


def safe(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        return e


# ------------------------------------------------------------ checks

def check_health(label, addrs):
    """10. grpc.health.v1 SERVING on each address (a worker's over mTLS)."""
    for what, addr in addrs:
        try:
            resp = health_check(addr, cluster="worker" in what)
            check("10: %s: Health/Check on the %s (%s) -> SERVING" % (label, what, addr), resp == [(1, 1)], resp)
        except Exception as e:  # noqa: BLE001
            check("10: %s: Health/Check on the %s (%s) -> SERVING" % (label, what, addr), False, e)


def check_mixed32(label, client, prompts, expected):
    """1. 32 concurrent mixed requests equal `tandem generate` exactly."""
    def one(i):
        mt, ie, stop_ids = GROUPS[i % len(GROUPS)]
        kw = dict(temperature=0, max_tokens=mt, ignore_eos=ie, stop_token_ids=stop_ids, timeout=120,
                  request_id="m-%d" % i)
        if i % 8 == 3:  # some as token ids
            return client.generate_text(prompt_token_ids=expected[i]["prompt_token_ids"], **kw)
        return client.generate_text(prompts[i], **kw)

    t0 = time.monotonic()
    results = concurrent(one, len(prompts))
    bad = []
    for i, (got, want) in enumerate(zip(results, expected)):
        why = same_as(got, want, "m-%d" % i)
        if why:
            bad.append("#%d %r %s: %s" % (i, prompts[i][:30], GROUPS[i % 4], why))
    check("1: %s: %d concurrent mixed requests equal `tandem generate` (tokens, text, finish, usage, id) "
          "[%.1fs]" % (label, len(prompts), time.monotonic() - t0), not bad,
          "\n  ".join(bad[:4]) + "\n  (%d of %d bad)" % (len(bad), len(prompts)))
    return results


def kv_bytes_expected(expected, layout):
    bs = layout.block_size
    return sum(math.ceil(len(r["prompt_token_ids"]) / bs) for r in expected) * layout.num_layers \
        * layout.block_span_bytes


def check_layout(label, decode_addr, model_cfg, dtype_bytes, dtype_name):
    """3. The Admit reply: small, a layout that matches the model config."""
    resp, size, rel = probe_admit(decode_addr, "probe-%s" % label)
    lay = resp.destination.ranks[0].layout
    check("3: %s: the Admit reply (KV destination) is small: %d bytes < 4 KiB" % (label, size), size < 4096, size)
    want_span = 2 * model_cfg["num_key_value_heads"] * lay.block_size * model_cfg["head_dim"] * dtype_bytes
    check("3: %s: Admit layout: %d layers, %s, span %d = 2*kv_heads*block_size*head_dim*%d, 1 block for 3+1 "
          "tokens, transport ucx" % (label, model_cfg["num_hidden_layers"], dtype_name, want_span, dtype_bytes),
          lay.num_layers == model_cfg["num_hidden_layers"] and lay.dtype == dtype_name
          and lay.block_span_bytes == want_span and lay.block_size == 16
          and lay.num_kv_heads == model_cfg["num_key_value_heads"] and lay.head_dim == model_cfg["head_dim"]
          and len(resp.destination.block_ids) == 1 and resp.destination.transport == "ucx"
          and len(resp.destination.ranks) == 1 and len(resp.destination.ranks[0].memory_descriptor) > 0,
          resp.destination)
    check("3: %s: Release of the probe reservation -> released" % label, rel.released, rel)
    return lay


def check_kv_bytes(label, prefill_addrs, before, expected, layout, want_all_used=False):
    """3. Invariant 1: exactly the prompts' block spans moved over UCX."""
    after = {a: stats(a, "prefill").kv_transfer_bytes_total for a in prefill_addrs}
    delta = {a: after[a] - before[a] for a in prefill_addrs}
    want = kv_bytes_expected(expected, layout)
    check("3: %s: prefill kv_transfer_bytes_total grew by exactly sum(ceil(prompt/%d)) * %d layers * %d bytes "
          "= %d" % (label, layout.block_size, layout.num_layers, layout.block_span_bytes, want),
          sum(delta.values()) == want, "grew by %s (sum %d), want %d" % (delta, sum(delta.values()), want))
    if want_all_used:
        check("3: %s: every prefill worker shipped KV (%s)" % (label, sorted(delta.values())),
              all(v > 0 for v in delta.values()), delta)


def check_seeded(label, client, ref=()):
    """2. Seeded sampling: prefill and decode share one random stream."""
    prompt = "LADY MACBETH: Out, damned spot! out, I say!"
    cases = [(["--temperature", "0.8", "--seed", "1234"], dict(temperature=0.8, seed=1234)),
             (["--temperature", "1.0", "--seed", "7", "--top-k", "40", "--top-p", "0.9"],
              dict(temperature=1.0, seed=7, top_k=40, top_p=0.9))]
    for flags, kw in cases:
        want = generate_one(prompt, flags=flags + ["--max-tokens", "48", "--ignore-eos"] + list(ref))
        got = client.generate_text(prompt, max_tokens=48, ignore_eos=True, timeout=60, **kw)
        check("2: %s: seeded sampling %s equals `generate %s`" % (label, kw, " ".join(flags)),
              got.token_ids == want["token_ids"] and got.text == want["text"],
              "%s vs %s" % (got.token_ids, want["token_ids"]))
    # Batched with others, the same seed still gives the same tokens.
    want = generate_one(prompt, flags=cases[0][0] + ["--max-tokens", "48", "--ignore-eos"] + list(ref))

    def one(i):
        if i == 0:
            return client.generate_text(prompt, temperature=0.8, seed=1234, max_tokens=48, ignore_eos=True,
                                        timeout=60)
        return client.generate_text(PASSAGES[i % 4], temperature=1.0, max_tokens=24, ignore_eos=True, timeout=60)

    res = concurrent(one, 5)
    check("2: %s: the seeded request batched with 4 unseeded ones is unchanged" % label,
          not isinstance(res[0], Exception) and res[0].token_ids == want["token_ids"]
          and all(not isinstance(r, Exception) for r in res[1:]), res)


def check_cancel(label, client, base, ref=()):
    """5b. Ten streams closed mid-stream while 4 greedy requests run: those
    are exact, and every block comes back."""
    prompts = [PASSAGES[i % 4][:40 + 9 * i] for i in range(4)]
    wants = generate_many(prompts, 24, True, [], "cancelbg", ref)
    bg_results = [None] * 4
    got_chunks = []

    def background(i):
        bg_results[i] = client.generate_text(prompts[i], temperature=0, max_tokens=24, ignore_eos=True, timeout=90)

    def cancelling(i):
        with client.generate(PASSAGES[i % 4][:25 + i], temperature=0.7, max_tokens=120, ignore_eos=True,
                             timeout=60) as s:
            got_chunks.append(next(s))
            if i % 2:
                got_chunks.append(next(s))

    def one(i):
        try:
            return background(i) if i < 4 else cancelling(i - 4)
        except Exception as e:  # noqa: BLE001
            return e

    res = concurrent(one, 14)
    errs = [r for r in res if isinstance(r, Exception)]
    check("5b: %s: 10 streams closed after 1-2 chunks, 4 run beside them: no errors" % label, not errs, errs[:3])
    bad = [same_as(bg_results[i], wants[i]) for i in range(4) if same_as(bg_results[i], wants[i])]
    check("5b: %s: the requests running beside the cancelled ones equal generate" % label, not bad, bad[:2])
    check("5b: %s: the cancelled streams had delivered tokens" % label,
          len(got_chunks) == 15 and all(len(c.token_ids) >= 1 for c in got_chunks[:1]), len(got_chunks))
    ok, desc = wait_released(base)
    check("5b: %s: after 10 cancellations every pool is back to start (used, reservations), nothing running"
          % label, ok, desc)
