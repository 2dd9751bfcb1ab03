#!/bin/sh
# The model's recipe on one GPU (README, "Training on GPUs"): teacher 6 (EfficientNet-Lite0 from
# ImageNet) on TrashNet and waste-web with the session-17 label map, run 17 (the shipped
# ResNet-34 distilled from it, 224 -> 288 px), export, quantize, evaluate --relight all.
#
#   export/train_gpu.sh [OUT]      # default build/train-gpu; TRASHNET=DIR WASTE_WEB=DIR,
#                                  # WORKERS=N (default: the CPUs less one), BIN=DIR
#
# Needs the train extra and a CUDA GPU (bf16). Not measured on a GPU yet: expected 15-30 min on
# one H100 with 16 CPU cores, bounded by the data loader's relighting (about 50-100 photos a
# second per CPU core measured here), not by the GPU. Minutes per stage: OUT/times.txt.
set -eu
D=${TRASHNET:-../shared/datasets/trashnet}
W=${WASTE_WEB:-../shared/datasets/waste-web}
OUT=${1:-build/train-gpu}
BIN=${BIN:-.venv/bin}
WS=$BIN/waste-sorter
GPU="--device cuda${WORKERS:+ --workers $WORKERS}"
LM="--label-map paper-or-cardboard=cardboard,paper --label-map other-carton=trash --label-map other-organic=trash
    --label-map other-textile=trash --label-map other-wood=trash"
mkdir -p "$OUT"
: > "$OUT/times.txt"
stage() {  # stage NAME COMMAND...: run it, append its minutes to times.txt
    name=$1; shift
    start=$(date +%s)
    "$@"
    echo "$name $(( ($(date +%s) - start + 30) / 60 )) min" >> "$OUT/times.txt"
}

# shellcheck disable=SC2086  # $GPU and $LM are lists of options
stage teacher $WS train $GPU --data "$D" --data "$W" --split device/model/split.json --test-frac 0.2 $LM \
  --output-dir "$OUT/t6" --train-on-val --arch efficientnet_lite0 --init imagenet --input-size 224 --epochs 8 \
  --opt adamw --lr 1e-3 --weight-decay 0.05 --model-ema-decay 0.99 --min-crop-scale 0.35 --mixup 0.5 \
  --flatfield border --relight-prob 0.8 --textured-board-prob 0.6 --camera-prob 0.5
S="$OUT/t6/split.json"
# shellcheck disable=SC2086
stage student $WS train $GPU --data "$D" --data "$W" --split "$S" $LM --output-dir "$OUT/r34" --train-on-val \
  --arch resnet34 --init device/model/waste-sorter-resnet34-int8.onnx --input-size 288 --min-input-size 224 \
  --epochs 10 --lr 0.004 --mixup 0.5 --model-ema-decay 0.995 --flatfield border --relight-prob 0.7 \
  --textured-board-prob 0.6 --camera-prob 0.5 --teacher "$OUT/t6/checkpoint.pth" --kd-weight 0.5 \
  --feature-weight 0.5 --seed 0
stage export $WS export --checkpoint "$OUT/r34/checkpoint.pth" --data "$D" --data "$W" --split "$S" \
  --out "$OUT/r34/model-fp32.onnx"
stage quantize $WS quantize --model "$OUT/r34/model-fp32.onnx" --data "$D" --data "$W" --split "$S" \
  --out "$OUT/r34/model-int8.onnx" --report "$OUT/r34/quantize.json"
stage evaluate $WS evaluate --data "$D" --data "$W" --split "$S" --subset test --relight all \
  --model "$OUT/r34/model-int8.onnx" --out-dir "$OUT/eval" --json > "$OUT/evaluate.json"
cat "$OUT/times.txt"
