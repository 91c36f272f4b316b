#!/usr/bin/env bash
# Trains several variants of ONE drafter side by side on the GPU machine, each at the data and
# budget of an earlier run of all four drafters, then evaluates them with the C++ runtime: how
# the recipe's choices (the Markov head's type and rank, ...) move acceptance, without
# retraining the baselines. Each variant is a train_suite.sh run in the background with its own
# DSPARK_TRAIN_DIR (/tmp/dspark-var/<name>), TRAIN_KINDS=<kind>, the earlier run's examples
# (TRAIN_EXAMPLES_GZ) and the same seed, batch, anchors and steps, so it sees the batches and
# anchors the earlier run's drafter saw (train_suite.sh's header says why).
#
#   bash scripts/device/train_variants.sh start "v256:vanilla:256 rnn64:rnn:64"   name:type:rank[:layers] ...
#     (layers: the backbone's depth, TRAIN_N_LAYER, default 5; the method's Fig. 3 finds a
#     2-layer DSpark above a 5-layer DFlash, and its draft pass costs 2/5 as much under load)
#   bash scripts/device/train_variants.sh wait [SECONDS]    until every variant ends (default 540)
#   bash scripts/device/train_variants.sh eval              dspark eval of every finished variant
#   bash scripts/device/train_variants.sh return NAME [MAX] MAX (3) export pieces of NAME to $OUT
#
# The variants are host-bound (one Python thread each, see docs/training.md), so they run
# concurrently; `start` returns at once and the machine keeps them running while calls follow
# back to back. Knobs: VAR_KIND (dspark), TRAIN_EXAMPLES_GZ (required for start), the
# train_suite.sh knobs (TRAIN_STEPS, TRAIN_BATCH, ...; defaults are the recipe's), EVAL_BUILD
# (/tmp/dspark-src/build-gpu), EVAL_LIMIT (16), EVAL_MAX_TOKENS (128), EVAL_PARALLEL (4).
# $OUT receives <name>_train_log.json, <name>_calibration.json, <name>_suite.log (wait) and
# eval_variants.jsonl (eval: one `dspark eval --json` object per variant and temperature,
# labelled "<name> T<t>").
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
base=/tmp/dspark-var
kind="${VAR_KIND:-dspark}"
mkdir -p "$base"
: "${OUT:=$root/build-var-out}"
mkdir -p "$OUT"

variant_names() { ls -d "$base"/*/ 2>/dev/null | xargs -r -n1 basename; }
running() { pgrep -f "train_variants_run=$1 " >/dev/null; }

case "${1:-}" in
start)
  [ -n "${TRAIN_EXAMPLES_GZ:-}" ] && [ -f "$TRAIN_EXAMPLES_GZ" ] ||
    { echo "train_variants: TRAIN_EXAMPLES_GZ must name an earlier run's examples.jsonl.gz" >&2; exit 2; }
  for spec in ${2:?"name:type:rank[:layers] ..."}; do
    IFS=: read -r name mtype rank layers <<< "$spec"
    [ -n "$name" ] && [ -n "$mtype" ] && [ -n "$rank" ] || { echo "train_variants: bad spec '$spec'" >&2; exit 2; }
    layers="${layers:-${TRAIN_N_LAYER:-5}}"
    [[ "$layers" =~ ^[1-9][0-9]*$ ]] || { echo "train_variants: bad layer count in '$spec'" >&2; exit 2; }
    dir="$base/$name"
    rm -rf "$dir" && mkdir -p "$dir/out"
    # the marker argument lets `wait` find the process; a long deadline: no call bounds it
    setsid nohup env DSPARK_TRAIN_DIR="$dir" OUT="$dir/out" TRAIN_KINDS="$kind" TRAIN_MARKOV_TYPE="$mtype" \
      TRAIN_MARKOV_RANK="$rank" TRAIN_N_LAYER="$layers" TRAIN_DEADLINE_S="${TRAIN_DEADLINE_S:-1500}" \
      bash -c 'bash "$0" > "$1/run.log" 2>&1; echo "exit $?" >> "$1/run.log"' \
      "$root/scripts/device/train_suite.sh" "$dir" "train_variants_run=$name " < /dev/null > /dev/null 2>&1 &
    echo "train_variants: started $name ($kind, $layers layers, markov $mtype rank $rank) in $dir"
  done
  ;;
wait)
  limit="${2:-540}"
  t0=$(date +%s)
  while :; do
    busy=0
    for n in $(variant_names); do running "$n" && busy=1; done
    [ $busy = 0 ] && break
    [ $(( $(date +%s) - t0 )) -ge "$limit" ] && break
    sleep 10
  done
  for n in $(variant_names); do
    d="$base/$n"
    state=done; running "$n" && state=running
    echo "== $n: $state; $(grep -h 'step \|held-out\|exit' "$d/run.log" 2>/dev/null | tail -3 | tr '\n' ' ')"
    for f in train_log.json calibration.json suite.log; do [ -f "$d/out/$f" ] && cp "$d/out/$f" "$OUT/${n}_$f"; done
  done
  ;;
eval)
  build="${EVAL_BUILD:-/tmp/dspark-src/build-gpu}"
  model=/tmp/dspark-model/SmolLM2-135M-Instruct.Q4_1.gguf
  data="$root/.stage/data"
  [ -x "$build/services/dspark" ] || { echo "train_variants: no $build/services/dspark" >&2; exit 1; }
  source "$root/scripts/device/device_env.sh"
  source "$root/scripts/device/eval_lib.sh"
  prompts="$data/gsm8k.jsonl,$data/math500.jsonl,$data/humaneval.jsonl,$data/mbpp.jsonl,$data/chat_eval.jsonl"
  pids=()
  for n in $(variant_names); do
    [ -f "$base/$n/export/$kind/drafter.json" ] || { echo "train_variants: $n has no export"; continue; }
    for temp in 0 1; do
      extra=""; [ "$temp" = 0 ] && extra="--check-lossless"
      ( labelled_eval "$n T$temp" 400 "$OUT/eval_errors.log" "$build/services/dspark" eval --device cuda \
          --model "$model" --prompts "$prompts" --limit "${EVAL_LIMIT:-16}" --max-tokens "${EVAL_MAX_TOKENS:-128}" \
          --gamma 7 --threads 4 --json --draft "$kind:$base/$n/export/$kind" --temperature "$temp" $extra
      ) > "$base/eval_${n}_$temp.json" &
      pids+=($!)
      if [ ${#pids[@]} -ge "${EVAL_PARALLEL:-4}" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
    done
  done
  [ ${#pids[@]} -gt 0 ] && wait "${pids[@]}"
  cat "$base"/eval_*.json > "$OUT/eval_variants.jsonl" 2>/dev/null
  eval_summary "$OUT/eval_variants.jsonl"
  ;;
return)
  n="${2:?variant name}"
  d="$base/$n"
  [ -d "$d/parts" ] || { echo "train_variants: $n has no parts" >&2; exit 1; }
  DSPARK_TRAIN_DIR="$d" bash "$root/scripts/device/return_parts.sh" "${3:-3}"
  ;;
*)
  sed -n '2,22p' "$0"; exit 2 ;;
esac
