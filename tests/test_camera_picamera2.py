"""device.camera.picamera2 off the Pi: picamera2 that breaks on import, and a camera that fails
while starting, give one-line CameraErrors and leave the camera closed.

picamera2 exists only on Raspberry Pi OS, so these tests import a stand-in ``picamera2`` package
written to a temporary folder (the real import machinery runs it); its Picamera2 records the
calls the backend makes and fails where a test asks it to.
"""

from __future__ import annotations

import logging
import sys
import textwrap

import pytest

from device.camera import ExposureControls, open_camera
from device.errors import CameraError, DependencyError

FAKE = '''
CALLS = []
FAIL_AT = None


class Picamera2:
    def __init__(self, index):
        CALLS.append("open")
        self._step("open")

    def _step(self, name):
        if FAIL_AT == name:
            raise RuntimeError(f"libcamera: {name} failed\\nsecond line of detail")

    def create_video_configuration(self, **kwargs):
        return kwargs

    def configure(self, config):
        CALLS.append("configure")
        self._step("configure")

    def start(self):
        CALLS.append("start")
        self._step("start")

    def set_controls(self, controls):
        CALLS.append("set_controls")
        self._step("set_controls")

    def stop(self):
        CALLS.append("stop")

    def close(self):
        CALLS.append("close")
'''


@pytest.fixture
def fake_picamera2(tmp_path, monkeypatch):
    """Put a picamera2 package with ``body`` as its __init__ first on sys.path; returns a writer."""
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(body: str):
        package = tmp_path / "picamera2"
        package.mkdir(exist_ok=True)
        (package / "__init__.py").write_text(textwrap.dedent(body))
        return package

    yield write
    sys.modules.pop("picamera2", None)


CONTROLS = ExposureControls(8000, 1.5, (1.9, 1.6))


@pytest.mark.parametrize("body, expected", [
    ("raise ValueError('numpy.dtype size changed, may indicate binary incompatibility. Expected 96 from C "
     "header, got 88 from PyObject')\n",
     r"^picamera2 could not be imported \(ValueError: numpy\.dtype size changed.*numpy<2"),
    ("raise AttributeError('_ARRAY_API not found')\n",
     r"^picamera2 could not be imported \(AttributeError: _ARRAY_API not found\)"),
    ("import simplejpeg_missing_for_this_test\n",
     r"^picamera2 could not be imported: No module named 'simplejpeg_missing_for_this_test'$"),
], ids=["numpy-abi-valueerror", "attributeerror", "missing-dependency"])
def test_picamera2_that_breaks_on_import(fake_picamera2, body, expected):
    fake_picamera2(body)
    with pytest.raises(DependencyError, match=expected) as info:  # exit 3, as a missing one
        open_camera("picamera2", controls=CONTROLS)
    assert "\n" not in str(info.value)


def test_picamera2_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 -> ModuleNotFoundError
    with pytest.raises(DependencyError, match=r"^picamera2 is not installed \(on Raspberry Pi OS") as info:
        open_camera("picamera2")
    assert info.value.exit_code == 3  # README: 3 a missing dependency


@pytest.mark.parametrize("fail_at", ["configure", "start", "set_controls"])
def test_failed_start_closes_the_camera(fake_picamera2, fail_at):
    fake_picamera2(FAKE + f"FAIL_AT = {fail_at!r}\n")
    import picamera2

    with pytest.raises(CameraError, match=rf"^picamera2:1: camera could not be started "
                                          rf"\(libcamera: {fail_at} failed\)$"):
        open_camera("picamera2:1", controls=CONTROLS, size=(512, 384))
    assert picamera2.CALLS[-2:] == ["stop", "close"]
    assert picamera2.CALLS.index(fail_at) < picamera2.CALLS.index("close")


def test_failed_open_and_a_good_start(fake_picamera2):
    fake_picamera2(FAKE + "FAIL_AT = 'open'\n")
    import picamera2

    with pytest.raises(CameraError, match=r"^picamera2:0: camera could not be opened \(libcamera: open failed\)$"):
        open_camera("picamera2")
    picamera2.FAIL_AT, picamera2.CALLS[:] = None, []
    with open_camera("picamera2", controls=CONTROLS):
        assert picamera2.CALLS == ["open", "configure", "start", "set_controls"]
    assert picamera2.CALLS[-2:] == ["stop", "close"]


def test_controls_refused_by_a_running_camera_are_a_one_line_camera_error(fake_picamera2):
    """What a calibration reload meets (the loop keeps its last calibration on this error)."""
    fake_picamera2(FAKE + "FAIL_AT = None\n")
    import picamera2

    with open_camera("picamera2", controls=CONTROLS) as camera:
        picamera2.FAIL_AT = "set_controls"
        with pytest.raises(CameraError) as info:
            camera.set_controls(CONTROLS)
    assert str(info.value) == "picamera2: exposure controls not applied (libcamera: set_controls failed)"


CAPTURING = FAKE + '''
import numpy
METADATA = []  # one dict per frame to capture


class Request:
    def __init__(self, metadata):
        self.metadata = metadata

    def make_array(self, name):
        return numpy.zeros((6, 8, 3), numpy.uint8)

    def get_metadata(self):
        return self.metadata

    def release(self):
        CALLS.append("release")


def capture_request(self, wait=True):
    return METADATA.pop(0)


def wait(self, job, timeout=None):
    return Request(job)


Picamera2.capture_request = capture_request
Picamera2.wait = wait
'''


def test_frames_without_a_sensor_timestamp_are_timed_on_the_monotonic_clock(fake_picamera2, caplog):
    """Two frames with SensorTimestamp, then three without: time goes on from the last sensor
    time by the monotonic clock (it used to be 0 for each of them: nothing would ever settle),
    said once, naming the frame."""
    fake_picamera2(CAPTURING)
    import picamera2
    from device.camera.picamera2 import Picamera2Camera

    picamera2.METADATA[:] = [{"SensorTimestamp": 5_000_000_000}, {"SensorTimestamp": 5_100_000_000},
                             {}, {"SensorTimestamp": 0}, {}]
    monotonic_ns = iter([70_000_000_000, 70_100_000_000, 70_300_000_000, 70_400_000_000, 70_600_000_000])
    with caplog.at_level(logging.WARNING, logger="device.camera.picamera2"), \
            Picamera2Camera(0, size=(8, 6), controls=None, clock_ns=lambda: next(monotonic_ns)) as camera:
        times = [camera.capture().timestamp_s for _ in range(5)]
    assert times == pytest.approx([0.0, 0.1, 0.3, 0.4, 0.6])
    assert [r.getMessage() for r in caplog.records] == [
        "picamera2: frame 2 has no SensorTimestamp: timing frames on the monotonic clock from now on"]
