"""The Raspberry Pi camera through picamera2 (from Raspberry Pi OS apt: ``python3-picamera2``).

picamera2 is imported here only, so nothing else on a laptop or in CI needs it. Exposure is
manual (``AeEnable`` off, ``ExposureTime``, ``AnalogueGain``, ``ColourGains`` from the
calibration) and every capture waits at most ``timeout_s``, since a capture can hang forever.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from device.camera.base import CameraBase, ExposureControls, Frame
from device.errors import CameraError, DependencyError, first_line

log = logging.getLogger(__name__)

WAIT_SLICE_S = 0.05


def import_picamera2():
    """The Picamera2 class; DependencyError (exit 3, one line) when picamera2 is missing or breaks
    on import (e.g. numpy 2 in the venv shadowing the apt numpy that picamera2/simplejpeg were
    built for). ``run --check-config`` calls it too: importing opens no camera."""
    try:
        from picamera2 import Picamera2
    except ModuleNotFoundError as exc:
        if exc.name != "picamera2":  # picamera2 is there, one of its imports is not
            raise DependencyError(f"picamera2 could not be imported: {first_line(exc)}") from exc
        raise DependencyError("picamera2 is not installed (on Raspberry Pi OS: apt install "
                              "python3-picamera2, and a venv with --system-site-packages)") from exc
    except Exception as exc:  # noqa: BLE001 - numpy ABI mismatches raise ValueError, ImportError, ...
        raise DependencyError(f"picamera2 could not be imported ({type(exc).__name__}: {first_line(exc)}); "
                              f"with apt picamera2 the venv needs numpy<2 (pip install '.[pi]')") from exc
    return Picamera2


class Picamera2Camera(CameraBase):
    live = True

    def __init__(self, index: int = 0, *, size: tuple[int, int], controls: ExposureControls | None,
                 timeout_s: float = 2.0, clock_ns: Callable[[], int] = time.monotonic_ns):
        Picamera2 = import_picamera2()
        self.timeout_s = timeout_s
        self._clock_ns = clock_ns
        self._t0_ns: int | None = None  # sensor time of the first frame
        self._mono_t0_ns: int | None = None  # set once frames are timed on the monotonic clock
        self._last: tuple[float, int] | None = None  # (seconds, monotonic ns) of the last sensor-timed frame
        self._index = 0
        try:
            self._cam = Picamera2(index)
        except Exception as exc:  # libcamera raises RuntimeError, IndexError, ...
            raise CameraError(f"picamera2:{index}: camera could not be opened ({first_line(exc)})") from exc
        try:
            config = self._cam.create_video_configuration(
                main={"size": tuple(size), "format": "RGB888"}, buffer_count=4)
            self._cam.configure(config)
            self._cam.start()
            if controls is not None:
                self._apply_controls(controls)
        except Exception as exc:
            self._close_quietly()
            raise CameraError(f"picamera2:{index}: camera could not be started ({first_line(exc)})") from exc

    def _close_quietly(self) -> None:
        """Stop and close after a failed start, so the camera is free for the next try."""
        for step in (self._cam.stop, self._cam.close):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - the start error is the one to report
                log.warning("picamera2: %s after a failed start: %s", step.__name__, first_line(exc))

    def set_controls(self, controls: ExposureControls) -> None:
        """Apply manual exposure; the sensor applies them a few frames later (see metadata).
        CameraError when the camera refuses them."""
        try:
            self._apply_controls(controls)
        except Exception as exc:
            raise CameraError(f"picamera2: exposure controls not applied ({first_line(exc)})") from exc

    def _apply_controls(self, controls: ExposureControls) -> None:
        self._cam.set_controls({
            "AeEnable": False,
            "AwbEnable": False,
            "ExposureTime": int(controls.exposure_us),
            "AnalogueGain": float(controls.analogue_gain),
            "ColourGains": tuple(float(g) for g in controls.colour_gains),
        })

    def capture(self) -> Frame:
        deadline = time.monotonic() + self.timeout_s
        try:
            job = self._cam.capture_request(wait=False)
            while True:  # short slices, so a signal handler runs promptly (see OpenCVCamera)
                try:
                    request = self._cam.wait(job, timeout=WAIT_SLICE_S)
                    break
                except TimeoutError:
                    if time.monotonic() >= deadline:
                        raise
        except TimeoutError:
            raise CameraError(f"picamera2: no frame within {self.timeout_s:.1f} s") from None
        except Exception as exc:
            raise CameraError(f"picamera2: capture failed ({exc})") from exc
        try:
            # RGB888 is stored B,G,R in memory: reverse the channels to get RGB.
            image = request.make_array("main")[:, :, ::-1].copy()
            metadata = dict(request.get_metadata())
        finally:
            request.release()
        frame = Frame(image, self._timestamp_s(metadata), self._index, metadata)
        self._index += 1
        return frame

    def _timestamp_s(self, metadata: dict) -> float:
        """Seconds since the first frame, from the sensor's timestamp. A frame without one (some
        pipelines leave it out) switches the camera to the monotonic clock for good, said once,
        carrying on from the last sensor time: frames all at time 0 would never settle."""
        now_ns = self._clock_ns()
        sensor_ns = metadata.get("SensorTimestamp")
        if self._mono_t0_ns is None and isinstance(sensor_ns, int) and sensor_ns > 0:
            if self._t0_ns is None:
                self._t0_ns = sensor_ns
            self._last = ((sensor_ns - self._t0_ns) / 1e9, now_ns)
            return self._last[0]
        if self._mono_t0_ns is None:
            log.warning("picamera2: frame %d has no SensorTimestamp: timing frames on the monotonic clock "
                        "from now on", self._index)
            last_s, last_ns = self._last if self._last is not None else (0.0, now_ns)
            self._mono_t0_ns = last_ns - round(last_s * 1e9)
        return (now_ns - self._mono_t0_ns) / 1e9

    def close(self) -> None:
        try:
            self._cam.stop()
        finally:
            self._cam.close()
