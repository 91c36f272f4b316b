#!/usr/bin/env bash
# Speculative decoding on the GPU machine: `dspark bench-spec --device cuda` on SmolLM2 with each
# drafter. Two parts:
#   lossless  100 mixed prompts (gsm8k, humaneval, mbpp), every drafter x gamma in {1, 3, 7}, at
#             temperature 0: bench-spec counts outputs identical to plain decoding;
#   speed     each drafter at gamma 4 per dataset: tau, per-position acceptance, speedup over plain
#             decoding measured in the same run.
# Run after scripts/device/gpu_suite.sh on the same warm machine (it reuses build-gpu/), with the
# model staged (scripts/device/stage_model.sh) and the prompt sets carried in .stage/data/
# (here: `bash scripts/device/spec_suite.sh --stage`). Writes $OUT/spec_gpu.jsonl (one JSON object
# per run) and $OUT/spec_gpu.log.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
data="$root/.stage/data"

if [ "${1:-}" = "--stage" ]; then
  src="${2:-$root/../shared/data}"
  mkdir -p "$data"
  for s in gsm8k humaneval mbpp; do cp "$src/$s.jsonl" "$data/"; done
  # 100 prompts, a third of each domain, for the lossless checks.
  { head -n 34 "$data/gsm8k.jsonl"; head -n 33 "$data/humaneval.jsonl"; head -n 33 "$data/mbpp.jsonl"; } > "$data/mixed100.jsonl"
  wc -l "$data"/*.jsonl
  exit 0
fi

OUT="${OUT:-$root/build-gpu-out}"
mkdir -p "$OUT"
build="$root/build-gpu"
model="${DSPARK_MODEL:-/tmp/dspark-model/SmolLM2-135M-Instruct.Q4_1.gguf}"
log="$OUT/spec_gpu.log"
[ -f "$build/build.ninja" ] || { echo "spec_suite: run gpu_suite.sh first (no build-gpu/)" | tee "$log"; exit 1; }
[ -f "$model" ] || { echo "spec_suite: model not staged at $model" | tee "$log"; exit 1; }
[ -f "$data/mixed100.jsonl" ] || { echo "spec_suite: prompts not carried in .stage/data" | tee "$log"; exit 1; }
timeout 240 cmake --build "$build" -j16 --target dspark > "$log" 2>&1 || { tail -30 "$log"; exit 1; }
dspark="$build/services/dspark"
drafters="${DRAFTERS:-ngram layerskip:10 layerskip:16}"

run() {  # label, then bench-spec arguments
  local label="$1"; shift
  local line
  line=$(timeout 120 "$dspark" bench-spec --device cuda --model "$model" --json "$@" 2>>"$log")
  local rc=$?
  if [ $rc -ne 0 ] || [ -z "$line" ]; then
    echo "{\"label\": \"$label\", \"error\": \"exit $rc\"}" >> "$OUT/spec_gpu.jsonl"
    echo "$label: FAILED (exit $rc)"
    return
  fi
  echo "$line" | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); d['label']='$label'; print(json.dumps(d))" >> "$OUT/spec_gpu.jsonl"
  echo "$line" | python3 -c "
import json,sys; d=json.loads(sys.stdin.read())
def g(*ks):
    for k in ks:
        if k in d: return d[k]
    return '?'
print('$label', 'tau', g('acceptance_length','tau'), 'identical', g('identical','identical_outputs'), 'speedup', g('speedup'))"
}

for d in $drafters; do
  for g in 1 3 7; do
    run "lossless $d gamma $g" --prompts "$data/mixed100.jsonl" --limit 100 --max-tokens 64 --draft "$d" --gamma "$g"
  done
done
for s in gsm8k humaneval mbpp; do
  for d in $drafters; do
    run "speed $s $d gamma 4" --prompts "$data/$s.jsonl" --limit 30 --max-tokens 128 --draft "$d" --gamma 4
  done
done
echo "spec_suite: done"
