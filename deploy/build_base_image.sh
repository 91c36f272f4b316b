#!/usr/bin/env bash
# Builds the local base image `dspark-base:bookworm` from a debootstrap root file system, for
# machines that cannot reach a container registry (deploy/Dockerfile starts FROM it).
#
#   sudo deploy/build_base_image.sh [MIRROR]     (default http://deb.debian.org/debian)
#
# The image's apt sources are bookworm, bookworm-updates and bookworm-security (SECURITY_MIRROR,
# default the MIRROR's host + /debian-security); the image is upgraded to the security fixes.
#
# Needs debootstrap and podman (installed here when missing). Safe to repeat: an existing image
# is kept unless REBUILD=1.
set -euo pipefail

IMAGE=${IMAGE:-dspark-base:bookworm}
MIRROR=${1:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-${MIRROR%/debian}/debian-security}
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
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY_MIRROR bookworm-security main
EOF
# The release as debootstrap fetched it, plus its security fixes, in the one image layer.
chroot "$rootfs" apt-get update -qq
chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -qq
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | podman "${PODMAN_FLAGS[@]}" import - "$IMAGE"
echo "build_base_image: built $IMAGE"
