"""Camera backends built on OpenCV: USB cameras, video files and folders of images."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from device.camera import CameraBase, Frame
from device.errors import CameraError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
WAIT_SLICE_S = 0.05  # longest uninterrupted wait of a capture (bounds signal handling latency)


class VideoFileCamera(CameraBase):
    """Frames of a video file; time is ``frame index / the file's frame rate``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise CameraError(f"{self.path}: not a readable video file")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        if not (fps and np.isfinite(fps) and 0 < fps <= 1000):
            raise CameraError(f"{self.path}: video has no usable frame rate ({fps})")
        self.fps = float(fps)
        self._index = 0

    def capture(self) -> Frame | None:
        ok, bgr = self._cap.read()
        if not ok:
            return None
        frame = Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self._index / self.fps, self._index,
                      {"source": "video"})
        self._index += 1
        return frame

    def close(self) -> None:
        self._cap.release()


class FolderCamera(CameraBase):
    """Images of a folder in name order, ``fps`` frames per second of source time."""

    def __init__(self, folder: Path, *, fps: float = 10.0):
        self.paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise CameraError(f"{folder}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.fps = fps
        self._index = 0

    def capture(self) -> Frame | None:
        while self._index < len(self.paths):
            path = self.paths[self._index]
            self._index += 1
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                log.warning("%s: unreadable image, skipped", path)
                continue
            i = self._index - 1
            return Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), i / self.fps, i, {"path": str(path)})
        return None

    def close(self) -> None:
        self.paths = []


class OpenCVCamera(CameraBase):
    """A USB camera (``/dev/videoN``); each read has a timeout, since a read can block."""

    def __init__(self, index: int, *, size: tuple[int, int], timeout_s: float):
        self._cap = cv2.VideoCapture(index)
        if not self._cap.isOpened():
            raise CameraError(f"opencv:{index}: camera could not be opened")
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        self.name = f"opencv:{index}"
        self.timeout_s = timeout_s
        self._t0 = time.monotonic()
        self._index = 0

    def capture(self) -> Frame | None:
        result: list = []
        reader = threading.Thread(target=lambda: result.append(self._cap.read()), daemon=True)
        reader.start()
        # Wait in short slices: a SIGTERM delivered to another thread (the reader, an onnxruntime
        # worker) runs its handler only when the main thread is back in Python code.
        deadline = time.monotonic() + self.timeout_s
        while reader.is_alive() and time.monotonic() < deadline:
            reader.join(min(WAIT_SLICE_S, max(0.0, deadline - time.monotonic())))
        if not result:
            raise CameraError(f"{self.name}: no frame within {self.timeout_s:.1f} s")
        ok, bgr = result[0]
        if not ok:
            raise CameraError(f"{self.name}: camera stopped delivering frames")
        frame = Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), time.monotonic() - self._t0, self._index,
                      {"source": self.name})
        self._index += 1
        return frame

    def close(self) -> None:
        self._cap.release()
