"""The whole loop on a scripted scene: real OpenCV video, real onnxruntime, gpiozero MockFactory.

Scene (10 fps): empty board; red item (-> paper); green item (-> glass); a blue item whose
frames are all overexposed (-> fallback with a reason); the light over the whole board dims;
a green item with glare frames (glare rejected, still sorted); a blue item (-> pulse output).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from device.actuators import BinActuators
from device.camera import open_camera
from device.classifier import Classifier
from device.cli import main as cli_main
from device.config import load_config
from device.commands.demo_scene import SceneItem, Timing, make_board, render
from device.loop import Sorter
from device.sortlog import SortLog, read_records

from helpers import BLUE, CONFIG, GREEN, RED, item_on

@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("scene")
    board = make_board(seed=1)
    items = [SceneItem(item_on(board, RED), "cardboard"), SceneItem(item_on(board, GREEN), "glass"),
             SceneItem(item_on(board, BLUE), "metal", "overexposed"),
             SceneItem(item_on(board, GREEN), "glass", "glare"), SceneItem(item_on(board, BLUE), "metal")]
    truth = render(items, folder / "scene.mp4", board=board, timing=Timing(fps=10), light_change_after=3, seed=1)
    return folder / "scene.mp4", truth


@pytest.fixture
def config_path(tmp_path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return path


def run_scene(scene_path, config_path, model_path, log_path):
    """Run the loop frame by frame, recording the actuators after every frame."""
    config = load_config(config_path)
    factory = MockFactory(pin_class=MockPWMPin)
    timeline = []
    with open_camera(str(scene_path)) as camera, \
            BinActuators(config.actuators, config.bins, pin_factory=factory) as actuators, \
            SortLog(log_path) as sortlog:
        sorter = Sorter(config, camera=camera, classifier=Classifier(model_path), actuators=actuators,
                        sortlog=sortlog)
        while (frame := camera.capture()) is not None:
            sorter.step(frame.image, frame.timestamp_s)
            timeline.append((frame.timestamp_s, actuators.devices["diverter"].angle,
                             actuators.devices["flap"].value))
        summary = sorter.summary
    return summary, timeline, list(read_records(log_path))


def test_scripted_scene_sorts_each_item_once(scene, config_path, colour_model_path, tmp_path):
    scene_path, truth = scene
    summary, timeline, records = run_scene(scene_path, config_path, colour_model_path, tmp_path / "sort.jsonl")

    assert [r["item"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["bin"] for r in records] == ["paper", "glass", "landfill", "glass", "metal"]
    assert [r["label"] for r in records] == ["cardboard", "glass", "", "glass", "metal"]
    # each decision falls while its item lies still, and in order; the blown-out item never
    # lies still to the sorter (rejected frames are no stillness): it is decided when it leaves
    for record, item in zip(records, truth):
        if item["kind"] == "overexposed":
            assert item["leave_s"] < record["source_time"] < item["leave_s"] + 0.5
        else:
            assert item["still_s"] < record["source_time"] < item["leave_s"]
    assert records[2]["reason"].startswith("left before a usable frame: all frames rejected (overexposed x")
    assert records[2]["frames_used"] == 0 and records[2]["reject_reasons"]["overexposed"] > 0
    assert records[3]["reason"] == "" and records[3]["reject_reasons"].get("glare", 0) >= 1
    assert all(r["reason"] == "" for i, r in enumerate(records) if i != 2)
    assert [r["settled"] for r in records] == [True, True, False, True, True]
    assert all(r["confidence"] > 0.9 and r["frames_used"] == 3 for i, r in enumerate(records) if i != 2)
    assert summary.items == 5 and summary.rejected_by_reason["overexposed"] > 0

    # actuators over time: the diverter points at the bin from the decision for hold_ms, then home
    def angle_at(t):
        return next(a for ts, a, _ in timeline if ts >= t - 1e-9)

    for record, angle in zip(records, [-60, -20, 60, -20]):
        t = record["source_time"]
        assert angle_at(t) == pytest.approx(angle, abs=0.5)
        assert angle_at(t + 0.7) == pytest.approx(angle, abs=0.5)
        assert angle_at(t + 0.8) == pytest.approx(0, abs=0.5)
    flap_on = [ts for ts, _, value in timeline if value]
    t_metal = records[4]["source_time"]
    assert flap_on == [pytest.approx(t_metal), pytest.approx(t_metal + 0.1)]  # 150 ms at 10 fps
    assert timeline[-1][1:] == (pytest.approx(0, abs=0.5), 0)


def test_replay_is_identical(scene, config_path, colour_model_path, tmp_path):
    scene_path, _ = scene
    first = run_scene(scene_path, config_path, colour_model_path, tmp_path / "a.jsonl")
    second = run_scene(scene_path, config_path, colour_model_path, tmp_path / "b.jsonl")
    per_run = ("ts", "latency_ms", "record_id", "run_id")  # wall time and the run's own ids
    strip = lambda records: [{k: v for k, v in r.items() if k not in per_run} for r in records]
    assert strip(first[2]) == strip(second[2])
    assert first[1] == second[1]


def test_run_command_end_to_end(scene, config_path, colour_model_path, tmp_path, monkeypatch, capsys):
    scene_path, truth = scene
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    log_path = tmp_path / "sort.jsonl"
    code = cli_main(["run", "--config", str(config_path), "--source", str(scene_path), "--model",
                     str(colour_model_path), "--log", str(log_path), "--max-items", "1000"])
    assert code == 0
    out = capsys.readouterr().out
    assert "5 item(s)" in out and "landfill=1" in out and "p95" in out
    lines = log_path.read_text().splitlines()
    assert len(lines) == len(truth)
    keys = {"ts", "source_time", "item", "label", "confidence", "top3", "bin", "reason", "frames_used",
            "frames_rejected", "latency_ms", "model_sha256", "calibration_id"}
    assert keys <= set(json.loads(lines[0]))


def test_max_items_stops_early(scene, config_path, colour_model_path, tmp_path, monkeypatch):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    log_path = tmp_path / "sort.jsonl"
    assert cli_main(["run", "--config", str(config_path), "--source", str(scene[0]), "--model",
                     str(colour_model_path), "--log", str(log_path), "--max-items", "2"]) == 0
    assert [r["item"] for r in read_records(log_path)] == [1, 2]


def test_max_items_on_a_clock_lets_the_last_hold_run_its_full_time(scene, config_path, colour_model_path, tmp_path):
    """A live run that stops at --max-items waits out the last bin's 800 ms hold before every
    actuator goes safe (it used to go home at once). The clock only moves when the loop sleeps."""
    config = load_config(config_path)
    now_s, slept = [0.0], []

    with open_camera(str(scene[0])) as camera, \
            BinActuators(config.actuators, config.bins, pin_factory=MockFactory(pin_class=MockPWMPin)) as actuators, \
            SortLog(tmp_path / "sort.jsonl") as sortlog:
        def sleep(seconds: float) -> None:
            slept.append((seconds, actuators.devices["diverter"].angle))
            now_s[0] += seconds

        sorter = Sorter(config, camera=camera, classifier=Classifier(colour_model_path), actuators=actuators,
                        sortlog=sortlog, clock=lambda: now_s[0], sleep=sleep)
        sorter.run(max_items=1)
        assert actuators.devices["diverter"].angle == pytest.approx(0, abs=0.5) and not actuators.busy
    assert [r["bin"] for r in read_records(tmp_path / "sort.jsonl")] == ["paper"]
    assert sum(s for s, _ in slept) == pytest.approx(0.8)
    assert all(angle == pytest.approx(-60, abs=0.5) for _, angle in slept)  # out for the whole wait


def test_an_item_that_never_stops_moving_is_decided_once_after_max_settle(config_path, colour_model_path, tmp_path):
    config = load_config(config_path)
    board = make_board(seed=2)
    rng = np.random.default_rng(0)
    frames = [board] * 15  # 1.5 s empty at 10 fps
    for i in range(80):  # 8 s of an item that keeps shifting by a few pixels
        item = board.copy()
        dx, dy = (i % 3) * 6, (i % 2) * 6
        cv2.rectangle(item, (170 + dx, 110 + dy), (340 + dx, 270 + dy), RED, -1)
        frames.append(item)
    frames += [board] * 15
    with BinActuators(config.actuators, config.bins, pin_factory=MockFactory(pin_class=MockPWMPin)) as actuators, \
            SortLog(tmp_path / "sort.jsonl") as sortlog:
        sorter = Sorter(config, camera=None, classifier=Classifier(colour_model_path), actuators=actuators,
                        sortlog=sortlog)
        for index, image in enumerate(frames):
            noisy = np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8)
            sorter.step(noisy, index / 10)
    records = list(read_records(tmp_path / "sort.jsonl"))
    assert len(records) == 1
    assert records[0]["label"] == "cardboard" and records[0]["bin"] == "paper"
    assert records[0]["settled"] is False
    arrived_s = 1.5
    assert records[0]["source_time"] == pytest.approx(arrived_s + config.presence.max_settle_s)
