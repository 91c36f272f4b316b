#!/usr/bin/env bash
# The load benchmark of issue 7 on the GPU machine (docs/scheduler.md, "Load benchmark"):
# closed-loop clients at concurrency 1..256 through one serving loop, for every verification
# policy and an MTP-1-like run, with bench/bench_load.
#
#   phase synthetic  an 8B shape (LOAD_SHAPE, default qwen3-8b) with random bf16 weights made
#                    on the host and uploaded; acceptance REPLAYED from the SmolLM2 traces in
#                    bench/traces (DSpark gamma 7 for none/fixed/threshold/scheduled/async,
#                    MTP-1 gamma 1 for the "mtp1" run), the draft pass charged as LOAD_DSPARK_LAYERS (default 2; MTP-1: 1)
#                    target layers on the target's KV; oracle misses reported per level
#   phase smollm2    SmolLM2-135M (staged by stage_model.sh; prompts carried in .stage/data):
#                    the same replay on the real model (the traces' own target), and, when
#                    trained drafters were carried to $DSPARK_DRAFTERS/{dspark,mtp1}, the real
#                    drafters at LOAD_TRAINED_CONCURRENCY (default 1,4): dspark on the GPU
#                    (models/drafters/cuda), mtp1 on the host CPU
#   plots            scripts/plot_load.py (when matplotlib is there) for the synthetic sweep;
#                    the matched-throughput tables (per-user speed at MTP-1's throughput) in load.md
#
# Calls (carry build-devdeps; for smollm2 also .stage/data):
#   bash scripts/device/load_suite.sh --build-in-background   # returns at once; the build runs on
#   bash scripts/device/load_suite.sh                         # waits for that build, then both phases
#   LOAD_PHASES=synthetic bash scripts/device/load_suite.sh   # one phase (synthetic | smollm2)
# Knobs: LOAD_SHAPE, LOAD_DSPARK_TRACE, LOAD_DSPARK_LAYERS, LOAD_MTP1_TRACE, LOAD_REPLAY_FEATURES (below), LOAD_SECONDS (window per level, default 3), LOAD_REQUESTS, LOAD_CONCURRENCY (default
# 1,4,16,64,128,256), LOAD_POLICIES, LOAD_DRAFT_SKIP_SYNTHETIC, LOAD_DRAFT_SKIP_TRAINED, LOAD_SPEC_GATE, LOAD_TRAINED_CONCURRENCY, LOAD_TRAINED_POLICIES (default
# fixed,scheduled), LOAD_SMOLLM2_REPLAY (0 skips the SmolLM2 replay sweep), DSPARK_DRAFTERS (default /tmp/dspark-train/export);
# LOAD_SOLO_PREFILL=1 and LOAD_FUSED_PREFILL=1 (A/B baselines, below); LOAD_WARMUP_WAVES (1: waves of
# C finished requests before a level's window; more put the gate's start-up before it);
# LOAD_BUILD=DIR LOAD_DEVICE=cpu LOAD_SHAPE=tiny: a smoke run of the script on a CPU box with
# an existing build (no build step).
# $OUT (at most 8 files): load_synthetic.jsonl, load_smollm2.jsonl, load.md, suite.log,
# synthetic_{throughput,per_user,tradeoff}.png.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root" || exit 1
build="${LOAD_BUILD:-$root/build-gpu}"
bg_log=/tmp/dspark-load-build.log
targets="bench_load"
if [ "${1:-}" = "--build-in-background" ]; then
  setsid nohup env DSPARK_BUILD_TARGETS="$targets" OUT=/tmp/dspark-load-build \
    bash "$root/scripts/device/gpu_suite.sh" --build-only > "$bg_log" 2>&1 < /dev/null &
  echo "load_suite: background build started ($bg_log)"
  exit 0
