"""A camera that cannot open or stops mid-run: a clear CameraError, actuators left safe, exit 74.

The scene is a real video (device.demo_scene) read by the real VideoFileCamera; the stall is a
small class implementing the project's Camera protocol (our seam, not a library) that waits on a
real threading.Event for its timeout and then raises CameraError, as the live backends do.
"""

from __future__ import annotations

import threading
import time

import cv2
import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from device.actuators import BinActuators
from device.camera import Frame, open_camera
from device.camera_opencv import OpenCVCamera, VideoFileCamera
from device.classifier import Classifier
from device.cli import main as cli_main
from device.errors import CameraError
from device.loop import Sorter
from device.sortlog import SortLog, read_records
from conftest import CONFIG

TIMEOUT_S = 0.3


class StallingCamera:
    """Frames of ``inner`` until ``stall_now()`` is true; then no frame for ``timeout_s``: CameraError."""

    def __init__(self, inner, stall_now, timeout_s: float = TIMEOUT_S, before_stall=None):
        self.inner, self.stall_now, self.timeout_s, self.before_stall = inner, stall_now, timeout_s, before_stall
        self.frames = 0
        self.stalled_at: float | None = None
        self._never = threading.Event()

    def capture(self) -> Frame | None:
        if self.stall_now(self.frames):
            if self.before_stall:
                self.before_stall()
            self.stalled_at = time.monotonic()
            if not self._never.wait(self.timeout_s):
                raise CameraError(f"stalling: no frame within {self.timeout_s:.1f} s")
        self.frames += 1
        return self.inner.capture()

    def close(self) -> None:
        self.inner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture
def scene(two_item_scene):
    return two_item_scene


@pytest.fixture
def config(scene_config):
    return scene_config


@pytest.mark.parametrize("source, expected", [
    ("opencv:99", "opencv:99: camera could not be opened"),
    ("opencv:x", "expected opencv:N"),
    ("/nonexistent/scene.mp4", "no such file or folder"),
])
def test_camera_that_cannot_open(source, expected):
    with pytest.raises(CameraError, match=expected) as info:
        open_camera(source)
    assert "\n" not in str(info.value)


def test_opencv_camera_that_stops_delivering_frames(scene):
    """The real OpenCVCamera read path on a real cv2.VideoCapture (of the scene file instead of
    /dev/videoN): frames while the capture delivers, then a clear CameraError, not None."""
    camera = object.__new__(OpenCVCamera)
    camera._cap, camera.name, camera.timeout_s = cv2.VideoCapture(str(scene[0])), "opencv:7", 1.0
    camera._t0, camera._index = time.monotonic(), 0
    with camera:
        frames = [camera.capture() for _ in range(3)]
        assert [f.index for f in frames] == [0, 1, 2] and frames[0].image.shape == (384, 512, 3)
        camera._cap.set(cv2.CAP_PROP_POS_FRAMES, camera._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        with pytest.raises(CameraError, match=r"^opencv:7: camera stopped delivering frames$"):
            while True:
                camera.capture()


def test_stall_mid_run_raises_within_timeout_and_leaves_actuators_safe(scene, config, colour_model_path,
                                                                      tmp_path):
    log_path = tmp_path / "sort.jsonl"
    with BinActuators(config.actuators, config.bins, pin_factory=MockFactory(pin_class=MockPWMPin)) as act, \
            SortLog(log_path) as sortlog:
        diverter, flap = act.devices["diverter"], act.devices["flap"]
        seen = {}

        def pulse_flap_too():  # the diverter is out for item 1; put the pulse output on as well
            act.actuate("metal", 0.0)
            seen.update(angle=diverter.angle, flap=flap.value)

        camera = StallingCamera(VideoFileCamera(scene[0]), lambda n: act.busy, before_stall=pulse_flap_too)
        sorter = Sorter(config, camera=camera, classifier=Classifier(colour_model_path), actuators=act,
                        sortlog=sortlog)
        with pytest.raises(CameraError, match="no frame within") as info:
            sorter.run()
        elapsed = time.monotonic() - camera.stalled_at
        assert "\n" not in str(info.value)
        assert TIMEOUT_S <= elapsed < TIMEOUT_S + 0.5
        assert seen == {"angle": pytest.approx(-60, abs=0.5), "flap": 1}  # away from safe when it stalled
        assert diverter.angle == pytest.approx(config.actuators["diverter"].home_angle_deg, abs=0.5)
        assert flap.value == 0 and not act.busy
        assert sorter.state == "stopped"
    assert [(r["item"], r["bin"]) for r in read_records(log_path)] == [(1, "paper")]


def test_run_command_exits_74_when_the_camera_cannot_open(tmp_path, colour_model_path, capsys, monkeypatch):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    code = cli_main(["run", "--source", "opencv:99", "--model", str(colour_model_path),
                     "--log", str(tmp_path / "sort.jsonl")])
    out, err = capsys.readouterr()
    assert code == 74 and out == ""
    assert err == "waste-sorter run: error: opencv:99: camera could not be opened\n"


def test_run_command_exits_74_when_the_camera_stops(scene, tmp_path, colour_model_path, capsys, monkeypatch):
    scene_path, truth = scene
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    stop_after = round(truth[0]["leave_s"] * 10) + 3  # item 1 sorted, item 2 not yet there
    opened = []

    def open_stalling(source, **kwargs):  # the run command's camera seam
        opened.append(StallingCamera(open_camera(source, **kwargs), lambda n: n >= stop_after))
        return opened[0]

    monkeypatch.setattr("device.run_cli.open_camera", open_stalling)
    config_path = tmp_path / "config.toml"
    config_path.write_text(CONFIG)
    log_path = tmp_path / "sort.jsonl"
    code = cli_main(["run", "--config", str(config_path), "--source", str(scene_path),
                     "--model", str(colour_model_path), "--log", str(log_path)])
    out, err = capsys.readouterr()
    assert code == 74 and out == ""
    assert err == f"waste-sorter run: error: stalling: no frame within {TIMEOUT_S:.1f} s\n"
    assert opened[0].frames == stop_after
    assert [r["bin"] for r in read_records(log_path)] == ["paper"]
