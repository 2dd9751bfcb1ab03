"""Camera backends built on OpenCV: USB cameras, video files and folders of images."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from device.camera.base import CameraBase, Frame
from device.errors import CameraError, first_line
from device.safe_open import MiB, read_regular

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MAX_IMAGE_BYTES = 64 * MiB  # a larger file in an image folder is skipped
WAIT_SLICE_S = 0.05  # longest uninterrupted wait of a capture (bounds signal handling latency)


class VideoFileCamera(CameraBase):
    """Frames of a video file; time is ``frame index / the file's frame rate``.

    A frame that cannot be decoded (a corrupt stretch) is skipped with a warning naming the
    frames, and the frames after it keep their own times; a file that ends before the frame
    count its header announces (truncated, or undecodable to the end) ends with a warning too,
    never silently.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise CameraError(f"{self.path}: not a readable video file")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        if not (fps and np.isfinite(fps) and 0 < fps <= 1000):
            raise CameraError(f"{self.path}: video has no usable frame rate ({fps})")
        self.fps = float(fps)
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if count and np.isfinite(count) and count > 0 else 0  # 0: unknown
        self._index = 0

    def capture(self) -> Frame | None:
        first_bad = None
        while True:
            ok, bgr = self._cap.read()
            if ok:
                break
            if self._index >= self.frame_count:  # the end (or an unknown length: take it as the end)
                if first_bad is not None:
                    log.warning("%s: video ended at frame %d, but its header announces %d frames (a decode "
                                "error or a truncated file)", self.path, first_bad, self.frame_count)
                return None
            first_bad = self._index if first_bad is None else first_bad
            self._index += 1  # an undecodable frame still took its time
        if first_bad is not None:
            log.warning("%s: frame(s) %d-%d could not be decoded (a corrupt stretch): skipped", self.path,
                        first_bad, self._index - 1)
        frame = Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self._index / self.fps, self._index,
                      {"source": "video"})
        self._index += 1
        return frame

    def close(self) -> None:
        self._cap.release()


class FolderCamera(CameraBase):
    """Images of a folder in name order, ``fps`` frames per second of source time."""

    def __init__(self, folder: Path, *, fps: float = 10.0):
        try:
            entries = list(Path(folder).iterdir())
        except OSError as exc:  # PermissionError, NotADirectoryError, a folder gone meanwhile
            raise CameraError(f"{folder}: image folder is unreadable ({exc.strerror or exc})") from None
        self.paths = sorted(p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise CameraError(f"{folder}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.fps = fps
        self._index = 0

    def capture(self) -> Frame | None:
        while self._index < len(self.paths):
            path = self.paths[self._index]
            self._index += 1
            try:  # never cv2.imread: it would wait forever on a FIFO named like an image
                data = read_regular(path, what="image", error=CameraError, limit_bytes=MAX_IMAGE_BYTES)
                bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
            except CameraError as exc:
                log.warning("%s, skipped", exc)
                continue
            except cv2.error:
                bgr = None
            if bgr is None:
                log.warning("%s: unreadable image, skipped", path)
                continue
            i = self._index - 1
            return Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), i / self.fps, i, {"path": str(path)})
        return None

    def close(self) -> None:
        self.paths = []


class OpenCVCamera(CameraBase):
    """A USB camera (``/dev/videoN``); each read has a timeout, since a read can block.

    The read runs in a daemon thread. After a timeout that thread may still be blocked in
    ``cap.read()``: no second read is started, and :meth:`close` does not release the capture
    under it (releasing during a read can crash the driver); the reader releases it when its read
    returns, or the process exit does.
    """

    live = True

    CLOSE_JOIN_S = 0.5  # how long close() waits for a blocked read to return

    def __init__(self, index: int, *, size: tuple[int, int], timeout_s: float):
        cap = cv2.VideoCapture(index)
        if not cap.isOpened():
            raise CameraError(f"opencv:{index}: camera could not be opened")
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        self._setup(cap, f"opencv:{index}", timeout_s)

    @classmethod
    def from_capture(cls, cap, name: str, timeout_s: float) -> "OpenCVCamera":
        """An OpenCVCamera reading an already opened ``cv2.VideoCapture`` (tests, odd devices)."""
        camera = cls.__new__(cls)
        camera._setup(cap, name, timeout_s)
        return camera

    def _setup(self, cap, name: str, timeout_s: float) -> None:
        self._cap = cap
        self.name = name
        self.timeout_s = timeout_s
        self._t0 = time.monotonic()
        self._index = 0
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._reading = False  # a reader thread is inside cap.read()
        self._closed = False

    def _read(self, result: list) -> None:
        try:
            result.append(self._cap.read())
        except Exception as exc:  # noqa: BLE001 - cv2.error from a failing driver
            result.append(exc)
        finally:
            with self._lock:
                self._reading = False
                release = self._closed
            if release:  # close() came while this read was blocked; no read can follow now
                self._cap.release()
                log.info("%s: released after its blocked read returned", self.name)

    def capture(self) -> Frame | None:
        with self._lock:
            if self._closed:
                raise CameraError(f"{self.name}: camera is closed")
            if self._reading:
                raise CameraError(f"{self.name}: an earlier read is still blocked")
            self._reading = True
        result: list = []
        self._reader = threading.Thread(target=self._read, args=(result,), name=f"{self.name} read",
                                        daemon=True)
        self._reader.start()
        # Wait in short slices: a SIGTERM delivered to another thread (the reader, an onnxruntime
        # worker) runs its handler only when the main thread is back in Python code.
        deadline = time.monotonic() + self.timeout_s
        while self._reader.is_alive() and time.monotonic() < deadline:
            self._reader.join(min(WAIT_SLICE_S, max(0.0, deadline - time.monotonic())))
        if not result:
            raise CameraError(f"{self.name}: no frame within {self.timeout_s:.1f} s")
        if isinstance(result[0], Exception):
            raise CameraError(f"{self.name}: read failed ({first_line(result[0], 160)})")
        ok, bgr = result[0]
        if not ok:
            raise CameraError(f"{self.name}: camera stopped delivering frames")
        frame = Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), time.monotonic() - self._t0, self._index,
                      {"source": self.name})
        self._index += 1
        return frame

    def close(self) -> None:
        reader = self._reader
        if reader is not None and reader.is_alive():
            reader.join(self.CLOSE_JOIN_S)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._reading:
                log.warning("%s: a read is still blocked after %.1f s; not releasing the camera under it "
                            "(released when the read returns, or at exit)", self.name, self.CLOSE_JOIN_S)
                return
        self._cap.release()
