#!/usr/bin/python3
"""The chaos harness's client side (tests/chaos/chaos_test.py starts it
inside the router's network namespace): seeded mixed load against the
router for --duration seconds, one overload burst or more, then the
quiesce checks. Writes one JSON report to --out.

Load: --concurrency threads, each sending one request after another, drawn
(seeded) from the reference table the driver computed with `tandem
generate`: greedy and seeded sampling, short and long outputs; 10% of them
are cancelled by the client after a few chunks and 10% carry a short
deadline. At the --burst-at offsets (seconds) --burst-size extra requests
start at once (the overload: many times what the cluster holds).

Every request ends in exactly one class:
  exact      finished; tokens, text and finish reason equal the reference
  cancelled  we cancelled it; what it streamed is a prefix of the reference
  deadline   our short deadline passed; what it streamed is a prefix
  retriable  RESOURCE_EXHAUSTED or UNAVAILABLE before its first token
  wrong      finished (or was cut) with tokens that differ from the reference
  lost       anything else: an error after some tokens, a code outside the
             contract, a deadline we did not set, a stream that never ended
`lost` and `wrong` must be 0.

Quiesce: once the load is over, every worker's pool must come back to
empty (no block used, no reservation, nothing running or waiting) within a
bounded wait; what is still held then is `leaked` (must be 0). The router's
tandem_request_migrations_total is read from its metrics port.
"""

import argparse
import json
import os
import random
import sys
import threading
import time
import urllib.request

CONTRACT_RETRIABLE = ("RESOURCE_EXHAUSTED", "UNAVAILABLE")
T0 = time.monotonic()  # reset when the load starts: the offsets in the report match the fault log's


def load_client(source, stubs):
    os.environ["TANDEM_CLIENT_STUBS"] = stubs
    sys.path.insert(0, os.path.join(source, "clients", "python"))
    sys.path.insert(0, stubs)
    import tandem_client
    from tandem.v1 import worker_pb2, worker_pb2_grpc
    return tandem_client, worker_pb2, worker_pb2_grpc


class Outcomes:
    """Thread-safe tally of request outcomes, with a few examples of each bad one."""

    def __init__(self):
        self.mu = threading.Lock()
        self.counts = {}
        self.by_code = {}
        self.examples = {"lost": [], "wrong": []}
        self.first_token_s = []

    def add(self, cls, detail=None, code=None):
        with self.mu:
            self.counts[cls] = self.counts.get(cls, 0) + 1
            if code is not None:
                key = "%s:%s" % (cls, code)
                self.by_code[key] = self.by_code.get(key, 0) + 1
            if cls in self.examples and len(self.examples[cls]) < 10:
                self.examples[cls].append(detail)


def is_prefix(got, want):
    return got == want[:len(got)]


def first_difference(got, want):
    """Where two token lists part, with a few tokens of each from there."""
    i = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]), min(len(got), len(want)))
    return {"index": i, "got": got[i:i + 6], "want": want[i:i + 6], "got_len": len(got), "want_len": len(want)}


