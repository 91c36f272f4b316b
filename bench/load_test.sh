#!/usr/bin/env bash
# Load test of `dspark serve` (issue 6 reliability): N concurrent streaming clients for S seconds
# on the CPU backend; every request must complete and equal offline generate(); the server's
# RSS is sampled every 10 s to show it stays flat; SIGTERM must drain and exit 0.
#
#   bench/load_test.sh [BUILD_DIR] [CLIENTS] [SECONDS] [MAX_TOKENS] [DRAFT]
#   e.g. bench/load_test.sh build-actors 64 180 32 ngram
set -euo pipefail
build=${1:-build}
clients=${2:-64}
seconds=${3:-180}
max_tokens=${4:-32}
draft=${5:-ngram}
model=${DSPARK_MODEL:-.models/SmolLM2-135M-Instruct.Q4_1.gguf}
port=$((20000 + RANDOM % 20000))
log=$(mktemp)
"$build/services/dspark" serve --model "$model" --draft "$draft" --zmq "tcp://127.0.0.1:$port" \
  --max-requests 16 --max-queued 256 --ctx 1024 2>"$log" &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q ready "$log" && break; sleep 0.2; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
echo "server pid $pid, RSS at start $(rss) kB"
( while kill -0 $pid 2>/dev/null; do echo "rss_kb $(date +%s) $(rss)"; sleep 10; done ) &
sampler=$!
rc=0
"$build/bench/bench_actors" --load --endpoint-url "tcp://127.0.0.1:$port" --model "$model" \
  --clients "$clients" --seconds "$seconds" --max-tokens "$max_tokens" --threads 2 || rc=$?
kill $sampler 2>/dev/null || true
echo "server RSS at end $(rss) kB"
kill -TERM $pid
wait $pid && echo "server exit 0 after SIGTERM" || { echo "server exit $?"; rc=1; }
tail -3 "$log"
exit $rc
