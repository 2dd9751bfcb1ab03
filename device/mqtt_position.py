"""How far the publisher got in the sort log, read back from there a bounded batch at a time.

A position names a file as :mod:`device.log_follow` knows it (inode and first bytes, so a
rotation that renames ``sort.jsonl`` to ``sort.jsonl.1`` keeps it, and a new file that reuses a
freed inode is not taken for it) and the byte offset just after a record. :class:`LogCursor`
reads at most ``limit`` records from a position, across every rotated file newer than it, so
hours of records written while the broker was away are read from the disk as they are sent,
never queued in memory. :class:`PositionStore` keeps the position of the last record the broker
acknowledged (with the counts up to it) in a small JSON file, replaced atomically.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device import safe_json
from device.atomic import write_bytes
from device.errors import DataError
from device.log_follow import HEAD_BYTES, FileLook, look_file
from device.safe_open import MiB, exists_entry, open_regular, read_regular, show_path
from device.sortlog import log_files, scan_lines

log = logging.getLogger(__name__)

Record = dict[str, Any]
POSITION_VERSION = 1
MAX_POSITION_BYTES = MiB  # the file is about 3 KiB


@dataclass(frozen=True)
class LogPosition:
    """Just after a record: the file (inode and first bytes) and the offset in it (bytes)."""

    ino: int
    head: bytes
    offset: int

    def to_json(self) -> dict[str, Any]:
        return {"ino": self.ino, "head": base64.b64encode(self.head).decode("ascii"), "offset": self.offset}

    @classmethod
    def from_json(cls, raw: Any) -> "LogPosition":
        """ValueError when ``raw`` is not what :meth:`to_json` writes."""
        if not isinstance(raw, dict):
            raise ValueError("position is not an object")
        ino, head, offset = raw.get("ino"), raw.get("head"), raw.get("offset")
        if not (isinstance(ino, int) and isinstance(offset, int) and isinstance(head, str)) or offset < 0:
            raise ValueError("position needs an integer ino and offset and a head string")
        return cls(ino, base64.b64decode(head.encode("ascii"), validate=True)[:HEAD_BYTES], offset)


@dataclass(frozen=True)
class Entry:
    record: Record
    position: LogPosition  # just after this record


class LogCursor:
    """Records of the sort log at ``path`` from a position on, oldest first."""

    def __init__(self, path: Path, position: LogPosition | None = None):
        """``position``: where the next read starts; None: at the start of the oldest file."""
        self.path = Path(path)
        self.position = position
        self._warned_gone = False

    def read(self, limit: int) -> list[Entry]:
        """Up to ``limit`` complete records after the position, which moves past them."""
        entries: list[Entry] = []
        files = log_files(self.path)  # oldest first
        looks = [look_file(file) for file in files]
        index, offset = self._start(looks)
        while index is not None and index < len(files) and len(entries) < limit:
            look = looks[index]
            if look is None:  # rotated away meanwhile
                index, offset = index + 1, 0
                continue
            done = self._read_file(files[index], look, offset, limit, entries)
            if not done or index == len(files) - 1:
                break  # more in this file (the limit), or the newest file read to its end
            index, offset = index + 1, 0  # a rotated file read to its end: on to the next
            nxt = looks[index] if index < len(looks) else None
            if nxt is not None:
                self.position = LogPosition(nxt.ino, nxt.head, 0)
        return entries

    def _start(self, looks: list[FileLook | None]) -> tuple[int | None, int]:
        if not any(looks):
            return None, 0
        if self.position is None:
            return 0, 0
        pos = self.position
        for index, look in enumerate(looks):
            if look is not None and look.is_file(pos.ino, pos.head):
                return index, (pos.offset if pos.offset <= look.size else 0)  # truncated in place: again
        if not self._warned_gone:
            log.warning("%s: the file last delivered from was rotated away before it was read to its end; "
                        "records may be missing; going on from the oldest file", show_path(self.path))
            self._warned_gone = True
        return 0, 0

    def _read_file(self, file: Path, look: FileLook, offset: int, limit: int, entries: list[Entry]) -> bool:
        """Append records of ``file`` from ``offset`` until ``entries`` holds ``limit``; whether it was read to its
        end. A file that is no longer ``look`` (rotated between the listing and the open) is
        left for the next read."""
        try:
            fh = open_regular(file, what="sort log", error=DataError)
        except DataError:
            if not exists_entry(file):
                return False
            raise
        skipped = 0
        with fh:
            st = os.fstat(fh.fileno())
            head = os.pread(fh.fileno(), HEAD_BYTES, 0)
            if not look.is_file(st.st_ino, head):
                return False
            try:
                done = len(entries) < limit
                if done:
                    for record, end, malformed in scan_lines(fh, offset):  # sortlog's reader, one per line
                        self.position = LogPosition(st.st_ino, head, end)
                        skipped += malformed
                        if record is not None:
                            entries.append(Entry(record, self.position))
                            if len(entries) >= limit:
                                done = False
                                break
            except OSError as exc:
                raise DataError(f"{show_path(file)}: sort log is unreadable ({exc.strerror or exc})") from None
        if skipped:
            log.warning("%s: skipped %d malformed line(s)", show_path(file), skipped)
        return done


@dataclass(frozen=True)
class Saved:
    """What the position file holds: the position after the last acknowledged record, and the
    counts up to it (device/mqtt_stats.py's JSON)."""

    position: LogPosition | None
    stats: dict[str, Any]


class PositionStore:
    """The position file, replaced atomically (temporary file, fsync, rename)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> Saved:
        """What was saved; nothing (from the start of the log) when there is no file yet, and a
        warning when it cannot be used (then records already delivered are sent again)."""
        if not exists_entry(self.path):
            return Saved(None, {})
        try:
            raw = safe_json.loads(read_regular(self.path, what="position file", error=DataError,
                                               limit_bytes=MAX_POSITION_BYTES))
            if not isinstance(raw, dict) or raw.get("version") != POSITION_VERSION:
                raise ValueError(f"not a version {POSITION_VERSION} position file")
            position = None if raw.get("position") is None else LogPosition.from_json(raw["position"])
            stats = raw.get("stats") if isinstance(raw.get("stats"), dict) else {}
        except (DataError, ValueError) as exc:
            log.warning("%s: position file unusable (%s); delivering the sort log from its start",
                        show_path(self.path), exc)
            return Saved(None, {})
        return Saved(position, stats)

    def save(self, position: LogPosition | None, stats: dict[str, Any]) -> None:
        """Replace the file (OSError when it cannot be written)."""
        body = {"version": POSITION_VERSION, "position": None if position is None else position.to_json(),
                "stats": stats}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(self.path, (json.dumps(body, separators=(",", ":")) + "\n").encode())
