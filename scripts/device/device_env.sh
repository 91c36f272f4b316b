#!/usr/bin/env bash
# Build dependencies on the GPU machine, which has CMake, nvcc and PyTorch but no package
# registry and none of the project's Debian -dev packages. Two modes:
#
#   here:   bash scripts/device/device_env.sh --stage
#           writes build-devdeps/ (git-ignored, ~9 MiB): nlohmann-json, PCRE2, GoogleTest
#           sources, the Debian packages of CAF 0.17, ZeroMQ + cppzmq, cpp-httplib and the
#           shared libraries they need (debs/), and a pkg-config shim (bin/pkg-config).
#   there:  source scripts/device/device_env.sh     (with build-devdeps carried)
#           uses the machine's own copy of each dependency when it has one, else the staged
#           one (the .debs are unpacked into build-devdeps/sysroot, never into /), and sets
#             DSPARK_CMAKE_ARGS   extra arguments for the CMake configure step
#             PATH, LD_LIBRARY_PATH
#           Messages go to stderr and to $DEVICE_ENV_LOG when set. DSPARK_FORCE_STAGED=1 uses the
#           staged service dependencies even where the machine has its own (to test the staging here).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
deps="$root/build-devdeps"
debs=(libcaf-dev libcaf-core0.17 libzmq3-dev libzmq5 cppzmq-dev libcpp-httplib-dev libcpp-httplib0.11
      libsodium23 libpgm-5.3-0 libnorm1 libbsd0 libmd0 libbrotli1 libbrotli-dev libgssapi-krb5-2 libkrb5-3
      libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2)

if [ "${1:-}" = "--stage" ]; then
  set -e
  rm -rf "$deps" && mkdir -p "$deps/include" "$deps/lib" "$deps/pkgconfig" "$deps/share/cmake" "$deps/bin" "$deps/debs"
  cp -r /usr/include/nlohmann "$deps/include/"
  cp -r /usr/share/cmake/nlohmann_json "$deps/share/cmake/"
  cp /usr/include/pcre2.h "$deps/include/"
  cp /usr/lib/x86_64-linux-gnu/libpcre2-8.a "$deps/lib/"
  cp -r /usr/src/googletest "$deps/googletest-src"
  cat > "$deps/pkgconfig/libpcre2-8.pc" <<'PC'
prefix=@DEPS@
includedir=${prefix}/include
libdir=${prefix}/lib
Name: libpcre2-8
Description: PCRE2 (staged static library)
Version: 10.42
Libs: -L${libdir} -lpcre2-8
Cflags: -I${includedir}
PC
  cp "$root/scripts/device/pkg_config_shim.py" "$deps/bin/pkg_config_shim.py"
  printf '#!/usr/bin/env bash\nexec python3 "$(dirname "$0")/pkg_config_shim.py" "$@"\n' > "$deps/bin/pkg-config"
  chmod +x "$deps/bin/pkg-config" "$deps/bin/pkg_config_shim.py"
  (cd "$deps/debs" && apt-get download "${debs[@]}" >/dev/null 2>&1)
  ls "$deps/debs" | wc -l
  du -sh "$deps"
  exit 0
fi

_log() { echo "device_env: $*" >&2; [ -n "${DEVICE_ENV_LOG:-}" ] && echo "device_env: $*" >> "$DEVICE_ENV_LOG"; return 0; }
_have_hdr() { echo "#include <$1>" | g++ -x c++ -fsyntax-only - >/dev/null 2>&1; }
DSPARK_CMAKE_ARGS=()
_prefix=""

if ! _have_hdr nlohmann/json.hpp; then
  _prefix="$deps"
  _log "nlohmann-json from build-devdeps"
fi

# Service dependencies (CAF, ZeroMQ, cpp-httplib): unpack the staged Debian packages into a
# private sysroot when the machine lacks any of them.
if [ -n "${DSPARK_FORCE_STAGED:-}" ] || ! { _have_hdr caf/all.hpp && _have_hdr zmq.hpp && _have_hdr httplib.h; }; then
  sys="$deps/sysroot"
  if [ ! -f "$sys/.unpacked-$(ls "$deps"/debs | wc -l)" ]; then
    mkdir -p "$sys"
    for f in "$deps"/debs/*.deb; do dpkg -x "$f" "$sys" || _log "could not unpack $f"; done
    touch "$sys/.unpacked-$(ls "$deps"/debs | wc -l)"
  fi
  libdirs="$sys/usr/lib/x86_64-linux-gnu:$sys/lib/x86_64-linux-gnu"
  export LD_LIBRARY_PATH="$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  _prefix="${_prefix:+$_prefix;}$sys/usr"
  DSPARK_CMAKE_ARGS+=("-DCMAKE_CXX_FLAGS=-isystem $sys/usr/include"
                      "-DCMAKE_EXE_LINKER_FLAGS=-Wl,-rpath-link,$sys/usr/lib/x86_64-linux-gnu -Wl,-rpath-link,$sys/lib/x86_64-linux-gnu -Wl,-rpath,$sys/usr/lib/x86_64-linux-gnu -Wl,-rpath,$sys/lib/x86_64-linux-gnu")
  _log "CAF / ZeroMQ / cpp-httplib from the staged Debian packages ($sys)"
  _need_shim=1
fi
if [ -n "${_need_shim:-}" ] || ! { command -v pkg-config >/dev/null && pkg-config --exists libpcre2-8; }; then
  export PATH="$deps/bin:$PATH"
  _log "pkg-config shim from build-devdeps"
fi

if ! { _have_hdr gtest/gtest.h && ls /usr/lib/*/libgtest.* /usr/lib/libgtest.* /usr/local/lib*/libgtest.* 2>/dev/null | grep -q .; }; then
  gt="/tmp/dspark-gtest"
  if [ ! -f "$gt/lib/libgtest.a" ] && [ ! -f "$gt/lib64/libgtest.a" ]; then
    { cmake -S "$deps/googletest-src" -B /tmp/dspark-gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_INSTALL_PREFIX="$gt" -DBUILD_GMOCK=ON &&
      cmake --build /tmp/dspark-gtest-build -j16 && cmake --install /tmp/dspark-gtest-build; } > /tmp/dspark-gtest.log 2>&1 ||
      _log "FAILED to build GoogleTest (/tmp/dspark-gtest.log)"
  fi
  _prefix="${_prefix:+$_prefix;}$gt"
  _log "GoogleTest built from build-devdeps"
fi
[ -n "$_prefix" ] && DSPARK_CMAKE_ARGS+=("-DCMAKE_PREFIX_PATH=$_prefix")