def one_request(tc, client, ref, mode, rng, out):
    """Runs one request and files its outcome."""
    kw = dict(ref["sampling"])
    cancel_after = rng.randint(1, 4) if mode == "cancel" else None
    timeout = rng.uniform(0.2, 2.0) if mode == "deadline" else 180.0
    ids, text, finish, t0 = [], [], None, time.monotonic()
    chunks = 0
    rid = ""  # the router's request id: its stderr log names it on each migration
    try:
        stream = client.generate(ref["prompt"], timeout=timeout, **kw)
        with stream:
            for c in stream:
                if chunks == 0:
                    with out.mu:
                        out.first_token_s.append(time.monotonic() - t0)
                chunks += 1
                rid = c.request_id or rid
                ids.extend(c.token_ids)
                text.append(c.text)
                if c.finish_reason is not None:
                    finish = c.finish_reason
                if cancel_after is not None and chunks >= cancel_after and finish is None:
                    stream.close()
                    break
    except tc.TandemError as e:
        code = e.code.name if hasattr(e.code, "name") else str(e.code)
        detail = {"prompt": ref["prompt"][:40], "ref": ref["key"], "mode": mode, "code": code,
                  "message": e.details[:300], "tokens": len(ids)}
        if not is_prefix(ids, ref["token_ids"]):
            out.add("wrong", dict(detail, diff=first_difference(ids, ref["token_ids"])), code)
        elif code in CONTRACT_RETRIABLE and not ids:
            out.add("retriable", code=code)
            time.sleep(rng.uniform(0.05, 0.3))  # a client backs off before it retries
        elif code == "DEADLINE_EXCEEDED" and mode == "deadline":
            out.add("deadline", code=code)
        else:
            out.add("lost", detail, code)
        return
    except Exception as e:  # noqa: BLE001 — anything the client library did not map is a defect
        out.add("lost", {"ref": ref["key"], "mode": mode, "exception": repr(e)[:300], "tokens": len(ids)})
        return
    if cancel_after is not None and finish is None:
        if is_prefix(ids, ref["token_ids"]):
            out.add("cancelled")
        else:
            out.add("wrong", {"ref": ref["key"], "mode": mode, "diff": first_difference(ids, ref["token_ids"]),
                              "t_start": round(t0 - T0, 1), "t_end": round(time.monotonic() - T0, 1)})
        return
    if finish is None:
        out.add("lost", {"ref": ref["key"], "mode": mode, "why": "stream ended without a finish reason",
                         "tokens": len(ids)})
        return
    got = (ids, "".join(text), finish)
    want = (ref["token_ids"], ref["text"], ref["finish_reason"])
    if got == want:
        out.add("exact", code=ref["kind"])
    else:
        out.add("wrong", {"ref": ref["key"], "mode": mode, "request_id": rid,
                          "diff": first_difference(got[0], want[0]),
                          "finish": [got[2], want[2]], "t_start": round(t0 - T0, 1),
                          "t_end": round(time.monotonic() - T0, 1)})


def pick_mode(rng):
    r = rng.random()
    return "cancel" if r < 0.1 else "deadline" if r < 0.2 else "complete"


def run_load(tc, client, refs, args, out):
    """--concurrency steady threads until --duration, plus the bursts."""
    end = time.monotonic() + args.duration
    sent = [0]
    sent_mu = threading.Lock()

    def count():
        with sent_mu:
            sent[0] += 1

    def steady(i):
        rng = random.Random(args.seed * 1000 + i)
        while time.monotonic() < end:
            count()
            one_request(tc, client, rng.choice(refs), pick_mode(rng), rng, out)

    def burst(j, k):
        rng = random.Random(args.seed * 7919 + j * 1009 + k)
        count()
        one_request(tc, client, rng.choice(refs), "complete", rng, out)

    threads = [threading.Thread(target=steady, args=(i,), daemon=True) for i in range(args.concurrency)]
    start = time.monotonic()
    for t in threads:
        t.start()
    bursts = []
    for j, at in enumerate(args.burst_at):
        while time.monotonic() < start + at and time.monotonic() < end:
            time.sleep(0.05)
        for k in range(args.burst_size):
            t = threading.Thread(target=burst, args=(j, k), daemon=True)
            t.start()
            bursts.append(t)
    # Every request carries a deadline (180 s at most), so this wait is bounded;
    # a thread still alive after it is a stream that never ended: lost.
    stuck = 0
    for t in threads + bursts:
        t.join(timeout=max(1.0, end + 240 - time.monotonic()))
        if t.is_alive():
            stuck += 1
    if stuck:
        out.add("lost", {"why": "%d request threads never finished" % stuck})
    return sent[0]


CERTS = None  # the test CA's `tandem certs` directory (--certs): mTLS to workers and the registry
TEST_PEER = "tandem-test-peer"  # a DNS name every certificate of the test CA carries


def cluster_channel(grpc, addr):
    """A channel to a worker or the router's cluster listener: mTLS with the
    router's certificate of CERTS (plaintext when the cluster runs without)."""
    if CERTS is None:
        return grpc.insecure_channel(addr)

    def read(name):
        with open(os.path.join(CERTS, name), "rb") as f:
            return f.read()
    creds = grpc.ssl_channel_credentials(root_certificates=read("ca.crt"), private_key=read("router.key"),
                                         certificate_chain=read("router.crt"))
    return grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", TEST_PEER)])


