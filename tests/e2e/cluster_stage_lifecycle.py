"""Cluster test stages on the processes' lifecycle: health (the router's
grpc.health.v1 follows its workers), drain (SIGTERM mid-stream to the
router, then to a decode worker) and ipv6 (--host ::1 end to end)."""

import re
import signal
import subprocess
import threading
import time

import cluster_state as state
from cluster_checks import safe, snapshot, wait_released
from cluster_procs import ManualCluster, Proc, bin_path, wait_router_lines
from cluster_refs import generate_many, generate_one, same_as
from cluster_state import channel, check, log


GEN_SERVICE, REG_SERVICE = "tandem.v1.Generation", "tandem.v1.WorkerRegistry"


HEALTH_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def health_of(addr, service="", cluster=False):
    """grpc.health.v1 status of `service` on `addr` ("SERVING", "NOT_SERVING", ...) or the error code's name;
    `cluster`: a cluster listener, over the test CA's mTLS."""
    if cluster:
        import grpc
        from cluster_checks import health_check
        try:
            fields = dict(health_check(addr, cluster=True, service=service))
            return HEALTH_NAMES.get(fields.get(1, 0), "?")
        except grpc.RpcError as e:
            return e.code().name
    c = state.tc.TandemClient(addr)
    try:
        return c.health(service, timeout=5)
    except state.tc.TandemError as e:
        return e.code.name
    finally:
        c.close()


def wait_health(addr, want, timeout, service=""):
    """Polls (bounded) until `service` reports `want`: (ok, seconds waited, last status)."""
    t0 = time.monotonic()
    while True:
        last = health_of(addr, service)
        waited = time.monotonic() - t0
        if last == want or waited > timeout:
            return last == want, waited, last
        time.sleep(0.05)


def run_health():
    """Readiness: the router's health ("" and tandem.v1.Generation) is NOT_SERVING
    until a prefill and a decode worker are registered, SERVING then,
    NOT_SERVING again within the router's expiry once the only decode worker
    dies, SERVING when one returns; the registry answers all along."""
    import grpc
    label = "router alone, then 1P+1D"
    cl = ManualCluster("health", "tcp,self")
    client = None
    try:
        if not check("health: %s: router starts" % label, cl.addr is not None, cl.router.log_tail()):
            return
        st = {s: health_of(cl.addr, s) for s in ("", GEN_SERVICE, REG_SERVICE)}
        check("health: %s: no worker yet: public '' and Generation NOT_SERVING, no WorkerRegistry there "
              "(NOT_FOUND)" % label, st == {"": "NOT_SERVING", GEN_SERVICE: "NOT_SERVING", REG_SERVICE: "NOT_FOUND"},
              st)
        st = {s: health_of(cl.cluster_addr, s, cluster=True) for s in ("", REG_SERVICE)}
        check("health: %s: no worker yet: the cluster listener's '' and WorkerRegistry SERVING (liveness)" % label,
              st == {"": "SERVING", REG_SERVICE: "SERVING"}, st)
        listed = safe(lambda: state.wpb2_grpc.WorkerRegistryStub(channel(cl.cluster_addr)).ListWorkers(
            state.wpb2.ListWorkersRequest(), timeout=5))
        check("health: %s: the registry answers while NOT_SERVING (ListWorkers: none)" % label,
              not isinstance(listed, Exception) and len(listed.workers) == 0, listed)
        client = state.tc.TandemClient(cl.addr)
        t0 = time.monotonic()
        r = safe(lambda: client.generate_text("ROMEO:", max_tokens=4, timeout=20))
        check("health: %s: a request to a router without workers fails at once with UNAVAILABLE" % label,
              isinstance(r, state.tc.TandemError) and r.code == grpc.StatusCode.UNAVAILABLE
              and time.monotonic() - t0 < 5, r)
        ok = cl.start_workers([("prefill", "h-prefill", [])])
        ok2, last = cl.wait_registered(1, 0)
        time.sleep(0.6)  # several of the router's 200 ms readiness polls
        check("health: %s: a prefill worker alone: still NOT_SERVING" % label,
              ok and ok2 and health_of(cl.addr) == "NOT_SERVING", (ok, last, health_of(cl.addr)))
        ok = cl.start_workers([("decode", "h-decode", [])])
        ok2, waited, last = wait_health(cl.addr, "SERVING", 10)
        check("health: %s: a decode worker too: SERVING (%.2fs after it listened), Generation too" % (label, waited),
              ok and ok2 and health_of(cl.addr, GEN_SERVICE) == "SERVING", (ok, last))
        want = generate_one("ROMEO:", flags=["--temperature", "0", "--max-tokens", "16"])
        got = safe(lambda: client.generate_text("ROMEO:", temperature=0, max_tokens=16, timeout=60))
        check("health: %s: once SERVING, a request equals generate" % label, same_as(got, want) is None,
              same_as(got, want))
        victim = cl.workers["h-decode"][0]
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=30)
        # The router forgets a worker 6 s after its last heartbeat (every 2 s).
        ok, waited, last = wait_health(cl.addr, "NOT_SERVING", 10)
        check("health: %s: the only decode worker SIGKILLed: NOT_SERVING after %.1fs (expiry 6 s), Generation too"
              % (label, waited), ok and health_of(cl.addr, GEN_SERVICE) == "NOT_SERVING", last)
        ok = cl.start_workers([("decode", "h-decode-2", [])])
        ok2, waited, last = wait_health(cl.addr, "SERVING", 10)
        check("health: %s: a new decode worker registers: SERVING again (%.2fs)" % (label, waited), ok and ok2,
              (ok, last, [p.log_tail(500) for p in cl.procs()]))
        got = safe(lambda: client.generate_text("ROMEO:", temperature=0, max_tokens=16, timeout=60))
        check("health: %s: ... and answers exactly again" % label, same_as(got, want) is None, same_as(got, want))
        check("health: %s: WorkerRegistry SERVING throughout (cluster listener)" % label,
              health_of(cl.cluster_addr, REG_SERVICE, cluster=True) == "SERVING")
    finally:
        if client is not None:
            client.close()
        cl.stop()


