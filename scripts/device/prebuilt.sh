#!/usr/bin/env bash
# Binaries built HERE (CUDA 13, sm_90, Release: build-cuda) carried to the GPU machine, so a
# lease does not spend minutes of device time compiling. The programs the suites run
# (dspark, test_cuda, bench_cuda, bench_load, bench_gemm_algos), stripped, with the shared libraries they load
# that are not glibc, libstdc++ or CUDA's (CAF, ZeroMQ, httplib, PCRE2 and their needs), packed
# with xz: about 10 MB, so the tarball rides along any call.
#
# Here:   bash scripts/device/prebuilt.sh pack [BUILD_DIR]    (default build-cuda)
#           builds those targets, writes .stage/prebuilt.tar.xz and prints its MANIFEST
#           (commit, whether the tree had uncommitted changes, nvcc, newest glibc symbol).
# There:  eval "$(bash scripts/device/prebuilt.sh unpack [TAR] [DEST])"
#           (default .stage/prebuilt.tar.xz -> /tmp/dspark-prebuilt) unpacks, checks that every
#           library resolves and that the programs start, and on success prints the exports to
#           eval: LD_LIBRARY_PATH (the machine's own libraries first, the carried ones only
#           fill gaps), EVAL_BUILD and LOAD_BUILD (eval_suite.sh / load_suite.sh then skip
#           their build), DSPARK_PREBUILT. On failure it prints why on stderr and exits 1:
#           fall back to the suites' own build (carry build-devdeps).
# The carried libraries come from this machine's Debian 12 (glibc 2.36); the programs need
# glibc >= the MANIFEST's figure there.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
programs=(services/dspark tests/test_cuda bench/bench_cuda bench/bench_load bench/bench_gemm_algos)
case "${1:-}" in
  pack)
    build="$root/${2:-build-cuda}"
    [ -f "$build/build.ninja" ] || { echo "prebuilt: $build is not a configured build (cmake -DDSPARK_CUDA=ON)" >&2; exit 1; }
    grep -q "CMAKE_BUILD_TYPE:STRING=Release" "$build/CMakeCache.txt" ||
      { echo "prebuilt: $build is not a Release build" >&2; exit 1; }
    ninja -C "$build" dspark test_cuda bench_cuda bench_load bench_gemm_algos > /dev/null
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    mkdir -p "$stage/lib"
    for p in "${programs[@]}"; do
      mkdir -p "$stage/$(dirname "$p")"
      cp "$build/$p" "$stage/$p"
      strip "$stage/$p"
    done
    # every shared library outside the C/C++ runtime and CUDA, resolved here
    for p in "${programs[@]}"; do ldd "$build/$p"; done | awk '$3 ~ /^\// {print $3}' | sort -u |
      grep -vE '/(libc|libm|libdl|libpthread|librt|libresolv|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt)\.so' |
      while read -r lib; do cp -L "$lib" "$stage/lib/"; done
    glibc=$(for p in "${programs[@]}"; do objdump -T "$build/$p"; done | grep -o 'GLIBC_[0-9.]*' | sort -V | tail -1)
    dirty=no; [ -n "$(git -C "$root" status --porcelain --untracked-files=no)" ] && dirty=yes
    {
      echo "commit $(git -C "$root" rev-parse HEAD) (uncommitted changes: $dirty)"
      echo "nvcc $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo '?'), CUDA architectures $(sed -n 's/^CMAKE_CUDA_ARCHITECTURES:[A-Z]*=//p' "$build/CMakeCache.txt")"
      echo "needs $glibc or newer; built $(date -u +%FT%TZ)"
      echo "libraries: $(ls "$stage/lib" | tr '\n' ' ')"
    } > "$stage/MANIFEST"
    mkdir -p "$root/.stage"
    tar -C "$stage" -cJf "$root/.stage/prebuilt.tar.xz" .
    cat "$stage/MANIFEST"
    echo "prebuilt: .stage/prebuilt.tar.xz, $(stat -c %s "$root/.stage/prebuilt.tar.xz") bytes" ;;
  unpack)
    tarball="${2:-$root/.stage/prebuilt.tar.xz}"
    dest="${3:-/tmp/dspark-prebuilt}"
    [ -f "$tarball" ] || { echo "prebuilt: $tarball missing (carry .stage/prebuilt.tar.xz)" >&2; exit 1; }
    rm -rf "$dest" && mkdir -p "$dest"
    tar -C "$dest" -xJf "$tarball"
    cat "$dest/MANIFEST" >&2
    libpath="/usr/local/cuda/lib64:/usr/local/cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}:$dest/lib"
    for p in "${programs[@]}"; do
      missing=$(LD_LIBRARY_PATH="$libpath" ldd "$dest/$p" 2>&1 | grep -E "not found|version .* not found" || true)
      [ -z "$missing" ] || { echo "prebuilt: $p cannot load: $missing" >&2; exit 1; }
    done
    LD_LIBRARY_PATH="$libpath" "$dest/services/dspark" --help > /dev/null 2>&1 ||
      { echo "prebuilt: dspark --help failed" >&2; exit 1; }
    LD_LIBRARY_PATH="$libpath" "$dest/tests/test_cuda" --gtest_list_tests > /dev/null 2>&1 ||
      { echo "prebuilt: test_cuda --gtest_list_tests failed" >&2; exit 1; }
    echo "prebuilt: ready in $dest" >&2
    printf 'export LD_LIBRARY_PATH=%q EVAL_BUILD=%q LOAD_BUILD=%q DSPARK_PREBUILT=%q\n' "$libpath" "$dest" "$dest" "$dest" ;;
  *) echo "usage: $0 pack [BUILD_DIR] | unpack [TAR] [DEST]" >&2; exit 2 ;;
esac
