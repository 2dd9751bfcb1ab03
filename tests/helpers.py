"""Shared test code that is not a fixture: the tiny colour-classifier ONNX model built with
onnx.helper (no torch), the scripted scenes' configuration and items, a calibration, sort
records, a camera that blocks, a systemd notify socket, `waste-sorter logs` run in-process and
the fine-tuning path. Test modules import these with ``from helpers import ...`` (pyproject's
pytest ``pythonpath`` puts tests/ on the path); fixtures stay in conftest.py."""

from __future__ import annotations

import argparse
import io
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper

from device.calibration_file.schema import Calibration, ExposureTarget
from device.camera import CameraBase
from device.camera.opencv import WAIT_SLICE_S
from device.cli import main as cli_main
from device.commands import logs as logs_cli
from device.contract import ModelContract
from device.errors import CameraError
from device.gate import BoardStats, GateThresholds
from device.sortlog import SortEvent
from export.data_split import load_data_split

# -- data and models -----------------------------------------------------------------------
TRASHNET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "trashnet"
SHIPPED = Path(__file__).resolve().parents[1] / "device" / "model" / "waste-sorter-resnet34-int8.onnx"
PER_CLASS = 8  # TrashNet photos per class in the small_trashnet fixture
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


class BlockingCamera(CameraBase):
    """Camera protocol: scene frames until ``block_now()``; then waits (a real Event) for ``release``:
    a frame if released, else CameraError after ``timeout_s`` like the live backends. Like
    OpenCVCamera it waits in WAIT_SLICE_S slices: a process-directed signal may land on another
    thread (here the killer, on the device the reader or an onnxruntime worker), and CPython runs
    the handler only once the main thread is back in Python code."""

    def __init__(self, inner, block_now, timeout_s: float = 1.0):
        self.inner, self.block_now, self.timeout_s = inner, block_now, timeout_s
        self.blocking, self.release = threading.Event(), threading.Event()

    def capture(self):
        if self.block_now() and not self.blocking.is_set():
            self.blocking.set()
            deadline = time.monotonic() + self.timeout_s
            while not self.release.wait(WAIT_SLICE_S):
                if time.monotonic() >= deadline:
                    raise CameraError(f"blocking: no frame within {self.timeout_s:.1f} s")
        return self.inner.capture()

    def close(self) -> None:
        self.inner.close()


# -- calibration ---------------------------------------------------------------------------
def make_calibration(cal_id: str = "20250101T120000Z-aaaaaa", exposure_us: int = 8000) -> Calibration:
    return Calibration(
        id=cal_id, created_utc="2025-01-01T12:00:00+00:00", exposure_us=exposure_us, analogue_gain=1.5,
        colour_gains=(1.9, 1.6), board_reference=f"board-{cal_id}.png",
        board=BoardStats(190.0, 0.001, (0.0,) * 16), gate=GateThresholds(max_level_rise=39.0),
        target=ExposureTarget(), board_mean_rgb=(180.0, 182.0, 179.0), image_size=(32, 24), frames=5,
        source="sim", exposure_searched=True)


CALIBRATION_BOARD = np.full((24, 32, 3), 190, np.uint8)  # a board image of make_calibration()'s image_size


# -- sort records and `waste-sorter logs` ----------------------------------------------------
NOW = time.time()  # what `logs --since` counts back from in run_logs; event()'s default time is a minute before


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def event(item: int, *, t: float | None = None, label: str = "plastic", bin_: str = "containers",
          reason: str = "", latency_ms: float = 10.0, rejects: dict[str, int] | None = None) -> SortEvent:
    rejects = rejects or {}
    return SortEvent(ts=iso(NOW - 60 if t is None else t), source_time=item * 2.0, item=item, label=label,
                     confidence=0.9, top3=((label, 0.9), ("trash", 0.05)), bin=bin_, reason=reason,
                     frames_used=3, frames_rejected=sum(rejects.values()), reject_reasons=rejects,
                     latency_ms=latency_ms, model_sha256="abc123", calibration_id="cal-1")


