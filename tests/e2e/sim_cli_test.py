#!/usr/bin/python3
"""tandem-sim's command line end to end: `calibrate` on the bundled model
(the real engine, one timing per shape) writes a calibration whose fit is
usable; `run` on it simulates every request and is deterministic (the same
flags give the same JSON); `plan` prints one row per split and a
recommendation; a decode calibration of its own times the decode workers
(and one with another KV layout is refused); bad input exits 2 naming what
is wrong. Asserts counts, structure and determinism, never timings.

  sim_cli_test.py --sim build/bin/tandem-sim --model models/tandem-shakespeare --work DIR
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

PASSED, FAILED = [], []


def check(name, cond, detail=""):
    (PASSED if cond else FAILED).append(name)
    print("%s %s" % ("PASS" if cond else "FAIL", name))
    if not cond and detail:
        print("     %s" % str(detail)[:2000])
    return cond


def run(cmd, timeout=600):
    # Without the OpenMP waiting variables ctest sets, so calibrate records
    # (and --workers-share-cores sets) its own.
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(env, OMP_NUM_THREADS="2"))
    return p.returncode, p.stdout, p.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sim", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    cal = os.path.join(args.work, "cal.json")

    rc, out, err = run([args.sim, "calibrate", "--model", args.model, "--repeats", "1", "--out", cal])
    if not check("calibrate: exit 0 and the calibration written", rc == 0 and os.path.isfile(cal), err):
        print("%d passed, %d failed" % (len(PASSED), len(FAILED)))
        return 1
    with open(cal) as f:
        c = json.load(f)
    check("calibrate: prefill chunks and decode batches timed, no negative coefficient",
          len(c["samples"]) >= 10 and any(s["seqs"] > 1 for s in c["samples"])
          and all(v >= 0 for v in c["cost"].values()) and any(v > 0 for v in c["cost"].values()), c["cost"])
    d = c.get("decode_cost", {})
    check("calibrate: a decode-step fit of its own (no per-token term, no negative coefficient)",
          set(d) == set(c["cost"]) and d["per_token_s"] == 0 and all(v >= 0 for v in d.values())
          and d["per_seq_s"] + d["base_s"] > 0 and 0 <= c.get("decode_median_abs_rel_error", -1) < 1, d)
    pc = c.get("prefill_cost", {})
    curve = pc.get("token_curve", [])
    check("calibrate: a prefill curve over the chunk sizes timed (increasing tokens, non-decreasing seconds)",
          len(curve) >= 2 and all(a[0] < b[0] and a[1] <= b[1] for a, b in zip(curve, curve[1:]))
          and pc.get("per_attention_s", -1) >= 0 and 0 <= c.get("prefill_median_abs_rel_error", -1) < 1, pc)
    check("calibrate: the bundled model's block size, pool and block bytes",
          c["block_size"] == 16 and c["kv_blocks"] > 0 and c["kv_bytes_per_block"] > 0, c)
    check("calibrate: records that it ran with OpenMP's default waiting",
          c.get("omp_wait_policy") == "" and c.get("gomp_spincount") == "", c.get("omp_wait_policy"))

    shared_cal = os.path.join(args.work, "cal_shared.json")
    rc, out, err = run([args.sim, "calibrate", "--model", args.model, "--repeats", "1", "--workers-share-cores",
                        "--out", shared_cal])
    with open(shared_cal) if rc == 0 else open(os.devnull) as f:
        sc = json.load(f) if rc == 0 else {}
    check("calibrate --workers-share-cores: timed under the shared-core OpenMP waiting tandem up gives workers",
          rc == 0 and sc.get("omp_wait_policy") == "passive" and sc.get("gomp_spincount") == "1000", (rc, err))
    quick = ["--num-requests", "4", "--input-len", "16", "--output-len", "4", "--shared-cores", "2"]
    rc, out, err = run([args.sim, "run", "--calibration", cal] + quick)
    check("run --shared-cores on a calibration without it: a warning naming the fix",
          rc == 0 and "--workers-share-cores" in err, (rc, err))
    rc, out, err = run([args.sim, "run", "--calibration", shared_cal] + quick)
    check("run --shared-cores on a shared-core calibration: no warning", rc == 0 and "warning" not in err, (rc, err))

    # A calibration per role: decode workers twice as slow per step (their
    # decode cost doubled) give one request exactly twice the TPOT and the
    # same TTFT; so does one calibration whose decode fit alone is doubled
    # (decode workers step by it, prefill workers by "cost").
    slow = os.path.join(args.work, "cal_slow_decode.json")
    with open(slow, "w") as f:
        json.dump(dict(c, decode_cost={k: 2 * v for k, v in c["decode_cost"].items()}), f)
    one = ["--num-requests", "1", "--input-len", "16", "--output-len", "6"]
    per_role = []
    for cals in ([cal], [cal, "--decode-calibration", slow], [slow]):
        j = os.path.join(args.work, "role%d.json" % len(per_role))
        rc, out, err = run([args.sim, "run", "--calibration"] + cals + ["--json-out", j] + one)
        with open(j) if rc == 0 else open(os.devnull) as f:
            per_role.append(json.load(f) if rc == 0 else None)
    ok = all(per_role)
    if ok:
        tpot, ttft = [r["tpot_ms"]["p50"] for r in per_role], [r["ttft_ms"]["p50"] for r in per_role]
        ok = all(abs(tpot[k] - 2 * tpot[0]) < 1e-6 * tpot[0] and abs(ttft[k] - ttft[0]) < 1e-9 for k in (1, 2))
    check("run: decode workers step by the decode fit, of --decode-calibration when given "
          "(TPOT exactly 2x, TTFT the same)", ok, per_role)
    # Prefill workers step by the prefill curve: doubled, the first token
    # comes later and the decode steps stay as they were.
    slow_prefill = os.path.join(args.work, "cal_slow_prefill.json")
    doubled = dict(c["prefill_cost"], token_curve=[[n, 2 * t] for n, t in c["prefill_cost"]["token_curve"]],
                   per_attention_s=2 * c["prefill_cost"]["per_attention_s"])
    with open(slow_prefill, "w") as f:
        json.dump(dict(c, prefill_cost=doubled), f)
    j = os.path.join(args.work, "role_slow_prefill.json")
    rc, out, err = run([args.sim, "run", "--calibration", slow_prefill, "--json-out", j] + one)
    with open(j) if rc == 0 else open(os.devnull) as f:
        sp = json.load(f) if rc == 0 else None
    # The one 16-token chunk's cost, interpolated here on the curve: the
    # doubled curve adds exactly it to the TTFT.
    pts = c["prefill_cost"]["token_curve"]
    chunk = pts[0][1]
    for (n0, t0), (n1, t1) in zip(pts, pts[1:]):
        if 16 > n0 and (16 <= n1 or [n1, t1] == pts[-1]):
            chunk = t0 + (t1 - t0) * (16 - n0) / (n1 - n0)
    step_ms = 1e3 * (chunk + c["prefill_cost"]["per_attention_s"] * 16 * 17 / 2)
    check("run: prefill workers step by the prefill curve (doubled: TTFT one chunk later, TPOT the same)",
          sp is not None and per_role[0] is not None
          and abs(sp["ttft_ms"]["p50"] - per_role[0]["ttft_ms"]["p50"] - step_ms) < 1e-6 * step_ms
          and abs(sp["tpot_ms"]["p50"] - per_role[0]["tpot_ms"]["p50"]) < 1e-9, (sp, per_role[0], step_ms))
    other_layout = os.path.join(args.work, "cal_other_layout.json")
    with open(other_layout, "w") as f:
        json.dump(dict(c, block_size=32, kv_bytes_per_block=2 * c["kv_bytes_per_block"]), f)
    rc, out, err = run([args.sim, "run", "--calibration", cal, "--decode-calibration", other_layout] + one)
    check("run --decode-calibration with another KV layout: exit 2 naming it",
          rc == 2 and "KV layout" in err and "block size 32" in err, (rc, err))

    workload = ["--dataset", "prefix", "--prefix-len", "32", "--num-prefixes", "3", "--input-len", "16",
                "--output-len", "8", "--num-requests", "30", "--request-rate", "20", "--seed", "4"]
    outs = []
    for i in range(2):
        j = os.path.join(args.work, "run%d.json" % i)
        rc, out, err = run([args.sim, "run", "--calibration", cal, "--prefill-workers", "2", "--decode-workers", "1",
                            "--slo-ttft-ms", "1e9", "--slo-tpot-ms", "1e9", "--json-out", j] + workload)
        check("run %d: exit 0, every request completed" % i, rc == 0 and "Completed requests          30 of 30" in out,
              out + err)
        with open(j) as f:
            outs.append(json.load(f))
    check("run: the JSON counts every request, all within unmissable SLOs",
          outs[0]["completed"] == 30 and outs[0]["good_requests"] == 30 and outs[0]["output_throughput"] > 0, outs[0])
    check("run: deterministic (the same flags, the same results)", outs[0] == outs[1], (outs[0], outs[1]))

    # refit: a calibration from before the decode fit (no decode_cost) gets
    # the same fits again from its samples; everything else stays as it was.
    old = os.path.join(args.work, "cal_old.json")
    with open(old, "w") as f:
        json.dump({k: v for k, v in c.items() if not k.startswith("decode_") and not k.startswith("prefill_")}, f)
    refit = os.path.join(args.work, "cal_refit.json")
    rc, out, err = run([args.sim, "refit", "--calibration", old, "--out", refit])
    with open(refit) if rc == 0 else open(os.devnull) as f:
        r = json.load(f) if rc == 0 else {}
    same = rc == 0 and all(abs(r["decode_cost"][k] - v) <= 1e-12 * max(abs(v), 1e-9) for k, v in c["decode_cost"].items()) \
        and all(abs(r["cost"][k] - v) <= 1e-12 * max(abs(v), 1e-9) for k, v in c["cost"].items()) \
        and r["prefill_cost"] == c["prefill_cost"] \
        and {k: v for k, v in r.items() if "cost" not in k and "error" not in k} == \
        {k: v for k, v in c.items() if "cost" not in k and "error" not in k}
    check("refit: an older calibration gets the same fits from its samples, the rest unchanged", same, out + err)
    no_samples = os.path.join(args.work, "cal_no_samples.json")
    with open(no_samples, "w") as f:
        json.dump({k: v for k, v in c.items() if k != "samples"}, f)
    rc, out, err = run([args.sim, "refit", "--calibration", no_samples, "--out", os.path.join(args.work, "x.json")])
    check("refit: a calibration without samples: exit 2 naming why", rc == 2 and "samples" in err, (rc, err))
    bad_sample = os.path.join(args.work, "cal_bad_sample.json")
    with open(bad_sample, "w") as f:
        json.dump(dict(c, samples=c["samples"][:-1] + [dict(c["samples"][-1], seqs=0)]), f)
    rc, out, err = run([args.sim, "refit", "--calibration", bad_sample, "--out", os.path.join(args.work, "x.json")])
    check("refit: a sample of no sequence: exit 2 naming why", rc == 2 and "seqs >= 1" in err, (rc, err))

    mt = os.path.join(args.work, "multi_turn.json")
    rc, out, err = run([args.sim, "run", "--calibration", cal, "--dataset", "multi-turn", "--num-turns", "3",
                        "--input-len", "16", "--output-len", "8", "--num-requests", "12", "--concurrency", "2",
                        "--json-out", mt])
    with open(mt) if rc == 0 else open(os.devnull) as f:
        j = json.load(f) if rc == 0 else {}
    check("run: multi-turn conversations (4 x 3 turns) all complete", rc == 0 and j.get("completed") == 12,
          out + err)

    rc, out, err = run([args.sim, "plan", "--calibration", cal, "--workers", "3", "--slo-ttft-ms", "1000",
                        "--slo-tpot-ms", "100"] + workload)
    rows = re.findall(r"^\s*(\d)P\s+(\d)D", out, re.M)
    check("plan: one row per split of 3 workers and a recommendation",
          rc == 0 and rows == [("1", "2"), ("2", "1")] and re.search(r"recommended prefill:decode = \d:\d", out),
          out + err)

    for name, cmd, want in [
            ("no calibration", [args.sim, "run"], "--calibration FILE is required"),
            ("sharing efficiency out of range", [args.sim, "run", "--calibration", cal, "--shared-cores", "2",
                                                 "--sharing-efficiency", "2"], "--sharing-efficiency must be in (0, 1]"),
            ("unknown routing", [args.sim, "run", "--calibration", cal, "--routing", "random"], "--routing"),
            ("a plan of one worker", [args.sim, "plan", "--calibration", cal, "--workers", "1"], "--workers"),
            ("an unknown command", [args.sim, "fly", "--calibration", cal], "unknown command"),
            ("a partial conversation", [args.sim, "run", "--calibration", cal, "--dataset", "multi-turn",
                                        "--num-turns", "3", "--input-len", "8", "--output-len", "8",
                                        "--num-requests", "10"], "multiple of --num-turns"),
            ("a calibration that is not one", [args.sim, "run", "--calibration", args.model + "/config.json"],
             "calibration")]:
        rc, out, err = run(cmd)
        check("bad input (%s): exit 2 naming it" % name, rc == 2 and want in err, (rc, err))

    print("%d passed, %d failed" % (len(PASSED), len(FAILED)))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
