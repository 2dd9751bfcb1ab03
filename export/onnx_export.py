"""Export a training checkpoint to ONNX (opset 18) carrying the model contract.

    waste-sorter export --checkpoint runs/r34/checkpoint.pth --data DIR --out model-fp32.onnx

The model's metadata gets the preprocessing contract (classes, input size, mean/std, resize
policy), the split manifest hash and the checkpoint's validation metrics; a manifest JSON with
the SHA-256 is written beside it. A parity check runs PyTorch and onnxruntime on real photos of
the validation split, preprocessed by the device's own code, and fails above ``--max-delta``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from device.classifier import Classifier
from device.contract import ModelContract, preprocess, read_rgb
from device.errors import DataError, ModelError
from export.models import WEIGHT_CHOICES, build_model, checkpoint_weights, load_checkpoint, unfit
from export.package import save_model
from export.data_split import load_data_split

log = logging.getLogger(__name__)

OPSET = 18  # torch.export-based exporter's native opset (the device needs >= 17)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pth written by train")
    p.add_argument("--data", type=Path, required=True, action="append",
                   help="the ImageFolder the model was trained on (repeat as for train)")
    p.add_argument("--split", type=Path, help="split manifest (default: split.json beside the checkpoint)")
    p.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    p.add_argument("--parity-photos", type=int, default=16, help="validation photos for the parity check")
    p.add_argument("--max-delta", type=float, default=1e-3, help="largest allowed |logit difference|")
    p.add_argument("--weights", choices=WEIGHT_CHOICES, default="best",
                   help="raw or EMA weights; best: the one with the higher validation accuracy")


def model_from_checkpoint(ckpt: dict, weights: str = "best") -> torch.nn.Module:
    model = build_model(ckpt["args"]["arch"], len(ckpt["classes"]), "scratch")
    model.load_state_dict(checkpoint_weights(ckpt, weights))
    return model.eval()


def parity_inputs(split, contract: ModelContract, n: int) -> np.ndarray:
    items = (split.paths("val") or split.paths("train"))[:n]
    return np.stack([preprocess(read_rgb(str(p)), contract) for p, _ in items]).astype(np.float32)


def main(args) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    contract = ModelContract.from_json(ckpt["contract"])
    split_path = args.split or args.checkpoint.parent / "split.json"
    split = load_data_split(split_path, args.data)
    if split.sha256 != ckpt["split_sha256"]:
        raise DataError(f"{split_path}: not the split this checkpoint was trained on")
    try:
        model = model_from_checkpoint(ckpt, args.weights)
    except (KeyError, RuntimeError) as exc:  # a foreign or damaged checkpoint: one line
        raise unfit(args.checkpoint, exc) from None
    dummy = torch.zeros(1, 3, contract.input_height, contract.input_width)
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.onnx"
        batch = torch.export.Dim("N", min=1, max=256)
        torch.onnx.export(model, (dummy,), str(raw_path), input_names=[contract.input_name],
                          output_names=["logits"], dynamic_shapes=({0: batch},), opset_version=OPSET,
                          dynamo=True, external_data=False, verbose=False)
        import onnx

        onnx_model = onnx.load(str(raw_path))
    history = ckpt.get("history") or [{}]
    metrics = {k: v for k, v in history[-1].items() if k.startswith("val_")}
    metrics["epochs"] = len(history)
    extra = {"arch": ckpt["args"]["arch"], "checkpoint": str(args.checkpoint)}
    inputs = parity_inputs(split, contract, args.parity_photos)
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs)).numpy()
    with tempfile.TemporaryDirectory() as tmp:  # --out is written only once the parity check passed
        candidate = Path(tmp) / args.out.name
        save_model(onnx_model, candidate, contract, split_sha256=split.sha256, metrics=metrics, extra=extra)
        got = Classifier(candidate, threads=2).logits(inputs)
    delta = float(np.abs(expected - got).max())
    print(f"parity on {len(inputs)} photos: max |Δlogit| = {delta:.2e} (limit {args.max_delta:.0e})")
    if not delta <= args.max_delta:
        raise ModelError(f"{args.out}: ONNX output differs from PyTorch by {delta:.2e} > {args.max_delta:.0e}; "
                         f"nothing written")
    save_model(onnx_model, args.out, contract, split_sha256=split.sha256, metrics=metrics, extra=extra)
    print(f"wrote {args.out} and its manifest")
    return 0
