#!/usr/bin/env bash
# CPU head-to-head with llama.cpp on the same GGUF file and machine: prefill of a 512-token
# prompt, decode of 128 tokens, the step time of 1-8-token batches (what a speculative verify
# step costs) and decode 512 and 1,024 tokens deep, for this project's CPU backend and for
# llama.cpp's llama-bench.
#
#   bench/compare_llamacpp.sh [BUILD_DIR] [THREADS] [ROUNDS]    (defaults: build, 2, 2)
#
# llama.cpp comes from PyPI (no model hub or git host is needed): the source distribution of
# llama-cpp-python carries llama.cpp under vendor/llama.cpp. It is built once, CPU only, with
# -DGGML_NATIVE=ON (every instruction set this CPU has), into $LLAMACPP_DIR (default
# .cache/llama.cpp; about 10 minutes on 2 cores). LLAMACPP_PY_VERSION pins the package version
# (default 0.3.36, whose llama.cpp is commit 0c1e570 of 2026-10-01).
#
# Both programs run ROUNDS times, alternating, because a shared machine drifts between runs:
# compare within a round, not across rounds. Our side: bench/bench_cpu (prefill in 256-token
# chunks, decode after a short prompt) and bench/bench_model_decode --device cpu (B sequences
# one token each, after a 64-token context). llama.cpp's side: llama-bench pp512 / tg128 and
# pp1..pp8 (one sequence of B tokens). Nothing here is copied from llama.cpp; it is only run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-build}"
threads="${2:-2}"
rounds="${3:-2}"
model="${DSPARK_MODEL:-$root/.models/SmolLM2-135M-Instruct.Q4_1.gguf}"
version="${LLAMACPP_PY_VERSION:-0.3.36}"
dir="${LLAMACPP_DIR:-$root/.cache/llama.cpp}"
cd "$root"
[ -f "$model" ] || { echo "compare_llamacpp: $model missing (make model)" >&2; exit 1; }
for p in bench/bench_cpu bench/bench_model_decode; do
  [ -x "$build/$p" ] || { echo "compare_llamacpp: $build/$p missing (make build)" >&2; exit 1; }
done

bench="$dir/src/vendor/llama.cpp/build/bin/llama-bench"
if [ ! -x "$bench" ]; then
  mkdir -p "$dir"
  python3 -m pip download --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$dir" >&2
  rm -rf "$dir/src" && mkdir -p "$dir/src"
  tar -xzf "$dir/llama_cpp_python-$version.tar.gz" -C "$dir/src" --strip-components=1
  src="$dir/src/vendor/llama.cpp"
  cmake -S "$src" -B "$src/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >&2
  ninja -C "$src/build" llama-bench >&2
fi

echo "# CPU: this project vs llama.cpp ($(date -u +%F), $(nproc) cores, $threads threads)"
echo "model: $model"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
for r in $(seq 1 "$rounds"); do
  echo
  echo "## round $r"
  echo
  echo "### llama.cpp (llama-bench, llama-cpp-python $version)"
  "$bench" -m "$model" -t "$threads" -p 512 -n 128 -r 5 | grep -E "^\| (model|---|.*pp512|.*tg128)"
  "$bench" -m "$model" -t "$threads" -p 1,2,4,8 -n 0 -r 10 | grep -E "pp[1248] "
  "$bench" -m "$model" -t "$threads" -p 0 -n 32 -d 512,1024 -r 3 | grep -E "tg32 @ d"
  echo
  echo "### dspark (bench_cpu, bench_model_decode)"
  "$build/bench/bench_cpu" --model "$model" --threads-list "$threads" --runs 5 | grep -E "^\|"
  "$build/bench/bench_model_decode" --model "$model" --device cpu --batches 1,2,4,8 --ctx 64 --steps 32 |
    grep -E "^\|"
  for ctx in 512 1024; do   # decode deeper in the context: attention's share grows
    "$build/bench/bench_model_decode" --model "$model" --device cpu --batches 1 --ctx "$ctx" --steps 32 | grep "| cpu |"
  done
done
