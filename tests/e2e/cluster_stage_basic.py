"""The cluster test's main stages: `tandem up` 1P/1D over UCX tcp (stage a:
checks 1-3, 5, 6, 8-10, a dead worker and then the dead router restarted by
the launcher at their addresses, and with --max-restarts 0 a dead child
stopping the cluster), `tandem
serve` (serve), `tandem up` 2P/2D over UCX sm/cma with bf16 (c) and
tensor-parallel workers (tp)."""

import math
import os
import signal
import subprocess
import threading
import time
import traceback

import cluster_state as state
from cluster_checks import (check_cancel, check_health, check_kv_bytes, check_layout, check_mixed32, check_seeded,
                            probe_admit, safe, snapshot, stats, wait_released)
from cluster_checks_edge import check_deadline, check_example, check_first_chunk, check_malformed, check_stop_string
from cluster_procs import FOREIGN_PIDS, ManualCluster, Proc, UpCluster, bin_path, wait_pids_gone
from cluster_refs import mixed_expected
from cluster_state import channel, check
from e2e_util import default_kv_dtype


def run_cluster_a(prompts, expected, model_cfg):
    """`tandem up` 1 prefill + 1 decode over UCX tcp: checks 1-3, 5, 6, 8-10."""
    label = "up 1P/1D tcp"
    up = UpCluster("up-a", ["--num-kv-blocks", "512"], "tcp,self")
    try:
        ready = up.wait_ready()
        if not check("%s: `tandem up` prints its members and ready (router, prefill-0, decode-0), the router with "
                     "its cluster listener (%s) apart from the endpoint (%s)" % (label, up.cluster_addr, up.addr),
                     ready and set(up.members) == {"router", "prefill-0", "decode-0"}
                     and up.addr == up.members["router"][1] and up.cluster_addr not in (None, up.addr),
                     "".join(up.proc.stdout) + up.proc.log_tail()):
            return
        dec, pre = up.addrs("decode"), up.addrs("prefill")
        check_health(label, [("router", up.addr)] + [("decode worker", a) for a in dec]
                     + [("prefill worker", a) for a in pre])
        client = state.tc.TandemClient(up.addr)
        base = snapshot(dec, pre)
        kv_name, kv_bytes = default_kv_dtype(model_cfg)
        layout = check_layout(label, dec[0], model_cfg, kv_bytes, kv_name)
        ok, desc = wait_released(base)
        check("3: %s: the probe reservation's block is free again" % label, ok, desc)
        before = {a: s.kv_transfer_bytes_total for a, s in base[1].items()}
        steps = [
            ("1", lambda: check_mixed32(label, client, prompts, expected)),
            ("3", lambda: check_kv_bytes(label, pre, before, expected, layout)),
            ("5a", lambda: check("5a: %s: after 32 completed requests every pool is back to start, nothing running"
                                 % label, *wait_released(base))),
            ("6", lambda: check_first_chunk(label, client)),
            ("2", lambda: check_seeded(label, client)),
            ("5b", lambda: check_cancel(label, client, base)),
            ("5c", lambda: check_deadline(label, client, base)),
            ("5d", lambda: check_stop_string(label, client, base)),
            ("8", lambda: check_malformed(label, client, up.addr)),
            ("9", lambda: check_example(label, up.addr)),
        ]
        for name, step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001
                check("%s: %s ran without an exception" % (name, label), False, traceback.format_exc())
            if up.proc.proc.poll() is not None:
                check("%s: `tandem up` still running after %s" % (label, name), False,
                      "exit %s\n%s" % (up.proc.proc.returncode, up.proc.log_tail()))
                break
        ok, desc = wait_released(base)
        check("5: %s: after all checks every pool is back to start" % label, ok, desc)
        # A dead worker is restarted by the launcher; the cluster keeps serving.
        if up.proc.alive():
            check_restarted_worker(label, up, client, prompts[:8], expected[:8])
        if up.proc.alive():
            check_restarted_router(label, up, client, prompts[:8], expected[:8])
        client.close()
    finally:
        up.proc.stop(wait=30)
    check_no_restarts_stops_cluster()


