#!/usr/bin/env bash
# Trains the four drafters (dspark, dflash, eagle3, mtp1) for the default model on the GPU
# machine, each call <= 9.5 minutes wall (the recipe's 1,400 steps take two back-to-back calls
# on one lease: the second resumes the checkpoint), with equal data and equal optimizer steps
# (they train side by side on the same batches, one target forward per batch): regenerates the
# responses (or reuses /tmp/dspark-train/examples.jsonl from an earlier call), trains, evaluates on the
# held-out examples, calibrates the dspark confidence head (STS, ECE before/after) and exports
# each drafter in the runtime's folder format (bf16, shards <= 15 MiB).
#
# Before it (see docs/training.md): the model staged to /tmp/dspark-model/ with
# scripts/device/stage_model.sh, and here once:
#   python3 training/data/prepare_prompts.py --wheel <sharegpt wheel> --out .stage/data
# Then, on the GPU machine, with carry [".whl", ".stage/data"]:
#   bash scripts/device/train_suite.sh
# $OUT receives (at most 8 files, each <= 16 MiB):
#   train_log.json         losses, accept-rate@k, tau_probabilistic per drafter over steps,
#                          held-out evaluation, wall times, export sizes
#   calibration.json       STS temperatures and per-position ECE before/after
#   drafters.tar.part-NN   tar of export/<kind>/ + examples.jsonl.gz, cut at 15 MiB, three per
#                          call (TRAIN_RETURN=1, then scripts/device/return_parts.sh):
#                          cat drafters.tar.part-* | tar -x -C <dir>
#   suite.log              the run's output
# If the call is cut off (or stops at its deadline), the trainer checkpoint in
# /tmp/dspark-train/ckpt.pt is resumed by the next call while the machine is still warm.
#
# Knobs: TRAIN_STEPS (1400), TRAIN_SEED, TRAIN_DEADLINE_S, TRAIN_BATCH (32), TRAIN_ANCHORS (128),
# TRAIN_AMP (bf16|off), TRAIN_COMPILE (0|1), TRAIN_N_PROMPTS (8150), TRAIN_REGEN_BATCH (1024),
# TRAIN_REGEN_S (330: both passes), TRAIN_N_LAYER (5: layers of dspark/dflash, the paper's Table 1 setting),
# TRAIN_MARKOV_RANK (256, the paper's default; 64 before 2026-12-06 fifth session; the smoke
# run keeps 64), TRAIN_MARKOV_TYPE (vanilla|rnn), TRAIN_RETURN (0|1), DSPARK_INIT_FROM
# (below), TRAIN_KINDS (dspark,dflash,eagle3,mtp1), TRAIN_EXAMPLES_GZ (an earlier run's
# examples.jsonl.gz: skips the regeneration), TRAIN_EXTRA_TEMPERATURES (1.0 on the GPU, empty
# for the smoke run: one more response per prompt sampled at each listed temperature;
# TRAIN_REGEN_S bounds all passes together),
# TRAIN_RETURN_EXAMPLES (0|1: examples.jsonl.gz into $OUT), TRAIN_BASE_EXAMPLES_GZ (with TRAIN_EXTRA_TEMPERATURES: an earlier run's examples as the first
# passes, only the extra passes regenerated).
# A variant of one drafter at the same data and budget as an earlier run of all four (e.g. the
# Markov rank): TRAIN_KINDS=dspark, TRAIN_EXAMPLES_GZ=<that run's examples>, the same seed,
# batch, anchors and steps, and its own DSPARK_TRAIN_DIR. Batches (batch_indices) and anchors
# (StepPlan) depend only on the seed, the step and the examples, and each drafter's initial
# weights on the seed and its index in TRAIN_KINDS (dspark is first), so it sees what the
# earlier run's dspark saw.
# Planned over several calls: after scripts/device/train_probe.sh (which writes
# $work/probe.env: the batch shape with the most sequences per second and its s/step), the
# first call takes TRAIN_BATCH/TRAIN_ANCHORS from it and, with TRAIN_TOTAL_S (the training
# seconds all calls together will give), sets TRAIN_STEPS = TRAIN_TOTAL_S / s_per_step, so
# the cosine schedule ends about when the last call does. The plan is kept in $work/plan.env
# and every resuming call uses it (a checkpoint only resumes with the same shape and steps).
# Locally (CPU): bash scripts/device/train_suite.sh --smoke   (a few steps, tiny data; uses the
# default model when .models/ has it, else a tiny random target).
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
start=$(date +%s)
smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1
OUT="${OUT:-$root/build-train-out}"
mkdir -p "$OUT"
work="${DSPARK_TRAIN_DIR:-/tmp/dspark-train}"
[ $smoke = 1 ] && work="$root/build-train-smoke"
mkdir -p "$work"
exec > >(tee -a "$OUT/suite.log") 2>&1
echo "train_suite: start $(date -u +%FT%TZ), OUT=$OUT work=$work smoke=$smoke"
# varying batch shapes fragment the caching allocator; expandable segments avoid the
# cudaMalloc/cudaFree churn (and the device syncs of cudaFree) that fragmentation causes
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
if [ $smoke = 0 ]; then
  if [ -f "$work/ckpt.pt" ] && [ -f "$work/plan.env" ]; then
    . "$work/plan.env"          # resuming: the checkpoint's shape and step count
  else
    if [ -f "$work/probe.env" ]; then
      probe_batch=$(sed -n 's/^TRAIN_BATCH=//p' "$work/probe.env")
      probe_anchors=$(sed -n 's/^TRAIN_ANCHORS=//p' "$work/probe.env")
      probe_sps=$(sed -n 's/^TRAIN_S_PER_STEP=//p' "$work/probe.env")
      TRAIN_BATCH="${TRAIN_BATCH:-$probe_batch}"
      TRAIN_ANCHORS="${TRAIN_ANCHORS:-$probe_anchors}"
      if [ -z "${TRAIN_STEPS:-}" ] && [ -n "${TRAIN_TOTAL_S:-}" ]; then
        TRAIN_STEPS=$(python3 -c "print(max(20, int($TRAIN_TOTAL_S / $probe_sps)))")
      fi
    fi
    printf 'TRAIN_BATCH=%s\nTRAIN_ANCHORS=%s\nTRAIN_STEPS=%s\nTRAIN_N_LAYER=%s\nTRAIN_MARKOV_RANK=%s\nTRAIN_MARKOV_TYPE=%s\nTRAIN_KINDS=%s\n' \
      "${TRAIN_BATCH:-32}" "${TRAIN_ANCHORS:-128}" "${TRAIN_STEPS:-1400}" "${TRAIN_N_LAYER:-5}" \
      "${TRAIN_MARKOV_RANK:-256}" "${TRAIN_MARKOV_TYPE:-vanilla}" "${TRAIN_KINDS:-dspark,dflash,eagle3,mtp1}" > "$work/plan.env"
  fi
  echo "train_suite: plan: $(tr '\n' ' ' < "$work/plan.env")"
