"""Shared fixtures: a tiny colour-classifier ONNX model built with onnx.helper (no torch),
scripted scenes rendered by the project's own renderer, and the shared TrashNet folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from device.contract import ModelContract
from export.package import save_model

TRASHNET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "trashnet"
COLOUR_CLASSES = ("cardboard", "glass", "metal")  # red, green, blue items


def colour_model(classes=COLOUR_CLASSES, size=(64, 48), *, input_name="image", gain=20.0) -> onnx.ModelProto:
    """logits = gain * (channel means - their average): a red item -> class 0, green -> 1, blue -> 2."""
    n = len(classes)
    weights = np.zeros((3, n), np.float32)
    for k in range(n):
        weights[:, k] = -gain / 3
        weights[k % 3, k] += gain
    nodes = [
        helper.make_node("GlobalAveragePool", [input_name], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "colour",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 3, size[1], size[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", n])],
        initializer=[helper.make_tensor("W", TensorProto.FLOAT, weights.shape, weights.ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def colour_contract(classes=COLOUR_CLASSES, size=(64, 48)) -> ModelContract:
    return ModelContract(classes=tuple(classes), input_width=size[0], input_height=size[1],
                         mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture
def colour_model_path(tmp_path) -> Path:
    path = tmp_path / "colour.onnx"
    save_model(colour_model(), path, colour_contract())
    return path


@pytest.fixture
def trashnet() -> Path:
    if not TRASHNET.is_dir():
        pytest.fail(f"{TRASHNET} is missing: tests read the shared TrashNet photos from ../shared")
    return TRASHNET