fi
OUT="${OUT:-$root/build-load-out}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/suite.log") 2>&1
start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start )) s"; }
phases="${LOAD_PHASES:-synthetic smollm2}"
shape="${LOAD_SHAPE:-qwen3-8b}"
secs="${LOAD_SECONDS:-3}"
conc="${LOAD_CONCURRENCY:-1,4,16,64,128,256}"
policies="${LOAD_POLICIES:-none,fixed,threshold,scheduled,async}"
model="${LOAD_MODEL:-/tmp/dspark-model/SmolLM2-135M-Instruct.Q4_1.gguf}"
drafters="${DSPARK_DRAFTERS:-/tmp/dspark-train/export}"
traces="$root/bench/traces"
# The replayed drafters: LOAD_DSPARK_TRACE charged as LOAD_DSPARK_LAYERS target layers per draft
# pass, and LOAD_MTP1_TRACE (charged as 1 layer). Defaults since 2026-12-07 (ninth session): the
# 2-layer DSpark and the MTP-1 of the r7 run (bench/traces/README.md); the 5-layer DSpark of the
# earlier sweeps is LOAD_DSPARK_TRACE=bench/traces/smollm2_dspark_g7.jsonl LOAD_DSPARK_LAYERS=5
# LOAD_MTP1_TRACE=bench/traces/smollm2_mtp1_g1.jsonl. A trace recorded by
# scripts/device/record_traces.sh in the same lease goes here with its drafter's depth.
# LOAD_REPLAY_FEATURES=F (default 0) makes both read F capture layers as the trained drafters do
# (DSpark's recipe reads 5, MTP-1 one): the target then captures them in every forward and
# copies them to the host, and the replay gathers the committed rows (replay_drafter.h).
# LOAD_REPLAY_FEATURES_ON=device keeps them on the GPU instead (features_on=device: the path of
# the GPU drafters with DSPARK_DEVICE_FEATURES=1).
dspark_replay="replay:${LOAD_DSPARK_TRACE:-$traces/smollm2_dspark2_g7.jsonl},layers=${LOAD_DSPARK_LAYERS:-2}"
mtp1_replay="replay:${LOAD_MTP1_TRACE:-$traces/smollm2_mtp1_r7_g1.jsonl},layers=1"
if [ "${LOAD_REPLAY_FEATURES:-0}" != 0 ]; then
  dspark_replay="$dspark_replay,features=$LOAD_REPLAY_FEATURES"
  mtp1_replay="$mtp1_replay,features=1"
  if [ "${LOAD_REPLAY_FEATURES_ON:-host}" = device ]; then
    dspark_replay="$dspark_replay,features_on=device"
    mtp1_replay="$mtp1_replay,features_on=device"
  fi
fi

if [ -z "${LOAD_BUILD:-}" ]; then
  for _ in $(seq 1 60); do pgrep -f "gpu_suite.sh --build-only" > /dev/null || break; sleep 5; done
  source "$root/scripts/device/device_env.sh"
  # Incremental: a no-op after the background build, a rebuild of what changed otherwise.
  DSPARK_BUILD_TARGETS="$targets" OUT=/tmp/dspark-load-fg bash scripts/device/gpu_suite.sh --build-only ||
    { tail -30 /tmp/dspark-load-fg/build.log; exit 1; }
fi
echo "load_suite: build ready after $(elapsed)"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1

# Common shape of every sweep: greedy, 32..64 new tokens per request, prompts of 32..64
# tokens (synthetic) admitted with 1024-token prefill chunks (so joins do not throttle the
# closed loop at 256 clients), a window of LOAD_SECONDS per level after a warm-up wave. The
# window runs its full LOAD_SECONDS at every level (LOAD_REQUESTS, default 100000, is the sample
# count that would end it sooner): with bench_load's own default of 2C samples a level at C = 1
# on SmolLM2 lasted 0.1 s, too short to see the speculation gate past its first window.
sweep() {  # output jsonl, then bench_load arguments
  local out="$1"; shift
  timeout "${LOAD_TIMEOUT:-420}" "$build/bench/bench_load" --device "${LOAD_DEVICE:-cuda}" --concurrency "$conc" --seconds "$secs" \
    --requests "${LOAD_REQUESTS:-100000}" --max-tokens 64 --min-tokens 32 --prefill-chunk 1024 --gamma 7 --threshold 0.5 \
    --warmup-waves "${LOAD_WARMUP_WAVES:-1}" --jsonl "$out" \
    --md /tmp/dspark-load-part.md "$@"
  local rc=$?
  echo "load_suite: bench_load $* rc=$rc after $(elapsed)"
  { echo; echo "### $(basename "$out" .jsonl): bench_load $*"; echo; cat /tmp/dspark-load-part.md 2>/dev/null; } >> "$OUT/load.md"
  return $rc
}
: > "$OUT/load.md"

