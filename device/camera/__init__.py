"""The camera seam: one small protocol, several backends.

A source string picks the backend (:func:`open_camera`; the protocol and the frame are in
:mod:`device.camera.base`, the backends in modules of their own that import only it):

- ``picamera2`` (or ``picamera2:N``): the Raspberry Pi camera, manual exposure from calibration;
- ``opencv:N``: a USB camera through OpenCV;
- a video file (``scene.mp4``): timestamps from the file's own frame rate;
- a folder of images: one frame per image at ``folder_fps``;
- ``sim`` (or ``sim:OPTIONS``): a simulated camera filming an empty board
  (:mod:`device.camera.sim`), with manual controls like picamera2's.

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

from device.camera.base import AdjustableCamera, Camera, CameraBase, ExposureControls, Frame, device_source
from device.errors import CameraError, UsageError
from device.safe_open import describe_os_error, kind_of, show_path

__all__ = ["AdjustableCamera", "Camera", "CameraBase", "ExposureControls", "Frame", "check_source",
           "check_source_option", "device_source", "open_camera"]


def open_camera(
    source: str,
    *,
    controls: ExposureControls | None = None,
    timeout_s: float = 2.0,
    size: tuple[int, int] = (512, 384),
    folder_fps: float = 10.0,
) -> Camera:
    """Open the camera named by ``source`` (see the module docstring)."""
    from device.camera.sim import SimulatedCamera, is_sim_source, parse_sim_source

    if is_sim_source(source):
        return SimulatedCamera(parse_sim_source(source), size=size, controls=controls)
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
    if _path_kind(source) == "folder":
        return FolderCamera(path, fps=folder_fps)
    return VideoFileCamera(path)


def _path_kind(source: str) -> str:
    """"folder" or "video" for a source path that can be opened as one; CameraError (one line)
    for anything else: nothing there, a FIFO, a device, a file without read permission, ..."""
    path = Path(source)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        problem = describe_os_error(path, FileNotFoundError(errno.ENOENT, "No such file or directory"))
        if problem == "does not exist":
            problem = "no such file or folder (or use picamera2, picamera2:N, opencv:N, sim)"
        raise CameraError(f"camera source {show_path(source)!r}: {problem}") from None
    except (OSError, ValueError) as exc:  # a name too long, a looping link, a NUL character
        problem = describe_os_error(path, exc) if isinstance(exc, OSError) else "holds a NUL character"
        raise CameraError(f"camera source {show_path(source)!r}: {problem}") from None
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISREG(mode):
        if not os.access(path, os.R_OK):  # OpenCV would only say "not a readable video file"
            raise CameraError(f"camera source {show_path(source)!r}: is unreadable (Permission denied)")
        return "video"
    raise CameraError(f"camera source {show_path(source)!r}: is {kind_of(mode)}, not a video file or a folder "
                      f"of images (or use picamera2, opencv:N)")


def check_source_option(source: str) -> None:
    """A ``--source`` given on a command line: UsageError (exit 2) for a malformed device name
    or simulated camera's options."""
    from device.camera.sim import is_sim_source, parse_sim_source

    try:
        if is_sim_source(source):
            parse_sim_source(source)
        device_source(source)
    except (ValueError, CameraError) as exc:
        raise UsageError(f"--source: {exc}") from None


def check_source(source: str) -> str:
    """What ``source`` is, in words, checked as far as that is possible without opening a
    camera (``run --check-config``): a simulated camera's options, a device name and its
    backend's import (DependencyError, exit 3, without picamera2), a path that a video or image
    folder can be read from (CameraError, one line, as :func:`open_camera` would raise)."""
    from device.camera.sim import is_sim_source, parse_sim_source

    if is_sim_source(source):
        parse_sim_source(source)
        return f"{source}: the simulated camera"
    try:
        device = device_source(source)
    except ValueError as exc:
        raise CameraError(str(exc)) from None
    if device is not None and device[0] == "picamera2":
        from device.camera.picamera2 import import_picamera2

        import_picamera2()
        return f"{source}: the Raspberry Pi camera (picamera2 imports; camera not opened)"
    if device is not None:
        return f"{source}: a USB camera through OpenCV (not opened)"
    if _path_kind(source) == "folder":
        from device.camera.opencv import IMAGE_SUFFIXES

        try:
            images = sum(1 for p in Path(source).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        except OSError as exc:
            raise CameraError(f"{show_path(source)}: image folder is unreadable ({exc.strerror or exc})") from None
        if not images:
            raise CameraError(f"{show_path(source)}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return f"{source}: a folder of {images} images, played as a camera's frames in name order"
    return f"{source}: a video file"