def quiesce(wpb2, wpb2_grpc, grpc, workers, timeout):
    """Polls every worker until its pool is empty; returns (leaked, detail)."""
    deadline = time.monotonic() + timeout
    last = {}
    while True:
        bad = {}
        for wid, (role, addr) in workers.items():
            ch = cluster_channel(grpc, addr)
            try:
                stub = wpb2_grpc.DecodeWorkerStub(ch) if role == "decode" else wpb2_grpc.PrefillWorkerStub(ch)
                s = stub.Stats(wpb2.StatsRequest(), timeout=5)
                held = s.kv_blocks_used + s.num_reservations + s.num_running + s.num_waiting
                if held or s.kv_blocks_used + s.kv_blocks_free != s.kv_blocks_total or s.kv_blocks_total == 0:
                    bad[wid] = {"used": s.kv_blocks_used, "free": s.kv_blocks_free, "total": s.kv_blocks_total,
                                "reservations": s.num_reservations, "running": s.num_running,
                                "waiting": s.num_waiting}
            except grpc.RpcError as e:
                bad[wid] = {"error": str(e.code())}
            finally:
                ch.close()
        last = bad
        if not bad or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    leaked = sum(b.get("used", 0) + b.get("reservations", 0) for b in last.values())
    unreachable = [w for w, b in last.items() if "error" in b]
    return leaked, unreachable, last


def wait_registered(wpb2, wpb2_grpc, grpc, cluster, ids, timeout=60):
    """True once the router's cluster listener (`cluster`) lists every worker id in `ids`, else what it lists."""
    ch = cluster_channel(grpc, cluster)
    stub = wpb2_grpc.WorkerRegistryStub(ch)
    deadline = time.monotonic() + timeout
    listed = None
    try:
        while time.monotonic() < deadline:
            try:
                listed = {w.worker_id for w in stub.ListWorkers(wpb2.ListWorkersRequest(), timeout=5).workers}
                if ids <= listed:
                    return True
            except grpc.RpcError as e:
                listed = str(e.code())
            time.sleep(0.2)
    finally:
        ch.close()
    return listed


def scrape(url, name):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read().decode()
    except OSError as e:
        return "error: %s" % e
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--router", required=True, help="the router's public address (Generation)")
    ap.add_argument("--cluster", required=True, help="the router's cluster address (WorkerRegistry)")
    ap.add_argument("--metrics", required=True, help="the router's /metrics URL")
    ap.add_argument("--workers", required=True, help="JSON {worker id: [role, address]}")
    ap.add_argument("--refs", required=True, help="JSON file of reference rows")
    ap.add_argument("--source", required=True)
    ap.add_argument("--stubs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--burst-at", type=float, nargs="*", default=[])
    ap.add_argument("--burst-size", type=int, default=80)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quiesce-timeout", type=float, default=90)
    ap.add_argument("--certs", default=None, help="the cluster's `tandem certs` directory (mTLS)")
    args = ap.parse_args()
    global CERTS
    CERTS = args.certs
    tc, wpb2, wpb2_grpc = load_client(args.source, args.stubs)
    import grpc
    with open(args.refs) as f:
        refs = json.load(f)
    workers = json.loads(args.workers)
    out = Outcomes()
    registered = wait_registered(wpb2, wpb2_grpc, grpc, args.cluster, set(workers))
    if registered is not True:
        with open(args.out, "w") as f:
            json.dump({"error": "workers not registered: %s" % (registered,)}, f)
        return 1
    client = tc.TandemClient(args.router)
    global T0
    T0 = t0 = time.monotonic()
    try:
        sent = run_load(tc, client, refs, args, out)
    finally:
        client.close()
    load_s = time.monotonic() - t0
    leaked, unreachable, pools = quiesce(wpb2, wpb2_grpc, grpc, workers, args.quiesce_timeout)
    ttft = sorted(out.first_token_s)
    report = {
        "sent": sent, "load_s": round(load_s, 1), "counts": out.counts, "by_code": out.by_code,
        "examples": out.examples, "leaked_blocks": leaked, "unreachable_workers": unreachable,
        "pools_not_empty": pools, "quiesce_s": round(time.monotonic() - t0 - load_s, 1),
        "migrations": scrape(args.metrics, "tandem_request_migrations_total"),
        "ttft_p50_s": round(ttft[len(ttft) // 2], 3) if ttft else None,
        "ttft_p99_s": round(ttft[min(len(ttft) - 1, int(len(ttft) * 0.99))], 3) if ttft else None,
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
