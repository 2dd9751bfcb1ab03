"""A recording played as if filmed now: frames at their own pace on the monotonic clock.

``waste-sorter run --source scene.mp4 --realtime`` (and the bench) wrap a file camera in a
:class:`PacedCamera`: each frame is delivered when its time since the first frame has passed on
``clock`` and stamped with that clock, and the camera is ``live``, so the sorter takes its live
path: inference on its worker thread, actuators timed on the clock. A loop that falls behind
loses frames, as it would with a real camera (a frame whose successor is already due is
dropped, counted in :attr:`PacedCamera.dropped`). The recording stays its opener's to close.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from device.camera.base import Camera, CameraBase, Frame

log = logging.getLogger(__name__)


class PacedCamera(CameraBase):
    live = True

    def __init__(self, recording: Camera, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.recording = recording
        self.clock = clock
        self.sleep = sleep
        self.dropped = 0  # frames skipped because the loop was late for them
        self._start_s: float | None = None
        self._next: Frame | None = None

    def capture(self) -> Frame | None:
        frame = self._next or self.recording.capture()
        self._next = None
        if frame is None:
            return None
        if self._start_s is None:
            self._start_s = self.clock() - frame.timestamp_s
        now_s = self.clock()  # once: a decoder slower than real time must not chase the clock to the end
        while True:  # late: skip to the newest frame that is due, as a camera's buffer would
            upcoming = self.recording.capture()
            if upcoming is None or self._start_s + upcoming.timestamp_s > now_s:
                self._next = upcoming
                break
            frame = upcoming
            self.dropped += 1
        wait_s = self._start_s + frame.timestamp_s - self.clock()
        if wait_s > 0:
            self.sleep(wait_s)
        now_s = self.clock() - self._start_s
        return Frame(frame.image, now_s, frame.index, frame.metadata)
