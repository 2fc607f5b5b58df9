#!/usr/bin/python3
"""Validates tandem-sim against real clusters on this machine: for each
prefill:decode split, `tandem up` serves a workload driven by tandem-bench,
and tandem-sim predicts the same workload (same prompts and arrival times:
the same generator and seeds) from a calibration made on the same machine
with `tandem-sim calibrate --workers-share-cores` (the workers share its cores).
Prints one table row per split: measured and predicted goodput, TTFT p50
and TPOT p50, and their ratios; then each role's engine steps, measured
(the workers' tandem_step_duration_seconds, scraped from their metrics
servers) and predicted: count and mean wall time. A mean step off by more
than the fit error says the host ran at another speed than when it was
calibrated, which near the knee moves TTFT far more than the step itself. By default the workers share this machine's cores, so the
simulation runs with --shared-cores (nproc) and each worker's OpenMP thread
count. With --own-cores the split must be 1:1 and each worker gets cores of
its own (prefill the first half of the CPUs, decode the rest: `tandem up
--prefill-cores/--decode-cores`, so their OpenMP teams keep OpenMP's default
waiting), the planner's own case, simulated with no sharing term; calibrate
for it on one half, e.g. `taskset -c 1 tandem-sim calibrate ...`.

  /usr/bin/python3 bench/sim/validate.py --bin-dir build/bin --model DIR \\
      --calibration cal.json --out /tmp/simval [--splits 1:1,1:2,2:2 | --own-cores] \\
      [--workload "--num-requests 48 --request-rate 1 ..."] [--slo "--slo-ttft-ms 2000 --slo-tpot-ms 200"]

Every process it starts listens on 127.0.0.1 and is stopped by its PID.
"""

import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request

DEFAULT_WORKLOAD = ("--dataset random --input-len 256 --output-len 32 --num-requests 48 --request-rate 1.5 "
                    "--ignore-eos --vocab-size 49000 --seed 3 --max-model-len 2048")
DEFAULT_SLO = "--slo-ttft-ms 3000 --slo-tpot-ms 150"


def own_core_lists():
    """--own-cores: the CPUs this process may use, halved: prefill's, decode's."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise RuntimeError("--own-cores needs at least 2 CPUs")
    half = len(cpus) // 2
    return ",".join(map(str, cpus[:half])), ",".join(map(str, cpus[half:2 * half]))


def free_port_base(n):
    """A port with the n - 1 after it free on 127.0.0.1 (for --metrics-base-port)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        try:
            socks = []
            for i in range(n):
                t = socket.socket()
                socks.append(t)
                t.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            pass
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no %d free ports in a row on 127.0.0.1" % n)


STEP_METRIC = re.compile(r'^tandem_step_duration_seconds_(sum|count)\{[^}]*role="(prefill|decode)"[^}]*\} (\S+)$')


def scrape_steps(base, workers):
    """Each role's engine steps over the workers' metrics servers: count and seconds."""
    steps = {"prefill": {"count": 0, "seconds": 0.0}, "decode": {"count": 0, "seconds": 0.0}}
    for i in range(1, workers + 1):  # the router is base + 0
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % (base + i), timeout=10) as r:
            for line in r.read().decode().splitlines():
                m = STEP_METRIC.match(line)
                if m:
                    steps[m.group(2)]["seconds" if m.group(1) == "sum" else "count"] += float(m.group(3))
    return steps


def run_real(args, p, d, workload, slo, out):
    log = open(os.path.join(args.out, "up-%dP%dD.log" % (p, d)), "w")
    metrics_base = free_port_base(1 + p + d)
    cmd = [os.path.join(args.bin_dir, "tandem"), "up", "--model", args.model, "--port", "0",
           "--prefill-workers", str(p), "--decode-workers", str(d), "--metrics-base-port", str(metrics_base)]
    if args.own_cores:
        prefill_cpus, decode_cpus = own_core_lists()
        cmd += ["--prefill-cores", prefill_cpus, "--decode-cores", decode_cpus]
    up = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        addr = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and addr is None:
            line = up.stdout.readline()
            if not line:
                break
            m = re.search(r"ready on (127\.0\.0\.1:\d+)", line)
            if m:
                addr = m.group(1)
        if addr is None:
            raise RuntimeError("tandem up did not get ready (see %s)" % log.name)
        bench = subprocess.run([os.path.join(args.bin_dir, "tandem-bench"), "--addr", addr, "--json-out", out]
                               + shlex.split(workload) + shlex.split(slo),
                               capture_output=True, text=True, timeout=1800)
        if bench.returncode != 0:
            raise RuntimeError("tandem-bench failed: %s" % bench.stderr)
        steps = scrape_steps(metrics_base, p + d)
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        log.close()
    with open(out) as f:
        real = json.load(f)
    real["steps"] = steps
    with open(out, "w") as f:
        json.dump(real, f, indent=2)
    return real


