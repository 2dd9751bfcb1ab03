"""The camera seam: one small protocol, several backends.

A source string picks the backend (:func:`open_camera`; the protocol and the frame are in
:mod:`device.camera.base`, the backends in modules of their own that import only it):

- ``picamera2`` (or ``picamera2:N``): the Raspberry Pi camera, manual exposure from calibration;
- ``opencv:N``: a USB camera through OpenCV;
- a video file (``scene.mp4``): timestamps from the file's own frame rate;
- a folder of images: one frame per image at ``folder_fps``.

Every backend returns :class:`Frame` values whose ``timestamp_s`` is the time since the source
started, so a recorded scene replays identically at any speed. ``capture()`` returns ``None``
at the end of a finite source and raises :class:`CameraError` when a live camera stops.
:class:`~device.camera.paced.PacedCamera` plays a recording at its own pace as a live camera.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from device.camera.base import (AdjustableCamera, Camera, CameraBase, ExposureControls, Frame,
                                check_source_option, device_source)
from device.errors import CameraError
from device.safe_open import describe_os_error, kind_of, show_path

__all__ = ["AdjustableCamera", "Camera", "CameraBase", "ExposureControls", "Frame", "check_source_option",
           "device_source", "open_camera"]


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
        from device.camera.picamera2 import Picamera2Camera

        return Picamera2Camera(device[1], size=size, controls=controls, timeout_s=timeout_s)
    from device.camera.opencv import FolderCamera, OpenCVCamera, VideoFileCamera

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
