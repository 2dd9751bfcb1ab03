#!/usr/bin/env bash
# Copy the working tree (tracked files and untracked ones git does not ignore, as they are now)
# to build/arm64/work/waste-sorter for the arm64 lane, and link build/arm64/work/shared to
# ../shared. A copy, not a bind: proot cannot bind a folder that holds the rootfs itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${ARM64_ROOT:-$PWD/build/arm64}
DEST=$ROOT/work/waste-sorter
mkdir -p "$DEST"
find "$DEST" -mindepth 1 -maxdepth 1 ! -name '*.egg-info' -exec rm -rf {} +
git ls-files -co --exclude-standard -z \
    | tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$DEST"  # a file deleted but not yet committed: skipped
if [ -d ../shared ]; then ln -sfn "$(cd ../shared && pwd)" "$ROOT/work/shared"; else rm -f "$ROOT/work/shared"; fi
echo "arm64: working tree copied to $DEST ($(git ls-files -co --exclude-standard | wc -l) files)"
