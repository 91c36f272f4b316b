#!/usr/bin/env bash
# Builds the local base image `dspark-base:bookworm` from a debootstrap root file system, for
# machines that cannot reach a container registry (deploy/Dockerfile starts FROM it).
#
#   sudo deploy/build_base_image.sh [MIRROR]     (default http://deb.debian.org/debian)
#
# Needs debootstrap and podman (installed here when missing). Safe to repeat: an existing image
# is kept unless REBUILD=1.
set -euo pipefail

IMAGE=${IMAGE:-dspark-base:bookworm}
MIRROR=${1:-http://deb.debian.org/debian}
# podman on this kind of host (rootful, no systemd, small limits) needs these flags.
PODMAN_FLAGS=(--runtime runc)

if [ "${REBUILD:-0}" != 1 ] && podman image exists "$IMAGE" 2>/dev/null; then
  echo "build_base_image: $IMAGE exists (REBUILD=1 to redo it)"
  exit 0
fi
for tool in debootstrap podman; do
  command -v "$tool" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$tool"
done

rootfs=$(mktemp -d /tmp/dspark-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
# minbase: apt, dpkg and the essentials only; the Dockerfile installs what the build needs.
debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR"
echo "deb $MIRROR bookworm main" > "$rootfs/etc/apt/sources.list"
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | podman "${PODMAN_FLAGS[@]}" import - "$IMAGE"
echo "build_base_image: built $IMAGE"