def run_sim(args, p, d, workload, slo, out):
    nproc = os.cpu_count()
    # tandem-bench's own flags that the simulation has no use for.
    sim_workload = [a for a in shlex.split(workload) if a != "--ignore-eos"]
    if args.own_cores:
        sharing = ["--shared-cores", "0"]
    else:
        sharing = ["--shared-cores", str(nproc), "--threads-per-worker", str(nproc)]
    cmd = [os.path.join(args.bin_dir, "tandem-sim"), "run", "--calibration", args.calibration,
           "--prefill-workers", str(p), "--decode-workers", str(d)] + sharing + ["--json-out", out] \
        + sim_workload + shlex.split(slo) + shlex.split(args.sim_args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError("tandem-sim failed: %s" % r.stderr)
    with open(out) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--calibration", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--splits", default="1:1,1:2,2:2")
    ap.add_argument("--workload", default=DEFAULT_WORKLOAD)
    ap.add_argument("--slo", default=DEFAULT_SLO)
    ap.add_argument("--reuse-real", action="store_true", help="use the real runs already in --out")
    ap.add_argument("--sim-args", default="", help="more tandem-sim flags, e.g. --sharing-efficiency 0.8")
    ap.add_argument("--own-cores", action="store_true",
                    help="1P1D with a half of the CPUs per worker (no sharing); --splits must be 1:1")
    args = ap.parse_args()
    if args.own_cores and args.splits == ap.get_default("splits"):
        args.splits = "1:1"
    if args.own_cores and args.splits != "1:1":
        ap.error("--own-cores: only the split 1:1 (a role's workers share its CPU list)")
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for split in args.splits.split(","):
        p, d = (int(x) for x in split.split(":"))
        real_json = os.path.join(args.out, "real-%dP%dD.json" % (p, d))
        if args.reuse_real and os.path.exists(real_json):  # predict again for runs already measured
            with open(real_json) as f:
                real = json.load(f)
        else:
            real = run_real(args, p, d, args.workload, args.slo, real_json)
        sim = run_sim(args, p, d, args.workload, args.slo, os.path.join(args.out, "sim-%dP%dD.json" % (p, d)))
        rows.append((p, d, real, sim))
        print("%dP%dD done" % (p, d), file=sys.stderr)
    print("| split | goodput measured | goodput predicted | ratio | TTFT p50 measured (ms) | predicted | ratio "
          "| TPOT p50 measured (ms) | predicted | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    def ratio(a, b):
        return b / a if a else float("nan")
    for p, d, real, sim in rows:
        g_real, g_sim = real.get("goodput") or 0.0, sim["goodput"]
        t_real, t_sim = real["ttft_ms"]["p50"], sim["ttft_ms"]["p50"]
        o_real, o_sim = real["tpot_ms"]["p50"], sim["tpot_ms"]["p50"]
        print("| %dP%dD | %.3f | %.3f | %.2f | %.0f | %.0f | %.2f | %.1f | %.1f | %.2f |"
              % (p, d, g_real, g_sim, ratio(g_real, g_sim), t_real, t_sim, ratio(t_real, t_sim),
                 o_real, o_sim, ratio(o_real, o_sim)))
    print()
    print("| split | role | steps measured | predicted | mean step measured (ms) | predicted | ratio |")
    print("|---|---|---|---|---|---|---|")
    for p, d, real, sim in rows:
        if "steps" not in real:  # a real run from before validate.py scraped them
            continue
        for role in ("prefill", "decode"):
            r, m = real["steps"][role], sim["steps"][role]
            mean_r = 1e3 * r["seconds"] / r["count"] if r["count"] else float("nan")
            mean_m = 1e3 * m["seconds"] / m["count"] if m["count"] else float("nan")
            print("| %dP%dD | %s | %d | %d | %.1f | %.1f | %.2f |"
                  % (p, d, role, r["count"], m["count"], mean_r, mean_m, ratio(mean_r, mean_m)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
