"""The sort log: one JSON line per item, appended durably, rotated by size, read back.

Files: ``sort.jsonl`` (current), ``sort.jsonl.1`` (previous), ... up to ``keep`` old files.
Each record is written whole with one ``write`` + ``fsync``; rotation renames only between
records, so no line is lost or duplicated. A reader skips a torn last line (a crash mid-write).

When the disk is full or the directory read-only, sorting goes on: records wait in memory
(bounded), one error a minute at most is logged, and the log catches up by itself.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from device import safe_json
from device.atomic import fsync_dir
from device.errors import DataError
from device.safe_open import MiB, exists_entry, kind_of, open_regular, show_path

log = logging.getLogger(__name__)

MAX_LINE_BYTES = MiB  # a record is about 400 bytes; a longer line is skipped as malformed
TAIL_CHUNK_BYTES = MiB  # how far back at a time a torn last line is searched for its start


@dataclass(frozen=True)
class SortEvent:
    """One item's decision, exactly as written to the sort log."""

    ts: str  # UTC wall time of the decision, ISO 8601 with milliseconds
    source_time: float  # seconds since the source started (frame timestamps)
    item: int  # 1-based item counter of this run
    label: str  # the classifier's top class ("" when no frame could be classified)
    confidence: float  # averaged probability of ``label``
    top3: tuple[tuple[str, float], ...]
    bin: str
    reason: str  # "" when sorted normally, else why it went to the fallback bin
    frames_used: int
    frames_rejected: int
    reject_reasons: dict[str, int]
    latency_ms: float  # deciding frame processed -> actuated (the inference still needed, if any)
    model_sha256: str  # prefix
    calibration_id: str
    settled: bool = True  # False: the item kept moving and was decided after presence.max_settle_s
    capture_id: str = ""  # the capture of its decision frames (device/capture.py); "" when none
    early: bool = False  # decided while settling: its first still frames agreed (model.early_*)
    # unique across runs and sorters (device/record_ids.py): "<device_id>-<run_id>-<item>";
    # "" in records written before it existed
    record_id: str = ""
    device_id: str = ""  # [device] id, else the host name
    run_id: str = ""  # the run's start (UTC) and 6 random hex digits

    def to_json(self) -> str:
        body = asdict(self)
        body["top3"] = [[name, round(p, 4)] for name, p in self.top3]
        body["confidence"] = round(self.confidence, 4)
        body["latency_ms"] = round(self.latency_ms, 2)
        body["source_time"] = round(self.source_time, 3)
        return json.dumps(body, separators=(",", ":"))


def utc_iso(t: float | None = None, *, ms: bool = False) -> str:
    """UTC wall time (now, or epoch seconds ``t``) as ISO 8601 with a ``Z``, to ms if asked."""
    t = time.time() if t is None else t
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
    return text + (f".{int(t * 1000) % 1000:03d}Z" if ms else "Z")


