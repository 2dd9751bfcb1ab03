"""Static int8 quantization with onnxruntime, guarded by accuracy on the test split.

    waste-sorter quantize --model model-fp32.onnx --data DIR --split runs/r34/split.json --out model-int8.onnx

QDQ format, uint8 activations and per-channel int8 weights (U8S8), calibrated on training photos
preprocessed by the device's own code. U8S8 because onnxruntime's CPU kernels fuse every
convolution and every residual ``Add`` of a ResNet into ``QLinearConv``/``QLinearAdd`` only with
uint8 activations: with int8 activations (S8S8) the last convolution of each block and the
downsample convolutions stay fp32 between DequantizeLinear/QuantizeLinear (see
:func:`fp32_ops_after_optimisation`, and ``waste-sorter bench`` for the speed). Every other
calibration photo is relit on a random board (:mod:`device.scenes.relight`). Reports fp32 and int8
accuracy on the test split, file sizes and latency, and refuses to write a model that loses more than ``--max-drop`` points on the
photos or under any device condition of ``--relight`` (see ``evaluate --relight``).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from device.classifier import Classifier
from device.contract import KEY_METRICS, KEY_SPLIT_SHA256, preprocess
from device.errors import DataError, ModelError
from device.scenes.relight import random_condition, read_frame_shaped, relight
from export.evaluate import relight_names
from export.evaluation import evaluate
from export.package import save_model
from export.data_split import load_data_split

log = logging.getLogger(__name__)

METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
           "entropy": CalibrationMethod.Entropy}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="fp32 ONNX written by export")
    p.add_argument("--data", type=Path, required=True, action="append",
                   help="the ImageFolder of the split (repeat as for train)")
    p.add_argument("--split", type=Path, required=True, help="split manifest (calibration: train, report: test)")
    p.add_argument("--out", type=Path, required=True, help="int8 ONNX to write")
    p.add_argument("--calibration-photos", type=int, default=200, help="training photos to calibrate on")
    p.add_argument("--method", choices=sorted(METHODS), default="percentile")
    p.add_argument("--max-drop", type=float, default=1.0, help="largest allowed accuracy loss (points)")
    p.add_argument("--report", type=Path, help="write the figures as JSON here too")
    p.add_argument("--relight", default="all",
                   help="device conditions the guard checks too (see evaluate --relight); 'none' for photos only")


class PhotoReader(CalibrationDataReader):
    """Feeds preprocessed photos to the calibrator, one at a time: every other one relit on a
    random board under a random light (seeded), so the activation ranges cover what a device
    camera gives as well as the photos."""

    def __init__(self, paths: list[Path], classifier: Classifier, seed: int = 0):
        rng = np.random.default_rng(seed)

        def photo(i: int, path: Path) -> np.ndarray:
            rgb = read_frame_shaped(str(path))
            return relight(rgb, random_condition(rng)) if i % 2 else rgb

        self._inputs = iter(preprocess(photo(i, p), classifier.contract)[None] for i, p in enumerate(paths))
        self._name = classifier.contract.input_name

    def get_next(self):
        x = next(self._inputs, None)
        return None if x is None else {self._name: x}


def latency_ms(classifier: Classifier, runs: int = 20) -> float:
    """Median time of one batch-1 inference (after one warm-up run), for the report."""
    x = np.zeros((1, 3, classifier.contract.input_height, classifier.contract.input_width), np.float32)
    classifier.logits(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        classifier.logits(x)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


#: Float ops that must not be left in a quantized graph once onnxruntime has optimised it.
FLOAT_COMPUTE_OPS = ("Conv", "Add", "Gemm", "MatMul", "FusedConv")


def fp32_ops_after_optimisation(path: Path) -> dict[str, int]:
    """Count of the float compute ops (:data:`FLOAT_COMPUTE_OPS`) that remain in ``path`` after
    onnxruntime's full graph optimisation on this machine (a fully quantized ResNet: none)."""
    import collections

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        options.intra_op_num_threads = 1
        options.log_severity_level = 3  # the "hardware specific optimisations" warning
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    counts = collections.Counter(n.op_type for n in graph.node)
    return {op: counts[op] for op in FLOAT_COMPUTE_OPS if counts[op]}


def accuracy(classifier: Classifier, items: list[tuple[Path, int]], condition: str | None = None,
             label_sets: tuple = ()) -> float:
    """Accuracy on every listed photo (relit under ``condition`` if one is named; labels beyond
    the classes are ``label_sets``, as :attr:`export.evaluation.Evaluation.label_sets`): the
    split's photos must all be readable."""
    result = evaluate(classifier, items, condition=condition, label_sets=label_sets)
    if result.skipped:
        raise DataError(f"{result.skipped[0]}: unreadable photo in the split "
                        f"({len(result.skipped)} in all); accuracy would not cover the whole test split")
    return result.summary()["accuracy"]


