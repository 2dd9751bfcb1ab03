"""Capture items worth learning from: their decision frames as JPEG and a JSON sidecar, written
off the sorting loop (the folder's files: :mod:`device.capture_store`).

An item is captured when its decision was below ``capture.min_confidence`` (default: the
routing threshold; ``why = "uncertain"``) or when it is the Nth item offered (``sample_every``;
``why = "sample"``), so that the labelled set also holds items the model gets right. The loop
calls :meth:`CaptureWriter.offer` once per item: it decides, assigns the capture id at once (the
sort record names it; never reused: :mod:`device.capture_ids`) and queues the write for the
writer's own thread. It never waits: a full queue drops the capture (counted; one warning a
minute), a full disk is one warning a minute, and the folder is kept under ``max_mb`` by
deleting the oldest captures.

    with CaptureWriter.from_config(config, classes=classifier.classes, model_sha256=classifier.sha256) as capture:
        ...  record = replace(record, capture_id=capture.offer(record, frames))
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from device.atomic import clean_stray_temps
from device.capture_ids import CaptureIds
from device.capture_store import (capture_sizes, delete_capture, folder_files, frame_name, lock_for_writing,
                                  sidecar_body, sidecar_name, write_file)
from device.config import Config
from device.errors import DataError, first_line
from device.safe_open import show_path
from device.sortlog import SortEvent

log = logging.getLogger(__name__)

JPEG_QUALITY = 90
QUEUE_ITEMS = 8  # captures waiting for the writer: at most 8 x 3 frames of 512x384 (14 MB) in memory
CLOSE_WAIT_S = 5.0  # close() waits this long for the queue to drain (systemd allows 20 s to stop)
WRITER_NICENESS = 10  # the writer thread yields the CPU to the loop (where the system allows it)


@dataclass(frozen=True)
class CaptureCounts:
    """What a writer did so far."""

    offered: int = 0  # items offered
    queued: int = 0  # captures decided and queued (ids handed out)
    written: int = 0
    dropped: int = 0  # the queue was full: not captured
    failed: int = 0  # could not be written (disk full, folder gone), or no id reserved for it
    deleted: int = 0  # oldest captures deleted to stay under max_mb


class CaptureWriter:
    """Decides which items to capture and writes them on its own thread; ``enabled=False``
    (or a folder that cannot be used) makes :meth:`offer` return "" for every item."""

    def __init__(self, folder: Path, *, enabled: bool = True, min_confidence: float = 0.55,
                 sample_every: int = 20, max_mb: float = 500.0, classes: tuple[str, ...] = (),
                 model_sha256: str = "", queue_items: int = QUEUE_ITEMS, warn_interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.folder = Path(folder)
        self.min_confidence = min_confidence
        self.sample_every = sample_every
        self.max_bytes = int(max_mb * 1e6)
        self.classes = tuple(classes)
        self.model_sha256 = model_sha256
        self.warn_interval_s = warn_interval_s
        self._clock = clock
        self._queue: queue.Queue = queue.Queue(maxsize=queue_items)
        self._counts = CaptureCounts()
        self._counts_lock = threading.Lock()
        self._last_warned: dict[str, float] = {}
        self._lock_fd: int | None = None  # the folder's writer lock, let go by the writer thread as it ends
        self._thread: threading.Thread | None = None
        self._ids: CaptureIds | None = None
        self._closed = False
        self.enabled = enabled and self._open()  # capturing in this run

    @classmethod
    def from_config(cls, config: Config, *, classes: tuple[str, ...] = (), model_sha256: str = "",
                    **kwargs) -> "CaptureWriter":
        """A writer for ``config.capture`` (its threshold defaults to ``routing.min_confidence``)."""
        settings = config.capture
        threshold = settings.min_confidence
        return cls(Path(settings.dir), enabled=settings.enabled,
                   min_confidence=config.routing.min_confidence if threshold is None else threshold,
                   sample_every=settings.sample_every, max_mb=settings.max_mb, classes=classes,
                   model_sha256=model_sha256, **kwargs)

    @classmethod
    def off(cls) -> "CaptureWriter":
        """A writer that captures nothing (touches no folder), for a loop built without one."""
        return cls(Path("."), enabled=False)

    # -- the loop's side ------------------------------------------------------------------
    def offer(self, event: SortEvent, frames: list[np.ndarray]) -> str:
        """The capture id for this item's record, or "" when it is not captured. ``frames`` are
        the uint8 HxWx3 RGB frames its decision used; they are written later, so the caller must
        not change them afterwards. Never blocks."""
        if not self.enabled or self._closed:
            return ""
        self._count(offered=1)
        why = self._why(event, self._counts.offered)
        if not why or not frames:
            return ""
        capture_id = self._ids.peek()
        if capture_id is None:  # the writer could not reserve more ids (disk full): never an unrecorded one
            self._count(failed=1)
            self._warn("ids", "no capture id reserved in %s: item %d not captured", show_path(self.folder),
                       event.item)
            return ""
        try:
            self._queue.put_nowait((capture_id, why, event, list(frames)))
        except queue.Full:
            self._count(dropped=1)
            self._warn("queue", "capture queue full (%d waiting): item %d not captured, %d dropped so far",
                       self._queue.qsize(), event.item, self._counts.dropped)
            return ""
        self._ids.advance()
        self._count(queued=1)
        return str(capture_id)

    def _why(self, event: SortEvent, offered: int) -> str:
        if event.confidence < self.min_confidence:
            return "uncertain"
        if self.sample_every and offered % self.sample_every == 0:
            return "sample"
        return ""

    @property
    def counts(self) -> CaptureCounts:
        with self._counts_lock:
            return self._counts

    def summary(self) -> str:
        """One line for the end of a run."""
        if not self.enabled:
            return "captures: off"
        c = self.counts
        return (f"captures: {c.written} written to {show_path(self.folder)}, {c.dropped} dropped (queue full), "
                f"{c.failed} failed, {c.deleted} oldest deleted (quota {self.max_bytes / 1e6:g} MB)")

    def close(self, timeout_s: float = CLOSE_WAIT_S) -> None:
        """Write what is queued, waiting at most ``timeout_s``; captures still queued then are
        lost (said once). Nothing is captured afterwards. The folder's writer lock is the writer
        thread's: it is held until that thread has ended, however long after this."""
        self._closed = True
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout_s
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))
        try:
            self._ids.release_unused()  # no id is handed out any more
        except OSError:
            pass  # the ids reserved are simply never used
        if self._thread.is_alive():
            log.warning("capture writer still busy after %.0f s at exit: about %d queued capture(s) lost",
                        timeout_s, self._queue.qsize())
        self._thread = None

    def __enter__(self) -> "CaptureWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- start ----------------------------------------------------------------------------
    def _open(self) -> bool:
        """Create the folder, take its writer lock, reserve ids, start the thread; False
        (with one warning) when the folder cannot be used: sorting goes on without captures."""
        try:
            self._lock_fd = lock_for_writing(self.folder)
            if self._lock_fd is None:
                log.warning("capture folder %s is in use by another sorter: not capturing in this run",
                            show_path(self.folder))
                return False
            self._ids = CaptureIds(self.folder, block=4 * self._queue.maxsize)
        except (OSError, DataError) as exc:  # cannot be made or read; its id mark cannot be written
            log.warning("capture folder %s cannot be used (%s): not capturing", show_path(self.folder),
                        getattr(exc, "strerror", None) or exc)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
            return False
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()
        log.info("capturing items decided below %.2f%s into %s (quota %g MB)", self.min_confidence,
                 f" and one item in {self.sample_every}" if self.sample_every else "", show_path(self.folder),
                 self.max_bytes / 1e6)
        return True

    # -- the writer thread ----------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._write_queued()
        finally:  # another sorter may capture into the folder only once nothing here writes to it
            os.close(self._lock_fd)

    def _write_queued(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICENESS)
        except (OSError, AttributeError):  # refused (systemd's ~@resources filter): same priority
            pass
        try:
            sizes = self._scan()
        except (OSError, DataError) as exc:  # the folder went away or became unreadable
            log.warning("capture folder %s cannot be read (%s): its quota is counted from now on",
                        show_path(self.folder), exc)
            sizes = {}
        while (job := self._queue.get()) is not None:
            try:
                self._ids.reserve_ahead()  # ids for the loop, well before it needs them
            except OSError as exc:
                self._warn("reserve", "capture ids cannot be reserved in %s (%s)", show_path(self.folder),
                           exc.strerror or exc)
            capture_id, why, event, frames = job
            try:
                written = self._write(capture_id, why, event, frames)
            except (OSError, cv2.error, ValueError, TypeError) as exc:  # disk full; a frame no image
                self._count(failed=1)
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc, 120)
                self._warn("write", "capture %d not written to %s (%s); %d capture(s) lost so far", capture_id,
                           show_path(self.folder), reason, self._counts.failed)
                self._remove(capture_id, [frame_name(capture_id, k) for k in range(1, len(frames) + 1)])
                continue
            self._count(written=1)
            sizes[capture_id] = written
            self._enforce_quota(sizes)

    def _remove(self, capture_id: int, names: list[str]) -> bool:
        """Delete a capture's files: True once gone; a folder that refuses is a warning a minute."""
        try:
            delete_capture(self.folder, capture_id, names)
            return True
        except OSError as exc:
            self._warn("delete", "capture %d could not be deleted from %s (%s)", capture_id,
                       show_path(self.folder), exc.strerror or exc)
            return False

    def _scan(self) -> dict[int, int]:
        """The bytes of each capture already in the folder, oldest first; trimmed to the quota."""
        clean_stray_temps(self.folder)
        sizes = capture_sizes(self.folder)
        log.info("capture folder %s holds %d capture(s), %.1f MB", show_path(self.folder), len(sizes),
                 sum(sizes.values()) / 1e6)
        self._enforce_quota(sizes)
        return sizes

    def _write(self, capture_id: int, why: str, event: SortEvent, frames: list[np.ndarray]) -> int:
        """The capture's JPEGs, then its sidecar; the bytes written."""
        names, total = [], 0
        for k, rgb in enumerate(frames, start=1):
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise ValueError(f"frame {k} could not be encoded")
            names.append(frame_name(capture_id, k))
            write_file(self.folder / names[-1], jpeg.tobytes())
            total += len(jpeg)
        record = replace(event, capture_id=str(capture_id)).to_json()
        body = sidecar_body(capture_id, why, names, self.classes, self.model_sha256, record)
        write_file(self.folder / sidecar_name(capture_id), body)
        return total + len(body)

    def _enforce_quota(self, sizes: dict[int, int]) -> None:
        """Delete the oldest captures while over max_mb (never the newest; one not deleted stays counted)."""
        total = sum(sizes.values())
        if total <= self.max_bytes:
            return
        try:
            files = folder_files(self.folder)
        except DataError:
            return
        deleted = 0
        for oldest in list(sizes)[:-1]:  # oldest first
            if total <= self.max_bytes:
                break
            if self._remove(oldest, files.get(oldest, [])):
                total -= sizes.pop(oldest)
                deleted += 1
        self._count(deleted=deleted)
        self._warn("quota", "capture folder %s is at its quota of %g MB: deleting the oldest captures "
                   "(%d so far; label and export them sooner, or raise capture.max_mb)",
                   show_path(self.folder), self.max_bytes / 1e6, self._counts.deleted, level=logging.INFO)

    # -- bookkeeping ----------------------------------------------------------------------
    def _count(self, **increments: int) -> None:
        with self._counts_lock:
            self._counts = replace(self._counts, **{k: getattr(self._counts, k) + v for k, v in increments.items()})

    def _warn(self, kind: str, message: str, *args, level: int = logging.WARNING) -> None:
        """Log ``message`` at most once per ``warn_interval_s`` for each ``kind``."""
        now = self._clock()
        last = self._last_warned.get(kind)
        if last is None or now - last >= self.warn_interval_s:
            self._last_warned[kind] = now
            log.log(level, message, *args)
