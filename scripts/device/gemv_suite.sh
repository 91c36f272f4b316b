#!/usr/bin/env bash
# The GEMV A/B on the GPU machine: the SIMT kernel (gemv.cu) against the tensor-core one
# (gemv_mma.cu), which gemv_bf16 uses when DSPARK_GEMV=mma. One call, carrying build-devdeps:
#   1. builds test_cuda, bench_cuda and bench_load (build-gpu, 16 jobs),
#   2. runs every CUDA test with DSPARK_GEMV=mma (the GEMV tests call both kernels directly;
#      the backend, drafter and batch-invariance tests then run on the mma kernel; the SmolLM2
#      golden tests too when the model was staged first),
#   3. bench_cuda --quick on GEMV_MODELS (default qwen3-8b; synthetic bf16 weights) once per
#      kernel: the GEMV table (SIMT, mma and cuBLASLt per shape and token count), decode at
#      batch 1 and 8, and the verify curve (1..32 new tokens, context 2048) that
#      scripts/project_speedup.py reads.
#   4. with GEMV_LOAD_BUDGET_S=N (seconds since the start this call may use in all): the synthetic
#      load sweep (scripts/device/load_suite.sh with the caller's LOAD_* settings) on
#      GEMV_LOAD_KERNEL (default simt, the default kernel since the 2026-12-07 A/B; mma only
#      when its tests passed), cut off at that budget.
# Knobs for a short call: GEMV_TARGETS (what to build), GEMV_TEST_FILTER (a gtest filter),
# GEMV_MODELS, GEMV_TEST_TIMEOUT, GEMV_BENCH_TIMEOUT; GEMV_VARIANTS (default "simt mma"; mma@N
# sets the mma kernel's prefetch depth DSPARK_MMA_PREFETCH=N, simt@N the SIMT kernel's rows per
# warp for 3-8 tokens DSPARK_GEMV_ROWS=N), GEMV_TEST_PREFETCH (16: the
# depth the tests run with), GEMV_LOAD_PREFETCH (the load sweep's depth on mma; auto: the variant
# with the fastest batch-1 decode step).
# $OUT (8 files at most): bench_ab.md (every variant's tables), bench_<variant>.json, suite.log
# (with the test summary), and with step 4 load_synthetic.jsonl, load.md.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root" || exit 1
OUT="${OUT:-$root/build-gemv-out}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/suite.log") 2>&1
start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start )) s"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1
# DSPARK_PREBUILT (eval "$(bash scripts/device/prebuilt.sh unpack)"): carried binaries, no build
if [ -n "${DSPARK_PREBUILT:-}" ]; then
  build="$DSPARK_PREBUILT"
else
  DSPARK_BUILD_TARGETS="${GEMV_TARGETS:-test_cuda bench_cuda bench_load}" OUT=/tmp/dspark-gemv-build \
    bash scripts/device/gpu_suite.sh --build-only > /tmp/dspark-gemv-build.log 2>&1 ||
    { tail -40 /tmp/dspark-gemv-build.log; exit 1; }
  build="$root/build-gpu"
fi
echo "gemv_suite: binaries ready after $(elapsed) ($build)"
# the SmolLM2 golden and end-to-end tests run when the model was staged (stage_model.sh)
model=/tmp/dspark-model/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] && export DSPARK_MODEL="$model"
# the deepest prefetch of the variants runs the tests: it must stay in bounds for every shape
DSPARK_GEMV=mma DSPARK_MMA_PREFETCH="${GEMV_TEST_PREFETCH:-16}" timeout "${GEMV_TEST_TIMEOUT:-200}" \
  "$build/tests/test_cuda" --gtest_brief=1 --gtest_filter="${GEMV_TEST_FILTER:-*}" > /tmp/dspark-test-cuda-mma.log 2>&1