def main(args) -> int:
    conditions = [] if args.relight == "none" else relight_names(args.relight)
    fp32 = Classifier(args.model, threads=2)
    split = trained_split(args, fp32)
    train = split.paths("train")
    step = max(1, len(train) // args.calibration_photos)
    calibration = [p for p, _ in train[::step][:args.calibration_photos]]
    model = quantize_int8(args.model, calibration, fp32, args.method)
    test = split.paths("test") or split.paths("val")
    report = measure(args, model, fp32, split.sha256, test, conditions, len(calibration), split.label_sets)
    worst, drop_points = print_figures(report, len(test), conditions)
    if args.report:
        args.report.write_text(json.dumps(report, indent=1) + "\n")
    if drop_points > args.max_drop:
        raise ModelError(f"int8 loses {drop_points:.2f} points ({worst}) (> --max-drop {args.max_drop}); "
                         "nothing written")
    save_model(model, args.out, fp32.contract, split_sha256=split.sha256,
               metrics={k: v for k, v in report.items()}, extra={"quantization": "QDQ U8S8 (uint8 activations, per-channel int8 weights)",
                                                                  "fp32_model": args.model.name})
    print(f"wrote {args.out} and its manifest")
    return 0


def trained_split(args, fp32: Classifier):
    """The split manifest ``--split``, checked to be the one the fp32 model was trained on."""
    split = load_data_split(args.split, args.data)
    if list(split.classes) != list(fp32.classes):
        raise ModelError(f"{args.model}: classes {fp32.classes} differ from the split's {split.classes}")
    split_sha256 = fp32.metadata.get(KEY_SPLIT_SHA256, "")
    if split_sha256 != split.sha256:
        raise ModelError(f"{args.split}: not the split {args.model.name} was trained on "
                         f"({split.sha256[:12]} vs {split_sha256[:12] or 'none'})")
    return split


def quantize_int8(model_path: Path, calibration: list[Path], fp32: Classifier, method: str) -> onnx.ModelProto:
    """The int8 model (QDQ, U8S8, per-channel weights), calibrated on the ``calibration`` photos."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        int8_path = Path(tmp) / "int8.onnx"
        quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(int8_path), PhotoReader(calibration, fp32),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, calibrate_method=METHODS[method],
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        return onnx.load(str(int8_path))


def measure(args, model: onnx.ModelProto, fp32: Classifier, split_sha256: str, test: list[tuple[Path, int]],
            conditions: list[str], calibration_photos: int, label_sets: tuple = ()) -> dict:
    """The report: the fp32 model's recorded metrics, then both models' accuracy on the test
    photos (as they are and relit), sizes, latency and the float ops left in the int8 model
    (saved to a temporary file to be measured as the device would load it)."""
    metrics = json.loads(fp32.metadata.get(KEY_METRICS, "{}"))
    metrics.update({"test_n": len(test), "test_acc_fp32": accuracy(fp32, test, label_sets=label_sets),
                    "relit_acc_fp32": {c: accuracy(fp32, test, c, label_sets) for c in conditions}})
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / args.out.name
        save_model(model, candidate, fp32.contract, split_sha256=split_sha256)
        int8 = Classifier(candidate, threads=2)
        metrics["test_acc_int8"] = accuracy(int8, test, label_sets=label_sets)
        metrics["relit_acc_int8"] = {c: accuracy(int8, test, c, label_sets) for c in conditions}
        return {
            **metrics,
            "fp32_bytes": args.model.stat().st_size, "int8_bytes": candidate.stat().st_size,
            "fp32_latency_ms_2threads": latency_ms(fp32), "int8_latency_ms_2threads": latency_ms(int8),
            "calibration_photos": calibration_photos, "method": args.method,
            "fp32_ops_left": fp32_ops_after_optimisation(candidate),
        }


def print_figures(report: dict, test_n: int, conditions: list[str]) -> tuple[str, float]:
    """Print the accuracy of both models (and its drop), the float ops left, sizes and latency;
    the worst drop in points and where (``photo`` or a condition)."""
    drops = {"photo": 100 * (report["test_acc_fp32"] - report["test_acc_int8"])}
    print(f"test split ({test_n} photos): fp32 {100 * report['test_acc_fp32']:.2f}%  "
          f"int8 {100 * report['test_acc_int8']:.2f}%  (drop {drops['photo']:+.2f} points)")
    for c in conditions:
        drops[c] = 100 * (report["relit_acc_fp32"][c] - report["relit_acc_int8"][c])
        print(f"  relit {c:<6}: fp32 {100 * report['relit_acc_fp32'][c]:.2f}%  "
              f"int8 {100 * report['relit_acc_int8'][c]:.2f}%  (drop {drops[c]:+.2f} points)")
    worst = max(drops, key=drops.get)
    print(f"float compute ops left after optimisation: {report['fp32_ops_left'] or 'none'}")
    print(f"size: fp32 {report['fp32_bytes'] / 1e6:.1f} MB  int8 {report['int8_bytes'] / 1e6:.1f} MB; "
          f"latency (batch 1, 2 threads, this machine): fp32 {report['fp32_latency_ms_2threads']:.1f} ms  "
          f"int8 {report['int8_latency_ms_2threads']:.1f} ms")
    return worst, drops[worst]
