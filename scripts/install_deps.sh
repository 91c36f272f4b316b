#!/usr/bin/env bash
# Installs the build and test dependencies that are missing (Debian packages, then Python
# packages for the test references). Safe to repeat: does nothing when all are present.
set -euo pipefail

apt_packages=(cmake ninja-build g++ make libcaf-dev libzmq3-dev cppzmq-dev nlohmann-json3-dev
              libgtest-dev libgmock-dev libpcre2-dev pkg-config python3 python3-pip
              libcpp-httplib-dev python3-yaml)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install_deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python tools used by tests and scripts (test references, the training toolkit's CPU parts,
# scripts/plot_load.py).
# Entries are PIP_NAME or PIP_NAME:MODULE when the module is named otherwise.
py_packages=(numpy pyzmq:zmq pytest matplotlib)
for entry in "${py_packages[@]}"; do
  p="${entry%%:*}"; m="${entry#*:}"
  python3 -c "import $m" 2>/dev/null || python3 -m pip install -q "$p"
done
