#!/usr/bin/env bash
# Reproduces GPU-contention races of the CUDA tests, run ON the GPU machine from the repository
# root. It first builds build-gpu/tests/test_cuda (`DSPARK_BUILD_TARGETS=test_cuda
# scripts/device/gpu_suite.sh --build-only`, incremental; RACE_NO_BUILD=1 skips it). Logs: $OUT.
#
#   scripts/device/race_repro.sh stress [COPIES] [REPEAT] [FILTER]
#       COPIES (default 4) background copies of test_cuda, each with --gtest_repeat=REPEAT
#       (default 10) over FILTER (default cuda_backend.*), all sharing the GPU at once, as
#       `ctest -L cuda -j4` does; prints every failed test with its count, exit 1 on any failure.
#       RACE_ENV="CUDA_LAUNCH_BLOCKING=1" runs the copies with that environment (an ordering
#       race between streams usually disappears when every launch is synchronous).
#   scripts/device/race_repro.sh sanitize TOOL [FILTER]
#       compute-sanitizer --tool TOOL (memcheck | initcheck | racecheck | synccheck) over
#       FILTER (default cuda_backend.cached_prefix_logits_equal_a_cold_prefill), alone.
#       initcheck reports device reads of memory nothing wrote; racecheck only checks shared
#       memory inside a kernel, and none of the tools sees an ordering race BETWEEN streams.
#
# Stress and sanitize each stop after RACE_TIMEOUT seconds (default 240); RACE_BIN names another
# test binary.
set -uo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${RACE_BIN:-$root/build-gpu/tests/test_cuda}"
OUT="${OUT:-$root/build-gpu-out}"
mkdir -p "$OUT"
limit="${RACE_TIMEOUT:-240}"
mode="${1:-stress}"

# Always (re)build, incrementally: a binary left from another checkout would test other code.
if [ -z "${RACE_BIN:-}" ] && [ -z "${RACE_NO_BUILD:-}" ]; then
  DSPARK_BUILD_TARGETS=test_cuda OUT="$OUT" bash "$root/scripts/device/gpu_suite.sh" --build-only ||
    { echo "race_repro: build failed (see $OUT/build.log)"; exit 1; }
fi

case "$mode" in
  stress)
    copies="${2:-4}"
    repeat="${3:-10}"
    filter="${4:-cuda_backend.*}"
    echo "race_repro: $copies copies x --gtest_repeat=$repeat --gtest_filter=$filter ${RACE_ENV:-}"
    rm -f "$OUT"/race_copy_*.log
    pids=()
    for i in $(seq 1 "$copies"); do
      # shellcheck disable=SC2086  # RACE_ENV is a list of VAR=value words
      env ${RACE_ENV:-} timeout "$limit" "$bin" --gtest_filter="$filter" --gtest_repeat="$repeat" \
        > "$OUT/race_copy_$i.log" 2>&1 &
      pids+=($!)
    done
    rc=0
    for i in "${!pids[@]}"; do
      wait "${pids[$i]}"
      r=$?
      echo "copy $((i + 1)): rc=$r, $(grep -c '^\[       OK \]' "$OUT/race_copy_$((i + 1)).log") passed, $(grep -cE '^\[  FAILED  \] [A-Za-z0-9_]+\.[A-Za-z0-9_]+ \(' "$OUT/race_copy_$((i + 1)).log") failed"
      [ $r -ne 0 ] && rc=1
    done
    # Every failed test (one line per failure: "[  FAILED  ] suite.name (N ms)") with its count,
    # then the first failing checks with their values.
    cat "$OUT"/race_copy_*.log | grep -E '^\[  FAILED  \] [A-Za-z0-9_]+\.[A-Za-z0-9_]+ \(' |
      sed -E 's/ \([0-9]+ ms\)//' | sort | uniq -c
    grep -h -B2 -A6 'Failure' "$OUT"/race_copy_*.log | head -60
    [ $rc -eq 0 ] && echo "race_repro: no failure" || echo "race_repro: FAILURES (logs: $OUT/race_copy_*.log)"
    exit $rc
    ;;
  sanitize)
    tool="${2:?sanitize needs a tool: memcheck, initcheck, racecheck or synccheck}"
    filter="${3:-cuda_backend.cached_prefix_logits_equal_a_cold_prefill}"
    cs="$(command -v compute-sanitizer)"
    [ -z "$cs" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] && cs=/usr/local/cuda/bin/compute-sanitizer
    [ -n "$cs" ] || { echo "race_repro: compute-sanitizer not found"; exit 1; }
    echo "race_repro: $cs --tool $tool --print-limit 20 $bin --gtest_filter=$filter"
    timeout "$limit" "$cs" --tool "$tool" --print-limit 20 "$bin" --gtest_filter="$filter" \
      > "$OUT/sanitize_$tool.log" 2>&1
    rc=$?
    tail -60 "$OUT/sanitize_$tool.log"
    exit $rc
    ;;
  *)
    echo "usage: $0 stress [COPIES] [REPEAT] [FILTER] | sanitize TOOL [FILTER]" >&2
    exit 2
    ;;
esac
