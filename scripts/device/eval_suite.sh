#!/usr/bin/env bash
# Drafter evaluation on the GPU machine, after scripts/device/train_suite.sh on the same warm
# machine (the trained drafters stay in /tmp/dspark-train/export/<kind>):
#   1. waits for / runs the CUDA build (build-gpu: dspark and test_cuda; started in the
#      background by `scripts/device/eval_suite.sh --build-in-background` at the start of the
#      training call, or built here if absent),
#   2. runs the CUDA tests (ctest -L cuda),
#   3. runs `dspark eval --device cuda` for every trained drafter at temperature 0 (with
#      --check-lossless: outputs must equal plain decoding's) and at temperature 1, over the
#      gsm8k, math500, humaneval, mbpp prompts and the held-out chat slice, at gamma 7
#      (block 7 as in the paper's Table 1), batch 1 (as DeepSpec).
#   4. bench_actors: the actor runtime's messaging overhead on a batch-1 decode step.
# Results: $OUT/eval.jsonl (one `dspark eval --json` object per run, with a "label"),
# $OUT/eval_suite.log, $OUT/test.log. Carry build-devdeps and .stage/data.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
build="${EVAL_BUILD:-$root/build-gpu}"
bg_log=/tmp/dspark-bg-build.log

if [ "${1:-}" = "--build-in-background" ]; then
  # A new session, so the build outlives the call that starts it (the machine keeps it running).
  setsid nohup env DSPARK_BUILD_TARGETS="${EVAL_TARGETS:-dspark test_cuda bench_actors}" OUT=/tmp/dspark-bg-build \
    bash "$root/scripts/device/gpu_suite.sh" --build-only > "$bg_log" 2>&1 < /dev/null &
  echo "eval_suite: background build started (log $bg_log)"
  exit 0
fi

OUT="${OUT:-$root/build-eval-out}"
mkdir -p "$OUT"
log="$OUT/eval_suite.log"
exec > >(tee -a "$log") 2>&1
start=$(date +%s)
model="${EVAL_MODEL:-/tmp/dspark-model/SmolLM2-135M-Instruct.Q4_1.gguf}"
drafters="${EVAL_DRAFTERS:-/tmp/dspark-train/export}"
data="$root/.stage/data"
[ -f "$model" ] || { echo "eval_suite: model not staged"; exit 1; }

# 1. the build
for _ in $(seq 1 60); do
  pgrep -f "gpu_suite.sh --build-only" >/dev/null || break
  sleep 5
done
[ -f "$bg_log" ] && tail -3 "$bg_log"
# LD_LIBRARY_PATH for the staged libraries (prebuilt binaries come with their own, set by
# prebuilt.sh unpack, and no build-devdeps is carried for them)
[ -n "${DSPARK_PREBUILT:-}" ] || source "$root/scripts/device/device_env.sh"
if [ ! -x "$build/services/dspark" ] || { [ "${EVAL_DEVICE:-cuda}" = cuda ] && [ -z "${EVAL_SKIP_TESTS:-}" ] && [ ! -x "$build/tests/test_cuda" ]; }; then
  DSPARK_BUILD_TARGETS="dspark test_cuda bench_actors" OUT=/tmp/dspark-fg-build bash scripts/device/gpu_suite.sh --build-only ||
    { cat /tmp/dspark-fg-build/summary.txt; tail -30 /tmp/dspark-fg-build/build.log; exit 1; }
fi
echo "eval_suite: build ready after $(( $(date +%s) - start )) s"

# 2. CUDA tests
# (a prebuilt tree from scripts/device/prebuilt.sh has test_cuda but no CTest files: run it directly)
if [ "${EVAL_DEVICE:-cuda}" = cuda ] && [ -z "${EVAL_SKIP_TESTS:-}" ]; then
  if [ -f "$build/CTestTestfile.cmake" ]; then
    (cd "$build" && DSPARK_MODEL="$model" timeout 120 ctest -L cuda --output-on-failure --timeout 90 -j4 > "$OUT/test.log" 2>&1)
  else
    DSPARK_MODEL="$model" timeout 120 "$build/tests/test_cuda" --gtest_brief=1 > "$OUT/test.log" 2>&1
  fi
  echo "eval_suite: CUDA tests rc=$? after $(( $(date +%s) - start )) s"
  grep -E "tests passed|PASSED|FAILED|Failed" "$OUT/test.log" | tail -12
else
  echo "eval_suite: CUDA tests skipped (EVAL_SKIP_TESTS or a CPU evaluation)"
fi

# 3. evaluation: two processes at a time, 8 CPU threads each (the drafters run on the CPU)
prompts="$data/gsm8k.jsonl,$data/math500.jsonl,$data/humaneval.jsonl,$data/mbpp.jsonl,$data/chat_eval.jsonl"
limit="${EVAL_LIMIT:-16}"
maxtok="${EVAL_MAX_TOKENS:-128}"
source "$root/scripts/device/eval_lib.sh"
run_one() {  # label, then dspark eval arguments
  local label="$1"; shift
  labelled_eval "$label" 280 "$OUT/eval_errors.log" "$build/services/dspark" eval --device "${EVAL_DEVICE:-cuda}" \
    --model "$model" --prompts "$prompts" --limit "$limit" --max-tokens "$maxtok" --gamma 7 --threads 8 --json "$@"
}
: > "$OUT/eval.jsonl"
for temp in 0 1; do
  extra=""; [ "$temp" = 0 ] && extra="--check-lossless"
  pids=()
  for kind in ${EVAL_KINDS:-dspark dflash eagle3 mtp1}; do
    [ -d "$drafters/$kind" ] || { echo "eval_suite: no trained $kind"; continue; }
    run_one "$kind T$temp" --draft "$kind:$drafters/$kind" --temperature "$temp" $extra > "/tmp/eval_${kind}_${temp}.json" &
    pids+=($!)
    if [ ${#pids[@]} -ge 2 ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
  done
  [ ${#pids[@]} -gt 0 ] && wait "${pids[@]}"   # never a bare wait: it would also wait for the log's tee
  cat /tmp/eval_*_"$temp".json >> "$OUT/eval.jsonl" 2>/dev/null
  rm -f /tmp/eval_*_"$temp".json
  echo "eval_suite: temperature $temp done after $(( $(date +%s) - start )) s"
done
eval_summary "$OUT/eval.jsonl"
# 4. messaging overhead of the actor runtime at batch 1 on the GPU (issue 6)
if [ -x "$build/bench/bench_actors" ] && [ "${EVAL_DEVICE:-cuda}" = cuda ] && [ -z "${EVAL_SKIP_TESTS:-}" ]; then
  timeout 120 "$build/bench/bench_actors" --model "$model" --device cuda --tokens 128 --reps 5 > "$OUT/bench_actors.txt" 2>&1
  echo "eval_suite: bench_actors rc=$? after $(( $(date +%s) - start )) s"; tail -5 "$OUT/bench_actors.txt"
fi
echo "eval_suite: done after $(( $(date +%s) - start )) s"
