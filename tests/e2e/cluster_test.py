#!/usr/bin/python3
"""End-to-end checks of the disaggregated cluster (router + prefill + decode
workers, KV over UCX) against `tandem generate`, through the Python client.

Run by CTest (label e2e, tests/e2e/cluster.cmake). Every process it starts
(`tandem up`, `tandem serve`, tandem-router, tandem-prefill-worker,
tandem-decode-worker) listens on 127.0.0.1 (::1 in the ipv6 stage) only and
is stopped by its PID in a finally block (SIGTERM, bounded wait, SIGKILL);
at the end it checks that none
is left, including the workers `tandem up` started. Every wait is bounded.
Prints one PASS/FAIL line per check, then "N passed, M failed"; exits
non-zero on any failure.

The numbered checks follow the acceptance of the cluster issue and the
invariants of docs/architecture.md:
  1  32 concurrent mixed requests equal `tandem generate` through `tandem up`
     (1P/1D, UCX tcp), `tandem serve`, and `tandem up` 2P/2D (UCX sm/cma)
  2  seeded sampling through the cluster equals `tandem generate --seed`
  3  invariant 1: prefill kv_transfer_bytes_total == sum of the prompts' block
     spans, exactly; the Admit reply (all the KV "metadata" gRPC carries) < 4 KiB
  4  invariant 2: a 20-block decode pool queues 12 big requests (all exact);
     --max-queued 1 gives RESOURCE_EXHAUSTED to the overflow only
  5  invariant 3: blocks and reservations back to start after completion,
     cancellation, deadline and stop string; 5e: a request abandoned while
     its prefill is queued must not get its KV shipped into freed blocks
  6  invariant 4: the first chunk carries the prefill's one token
  7  fault: SIGKILL of one of two prefill workers mid-run; 7b: of one of two
     decode workers (new requests must go to the survivor)
  8  malformed requests: exact status code, field in the message
  9  clients/python/example.py streams through the cluster
  10 grpc.health.v1 SERVING on the router (once its workers registered) and
     on every worker
  tp tensor-parallel workers: prefill TP 1->decode TP 2, 2->1, 2->4 (KV heads
     replicated) give the single-process tokens; each decode rank gets its
     heads' bytes exactly; the pool is back to start
  kvq --kv-cache-dtype int8, then fp8, through `tandem up` 1P/1D: 16 mixed
     requests equal `tandem generate` with the flag, layout and bytes exact;
     a prefill worker refuses a decode worker of another KV dtype

  health  the router's grpc.health.v1 follows its workers (NOT_SERVING alone,
     SERVING with 1P+1D, NOT_SERVING when the only decode worker dies)
  drain SIGTERM mid-stream to the router, then to a decode worker: streams
     finish exactly, new requests UNAVAILABLE, exit 0
  ipv6 --host ::1 end to end (skipped without IPv6 loopback)
  routers  workers registered with two router replicas (`--router A,B`)
  control  nobody joins uninvited: Register and ListWorkers on the router's
     public port get UNIMPLEMENTED; on the cluster port (mTLS) plaintext
     and another CA's certificates get no handshake, a certificate of the
     wrong role PERMISSION_DENIED, a worker of another CA never registers,
     an impostor registered with a stolen prefill certificate gets none of
     32 requests (all exact); under --insecure-cluster it gets prompts;
     `tandem up` alone runs mTLS with an ephemeral CA it removes at exit
  kvroute  cache-aware routing: 2P (small pools that evict) + 1D, prompts
     sharing prefixes exact; the workers' KV events make the router's prefix
     index equal each worker's cached blocks; a restarted prefill worker's
     old blocks leave the index
Every stage runs mTLS inside the cluster with one test CA (`tandem certs`
into <work>/certs, every certificate also naming tandem-test-peer so the
test can dial any member as the router).

  cluster_test.py --bin-dir build/bin --source . --work DIR
                  [--only a,serve,c,tp,bp,stale,fault,migrate,health,drain,ipv6,routers,control,kvq,kvroute]

This file holds main and the stage table; the rest lives beside it:
cluster_state (arguments, stubs, the PASS/FAIL report), cluster_procs
(processes, clusters), cluster_refs (`tandem generate` references),
cluster_checks and cluster_checks_edge (checks), and the stages in
cluster_stage_basic (a, serve, c, tp), cluster_stage_pressure (bp, stale),
cluster_stage_faults (fault, migrate), cluster_stage_lifecycle (health, drain,
ipv6, routers), cluster_stage_control (control), cluster_stage_kvq (kvq) and
cluster_stage_routing (kvroute).
"""