def args_for(*argv: str, module=logs_cli) -> argparse.Namespace:
    """``argv`` parsed by ``module``'s (a device.commands module's) arguments."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(list(argv))


def run_logs(*argv: str, **kwargs) -> str:
    """`waste-sorter logs` at the time the test logs were written (``--since 1h`` counts from NOW);
    ``kwargs`` (sleep, max_polls) go to :func:`device.commands.logs.show_logs`."""
    out = io.StringIO()
    assert logs_cli.show_logs(args_for(*argv), out, now=NOW, **kwargs) == 0
    return out.getvalue()


# -- captures ------------------------------------------------------------------------------
CAPTURE_CLASSES = ("cardboard", "glass", "metal")  # the classes of the model record() names


def record(item: int, confidence: float, label: str = "glass") -> SortEvent:
    return SortEvent(ts=f"2024-05-01T10:00:{item:02d}.000Z", source_time=float(item), item=item, label=label,
                     confidence=confidence, top3=((label, confidence), ("metal", 1 - confidence)), bin="glass",
                     reason="" if confidence >= 0.6 else f"low confidence {confidence:.2f} < 0.60", frames_used=3,
                     frames_rejected=1, reject_reasons={"glare": 1}, latency_ms=12.5, model_sha256="abcdef012345",
                     calibration_id="cal-7")


def label_from_truth(folder: Path, truth: dict[str, str]) -> None:
    """`captures label` for each class, with the ids the truth gives it (capture id -> class)."""
    for name in sorted(set(truth.values())):
        ids = [i for i, label in truth.items() if label == name]
        assert cli_main(["captures", "label", "--dir", str(folder), *ids, name]) == 0


def fine_tune_and_evaluate(trashnet: Path, export: Path, run: Path, capsys) -> dict:
    """train (from the shipped model, a few steps) -> export -> evaluate on the test photos of
    both folders; returns evaluate's JSON after checking each step's output."""
    data = ["--data", str(trashnet), "--data", str(export)]
    assert cli_main(["train", *data, "--output-dir", str(run), "--init", str(SHIPPED), "--input-size", "64",
                     "--batch-size", "8", "--epochs", "1", "--no-amp", "--val-frac", "0.25",
                     "--test-frac", "0.25", "--lr", "0.001", "--replay-per-class", "3"]) == 0
    out = capsys.readouterr().out
    split = load_data_split(run / "split.json", [trashnet, export])
    device = split.folders[1]
    assert device.device_photos and all(split.folders[i].files["test"] for i in (0, 1))
    assert f"{export} (device photos, split by capture): {len(device.files['train'])} train / " in out
    trained = split.training_items(with_val=False, replay_per_class=3)
    assert not {p for p, _ in trained} & {p for p, _ in split.paths("test")}  # no test photo trained on
    assert sum(p.is_relative_to(export) for p, _ in trained) == len(device.files["train"])  # every device one
    assert f"{len(trained)} train / {len(split.paths('val'))} val photos" in out
    model = run / "model.onnx"
    assert cli_main(["export", "--checkpoint", str(run / "checkpoint.pth"), *data, "--out", str(model),
                     "--parity-photos", "4"]) == 0
    assert "max |Δlogit|" in capsys.readouterr().out
    assert cli_main(["evaluate", "--model", str(model), *data, "--split", str(run / "split.json"),
                     "--subset", "test", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [f["device_photos"] for f in report["folders"]] == [False, True]
    assert report["folders"][1]["n"] == report["device_photos"]["n"] == len(device.files["test"])
    assert report["n"] == len(split.paths("test"))
    return report


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


# -- a sorted colour scene (the web page's tests) ----------------------------------------------
DOUBTFUL = (100, 40, 155)  # the colour model is torn between cardboard and metal (about 0.5 each)


def colour_scene(folder: Path, *, rounds: int = 2) -> dict[str, Path]:
    """A scene of red, green and blue items (``rounds`` of each) and a doubtful purple one
    (decided below routing.min_confidence), the colour model and a config
    that captures every item into ``folder``/caps: the paths by name (scene, model, config,
    config_no_capture, caps)."""
    from device.commands.demo_scene import SceneItem, Timing, make_board, render
    from export.package import save_model

    folder.mkdir(parents=True, exist_ok=True)
    board = make_board(seed=1)
    items = [SceneItem(item_on(board, colour), name)
             for colour, name in ((RED, "cardboard"), (GREEN, "glass"), (BLUE, "metal"))] * rounds
    items.append(SceneItem(item_on(board, DOUBTFUL), "metal"))  # half red, half blue: the fallback bin
    paths = {"scene": folder / "scene.mp4", "model": folder / "colour.onnx", "config": folder / "config.toml",
             "config_no_capture": folder / "config-no-capture.toml", "caps": folder / "caps"}
    render(items, paths["scene"], board=board, timing=Timing(fps=10), seed=1)
    save_model(colour_model(), paths["model"], colour_contract())
    paths["config_no_capture"].write_text(CONFIG)
    paths["config"].write_text(CONFIG + f'\n[capture]\nenabled = true\ndir = "{paths["caps"]}"\nsample_every = 1\n')
    return paths


def sort_scene(paths: dict[str, Path], log: Path, *extra: str, config: str = "config") -> list[dict]:
    """`waste-sorter run` of ``paths``' scene (the colour model, mock GPIO) into ``log``; its records."""
    import os

    from device.sortlog import read_records

    saved = os.environ.get("GPIOZERO_PIN_FACTORY")
    os.environ["GPIOZERO_PIN_FACTORY"] = "mock"
    try:
        assert cli_main(["run", "--config", str(paths[config]), "--model", str(paths["model"]),
                         "--source", str(paths["scene"]), "--log", str(log), *extra]) == 0
    finally:
        if saved is None:
            os.environ.pop("GPIOZERO_PIN_FACTORY")
        else:
            os.environ["GPIOZERO_PIN_FACTORY"] = saved
    return list(read_records(log))