class SortLog:
    """Appends records to ``path``; rotates at ``max_bytes`` keeping ``keep`` old files."""

    def __init__(self, path: Path, *, max_bytes: int = 10_000_000, keep: int = 5,
                 max_pending: int = 100_000, error_interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.error_interval_s = error_interval_s
        self._clock = clock
        self._pending: deque[str] = deque(maxlen=max_pending)
        self._last_error_at: float | None = None
        self._last_drop_logged_at: float | None = None
        self._tail_checked = False
        self.write_errors = 0
        self.dropped = 0  # records pushed out of a full in-memory queue

    def append(self, event: SortEvent) -> bool:
        """Queue the record and write all that waits; False if it is still waiting."""
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
            now = self._clock()
            if self._last_drop_logged_at is None or now - self._last_drop_logged_at >= self.error_interval_s:
                self._last_drop_logged_at = now
                log.error("sort log queue full (%d records): the oldest waiting records are lost, %d so far",
                          len(self._pending), self.dropped)
        self._pending.append(event.to_json() + "\n")
        return self.flush()

    def flush(self) -> bool:
        try:
            while self._pending:
                line = self._pending[0]
                self._rotate_if_needed(len(line.encode()))
                self._write(line)
                self._pending.popleft()
        except OSError as exc:
            self.write_errors += 1
            now = self._clock()
            if self._last_error_at is None or now - self._last_error_at >= self.error_interval_s:
                self._last_error_at = now
                log.error("sort log %s not writable (%s); %d record(s) kept in memory",
                          self.path, exc.strerror or exc, len(self._pending))
            return False
        if self._last_error_at is not None:
            log.warning("sort log %s writable again; caught up", self.path)
            self._last_error_at = None
        return True

    @property
    def pending(self) -> int:
        return len(self._pending)

    def unwritten(self) -> list[str]:
        """The records still waiting in memory (JSON, without the newline), oldest first."""
        return [line.rstrip("\n") for line in self._pending]

    def _write(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # a FIFO would block the sorter once its buffer is full
                raise OSError(errno.EINVAL, f"{kind_of(st.st_mode)}, not a regular file")
            os.set_blocking(fd, True)
            size_before = st.st_size
            if not self._tail_checked:
                size_before = _cut_torn_tail(fd, size_before, self.path)
                self._tail_checked = True
            data = line.encode()
            try:
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(28, "short write")
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size_before)  # leave no torn record behind
                raise
        finally:
            os.close(fd)

    def _rotate_if_needed(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0 or size + incoming <= self.max_bytes:
            return
        for i in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        fsync_dir(self.path.parent)
        self._tail_checked = False

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> "SortLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cut_torn_tail(fd: int, size: int, path: Path) -> int:
    """Truncate a last line without its newline (a crash mid-write); returns the new size."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    keep, end = 0, size  # back, a chunk at a time, to the last newline (or the start of the file)
    while end > 0:
        start = max(0, end - TAIL_CHUNK_BYTES)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        end = start
    os.ftruncate(fd, keep)
    log.warning("%s: removed a torn last line (%d bytes) left by an interrupted write", path, size - keep)
    return keep


def log_files(path: Path) -> list[Path]:
    """The current log and its rotated files, oldest first."""
    path = Path(path)
    prefix = path.name + "."
    rotated = []
    try:  # not glob(): a log named "sort[1].jsonl" is no pattern
        names = os.listdir(path.parent)
    except (OSError, ValueError):  # no folder (yet), or one this user cannot list
        names = []
    for name in names:
        suffix = name[len(prefix):] if name.startswith(prefix) else ""
        if suffix.isascii() and suffix.isdigit():
            rotated.append((int(suffix), path.with_name(name)))
    files = [p for _, p in sorted(rotated, reverse=True)]
    return files + ([path] if exists_entry(path) else [])


def read_lines_from(file: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Records of the complete lines of ``file`` from byte ``offset``, and the offset after the
    last complete line. A torn last line (a crash mid-write) is left for later; blank and
    non-object lines are passed over, malformed ones (not JSON, non-finite numbers, nested too
    deeply, longer than MAX_LINE_BYTES) skipped with one warning per call. DataError (one line)
    when ``file`` is not a regular file that can be read (a folder, a FIFO, ...)."""
    try:
        fh = open_regular(file, what="sort log", error=DataError)
    except DataError:
        if not exists_entry(file):  # rotated away while reading
            return [], offset
        raise
    records: list[dict[str, Any]] = []
    skipped = 0
    position = offset
    with fh:
        try:
            for record, position, malformed in scan_lines(fh, offset):
                skipped += malformed
                if record is not None:
                    records.append(record)
        except OSError as exc:  # EIO, a file on a vanished network share
            raise DataError(f"{show_path(file)}: sort log is unreadable ({exc.strerror or exc})") from None
    if skipped:
        log.warning("%s: skipped %d malformed line(s)", show_path(file), skipped)
    return records, position


def scan_lines(fh, offset: int) -> Iterator[tuple[dict[str, Any] | None, int, bool]]:
    """The complete lines of an open sort log from byte ``offset``, each as (its record, or None
    for a blank, non-object or malformed line; the offset after it; whether it was malformed:
    not JSON, non-finite numbers, nested too deeply, longer than MAX_LINE_BYTES). Ends at the end
    of the file or before a torn last line (a crash mid-write), left for later. Reads at most
    MAX_LINE_BYTES at a time, however long a line is."""
    position = offset
    fh.seek(offset)
    while True:
        line = fh.readline(MAX_LINE_BYTES + 1)
        if not line.endswith(b"\n"):
            if len(line) <= MAX_LINE_BYTES:
                return  # the end, or a torn last line left for later
            rest = _bytes_to_newline(fh)  # a line too long to be a record
            if rest is None:
                return
            position += len(line) + rest
            yield None, position, True
            continue
        position += len(line)
        if not line.strip():
            yield None, position, False
            continue
        try:
            record = safe_json.loads(line)
        except ValueError:
            yield None, position, True
            continue
        yield (record if isinstance(record, dict) else None), position, False


def _bytes_to_newline(fh) -> int | None:
    """Read on to the next newline: the bytes read, newline included, or None at the end of
    the file first (a torn over-long last line)."""
    count = 0
    while True:
        chunk = fh.readline(MAX_LINE_BYTES)
        if not chunk:
            return None
        count += len(chunk)
        if chunk.endswith(b"\n"):
            return count


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every record across rotated files, oldest first; torn or foreign lines are skipped."""
    for file in log_files(path):
        yield from read_lines_from(file)[0]
