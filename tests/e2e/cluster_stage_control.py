"""Cluster test stage `control`: the router's control plane is apart from
its public API. Replays the impostor experiment of the security issue
against tandem-router: an anonymous client of the public port tries to
register its own prefill worker (a grpcio server in this process that
counts the Prefill calls it gets, on 127.0.0.1) and to list the workers;
both calls get UNIMPLEMENTED, 16 users' requests all come back exact and
none reaches the impostor. Then the same impostor registered on the
cluster port does get Prefill calls carrying users' prompts: the cluster
port is where workers register, and the count above would have seen them."""

import threading
import time
from concurrent import futures

import cluster_state as state
from cluster_checks import concurrent, safe
from cluster_procs import ManualCluster
from cluster_refs import generate_many, same_as
from cluster_state import channel, check
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


def register(addr, impostor, draining=False):
    """WorkerRegistry.Register of `impostor` as prefill worker "impostor" at `addr`: the response or the RpcError."""
    stub = state.wpb2_grpc.WorkerRegistryStub(channel(addr))
    return safe(lambda: stub.Register(state.wpb2.RegisterRequest(
        worker_id="impostor", role=state.wpb2.WORKER_ROLE_PREFILL, address=impostor.addr,
        incarnation="0123456789abcdef", draining=draining), timeout=5))


def listed_ids(addr):
    """Sorted worker ids ListWorkers at `addr` answers, or the RpcError."""
    got = safe(lambda: state.wpb2_grpc.WorkerRegistryStub(channel(addr)).ListWorkers(
        state.wpb2.ListWorkersRequest(), timeout=5))
    return got if isinstance(got, Exception) else sorted(w.worker_id for w in got.workers)


def code_of(r):
    import grpc
    return r.code() if isinstance(r, grpc.RpcError) else r


def run_control_plane():
    import grpc
    label = "router + 1P + 1D"
    prompts = make_prompts(N_REQUESTS)
    expected = generate_many(prompts, MAX_TOKENS, True, [], "control")
    cl = ManualCluster("control", "tcp,self")
    impostor = client = None
    try:
        if not check("control: %s: the router prints a public and a cluster listener, on distinct ports (%s, %s)"
                     % (label, cl.addr, cl.cluster_addr),
                     cl.addr is not None and cl.cluster_addr is not None and cl.addr != cl.cluster_addr,
                     cl.router.log_tail()):
            return
        ok = cl.start_workers([("prefill", "c-prefill", []), ("decode", "c-decode", [])])
        ok2, last = cl.wait_registered(1, 1)
        ids = listed_ids(cl.cluster_addr)
        if not check("control: %s: the workers register on the cluster port (ListWorkers there: %s)" % (label, ids),
                     ok and ok2 and ids == ["c-decode", "c-prefill"], (last, [p.log_tail(500) for p in cl.procs()])):
            return
        impostor = Impostor()
        r = register(cl.addr, impostor)
        check("control: %s: Register of an impostor prefill worker on the PUBLIC port -> UNIMPLEMENTED" % label,
              code_of(r) == grpc.StatusCode.UNIMPLEMENTED, r)
        r = safe(lambda: state.wpb2_grpc.WorkerRegistryStub(channel(cl.addr)).ListWorkers(
            state.wpb2.ListWorkersRequest(), timeout=5))
        check("control: %s: ListWorkers on the PUBLIC port -> UNIMPLEMENTED" % label,
              code_of(r) == grpc.StatusCode.UNIMPLEMENTED, r)
        ok, waited, last = wait_health(cl.addr, "SERVING", 10)
        if not check("control: %s: the router is SERVING on its public port" % label, ok, last):
            return
        client = state.tc.TandemClient(cl.addr)
        res = concurrent(lambda i: client.generate_text(prompts[i], temperature=0, max_tokens=MAX_TOKENS,
                                                        ignore_eos=True, timeout=120), N_REQUESTS)
        bad = ["#%d: %s" % (i, same_as(r, w)) for i, (r, w) in enumerate(zip(res, expected)) if same_as(r, w)]
        check("control: %s: %d concurrent requests after the attempt: all OK and equal `tandem generate`"
              % (label, N_REQUESTS), not bad, "%d bad: %s" % (len(bad), bad[:3]))
        check("control: %s: 0 Prefill calls reached the impostor (got %d)" % (label, impostor.num_calls()),
              impostor.num_calls() == 0)
        ids = listed_ids(cl.cluster_addr)
        check("control: %s: the router lists only its 2 workers" % label, ids == ["c-decode", "c-prefill"], ids)

        # The control: where workers register, the same impostor is accepted
        # and gets users' prompts (so the 0 above is the count that matters).
        r = register(cl.cluster_addr, impostor)
        check("control: %s: Register on the cluster port -> OK (heartbeat %s ms)"
              % (label, getattr(r, "heartbeat_interval_ms", "?")),
              isinstance(r, state.wpb2.RegisterResponse) and r.heartbeat_interval_ms > 0, r)
        deadline = time.monotonic() + 60
        rounds = 0
        while impostor.num_calls() == 0 and rounds < 4 and time.monotonic() < deadline:
            rounds += 1
            concurrent(lambda i: client.generate_text(prompts[i], temperature=0, max_tokens=MAX_TOKENS,
                                                      ignore_eos=True, timeout=120), N_REQUESTS)
        leaked = {tuple(p) for p in impostor.prompts}
        users = {tuple(w["prompt_token_ids"]) for w in expected}
        check("control: %s: registered on the cluster port, the impostor gets %d Prefill calls in %d round(s) of %d, "
              "each with a user's prompt" % (label, impostor.num_calls(), rounds, N_REQUESTS),
              impostor.num_calls() > 0 and leaked <= users, (impostor.num_calls(), len(leaked - users)))
        r = register(cl.cluster_addr, impostor, draining=True)
        check("control: %s: the impostor's draining Register on the cluster port -> OK" % label,
              isinstance(r, state.wpb2.RegisterResponse), r)
    finally:
        if client is not None:
            client.close()
        if impostor is not None:
            impostor.stop()
        cl.stop()