test_rc=$?
echo "gemv_suite: test_cuda (DSPARK_GEMV=mma, prefetch ${GEMV_TEST_PREFETCH:-16}) rc=$test_rc after $(elapsed)"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests? ran|FAILED" /tmp/dspark-test-cuda-mma.log | head -20
# GEMV_VARIANTS: simt, mma (its default prefetch) or mma@N (DSPARK_MMA_PREFETCH=N). Tables go
# into one bench_ab.md, the curves into bench_<variant>.json (project_speedup.py reads them).
: > "$OUT/bench_ab.md"
for v in ${GEMV_VARIANTS:-simt mma}; do
  g="${v%@*}"; depth=""; [ "$v" != "$g" ] && depth="${v#*@}"
  name="${v/@/}"
  rows=""; [ "$g" = simt ] && { rows="$depth"; depth=""; }
  DSPARK_GEMV=$g DSPARK_MMA_PREFETCH="$depth" DSPARK_GEMV_ROWS="$rows" timeout "${GEMV_BENCH_TIMEOUT:-120}" "$build/bench/bench_cuda" --quick \
    --models "${GEMV_MODELS:-qwen3-8b}" --out "/tmp/dspark-bench-$name" > "/tmp/dspark-bench-$name.log" 2>&1
  echo "gemv_suite: bench_cuda --quick ($v) rc=$? after $(elapsed)"
  { echo "# variant $v"; cat "/tmp/dspark-bench-$name/bench_cuda.md" 2>/dev/null || tail -20 "/tmp/dspark-bench-$name.log"; } >> "$OUT/bench_ab.md"
  cp "/tmp/dspark-bench-$name/bench_cuda.json" "$OUT/bench_$name.json" 2>/dev/null
done
grep -E "^# variant|decode step|verify" "$OUT/bench_ab.md" | head -40
# GEMV_LOAD_PREFETCH=auto: the sweep takes the mma variant whose batch-1 decode step was fastest
load_prefetch="${GEMV_LOAD_PREFETCH:-}"
if [ "$load_prefetch" = auto ]; then
  load_prefetch=$(python3 - "$OUT" ${GEMV_VARIANTS:-simt mma} <<'PY'
import json, sys
best = None
for v in sys.argv[2:]:
    if not v.startswith("mma"):
        continue
    try:
        d = json.load(open(f"{sys.argv[1]}/bench_{v.replace('@', '')}.json"))
        ms = min(r["step_ms"] for m in d["models"] for r in m["decode"] if r["batch"] == 1)
    except (OSError, KeyError, ValueError):
        continue
    if best is None or ms < best[0]:
        best = (ms, v.split("@")[1] if "@" in v else "")
print(best[1] if best else "")
PY
)
  echo "gemv_suite: prefetch for the load sweep: '${load_prefetch:-default}'"
fi
if [ -n "${GEMV_LOAD_BUDGET_S:-}" ]; then
  left=$(( GEMV_LOAD_BUDGET_S - ($(date +%s) - start) - 15 ))
  kind="${GEMV_LOAD_KERNEL:-simt}"
  [ "$kind" = mma ] && [ $test_rc != 0 ] && { echo "gemv_suite: mma tests failed: load sweep on simt"; kind=simt; }
  if [ $left -gt 60 ]; then
    echo "gemv_suite: load sweep on the $kind GEMV, ${left} s left"
    DSPARK_GEMV=$kind DSPARK_MMA_PREFETCH="$load_prefetch" LOAD_TIMEOUT=$left LOAD_PHASES=synthetic bash scripts/device/load_suite.sh > /dev/null 2>&1
    echo "gemv_suite: load sweep rc=$? after $(elapsed)"
    rm -f "$OUT"/*.png   # at most 8 files come back: plots are redrawn from the JSONL
    grep -E "rc=|done after" "$OUT/suite.log" | tail -3
  else
    echo "gemv_suite: no time left for the load sweep (${left} s)"
  fi
fi
echo "gemv_suite: done after $(elapsed)"