class Streams:
    """Streamed generations in threads; each records its tokens, finish,
    usage or error, and when its first and last chunks arrived."""

    def __init__(self, client, prompts, max_tokens):
        self.results = [None] * len(prompts)
        self.first = [threading.Event() for _ in prompts]
        self.threads = [threading.Thread(target=self._one, args=(client, i, p, max_tokens))
                        for i, p in enumerate(prompts)]
        for t in self.threads:
            t.start()

    def _one(self, client, i, prompt, max_tokens):
        r = {"tokens": [], "text": "", "finish": None, "usage": None, "error": None, "t_last": None}
        try:
            for c in client.generate(prompt, temperature=0, max_tokens=max_tokens, ignore_eos=True, timeout=120):
                r["tokens"] += c.token_ids
                r["text"] += c.text
                r["finish"], r["usage"] = c.finish_reason, c.usage or r["usage"]
                r["t_last"] = time.monotonic()
                self.first[i].set()
        except state.tc.TandemError as e:
            r["error"] = e
        self.first[i].set()
        self.results[i] = r

    def wait_started(self, timeout):
        deadline = time.monotonic() + timeout
        return all(e.wait(max(0.0, deadline - time.monotonic())) for e in self.first)

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return [r if r is not None else {"error": "still running after %ss" % timeout} for r in self.results]


def exact_streams(results, expected):
    """Why the streams differ from `tandem generate` (None when every one is exact)."""
    bad = []
    for i, (r, w) in enumerate(zip(results, expected)):
        got = (r.get("tokens"), r.get("finish"), r.get("usage"), r.get("error"))
        want = (w["token_ids"], w["finish_reason"], state.tc.Usage(len(w["prompt_token_ids"]), len(w["token_ids"])),
                None)
        if got != want:
            bad.append("#%d: got %d tokens %r %r error %r, want %d" % (i, len(got[0] or []), got[1], got[2], got[3],
                                                                   len(want[0])))
    return "; ".join(bad) or None


# Eight streams of 200 tokens on a decode worker that runs one at a time:
# the drain has work left for a while after the signal.
DRAIN_PROMPTS = ["ROMEO:", "JULIET:", "First Citizen:", "KING RICHARD:", "MENENIUS:", "HAMLET:", "GLOUCESTER:",
                 "Nurse:"]


