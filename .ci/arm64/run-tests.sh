#!/usr/bin/env bash
# The arm64 lane (make test-arm64; not part of .ci/run): the device side on Debian bookworm
# arm64 (python 3.11, the Pi's [pi] pins) under proot + qemu-aarch64 10 (get-qemu.sh), no
# network inside.
#   1. rootfs (build-rootfs.sh), emulator (get-qemu.sh) and venv (install.sh), each skipped
#      when already there
#   2. the test suite as a Cortex-A72 (a Pi 4), with emulator_skips.py's skips and reasons
#   3. the shipped model through Classifier at threads auto/1/2/4, as a Cortex-A72 and as a
#      Cortex-A76 (a Pi 5), against the same script on this x86 host (classify_threads.py)
#   4. `waste-sorter run` on a small rendered scene (default config, mock GPIO) as a
#      Cortex-A72, its sort log against the same run on this host
# Results under build/arm64/results/. Exit 1 when a test failed, a label differed from x86 or
# the scene's records differ; the summary says which.
#   ARM64_STEPS="tests classify scene" (default: all three)   ARM64_PYTEST_ARGS=... (extra)
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=${ARM64_ROOT:-$PWD/build/arm64}
export ARM64_ROOT=$ROOT
RESULTS=$ROOT/results
HOST_PY=${HOST_PYTHON:-.venv/bin/python}
STEPS=${ARM64_STEPS:-tests classify scene}
TRASHNET=${TRASHNET:-../shared/datasets/trashnet}
start=$(date +%s)
status=0
mark() { echo "== arm64 lane: $* ($(( $(date +%s) - start )) s)"; }
# emulated CPU NAME COMMAND...: COMMAND in the rootfs as CPU; its exit status as a shell inside
# the rootfs saw it (RESULTS/NAME.rc). proot's own status is not enough: when qemu itself
# aborted (its heap, "realloc(): invalid pointer"), proot exited 0. No .rc file: 255.
emulated() {
    local cpu=$1 name=$2
    shift 2
    rm -f "$RESULTS/$name.rc"
    .ci/arm64/enter.sh --cpu "$cpu" /bin/sh -c '"$@"; echo $? > "$0"' "$RESULTS/$name.rc" "$@"
    [ -s "$RESULTS/$name.rc" ] || { echo "arm64 lane: $name: no exit status (the emulator died)"; return 255; }
    return "$(cat "$RESULTS/$name.rc")"
}

.ci/arm64/build-rootfs.sh || exit 1
.ci/arm64/get-qemu.sh || exit 1
.ci/arm64/install.sh || exit 1
.ci/arm64/sync-tree.sh || exit 1
rm -rf "$ROOT/tmp" && mkdir -p "$ROOT/tmp" "$RESULTS"
mark "ready"

if [[ " $STEPS " == *" tests "* ]]; then
    mark "tests as cortex-a72"
    # shellcheck disable=SC2086
    emulated cortex-a72 pytest-a72 env PYTHONPATH=.ci/arm64 python -m pytest -p emulator_skips \
        -p no:cacheprovider -q -ra --junitxml="$RESULTS/pytest-a72.xml" ${ARM64_PYTEST_ARGS:-} \
        > "$RESULTS/pytest-a72.txt" 2>&1
    rc=$?
    tail -n 60 "$RESULTS/pytest-a72.txt"
    [ $rc = 0 ] || { echo "arm64 lane: tests failed (rc $rc)"; status=1; }
fi

if [[ " $STEPS " == *" classify "* ]]; then
    mark "classify: x86 reference"
    "$HOST_PY" .ci/arm64/classify_threads.py --trashnet "$TRASHNET" --out "$RESULTS/classify-x86.json" || status=1
    for cpu in cortex-a72 cortex-a76; do
        mark "classify as $cpu"
        emulated "$cpu" "classify-$cpu" python .ci/arm64/classify_threads.py --out "$RESULTS/classify-$cpu.json" \
            > "$RESULTS/classify-$cpu.txt" 2>&1 || status=1
        grep -v cpuinfo "$RESULTS/classify-$cpu.txt"
    done
    "$HOST_PY" .ci/arm64/classify_threads.py --compare "$RESULTS/classify-x86.json" "$RESULTS/classify-cortex-a72.json" \
        "$RESULTS/classify-cortex-a76.json" | tee "$RESULTS/classify-compare.txt" || status=1
fi

if [[ " $STEPS " == *" scene "* ]]; then
    scene=$ROOT/work/scene  # the same path inside and outside
    rm -rf "$scene" && mkdir -p "$scene"
    mark "scene: render (x86) and sort on x86"
    "$HOST_PY" -m device.cli demo-scene --photos "$TRASHNET" --split device/model/split.json --items 4 \
        --overexposed 1 --glare 0 --seed 3 --out "$scene/scene.mp4" > "$scene/render.txt" 2>&1 \
        || { cat "$scene/render.txt"; status=1; }
    GPIOZERO_PIN_FACTORY=mock "$HOST_PY" -m device.cli run --source "$scene/scene.mp4" --log "$scene/sort-x86.jsonl" \
        > "$scene/run-x86.txt" 2>&1 || { tail "$scene/run-x86.txt"; status=1; }
    mark "scene: sort as cortex-a72"
    # -X faulthandler: a crash in the interpreter or an extension prints the Python stack too
    emulated cortex-a72 scene-a72 python -X faulthandler -m device.cli run --source "$scene/scene.mp4" \
        --log "$scene/sort-a72.jsonl" > "$scene/run-a72.txt" 2>&1
    rc=$?
    grep -v cpuinfo "$scene/run-a72.txt" | tail -n 25
    [ $rc = 0 ] || { echo "arm64 lane: waste-sorter run exited $rc as cortex-a72"; status=1; }
    "$HOST_PY" - "$scene" <<'PY' | tee "$RESULTS/scene-compare.txt" || status=1
import json, re, sys
from pathlib import Path
scene = Path(sys.argv[1])
def records(name):
    path = scene / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
x86, arm = records("sort-x86.jsonl"), records("sort-a72.jsonl")
print(f"scene: {len(x86)} records on x86, {len(arm)} as cortex-a72")
same = 0
for a, b in zip(x86, arm):
    kind = lambda r: re.sub(r"[0-9.]+", "N", r.get("reason") or "")  # "low confidence 0.39 < 0.55": the kind
    ok = (a["label"], a["bin"], kind(a)) == (b["label"], b["bin"], kind(b))
    same += ok
    print(f"  item {a['item']}: x86 {a['label']} -> {a['bin']} ({a['confidence']:.3f}); "
          f"a72 {b['label']} -> {b['bin']} ({b['confidence']:.3f}){'' if ok else '  DIFFERENT'}")
print(f"scene: {same}/{max(len(x86), len(arm))} records with the same label, bin and kind of reason")
sys.exit(0 if x86 and same == len(x86) == len(arm) else 1)
PY
fi

mark "done, status $status"
exit $status
