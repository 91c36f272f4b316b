#!/usr/bin/env bash
# A lease's first call when nothing is staged yet (no model needed): checks the carried binaries
# on the GPU, A/Bs a GEMV variant, and runs the 8B synthetic load sweep with the defaults and
# under each A/B setting.
# Carry .stage/prebuilt.tar.xz (and whatever later calls need; MEASURE_KEEP lists paths copied
# to /tmp/keep, since each call's working tree is replaced). One call:
#   bash scripts/device/measure_suite.sh
#   1. unpacks the prebuilt binaries (writes /tmp/prebuilt.env for later calls),
#   2. test_cuda with the defaults, then its MEASURE_AB_FILTER tests (cuda_gemv*:cuda_gpu_runner*)
#      with MEASURE_AB_ENV (default DSPARK_GEMV_ROWS=4) set,
#   3. gemv_suite.sh's bench_cuda --quick tables for "simt" and MEASURE_AB_VARIANT (simt@4) on
#      MEASURE_GEMV_MODELS (qwen3-8b,smollm2-135m: bench_cuda --models takes a comma list),
#   3b. bench_gemm_algos on MEASURE_GEMM_ALGO_MODELS (qwen3-8b smollm2-135m; "" skips it) at
#      MEASURE_GEMM_ALGO_TOKENS (64,72,128,136,256), MEASURE_GEMM_ALGO_ENUMERATE (600)
#      enumerated configurations a case: whether cuBLASLt has a configuration without the
#      72- and 136-row cliffs,
#   4. the 8B synthetic load sweep (load_suite.sh, caller's LOAD_* settings) with the defaults,
#      then once per setting in MEASURE_SWEEP_ENVS (space-separated VAR=VALUE; default
#      "DSPARK_GEMM_VARIANTS=4 LOAD_REPLAY_FEATURES=5 LOAD_REPLAY_FEATURES=5+LOAD_REPLAY_FEATURES_ON=device":
#      tile and split-K variants timed too; the replayed drafters reading 5 capture layers
#      through the host as the trained ones do by default, then where the target keeps them) at
#      MEASURE_AB_CONCURRENCY (64,128,256); a setting joins several with '+'
#      (LOAD_REPLAY_FEATURES=5+LOAD_REPLAY_FEATURES_ON=device)
#      with MEASURE_AB_POLICIES (none,async,scheduled); each sweep prints its step profile.
# MEASURE_LOAD_PHASES (default synthetic) names load_suite.sh's phases for the sweeps:
# "synthetic smollm2" adds the SmolLM2 replay once the model is staged and .stage/data carried.
# MEASURE_PARTS (comma list, default tests,gemv,gemm_algos,sweep,ab) picks which of 2, 3, 3b,
# the default sweep and the A/B sweeps of 4 run; the whole no longer fits one 350-s call.
# $OUT: summary.md (test summaries, GEMV verify rows, both sweeps' tables) and measure.tgz (every
# log, table and JSONL) — two files, well inside the 8 a call may return.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root" || exit 1
: "${OUT:?OUT is not set}"
work=/tmp/dspark-measure
rm -rf "$work" && mkdir -p "$work"
start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start )) s"; }
summary="$OUT/summary.md"
exec > >(tee -a "$work/measure.log") 2>&1
finish() {
  tar -C /tmp -czf "$OUT/measure.tgz" dspark-measure 2>/dev/null
  cp "$work/measure.log" "$summary"
}
trap finish EXIT

if [ -n "${MEASURE_KEEP:-}" ]; then
  mkdir -p /tmp/keep && for p in $MEASURE_KEEP; do cp -r "$p" /tmp/keep/; done
  echo "measure: kept $MEASURE_KEEP in /tmp/keep"
fi
# A later call of the lease need not carry the tarball again: the first call's unpacked
# binaries stay in /tmp/dspark-prebuilt.
if [ ! -f .stage/prebuilt.tar.xz ] && [ -s /tmp/prebuilt.env ]; then
  echo "measure: reusing the binaries unpacked by an earlier call"