def check_restarted_worker(label, up, client, prompts, expected):
    old_pid, old_addr = up.members["decode-0"]
    os.kill(old_pid, signal.SIGKILL)
    m = up.proc.wait_line(r"^tandem up: decode-0 pid (\d+) on (127\.0\.0\.1:\d+) \(restarted\)", 60)
    if not check("%s: SIGKILL of decode-0: `tandem up` restarts it (a new pid) and keeps running" % label,
                 m is not None and int(m.group(1)) != old_pid and up.proc.alive(), up.proc.log_tail()):
        return
    up.members["decode-0"] = (int(m.group(1)), m.group(2))
    FOREIGN_PIDS.append((int(m.group(1)), "%s/decode-0 (restarted)" % up.name))
    stub = state.wpb2_grpc.WorkerRegistryStub(channel(up.cluster_addr))
    listed = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = safe(lambda: [(w.worker_id, w.address) for w in stub.ListWorkers(
            state.wpb2.ListWorkersRequest(), timeout=2).workers if w.role == state.wpb2.WORKER_ROLE_DECODE])
        if listed == [("decode-0", m.group(2))]:
            break
        time.sleep(0.1)
    check("%s: the router lists decode-0 once, at its new address (the old entry replaced)" % label,
          listed == [("decode-0", m.group(2))], "%s (old %s)" % (listed, old_addr))
    check_mixed32(label + " after a restart", client, prompts, expected)


def check_restarted_router(label, up, client, prompts, expected):
    """SIGKILL of the router: `tandem up` starts it again on both of its
    ports, the workers re-register on the cluster port (next heartbeat) and
    the endpoint serves exactly again."""
    old_pid = up.members["router"][0]
    os.kill(old_pid, signal.SIGKILL)
    m = up.proc.wait_line(r"^tandem up: router pid (\d+) on (127\.0\.0\.1:\d+), cluster listener on "
                          r"(127\.0\.0\.1:\d+) \(restarted\)", 60)
    if not check("%s: SIGKILL of the router: `tandem up` restarts it on the same public and cluster ports" % label,
                 m is not None and int(m.group(1)) != old_pid
                 and (m.group(2), m.group(3)) == (up.addr, up.cluster_addr),
                 (m and m.groups(), up.addr, up.cluster_addr, up.proc.log_tail())):
        return
    FOREIGN_PIDS.append((int(m.group(1)), "%s/router (restarted)" % up.name))
    stub = state.wpb2_grpc.WorkerRegistryStub(channel(up.cluster_addr))
    listed = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = safe(lambda: sorted(w.worker_id for w in stub.ListWorkers(state.wpb2.ListWorkersRequest(),
                                                                            timeout=2).workers))
        if listed == ["decode-0", "prefill-0"]:
            break
        time.sleep(0.1)
    check("%s: the workers registered again with the restarted router's cluster port" % label,
          listed == ["decode-0", "prefill-0"], listed)
    check_mixed32(label + " after a router restart", client, prompts, expected)


def check_no_restarts_stops_cluster():
    """--max-restarts 0: a dead child stops the whole cluster, exit 1."""
    label = "up --max-restarts 0"
    up = UpCluster("up-a0", ["--max-restarts", "0", "--num-kv-blocks", "64"], "tcp,self")
    try:
        if not check("%s: ready" % label, up.wait_ready(), up.proc.log_tail()):
            return
        os.kill(up.members["decode-0"][0], signal.SIGKILL)
        try:
            rc = up.proc.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            rc = None
        check("%s: SIGKILL of decode-0 makes `tandem up` stop the cluster and exit 1" % label, rc == 1,
              "rc %s\n%s" % (rc, up.proc.log_tail()))
        left = wait_pids_gone(up.pids())
        check("%s: ... and the router and prefill-0 are gone" % label, not left, left)
    finally:
        up.proc.stop(wait=30)


def kv_head_shard(kv_heads, rank, size):
    """engine/model/tp_shard.h KvHeadShard: (first head, heads) of a rank."""
    if kv_heads >= size:
        per = kv_heads // size
        return per * rank, per
    return rank // (size // kv_heads), 1


