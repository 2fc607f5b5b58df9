#!/usr/bin/env bash
# Installs what the build and the tests need, builds, and runs every test
# (labels: unit, integration, e2e, gpu — gpu cases skip without a device).
# This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh --test
scripts/build.sh -DTANDEM_BUILD_TESTS=ON
cd build
ctest --output-on-failure -j"${TANDEM_JOBS:-$(nproc)}" --timeout 900 "$@"
