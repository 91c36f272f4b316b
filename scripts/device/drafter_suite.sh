#!/usr/bin/env bash
# The trained drafters on the GPU machine, in one call (<= 9 minutes), after the model is staged
# (scripts/device/stage_model.sh) and the trained drafter folders are carried in .stage/drafters/
# (dspark, dflash, mtp1, eagle3; exported by scripts/device/train_suite.sh):
#   1. build (dspark, test_cuda, bench_load) unless a background build is running
#      (`drafter_suite.sh --build-in-background` at the start of an earlier call);
#   2. the GPU drafter tests (Cuda*Drafter*: parity with the CPU drafters, lossless decoding,
#      the trained drafters' acceptance against their CPU runs),
#      then every CUDA test (ctest -L cuda);
#   3. batch-1 speed on SmolLM2 (`dspark bench-spec --device cuda`, plain decoding in the same
#      run): every drafter on the GPU, dspark also on the host CPU, gamma 7 (mtp1: 1), fixed and
#      scheduled verification, per
#      dataset (gsm8k, humaneval, mbpp; SPEC_LIMIT prompts x SPEC_TOKENS tokens each).
# $OUT: test.log, spec_speed.jsonl, suite.log.
# Knobs: DRAFTER_BUILD (an existing build dir: no build here), DRAFTER_SKIP_CTEST=1 (only the
# drafter tests), SPEC_SETS, SPEC_LIMIT, SPEC_TOKENS, SPEC_SKIP_CPU=1, DSPARK_DRAFTERS.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root" || exit 1
build="${DRAFTER_BUILD:-$root/build-gpu}"     # e.g. a build made from a source snapshot
targets="dspark test_cuda bench_load"
if [ "${1:-}" = "--build-in-background" ]; then
  setsid nohup env DSPARK_BUILD_TARGETS="$targets" OUT=/tmp/dspark-drafter-build \
    bash "$root/scripts/device/gpu_suite.sh" --build-only > /tmp/dspark-drafter-build.log 2>&1 < /dev/null &
  echo "drafter_suite: background build started"
  exit 0
fi
OUT="${OUT:-$root/build-drafter-out}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/suite.log") 2>&1
start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start )) s"; }
model=/tmp/dspark-model/SmolLM2-135M-Instruct.Q4_1.gguf
drafters="${DSPARK_DRAFTERS:-$root/.stage/drafters}"
data="$root/.stage/data"
[ -f "$model" ] || { echo "drafter_suite: model not staged"; exit 1; }
for _ in $(seq 1 60); do pgrep -f "gpu_suite.sh --build-only" > /dev/null || break; sleep 5; done
source "$root/scripts/device/device_env.sh"
if [ -z "${DRAFTER_BUILD:-}" ]; then
  DSPARK_BUILD_TARGETS="$targets" OUT=/tmp/dspark-drafter-fg bash scripts/device/gpu_suite.sh --build-only ||
    { tail -30 /tmp/dspark-drafter-fg/build.log; exit 1; }
fi
[ -x "$build/services/dspark" ] || { echo "drafter_suite: no $build/services/dspark"; exit 1; }
echo "drafter_suite: build ready after $(elapsed)"

DSPARK_MODEL="$model" DSPARK_TRAINED_DRAFTERS="$drafters" timeout 180 "$build/tests/test_cuda" \
  --gtest_filter='Cuda*Drafter*' > "$OUT/test.log" 2>&1
echo "drafter_suite: GPU drafter tests rc=$? after $(elapsed)"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |tau GPU|Failure" "$OUT/test.log" | head -20
if [ -z "${DRAFTER_SKIP_CTEST:-}" ]; then
  (cd "$build" && DSPARK_MODEL="$model" timeout 150 ctest -L cuda --output-on-failure --timeout 100 -j4 >> "$OUT/test.log" 2>&1)
  echo "drafter_suite: CUDA tests rc=$? after $(elapsed)"
  grep -E "tests passed|FAILED|Failed" "$OUT/test.log" | tail -8
fi

limit="${SPEC_LIMIT:-20}"
tokens="${SPEC_TOKENS:-128}"
: > "$OUT/spec_speed.jsonl"
run() {  # label, dataset, then bench-spec arguments
  local label="$1" set="$2"; shift 2
  local line
  line=$(timeout 150 "$build/services/dspark" bench-spec --device cuda --model "$model" --json \
    --prompts "$data/$set.jsonl" --limit "$limit" --max-tokens "$tokens" "$@" 2>>"$OUT/spec_errors.log")
  local rc=$?
  if [ $rc -ne 0 ] || [ -z "$line" ]; then
    echo "{\"label\": \"$label\", \"dataset\": \"$set\", \"error\": \"exit $rc\"}" >> "$OUT/spec_speed.jsonl"
    echo "$label $set: FAILED (exit $rc)"
    return
  fi
  echo "$line" | LABEL="$label" SET="$set" python3 -c "
import json, os, sys
d = json.loads(sys.stdin.read()); d['label'] = os.environ['LABEL']; d['dataset'] = os.environ['SET']
print(json.dumps(d))
m = d.get('metrics', d)
print('%-28s %-9s tau %s speedup %.3f decode %.3f spec %.1f tok/s plain %.1f tok/s identical %s' % (d['label'], d['dataset'],
      m.get('acceptance_length', m.get('tau', '?')), d['speedup'], d['decode_speedup'], d['spec_decode_tokens_per_s'],
      d['plain_decode_tokens_per_s'], d.get('identical_outputs')), file=sys.stderr)" >> "$OUT/spec_speed.jsonl"
}
for set in ${SPEC_SETS:-gsm8k humaneval mbpp}; do
  run "dspark gpu fixed" "$set" --draft "dspark:$drafters/dspark" --gamma 7
  run "dspark gpu scheduled" "$set" --draft "dspark:$drafters/dspark" --gamma 7 --policy scheduled \
    --sps-profile /tmp/dspark-sps-smollm2.json
  run "dflash gpu fixed" "$set" --draft "dflash:$drafters/dflash" --gamma 7
  [ -z "${SPEC_SKIP_CPU:-}" ] && run "dspark cpu fixed" "$set" --draft "dspark:$drafters/dspark" --gamma 7 --draft-device cpu
  run "mtp1 gpu" "$set" --draft "mtp1:$drafters/mtp1" --gamma 1
  run "mtp1 gpu scheduled" "$set" --draft "mtp1:$drafters/mtp1" --gamma 1 --policy scheduled \
    --sps-profile /tmp/dspark-sps-smollm2.json
  [ -d "$drafters/eagle3" ] && run "eagle3 gpu fixed" "$set" --draft "eagle3:$drafters/eagle3" --gamma 7
  echo "drafter_suite: $set done after $(elapsed)"
done
echo "drafter_suite: done after $(elapsed)"