import argparse
import json
import os
import shutil
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_stage_basic as basic  # noqa: E402
import cluster_stage_control as control  # noqa: E402
import cluster_stage_faults as faults  # noqa: E402
import cluster_stage_kvq as kvq  # noqa: E402
import cluster_stage_lifecycle as lifecycle  # noqa: E402
import cluster_stage_pressure as pressure  # noqa: E402
import cluster_stage_routing as routing  # noqa: E402
import cluster_state as state  # noqa: E402
from cluster_procs import FOREIGN_PIDS, STARTED, bin_path, wait_pids_gone  # noqa: E402
from cluster_refs import mixed_expected  # noqa: E402
from cluster_state import check, close_channels, log  # noqa: E402
from e2e_util import make_prompts  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--only", default="",
                    help="comma list of a,serve,c,tp,bp,stale,fault,migrate,health,drain,ipv6,routers,control,kvq "
                         "(default all)")
    args = state.ARGS = ap.parse_args()
    args.bin_dir = os.path.abspath(args.bin_dir)
    args.source = os.path.abspath(args.source)
    args.work = os.path.abspath(args.work)
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    # SIGTERM (CTest timeout) unwinds through the finally blocks below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.monotonic()

    # The client generates its stubs into the work dir; the worker API's
    # stubs go next to them (same tandem.v1 package).
    stubs = os.path.join(args.work, "stubs")
    try:
        state.load_client(stubs)
    except Exception:  # noqa: BLE001
        check("client package and worker stubs import", False, traceback.format_exc())
        print("%d passed, %d failed" % (len(state.PASSED), len(state.FAILED)))
        return 1
    check("client package imports; generation and worker stubs generated into the work dir",
          os.path.isfile(os.path.join(stubs, "tandem", "v1", "worker_pb2_grpc.py")))
    for b in ("tandem", "tandem-router", "tandem-prefill-worker", "tandem-decode-worker"):
        if not check("binary %s exists" % b, os.access(bin_path(b), os.X_OK), bin_path(b)):
            print("%d passed, %d failed" % (len(state.PASSED), len(state.FAILED)))
            return 1
    try:
        state.make_certs(args.bin_dir, args.work)
    except Exception:  # noqa: BLE001
        check("`tandem certs` makes the test's cluster CA", False, traceback.format_exc())
        print("%d passed, %d failed" % (len(state.PASSED), len(state.FAILED)))
        return 1
    with open(os.path.join(args.source, "models", "tandem-shakespeare", "config.json")) as f:
        model_cfg = json.load(f)

    only = set(filter(None, args.only.split(",")))
    prompts = make_prompts(32)
    try:
        expected = mixed_expected(prompts)
        longest = max(len(r["prompt_token_ids"]) for r in expected)
        stops = sum(1 for r in expected if r["finish_reason"] == "stop")
        check("1: the 32 prompts are of mixed lengths (1..%d tokens) and outputs (%d stop early)"
              % (longest, stops), longest >= 40 and 4 <= stops <= 28,
              [len(r["prompt_token_ids"]) for r in expected])
        stages = [("a", lambda: basic.run_cluster_a(prompts, expected, model_cfg)),
                  ("serve", lambda: basic.run_serve(prompts, expected)),
                  ("c", lambda: basic.run_cluster_c(prompts, model_cfg)),
                  ("tp", lambda: basic.run_cluster_tp(prompts, expected, model_cfg)),
                  ("bp", lambda: pressure.check_backpressure("router+1P+1D(20 blocks)")),
                  ("stale", lambda: pressure.check_release_during_prefill("router+1P(busy)+1D(16 blocks)")),
                  ("fault", lambda: faults.check_fault("router+2P+2D", prompts)),
                  ("migrate", lambda: faults.check_decode_migration(prompts)),
                  ("health", lifecycle.run_health),
                  ("drain", lifecycle.run_drain),
                  ("ipv6", lifecycle.run_ipv6),
                  ("routers", lifecycle.run_two_routers),
                  ("control", control.run_control_plane),
                  ("kvq", lambda: kvq.run_kv_quant(prompts, model_cfg)),
                  ("kvroute", routing.run_kv_routing)]
        for name, stage in stages:
            if only and name not in only:
                continue
            ts = time.monotonic()
            try:
                stage()
            except Exception:  # noqa: BLE001
                check("stage %s ran without an exception" % name, False, traceback.format_exc())
            log("stage %s took %.1fs" % (name, time.monotonic() - ts))
    finally:
        close_channels()
        alive_before = [p.name for p in STARTED if p.alive()]
        for p in STARTED:
            p.stop(wait=10)
        check("every process this test started had been stopped by its stage", not alive_before, alive_before)
        left = [p.name for p in STARTED if p.alive()]
        gone = wait_pids_gone([pid for pid, _ in FOREIGN_PIDS])
        check("no process this test started is left (%d started directly, %d by `tandem up`)"
              % (len(STARTED), len(FOREIGN_PIDS)), not left and not gone,
              "%s %s" % (left, [n for p, n in FOREIGN_PIDS if p in gone]))

    print("(%.1fs)" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (len(state.PASSED), len(state.FAILED)))
    return 1 if state.FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
