#!/usr/bin/env bash
# The CUDA suite, run ON the GPU machine from the repository root: configure and build with
# CUDA (sm_90, Release, -j16), run the CUDA tests, run bench_cuda; logs and results in $OUT
# (nvidia-smi.txt, build.log, test.log, bench.log, bench_cuda.md, bench_cuda.json, summary.txt;
# --quick adds ncu_kernels.txt, ncu.err). Each stage has its own time limit so the whole run stays well
# inside 9 minutes (build 270 s, tests 100 s, bench 150 s).
#
# The GPU machine has no package registry. If it lacks a build dependency (nlohmann-json,
# PCRE2 + pkg-config, GoogleTest), the copies staged HERE beforehand are used:
#   here:  scripts/device/gpu_suite.sh --stage      (writes build-devdeps/, git-ignored)
#   there: scripts/device/gpu_suite.sh              (call with carry: ["build-devdeps"])
# A staged default model (scripts/device/stage_model.sh) in /tmp/dspark-model is used by
# model tests when present.
set -uo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
deps="$root/build-devdeps"

if [ "${1:-}" = "--stage" ]; then
  exec bash "$root/scripts/device/device_env.sh" --stage
fi

# --build-in-background: start `--build-only` detached and return at once (so a staging call
# overlaps the build); a later run waits for it first.
# BENCH_ARGS: bench_cuda's arguments instead of the full run (e.g. "--kernels --iters 20").
# --build-only: configure and build (DSPARK_BUILD_TARGETS, default test_cuda bench_cuda), then stop.
# --quick: shorter stage limits, bench_cuda --quick (one model, the verify curve at context
# 2048 up to B = 32) and, when ncu exists, per-kernel times of one eager decode step and one
# eager 8-token verify step (bench_cuda --profile under ncu; ncu_kernels.txt). Fits ~4 minutes.
if [ "${1:-}" = "--build-in-background" ]; then
  setsid nohup env DSPARK_BUILD_TARGETS="${DSPARK_BUILD_TARGETS:-test_cuda bench_cuda}" OUT=/tmp/dspark-gpu-build \
    bash "$root/scripts/device/gpu_suite.sh" --build-only > /tmp/dspark-gpu-build.log 2>&1 < /dev/null &
  echo "gpu_suite: background build started"
  exit 0
fi
if [ "${1:-}" != "--build-only" ]; then
  for _ in $(seq 1 60); do pgrep -f "gpu_suite.sh --build-only" > /dev/null || break; sleep 5; done
fi
quick=0
build_only=0
[ "${1:-}" = "--quick" ] && quick=1
[ "${1:-}" = "--build-only" ] && build_only=1
OUT="${OUT:-$root/build-gpu-out}"
mkdir -p "$OUT"
build="$root/build-gpu"
summary="$OUT/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }
start=$(date +%s)

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
note "gpu_suite: $(head -c 300 "$OUT/nvidia-smi.txt" | grep -m1 -o 'Driver Version: [0-9.]*' || echo 'nvidia-smi failed')"
note "gpu_suite: cmake $(cmake --version | head -1), nvcc $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo '?'), g++ $(g++ -dumpversion 2>/dev/null)"

# --- dependencies: the machine's own, else the staged ones (scripts/device/device_env.sh) ---
DEVICE_ENV_LOG="$summary" source "$root/scripts/device/device_env.sh"

# --- configure + build ----------------------------------------------------------------------
# CMAKE_CUDA_ARCHITECTURES is explicit: enable_language(CUDA) otherwise defaults it to the
# compiler's own (sm_75 for nvcc 13) before cmake/cuda.cmake can choose 90. The CUDA20 options
# teach CMake < 3.26, which does not know nvcc's C++20 flag, what to pass.
timeout 60 cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSPARK_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 \
  -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 "${DSPARK_CMAKE_ARGS[@]}" \
  >> "$OUT/build.log" 2>&1 || { note "FAIL: configure (see build.log)"; tail -30 "$OUT/build.log"; exit 1; }
grep -q "CUDA backend ON" "$OUT/build.log" || { note "FAIL: CUDA backend not enabled"; tail -30 "$OUT/build.log"; exit 1; }
targets=(${DSPARK_BUILD_TARGETS:-test_cuda bench_cuda})
# BUILD_JOBS below 16 (a build in the background of a host-bound training run): fewer compile
# jobs, at the lowest priority, with more time
jobs="${BUILD_JOBS:-16}"
limit=$([ $quick = 1 ] && echo 170 || echo 270)
[ "$jobs" -lt 16 ] && limit=560
timeout $limit nice -n 19 cmake --build "$build" -j"$jobs" --target "${targets[@]}" >> "$OUT/build.log" 2>&1
rc=$?
note "build: rc=$rc after $(( $(date +%s) - start )) s"
if [ $rc -ne 0 ]; then grep -E "error|FAILED" "$OUT/build.log" | head -40; exit 1; fi
[ $build_only = 1 ] && exit 0

