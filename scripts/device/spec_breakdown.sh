#!/usr/bin/env bash
# Where a speculative round's time goes at batch 1 on the GPU (SmolLM2, gsm8k prompts):
# `dspark bench-spec --draft-skip off` times the drafter's propose/commit calls inside the
# serving loop; n-gram rounds (drafting ~free) give the verify-only cost of a round of the same
# length. Prints one line per drafter: tau, ms per round, drafter ms per round, plain ms/token.
# Needs build-gpu/ (scripts/device/drafter_suite.sh builds it), the staged model and
# .stage/drafters; SPEC_LIMIT prompts (default 12) x 128 tokens.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root" || exit 1
source scripts/device/device_env.sh > /dev/null 2>&1
m=/tmp/dspark-model/SmolLM2-135M-Instruct.Q4_1.gguf
d="${DSPARK_DRAFTERS:-$root/.stage/drafters}"
for a in "dspark:$d/dspark --gamma 7" "dflash:$d/dflash --gamma 7" "mtp1:$d/mtp1 --gamma 1" "eagle3:$d/eagle3 --gamma 7" \
         "ngram --gamma 7" "ngram --gamma 1"; do
  dir="${a#*:}"; dir="${dir%% *}"
  [[ "$a" == *:* ]] && [ ! -d "$dir" ] && continue
  # shellcheck disable=SC2086
  build-gpu/services/dspark bench-spec --device cuda --model "$m" --json --prompts .stage/data/gsm8k.jsonl \
    --limit "${SPEC_LIMIT:-12}" --max-tokens 128 --draft-skip off --draft $a 2> /tmp/spec_breakdown.err |
    LABEL="${a%%:*} ${a##* }" python3 -c "
import json, os, sys
d = json.loads(sys.stdin.read()); s = d.get('draft_skip', {}); n = d['verify_steps']
print('%-14s tau %.3f  ms/round %.3f  drafter propose %.3f commit %.3f  plain ms/token %.3f  tok/s spec %.0f plain %.0f' % (
    os.environ['LABEL'], d['acceptance_length'], 1e3 * d['spec_s'] / n, 1e3 * s.get('drafter_propose_s', 0) / n,
    1e3 * s.get('drafter_commit_s', 0) / n, 1e3 / d['plain_decode_tokens_per_s'], d['spec_decode_tokens_per_s'],
    d['plain_decode_tokens_per_s']))" || tail -3 /tmp/spec_breakdown.err
done
