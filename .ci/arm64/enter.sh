#!/usr/bin/env bash
# Run a command in the arm64 rootfs under proot + qemu-aarch64 (get-qemu.sh; ARM64_QEMU=PATH for another):
#   .ci/arm64/enter.sh [--cpu cortex-a72|cortex-a76|max] COMMAND...
# Inside, the working directory is the copy of the working tree (sync-tree.sh), the python is
# the lane's venv; the environment is clean, with WASTE_SORTER_EMULATED=1 (tests that cannot
# work under qemu-user skip on it, each with its reason).
#
# Layout: everything the tests touch (the tree copy, the venv, TMPDIR, the wheel cache, the
# shared TrashNet folder) sits at the SAME path inside and outside the rootfs. Debian
# bookworm's proot 5.1 under -q (qemu) does not translate the paths of faccessat/faccessat2/
# statx (os.access, coreutils' stat/ls) nor, an earlier probe found, of sendto() to a Unix socket: they see the
# host's file system. With identical paths they see the same files.
# /proc is the host's (tests read /proc/self/status, /proc/self/fd); /sys is NOT bound: with
# the host's /sys and /proc both, onnxruntime's cpuinfo takes the x86 host's CPU lists for an
# arm64 machine and `import onnxruntime` segfaults (6 of 6 runs). Without /sys cpuinfo gives
# up ("cpuinfo_initialize failed", printed on stderr) and onnxruntime reads the CPU features
# from the auxiliary vector, which qemu fills for the emulated CPU (-cpu).
# qemu runs with -R 64G (ARM64_QEMU_ARGS replaces it): the guest's address space reserved up
# front. Without it, qemu 7.2 maps the guest's memory among the host's, and a large block
# freed (malloc 1 GiB, free; or onnxruntime unloading a model) was followed by heap
# corruption: "malloc(): smallbin double linked list corrupted", SIGSEGV (bisect_crash.py).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
ROOT=${ARM64_ROOT:-$REPO/build/arm64}
CPU=cortex-a72
QEMU=${ARM64_QEMU:-$ROOT/qemu/qemu-aarch64}  # install.sh puts bookworm-backports' qemu 10 there
if [ "${1:-}" = --cpu ]; then CPU=$2; shift 2; fi
mkdir -p "$ROOT/work" "$ROOT/venv" "$ROOT/tmp" "$ROOT/wheels" "$ROOT/results"
binds=(-b /dev -b /proc)  # not /sys: see above
shared=$(readlink -f "$ROOT/work/shared" 2>/dev/null || true)  # sync-tree.sh links it to ../shared
[ -n "$shared" ] && [ -d "$shared" ] || shared=
for dir in "$ROOT/work" "$ROOT/venv" "$ROOT/tmp" "$ROOT/wheels" "$ROOT/results" $shared; do
    mkdir -p "$ROOT/rootfs$dir"  # a real mount point: exec through proot's made-up ones fails
    binds+=(-b "$dir:$dir")
done
cd "$ROOT/work/waste-sorter" 2>/dev/null || cd "$ROOT/work"
exec env -i HOME=/root LANG=C.UTF-8 TERM=dumb TMPDIR="$ROOT/tmp" \
    PATH="$ROOT/venv/bin:/usr/local/bin:/usr/bin:/bin" \
    ARM64_ROOT="$ROOT" WASTE_SORTER_EMULATED=1 ARM64_CPU="$CPU" GPIOZERO_PIN_FACTORY=mock \
    PYTHONDONTWRITEBYTECODE=1 \
    proot -q "$QEMU -cpu $CPU ${ARM64_QEMU_ARGS--R 64G}" -r "$ROOT/rootfs" "${binds[@]}" -w "$PWD" "$@"
