#!/usr/bin/env bash
# Serving-level benchmarks on the GPU machine (model staged by stage_model.sh, prompts carried
# in .stage/data, build-devdeps carried): builds dspark, bench_actors and bench_model_decode
# with CUDA, then
#   1. bench_model_decode: SmolLM2 decode tok/s at batch 1, 8, 32, 128 (context 512) against
#      the bandwidth floor (BANDWIDTH_GBS, default the H100 copy bandwidth bench_cuda measured);
#   2. bench_actors: the actor runtime's messaging overhead on a batch-1 decode step;
#   3. bench-spec with the n-gram drafter at batch 8 under each verify policy (fixed, scheduled,
#      async): tokens/s and tau against plain decoding in the same run.
# Results in $OUT: model_decode.md/.json, bench_actors.txt, policies.jsonl, bench_suite.log.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
OUT="${OUT:-$root/build-bench-out}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/bench_suite.log") 2>&1
start=$(date +%s)
build="$root/build-gpu"
model="${BENCH_MODEL:-/tmp/dspark-model/SmolLM2-135M-Instruct.Q4_1.gguf}"
[ -f "$model" ] || { echo "bench_suite: model not staged"; exit 1; }
DSPARK_BUILD_TARGETS="dspark bench_actors bench_model_decode" OUT=/tmp/dspark-bench-build \
  bash scripts/device/gpu_suite.sh --build-only || { cat /tmp/dspark-bench-build/summary.txt; exit 1; }
source scripts/device/device_env.sh
echo "bench_suite: built after $(( $(date +%s) - start )) s"

timeout 150 "$build/bench/bench_model_decode" --model "$model" --device cuda --batches 1,8,32,128 --ctx 512 \
  --steps 32 --bandwidth-gbs "${BANDWIDTH_GBS:-2983}" | tee "$OUT/model_decode.md"
timeout 150 "$build/bench/bench_model_decode" --model "$model" --device cuda --batches 1,8,32,128 --ctx 512 \
  --steps 32 --bandwidth-gbs "${BANDWIDTH_GBS:-2983}" --json > "$OUT/model_decode.json"
echo "bench_suite: model_decode done after $(( $(date +%s) - start )) s"

timeout 120 "$build/bench/bench_actors" --model "$model" --device cuda --tokens 128 --reps 7 > "$OUT/bench_actors.txt" 2>&1
echo "bench_suite: bench_actors rc=$? after $(( $(date +%s) - start )) s"; tail -3 "$OUT/bench_actors.txt"

: > "$OUT/policies.jsonl"
for pol in fixed scheduled async; do
  line=$(timeout 150 "$build/services/dspark" bench-spec --device cuda --model "$model" --prompts .stage/data/mixed100.jsonl \
    --limit 32 --max-tokens 64 --batch 8 --draft ngram --gamma 4 --policy "$pol" --sps-profile /tmp/sps-bench.json --json 2>>"$OUT/bench_suite.log")
  echo "$line" | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); d['label']='ngram batch 8 $pol'; print(json.dumps(d))" >> "$OUT/policies.jsonl" ||
    echo "{\"label\": \"$pol\", \"error\": true}" >> "$OUT/policies.jsonl"
done
python3 - "$OUT/policies.jsonl" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    if d.get("error"): print(d["label"], "ERROR"); continue
    print(d["label"], "tau %.3f" % d["acceptance_length"], "spec %.0f tok/s" % d["spec_tokens_per_s"],
          "plain %.0f tok/s" % d["plain_tokens_per_s"], "speedup %.2f" % d["speedup"], "identical %d/%d" % (d["identical_outputs"], d["prompts"]))
PY
echo "bench_suite: done after $(( $(date +%s) - start )) s"
