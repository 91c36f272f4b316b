#!/usr/bin/env bash
# The load benchmark on this machine's CPU (no GPU needed): SmolLM2-135M with replayed DSpark
# acceptance at C = 4 and 16, plain / scheduled / plain again and MTP-1, three sweeps: the
# step profile's rows, DSPARK_SPS_ONE_CURVE=1 (the one-curve pricing), and the rows again.
# What ran on 2026-12-08 (docs/benchmarks.md, seventeenth session), about 12 minutes.
#   bash scripts/cpu_load_ab.sh [OUT_DIR]     (default build-cpu-load; BUILD=build-cuda)
# Needs the model (scripts/fetch_model.sh) and .stage/data/mixed100.jsonl (the benchmark
# prompts staged from ../shared/data; see docs/gpu-workflow.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="${1:-build-cpu-load}"
build="${BUILD:-build-cuda}"
mkdir -p "$out"
rm -f "$out/sps-smollm2.json"  # the first sweep profiles, the others reuse it
run() {  # label, then VAR=VALUE settings
  local label="$1"; shift
  env "$@" "$build/bench/bench_load" --device cpu --threads 2 --model .models/SmolLM2-135M-Instruct.Q4_1.gguf \
    --prompts .stage/data/mixed100.jsonl --prompt-count 100 --concurrency 4,16 --seconds 10 --requests 100000 \
    --max-tokens 64 --min-tokens 32 --prefill-chunk 1024 --gamma 7 --warmup-waves 1 \
    --policies none,scheduled,none --draft replay:bench/traces/smollm2_dspark2_g7.jsonl,layers=2 \
    --mtp1 replay:bench/traces/smollm2_mtp1_r7_g1.jsonl,layers=1 \
    --spec-gate auto --draft-skip auto --sps-profile "$out/sps-smollm2.json" \
    --jsonl "$out/load_$label.jsonl" --md "$out/load_$label.md" --label-prefix "$label "
}
run rows
run onecurve DSPARK_SPS_ONE_CURVE=1
run rows2
