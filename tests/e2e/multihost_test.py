#!/usr/bin/python3
"""Multi-host end-to-end check of the disaggregated cluster: the router, a
prefill worker and a decode worker each on their own "host", a Linux network
namespace with one address, and a request that crosses all three returns the
tokens of a single-process `tandem generate`.

Run by CTest (label e2e, tests/e2e/multihost.cmake). Needs root (CI is) and
iproute2's `ip`; where namespaces cannot be made it prints "SKIP: why" and
exits 77 (CTest SKIP_RETURN_CODE).

The network (why a bridge: every host gets exactly one address that the two
others reach, as on a real LAN, with one veth pair per host):

    ns <p>-router  tdm0 10.77.0.1/24 ─┐
    ns <p>-prefill tdm0 10.77.0.2/24 ─┼─ ns <p>-hub: bridge br0
    ns <p>-decode  tdm0 10.77.0.3/24 ─┘

<p> is unique per run (this test's pid and a random suffix), so concurrent runs never meet. Both
ends of every veth pair are created inside the namespaces, so nothing is
added to the host's own network and no server listens on its interfaces:
each process listens on its namespace's address only. KV moves prefill →
decode over UCX TCP (UCX_TLS=tcp,self, UCX_NET_DEVICES=tdm0: the one device
a host has; shared memory is not allowed, so bytes can only cross the
bridge). The test client runs inside the router namespace
(`ip netns exec <p>-router /usr/bin/python3 multihost_test.py --client ...`).

Every process is stopped by its PID and every namespace deleted in finally
blocks, also on failure or SIGTERM; every wait is bounded. Prints one
PASS/FAIL line per check, then "N passed, M failed"; exits 1 on any failure.

  multihost_test.py --bin-dir build/bin --source . --work DIR
"""

import argparse
import json
import math
import os
import re
import secrets
import shutil
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_util import default_kv_dtype, make_prompts  # noqa: E402
from netns import IFACE, Network, NsProc, can_make_namespaces, clean_env, generate_stubs, netns_inode, run  # noqa: E402

SKIP = 77
SUBNET = "10.77.0"
HOSTS = [("router", SUBNET + ".1"), ("prefill", SUBNET + ".2"), ("decode", SUBNET + ".3")]
MAX_TOKENS = 24
PASSED, FAILED = [], []


def check(name, cond, detail=""):
    (PASSED if cond else FAILED).append(name)
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else ": " + str(detail)[:2500]), flush=True)
    return cond


# ------------------------------------------------------------ client mode
# Runs inside the router namespace: everything it reaches is a namespace
# address. Prints one JSON object on its last stdout line.

