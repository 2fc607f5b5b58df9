#!/usr/bin/env bash
# Installs, with apt, exactly what Tandem needs on Debian 12. Safe to re-run:
# packages already present are skipped, and apt is asked only for what is missing.
#
#   scripts/install_deps.sh          build and run (compiler, CMake, libraries)
#   scripts/install_deps.sh --test   also what the tests need (GoogleTest, PyTorch reference, clang-15 + libFuzzer, Node.js + npm)
set -euo pipefail

build_pkgs=(
  build-essential cmake ninja-build ccache pkg-config
  libabsl-dev nlohmann-json3-dev libicu-dev libonig-dev libxxhash-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libucx-dev
  libcurl4-openssl-dev  # tandem-bench --backend openai (HTTP client)
  libboost1.74-dev  # Boost.Beast/Asio: the OpenAI HTTP API server (common/http)
  libdnnl-dev gnuplot-nox libssl-dev  # libssl-dev: API keys (SHA-256, constant-time compare)
  prometheus-cpp-dev libcivetweb-dev  # metrics: prometheus-cpp; civetweb serves /metrics
)
test_pkgs=(
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-numpy python3-torch python3-sentencepiece python3-regex
  python3-grpcio python3-protobuf python3-yaml  # python3-yaml: the Helm chart test (tests/deploy)
  python3-jinja2  # the chat template test compares our Jinja subset with jinja2 (tests/unit/engine/tokenizer)
  prometheus iproute2  # promtool checks the metrics text format; ip makes the multi-host test's namespaces
  openssl  # the certs test checks `tandem certs` with the openssl tool
  curl  # the OpenAI HTTP API test (tests/e2e/openai_http_test.py) calls it with curl
  clang-15 libfuzzer-15-dev libomp-15-dev  # the fuzz targets (scripts/fuzz.sh; libomp: the engine's OpenMP under clang)
  nodejs npm  # the Node.js client's test (clients/node: npm ci, node:test; Debian 12 ships Node 18)
)

want=("${build_pkgs[@]}")
if [[ "${1:-}" == "--test" ]]; then
  want+=("${test_pkgs[@]}")
fi

missing=()
for p in "${want[@]}"; do
  # NodeSource's nodejs package bundles npm and conflicts with Debian's: any npm will do.
  if [[ "$p" == npm ]] && command -v npm >/dev/null 2>&1; then continue; fi
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install_deps: all ${#want[@]} packages present"
  exit 0
fi

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
echo "install_deps: installing ${missing[*]}"
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
