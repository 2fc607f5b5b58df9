#!/usr/bin/env python3
"""The router is the control plane: its binary holds no model runtime.

`nm -C` of tandem-router must show no engine kernel, model or engine-loop
symbols, and `ldd` no UCX, OpenMP or oneDNN library. The same checks run on
a worker binary, where every one of them must be found: that shows the
checks can see what they look for.

  router_binary_test.py --bin-dir build/bin [--worker-has-ucx]
"""
import argparse
import pathlib
import re
import subprocess
import sys

# What only a process that runs the model links.
SYMBOLS = {
    "engine kernels": re.compile(r"\btandem::kernels::"),
    "the Llama model": re.compile(r"\btandem::LlamaModel::"),
    "the engine loop": re.compile(r"\btandem::AsyncEngine::"),
}
LIBRARIES = {
    "UCX": re.compile(r"\blibuc[pst]\.so"),
    "OpenMP": re.compile(r"\blib(gomp|omp)\.so"),  # GCC's, or LLVM's in a clang (sanitizer) build
}


def findings(binary: pathlib.Path):
    nm = subprocess.run(["nm", "-C", str(binary)], capture_output=True, text=True, check=True).stdout
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    found = {name for name, rx in SYMBOLS.items() if rx.search(nm)}
    found |= {name for name, rx in LIBRARIES.items() if rx.search(ldd)}
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--worker-has-ucx", action="store_true", help="the build has the UCX transport")
    args = ap.parse_args()
    bin_dir = pathlib.Path(args.bin_dir)
    ok = True
    router = findings(bin_dir / "tandem-router")
    if router:
        print(f"tandem-router links {', '.join(sorted(router))}: the router must not hold the model runtime")
        ok = False
    worker = findings(bin_dir / "tandem-decode-worker")
    expected = set(SYMBOLS) | set(LIBRARIES)
    if not args.worker_has_ucx:
        expected.discard("UCX")
    missing = expected - worker
    if missing:
        print(f"control: tandem-decode-worker shows no {', '.join(sorted(missing))}; the checks cannot see them")
        ok = False
    print("router_binary: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
