#!/usr/bin/env python3
"""Which part of Tandem may include which: the dependency rules of
docs/architecture.md, checked over every C++ file of the tree.

A project include is a quoted include whose first component is one of the
repository's top-level source folders, or "tandem/v1/" (the generated protos).
Each folder below lists the prefixes it may include besides its own; the
longest folder prefix that matches a file decides. Exit 1 naming every
forbidden edge (file, line, include), 0 when there is none.

  include_rules_test.py [--root DIR]
  include_rules_test.py --self-test   (the checker on a made-up tree: it must
                                       find exactly the edges planted there)
"""
import argparse
import pathlib
import re
import sys
import tempfile

PROJECT_ROOTS = ("common/", "proto/", "engine/", "kv_transfer/", "wire/", "worker/", "prefill_worker/",
                 "decode_worker/", "router/", "tools/", "bench/", "tests/", "fuzz/", "tandem/v1/")

ROUTER_ENGINE_TYPES = ("engine/model/model_config.h", "engine/sampler/sampled_token.h",
                       "engine/sampler/sampling_params.h", "engine/sampler/sampling_defaults.h",
                       # the prefix cache's block hashes (no tensors): cache-aware routing
                       "engine/core/block_hash.h",
                       "engine/tokenizer/")

# folder -> prefixes it may include (its own folder is always allowed).
RULES = {
    "common/": (),
    "proto/": (),
    "engine/parallel/": ("common/",),
    "engine/tokenizer/": ("common/",),
    "engine/sampler/": ("common/", "engine/model/model_config.h", "engine/kernels/cpu/exp_avx2.h"),
    "engine/kernels/": ("common/", "engine/model/", "engine/parallel/"),
    "engine/model/": ("common/", "engine/kernels/", "engine/parallel/"),
    "engine/core/": ("common/", "engine/"),
    "engine/": ("common/",),
    "kv_transfer/": ("common/",),
    "wire/": ("common/", "tandem/v1/", "engine/sampler/sampled_token.h", "engine/sampler/sampling_params.h"),
    "worker/": ("common/", "tandem/v1/", "engine/", "kv_transfer/", "wire/"),
    "prefill_worker/": ("common/", "tandem/v1/", "engine/", "kv_transfer/", "wire/", "worker/"),
    "decode_worker/": ("common/", "tandem/v1/", "engine/", "kv_transfer/", "wire/", "worker/"),
    "router/": ("common/", "tandem/v1/", "wire/") + ROUTER_ENGINE_TYPES,
    "bench/load/": ("common/", "tandem/v1/"),
    "bench/kernels/": ("common/", "engine/"),
    "bench/http/": ("common/",),
    # The simulator runs the router's admission and routing and the engine's
    # prefix cache, and calibrates on the engine.
    "bench/sim/": ("common/", "tandem/v1/", "engine/", "router/", "worker/", "bench/load/"),
    # The front end assembles everything but the tests.
    "tools/": ("common/", "tandem/v1/", "engine/", "kv_transfer/", "wire/", "worker/", "router/"),
    "tests/": PROJECT_ROOTS,
    # The fuzz targets feed every parser of outside data; no service includes them.
    "fuzz/": ("common/", "tandem/v1/", "engine/", "kv_transfer/", "wire/", "worker/", "prefill_worker/",
              "decode_worker/", "router/"),
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
SOURCE_SUFFIXES = {".h", ".cc", ".cu", ".cuh"}
SKIP_DIRS = {"build", ".git", "node_modules", "models"}


def rule_for(path: str):
    best = None
    for folder in RULES:
        if path.startswith(folder) and (best is None or len(folder) > len(best)):
            best = folder
    return best


def violations(root: pathlib.Path):
    out = []
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if f.suffix not in SOURCE_SUFFIXES or not f.is_file():
            continue
        if any(part in SKIP_DIRS or part.startswith("build") for part in rel.parts[:-1]):
            continue
        rel_s = rel.as_posix()
        folder = rule_for(rel_s)
        if folder is None:
            out.append(f"{rel_s}: no include rule covers this folder (add it to RULES)")
            continue
        allowed = (folder,) + RULES[folder]
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            m = INCLUDE.match(line)
            if not m:
                continue
            inc = m.group(1)
            if not inc.startswith(PROJECT_ROOTS):
                continue  # a library's header (absl/, grpcpp/, ...)
            if not inc.startswith(allowed):
                out.append(f"{rel_s}:{n}: includes {inc} (a {folder} file may include only {', '.join(allowed)})")
    return out


def self_test():
    planted = {
        "router/bad.cc": ['#include "engine/kernels/ops.h"', '#include "engine/tokenizer/tokenizer.h"'],
        "prefill_worker/bad.cc": ['#include "decode_worker/decode_service.h"', '#include "worker/worker_main.h"'],
        "worker/bad.h": ['#include "tools/tandem/cli_flags.h"', '#include "absl/status/status.h"'],
        "proto/bad.cc": ['#include "engine/sampler/sampler.h"'],
        "engine/tokenizer/ok.cc": ['#include "common/status_macros.h"'],
    }
    expected = {"router/bad.cc:1", "prefill_worker/bad.cc:1", "worker/bad.h:1", "proto/bad.cc:1"}
    with tempfile.TemporaryDirectory() as d:
        for rel, lines in planted.items():
            f = pathlib.Path(d, rel)
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text("\n".join(lines) + "\n")
        found = {v.split(": ")[0] for v in violations(pathlib.Path(d))}
    if found != expected:
        print(f"self-test: found {sorted(found)}, expected {sorted(expected)}")
        return 1
    print("self-test: the checker finds exactly the 4 planted edges")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(pathlib.Path(__file__).resolve().parents[2]))
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    found = violations(pathlib.Path(args.root))
    for v in found:
        print(v)
    print(f"include_rules: {len(found)} forbidden edge(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