# Draft skipping (models/drafters/skipping_drafter.h) around the policy runs' drafter, labelled
# "skip ...": LOAD_DRAFT_SKIP_SYNTHETIC / LOAD_DRAFT_SKIP_TRAINED = auto:COST (COST = drafter time
# per round over a verify step's; unset: no wrapper).
# The speculation gate (engine/spec/spec_gate.h) for the threshold/scheduled/async runs,
# labelled "gate ...": LOAD_SPEC_GATE = auto | N (unset: off).
skip_synth=(); skip_trained=(); pre_synth=""; pre_trained="trained "
[ -n "${LOAD_DRAFT_SKIP_SYNTHETIC:-}" ] && skip_synth=(--draft-skip "$LOAD_DRAFT_SKIP_SYNTHETIC") && pre_synth="skip "
[ -n "${LOAD_DRAFT_SKIP_TRAINED:-}" ] && skip_trained=(--draft-skip "$LOAD_DRAFT_SKIP_TRAINED") && pre_trained="trained skip "
gate=()
if [ -n "${LOAD_SPEC_GATE:-}" ]; then
  gate=(--spec-gate "$LOAD_SPEC_GATE"); pre_synth="${pre_synth}gate "; pre_trained="${pre_trained}gate "
fi

# LOAD_SOLO_PREFILL=1: first a plain-decoding sweep with one prefill forward per joining prompt
# (--shared-prefill off, the loop before 2026-12-06), labelled "solo-prefill none": the A/B
# baseline of the shared prefill forward on the same machine.
solo() {  # output jsonl, then the phase's model/prompt arguments
  local out="$1"; shift
  [ "${LOAD_SOLO_PREFILL:-0}" = 1 ] && sweep "$out" "$@" --policies none --shared-prefill off --fused-prefill off --label-prefix "solo-prefill "
  return 0
}

if [[ " $phases " == *" synthetic "* ]]; then
  : > "$OUT/load_synthetic.jsonl"
  solo "$OUT/load_synthetic.jsonl" --synthetic "$shape" --prompt-count 128 --prompt-tokens 64 --sps-profile "/tmp/dspark-sps-$shape.json"
  sweep "$OUT/load_synthetic.jsonl" --synthetic "$shape" --prompt-count 128 --prompt-tokens 64 \
    --sps-profile "/tmp/dspark-sps-$shape.json" --policies "$policies" \
    --draft "$dspark_replay" --mtp1 "$mtp1_replay" \
    "${skip_synth[@]}" "${gate[@]}" --label-prefix "$pre_synth"
  # LOAD_FUSED_PREFILL=1: the same runs (LOAD_FUSED_POLICIES, default none,async) with the prompt
  # chunks in a forward of their own (--fused-prefill off, the loop before 2026-12-06 fifth
  # session), labelled "unfused-prefill ...": the A/B baseline of the fused forward.
  [ "${LOAD_FUSED_PREFILL:-0}" = 1 ] && sweep "$OUT/load_synthetic.jsonl" --synthetic "$shape" --prompt-count 128 \
    --prompt-tokens 64 --sps-profile "/tmp/dspark-sps-$shape.json" --policies "${LOAD_FUSED_POLICIES:-none,async}" \
    --draft "$dspark_replay" "${skip_synth[@]}" "${gate[@]}" \
    --fused-prefill off --label-prefix "unfused-prefill $pre_synth"
  if python3 -c "import matplotlib" 2>/dev/null; then
    { echo; echo "### matched throughput (synthetic $shape, replayed acceptance)"; echo;
      python3 scripts/plot_load.py "$OUT/load_synthetic.jsonl" "$OUT/synthetic" \
        "$shape shape, synthetic weights, $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"; } >> "$OUT/load.md"
  else
    echo "load_suite: no matplotlib here; plot later: python3 scripts/plot_load.py load_synthetic.jsonl docs/plots/load_synthetic"
  fi
