#!/usr/bin/env bash
# A Debian bookworm arm64 userland for the arm64 lane (make test-arm64), built without root
# privileges inside it and without binfmt_misc: debootstrap --foreign on the host, then the
# second stage under proot + qemu-aarch64-static. Skipped when build/arm64/rootfs is complete.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${ARM64_ROOT:-build/arm64}
ROOTFS=$ROOT/rootfs
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ -f "$ROOTFS/.complete" ]; then
    echo "arm64 rootfs: $ROOTFS exists (rm -rf $ROOTFS to rebuild)"
    exit 0
fi
for tool in debootstrap proot qemu-aarch64-static; do
    command -v "$tool" >/dev/null || { echo "arm64 lane: $tool is missing (apt-get install debootstrap proot qemu-user-static)" >&2; exit 3; }
done
rm -rf "$ROOTFS" && mkdir -p "$ROOTFS"
echo "arm64 rootfs: first stage (debootstrap --foreign, $MIRROR)"
debootstrap --foreign --arch=arm64 --variant=minbase --include=python3,python3-venv \
    bookworm "$ROOTFS" "$MIRROR" > "$ROOT/debootstrap-1.log" 2>&1 \
    || { tail -20 "$ROOT/debootstrap-1.log" >&2; exit 1; }
# debootstrap run in a container links /proc in the target to the host's; proot binds it instead
if [ -L "$ROOTFS/proc" ]; then rm "$ROOTFS/proc" && mkdir "$ROOTFS/proc"; fi
echo "arm64 rootfs: second stage under proot + qemu-aarch64-static (several minutes)"
# -0: proot fakes root (dpkg wants uid 0); /dev, /proc, /sys from the host.
proot -0 -q qemu-aarch64-static -r "$ROOTFS" -w / -b /dev -b /proc -b /sys \
    /usr/bin/env DEBOOTSTRAP_DIR=/debootstrap /debootstrap/debootstrap --second-stage > "$ROOT/debootstrap-2.log" 2>&1 \
    || { tail -20 "$ROOT/debootstrap-2.log" >&2; exit 1; }
proot -0 -q qemu-aarch64-static -r "$ROOTFS" -w / python3 -c 'import platform, sys; print("arm64 rootfs:", platform.machine(), sys.version.split()[0])'
touch "$ROOTFS/.complete"