def run_cluster_tp(prompts, expected, model_cfg):
    """Tensor-parallel workers: prefill TP=a -> decode TP=b (fan-out, fan-in,
    fan-out onto replicated KV heads) give the single-process tokens, every
    decode rank gets exactly its heads' bytes, and the pool (one block table
    for all ranks) is back to start."""
    n = 12
    kv_heads, layers = model_cfg["num_key_value_heads"], model_cfg["num_hidden_layers"]
    head_dim = model_cfg.get("head_dim") or model_cfg["hidden_size"] // model_cfg["num_attention_heads"]
    for a, b, tls in [(1, 2, "tcp,self"), (2, 1, "sm,self,cma"), (2, 4, "tcp,self")]:
        label = "router+1P(tp%d)+1D(tp%d) %s" % (a, b, tls.split(",")[0])
        cl = ManualCluster("tp%d%d" % (a, b), tls)
        try:
            if not check("tp: %s: router listening" % label, cl.addr is not None, cl.router.log_tail()):
                continue
            started = cl.start_workers([("prefill", "p0", ["--tp", str(a), "--num-kv-blocks", "256"]),
                                        ("decode", "d0", ["--tp", str(b), "--num-kv-blocks", "256"])])
            ok, last = cl.wait_registered(1, 1)
            if not check("tp: %s: workers start and register" % label, started and ok,
                         "%s\n%s" % (last, "\n".join(p.log_tail() for p in cl.procs()))):
                continue
            dec, pre = cl.addr_of("d0"), cl.addr_of("p0")
            base = snapshot([dec], [pre])
            resp, size, _ = probe_admit(dec, "probe-tp")
            ranks = resp.destination.ranks
            want = [(r, b, *kv_head_shard(kv_heads, r, b)) for r in range(b)]
            got = [(x.layout.tp_rank, x.layout.tp_size, x.layout.kv_head_begin, x.layout.num_kv_heads) for x in ranks]
            spans = [x.layout.block_span_bytes for x in ranks]
            kv_bytes = default_kv_dtype(model_cfg)[1]
            check("tp: %s: Admit gives one region per decode rank with its KV heads %s, span 2*heads*16*%d*%d, "
                  "%d KV heads in all, distinct descriptors"
                  % (label, [w[2:] for w in want], head_dim, kv_bytes, kv_heads),
                  got == want and spans == [2 * w[3] * 16 * head_dim * kv_bytes for w in want]
                  and all(x.layout.total_kv_heads == kv_heads and x.layout.num_layers == layers for x in ranks)
                  and len({x.memory_descriptor for x in ranks}) == b, resp.destination)
            s = stats(dec, "decode")
            check("tp: %s: decode Stats reports tp_size %d" % (label, b), s.tp_size == b, s)
            ok, desc = wait_released(base)
            check("tp: %s: the probe reservation's block is free again" % label, ok, desc)
            before = stats(pre, "prefill").kv_transfer_bytes_total
            client = state.tc.TandemClient(cl.addr)
            check_mixed32(label, client, prompts[:n], expected[:n])
            client.close()
            # Every decode rank received its heads of every prompt block, each
            # replica its own copy: sum over ranks of their span per block and layer.
            want_bytes = sum(math.ceil(len(r["prompt_token_ids"]) / 16) for r in expected[:n]) * layers * sum(spans)
            grew = stats(pre, "prefill").kv_transfer_bytes_total - before
            check("tp: %s: prefill shipped exactly sum(ceil(prompt/16)) * %d layers * %d bytes (all decode ranks' "
                  "spans) = %d" % (label, layers, sum(spans), want_bytes), grew == want_bytes,
                  "grew by %d" % grew)
            ok, desc = wait_released(base)
            check("tp: %s: after the requests the pool is back to start on both workers" % label, ok, desc)
        finally:
            cl.stop()


def run_serve(prompts, expected):
    label = "serve"
    srv = Proc("serve", [bin_path("tandem"), "serve", "--host", "127.0.0.1", "--port", "0", "--num-kv-blocks", "512"])
    try:
        m = srv.wait_line(r"tandem serve: listening on (127\.0\.0\.1:\d+)", 60)
        if not check("%s: `tandem serve` starts" % label, m is not None, srv.log_tail()):
            return
        check_health(label, [("server", m.group(1))])
        client = state.tc.TandemClient(m.group(1))
        check_mixed32(label, client, prompts, expected)
        client.close()
    finally:
        rc = srv.stop()
        check("%s: `tandem serve` exits 0 on SIGTERM" % label, rc == 0, "rc %s %s" % (rc, srv.log_tail()))


