#!/usr/bin/env bash
# Stages the default model onto the GPU machine, whose calls carry at most 64 MiB each.
#
# Here (on the development machine):   scripts/device/stage_model.sh split
#   cuts .models/<model> into .stage/part-NN (<= STAGE_PART_MIB each, default 48) and prints how
#   many parts. STAGE_PART_MIB=36 makes three parts, so the first fits one call beside
#   .stage/prebuilt.tar.xz (about 8 MiB) and the working tree (about 13 MiB).
# There (on the GPU machine), one call per part, back to back while the machine is warm:
#   scripts/device/stage_model.sh receive NN      (carry .stage/part-NN)
# and in the last call, before anything uses the model:
#   scripts/device/stage_model.sh assemble        (joins the parts, checks the sha256)
# The model lands in /tmp/dspark-model/ on the GPU machine.
set -euo pipefail
name="SmolLM2-135M-Instruct.Q4_1.gguf"
sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
dest=/tmp/dspark-model
case "${1:-}" in
  split)
    mkdir -p .stage && rm -f .stage/part-*      # keeps .stage/data, .stage/drafters
    split -b "${STAGE_PART_MIB:-48}M" -d -a 2 ".models/$name" .stage/part-
    ls .stage/part-* | wc -l ;;
  receive)
    mkdir -p "$dest/parts"
    cp ".stage/part-$2" "$dest/parts/"
    ls -la "$dest/parts" ;;
  assemble)
    if [ ! -f "$dest/$name" ]; then
      cat "$dest"/parts/part-* > "$dest/$name"
    fi
    echo "$sha256  $dest/$name" | sha256sum -c ;;
  *) echo "usage: $0 split | receive NN | assemble" >&2; exit 2 ;;
esac
