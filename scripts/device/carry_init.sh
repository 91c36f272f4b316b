#!/usr/bin/env bash
# Carries an earlier run's drafter exports onto the GPU machine for a warm start
# (train_suite.sh with DSPARK_INIT_FROM), across calls that bring at most 64 MiB each, the
# working tree included.
#
# Here (development machine):
#   scripts/device/carry_init.sh pack DIR [KIND=SRC ...]
#     copies each SRC export folder (drafter.json, safetensors, index) to DIR/KIND, writes
#     DIR/SHA256SUMS, and prints which files to carry in which call: first-fit, largest first,
#     at most 8 paths and (64 MiB - the working tree - RESERVE_MB, default 0) per call.
# There (GPU machine), in every call that carries some of them:
#   scripts/device/carry_init.sh collect DIR [DEST]     (DEST default /tmp/dspark-init)
#     copies what this call carried under DIR into DEST; once SHA256SUMS is there and every file
#     it lists has arrived, checks them and says "complete" (exit 0); else lists what is missing
#     (exit 0 too: more calls are coming). `check` instead of `collect` exits 1 unless complete.
set -euo pipefail
cmd="${1:-}"; dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 pack DIR KIND=SRC... | collect DIR [DEST] | check DIR [DEST]" >&2; exit 2; }
case "$cmd" in
  pack)
    shift 2
    [ $# -gt 0 ] || { echo "carry_init: pack needs KIND=SRC folders" >&2; exit 2; }
    rm -rf "$dir" && mkdir -p "$dir"
    for spec in "$@"; do
      kind="${spec%%=*}"; src="${spec#*=}"
      [ -f "$src/drafter.json" ] || { echo "carry_init: $src has no drafter.json" >&2; exit 1; }
      mkdir -p "$dir/$kind"
      cp "$src"/drafter.json "$src"/*.safetensors "$dir/$kind/"
      [ -f "$src/model.safetensors.index.json" ] && cp "$src/model.safetensors.index.json" "$dir/$kind/"
      chmod -R u+rw,go+r "$dir/$kind"
    done
    (cd "$dir" && sha256sum */* > SHA256SUMS)
    tree_bytes=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
    python3 - "$dir" "$tree_bytes" "${RESERVE_MB:-0}" <<'PY'
import os, sys
d, tree, reserve = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
cap = 64 * 2**20 - tree - int(reserve * 1e6)
files = [os.path.join(d, "SHA256SUMS")]
for kind in sorted(os.listdir(d)):
    if os.path.isdir(os.path.join(d, kind)):
        files += [os.path.join(d, kind, f) for f in sorted(os.listdir(os.path.join(d, kind)))]
calls = []   # [bytes, [paths]]
for f in sorted(files, key=os.path.getsize, reverse=True):
    n = os.path.getsize(f)
    if n > cap:
        sys.exit(f"carry_init: {f} ({n} bytes) is larger than a call's room ({cap} bytes)")
    for c in calls:
        if c[0] + n <= cap and len(c[1]) < 8:
            c[0] += n; c[1].append(f); break
    else:
        calls.append([n, [f]])
print(f"carry_init: {len(files)} files, {sum(map(os.path.getsize, files)) / 1e6:.1f} MB; working tree "
      f"{tree / 1e6:.1f} MB; room per call {cap / 1e6:.1f} MB -> {len(calls)} call(s)")
for i, (n, paths) in enumerate(calls, 1):
    print(f"call {i} ({n / 1e6:.1f} MB): carry {paths}")
PY
    ;;
  collect|check)
    dest="${3:-/tmp/dspark-init}"
    mkdir -p "$dest"
    [ -d "$dir" ] && cp -r "$dir"/. "$dest"/
    if [ ! -f "$dest/SHA256SUMS" ]; then
      echo "carry_init: $dest has no SHA256SUMS yet"; [ "$cmd" = collect ]; exit $?
    fi
    missing=$(cd "$dest" && awk '{print $2}' SHA256SUMS | while read -r f; do [ -f "$f" ] || echo "$f"; done)
    if [ -n "$missing" ]; then
      echo "carry_init: still missing in $dest:" $missing; [ "$cmd" = collect ]; exit $?
    fi
    (cd "$dest" && sha256sum --quiet -c SHA256SUMS) || { echo "carry_init: checksum mismatch in $dest" >&2; exit 1; }
    echo "carry_init: $dest complete ($(awk 'END {print NR}' "$dest/SHA256SUMS") files checked)" ;;
  *) echo "usage: $0 pack DIR KIND=SRC... | collect DIR [DEST] | check DIR [DEST]" >&2; exit 2 ;;
esac