def run_cluster_c(prompts, model_cfg):
    """`tandem up` 2 prefill + 2 decode over UCX shared memory/CMA, bf16 KV and
    BF16 matmuls (--dtype bfloat16), each role pinned to its own CPU where the
    machine has two."""
    label = "up 2P/2D sm,cma bf16"
    ref = ["--kv-cache-dtype", "bf16", "--max-num-batched-tokens", "512", "--dtype", "bfloat16"]
    engine = ["--num-kv-blocks", "512"] + ref
    cpus = sorted(os.sched_getaffinity(0))
    pin = {"prefill": str(cpus[0]), "decode": str(cpus[1])} if len(cpus) >= 2 else {}
    pin_args = ["--prefill-cores", pin["prefill"], "--decode-cores", pin["decode"]] if pin else []
    expected = mixed_expected(prompts, ref, "bf16")
    # Without the test's own OMP_WAIT_POLICY, so the launcher's choice shows.
    up = UpCluster("up-c", ["--prefill-workers", "2", "--decode-workers", "2"] + engine + pin_args, "sm,self,cma",
                   drop_env=["OMP_WAIT_POLICY", "GOMP_SPINCOUNT"])
    try:
        ready = up.wait_ready()
        if not check("%s: `tandem up` prints its 5 members and ready" % label,
                     ready and set(up.members) == {"router", "prefill-0", "prefill-1", "decode-0", "decode-1"},
                     "".join(up.proc.stdout) + up.proc.log_tail()):
            return
        if pin:
            allowed = {}
            for name, (pid, _) in up.members.items():
                with open("/proc/%d/status" % pid) as f:
                    allowed[name] = [l.split()[1] for l in f if l.startswith("Cpus_allowed_list:")][0]
            want = {n: pin[n.split("-")[0]] for n in up.members if n != "router"}
            check("%s: --prefill-cores %s --decode-cores %s pinned each worker (Cpus_allowed_list)"
                  % (label, pin["prefill"], pin["decode"]),
                  all(allowed[n] == c for n, c in want.items()) and allowed["router"] != want["decode-0"],
                  allowed)
        # Two workers per role share their role's CPUs: the launcher makes
        # their OpenMP threads spin only briefly before they sleep (and
        # leaves the router alone).
        policy = {}
        for name, (pid, _) in up.members.items():
            with open("/proc/%d/environ" % pid, "rb") as f:
                env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
            policy[name] = (env.get(b"OMP_WAIT_POLICY"), env.get(b"GOMP_SPINCOUNT"))
        check("%s: workers sharing CPUs get OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=1000, the router neither" % label,
              all(v == ((None, None) if n == "router" else (b"passive", b"1000")) for n, v in policy.items())
              and any("OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=1000" in l for l in up.proc.stdout), policy)
        dec, pre = up.addrs("decode"), up.addrs("prefill")
        check_health(label, [("router", up.addr)] + [("decode worker", a) for a in dec]
                     + [("prefill worker", a) for a in pre])
        client = state.tc.TandemClient(up.addr)
        base = snapshot(dec, pre)
        layout = check_layout(label, dec[1], model_cfg, 2, "BF16")
        before = {a: s.kv_transfer_bytes_total for a, s in base[1].items()}
        try:
            peak = {a: 0 for a in dec}
            sampling = threading.Event()

            def sampler():  # the most blocks each decode worker held during the run
                while not sampling.is_set():
                    for a in dec:
                        peak[a] = max(peak[a], safe(lambda: stats(a, "decode").kv_blocks_used) or 0)
                    time.sleep(0.005)

            sth = threading.Thread(target=sampler)
            sth.start()
            try:
                check_mixed32(label, client, prompts, expected)
            finally:
                sampling.set()
                sth.join(timeout=10)
            check_kv_bytes(label, pre, before, expected, layout, want_all_used=True)
            check("1: %s: both decode workers held blocks during the run (peak used %s)" % (
                label, sorted(peak.values())), all(v > 0 for v in peak.values()), peak)
            ok, desc = wait_released(base)
            check("5a: %s: after 32 requests every pool of the 4 workers is back to start" % label, ok, desc)
            check_seeded(label, client, ref)
            check_cancel(label, client, base, ref)
        except Exception:  # noqa: BLE001
            check("%s: checks ran without an exception" % label, False, traceback.format_exc())
        client.close()
    finally:
        alive = up.proc.alive()
        rc = up.proc.stop(wait=40)
        check("%s: `tandem up` exits 0 on SIGTERM" % label, alive and rc == 0, "rc %s\n%s" % (rc, up.proc.log_tail()))
        left = wait_pids_gone(up.pids())
        check("%s: ... and stops its 5 processes" % label, not left, left)
