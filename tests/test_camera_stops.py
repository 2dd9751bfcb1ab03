"""A camera that cannot open or stops mid-run: a clear CameraError, actuators left safe, exit 74.

The scene is a real video (device.commands.demo_scene) read by the real VideoFileCamera; the stall is a
small class implementing the project's Camera protocol (our seam, not a library) that waits on a
real threading.Event for its timeout and then raises CameraError, as the live backends do.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from device.actuators import BinActuators
from device.camera import CameraBase, Frame, open_camera
from device.camera.opencv import FolderCamera, OpenCVCamera, VideoFileCamera
from device.classifier import Classifier
from device.cli import main as cli_main
from device.errors import CameraError
from device.loop import Sorter
from device.sortlog import SortLog, read_records
from helpers import CONFIG

TIMEOUT_S = 0.3


class StallingCamera(CameraBase):
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


@pytest.fixture
def scene(two_item_scene):
    return two_item_scene


@pytest.fixture
def config(scene_config):
    return scene_config


@pytest.mark.parametrize("source, expected", [
    ("opencv:99", "opencv:99: camera could not be opened"),
    ("opencv:x", "expected picamera2, picamera2:N or opencv:N"),
    ("/nonexistent/scene.mp4", "no such file or folder"),
])
def test_camera_that_cannot_open(source, expected):
    with pytest.raises(CameraError, match=expected) as info:
        open_camera(source)
    assert "\n" not in str(info.value)


def test_opencv_camera_that_stops_delivering_frames(scene):
    """The real OpenCVCamera read path on a real cv2.VideoCapture (of the scene file instead of
    /dev/videoN): frames while the capture delivers, then a clear CameraError, not None."""
    cap = cv2.VideoCapture(str(scene[0]))
    camera = OpenCVCamera.from_capture(cap, "opencv:7", timeout_s=1.0)
    with camera:
        frames = [camera.capture() for _ in range(3)]
        assert [f.index for f in frames] == [0, 1, 2] and frames[0].image.shape == (384, 512, 3)
        cap.set(cv2.CAP_PROP_POS_FRAMES, cap.get(cv2.CAP_PROP_FRAME_COUNT))
        with pytest.raises(CameraError, match=r"^opencv:7: camera stopped delivering frames$"):
            while True:
                camera.capture()
    assert not cap.isOpened()  # no read in flight: close() released it


def reader_threads(name: str) -> list[threading.Thread]:
    """The live threads an OpenCVCamera called ``name`` reads in (each read runs in one, named so)."""
    return [t for t in threading.enumerate() if t.name == f"{name} read"]


class BlockingCapture:
    """A capture whose read() blocks until ``unblock`` is set, as a wedged USB camera's does."""

    def __init__(self) -> None:
        self.unblock = threading.Event()
        self.reads = 0
        self.released = 0

    def read(self):
        self.reads += 1
        self.unblock.wait()
        return False, None

    def release(self) -> None:
        self.released += 1


def test_close_never_releases_under_a_blocked_read(monkeypatch, caplog):
    cap = BlockingCapture()
    monkeypatch.setattr(OpenCVCamera, "CLOSE_JOIN_S", 0.0)
    camera = OpenCVCamera.from_capture(cap, "opencv:5", timeout_s=0.0)
    try:
        with pytest.raises(CameraError, match=r"^opencv:5: no frame within 0.0 s$"):
            camera.capture()
        [reader] = reader_threads("opencv:5")  # still blocked in cap.read()
        with pytest.raises(CameraError, match="an earlier read is still blocked"):
            camera.capture()  # no second read on the same capture
        with caplog.at_level(logging.WARNING, logger="device.camera.opencv"):
            camera.close()
        assert cap.released == 0 and cap.reads == 1
        assert any("still blocked" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    finally:
        cap.unblock.set()
    reader.join(10)
    assert not reader.is_alive()
    assert cap.released == 1  # by the reader, once its read returned
    camera.close()
    assert cap.released == 1


def test_close_waits_for_a_read_that_returns(caplog, monkeypatch):
    monkeypatch.setattr(OpenCVCamera, "CLOSE_JOIN_S", 30.0)  # join returns when the read does
    cap = BlockingCapture()
    camera = OpenCVCamera.from_capture(cap, "opencv:6", timeout_s=0.0)
    with pytest.raises(CameraError, match="no frame within"):
        camera.capture()
    cap.unblock.set()  # the read returns during close()'s join
    with caplog.at_level(logging.WARNING, logger="device.camera.opencv"):
        camera.close()
    assert cap.released == 1 and not reader_threads("opencv:6")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_unreadable_image_folder(tmp_path, monkeypatch):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "0001.png"), np.zeros((8, 8, 3), np.uint8))
    real_iterdir = Path.iterdir

    def iterdir(self):  # as without read permission (tests may run as root, who ignores modes)
        if self == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(CameraError, match=r"frames: image folder is unreadable \(Permission denied\)$") as info:
        open_camera(str(folder))
    assert "\n" not in str(info.value)
    monkeypatch.undo()
    assert open_camera(str(folder)).capture().image.shape == (8, 8, 3)
    with pytest.raises(CameraError, match="image folder is unreadable"):
        FolderCamera(folder / "0001.png")  # a file, not a folder


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

    monkeypatch.setattr("device.commands.run.open_camera", open_stalling)
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


def corrupt_copy(source: Path, target: Path, start: float = 0.5, length: float = 0.1) -> Path:
    """``source`` with a stretch of its bytes scrambled (as a bad sector or a broken download would)."""
    data = bytearray(source.read_bytes())
    a, b = int(len(data) * start), int(len(data) * (start + length))
    data[a:b] = bytes(x ^ 0x5A for x in data[a:b])
    target.write_bytes(bytes(data))
    return target


def test_a_corrupt_stretch_in_a_video_is_skipped_with_a_warning_naming_its_frames(scene, tmp_path, caplog):
    """The frames after the stretch are still read, at their own times (they used to end the run
    there, with exit 0 and no word)."""
    path = corrupt_copy(scene[0], tmp_path / "corrupt.mp4")
    with caplog.at_level(logging.WARNING, logger="device.camera.opencv"), VideoFileCamera(path) as camera:
        frames = []
        while (frame := camera.capture()) is not None:
            frames.append(frame)
        total = camera.frame_count
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    match = re.search(r"corrupt\.mp4: frame\(s\) (\d+)-(\d+) could not be decoded \(a corrupt stretch\): skipped",
                      warnings[0])
    assert match, warnings
    first, last = int(match.group(1)), int(match.group(2))
    assert 0 < first <= last < total - 1
    indexes = [f.index for f in frames]
    assert indexes == [i for i in range(total) if not first <= i <= last]
    assert all(f.timestamp_s == pytest.approx(f.index / camera.fps) for f in frames)


def test_a_video_that_ends_before_its_announced_length_warns(tmp_path, caplog):
    path = tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(30):
        writer.write(np.full((48, 64, 3), 8 * i, np.uint8))
    writer.release()
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])  # a copy cut short
    with caplog.at_level(logging.WARNING, logger="device.camera.opencv"), VideoFileCamera(path) as camera:
        count = 0
        while camera.capture() is not None:
            count += 1
    assert 0 < count < 30
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: video ended at frame {count}, but its header announces 30 frames (a decode error or a truncated file)"]
