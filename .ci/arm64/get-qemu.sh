#!/usr/bin/env bash
# The emulator of the arm64 lane: qemu-aarch64 10.0 (static-pie) from Debian bookworm-backports,
# fetched with a private apt list (the host's apt sources are not touched) and unpacked into
# build/arm64/qemu/. Why not bookworm's own qemu-user-static 7.2: its heap broke under this
# suite (qemu itself aborting with "realloc(): invalid pointer", which proot then reported as
# exit 0): tests/test_bench.py crashed at its third test 2 runs of 2 with 7.2, 0 with 10.0.
# Skipped when build/arm64/qemu/qemu-aarch64 is there.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${ARM64_ROOT:-$PWD/build/arm64}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
QEMU=$ROOT/qemu/qemu-aarch64
if [ -x "$QEMU" ]; then
    echo "arm64 qemu: $("$QEMU" --version | head -1) ($QEMU)"
    exit 0
fi
apt_dir=$ROOT/qemu/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
echo "deb $MIRROR bookworm-backports main" > "$apt_dir/sources.list"
opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
      -o "APT::Sandbox::User=root")
apt-get "${opts[@]}" update -qq
(cd "$apt_dir" && apt-get "${opts[@]}" download -qq qemu-user/bookworm-backports)
rm -rf "$apt_dir/x" && dpkg-deb -x "$apt_dir"/qemu-user_*.deb "$apt_dir/x"
cp "$apt_dir/x/usr/bin/qemu-aarch64" "$QEMU.tmp" && mv "$QEMU.tmp" "$QEMU"
rm -rf "$apt_dir/x"
echo "arm64 qemu: $("$QEMU" --version | head -1) ($QEMU)"
