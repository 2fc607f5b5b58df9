#!/usr/bin/python3
"""Summarises a tandem_kernel_bench JSON run made with repetitions, keeping
the best repetition of each benchmark (the machine is shared, so the best is
the least disturbed one; means mix in other jobs' load).

  build/bin/tandem_kernel_bench --benchmark_repetitions=5 \\
      --benchmark_out=run.json --benchmark_out_format=json
  /usr/bin/python3 bench/kernels/best_of.py run.json

Prints one line per benchmark: best real time, and that repetition's
counters (GB/s, GFLOPS, frac_of_bw, frac_of_peak).
"""

import json
import sys


def main(path):
    with open(path) as f:
        run = json.load(f)
    ctx = run.get("context", {})
    for key in sorted(ctx):
        if key.startswith(("limit_", "tandem_")):
            print("%s: %s" % (key, ctx[key]))
    best = {}
    order = []
    for b in run["benchmarks"]:
        if b.get("run_type") == "aggregate":
            continue
        name = b["run_name"]
        if name not in best:
            order.append(name)
        if name not in best or b["real_time"] < best[name]["real_time"]:
            best[name] = b
    for name in order:
        b = best[name]
        parts = ["%-55s %12.1f %s" % (name, b["real_time"], b["time_unit"])]
        if "bytes_per_second" in b:
            parts.append("GB/s=%.2f" % (b["bytes_per_second"] / 1e9))
        for c in ("GB_per_s", "GFLOPS", "frac_of_bw", "frac_of_peak"):
            if c in b:
                parts.append("%s=%.3f" % (c, b[c]))
        if b.get("label"):
            parts.append("[%s]" % b["label"])
        print("  ".join(parts))


if __name__ == "__main__":
    main(sys.argv[1])