# --- tests ----------------------------------------------------------------------------------
model=/tmp/dspark-model/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] && export DSPARK_MODEL="$model"
(
  cd "$build" || exit 1
  timeout $([ $quick = 1 ] && echo 60 || echo 100) ctest -L cuda --output-on-failure --timeout 60 -j4 > "$OUT/test.log" 2>&1
  trc=$?
  if grep -q "No tests were found" "$OUT/test.log"; then
    echo "ctest -L cuda found no tests (label not applied); running test_cuda directly" >> "$OUT/test.log"
    timeout 100 ./tests/test_cuda >> "$OUT/test.log" 2>&1
    trc=$?
  fi
  exit $trc
)
trc=$?
note "tests: rc=$trc after $(( $(date +%s) - start )) s"
grep -E "tests passed|PASSED|FAILED|SKIPPED|Failed" "$OUT/test.log" | tail -25 | tee -a "$summary"

# --- bench ----------------------------------------------------------------------------------
if [ $quick = 1 ]; then
  timeout 120 "$build/bench/bench_cuda" --out "$OUT" --iters 15 --quick > "$OUT/bench.log" 2>&1
  brc=$?
  note "bench: rc=$brc after $(( $(date +%s) - start )) s"
  ncu_bin="$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null | head -1)"
  if [ -n "$ncu_bin" ] && [ -z "${DSPARK_SKIP_NCU:-}" ]; then
    timeout 75 "$ncu_bin" --profile-from-start off --metrics gpu__time_duration.sum --csv \
      "$build/bench/bench_cuda" --out /tmp/dspark-prof --profile > /tmp/dspark-ncu.csv 2> "$OUT/ncu.err"
    note "ncu: rc=$? after $(( $(date +%s) - start )) s"
    # Per kernel name: launches and total us, for the decode step (first ~half) and verify step.
    python3 - /tmp/dspark-ncu.csv > "$OUT/ncu_kernels.txt" 2>&1 <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows: print("no ncu rows"); sys.exit()
h = rows[0]; rows = rows[1:]
ki, ni, vi, ui = h.index("Kernel Name"), h.index("Metric Name"), h.index("Metric Value"), h.index("Metric Unit")
ids = h.index("ID")
ks = [(int(r[ids]), r[ki][:100], float(r[vi].replace(",", "")) * (1e-3 if r[ui] in ("nsecond", "ns") else (1e3 if r[ui] in ("msecond", "ms") else 1))) for r in rows if r[ni] == "gpu__time_duration.sum"]
ks.sort()
# Steps end with their argmax kernel: decode, verify at split_len 512, then at bench's default.
names = ["decode batch 1 (split_len 512)", "verify 8 tokens (split_len 512)",
         "decode batch 1 (split_len default)", "verify 8 tokens (split_len default)"]
parts, cur = [], []
for k in ks:
    cur.append(k)
    if "argmax" in k[1]: parts.append(cur); cur = []
if cur: parts.append(cur)
for i, part in enumerate(parts):
    name = (names[i] if i < len(names) else f"step {i}") + ", ctx 2048, eager"
    agg = collections.defaultdict(lambda: [0, 0.0])
    for _, n, us in part: agg[n][0] += 1; agg[n][1] += us
    print(f"== {name}: {len(part)} kernels, sum {sum(u for _, _, u in part):.1f} us")
    for n, (c, us) in sorted(agg.items(), key=lambda x: -x[1][1]): print(f"{us:10.1f} us {c:5d}x  {n}")
PY
  fi
else
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
  timeout 150 "$build/bench/bench_cuda" --out "$OUT" ${BENCH_ARGS:---iters 15} > "$OUT/bench.log" 2>&1
  brc=$?
fi
note "bench: rc=$brc after $(( $(date +%s) - start )) s"
if [ -f "$OUT/bench_cuda.md" ]; then cat "$OUT/bench_cuda.md"; else tail -40 "$OUT/bench.log"; fi
[ $trc -eq 0 ] && [ $brc -eq 0 ]
