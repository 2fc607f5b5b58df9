#!/usr/bin/env bash
# Sanitizer runs (tools/sanitizers/README.md): builds with clang into their
# own trees and runs the tests there; the default build/ is not touched.
#
#   scripts/sanitize.sh asan        ASan+UBSan (build-asan): ctest -L unit, then -L integration
#   scripts/sanitize.sh asan-unit   ASan+UBSan, only what the unit suite needs, only -L unit (CI)
#   scripts/sanitize.sh tsan        TSan (build-tsan): engine loop, KV transport, router tests
#   scripts/sanitize.sh tsan-grpc   TSan on the in-process cluster over real gRPC (ClusterBackend
#                                   suites): for triage only, see tools/sanitizers/README.md
#   scripts/sanitize.sh all         asan, then tsan (the default)
#
# Any finding fails the test it happens in (halt_on_error, and UBSan built
# with -fno-sanitize-recover). Suppressions, each with its reason, are the
# tools/sanitizers/*.supp files. TANDEM_JOBS sets build and test
# parallelism (default: nproc); CXX a clang++ other than clang++-15/clang++.
# (The steps inside asan/tsan end in `|| return 1`: they run under `||`,
# where bash ignores set -e.)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mode="${1:-all}"
jobs="${TANDEM_JOBS:-$(nproc)}"
supp="$root/tools/sanitizers"

case "$mode" in asan|asan-unit|tsan|tsan-grpc|all) ;; *)
  echo "usage: scripts/sanitize.sh [asan|asan-unit|tsan|tsan-grpc|all]" >&2; exit 2 ;;
esac

cxx="${CXX:-}"
if [[ -z "$cxx" ]]; then
  for c in clang++-15 clang++; do command -v "$c" >/dev/null && { cxx=$c; break; }; done
fi
[[ -n "$cxx" ]] || { echo "sanitize.sh: no clang++ found (apt-get install clang-15)" >&2; exit 1; }
cc="${cxx/clang++/clang}"
# The symbolizer of the same LLVM, so reports carry file:line.
symbolizer="$(command -v "llvm-symbolizer${cxx#clang++}" || command -v llvm-symbolizer || true)"

configure() {  # build dir, TANDEM_SANITIZE value
  # -O1: about half the build time of -O3, and what the sanitizers' own
  # documentation suggests (the kernels keep their -O3 by target option).
  cmake -S . -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" \
    -DCMAKE_C_FLAGS_RELEASE="-O1 -DNDEBUG" -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_CXX_COMPILER="$cxx" -DTANDEM_SANITIZE="$2" -DTANDEM_BUILD_TESTS=ON >/dev/null
}

run_ctest() {  # build dir, ctest arguments...
  local dir=$1; shift
  # Tests' own TIMEOUTs stand; sanitized code runs 2-10x slower, so those
  # without one get a generous default.
  ctest --test-dir "$dir" --output-on-failure --no-tests=error -j"$jobs" --timeout 1800 "$@"
}

asan() {  # "unit" or "all"
  configure build-asan "address,undefined" || return 1
  if [[ "$1" == unit ]]; then
    cmake --build build-asan -j"$jobs" --target tandem_unit_tests || return 1
  else
    cmake --build build-asan -j"$jobs" || return 1
  fi
  export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:abort_on_error=0:strict_string_checks=1:check_initialization_order=1:detect_stack_use_after_return=1"
  export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$supp/ubsan.supp"
  [[ -n "$symbolizer" ]] && export ASAN_SYMBOLIZER_PATH="$symbolizer"
  local status=0
  echo "== ASan+UBSan: ctest -L unit"
  run_ctest build-asan -L unit || status=1
  if [[ "$1" != unit ]]; then
    echo "== ASan+UBSan: ctest -L integration"
    run_ctest build-asan -L integration || status=1
  fi
  unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
  return $status
}

# The TSan suites: the engine loop (AsyncEngine), the KV transport (loopback
# and UCX, in one process and across two) and the router (worker pool,
# readiness, prefill window, ClusterBackend end to end over real gRPC).
tsan_targets=(async_engine_test loopback_transport_test router_test cluster_backend_test tandem_tsan_absl_sync)
tsan_tests='^(AsyncEngine|LoopbackTransport|GuardedLoopback|KvBlockOwners|Ucx|WorkerPool|Readiness|PrefillWindow)'
# The in-process cluster over real gRPC: every request crosses gRPC's own
# threads, whose hand-overs live in the uninstrumented libgrpc, so TSan
# reports gRPC's bookkeeping until gRPC itself is built with TSan (Debian's
# is not). tools/sanitizers/tsan.supp drops what was triaged; `tsan-grpc`
# runs these for triage, not as a gate.
tsan_grpc_tests='^(ClusterBackend|UnrenewedLease|Migration|LostReservation|DecodeRestart|Admission|QueueBound|FakeClock|ApiKeyService)'

tsan() {  # test regex
  local tests=$1
  configure build-tsan thread || return 1
  local targets=("${tsan_targets[@]}")
  # The UCX tests exist only where libucx-dev was found.
  if ninja -C build-tsan -t targets all 2>/dev/null | grep -q '^ucx_transport_test:'; then
    targets+=(ucx_transport_test ucx_two_process_test kv_transfer_peer)
  fi
  cmake --build build-tsan -j"$jobs" --target "${targets[@]}" || return 1
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:history_size=4:suppressions=$supp/tsan.supp"
  [[ -n "$symbolizer" ]] && TSAN_OPTIONS+=":external_symbolizer_path=$symbolizer"
  # absl's locks live in an uninstrumented library: this tells TSan about
  # them (tools/sanitizers/tsan_absl_sync.cc).
  export LD_PRELOAD="$root/build-tsan/lib/libtandem_tsan_absl_sync.so"
  # libgomp is not built with TSan: its barriers and thread pool look like
  # races to it. One OpenMP thread keeps every kernel on the calling thread
  # (the tests set this too; here it is a precondition, not a speed-up).
  export OMP_NUM_THREADS=1
  local status=0
  echo "== TSan: engine loop, KV transport, router"
  run_ctest build-tsan -R "$tests" || status=1
  unset TSAN_OPTIONS LD_PRELOAD
  return $status
}

status=0
case "$mode" in
  asan) asan all || status=1 ;;
  asan-unit) asan unit || status=1 ;;
  tsan) tsan "$tsan_tests" || status=1 ;;
  tsan-grpc) tsan "$tsan_grpc_tests" || status=1 ;;
  all) asan all || status=1; tsan "$tsan_tests" || status=1 ;;
esac
exit $status
