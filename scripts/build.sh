#!/usr/bin/env bash
# Configures and builds Tandem into build/ (binaries in build/bin/).
# Extra arguments go to CMake's configure step, e.g. -DTANDEM_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${TANDEM_JOBS:-$(nproc)}"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j"$jobs"