def finish_drain(label, streams, t_probe, expected, which, proc):
    """After a drain began: the streams (`which` ones) must have gone on past
    the refused request and finish exactly; then the draining process's exit
    code (None if it did not exit in 45 s). Returns (results, rc)."""
    results = streams.join(120)
    late = sum(1 for r in results if r.get("t_last") and r["t_last"] > t_probe)
    check("drain: %s: the drain was mid-stream (%d of %d streams still sent chunks after the refused request)"
          % (label, late, len(results)), late > 0, [r.get("t_last") for r in results])
    bad = exact_streams(results, expected)
    check("drain: %s: all %d streams %s complete exactly (200 tokens, finish length)"
          % (label, len(results), which), bad is None, bad)
    try:
        rc = proc.wait(timeout=45)
    except subprocess.TimeoutExpired:
        rc = None
    return results, rc


def check_drain_router(expected):
    """SIGTERM to the router mid-stream: health NOT_SERVING at once, a new
    request UNAVAILABLE "router is shutting down", the streams in flight end
    exactly (200 tokens each), and the router exits 0 within its timeout.
    The decode worker runs one sequence at a time (--max-num-seqs 1), so the
    eight streams last a while after the signal."""
    import grpc
    label = "router SIGTERM mid-stream"
    cl = ManualCluster("drain-r", "tcp,self", router_extra=["--drain-timeout-s", "40"])
    try:
        if not check("drain: %s: router starts" % label, cl.addr is not None, cl.router.log_tail()):
            return
        ok = cl.start_workers([("prefill", "dr-prefill", []), ("decode", "dr-decode", ["--max-num-seqs", "1"])])
        ok2, waited, last = wait_health(cl.addr, "SERVING", 30)
        if not check("drain: %s: 1P+1D(--max-num-seqs 1) register, router SERVING" % label, ok and ok2,
                     [p.log_tail(500) for p in cl.procs()]):
            return
        client = state.tc.TandemClient(cl.addr)
        streams = Streams(client, DRAIN_PROMPTS, 200)
        started = streams.wait_started(60)
        cl.router.proc.send_signal(signal.SIGTERM)
        t_term = time.monotonic()
        ok, waited, last = wait_health(cl.addr, "NOT_SERVING", 2)
        probe = safe(lambda: client.generate_text("ROMEO:", max_tokens=4, timeout=10))
        t_probe = time.monotonic()
        check("drain: %s: every stream had its first chunk before the signal" % label, started)
        check("drain: %s: health NOT_SERVING %.2fs after SIGTERM" % (label, waited), ok, last)
        check("drain: %s: a new request during the drain: UNAVAILABLE 'router is shutting down'" % label,
              isinstance(probe, state.tc.TandemError) and probe.code == grpc.StatusCode.UNAVAILABLE
              and "shutting down" in probe.details, probe)
        results, rc = finish_drain(label, streams, t_probe, expected, "in flight", cl.router.proc)
        t_done = max([r["t_last"] for r in results if r.get("t_last")] or [t_term])
        check("drain: %s: the router exits 0 (%.1fs after SIGTERM, %.1fs after the last stream ended; drain "
              "timeout 40 s)" % (label, time.monotonic() - t_term, time.monotonic() - t_done), rc == 0,
              "rc %s\n%s%s" % (rc, "".join(cl.router.stdout), cl.router.log_tail()))
        client.close()
    finally:
        cl.stop()


