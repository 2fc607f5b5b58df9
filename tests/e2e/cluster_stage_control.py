"""Cluster test stage `control`: nobody joins the cluster uninvited.
Replays the impostor experiment of the security issue against
tandem-router with mTLS inside the cluster (the test's CA):
  - the public port serves no registry (Register and ListWorkers get
    UNIMPLEMENTED);
  - the cluster port completes no handshake without a certificate from the
    cluster CA (plaintext, or another CA's certificates: UNAVAILABLE), and a
    cluster certificate of the wrong role cannot register (PERMISSION_DENIED);
  - a real tandem-prefill-worker holding another CA's certificates never
    registers;
  - an impostor (a grpcio server in this process, on 127.0.0.1, counting
    the Prefill calls it gets) registered with a stolen prefill-worker
    certificate still gets 0 of 16 users' requests: the router dials a
    prefill worker only over TLS that proves the prefill-worker role;
  - the control: under --insecure-cluster the same impostor registered on
    the cluster port does get Prefill calls carrying users' prompts, so the
    zero above is the count that matters."""

import os
import re
import threading
import time
from concurrent import futures

import cluster_state as state
from cluster_checks import concurrent, safe
from cluster_procs import ManualCluster, Proc, UpCluster, bin_path, wait_pids_gone
from cluster_refs import generate_many, same_as
from cluster_state import check, log
from cluster_stage_lifecycle import wait_health
from e2e_util import make_prompts

N_REQUESTS, MAX_TOKENS = 16, 16


