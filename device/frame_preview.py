"""The sorter's newest camera frame as a small JPEG in its runtime folder, for the technician's
page (``waste-sorter web``) to show what the camera sees.

At most one frame every ``interval_s`` seconds of frame time (the frames' own timestamps, so a
replay writes the same frames at any speed), scaled to ``width_px``, with presence's changed
region (where it sees an item) boxed and the gate's verdict written on it: green for an
accepted frame, red with the reason for a rejected one. The file is replaced atomically
(:mod:`device.atomic`, no fsync: it lives in tmpfs) so a reader never sees half a JPEG.

It can never fail the sort: any error while drawing or writing is logged once (then counted
quietly) and the frame is simply not shown. Off (:meth:`FramePreview.off`) when the sorter has
no runtime folder (no ``--status-file``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from device.atomic import write_bytes
from device.gate import GateVerdict
from device.presence import PresenceDetector

log = logging.getLogger(__name__)

FRAME_FILE = "frame.jpg"  # in the runtime folder, beside status.json
INTERVAL_S = 0.4  # at most 2.5 frames a second of frame time
WIDTH_PX = 320
EPS_S = 1e-6  # frame timestamps are sums of floats: 0.8 + 0.4 must reach 1.2
JPEG_QUALITY = 70  # about 15 KB at 320x240
ACCEPTED_RGB, REJECTED_RGB = (40, 220, 60), (235, 40, 40)


class FramePreview:
    def __init__(self, path: Path | None, *, interval_s: float = INTERVAL_S, width_px: int = WIDTH_PX):
        """``path``: the JPEG to keep replaced; None: off."""
        self.path = None if path is None else Path(path)
        self.interval_s = interval_s
        self.width_px = width_px
        self.written = 0
        self.failed = 0
        self._last_t: float | None = None

    @classmethod
    def off(cls) -> "FramePreview":
        return cls(None)

    @classmethod
    def beside(cls, status_file: Path | None) -> "FramePreview":
        """The preview in ``status_file``'s folder (the runtime folder); off without one."""
        return cls.off() if status_file is None else cls(Path(status_file).with_name(FRAME_FILE))

    def due(self, t: float) -> bool:
        """Whether a frame at ``t`` (seconds, frame time) is to be written."""
        if self.path is None:
            return False
        return self._last_t is None or t < self._last_t or t - self._last_t + EPS_S >= self.interval_s

    def offer(self, image: np.ndarray, t: float, verdict: GateVerdict, presence: PresenceDetector,
              state: str) -> None:
        """The loop's frame at ``t`` with its gate verdict; written when due. Never raises."""
        if not self.due(t):
            return
        self._last_t = t
        try:
            if not self.written:
                self.path.parent.mkdir(parents=True, exist_ok=True)  # the status file may come later
            write_bytes(self.path, self.render(image, verdict, presence, state), keep_suffix=True, durable=False)
            self.written += 1
        except Exception as exc:  # noqa: BLE001 - the preview must never fail the sort
            self.failed += 1
            if self.failed == 1:
                log.warning("latest frame not written to %s (%s); the sort goes on, the web page shows no frame",
                            self.path, exc)

    def render(self, image: np.ndarray, verdict: GateVerdict, presence: PresenceDetector, state: str) -> bytes:
        """The JPEG bytes: ``image`` (RGB) scaled, presence's region boxed, the verdict written."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            image = np.zeros((self.width_px * 3 // 4, self.width_px, 3), np.uint8)  # broken: a black frame
            region = None
        else:
            region = _changed_box(image, presence)
        h, w = image.shape[:2]
        scale = self.width_px / w
        small = cv2.resize(image, (self.width_px, max(1, round(h * scale))), interpolation=cv2.INTER_LINEAR)
        bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
        colour = ACCEPTED_RGB if verdict.accepted else REJECTED_RGB
        colour_bgr = colour[::-1]
        if region is not None:
            x0, x1 = (round(v * small.shape[1]) for v in region[::2])
            y0, y1 = (round(v * small.shape[0]) for v in region[1::2])
            cv2.rectangle(bgr, (x0, y0), (x1, y1), colour_bgr, 2)
        text = f"{state}  {'accepted' if verdict.accepted else 'rejected: ' + verdict.reason}"
        cv2.rectangle(bgr, (0, 0), (self.width_px, 18), (0, 0, 0), -1)
        cv2.putText(bgr, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, colour_bgr, 1, cv2.LINE_AA)
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError("JPEG encoding failed")
        return encoded.tobytes()


def _changed_box(image: np.ndarray, presence: PresenceDetector) -> tuple[float, float, float, float] | None:
    """Presence's changed region as a box (x0, y0, x1, y1) in shares of the width and height;
    None without a board reference or with nothing changed. Presence's own view of the frame
    when the loop just gave it this frame (:meth:`PresenceDetector.changed_region`); its state
    is not changed."""
    if presence.reference_image is None:
        return None
    changed = presence.changed_region(image)
    if changed is None or not changed.any():
        return None
    ys, xs = np.nonzero(changed)
    mh, mw = changed.shape[:2]
    return xs.min() / mw, ys.min() / mh, (xs.max() + 1) / mw, (ys.max() + 1) / mh