def client_main(args):
    os.environ["TANDEM_CLIENT_STUBS"] = args.stubs
    sys.path.insert(0, os.path.join(args.source, "clients", "python"))
    sys.path.insert(0, args.stubs)
    import grpc
    import tandem_client as tc
    from tandem.v1 import worker_pb2 as wpb2, worker_pb2_grpc as wpb2_grpc

    with open(args.requests) as f:
        prompts = json.load(f)
    out = {"netns_inode": netns_inode(os.getpid())}

    def read(name):
        with open(os.path.join(args.certs, name), "rb") as f:
            return f.read()
    # mTLS with the router's certificate to the cluster listener and the workers.
    creds = grpc.ssl_channel_credentials(root_certificates=read("ca.crt"), private_key=read("router.key"),
                                         certificate_chain=read("router.crt"))

    def cluster_channel(addr, peer):
        return grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", peer)])
    router = grpc.insecure_channel(args.router)
    cluster = cluster_channel(args.cluster, "tandem-router")
    channels = [router, cluster]
    peer_of = {"WORKER_ROLE_PREFILL": "tandem-prefill-worker", "WORKER_ROLE_DECODE": "tandem-decode-worker"}
    try:
        # 1. Both workers registered (they re-register every second), as the
        # router's cluster listener lists them.
        registry = wpb2_grpc.WorkerRegistryStub(cluster)
        workers, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                resp = registry.ListWorkers(wpb2.ListWorkersRequest(), timeout=5)
                workers = [(w.worker_id, wpb2.WorkerRole.Name(w.role), w.address) for w in resp.workers]
                if len(workers) >= 2:
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        out["workers"] = workers

        def stats(role):
            addr = [a for _, r, a in workers if role.upper() in r][0]
            ch = cluster_channel(addr, "tandem-%s-worker" % role)
            channels.append(ch)
            stub = wpb2_grpc.PrefillWorkerStub(ch) if role == "prefill" else wpb2_grpc.DecodeWorkerStub(ch)
            s = stub.Stats(wpb2.StatsRequest(), timeout=10)
            return {"kv_transfer_bytes_total": s.kv_transfer_bytes_total, "kv_blocks_used": s.kv_blocks_used,
                    "num_reservations": s.num_reservations, "num_running": s.num_running,
                    "num_waiting": s.num_waiting}

        if len(workers) < 2:
            print(json.dumps(out))
            return 0
        out["health"] = {}
        c = tc.TandemClient(args.router)
        try:
            out["health"]["router"] = c.health(timeout=10)
        except tc.TandemError as e:
            out["health"]["router"] = repr(e)
        c.close()
        for _, role, addr in workers:  # grpc.health.v1 by hand (no stubs here), over mTLS
            ch = cluster_channel(addr, peer_of[role])
            channels.append(ch)
            check_call = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                                        response_deserializer=lambda b: b)
            try:
                out["health"][role] = {b"\x08\x01": "SERVING"}.get(check_call(b"", timeout=10), "not SERVING")
            except grpc.RpcError as e:
                out["health"][role] = repr(e)
        out["before"] = {"prefill": stats("prefill"), "decode": stats("decode")}
        # 2. The requests, one stream each, chunk by chunk.
        client = tc.TandemClient(args.router)
        out["results"] = []
        for p in prompts:
            chunks, error = [], None
            try:
                with client.generate(p, temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True, timeout=180) as s:
                    for c in s:
                        chunks.append({"token_ids": list(c.token_ids), "text": c.text,
                                       "finish_reason": c.finish_reason})
            except tc.TandemError as e:
                error = repr(e)
            out["results"].append({"prompt": p, "chunks": chunks, "error": error})
        client.close()
        # 3. Pools settle back (bounded poll), then the final counters.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            after = {"prefill": stats("prefill"), "decode": stats("decode")}
            if all(after[r]["kv_blocks_used"] == out["before"][r]["kv_blocks_used"]
                   and after[r]["num_reservations"] == 0 and after[r]["num_running"] == 0
                   and after[r]["num_waiting"] == 0 for r in after):
                break
            time.sleep(0.1)
        out["after"] = after
    finally:
        for ch in channels:
            ch.close()
    print(json.dumps(out))
    return 0


# ------------------------------------------------------------ the test

def expected_tokens(args, prompts, env):
    """`tandem generate`, greedy, in this (the host's) namespace."""
    rows = []
    for p in prompts:
        rc, out, err = run([os.path.join(args.bin_dir, "tandem"), "generate", "--prompt", p, "--temperature", "0",
                            "--max-tokens", str(MAX_TOKENS), "--ignore-eos", "--json"], env=env)
        if rc != 0:
            raise RuntimeError("tandem generate failed (%d): %s" % (rc, err))
        rows.append(json.loads(out.splitlines()[0]))
    return rows