else
  bash scripts/device/prebuilt.sh unpack > /tmp/prebuilt.env.new && mv /tmp/prebuilt.env.new /tmp/prebuilt.env ||
    { echo "measure: prebuilt unpack failed"; exit 1; }
fi
. /tmp/prebuilt.env
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
echo "measure: binaries ready after $(elapsed)"

parts=",${MEASURE_PARTS:-tests,gemv,gemm_algos,sweep,ab},"
part() { [[ "$parts" == *",$1,"* ]]; }

ab_env="${MEASURE_AB_ENV:-DSPARK_GEMV_ROWS=4}"
if part tests; then
"$DSPARK_PREBUILT/tests/test_cuda" --gtest_brief=1 > "$work/test_cuda.log" 2>&1
echo "measure: test_cuda (defaults) rc=$? after $(elapsed)"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests? ran" "$work/test_cuda.log" | head -12
env $ab_env "$DSPARK_PREBUILT/tests/test_cuda" --gtest_brief=1 \
  --gtest_filter="${MEASURE_AB_FILTER:-cuda_gemv*:cuda_gpu_runner*}" > "$work/test_cuda_ab.log" 2>&1
echo "measure: test_cuda ($ab_env) rc=$? after $(elapsed)"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests? ran" "$work/test_cuda_ab.log" | head -12
fi

if part gemv; then
GEMV_VARIANTS="simt ${MEASURE_AB_VARIANT:-simt@4}" GEMV_TEST_FILTER='cuda_gemv*' \
  GEMV_MODELS="${MEASURE_GEMV_MODELS:-qwen3-8b,smollm2-135m}" OUT="$work/gemv" \
  bash scripts/device/gemv_suite.sh > /dev/null 2>&1
echo "measure: gemv A/B rc=$? after $(elapsed)"
grep -E "^# variant|^#+ |verify|tokens" "$work/gemv/bench_ab.md" | head -60
fi

part gemm_algos && for m in ${MEASURE_GEMM_ALGO_MODELS-qwen3-8b smollm2-135m}; do
  "$DSPARK_PREBUILT/bench/bench_gemm_algos" --out "$work/gemm_algos_$m" --model "$m" \
    --tokens "${MEASURE_GEMM_ALGO_TOKENS:-64,72,128,136,256}" --enumerate "${MEASURE_GEMM_ALGO_ENUMERATE:-600}" \
    > "$work/gemm_algos_$m.log" 2>&1
  echo "measure: bench_gemm_algos $m rc=$? after $(elapsed)"
  cat "$work/gemm_algos_$m/bench_gemm_algos.md" 2>/dev/null || tail -5 "$work/gemm_algos_$m.log"
done

if part sweep; then
OUT="$work/load_default" LOAD_PHASES="${MEASURE_LOAD_PHASES:-synthetic}" bash scripts/device/load_suite.sh > /dev/null 2>&1
echo "measure: 8B sweep (defaults) rc=$? after $(elapsed)"
cat "$work/load_default/load.md" 2>/dev/null
fi
i=0
part ab && for setting in ${MEASURE_SWEEP_ENVS-DSPARK_GEMM_VARIANTS=4 LOAD_REPLAY_FEATURES=5 LOAD_REPLAY_FEATURES=5+LOAD_REPLAY_FEATURES_ON=device}; do
  i=$((i + 1))
  # shellcheck disable=SC2046  # a setting is VAR=VALUE[+VAR=VALUE...]
  env $(tr '+' ' ' <<< "$setting") OUT="$work/load_ab$i" LOAD_PHASES="${MEASURE_LOAD_PHASES:-synthetic}" \
    LOAD_CONCURRENCY="${MEASURE_AB_CONCURRENCY:-64,128,256}" LOAD_POLICIES="${MEASURE_AB_POLICIES:-none,async,scheduled}" \
    bash scripts/device/load_suite.sh > /dev/null 2>&1
  echo "measure: 8B sweep ($setting) rc=$? after $(elapsed)"
  cat "$work/load_ab$i/load.md" 2>/dev/null
done
