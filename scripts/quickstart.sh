#!/usr/bin/env bash
# A newcomer's first command: installs what is missing, builds, starts the
# local disaggregated cluster (router + 1 prefill + 1 decode worker, KV over
# UCX) with the bundled model, streams one generation through it, and keeps
# the cluster serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
# The run command builds no tests, so it needs none of the test packages
# (GoogleTest, Google Benchmark, PyTorch); scripts/test.sh turns them back on.
scripts/build.sh -DTANDEM_BUILD_TESTS=OFF
port="${TANDEM_PORT:-50051}"
log="$(mktemp)"
build/bin/tandem up --port "$port" >"$log" &
up_pid=$!
trap 'kill -TERM "$up_pid" 2>/dev/null || true; wait "$up_pid" 2>/dev/null || true' INT TERM EXIT
for _ in $(seq 1 600); do   # at most 60 s
  grep -q "ready on" "$log" && break
  kill -0 "$up_pid" 2>/dev/null || { cat "$log"; echo "tandem up failed" >&2; exit 1; }
  sleep 0.1
done
cat "$log"
build/bin/tandem client --addr "127.0.0.1:$port" --prompt "${1:-ROMEO:}" --max-tokens 96 --seed 1
echo "The cluster keeps serving on 127.0.0.1:$port; try: build/bin/tandem client --addr 127.0.0.1:$port --prompt 'JULIET:'. Ctrl-C stops it."
wait "$up_pid"
