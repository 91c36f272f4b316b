#!/usr/bin/env bash
# Round traces (bench/traces/README.md) of drafters trained in this lease, recorded on the GPU
# machine right after train_suite.sh, so the 8B replay (load_suite.sh LOAD_DSPARK_TRACE /
# LOAD_MTP1_TRACE) can use them without bringing the exports back. The settings are the
# committed traces' (greedy, fixed policy, the first 4 prompts of gsm8k, humaneval, mbpp and the
# held-out chat slice, 128 tokens, batch 4), on the CUDA backend instead of the dev box's CPU.
#
#   bash scripts/device/record_traces.sh [TAG]     (TAG names the files, default "lease")
#
# Writes $OUT/smollm2_dspark_<TAG>_g7.jsonl and $OUT/smollm2_mtp1_<TAG>_g1.jsonl (copies in
# /tmp/dspark-traces for load_suite.sh in a later call of the same lease) and prints each
# trace's round count and tau. Needs the prebuilt binaries (EVAL_BUILD) or a build in build-gpu,
# the staged model, .stage/data, and the exports in DSPARK_DRAFTERS (/tmp/dspark-train/export).
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root" || exit 1
tag="${1:-lease}"
build="${EVAL_BUILD:-$root/build-gpu}"
model="${EVAL_MODEL:-/tmp/dspark-model/SmolLM2-135M-Instruct.Q4_1.gguf}"
drafters="${DSPARK_DRAFTERS:-/tmp/dspark-train/export}"
OUT="${OUT:-$root/build-traces-out}"
data="$root/.stage/data"
mkdir -p "$OUT" /tmp/dspark-traces
[ -n "${DSPARK_PREBUILT:-}" ] || source "$root/scripts/device/device_env.sh"
prompts="$data/gsm8k.jsonl,$data/humaneval.jsonl,$data/mbpp.jsonl,$data/chat_eval.jsonl"
rc=0
for spec in "dspark 7" "mtp1 1"; do
  set -- $spec
  kind=$1 gamma=$2
  [ -d "$drafters/$kind" ] || { echo "record_traces: no trained $kind in $drafters" >&2; rc=1; continue; }
  trace="/tmp/dspark-traces/smollm2_${kind}_${tag}_g${gamma}.jsonl"
  timeout 240 "$build/services/dspark" eval --device "${EVAL_DEVICE:-cuda}" --model "$model" --prompts "$prompts" \
    --limit 4 --max-tokens 128 --batch 4 --policy fixed --temperature 0 --threads 8 \
    --draft "$kind:$drafters/$kind" --gamma "$gamma" --record-rounds "$trace" > "/tmp/dspark-traces/$kind.log" 2>&1
  r=$?
  tail -3 "/tmp/dspark-traces/$kind.log"
  [ $r = 0 ] && [ -s "$trace" ] || { echo "record_traces: $kind failed (rc $r)" >&2; rc=1; continue; }
  cp "$trace" "$OUT/"
  python3 - "$trace" <<'PY'
import json, sys
rounds = accepted = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    for rd in r.get("rounds", []):
        rounds += 1
        accepted += rd.get("a", rd.get("accepted", 0))
print(f"record_traces: {sys.argv[1]}: {rounds} rounds, tau {1 + accepted / max(rounds, 1):.3f}")
PY
done
exit $rc
