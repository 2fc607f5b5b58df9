#!/usr/bin/python3
"""The chaos harness: a router, two prefill and two decode workers, each on
its own "host" (a network namespace, tests/e2e/netns.py), under seeded
mixed load (chaos_load.py, run in the router's namespace) while a seeded
schedule (chaos_faults.py) SIGKILLs and restarts workers, SIGSTOPs and
resumes them, restarts them gracefully and cuts the path between a prefill
and a decode worker for a while. Then it counts:

  sent, exact (token-exact against `tandem generate`), cancelled / deadline
  (ours, with a correct prefix), retriable (RESOURCE_EXHAUSTED/UNAVAILABLE
  before the first token), wrong and lost (must be 0: see chaos_load.py),
  KV blocks still held after quiesce (must be 0), migrations, and the peak
  resident memory of the router and the workers (bounded) through overload
  bursts of 10x the steady concurrency.

Profiles: `short` (CI: 150 s of faults) and `long` (30 minutes, the figures
in docs/reliability.md); --duration overrides. Everything is seeded
(--seed): the same seed injects the same faults in the same order and
draws the same requests per thread (their timing, and so the outcomes,
vary with the machine).

Needs root and iproute2 (CI has both); elsewhere it prints "SKIP: why" and
exits 77. Every process is stopped by its PID and every namespace deleted
in finally blocks; every wait is bounded. Prints PASS/FAIL lines, the
report as one JSON line ("chaos report: {...}"), then "N passed, M failed".

  chaos_test.py --bin-dir build/bin --source . --work DIR [--profile short|long]
                [--duration S] [--seed N] [--report FILE]
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from chaos_cluster import ChaosCluster  # noqa: E402
from chaos_faults import KINDS, FaultInjector  # noqa: E402
from e2e_util import make_prompts  # noqa: E402
from netns import Network, can_make_namespaces, clean_env, generate_stubs, run  # noqa: E402

SKIP = 77
SUBNET = "10.78.0"
ROLES = {"prefill-a": "prefill", "prefill-b": "prefill", "decode-a": "decode", "decode-b": "decode"}
HOSTS = [("router", SUBNET + ".1"), ("prefill-a", SUBNET + ".2"), ("prefill-b", SUBNET + ".3"),
         ("decode-a", SUBNET + ".4"), ("decode-b", SUBNET + ".5")]
PROFILES = {  # duration (s), steady concurrency, burst offsets (s), burst size
    "short": dict(duration=150, concurrency=8, burst_at=[45.0], burst_size=80),
    "long": dict(duration=1800, concurrency=8, burst_at=[float(t) for t in range(120, 1800, 300)], burst_size=80),
}
# The router's timers are short so that a stall is found within a fault's
# span. The decode lease (15 s, half the default) bounds how long a prefill
# may take from dispatch to shipped (ship_within_ms), and frees a
# reservation whose Release was lost (sent to a stopped worker) well within
# the quiesce wait.
# The admission window and the queue are small so that the overload bursts
# fill both: some requests wait, the rest are refused RESOURCE_EXHAUSTED.
ROUTER_FLAGS = ["--lease-renew-ms", "500", "--decode-idle-timeout-ms", "3000", "--prefill-timeout-ms", "10000",
                "--max-prefill-tokens-per-worker", "1024", "--max-queued", "32"]
WORKER_FLAGS = {
    "prefill": ["--num-kv-blocks", "256", "--drain-timeout-s", "10"],
    "decode": ["--num-kv-blocks", "192", "--reservation-timeout-ms", "15000", "--drain-timeout-s", "10"],
}
# Greedy groups (max_tokens, ignore_eos, stop token ids) and seeds of the
# sampled requests (temperature 0.8, top_k 40, 64 tokens).
GREEDY = [(12, True, []), (48, False, [10]), (128, True, [])]
SEEDS = [11, 22, 33]
RSS_BOUND_MIB = {"router": 1024, "prefill": 4096, "decode": 4096}
PASSED, FAILED = [], []


def check(name, cond, detail=""):
    (PASSED if cond else FAILED).append(name)
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else ": " + str(detail)[:3000]), flush=True)
    return cond


def log(msg):
    print("  .. " + msg, flush=True)


def make_model(args):
    """--model: "bundled" (the repository's tiny model: None, every binary's
    default), a directory, or a random-weight model of a real shape made
    with tools/models/make_random_model.py (slow enough on CPU that many
    streams are in flight when a fault hits)."""
    if args.model == "bundled":
        return None
    if os.path.isdir(args.model):
        return os.path.abspath(args.model)
    out = os.path.join(args.work, "model-" + args.model)
    rc, _, err = run(["/usr/bin/python3", os.path.join(args.source, "tools", "models", "make_random_model.py"),
                      "--shape", args.model, "--out", out], timeout=600)
    if rc != 0:
        raise RuntimeError("make_random_model.py --shape %s failed: %s" % (args.model, err[-2000:]))
    return out


def generate(bin_dir, work, prompts, tag, flags):
    """`tandem generate --json` over `prompts` (one file); rows in prompt order."""
    path = os.path.join(work, "prompts_%s.txt" % tag)
    with open(path, "w") as f:
        f.write("\n".join(prompts) + "\n")
    rc, out, err = run([os.path.join(bin_dir, "tandem"), "generate", "--prompts-file", path, "--json"] + flags,
                       timeout=600)
    if rc != 0:
        raise RuntimeError("tandem generate failed (%d): %s" % (rc, err))
    rows = [json.loads(l) for l in out.splitlines() if l.strip()]
    rows = sorted((r for r in rows if "summary" not in r), key=lambda r: int(r["request_id"]))
    if len(rows) != len(prompts):
        raise RuntimeError("generate printed %d rows for %d prompts" % (len(rows), len(prompts)))
    return rows


def references(bin_dir, work, model_flags):
    """The reference table: every (prompt, sampling) the load may send, with
    the tokens, text and finish reason `tandem generate` gives it."""
    prompts = make_prompts(16)
    refs = []
    for g, (mt, ie, stop) in enumerate(GREEDY):
        flags = ["--temperature", "0", "--max-tokens", str(mt)] + (["--ignore-eos"] if ie else [])
        if stop:
            flags += ["--stop-token-ids", ",".join(map(str, stop))]
        for i, r in enumerate(generate(bin_dir, work, prompts, "g%d" % g, flags + model_flags)):
            refs.append({"key": "g%d/%d" % (g, i), "kind": "greedy", "prompt": prompts[i],
                         "sampling": dict(temperature=0, max_tokens=mt, ignore_eos=ie, stop_token_ids=stop),
                         "token_ids": r["token_ids"], "text": r["text"], "finish_reason": r["finish_reason"]})
    for seed in SEEDS:
        flags = ["--temperature", "0.8", "--top-k", "40", "--seed", str(seed), "--max-tokens", "64", "--ignore-eos"]
        for i, r in enumerate(generate(bin_dir, work, prompts, "s%d" % seed, flags + model_flags)):
            refs.append({"key": "s%d/%d" % (seed, i), "kind": "seeded", "prompt": prompts[i],
                         "sampling": dict(temperature=0.8, top_k=40, seed=seed, max_tokens=64, ignore_eos=True),
                         "token_ids": r["token_ids"], "text": r["text"], "finish_reason": r["finish_reason"]})
    return refs


def run_chaos(args, net, env, refs_path, prof, model_flags):
    roles = ROLES
    certs = os.path.join(args.work, "certs")
    rc, _, err = run([os.path.join(args.bin_dir, "tandem"), "certs", "--out", certs, "--dns", "tandem-test-peer",
                      "--force"])
    if not check("`tandem certs` makes the cluster's CA", rc == 0, err):
        return
    cl = ChaosCluster(net, args.bin_dir, args.work, env, roles, ROUTER_FLAGS + model_flags,
                      {r: f + model_flags for r, f in WORKER_FLAGS.items()}, certs)
    faults = None
    client = None
    try:
        if not check("the router starts in its namespace on %s" % cl.router_addr, cl.start_router(),
                     cl.router and cl.router.log_tail()):
            return
        for wid in sorted(roles):
            check("%s starts in its namespace on %s" % (wid, cl.worker_addr(wid)), cl.start_worker(wid),
                  cl.procs[wid].log_tail())
        cl.start_sampling()
        workers = {wid: [roles[wid], cl.worker_addr(wid)] for wid in roles}
        out_path = os.path.join(args.work, "load_report.json")
        cmd = ["ip", "netns", "exec", net.ns["router"], "/usr/bin/python3", os.path.join(HERE, "chaos_load.py"),
               "--router", cl.router_addr, "--cluster", cl.cluster_addr, "--metrics", cl.metrics_url,
               "--workers", json.dumps(workers), "--certs", certs,
               "--refs", refs_path, "--source", args.source, "--stubs", args.stubs, "--out", out_path,
               "--duration", str(prof["duration"]), "--concurrency", str(prof["concurrency"]),
               "--burst-size", str(prof["burst_size"]), "--seed", str(args.seed), "--burst-at"] + \
            [str(t) for t in prof["burst_at"]]
        client_log = open(os.path.join(args.work, "load.log"), "w")
        client = subprocess.Popen(cmd, stdout=client_log, stderr=subprocess.STDOUT, env=env)
        # The load waits for every worker to register before it starts; the
        # faults start a few seconds in and stop 10 s before the load does,
        # healed (every worker running again) when the injector returns.
        time.sleep(5)
        faults = FaultInjector(cl, net, args.seed, log, args.faults.split(","))
        faults.run(max(0.0, prof["duration"] - 15))
        try:
            rc = client.wait(timeout=prof["duration"] + 600)
        except subprocess.TimeoutExpired:
            client.kill()
            rc = client.wait(timeout=30)
        client_log.close()
        cl.stop_sampling()
        try:
            with open(out_path) as f:
                report = json.load(f)
        except (OSError, ValueError):
            with open(os.path.join(args.work, "load.log")) as f:
                check("the load client wrote its report", False, "rc %s\n%s" % (rc, f.read()[-4000:]))
            return
        if not check("the load client ran (rc %s)" % rc, "error" not in report, report.get("error")):
            return
        evaluate(args, cl, faults, report, prof)
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait(timeout=30)
        cl.stop_sampling()
        bad = cl.stop_all()
        check("the router and every worker's last incarnation exit 0 on SIGTERM", not bad,
              "%s\n%s" % (bad, cl.router.log_tail(1500) if cl.router else ""))


def evaluate(args, cl, faults, report, prof):
    counts = report["counts"]
    get = lambda k: counts.get(k, 0)  # noqa: E731
    by = report["by_code"]
    peak_mib = {k: round(v / 1024.0, 1) for k, v in cl.peak_kib.items()}
    summary = {
        "profile": args.profile, "seed": args.seed, "duration_s": prof["duration"], "sent": report["sent"],
        "exact": get("exact"), "exact_greedy": by.get("exact:greedy", 0), "exact_seeded": by.get("exact:seeded", 0),
        "cancelled": get("cancelled"), "deadline": get("deadline"), "retriable": get("retriable"),
        "retriable_by_code": {k.split(":", 1)[1]: v for k, v in by.items() if k.startswith("retriable:")},
        "wrong": get("wrong"), "lost": get("lost"), "leaked_blocks": report["leaked_blocks"],
        "migrations": report["migrations"], "faults": faults.counts, "peak_rss_mib": peak_mib,
        "ttft_p50_s": report["ttft_p50_s"], "ttft_p99_s": report["ttft_p99_s"],
        "incarnations": cl.incarnations,
    }
    print("chaos report: " + json.dumps(summary), flush=True)
    if args.report:
        with open(args.report, "w") as f:
            json.dump(dict(summary, events=faults.events, examples=report["examples"]), f, indent=1)
    classes = sum(counts.values())
    check("every request sent ended in exactly one class (%d sent, %d classified)" % (report["sent"], classes),
          classes == report["sent"], counts)
    check("lost = 0 (no stream ended after tokens without finishing, none with a code outside the contract)",
          get("lost") == 0, report["examples"]["lost"])
    if args.wrong_is_warning and get("wrong"):
        # The open defect of docs/reliability.md ("Known defects"): CI's short
        # profile reports it without failing until it is fixed; every other
        # run fails on it.
        print("WARN wrong = %d (open defect, docs/reliability.md): %s" % (get("wrong"), report["examples"]["wrong"]),
              flush=True)
    else:
        check("wrong = 0 (every finished or cut stream matches `tandem generate` token for token)",
              get("wrong") == 0, report["examples"]["wrong"])
    check("leaked = 0: every worker's pool is empty after quiesce (%.1f s)" % report["quiesce_s"],
          report["leaked_blocks"] == 0 and not report["pools_not_empty"], report["pools_not_empty"])
    check("greedy and seeded requests finished exact under faults (%d greedy, %d seeded)"
          % (summary["exact_greedy"], summary["exact_seeded"]),
          summary["exact_greedy"] > 0 and summary["exact_seeded"] > 0, counts)
    check("no fault failed to inject or heal", not faults.failures, faults.failures)
    if prof["duration"] >= 120:
        check("every kind of fault was injected at least once (%s)" % faults.counts,
              all(n > 0 for n in faults.counts.values()), faults.counts)
    check("the router and every worker are up after the faults healed", all(cl.alive().values()), cl.alive())
    for kind, bound in RSS_BOUND_MIB.items():
        check("peak resident memory of the %s under the overload bursts stays bounded (%.1f MiB < %d MiB)"
              % (kind, peak_mib.get(kind, 0), bound), 0 < peak_mib.get(kind, 0) < bound, peak_mib)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="short")
    ap.add_argument("--duration", type=float, help="seconds of load and faults (overrides the profile)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", default="bundled",
                    help="bundled, a model directory, or a make_random_model.py shape (e.g. smollm2-135m)")
    ap.add_argument("--report", help="also write the report (with the fault log) as JSON here")
    ap.add_argument("--wrong-is-warning", action="store_true",
                    help="report wrong outputs without failing (CI, while the open defect of docs/reliability.md "
                         "stands)")
    ap.add_argument("--faults", default=",".join(KINDS),
                    help="comma list of the fault kinds to inject (default all: %s)" % ",".join(KINDS))
    args = ap.parse_args()
    unknown = set(args.faults.split(",")) - set(KINDS)
    if unknown:
        ap.error("unknown fault kinds %s (known: %s)" % (sorted(unknown), ",".join(KINDS)))
    args.bin_dir = os.path.abspath(args.bin_dir)
    args.source = os.path.abspath(args.source)
    args.work = os.path.abspath(args.work)
    prof = dict(PROFILES[args.profile])
    if args.duration:
        prof["duration"] = args.duration
        prof["burst_at"] = [t for t in prof["burst_at"] if t < args.duration] or [args.duration * 0.3]

    prefix = "tdc%d%s" % (os.getpid(), secrets.token_hex(2))
    why = can_make_namespaces(prefix)
    if why:
        print("SKIP: %s" % why, flush=True)
        return SKIP
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # CTest timeout: unwind the finally blocks
    t0 = time.monotonic()
    env = clean_env()
    env["OMP_NUM_THREADS"] = "1"  # five processes share the machine's cores
    env["OMP_WAIT_POLICY"] = "passive"
    net = Network(prefix, HOSTS)
    try:
        for name in ("tandem", "tandem-router", "tandem-prefill-worker", "tandem-decode-worker"):
            if not check("binary %s exists" % name, os.access(os.path.join(args.bin_dir, name), os.X_OK)):
                return 1
        args.stubs = generate_stubs(args.source, args.work)
        model = make_model(args)
        model_flags = ["--model", model] if model else []
        refs = references(args.bin_dir, args.work, model_flags)
        refs_path = os.path.join(args.work, "refs.json")
        with open(refs_path, "w") as f:
            json.dump(refs, f)
        log("%d reference rows from `tandem generate`" % len(refs))
        net.setup()
        check("%d namespaces made (%s-{hub,router,prefill-a,prefill-b,decode-a,decode-b})" % (len(net.made), prefix),
              len(net.made) == 1 + len(HOSTS), net.made)
        run_chaos(args, net, env, refs_path, prof, model_flags)
    except Exception:  # noqa: BLE001
        check("the harness ran without an exception", False, traceback.format_exc())
    finally:
        left = net.teardown()
        still = net.listed()
        check("every namespace this test made is deleted", not left and not still, (left, still))
    print("(%.1fs)" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (len(PASSED), len(FAILED)))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
