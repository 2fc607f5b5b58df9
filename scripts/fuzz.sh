#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/README.md) with clang-15, ASan and UBSan
# into their own tree, and runs each for a bounded time or number of inputs,
# starting from its seed corpus (fuzz/corpus/<target>/) into a scratch
# corpus outside the repository. Prints each target's executions, seconds,
# corpus size and exit status; exits 1 when any target crashed (or leaked,
# hung, ran out of memory, broke an invariant), 77 when clang-15 or
# libFuzzer is missing (scripts/install_deps.sh --test installs them).
#
#   scripts/fuzz.sh                          every target, 60 s each
#   scripts/fuzz.sh --seconds 5              CI's short run (ctest -L fuzz)
#   scripts/fuzz.sh --target safetensors_fuzz --runs 1000000
#   scripts/fuzz.sh --list                   the targets
#
# Options: --seconds N | --runs N (per target), --target NAME (repeatable),
# --build-dir DIR (default build-fuzz), --work DIR (scratch corpora and
# crash reproducers; default $TMPDIR/tandem-fuzz), --parallel P (targets
# run at once; default 1), --no-build. A crash leaves its input in the work
# directory as <target>/crash-*; copy it into fuzz/corpus/<target>/ with the
# fix. TANDEM_JOBS sets the build's parallelism (default: all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds=60
runs=""
targets=()
build_dir="$root/build-fuzz"
work="${TMPDIR:-/tmp}/tandem-fuzz"
parallel=1
build=1
list=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --target) targets+=("$2"); shift 2 ;;
    --build-dir) build_dir="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --parallel) parallel="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --list) list=1; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "fuzz.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

all_targets=()
for f in fuzz/*_fuzz.cc; do all_targets+=("$(basename "$f" .cc)"); done
if [[ $list -eq 1 ]]; then printf '%s\n' "${all_targets[@]}"; exit 0; fi

cxx=$(command -v clang++-15 || true)
cc=$(command -v clang-15 || true)
fuzzer_lib=$(ls /usr/lib/llvm-15/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a 2>/dev/null | head -1 || true)
if [[ -z "$cxx" || -z "$cc" || -z "$fuzzer_lib" ]]; then
  echo "fuzz.sh: SKIP: clang-15 and libfuzzer-15-dev are needed (scripts/install_deps.sh --test)"
  exit 77
fi

if [[ $build -eq 1 ]]; then
  build_start=$(date +%s)
  if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
    # -O1 and line tables only (TANDEM_FUZZ adds -gline-tables-only): full
    # debug info of the JSON-heavy files doubles the tree's build time.
    CC="$cc" CXX="$cxx" cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -DNDEBUG" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -DNDEBUG" \
      -DTANDEM_FUZZ=ON >/dev/null
  fi
  build_targets=(fuzz_targets)
  if [[ ${#targets[@]} -gt 0 ]]; then build_targets=("${targets[@]}"); fi
  cmake --build "$build_dir" -j"${TANDEM_JOBS:-$(nproc)}" --target "${build_targets[@]}"
  echo "fuzz.sh: built in $(( $(date +%s) - build_start )) s"
fi

# Only the targets this build has (the UCX one needs libucx-dev).
selected=()
wanted=("${all_targets[@]}")
if [[ ${#targets[@]} -gt 0 ]]; then wanted=("${targets[@]}"); fi
for t in "${wanted[@]}"; do
  if [[ -x "$build_dir/bin/fuzz/$t" ]]; then
    selected+=("$t")
  elif [[ ${#targets[@]} -gt 0 ]]; then
    echo "fuzz.sh: no target $t in $build_dir" >&2; exit 2
  fi
done

# JSON targets get the JSON dictionary, and their own words where they have some.
json_targets=" tokenizer_load_fuzz safetensors_fuzz weight_index_fuzz model_config_fuzz "
mkdir -p "$work"
export TANDEM_SOURCE_DIR="$root" OMP_NUM_THREADS=1
# Leak checks are off by default: libFuzzer re-runs every input that ends
# with more mallocs than frees under LeakSanitizer, which made the JSON
# targets ~6x slower here. ASAN_OPTIONS=detect_leaks=1 turns them on.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=1}"
if [[ -z "${ASAN_SYMBOLIZER_PATH:-}" && -x /usr/bin/llvm-symbolizer ]]; then
  export ASAN_SYMBOLIZER_PATH=/usr/bin/llvm-symbolizer
fi
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

run_one() {
  local t="$1"
  local dir="$work/$t"
  mkdir -p "$dir/corpus"
  local dict="$dir/dict"
  : > "$dict"
  if [[ "$json_targets" == *" $t "* ]]; then cat fuzz/dicts/json.dict >> "$dict"; fi
  if [[ -f "fuzz/dicts/$t.dict" ]]; then cat "fuzz/dicts/$t.dict" >> "$dict"; fi
  local args=(-print_final_stats=1 -rss_limit_mb=2048 -timeout=20 -max_len=8192 "-artifact_prefix=$dir/")
  if [[ -s "$dict" ]]; then args+=("-dict=$dict"); fi
  if [[ -n "$runs" ]]; then args+=("-runs=$runs"); else args+=("-max_total_time=$seconds"); fi
  local start rc
  start=$(date +%s)
  set +e
  "$build_dir/bin/fuzz/$t" "${args[@]}" "$dir/corpus" "fuzz/corpus/$t" > "$dir/log" 2>&1
  rc=$?
  set -e
  local execs
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$dir/log" | tail -1 | awk '{print $2}')
  printf '%-24s %12s execs %6s s %6s corpus  rc=%s\n' "$t" "${execs:-?}" "$(( $(date +%s) - start ))" \
    "$(ls "$dir/corpus" | wc -l)" "$rc" > "$dir/summary"
  if [[ $rc -ne 0 ]]; then
    echo "--- $t failed (rc=$rc); the end of $dir/log:" >> "$dir/summary"
    tail -40 "$dir/log" >> "$dir/summary"
  fi
  return $rc
}

failed=0
pids=()
names=()
for t in "${selected[@]}"; do
  run_one "$t" &
  pids+=($!)
  names+=("$t")
  if [[ ${#pids[@]} -ge $parallel ]]; then
    if ! wait "${pids[0]}"; then failed=1; fi
    cat "$work/${names[0]}/summary"
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
  fi
done
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then failed=1; fi
  cat "$work/${names[$i]}/summary"
done
if [[ $failed -ne 0 ]]; then
  echo "fuzz.sh: FAILED (reproducers under $work/<target>/)"
  exit 1
fi
echo "fuzz.sh: ${#selected[@]} targets, no crash"
