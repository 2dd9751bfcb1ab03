#!/bin/sh
# Learn from the bin, measured (README, "Learn from the bin"): the shipped model on a scene of
# one board under a warm light, before and after a fine-tune on the captures of another scene
# of that board and light (other photos: TrashNet's train split there, its test split here).
#
#   export/learn_demo.sh [OUT]      # default build/learn-demo; TRASHNET=DIR, EPOCHS=N
#
# Needs the train extra (pip install -e '.[train]'). About 16 minutes on two x86 cores (6 of
# them training). Figures: OUT/score-before.txt, score-after.txt, evaluate-*.txt, train-time.txt.
set -eu
D=${TRASHNET:-../shared/datasets/trashnet}
OUT=${1:-build/learn-demo}
EPOCHS=${EPOCHS:-4}
BIN=${BIN:-.venv/bin}
WS=$BIN/waste-sorter
SPLIT=device/model/split.json
SHIPPED=device/model/waste-sorter-resnet34-int8.onnx
MODEL=$OUT/model/waste-sorter-ft-int8.onnx
# One board (texture 7) under warm tungsten-like light; normal items only, with shake and noise.
SCENE="--photos $D --split $SPLIT --board-seed 7 --light warm --overexposed 0 --glare 0 --shake-px 1 --noise 3"
mkdir -p "$OUT"

# 1. The capture scene: 160 training photos; every item captured (sample_every = 1).
$WS demo-scene $SCENE --subset train --items 160 --seed 101 --out "$OUT/capture.mp4"
cat > "$OUT/capture.toml" <<EOF
[capture]
enabled = true
dir = "$OUT/caps"
sample_every = 1
max_mb = 5000.0

[gpio]
pin_factory = "mock"
EOF
rm -rf "$OUT/caps" "$OUT/capture.jsonl" "$OUT/export"
$WS run --config "$OUT/capture.toml" --source "$OUT/capture.mp4" --log "$OUT/capture.jsonl"

# 2. Label each capture with its item's class from the truth file (what a person would do with
#    `captures label`); a capture of no item (a phantom) or an item's second record: skip.
$BIN/python - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
from device.cli import main
from device.commands.score_scene import match
from device.sortlog import read_records
out = Path(sys.argv[1])
truth = json.loads((out / "capture.truth.json").read_text())
records = [r for r in read_records(out / "capture.jsonl") if r.get("capture_id")]
per_item, phantoms = match(truth["items"], records)
labels = {str(r["capture_id"]): (item["label"] if k == 0 else "skip")
          for item, rs in zip(truth["items"], per_item) for k, r in enumerate(rs)}
labels.update({str(r["capture_id"]): "skip" for r in phantoms})
for name in sorted(set(labels.values())):
    assert main(["captures", "label", "--dir", str(out / "caps"),
                 *[i for i, label in labels.items() if label == name], name]) == 0
EOF
$WS captures export --dir "$OUT/caps" --out "$OUT/export"

# 3. The evaluation scene: 130 test photos on the same board under the same light; the shipped model.
$WS demo-scene $SCENE --subset test --items 130 --seed 202 --out "$OUT/eval.mp4"
rm -f "$OUT/eval-before.jsonl" "$OUT/eval-after.jsonl"
GPIOZERO_PIN_FACTORY=mock $WS run --source "$OUT/eval.mp4" --log "$OUT/eval-before.jsonl" > "$OUT/run-before.txt"
$WS score-scene --truth "$OUT/eval.truth.json" --log "$OUT/eval-before.jsonl" --reference > "$OUT/score-before.txt"
cat "$OUT/score-before.txt"

# 4. Fine-tune from the shipped model (TrashNet keeps the shipped split; 50 photos per class
#    replayed), export, quantize (U8S8, accuracy guard; writes the manifest), sort the same scene.
start=$(date +%s)
$WS train --data "$D" --data "$OUT/export" --split $SPLIT --output-dir "$OUT/run" --init $SHIPPED \
  --input-size 288 --epochs "$EPOCHS" --lr 0.003 --replay-per-class 50 --model-ema-decay 0.99 > "$OUT/train.log" 2>&1
echo "train: $(( $(date +%s) - start )) s" > "$OUT/train-time.txt"
cat "$OUT/train-time.txt"
$WS export --checkpoint "$OUT/run/checkpoint.pth" --data "$D" --data "$OUT/export" --out "$OUT/run/model-fp32.onnx"
mkdir -p "$OUT/model"
$WS quantize --model "$OUT/run/model-fp32.onnx" --data "$D" --data "$OUT/export" --split "$OUT/run/split.json" \
  --out "$MODEL" --report "$OUT/run/quantize.json"
GPIOZERO_PIN_FACTORY=mock $WS run --source "$OUT/eval.mp4" --model "$MODEL" --log "$OUT/eval-after.jsonl" > "$OUT/run-after.txt"
$WS score-scene --truth "$OUT/eval.truth.json" --log "$OUT/eval-after.jsonl" --reference --model "$MODEL" \
  > "$OUT/score-after.txt"
cat "$OUT/score-after.txt"

# 5. Were the photos kept? TrashNet's test split as it is and relit (compare device/model/REPORT.md).
$WS evaluate --model "$MODEL" --data "$D" --split $SPLIT --subset test --relight all > "$OUT/evaluate-after.txt"
$WS evaluate --model "$MODEL" --data "$D" --data "$OUT/export" --split "$OUT/run/split.json" --subset test \
  > "$OUT/evaluate-device-after.txt"
$WS evaluate --data "$D" --data "$OUT/export" --split "$OUT/run/split.json" --subset test \
  > "$OUT/evaluate-device-before.txt"
echo "done: $OUT (score-before.txt, score-after.txt, evaluate-*.txt, train.log)"
