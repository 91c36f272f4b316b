#!/usr/bin/env bash
# Brings the trained drafters back from the GPU machine a few pieces per call: a call returns at
# most 8 files of 16 MiB, 64 MiB together, and the exports are larger. Copies up to MAX (3)
# pieces of $work/parts (written by train_suite.sh) that no earlier call returned into $OUT.
#   bash scripts/device/return_parts.sh [MAX]
# Here: cat the pieces of every call in order | tar -x -C <dir>  (export/<kind>/, examples.jsonl.gz)
set -euo pipefail
work="${DSPARK_TRAIN_DIR:-/tmp/dspark-train}"
max="${1:-3}"
[ -d "$work/parts" ] || { echo "return_parts: no $work/parts (train_suite.sh writes it)" >&2; exit 1; }
: "${OUT:?OUT is not set}"
touch "$work/parts/returned.list"
n=0
for f in "$work"/parts/drafters.tar.part-*; do
  b=$(basename "$f")
  grep -qx "$b" "$work/parts/returned.list" && continue
  [ "$n" -ge "$max" ] && break
  cp "$f" "$OUT/" && echo "$b" >> "$work/parts/returned.list"
  n=$((n + 1))
done
left=$(( $(ls "$work"/parts/drafters.tar.part-* | wc -l) - $(wc -l < "$work/parts/returned.list") ))
echo "return_parts: $n piece(s) to \$OUT, $left left"