fi

# transformers' GGUF loader needs gguf (and, in recent versions, accelerate + psutil): install
# the wheels carried in .whl/ when the machine lacks them (it has no package registry)
for mod in gguf psutil accelerate; do
  python3 -c "import $mod" 2>/dev/null && continue
  whl=$(ls .whl/"$mod"-*.whl 2>/dev/null | head -1)
  if [ -n "$whl" ]; then python3 -m pip install -q --no-deps --no-index "$whl" || exit 1
  else echo "train_suite: python module $mod missing and no .whl/$mod-*.whl carried" >&2; exit 1; fi
done

model=/tmp/dspark-model/SmolLM2-135M-Instruct.Q4_1.gguf
[ $smoke = 1 ] && model="$root/.models/SmolLM2-135M-Instruct.Q4_1.gguf"
prompts=.stage/data/train_prompts.jsonl
if [ $smoke = 1 ]; then
  target="$model"; [ -f "$model" ] || target=tiny
  rm -rf "$work"/*
  args=(--target "$target" --n-prompts 24 --max-new 24 --regen-batch 12 --holdout 8 --max-len 128
        --steps 4 --batch 2 --anchors 8 --log-every 1 --ckpt-every 2 --markov-rank "${TRAIN_MARKOV_RANK:-64}")
  [ -f "$prompts" ] || prompts=training/data/chat_eval.jsonl   # smoke only: any prompts do
else
  [ -f "$model" ] || { echo "train_suite: $model missing: stage it first (scripts/device/stage_model.sh)" >&2; exit 1; }
  [ -f "$prompts" ] || [ -f "$work/examples.jsonl" ] || {
    echo "train_suite: carry .stage/data (training/data/prepare_prompts.py)" >&2; exit 1; }
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  # regeneration stops after TRAIN_REGEN_S; training stops 510 s after the start of this script,
  # leaving ~60 s for the held-out evaluation, calibration, export and packing
  args=(--target "$model" --n-prompts "${TRAIN_N_PROMPTS:-8150}" --max-new 256
        --regen-batch "${TRAIN_REGEN_BATCH:-1024}" --regen-time-limit "${TRAIN_REGEN_S:-330}"
        --holdout 256 --max-len 640 --steps "${TRAIN_STEPS:-1400}" --batch "${TRAIN_BATCH:-32}"
        --anchors "${TRAIN_ANCHORS:-128}" --n-layer "${TRAIN_N_LAYER:-5}" --markov-rank "${TRAIN_MARKOV_RANK:-256}"
        --log-every 20 --ckpt-every 200 --deadline $((start + ${TRAIN_DEADLINE_S:-510})) --seed "${TRAIN_SEED:-42}"
        --amp "${TRAIN_AMP:-bf16}")
  # TRAIN_COMPILE=1: torch.compile the drafters and loss kernels (compiles during the first
  # steps, counted in the training time; see docs/training.md "Training throughput")
  [ "${TRAIN_COMPILE:-0}" = 1 ] && args+=(--compile)
fi
# the recipe's choices both runs share; the GPU run adds a temperature-1 response per prompt by
# default (2026-12-06 sixth session: T = 1 macro tau +6.7% for dspark, see docs/training.md);
# TRAIN_EXTRA_TEMPERATURES= (empty) turns it off
[ $smoke = 0 ] && : "${TRAIN_EXTRA_TEMPERATURES=1.0}"
args+=(--kinds "${TRAIN_KINDS:-dspark,dflash,eagle3,mtp1}" --markov-type "${TRAIN_MARKOV_TYPE:-vanilla}"
       --extra-temperatures "${TRAIN_EXTRA_TEMPERATURES:-}")
# TRAIN_BASE_EXAMPLES_GZ: an earlier run's examples.jsonl.gz stands in for its passes, so only
# the extra passes are regenerated (~160 s of device time saved per pass)
[ -n "${TRAIN_BASE_EXAMPLES_GZ:-}" ] && args+=(--base-examples "$TRAIN_BASE_EXAMPLES_GZ")
# Continuing an earlier lease's training: carry its exports (and examples.jsonl.gz, which skips
# the regeneration) and point DSPARK_INIT_FROM at them; the drafters warm-start from those
# weights with a fresh optimizer (train.py --init-from), and their drafter.json counts the
# steps of both runs.
if [ -n "${TRAIN_EXAMPLES_GZ:-}" ] && [ ! -f "$work/examples.jsonl" ]; then
  gunzip -c "$TRAIN_EXAMPLES_GZ" > "$work/examples.jsonl" || exit 1
fi
init=()
if [ -n "${DSPARK_INIT_FROM:-}" ] && [ ! -f "$work/ckpt.pt" ]; then
  init=(--init-from "$DSPARK_INIT_FROM")
  [ -f "$work/examples.jsonl" ] || [ ! -f "$DSPARK_INIT_FROM/examples.jsonl.gz" ] ||
    gunzip -c "$DSPARK_INIT_FROM/examples.jsonl.gz" > "$work/examples.jsonl"
fi
python3 training/train.py "${args[@]}" "${init[@]}" --prompts "$prompts" --examples "$work/examples.jsonl" \
  --ckpt "$work/ckpt.pt" --out "$work/export" --log-json "$OUT/train_log.json"
rc=$?
echo "train_suite: train.py exit $rc after $(( $(date +%s) - start )) s (3 = stopped at the deadline, resumable)"
[ -f "$OUT/train_log.json" ] || exit 1
python3 - "$OUT/train_log.json" "$OUT/calibration.json" <<'PY'
import json, sys
log = json.load(open(sys.argv[1]))
cal = log["eval_final"].get("calibration")
json.dump({"calibration": cal, "steps_done": log["steps_done"], "complete": log["complete"]},
          open(sys.argv[2], "w"), indent=1)
for k, v in log["exports"].items():
    print(f"train_suite: {k}: {sum(v.values()) / 2**20:.1f} MiB in {len(v)} files")
hist = log["history"]
if hist and log["steps_done"]:
    # train_wall_s counts this call only, while the history spans the resumed calls too (its
    # wall_s restarts at each resume): the steps of this call start after the last restart
    first = 0
    for i in range(1, len(hist)):
        if hist[i]["wall_s"] < hist[i - 1]["wall_s"]:
            first = hist[i - 1]["step"]
    n = log["steps_done"] - first
    print(f"train_suite: steps {first + 1}-{log['steps_done']} ({n}) in {log['train_wall_s']} s of training: "
          f"{log['train_wall_s'] / max(n, 1):.3f} s/step (batch {log['args']['batch']}, "
          f"peak GPU memory {hist[-1].get('peak_gpu_gib', '?')} GiB)")
PY
gzip -c "$work/examples.jsonl" > "$work/export/examples.jsonl.gz"
# the exports (5-layer block drafters: ~110 MiB) are more than one call may bring back (8 files,
# 64 MiB): the parts stay in $work/parts and scripts/device/return_parts.sh moves up to three
# per call into $OUT (TRAIN_RETURN=1 here, or any later call while the machine is warm)
rm -rf "$work/parts" && mkdir -p "$work/parts"
tar -C "$work" -cf - export | split -b 15M -d -a 2 - "$work/parts/drafters.tar.part-"
ls -la "$work/parts"
[ "${TRAIN_RETURN:-0}" = 1 ] && bash scripts/device/return_parts.sh
# TRAIN_RETURN_EXAMPLES=1: the regenerated responses come back (one file <= 16 MiB), so a later
# lease can carry them as TRAIN_EXAMPLES_GZ and skip the regeneration (~220 s of device time)
if [ "${TRAIN_RETURN_EXAMPLES:-0}" = 1 ]; then
  size=$(stat -c %s "$work/export/examples.jsonl.gz")
  if [ "$size" -le $((16 * 1024 * 1024)) ]; then cp "$work/export/examples.jsonl.gz" "$OUT/"
  else echo "train_suite: examples.jsonl.gz is $size bytes, over 16 MiB: not returned"; fi
fi
ls -la "$OUT"
echo "train_suite: done in $(( $(date +%s) - start )) s"
exit $rc
