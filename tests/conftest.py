"""Shared fixtures: a tiny colour-classifier ONNX model built with onnx.helper (no torch),
scripted scenes rendered by the project's own renderer, and the shared TrashNet folder."""

from __future__ import annotations

import signal
import socket
import tempfile
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from device.config import load_config
from device.contract import ModelContract
from device.demo_scene import SceneItem, Timing, make_board, render
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


# -- scripted scenes -----------------------------------------------------------------------
CONFIG = """
[model]
early_decision = false    # these scenes check presence's settling; tests of early decisions turn it on
[routing]
fallback_bin = "landfill"
min_confidence = 0.6
[routing.classes]
cardboard = "paper"
glass = "glass"
metal = "metal"
[actuators.diverter]
type = "servo"
pin = 12
home_angle_deg = 0
[actuators.flap]
type = "pulse"
pin = 17
[bins.paper]
actuator = "diverter"
angle_deg = -60
hold_ms = 800
[bins.glass]
actuator = "diverter"
angle_deg = -20
hold_ms = 800
[bins.landfill]
actuator = "diverter"
angle_deg = 60
hold_ms = 800
[bins.metal]
actuator = "flap"
pulse_ms = 150
"""

RED, GREEN, BLUE = (200, 40, 40), (40, 180, 40), (40, 40, 200)


def item_on(board: np.ndarray, colour) -> np.ndarray:
    image = board.copy()
    cv2.rectangle(image, (170, 110), (340, 270), colour, -1)
    return image


@pytest.fixture(scope="module")
def two_item_scene(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A red item (-> paper) and a blue item (-> the pulse output) at 10 fps: (video, truth)."""
    board = make_board(seed=1)
    path = tmp_path_factory.mktemp("scene") / "scene.mp4"
    items = [SceneItem(item_on(board, RED), "cardboard"), SceneItem(item_on(board, BLUE), "metal")]
    return path, render(items, path, board=board, timing=Timing(fps=10), seed=1)


@pytest.fixture
def scene_config(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return load_config(path)


@pytest.fixture
def own_signal_handlers():
    """Tests that install the sorter's signal handlers get the original ones back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


# -- systemd notify ------------------------------------------------------------------------
def bind_notify_socket(tmp_path: Path) -> tuple[str, socket.socket]:
    """A real AF_UNIX datagram socket to stand in for systemd's (paths are limited to 107 bytes)."""
    folder = tmp_path if len(str(tmp_path)) < 80 else Path(tempfile.mkdtemp(prefix="ntf"))
    path = str(folder / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    return path, sock


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on ``sock``."""
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages
