"""Calibration reload in a running replay loop: the new file applies between items, a bad one is refused.

Calibrations are written with the project's own save_calibration (board image = the scene's empty
board); the scene is a real video read frame by frame through Sorter.step. The reload request
is a real SIGHUP sent to this process, handled by the Sorter's own handlers (the original
handlers are restored after each test).
"""

from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from device.calibration_file.store import load_with_board, save_calibration
from device.actuators import BinActuators
from device.camera.opencv import VideoFileCamera
from device.classifier import Classifier
from device.config import load_config
from device.errors import CameraError
from device.commands.demo_scene import SceneItem, Timing, make_board, render
from device.gate import GateThresholds, board_stats
from device.loop import Sorter
from device.sortlog import SortLog, read_records
from helpers import BLUE, CONFIG, GREEN, RED, item_on, make_calibration

pytestmark = pytest.mark.usefixtures("own_signal_handlers")  # every test installs the Sorter's handlers

BOARD = make_board(seed=1)
GATE_1 = GateThresholds(max_extra_saturated_frac=0.30)
GATE_2 = GateThresholds(max_extra_saturated_frac=0.02, max_level_rise=20.0)


def calibration(cal_id: str, gate: GateThresholds):
    return replace(make_calibration(cal_id), board=board_stats(BOARD), image_size=(512, 384), gate=gate)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scene") / "scene.mp4"
    items = [SceneItem(item_on(BOARD, c), label) for c, label in ((RED, "cardboard"), (GREEN, "glass"),
                                                                  (BLUE, "metal"))]
    render(items, path, board=BOARD, timing=Timing(fps=10), seed=1)
    return path


class Loader:
    """A Sorter's calibration_loader: the calibration at ``path`` (and its board), counting the loads."""

    def __init__(self, path: Path):
        self.path, self.loads = path, 0

    def __call__(self):
        self.loads += 1
        return load_with_board(self.path)


def replay(scene, tmp_path, model_path, on_frame, camera_class=VideoFileCamera):
    """Step through the scene with calibration cal-1; ``on_frame(sorter, cal_path)`` after every frame.
    Returns (sorter, per-frame (state, calibration id, records so far), records)."""
    config_path = tmp_path / "config.toml"
    config_path.write_text(CONFIG)
    config = load_config(config_path)
    cal_path = save_calibration(tmp_path / "cal" / "calibration.json", calibration("cal-1", GATE_1), BOARD)
    log_path = tmp_path / "sort.jsonl"
    timeline = []
    with BinActuators(config.actuators, config.bins, pin_factory=MockFactory(pin_class=MockPWMPin)) as act, \
            SortLog(log_path) as sortlog, camera_class(scene) as camera:
        sorter = Sorter(config, camera=camera, classifier=Classifier(model_path), actuators=act, sortlog=sortlog,
                        calibration=load_with_board(cal_path), calibration_loader=Loader(cal_path))
        sorter.install_signal_handlers()
        while (frame := camera.capture()) is not None:
            sorter.step(frame.image, frame.timestamp_s)
            timeline.append((sorter.state, sorter.calibration_id, sorter.summary.items))
            on_frame(sorter, cal_path)
    return sorter, timeline, list(read_records(log_path))


def request_during_item(item: int, action):
    """An on_frame hook: the first time item ``item`` is on the board (OCCUPIED), ``action`` then SIGHUP."""
    done = []

    def hook(sorter, cal_path):
        if not done and sorter.state == "occupied" and sorter.summary.items == item - 1:
            action(cal_path)
            os.kill(os.getpid(), signal.SIGHUP)
            done.append(sorter.summary.frames)
    hook.done = done
    return hook


def test_reload_mid_item_applies_from_the_next_item(scene, tmp_path, colour_model_path):
    hook = request_during_item(1, lambda p: save_calibration(p, calibration("cal-2", GATE_2), BOARD))
    sorter, timeline, records = replay(scene, tmp_path, colour_model_path, hook)

    assert hook.done, "item 1 was never seen on the board"
    assert [(r["item"], r["bin"], r["calibration_id"]) for r in records] == [
        (1, "paper", "cal-1"), (2, "glass", "cal-2"), (3, "metal", "cal-2")]
    switch = next(i for i, (_, cal_id, _) in enumerate(timeline) if cal_id == "cal-2")
    assert switch >= hook.done[0]
    state, _, items_before = timeline[switch]
    assert state == "empty" and items_before == 1  # after item 1 was sorted and had left
    assert timeline[switch - 1][:2] == ("settled", "cal-1")  # applied on the frame the board became empty
    assert {cal_id for s, cal_id, _ in timeline[hook.done[0]:switch]} == {"cal-1"}
    assert sorter.gate.thresholds == GATE_2 and sorter.calibration.id == "cal-2"
    assert sorter.calibration_loader.loads == 1  # applied once: the request was done with


def write_junk(path: Path) -> None:
    path.write_text('{"schema": 1, "id": "cal-3", ')


def write_without_board_png(path: Path) -> None:
    path.write_text(json.dumps(calibration("cal-3", GATE_1).to_dict()))  # board-cal-3.png never written


def write_out_of_range(path: Path) -> None:
    doc = calibration("cal-3", GATE_1).to_dict()
    doc["gate"]["max_extra_saturated_frac"] = 3.0
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("spoil, expected", [
    (write_junk, "not valid JSON"),
    (write_without_board_png, "board reference image is missing"),
    (write_out_of_range, "gate.max_extra_saturated_frac"),
], ids=["junk", "no-board-png", "out-of-range"])
def test_invalid_calibration_on_reload_keeps_the_last_good_one(scene, tmp_path, colour_model_path, caplog,
                                                               spoil, expected):
    first = request_during_item(1, lambda p: save_calibration(p, calibration("cal-2", GATE_2), BOARD))
    second = request_during_item(2, spoil)

    def hooks(sorter, cal_path):
        first(sorter, cal_path)
        second(sorter, cal_path)

    with caplog.at_level(logging.INFO, logger="device.loop"):
        sorter, timeline, records = replay(scene, tmp_path, colour_model_path, hooks)

    assert second.done
    assert [r["calibration_id"] for r in records] == ["cal-1", "cal-2", "cal-2"]
    assert sorter.calibration_id == "cal-2" and sorter.gate.thresholds == GATE_2
    assert [s for s, _, _ in timeline[-5:]] == ["empty"] * 5  # the loop went on after the refusal
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith("calibration reload rejected, keeping cal-2: ") and expected in errors[0]
    assert "\n" not in errors[0]


class CameraThatRefusesNewControls(VideoFileCamera):
    """A recording with exposure controls (an AdjustableCamera): it takes the first calibration's
    and refuses every later set, as a camera that failed meanwhile does."""

    def __init__(self, path):
        super().__init__(path)
        self.applied = []

    def set_controls(self, controls) -> None:
        if self.applied:
            raise CameraError("picamera2: exposure controls not applied (device busy)")
        self.applied.append(controls)


def test_a_camera_that_refuses_the_new_controls_keeps_the_whole_last_calibration(scene, tmp_path,
                                                                                  colour_model_path, caplog):
    hook = request_during_item(1, lambda p: save_calibration(p, calibration("cal-2", GATE_2), BOARD))
    with caplog.at_level(logging.INFO, logger="device.loop"):
        sorter, timeline, records = replay(scene, tmp_path, colour_model_path, hook,
                                           camera_class=CameraThatRefusesNewControls)

    assert hook.done and len(sorter.camera.applied) == 1
    assert [(r["bin"], r["calibration_id"]) for r in records] == [("paper", "cal-1"), ("glass", "cal-1"),
                                                                  ("metal", "cal-1")]
    assert sorter.gate.thresholds == GATE_1  # not half applied: the old gate with the old controls
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["calibration reload rejected, keeping cal-1: picamera2: exposure controls not applied "
                      "(device busy)"]


def test_a_board_that_differs_after_a_reload_is_warned_about_as_such(scene, tmp_path, colour_model_path, caplog):
    """The new calibration's board is compared with the first still view after the reload, and
    the warning says so (it said "the view at start", long after the start)."""
    other_board = make_board(seed=5)
    hook = request_during_item(1, lambda p: save_calibration(p, calibration("cal-2", GATE_1), other_board))
    with caplog.at_level(logging.WARNING, logger="device.presence"):
        replay(scene, tmp_path, colour_model_path, hook)
    assert hook.done
    warnings = [r.getMessage() for r in caplog.records if "differs from the board reference" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("the first still view after reloading calibration cal-2 differs from the board "
                                  "reference on ")
