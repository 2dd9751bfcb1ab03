#!/usr/bin/env bash
# The device side in the arm64 rootfs: aarch64 wheels downloaded on the host (pip download
# --platform ...aarch64, python 3.11 = bookworm's python3) into build/arm64/wheels, then a venv
# inside the rootfs installed from them only (--no-index: no network inside). What is
# installed is what a Pi gets (systemd/install.sh: `pip install .[pi]`: numpy<2, opencv<4.12,
# lgpio) plus the dev extra for the tests; not the train extra (torch). Skipped when the
# venv was installed from the same pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${ARM64_ROOT:-$PWD/build/arm64}
HOST_PY=${HOST_PYTHON:-.venv/bin/python}
stamp=$(sha256sum pyproject.toml | cut -c1-16)
if [ -f "$ROOT/venv/.installed" ] && [ "$(cat "$ROOT/venv/.installed")" = "$stamp" ]; then
    echo "arm64 venv: installed from this pyproject.toml ($ROOT/venv)"
    exit 0
fi
# pyproject's dependencies + the pi and dev extras (one source of truth for both sides)
"$HOST_PY" - > "$ROOT/requirements.txt" <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
print("\n".join(project["dependencies"] + extras["pi"] + extras["dev"] + ["setuptools>=77"]))
PY
platforms=()
for tag in 2014 _2_17 _2_24 _2_26 _2_27 _2_28 _2_31 _2_34 _2_35 _2_36; do  # bookworm: glibc 2.36
    platforms+=(--platform "manylinux${tag}_aarch64")
done
echo "arm64 venv: downloading aarch64 wheels for python 3.11 into $ROOT/wheels"
"$HOST_PY" -m pip download -q --dest "$ROOT/wheels" --only-binary=:all: --python-version 3.11 \
    --implementation cp --abi cp311 "${platforms[@]}" -r "$ROOT/requirements.txt" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
.ci/arm64/sync-tree.sh
echo "arm64 venv: installing inside the rootfs (emulated: several minutes)"
rm -rf "$ROOT/venv"
.ci/arm64/enter.sh /bin/sh -ec "
    python3 -m venv $ROOT/venv
    $ROOT/venv/bin/pip install -q --no-index --find-links $ROOT/wheels -e '.[pi,dev]'
    $ROOT/venv/bin/python -c 'import numpy, cv2, onnxruntime, gpiozero, platform; print(\"arm64 venv:\", platform.machine(), \"numpy\", numpy.__version__, \"opencv\", cv2.__version__, \"onnxruntime\", onnxruntime.__version__)'
"
echo "$stamp" > "$ROOT/venv/.installed"
