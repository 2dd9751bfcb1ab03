"""Static int8 quantization with onnxruntime, guarded by accuracy on the test split.

    waste-sorter quantize --model model-fp32.onnx --data DIR --split runs/r34/split.json --out model-int8.onnx

QDQ format, int8 activations and per-channel int8 weights, calibrated on training photos
preprocessed by the device's own code. Reports fp32 and int8 accuracy on the test split, file
sizes and latency, and refuses to write a model that loses more than ``--max-drop`` points.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from device.classifier import Classifier
from device.contract import KEY_METRICS, KEY_SPLIT_SHA256, preprocess, read_rgb
from device.errors import DataError, ModelError
from device.bench import latency_ms
from export.evaluate import evaluate
from export.package import save_model
from export.split import load_split

log = logging.getLogger(__name__)

METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
           "entropy": CalibrationMethod.Entropy}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="fp32 ONNX written by export")
    p.add_argument("--data", type=Path, required=True, help="the ImageFolder of the split")
    p.add_argument("--split", type=Path, required=True, help="split manifest (calibration: train, report: test)")
    p.add_argument("--out", type=Path, required=True, help="int8 ONNX to write")
    p.add_argument("--calibration-photos", type=int, default=200, help="training photos to calibrate on")
    p.add_argument("--method", choices=sorted(METHODS), default="percentile")
    p.add_argument("--max-drop", type=float, default=1.0, help="largest allowed accuracy loss (points)")
    p.add_argument("--report", type=Path, help="write the figures as JSON here too")


class PhotoReader(CalibrationDataReader):
    """Feeds preprocessed photos to the calibrator, one at a time."""

    def __init__(self, paths: list[Path], classifier: Classifier):
        self._inputs = iter(preprocess(read_rgb(str(p)), classifier.contract)[None] for p in paths)
        self._name = classifier.contract.input_name

    def get_next(self):
        x = next(self._inputs, None)
        return None if x is None else {self._name: x}


def accuracy(classifier: Classifier, items: list[tuple[Path, int]]) -> float:
    """Accuracy on every listed photo: the split's photos must all be readable."""
    result = evaluate(classifier, items)
    if result.skipped:
        raise DataError(f"{result.skipped[0]}: unreadable photo in the split "
                        f"({len(result.skipped)} in all); accuracy would not cover the whole test split")
    return result.summary()["accuracy"]


def main(args) -> int:
    fp32 = Classifier(args.model, threads=2)
    split = load_split(args.split, args.data)
    if list(split.classes) != list(fp32.classes):
        raise ModelError(f"{args.model}: classes {fp32.classes} differ from the split's {split.classes}")
    split_sha256 = fp32.metadata.get(KEY_SPLIT_SHA256, "")
    if split_sha256 != split.sha256:
        raise ModelError(f"{args.split}: not the split {args.model.name} was trained on "
                         f"({split.sha256[:12]} vs {split_sha256[:12] or 'none'})")
    train = split.paths("train")
    step = max(1, len(train) // args.calibration_photos)
    calibration = [p for p, _ in train[::step][:args.calibration_photos]]
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quantized = Path(tmp) / "int8.onnx"
        quant_pre_process(str(args.model), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(quantized), PhotoReader(calibration, fp32),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, per_channel=True, calibrate_method=METHODS[args.method],
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        model = onnx.load(str(quantized))
    test = split.paths("test") or split.paths("val")
    metrics = json.loads(fp32.metadata.get(KEY_METRICS, "{}"))
    metrics.update({"test_n": len(test), "test_acc_fp32": accuracy(fp32, test)})
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / args.out.name
        save_model(model, candidate, fp32.contract, split_sha256=split_sha256)
        int8 = Classifier(candidate, threads=2)
        metrics["test_acc_int8"] = accuracy(int8, test)
        report = {
            **metrics,
            "fp32_bytes": args.model.stat().st_size, "int8_bytes": candidate.stat().st_size,
            "fp32_latency_ms_2threads": latency_ms(fp32), "int8_latency_ms_2threads": latency_ms(int8),
            "calibration_photos": len(calibration), "method": args.method,
        }
    drop_points = 100 * (metrics["test_acc_fp32"] - metrics["test_acc_int8"])
    print(f"test split ({len(test)} photos): fp32 {100 * metrics['test_acc_fp32']:.2f}%  "
          f"int8 {100 * metrics['test_acc_int8']:.2f}%  (drop {drop_points:+.2f} points)")
    print(f"size: fp32 {report['fp32_bytes'] / 1e6:.1f} MB  int8 {report['int8_bytes'] / 1e6:.1f} MB; "
          f"latency (batch 1, 2 threads, this machine): fp32 {report['fp32_latency_ms_2threads']:.1f} ms  "
          f"int8 {report['int8_latency_ms_2threads']:.1f} ms")
    if args.report:
        args.report.write_text(json.dumps(report, indent=1) + "\n")
    if drop_points > args.max_drop:
        raise ModelError(f"int8 loses {drop_points:.2f} points (> --max-drop {args.max_drop}); nothing written")
    save_model(model, args.out, fp32.contract, split_sha256=split_sha256,
               metrics={k: v for k, v in report.items()}, extra={"quantization": "QDQ int8 per-channel",
                                                                  "fp32_model": args.model.name})
    print(f"wrote {args.out} and its manifest")
    return 0
