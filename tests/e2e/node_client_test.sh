#!/bin/sh
# The Node.js client (clients/node) against `tandem serve`, and the official
# `openai` SDK (its devDependency) against `tandem up --http-port`: installs its npm
# dependencies with `npm ci` from the registry into clients/node/node_modules
# (git-ignored), then runs clients/node/test/*.test.js with Node's built-in
# test runner. Registered with CTest as node_client_e2e (tests/e2e/node_client.cmake).
#
#   tests/e2e/node_client_test.sh --tandem build/bin/tandem --source . --work DIR
#
# Exits 77 (CTest: skipped) when node (>= 18) or npm is missing or the npm
# registry cannot be reached.
set -u
tandem= source= work=
while [ $# -gt 0 ]; do
  case "$1" in
    --tandem) tandem=$2; shift 2 ;;
    --source) source=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    *) echo "node_client_test: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$tandem" ] && [ -n "$source" ] && [ -n "$work" ] || { echo "usage: $0 --tandem BIN --source DIR --work DIR" >&2; exit 2; }

skip() { echo "SKIP node_client_e2e: $*"; exit 77; }

command -v node >/dev/null 2>&1 || skip "no node (Debian: apt install nodejs npm)"
command -v npm >/dev/null 2>&1 || skip "no npm (Debian: apt install npm)"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 18 ] 2>/dev/null || skip "node $(node --version) is older than 18 (node:test)"

dir="$source/clients/node"
cd "$dir" || exit 1
registry=$(npm config get registry)
reachable() { timeout 60 npm ping --fetch-retries=0 --fetch-timeout=20000 >/dev/null 2>&1; }
reachable || skip "the npm registry ($registry) is unreachable"
echo "node_client_test: node $(node --version), npm $(npm --version), npm ci from $registry"
if ! timeout 600 npm ci --no-audit --no-fund --loglevel=error; then
  reachable || skip "the npm registry ($registry) became unreachable during npm ci"
  echo "node_client_test: npm ci failed" >&2
  exit 1
fi

mkdir -p "$work"
TANDEM_BIN=$tandem TANDEM_TEST_WORK=$work exec node --test --test-reporter=spec "$dir"/test/*.test.js
