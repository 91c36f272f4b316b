#!/usr/bin/env bash
# Reproduces the GCC 12 SLP-vectoriser fault that CMakeLists.txt works around for native builds
# (docs/testing.md, "Native builds"): std::vector<double>{0.5, 0.5, 0, 0} built at -O2 with
# AVX-512 comes out as four 0.5s. Prints the last element under each flag set; 0 is right.
#   scripts/gcc_slp_repro.sh [CXX]      (default g++)
set -euo pipefail
cxx="${1:-g++}"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/repro.cpp" <<'CPP'
#include <cstdio>
#include <vector>
__attribute__((noinline)) void show(const std::vector<double>& w) { std::printf("%g\n", w[3]); }
int main() { show({0.5, 0.5, 0, 0}); }
CPP
"$cxx" --version | head -1
for flags in "-O2 -mavx2" "-O2 -mavx512f" "-O2 -mavx512f -fno-tree-slp-vectorize" "-O3 -march=native" \
             "-O3 -march=native -fno-tree-slp-vectorize"; do
  # shellcheck disable=SC2086
  "$cxx" -std=c++20 $flags "$dir/repro.cpp" -o "$dir/repro"
  printf '%-45s w[3] = %s\n' "$flags" "$("$dir/repro")"
done
