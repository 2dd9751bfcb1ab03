"""What the loop checks on a frame before the gate and presence judge it: its size against the
board reference, and one warning per reason a camera delivers unusable frames."""

from __future__ import annotations

import logging

import numpy as np

from device.errors import ConfigError
from device.gate import check_structure

log = logging.getLogger(__name__)


class FrameChecks:
    def __init__(self) -> None:
        self._expected: tuple[tuple[int, int], str] | None = None  # (height, width), where it came from
        self._warned: set[str] = set()

    def expect(self, height_width: tuple[int, int], what: str) -> None:
        """Frames must be ``height_width`` from now on (``what`` says whose size that is)."""
        self._expected = (tuple(height_width), what)

    def check_size(self, image: np.ndarray) -> None:
        """Every image the gate can measure must have the board reference's size (the
        calibration's, else the first frame's): ConfigError otherwise, since comparing it with a
        squashed board means nothing and every later frame of that camera or recording would be
        the same. Structurally broken images are the gate's to reject."""
        if check_structure(image) != "":
            return
        hw = image.shape[:2]
        if self._expected is None:
            self._expected = (hw, "the first frame")
        elif hw != self._expected[0]:
            (h, w), what = self._expected
            raise ConfigError(f"frames are {hw[1]}x{hw[0]}, but {what} is {w}x{h}: set camera.width and "
                              f"camera.height to the size the camera delivers (and calibrate at it), or "
                              f"record at that size")

    def warn_unusable_once(self, image: object, reason: str) -> None:
        """One WARNING per reason a frame is unusable, so a camera that keeps delivering broken
        frames shows up in the journal, not only as a counter."""
        if reason in self._warned:
            return
        self._warned.add(reason)
        log.warning("unusable frame (%s: shape %s, dtype %s); such frames are rejected", reason,
                    getattr(image, "shape", None), getattr(image, "dtype", type(image).__name__))
