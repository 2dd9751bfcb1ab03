"""The camera seam: one small protocol, several backends.

A source string picks the backend (:func:`open_camera`):

- ``picamera2`` (or ``picamera2:N``): the Raspberry Pi camera, manual exposure from calibration;
- ``opencv:N``: a USB camera through OpenCV;
- a video file (``scene.mp4``): timestamps from the file's own frame rate;
- a folder of images: one frame per image at ``folder_fps``.

Every backend returns :class:`Frame` values whose ``timestamp_s`` is the time since the source
started, so a recorded scene replays identically at any speed. ``capture()`` returns ``None``
at the end of a finite source and raises :class:`CameraError` when a live camera stops.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np

from device.errors import CameraError, UsageError
from device.safe_open import describe_os_error, kind_of, show_path

log = logging.getLogger(__name__)


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


def check_source_option(source: str) -> None:
    """A ``--source`` given on a command line: UsageError (exit 2) for a malformed device name."""
    try:
        device_source(source)
    except ValueError as exc:
        raise UsageError(f"--source: {exc}") from None


def open_camera(
    source: str,
    *,
    controls: ExposureControls | None = None,
    timeout_s: float = 2.0,
    size: tuple[int, int] = (512, 384),
    folder_fps: float = 10.0,
) -> Camera:
    """Open the camera named by ``source`` (see the module docstring)."""
    try:
        device = device_source(source)
    except ValueError as exc:
        raise CameraError(str(exc)) from None
    if device is not None and device[0] == "picamera2":
        from device.camera_picamera2 import Picamera2Camera

        return Picamera2Camera(device[1], size=size, controls=controls, timeout_s=timeout_s)
    from device.camera_opencv import FolderCamera, OpenCVCamera, VideoFileCamera

    if device is not None:
        return OpenCVCamera(device[1], size=size, timeout_s=timeout_s)
    path = Path(source)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        problem = describe_os_error(path, FileNotFoundError(errno.ENOENT, "No such file or directory"))
        if problem == "does not exist":
            problem = "no such file or folder (or use picamera2, opencv:N)"
        raise CameraError(f"camera source {show_path(source)!r}: {problem}") from None
    except (OSError, ValueError) as exc:  # a name too long, a looping link, a NUL character
        problem = describe_os_error(path, exc) if isinstance(exc, OSError) else "holds a NUL character"
        raise CameraError(f"camera source {show_path(source)!r}: {problem}") from None
    if stat.S_ISDIR(mode):
        return FolderCamera(path, fps=folder_fps)
    if stat.S_ISREG(mode):
        if not os.access(path, os.R_OK):  # OpenCV would only say "not a readable video file"
            raise CameraError(f"camera source {show_path(source)!r}: is unreadable (Permission denied)")
        return VideoFileCamera(path)
    raise CameraError(f"camera source {show_path(source)!r}: is {kind_of(mode)}, not a video file or a folder "
                      f"of images (or use picamera2, opencv:N)")
