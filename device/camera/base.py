"""What every camera is: the :class:`Camera` protocol, the :class:`Frame` it returns, the
manual :class:`ExposureControls` a calibration sets, and the parsing of device source names.
The backends (:mod:`device.camera.opencv`, :mod:`device.camera.picamera2`) build on it;
:func:`device.camera.open_camera` picks one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class ExposureControls:
    """Manual camera controls from the calibration (picamera2 names them the same way)."""

    exposure_us: int
    analogue_gain: float
    colour_gains: tuple[float, float]  # (red, blue)


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured image: uint8 HxWx3 RGB, its source time and the camera's metadata."""

    image: np.ndarray
    timestamp_s: float
    index: int
    metadata: Mapping[str, Any] = field(default_factory=dict)


class Camera(Protocol):
    #: True for a camera filming now (frames keep coming while the loop is busy); False for a
    #: recording, whose time stands still between ``capture()`` calls.
    live: bool

    def capture(self) -> Frame | None:
        """The next frame, ``None`` at the end of a finite source."""

    def close(self) -> None: ...

    def __enter__(self) -> "Camera": ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class AdjustableCamera(Protocol):
    """A camera whose manual exposure the calibration sets (picamera2, the calibration's
    simulated camera); recordings and USB cameras are not. New controls take effect a few
    frames later."""

    def set_controls(self, controls: ExposureControls) -> None: ...


class CameraBase:
    """Context-manager plumbing shared by the backends."""

    live = False

    def close(self) -> None:  # pragma: no cover - overridden
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_DEVICE_SOURCE = re.compile(r"^(picamera2)(?::(\d{1,3}))?$|^(opencv):(\d{1,3})$")


def device_source(source: str) -> tuple[str, int] | None:
    """("picamera2" | "opencv", camera number) for a camera device, None for a file or folder
    path; ValueError (a one-line reason) for a malformed device name such as ``picamera2:x``."""
    if not (source == "picamera2" or source.startswith(("picamera2:", "opencv:"))):
        return None  # a path, even one named picamera2.mp4
    match = _DEVICE_SOURCE.match(source)
    if match is None:
        raise ValueError(f"camera source {source!r}: expected picamera2, picamera2:N or opencv:N (N a camera number)")
    if match.group(1):
        return "picamera2", int(match.group(2) or 0)
    return "opencv", int(match.group(4))
