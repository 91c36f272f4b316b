#!/usr/bin/env bash
# Installs what the PyTorch training toolkit's tests need (torch, safetensors, transformers for
# the tests' tiny random Llama target) when missing.
# Separate from install_deps.sh on purpose: torch with its CUDA libraries is ~3 GB, which
# `make run` on an edge box should not pull; `make test` (and so CI) does, so that the drafter
# training tests run everywhere (on the CPU when there is no GPU). Safe to repeat. Exits
# non-zero with a clear message when the install fails (no network, no disk space).
set -uo pipefail
missing=()
python3 -c "import torch" 2>/dev/null || missing+=(torch)
python3 -c "import safetensors" 2>/dev/null || missing+=(safetensors)
python3 -c "import transformers" 2>/dev/null || missing+=(transformers)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install_training_deps: installing ${missing[*]} (torch is ~3 GB with its CUDA libraries)"
if ! python3 -m pip install -q "${missing[@]}"; then
  echo "install_training_deps: could not install ${missing[*]} (network or disk space?)" >&2
  exit 1
fi