def check_drain_decode(expected):
    """SIGTERM to the only decode worker mid-stream: it tells the router
    (ListWorkers shows it draining; the router goes NOT_SERVING), a new
    request gets UNAVAILABLE at once, its streams finish exactly, it exits 0."""
    import grpc
    label = "decode worker SIGTERM mid-stream"
    cl = ManualCluster("drain-d", "tcp,self")
    try:
        if not check("drain: %s: router starts" % label, cl.addr is not None, cl.router.log_tail()):
            return
        ok = cl.start_workers([("prefill", "dd-prefill", []),
                               ("decode", "dd-decode", ["--max-num-seqs", "1", "--drain-timeout-s", "40"])])
        ok2, waited, last = wait_health(cl.addr, "SERVING", 30)
        if not check("drain: %s: 1P+1D(--max-num-seqs 1) register, router SERVING" % label, ok and ok2,
                     [p.log_tail(500) for p in cl.procs()]):
            return
        client = state.tc.TandemClient(cl.addr)
        streams = Streams(client, DRAIN_PROMPTS, 200)
        started = streams.wait_started(60)
        victim = cl.workers["dd-decode"][0]
        victim.proc.send_signal(signal.SIGTERM)
        t_term = time.monotonic()
        registry = state.wpb2_grpc.WorkerRegistryStub(channel(cl.cluster_addr))
        draining = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not draining:
            listed = safe(lambda: registry.ListWorkers(state.wpb2.ListWorkersRequest(), timeout=2))
            draining = not isinstance(listed, Exception) and any(
                w.worker_id == "dd-decode" and w.draining for w in listed.workers)
            time.sleep(0.02)
        t0 = time.monotonic()
        probe = safe(lambda: client.generate_text("ROMEO:", max_tokens=4, timeout=20))
        t_probe = time.monotonic()
        check("drain: %s: every stream had its first chunk before the signal" % label, started)
        check("drain: %s: the router lists the worker as draining %.2fs after SIGTERM"
              % (label, t0 - t_term), draining)
        ok, waited, last = wait_health(cl.addr, "NOT_SERVING", 2)  # the router polls readiness every 200 ms
        check("drain: %s: the router, left without a decode worker, is NOT_SERVING (%.2fs later)" % (label, waited),
              ok, last)
        check("drain: %s: a new request gets UNAVAILABLE in %.2fs (no hang)" % (label, t_probe - t0),
              isinstance(probe, state.tc.TandemError) and probe.code == grpc.StatusCode.UNAVAILABLE
              and t_probe - t0 < 5, probe)
        results, rc = finish_drain(label, streams, t_probe, expected, "on the worker", victim.proc)
        check("drain: %s: the decode worker exits 0 (%.1fs after SIGTERM)" % (label, time.monotonic() - t_term),
              rc == 0, "rc %s\n%s" % (rc, victim.log_tail()))
        check("drain: %s: the router and the prefill worker are still up" % label,
              cl.router.alive() and cl.workers["dd-prefill"][0].alive())
        client.close()
    finally:
        cl.stop()


def run_drain():
    expected = generate_many(DRAIN_PROMPTS, 200, True, [], "drain")
    check_drain_router(expected)
    check_drain_decode(expected)


def ipv6_loopback():
    """Why IPv6 loopback cannot be used here, or None when it can."""
    import socket
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError as e:
        return "cannot bind [::1]: %s" % e
    return None


def run_ipv6():
    """--host ::1 for the router and both workers: they listen and advertise
    [::1]:PORT, the router reaches them, a request gives `generate`'s tokens
    (as every 127.0.0.1 stage does); an unbracketed IPv6 address is refused."""
    import grpc
    why = ipv6_loopback()
    if why is not None:
        log("SKIP ipv6 stage: no IPv6 loopback on this machine (%s)" % why)
        return
    label = "--host ::1"
    cl = ManualCluster("ipv6", "tcp,self", host="::1")
    try:
        if not check("ipv6: %s: router listens on [::1]:PORT" % label, cl.addr is not None, cl.router.log_tail()):
            return
        ok = cl.start_workers([("prefill", "v6-prefill", []), ("decode", "v6-decode", [])])
        ok2, last = cl.wait_registered(1, 1)
        if not check("ipv6: %s: workers listen on [::1]:PORT and register" % label, ok and ok2,
                     [p.log_tail(500) for p in cl.procs()]):
            return
        listed = state.wpb2_grpc.WorkerRegistryStub(channel(cl.cluster_addr)).ListWorkers(
            state.wpb2.ListWorkersRequest(), timeout=5)
        addrs = sorted(w.address for w in listed.workers)
        check("ipv6: %s: the workers advertise bracketed addresses" % label,
              addrs == sorted(cl.addr_of(w) for w in ("v6-prefill", "v6-decode"))
              and all(re.fullmatch(r"\[::1\]:\d+", a) for a in addrs), addrs)
        ok, waited, last = wait_health(cl.addr, "SERVING", 10)
        check("ipv6: %s: the router is SERVING" % label, ok, last)
        want = generate_one("ROMEO:", flags=["--temperature", "0", "--max-tokens", "24", "--ignore-eos"])
        client = state.tc.TandemClient(cl.addr)
        got = safe(lambda: client.generate_text("ROMEO:", temperature=0, max_tokens=24, ignore_eos=True,
                                                timeout=60))
        client.close()
        check("ipv6: %s: a request through [::1] equals generate (as over 127.0.0.1)" % label,
              same_as(got, want) is None, same_as(got, want))
        bad = safe(lambda: state.wpb2_grpc.WorkerRegistryStub(channel(cl.cluster_addr)).Register(
            state.wpb2.RegisterRequest(worker_id="v6-bad", role=state.wpb2.WORKER_ROLE_DECODE, address="::1:5000"),
            timeout=5))
        check("ipv6: %s: Register with an unbracketed IPv6 address -> INVALID_ARGUMENT naming it" % label,
              isinstance(bad, grpc.RpcError) and bad.code() == grpc.StatusCode.INVALID_ARGUMENT
              and "bracketed" in bad.details(), bad)
    finally:
        cl.stop()


