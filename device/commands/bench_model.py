"""The bench's model figures: latency of the int8 model and its fp32 twin, their multiply-accumulates
and an ESTIMATE of what they cost on a Raspberry Pi 4 and 5.

The fp32 twin (:func:`device.commands.model_twin.fp32_twin_bytes`) is written with a manifest into the
bench's temporary folder, so :class:`~device.classifier.Classifier` loads it exactly like the
shipped model. Building it needs the ``onnx`` package (a dev/train extra, not on a Pi); without
it the twin is skipped with a note, and the multiply-accumulates fall back to a ResNet-34 figure
scaled to the contract's input size.

Pi figures are an estimate, not a measurement: MACs times milliseconds per GMAC, derived from
the ncnn benchmark figures quoted in issue 16 (a 288x216 ResNet-34 frame, about 215 ms on a Pi 4
at 4 threads and 45 ms on a Pi 5, fp32; ResNet-34 is 3.6 GMAC at 224x224). ncnn's own table
(github.com/Tencent/ncnn, benchmark/README.md, "Raspberry Pi 4 Model B", 4 threads, 224x224:
resnet18 234 ms for 1.8 GMAC, resnet50 487 ms for 4.1 GMAC) gives about 2.5x more per GMAC; the
bench prints that figure beside it as the pessimistic end.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from device.commands.bench_stats import spread, timed_ms
from device.classifier import Classifier, manifest_path_for, sha256_bytes
from device.contract import preprocess
from device.selftest import reference_image

log = logging.getLogger(__name__)

THREADS = (1, 2, 4)
BATCHES = (1, 3)
TWIN_SKIPPED = "fp32 twin: skipped (needs the onnx package: pip install -e .[dev])"

RESNET34_GMAC_224 = 3.6  # torchvision's ResNet-34 at 224x224
_ISSUE_GMAC = RESNET34_GMAC_224 * (288 * 216) / (224 * 224)  # the frame the issue's figures are for
PI4_MS_PER_GMAC = 215.0 / _ISSUE_GMAC  # issue 16: ~215 ms per 288x216 ResNet-34 frame, Pi 4, 4 threads
PI5_MS_PER_GMAC = 45.0 / _ISSUE_GMAC  # issue 16: ~45 ms on a Pi 5
PI4_NCNN_TABLE_MS_PER_GMAC = 487.0 / 4.1  # ncnn benchmark/README.md, Pi 4, resnet50 fp32, 4 threads


def write_twin(model_path: Path, folder: Path) -> Path | None:
    """The fp32 twin of ``model_path`` with a manifest in ``folder``; None without ``onnx``."""
    try:
        from device.commands.model_twin import fp32_twin_bytes

        data = fp32_twin_bytes(model_path)
    except ImportError:
        return None
    path = folder / "fp32-twin.onnx"
    path.write_bytes(data)
    manifest = {"model": path.name, "sha256": sha256_bytes(data), "bytes": len(data),
                "twin_of": Path(model_path).name}
    manifest_path_for(path).write_text(json.dumps(manifest, indent=1) + "\n")
    return path


def model_latency(model_path: Path | None, name: str, repeats: int) -> dict[str, float]:
    """``model_{name}_{t}thread_batch{b}_ms_median`` / ``_p95``: the model alone (logits of a
    preprocessed batch), after two warm-up runs, for every thread count and batch size."""
    figures: dict[str, float] = {}
    for threads in THREADS:
        with Classifier(model_path, threads=threads) as classifier:
            frame = preprocess(reference_image(), classifier.contract)
            for batch in BATCHES:
                x = np.repeat(frame[None], batch, axis=0)
                for _ in range(2):
                    classifier.logits(x)
                times = [timed_ms(classifier.logits, x)[0] for _ in range(repeats)]
                figures.update(spread(f"model_{name}_{threads}thread_batch{batch}_ms", times))
    return figures


def single_frame_ms(classifier: Classifier, repeats: int) -> list[float]:
    """Times of one frame through ``classifier.probabilities`` (preprocessing and model), as the
    inference worker runs it for a single 512x384 frame."""
    image = reference_image()
    classifier.probabilities([image])
    return [timed_ms(classifier.probabilities, [image])[0] for _ in range(repeats)]


# -- multiply-accumulates ----------------------------------------------------------------------
_WEIGHT_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
_MATMUL_B_INPUT = {"MatMul": 1, "MatMulInteger": 1, "QLinearMatMul": 3, "Gemm": 1}


def count_macs(model_path: Path, input_hw: tuple[int, int]) -> tuple[float, str]:
    """(multiply-accumulates of one frame, how they were counted): the sum over Conv, QLinearConv,
    Gemm and MatMul nodes, with shapes from onnx's shape inference at batch 1 and the
    contract's input size; a ResNet-34 figure scaled to that size when ``onnx`` is missing."""
    height, width = input_hw
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:
        gmac = RESNET34_GMAC_224 * height * width / (224 * 224)
        return gmac * 1e9, "onnx missing: assumed a ResNet-34 at the contract's input size"
    model = onnx.load(str(model_path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, 3, height, width)):
        dim.Clear()
        dim.dim_value = value
    model = shape_inference.infer_shapes(model)
    graph = model.graph
    shapes = {i.name: list(i.dims) for i in graph.initializer}
    for info in list(graph.value_info) + list(graph.input) + list(graph.output):
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = [d.dim_value for d in dims]
    macs, unknown = 0, 0
    for node in graph.node:
        if node.op_type not in _WEIGHT_INPUT and node.op_type not in _MATMUL_B_INPUT:
            continue
        out = shapes.get(node.output[0])
        if node.op_type in _WEIGHT_INPUT:
            weight = shapes.get(node.input[_WEIGHT_INPUT[node.op_type]])
            per_output = math.prod(weight[1:]) if weight else None  # C_in/groups x kernel
        else:
            a = shapes.get(node.input[0])
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            per_output = (a[-2] if trans_a else a[-1]) if a else None  # the reduced dimension
        if out is None or per_output is None:
            unknown += 1
            continue
        macs += math.prod(out) * per_output
    note = "counted on the ONNX graph (Conv/QLinearConv/Gemm/MatMul, onnx shape inference)"
    if unknown:
        note += f"; {unknown} node(s) without a known shape left out"
    return float(macs), note


def pi_estimates(macs: float) -> dict[str, float]:
    gmac = macs / 1e9
    return {"model_gmac": gmac, "pi4_ms_per_gmac": PI4_MS_PER_GMAC, "pi5_ms_per_gmac": PI5_MS_PER_GMAC,
            "pi4_estimate_ms": gmac * PI4_MS_PER_GMAC, "pi5_estimate_ms": gmac * PI5_MS_PER_GMAC,
            "pi4_estimate_ncnn_table_ms": gmac * PI4_NCNN_TABLE_MS_PER_GMAC}
