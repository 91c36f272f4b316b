#!/usr/bin/env bash
# Measures the drafter training step on the GPU machine for a few batch shapes and picks the
# one that trains on the most sequences per second within the memory limit; writes the choice
# to $work/probe.env (TRAIN_BATCH, TRAIN_ANCHORS, TRAIN_S_PER_STEP), which train_suite.sh reads
# when the caller does not set them. Needs no model (a random-weight target of SmolLM2's
# shape, ragged synthetic examples: training/bench_step.py). Results: $OUT/train_probe.jsonl
# and the profile of the baseline shape in $OUT/train_probe.log.
#   bash scripts/device/train_probe.sh            (about 2-3 minutes on an H100)
# Knobs: PROBE_SHAPES ("B:N ..." batch:anchors), PROBE_STEPS, PROBE_MAX_GIB, TRAIN_N_LAYER (5:
# the block drafters' layers, as train_suite.sh).
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
OUT="${OUT:-$root/build-train-out}"
work="${DSPARK_TRAIN_DIR:-/tmp/dspark-train}"
mkdir -p "$OUT" "$work"
exec > >(tee -a "$OUT/train_probe.log") 2>&1
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
shapes="${PROBE_SHAPES:-8:64 16:128 32:128 48:128 64:128}"
layers="${TRAIN_N_LAYER:-5}"
steps="${PROBE_STEPS:-8}"
max_gib="${PROBE_MAX_GIB:-60}"
json="$OUT/train_probe.jsonl"
: > "$json"
# the baseline shape once under the profiler: GPU busy time against wall time per step
python3 training/bench_step.py --batch 8 --anchors 64 --n-layer "$layers" --steps 4 --warmup 2 --profile || true
# the previous recipe's shape and settings (2 layers, batch 8, no expandable segments) for reference
PYTORCH_CUDA_ALLOC_CONF= python3 training/bench_step.py --batch 8 --anchors 64 --n-layer 2 --steps "$steps" \
  --warmup 2 --json "$json"
for s in $shapes; do
  python3 training/bench_step.py --batch "${s%%:*}" --anchors "${s##*:}" --n-layer "$layers" --steps "$steps" \
    --warmup 2 --json "$json"
done
python3 - "$json" "$max_gib" "$work/probe.env" "$layers" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
layers = int(sys.argv[4])
ok = [r for r in rows if "error" not in r and r["n_layer"] == layers and r["peak_gpu_gib"] is not None
      and r["peak_gpu_gib"] <= float(sys.argv[2])]
if not ok:
    sys.exit("train_probe: no shape ran within the memory limit")
best = max(ok, key=lambda r: (r["seq_per_s"], r["anchors"]))
for r in rows:
    print("train_probe:", {k: r.get(k) for k in ("n_layer", "batch", "anchors", "alloc_conf", "s_per_step", "seq_per_s",
                                                 "peak_gpu_gib", "error")})
print(f"train_probe: chose batch {best['batch']} anchors {best['anchors']} ({best['s_per_step']} s/step)")
with open(sys.argv[3], "w") as f:
    f.write(f"TRAIN_BATCH={best['batch']}\nTRAIN_ANCHORS={best['anchors']}\nTRAIN_S_PER_STEP={best['s_per_step']}\n")
PY
