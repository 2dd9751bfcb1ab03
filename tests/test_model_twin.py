"""The fp32 twin the bench compares the int8 model with."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from device.classifier import Classifier
from device.contract import preprocess
from device.commands.model_twin import fp32_twin_bytes
from device.selftest import reference_image

SHIPPED = Path(__file__).resolve().parents[1] / "device" / "model" / "waste-sorter-resnet34-int8.onnx"


def test_the_twin_is_all_float_and_computes_what_the_int8_model_approximates():
    twin = fp32_twin_bytes(SHIPPED)
    ops = Counter(n.op_type for n in onnx.load_from_string(twin).graph.node)
    assert ops["QuantizeLinear"] == ops["DequantizeLinear"] == 0
    assert ops["Conv"] == 36 and ops["Relu"] >= 33  # the ReLUs quantization had folded come back
    with Classifier(SHIPPED, threads=1) as int8:
        x = preprocess(reference_image(), int8.contract)[None]
        expected = int8.logits(x)
    got = ort.InferenceSession(twin, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert got.argmax() == expected.argmax()
    assert np.abs(got - expected).max() < 0.5
