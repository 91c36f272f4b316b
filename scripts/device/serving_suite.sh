#!/usr/bin/env bash
# The serving benchmarks on the GPU machine, in one call (<= 9 minutes), after the model is
# staged (scripts/device/stage_model.sh) and, optionally, trained drafters carried to
# /tmp/dspark-train/export/<kind> (dspark, mtp1):
#   1. build (dspark, test_cuda, bench_prefill_stall) unless a background build is running
#      (`serving_suite.sh --build-in-background` at the start of an earlier call);
#   2. the CUDA tests (ctest -L cuda, with the real model for the golden tests);
#   3. bench_prefill_stall: a 2048-token prompt joining 8 decoding requests, chunk 256 (the
#      engine's chunked prefill) vs chunk 2048 (the whole prompt in one step, as before);
#   4. dspark bench-load, SmolLM2 on CUDA with the n-gram drafter (host): policies none, fixed,
#      threshold, scheduled, async at concurrency 1..256;
#   5. the trained dspark (gamma 7) and mtp1 (gamma 1) drafters (host CPU) at concurrency 1, 4;
#   6. PNG plots of 4 (scripts/plot_load.py) when matplotlib is there.
# $OUT: test.log, prefill_stall.jsonl, load_ngram.jsonl, load_trained.jsonl, *.png, suite.log.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
build="$root/build-gpu"
bg_log=/tmp/dspark-serving-build.log
targets="dspark test_cuda bench_prefill_stall"
if [ "${1:-}" = "--build-in-background" ]; then
  setsid nohup env DSPARK_BUILD_TARGETS="$targets" OUT=/tmp/dspark-serving-build \
    bash "$root/scripts/device/gpu_suite.sh" --build-only > "$bg_log" 2>&1 < /dev/null &
  echo "serving_suite: background build started"
  exit 0
fi
OUT="${OUT:-$root/build-serving-out}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/suite.log") 2>&1
start=$(date +%s)
model=/tmp/dspark-model/SmolLM2-135M-Instruct.Q4_1.gguf
drafters="${DSPARK_DRAFTERS:-/tmp/dspark-train/export}"
prompts="$root/.stage/data/mixed100.jsonl"
[ -f "$model" ] || { echo "serving_suite: model not staged"; exit 1; }
for _ in $(seq 1 60); do pgrep -f "gpu_suite.sh --build-only" > /dev/null || break; sleep 5; done
source "$root/scripts/device/device_env.sh"
if [ ! -x "$build/services/dspark" ] || [ ! -x "$build/bench/bench_prefill_stall" ]; then
  DSPARK_BUILD_TARGETS="$targets" OUT=/tmp/dspark-serving-fg bash scripts/device/gpu_suite.sh --build-only ||
    { tail -30 /tmp/dspark-serving-fg/build.log; exit 1; }
fi
echo "serving_suite: build ready after $(( $(date +%s) - start )) s"

(cd "$build" && DSPARK_MODEL="$model" timeout 120 ctest -L cuda --output-on-failure --timeout 90 -j4 > "$OUT/test.log" 2>&1)
echo "serving_suite: CUDA tests rc=$? after $(( $(date +%s) - start )) s"
grep -E "tests passed|FAILED|Failed" "$OUT/test.log" | tail -8

: > "$OUT/prefill_stall.jsonl"
for chunk in 256 2048; do
  timeout 60 "$build/bench/bench_prefill_stall" --model "$model" --device cuda --batch 8 --prompt 2048 \
    --chunk $chunk --steps 24 --json >> "$OUT/prefill_stall.jsonl"
done
cat "$OUT/prefill_stall.jsonl"
echo "serving_suite: prefill stall done after $(( $(date +%s) - start )) s"

load() {  # output file, then bench-load arguments
  local out="$1"; shift
  timeout "${LOAD_TIMEOUT:-240}" "$build/services/dspark" bench-load --model "$model" --prompts "$prompts" --device cuda \
    --max-tokens 64 --ctx 1024 --threads 16 --json "$@" >> "$out" 2>> "$OUT/load_errors.log"
  echo "serving_suite: bench-load $* rc=$? after $(( $(date +%s) - start )) s"
}
: > "$OUT/load_ngram.jsonl"
load "$OUT/load_ngram.jsonl" --draft ngram --gamma 4 --threshold 0.3 --concurrency 1,4,16,64,128,256 \
  --policies none,fixed,threshold,scheduled,async --requests "${LOAD_REQUESTS:-48}"
: > "$OUT/load_trained.jsonl"
if [ -d "$drafters/dspark" ]; then
  LOAD_TIMEOUT=100 load "$OUT/load_trained.jsonl" --draft "dspark:$drafters/dspark" --gamma 7 --concurrency 1,4 \
    --policies fixed,scheduled --requests 8
fi
if [ -d "$drafters/mtp1" ]; then
  LOAD_TIMEOUT=80 load "$OUT/load_trained.jsonl" --draft "mtp1:$drafters/mtp1" --gamma 1 --concurrency 1,4 \
    --policies none,fixed --requests 8
fi
if python3 -c "import matplotlib" 2>/dev/null; then
  python3 scripts/plot_load.py "$OUT/load_ngram.jsonl" "$OUT/load_ngram" "SmolLM2-135M on H100, n-gram drafter"
fi
echo "serving_suite: done after $(( $(date +%s) - start )) s"