fi

if [[ " $phases " == *" smollm2 "* ]]; then
  : > "$OUT/load_smollm2.jsonl"
  if [ -f "$model" ] && [ -f "$root/.stage/data/mixed100.jsonl" ]; then
    [ "${LOAD_SMOLLM2_REPLAY:-1}" = 1 ] &&
      sweep "$OUT/load_smollm2.jsonl" --model "$model" --prompts "$root/.stage/data/mixed100.jsonl" --prompt-count 100 \
        --sps-profile /tmp/dspark-sps-smollm2.json --policies "$policies" \
        --draft "$dspark_replay" --mtp1 "$mtp1_replay"
    if [ -d "$drafters/dspark" ] && [ -d "$drafters/mtp1" ]; then
      conc="${LOAD_TRAINED_CONCURRENCY:-1,4}" solo "$OUT/load_smollm2.jsonl" --model "$model" --prompts "$root/.stage/data/mixed100.jsonl" \
        --prompt-count 32 --sps-profile /tmp/dspark-sps-smollm2.json
      conc="${LOAD_TRAINED_CONCURRENCY:-1,4}" LOAD_TIMEOUT="${LOAD_TRAINED_TIMEOUT:-150}" sweep "$OUT/load_smollm2.jsonl" --model "$model" --prompts "$root/.stage/data/mixed100.jsonl" \
        --prompt-count 32 --sps-profile /tmp/dspark-sps-smollm2.json --policies "${LOAD_TRAINED_POLICIES:-fixed,scheduled}" \
        --draft "dspark:$drafters/dspark" --mtp1 "mtp1:$drafters/mtp1" "${skip_trained[@]}" "${gate[@]}" --label-prefix "$pre_trained"
    else
      echo "load_suite: no trained drafters in $drafters: real-drafter runs skipped"
    fi
    if python3 -c "import matplotlib" 2>/dev/null; then
      { echo; echo "### matched throughput (SmolLM2)"; echo;
        python3 scripts/plot_load.py "$OUT/load_smollm2.jsonl" /tmp/dspark-load-smollm2 "SmolLM2-135M"; } >> "$OUT/load.md"
    fi
  else
    echo "load_suite: SmolLM2 not staged ($model) or .stage/data not carried: smollm2 phase skipped"
  fi
fi
# The step-time profiles the scheduled/async policies and the gate priced plain decoding with.
for f in /tmp/dspark-sps-*.json; do
  [ -f "$f" ] && python3 - "$f" >> "$OUT/load.md" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
print(f"\n### step profile {sys.argv[1]} ({p['key']}), context {p['context_lengths']}\n")
# Version 2: a row per sequence count S (B <= S: one token a sequence; B > S: over S sequences).
rows = p.get("rows") or [{"sequences": 0, "batch_tokens": p["batch_tokens"], "step_s": [p["step_s"]]}]
for c, ctx in enumerate(p["context_lengths"]):
    print(f"| S (ctx {ctx}) | B: ms |")
    print("|---|---|")
    for r in rows:
        pts = ", ".join(f"{b}: {1e3 * t:.2f}" for b, t in zip(r["batch_tokens"], r["step_s"][c]))
        print(f"| {r['sequences']} | {pts} |")
PY
done
cat "$OUT/load.md"
echo "load_suite: done after $(elapsed)"