def run_cluster(args, net, env, prompts, expected, model_cfg):
    procs = []
    try:
        b = lambda name: os.path.join(args.bin_dir, name)  # noqa: E731
        addr = dict(HOSTS)
        # One cluster CA; each host gets its role's certificate (the roles
        # are checked, not the hosts' addresses, so no --ip is needed).
        certs = os.path.join(args.work, "certs")
        rc, _, err = run([b("tandem"), "certs", "--out", certs, "--force"], env=env)
        if not check("`tandem certs` makes the cluster's CA and role certificates", rc == 0, err):
            return

        def tls(stem):
            return ["--tls-ca", os.path.join(certs, "ca.crt"), "--tls-cert", os.path.join(certs, stem + ".crt"),
                    "--tls-key", os.path.join(certs, stem + ".key")]
        router = NsProc("router", net.ns["router"], [b("tandem-router"), "--host", addr["router"], "--port", "0",
                                                     "--cluster-port", "0"] + tls("router"), args.work, env)
        procs.append(router)
        rx = re.escape(addr["router"])
        m = router.wait_line(r"tandem-router: cluster listener on (%s:\d+)" % rx, 60)
        cluster_addr = m.group(1) if m else None
        m = router.wait_line(r"tandem-router: listening on (%s:\d+)" % rx, 60) if m else None
        if not check("the router listens on its namespace address %s only (public and cluster ports)"
                     % addr["router"], m is not None, router.log_tail()):
            return
        router_addr = m.group(1)
        workers = {}
        for role in ("prefill", "decode"):
            p = NsProc(role, net.ns[role], [b("tandem-%s-worker" % role), "--host", addr[role], "--port", "0",
                                            "--router", cluster_addr, "--worker-id", "mh-" + role,
                                            "--num-kv-blocks", "256"] + tls("%s-worker" % role), args.work, env)
            procs.append(p)
            workers[role] = p
        for role, p in workers.items():
            m = p.wait_line(r"listening on (%s:\d+)" % re.escape(addr[role]), 120)
            check("the %s worker listens on its namespace address %s" % (role, addr[role]), m is not None,
                  p.log_tail())
        mine = netns_inode(os.getpid())
        inodes = {p.name: netns_inode(p.pid) for p in procs}
        check("router, prefill and decode each run in their own network namespace (not this one)",
              None not in inodes.values() and len(set(inodes.values())) == 3 and mine not in inodes.values(),
              "%s, test's %s" % (inodes, mine))

        # The client, inside the router namespace.
        req_path = os.path.join(args.work, "requests.json")
        with open(req_path, "w") as f:
            json.dump(prompts, f)
        rc, out, err = run(["ip", "netns", "exec", net.ns["router"], "/usr/bin/python3", os.path.abspath(__file__),
                            "--client", "--router", router_addr, "--cluster", cluster_addr, "--stubs", args.stubs,
                            "--source", args.source, "--certs", certs,
                            "--requests", req_path], timeout=480, env=env)
        try:
            res = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            check("the client in the router namespace ran", False, "rc %d\n%s\n%s" % (rc, out[-2000:], err[-3000:]))
            return
        check("the client ran inside the router's namespace", res["netns_inode"] == inodes["router"],
              (res["netns_inode"], inodes))
        reg = sorted((r, a.rsplit(":", 1)[0]) for _, r, a in res["workers"])
        check("the workers registered with the router under their namespace addresses (%s)" % res["workers"],
              reg == [("WORKER_ROLE_DECODE", addr["decode"]), ("WORKER_ROLE_PREFILL", addr["prefill"])],
              res["workers"])
        if "results" not in res:
            return
        check("grpc.health.v1 SERVING on the router and, over mTLS, both workers, from the router's host",
              res["health"] == {"router": "SERVING", "WORKER_ROLE_PREFILL": "SERVING",
                                "WORKER_ROLE_DECODE": "SERVING"}, res["health"])
        for got, want in zip(res["results"], expected):
            ids = [t for c in got["chunks"] for t in c["token_ids"]]
            text = "".join(c["text"] for c in got["chunks"])
            finish = got["chunks"][-1]["finish_reason"] if got["chunks"] else None
            check("%r: streamed across the three hosts, tokens and text equal `tandem generate` (%d tokens)"
                  % (got["prompt"], len(ids)),
                  got["error"] is None and ids == want["token_ids"] and text == want["text"]
                  and finish == want["finish_reason"] == "length",
                  "%s\n     got %s %r %s\n    want %s %r %s" % (got["error"], ids, text, finish, want["token_ids"],
                                                              want["text"], want["finish_reason"]))
            check("%r: the first chunk is the prefill host's one token" % got["prompt"],
                  bool(got["chunks"]) and got["chunks"][0]["token_ids"] == want["token_ids"][:1], got["chunks"][:2])
        # Exactly the prompts' block spans crossed prefill → decode over UCX.
        # 16-token blocks of the default KV dtype (auto: the checkpoint's BF16).
        span = 2 * model_cfg["num_key_value_heads"] * 16 * model_cfg["head_dim"] * default_kv_dtype(model_cfg)[1]
        want_bytes = sum(math.ceil(len(w["prompt_token_ids"]) / 16) for w in expected) \
            * model_cfg["num_hidden_layers"] * span
        grew = res["after"]["prefill"]["kv_transfer_bytes_total"] - res["before"]["prefill"]["kv_transfer_bytes_total"]
        check("the prefill host put exactly the prompts' KV into the decode host over UCX TCP (%d bytes)"
              % want_bytes, grew == want_bytes, "grew by %d" % grew)
        settled = all(res["after"][r]["kv_blocks_used"] == res["before"][r]["kv_blocks_used"]
                      and res["after"][r]["num_reservations"] == 0 and res["after"][r]["num_running"] == 0
                      for r in ("prefill", "decode"))
        check("afterwards both pools are back to where they started", settled, res)
        for p in procs:
            if not p.alive():
                check("%s still running after the requests" % p.name, False, p.log_tail())
    finally:
        for p in reversed(procs):
            alive = p.alive()
            rc = p.stop()
            check("%s (pid %d) exits 0 on SIGTERM" % (p.name, p.pid), alive and rc == 0,
                  "rc %s\n%s" % (rc, p.log_tail()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir")
    ap.add_argument("--source", required=True)
    ap.add_argument("--work")
    ap.add_argument("--client", action="store_true", help="(internal) the client, run in the router namespace")
    ap.add_argument("--router", help="(internal) the router's public address")
    ap.add_argument("--cluster", help="(internal) the router's cluster address (WorkerRegistry)")
    ap.add_argument("--stubs")
    ap.add_argument("--certs", help="(internal) the cluster's `tandem certs` directory")
    ap.add_argument("--requests")
    args = ap.parse_args()
    if args.client:
        return client_main(args)
    args.bin_dir = os.path.abspath(args.bin_dir)
    args.source = os.path.abspath(args.source)
    args.work = os.path.abspath(args.work)

    # Namespace names live machine-wide (/run/netns): pid + random, never reused.
    prefix = "tdm%d%s" % (os.getpid(), secrets.token_hex(2))
    why = can_make_namespaces(prefix)
    if why:
        print("SKIP: %s" % why, flush=True)
        return SKIP

    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    # SIGTERM (CTest timeout) unwinds through the finally blocks below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.monotonic()
    env = clean_env()
    net = Network(prefix, HOSTS)
    try:
        for name in ("tandem", "tandem-router", "tandem-prefill-worker", "tandem-decode-worker"):
            if not check("binary %s exists" % name, os.access(os.path.join(args.bin_dir, name), os.X_OK)):
                return 1
        args.stubs = generate_stubs(args.source, args.work)
        with open(os.path.join(args.source, "models", "tandem-shakespeare", "config.json")) as f:
            model_cfg = json.load(f)
        prompts = make_prompts(8)[1:5]  # four prompts of mixed lengths
        expected = expected_tokens(args, prompts, env)

        net.setup()
        check("4 namespaces made (%s-{hub,router,prefill,decode}), hosts joined by a bridge" % prefix,
              len(net.made) == 4, net.made)
        for role, addr in HOSTS:
            got = net.addresses(role)
            check("host %s: one address besides lo: %s %s/24" % (role, IFACE, addr),
                  got == sorted(["lo 127.0.0.1/8", "%s %s/24" % (IFACE, addr)]), got)
        run_cluster(args, net, env, prompts, expected, model_cfg)
    except Exception:  # noqa: BLE001
        check("the test ran without an exception", False, traceback.format_exc())
    finally:
        left = net.teardown()
        still = net.listed()
        check("every namespace this test made is deleted", not left and not still, (left, still))
    print("(%.1fs)" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (len(PASSED), len(FAILED)))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