def run_two_routers():
    """Router replicas: workers started with `--router A,B` register with both
    routers; each router serves requests exactly; a router SIGKILLed
    mid-stream ends its own streams UNAVAILABLE (the client retries), while
    the other keeps serving and the workers free everything the dead one held."""
    import grpc
    label = "2 routers, 1P+1D"
    cl = ManualCluster("routers", "tcp,self")
    client_a = client_b = None
    try:
        b = Proc("routers-router-b", [bin_path("tandem-router"), "--host", "127.0.0.1", "--port", "0",
                                      "--cluster-port", "0"] + cl.tls_flags("router"), env=cl.env)
        b_addr, b_cluster = wait_router_lines(b, r"127\.0\.0\.1:\d+", 60)
        if not check("routers: %s: both routers start" % label, cl.addr is not None and b_addr is not None,
                     cl.router.log_tail() + b.log_tail()):
            return
        both = ["--router", "%s,%s" % (cl.cluster_addr, b_cluster)]
        ok = cl.start_workers([("prefill", "r-prefill", both), ("decode", "r-decode", both)])
        listed = {}
        for name, addr in (("A", cl.cluster_addr), ("B", b_cluster)):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                got = safe(lambda: sorted(w.worker_id for w in state.wpb2_grpc.WorkerRegistryStub(
                    channel(addr)).ListWorkers(state.wpb2.ListWorkersRequest(), timeout=2).workers))
                listed[name] = got
                if got == ["r-decode", "r-prefill"]:
                    break
                time.sleep(0.1)
        check("routers: %s: `--router A,B`: both workers are registered with both routers" % label,
              ok and listed == {"A": ["r-decode", "r-prefill"], "B": ["r-decode", "r-prefill"]}, listed)
        dec, pre = [cl.addr_of("r-decode")], [cl.addr_of("r-prefill")]
        base = snapshot(dec, pre)
        client_a, client_b = state.tc.TandemClient(cl.addr), state.tc.TandemClient(b_addr)
        want = generate_one("ROMEO:", flags=["--temperature", "0", "--max-tokens", "24", "--ignore-eos"])
        for name, client in (("A", client_a), ("B", client_b)):
            got = safe(lambda: client.generate_text("ROMEO:", temperature=0, max_tokens=24, ignore_eos=True,
                                                    timeout=60))
            check("routers: %s: a request through router %s equals generate" % (label, name),
                  same_as(got, want) is None, same_as(got, want))
        # Router A dies mid-stream: its stream ends UNAVAILABLE after partial output.
        seen, outcome = [], {}

        def stream_a():
            try:
                for chunk in client_a.generate("JULIET:", temperature=0, max_tokens=200, ignore_eos=True,
                                                      timeout=60):
                    seen.extend(chunk.token_ids)
                outcome["status"] = "OK"
            except grpc.RpcError as e:  # noqa: PERF203
                outcome["status"] = e.code()
            except state.tc.TandemError as e:
                outcome["status"] = e.code

        th = threading.Thread(target=stream_a)
        th.start()
        deadline = time.monotonic() + 30
        while len(seen) < 4 and time.monotonic() < deadline and th.is_alive():
            time.sleep(0.005)
        cl.router.proc.send_signal(signal.SIGKILL)
        th.join(timeout=60)
        check("routers: %s: router A SIGKILLed mid-stream: its client sees UNAVAILABLE after %d tokens"
              % (label, len(seen)), outcome.get("status") == grpc.StatusCode.UNAVAILABLE and 0 < len(seen) < 200,
              outcome)
        got = safe(lambda: client_b.generate_text("ROMEO:", temperature=0, max_tokens=24, ignore_eos=True,
                                                  timeout=60))
        check("routers: %s: router B keeps serving exactly" % label, same_as(got, want) is None, same_as(got, want))
        ok, desc = wait_released(base)
        check("routers: %s: the workers freed what router A's stream held" % label, ok, desc)
    finally:
        for c in (client_a, client_b):
            if c is not None:
                c.close()
        cl.stop()
        b.stop()