class Impostor:
    """A fake tandem.v1.PrefillWorker on 127.0.0.1: records every Prefill
    request's prompt and answers UNAVAILABLE (the router then tries its real
    prefill worker). Stats answers empty. stop() ends it."""

    def __init__(self):
        import grpc
        self.mu = threading.Lock()
        self.prompts = []  # prompt_token_ids of every Prefill call received
        impostor = self

        class Servicer(state.wpb2_grpc.PrefillWorkerServicer):
            def Prefill(self, request, context):  # noqa: N802 (gRPC's name)
                with impostor.mu:
                    impostor.prompts.append(list(request.prompt_token_ids))
                context.abort(grpc.StatusCode.UNAVAILABLE, "impostor")

            def Stats(self, request, context):  # noqa: N802
                return state.wpb2.WorkerStats()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        state.wpb2_grpc.add_PrefillWorkerServicer_to_server(Servicer(), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.addr = "127.0.0.1:%d" % port
        self.server.start()

    def num_calls(self):
        with self.mu:
            return len(self.prompts)

    def stop(self):
        self.server.stop(grace=None).wait(timeout=10)


def register(ch, impostor, role="prefill", draining=False):
    """WorkerRegistry.Register of `impostor` as `role` worker "impostor" over channel `ch`: the response or the RpcError."""
    stub = state.wpb2_grpc.WorkerRegistryStub(ch)
    return safe(lambda: stub.Register(state.wpb2.RegisterRequest(
        worker_id="impostor", address=impostor.addr, incarnation="0123456789abcdef", draining=draining,
        role=state.wpb2.WORKER_ROLE_PREFILL if role == "prefill" else state.wpb2.WORKER_ROLE_DECODE), timeout=5))


def listed_ids(ch):
    """Sorted worker ids ListWorkers over channel `ch` answers, or the RpcError."""
    got = safe(lambda: state.wpb2_grpc.WorkerRegistryStub(ch).ListWorkers(state.wpb2.ListWorkersRequest(), timeout=5))
    return got if isinstance(got, Exception) else sorted(w.worker_id for w in got.workers)


def code_of(r):
    import grpc
    return r.code() if isinstance(r, grpc.RpcError) else r


def users_requests(client, prompts):
    return concurrent(lambda i: client.generate_text(prompts[i], temperature=0, max_tokens=MAX_TOKENS,
                                                     ignore_eos=True, timeout=120), N_REQUESTS)


def other_ca():
    """A second CA's certificates (the same role names), in <work>/other-ca."""
    out = os.path.join(state.ARGS.work, "other-ca")
    rc, _, err = state.run([bin_path("tandem"), "certs", "--out", out, "--dns", state.TEST_PEER, "--force"])
    if rc != 0:
        raise RuntimeError("tandem certs (other CA): " + err)
    return out


def run_control_plane():
    import grpc
    label = "router + 1P + 1D, mTLS"
    prompts = make_prompts(N_REQUESTS)
    expected = generate_many(prompts, MAX_TOKENS, True, [], "control")
    cl = ManualCluster("control", "tcp,self")
    impostor = client = None
    opened = []

    def chan(*a, **kw):
        ch = state.cluster_channel(*a, **kw)
        opened.append(ch)
        return ch
    try:
        if not check("control: %s: the router prints a public and a cluster listener, on distinct ports (%s, %s), "
                     "the cluster one over mTLS" % (label, cl.addr, cl.cluster_addr),
                     cl.addr is not None and cl.cluster_addr is not None and cl.addr != cl.cluster_addr
                     and "(worker registry, mTLS)" in cl.router.cluster_line, cl.router.cluster_line):
            return
        ok = cl.start_workers([("prefill", "c-prefill", []), ("decode", "c-decode", [])])
        ok2, last = cl.wait_registered(1, 1)
        ids = listed_ids(state.channel(cl.cluster_addr))
        if not check("control: %s: the workers register on the cluster port (ListWorkers there: %s)" % (label, ids),
                     ok and ok2 and ids == ["c-decode", "c-prefill"], (last, [p.log_tail(500) for p in cl.procs()])):
            return
        impostor = Impostor()
        r = register(state.public_channel(cl.addr), impostor)
        check("control: %s: Register of an impostor prefill worker on the PUBLIC port -> UNIMPLEMENTED" % label,
              code_of(r) == grpc.StatusCode.UNIMPLEMENTED, r)
        r = listed_ids(state.public_channel(cl.addr))
        check("control: %s: ListWorkers on the PUBLIC port -> UNIMPLEMENTED" % label,
              code_of(r) == grpc.StatusCode.UNIMPLEMENTED, r)

        # Without a certificate from the cluster CA, no call reaches the registry.
        plain = grpc.insecure_channel(cl.cluster_addr)
        opened.append(plain)
        r = register(plain, impostor)
        check("control: %s: Register in plaintext on the cluster port -> UNAVAILABLE (no TLS handshake)" % label,
              code_of(r) == grpc.StatusCode.UNAVAILABLE, r)
        other = other_ca()
        r = register(chan(cl.cluster_addr, certs=other, role="prefill-worker"), impostor)
        check("control: %s: Register with another CA's prefill-worker certificate -> UNAVAILABLE (handshake refused)"
              % label, code_of(r) == grpc.StatusCode.UNAVAILABLE, r)
        r = listed_ids(chan(cl.cluster_addr, certs=other, role="router"))
        check("control: %s: ListWorkers with another CA's router certificate -> UNAVAILABLE" % label,
              code_of(r) == grpc.StatusCode.UNAVAILABLE, r)
        # A cluster certificate of another role cannot register this one.
        for cert_role, as_role in (("decode-worker", "prefill"), ("router", "prefill"), ("prefill-worker", "decode")):
            r = register(chan(cl.cluster_addr, role=cert_role), impostor, role=as_role)
            check("control: %s: Register as a %s worker with the cluster CA's %s certificate -> PERMISSION_DENIED"
                  % (label, as_role, cert_role), code_of(r) == grpc.StatusCode.PERMISSION_DENIED
                  and "tandem-%s-worker" % as_role in r.details(), r)
        # A real worker binary with another CA's certificates.
        rogue = Proc("control-rogue-prefill", [
            bin_path("tandem-prefill-worker"), "--host", "127.0.0.1", "--port", "0", "--router", cl.cluster_addr,
            "--worker-id", "rogue", "--tls-ca", os.path.join(other, "ca.crt"),
            "--tls-cert", os.path.join(other, "prefill-worker.crt"),
            "--tls-key", os.path.join(other, "prefill-worker.key")], env=cl.env)
        m = rogue.wait_line(r"listening on (127\.0\.0\.1:\d+)", 90)
        time.sleep(3)  # three of its 1 s registration attempts
        ids = listed_ids(state.channel(cl.cluster_addr))
        check("control: %s: a tandem-prefill-worker with another CA's certificate starts but never registers "
              "(listed: %s)" % (label, ids), m is not None and ids == ["c-decode", "c-prefill"], rogue.log_tail())
        rogue.stop()

        # An impostor holding a stolen prefill-worker certificate registers,
        # but the router dials it expecting that certificate and gets none.
        r = register(chan(cl.cluster_addr, role="prefill-worker"), impostor)
        check("control: %s: the impostor's Register with a stolen prefill-worker certificate -> OK" % label,
              isinstance(r, state.wpb2.RegisterResponse), r)
        ok, waited, last = wait_health(cl.addr, "SERVING", 10)
        if not check("control: %s: the router is SERVING on its public port" % label, ok, last):
            return
        client = state.tc.TandemClient(cl.addr)
        for round_ in range(2):
            res = users_requests(client, prompts)
            bad = ["#%d: %s" % (i, same_as(r, w)) for i, (r, w) in enumerate(zip(res, expected)) if same_as(r, w)]
            check("control: %s: round %d: %d concurrent requests with the impostor registered: all OK and equal "
                  "`tandem generate`" % (label, round_ + 1, N_REQUESTS), not bad, "%d bad: %s" % (len(bad), bad[:3]))
        check("control: %s: 0 Prefill calls reached the impostor (got %d)" % (label, impostor.num_calls()),
              impostor.num_calls() == 0)
        client.close()
        client = None
    finally:
        if client is not None:
            client.close()
        for ch in opened:
            ch.close()
        cl.stop()
    if impostor is not None:
        try:
            run_insecure_control(impostor, prompts, expected)
        finally:
            impostor.stop()
    run_up_ephemeral(prompts, expected)


def run_up_ephemeral(prompts, expected):
    """`tandem up` with no TLS flags: mTLS with an ephemeral CA of its own,
    in a private directory that is gone once it stops; the test's CA (a
    stranger to it) gets no handshake on its cluster port."""
    import grpc
    label = "`tandem up` (default: ephemeral CA)"
    up = UpCluster("control-up", [], "tcp,self", tls=None)
    client = None
    try:
        ok = up.wait_ready()
        m = re.search(r"over mTLS \(certificates in (\S+), ephemeral\)", up.tls_line)
        certs = m.group(1) if m else None
        mode = os.stat(certs).st_mode & 0o777 if certs and os.path.isdir(certs) else None
        if not check("control: %s: ready, says mTLS with an ephemeral certificate directory (%s, mode %s)"
                     % (label, certs, oct(mode) if mode is not None else None),
                     ok and mode == 0o700 and sorted(os.listdir(certs)) == sorted(
                         ["ca.crt"] + ["%s.%s" % (r, e) for r in ("router", "prefill-worker", "decode-worker")
                                       for e in ("crt", "key")]), (up.tls_line, up.proc.log_tail())):
            return
        client = state.tc.TandemClient(up.addr)
        res = users_requests(client, prompts)
        bad = ["#%d: %s" % (i, same_as(r, w)) for i, (r, w) in enumerate(zip(res, expected)) if same_as(r, w)]
        check("control: %s: %d concurrent requests equal `tandem generate`" % (label, N_REQUESTS), not bad,
              "%d bad: %s" % (len(bad), bad[:3]))
        r = listed_ids(state.channel(up.cluster_addr))
        check("control: %s: the test's CA gets no handshake on its cluster port (UNAVAILABLE)" % label,
              code_of(r) == grpc.StatusCode.UNAVAILABLE, r)
        pids = up.pids()
        rc = up.proc.stop(wait=30)
        check("control: %s: exits 0 on SIGTERM, its members gone, its certificate directory removed" % label,
              rc == 0 and not wait_pids_gone(pids) and not os.path.exists(certs), (rc, certs))
    finally:
        if client is not None:
            client.close()
        up.proc.stop()


def run_insecure_control(impostor, prompts, expected):
    """The control: with --insecure-cluster the impostor registered on the
    cluster port gets users' prompts."""
    label = "router + 1P + 1D, --insecure-cluster"
    cl = ManualCluster("control-plain", "tcp,self", insecure=True)
    client = None
    try:
        ok = cl.addr is not None and "PLAINTEXT: --insecure-cluster" in cl.router.cluster_line
        ok = ok and cl.start_workers([("prefill", "p-prefill", []), ("decode", "p-decode", [])])
        ok2, last = cl.wait_registered(1, 1)
        if not check("control: %s: starts, says PLAINTEXT and the workers register" % label, ok and ok2,
                     (last, [p.log_tail(500) for p in cl.procs()])):
            return
        r = register(cl.channel(cl.cluster_addr), impostor)
        check("control: %s: the impostor's plaintext Register on the cluster port -> OK" % label,
              isinstance(r, state.wpb2.RegisterResponse) and r.heartbeat_interval_ms > 0, r)
        ok, waited, last = wait_health(cl.addr, "SERVING", 10)
        client = state.tc.TandemClient(cl.addr)
        deadline = time.monotonic() + 60
        rounds = 0
        while impostor.num_calls() == 0 and rounds < 4 and time.monotonic() < deadline:
            rounds += 1
            users_requests(client, prompts)
        leaked = {tuple(p) for p in impostor.prompts}
        users = {tuple(w["prompt_token_ids"]) for w in expected}
        check("control: %s: the impostor gets %d Prefill calls in %d round(s) of %d, each with a user's prompt"
              % (label, impostor.num_calls(), rounds, N_REQUESTS),
              impostor.num_calls() > 0 and leaked <= users, (impostor.num_calls(), len(leaked - users)))
        r = register(cl.channel(cl.cluster_addr), impostor, draining=True)
        check("control: %s: the impostor's draining Register -> OK" % label,
              isinstance(r, state.wpb2.RegisterResponse), r)
        log("control: the impostor got %d prompts without mTLS, 0 with it" % impostor.num_calls())
    finally:
        if client is not None:
            client.close()
        cl.stop()
