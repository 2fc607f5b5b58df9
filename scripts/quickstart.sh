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
http_port="${TANDEM_HTTP_PORT:-8000}"
log="$(mktemp)"
build/bin/tandem up --port "$port" --http-port "$http_port" >"$log" &
up_pid=$!
trap 'kill -TERM "$up_pid" 2>/dev/null || true; wait "$up_pid" 2>/dev/null || true' INT TERM EXIT
for _ in $(seq 1 600); do   # at most 60 s
  grep -q "OpenAI HTTP API on" "$log" && break  # printed right after "ready on"
  kill -0 "$up_pid" 2>/dev/null || { cat "$log"; echo "tandem up failed" >&2; exit 1; }
  sleep 0.1
done
cat "$log"
build/bin/tandem client --addr "127.0.0.1:$port" --prompt "${1:-ROMEO:}" --max-tokens 96 --seed 1
echo "The cluster keeps serving gRPC on 127.0.0.1:$port (try: build/bin/tandem client --addr 127.0.0.1:$port --prompt 'JULIET:')"
echo "and the OpenAI API on http://127.0.0.1:$http_port/v1 (try: curl http://127.0.0.1:$http_port/v1/completions -H 'Content-Type: application/json' -d '{\"prompt\": \"JULIET:\", \"max_tokens\": 32}'). Ctrl-C stops it."
wait "$up_pid"
