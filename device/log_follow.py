"""Follow the sort log (``waste-sorter logs -f``) across rotations, however many happen between polls.

A file is known by its inode *and* its first bytes: a rotation that deletes the oldest file lets
the file system give its inode to the next new log at once (with ``keep = 1`` two inodes take
turns), so an inode alone would take a new log for the file read last. Appends never change a
file's first bytes; a new file starts with another record.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.errors import DataError
from device.safe_open import exists_entry, open_regular, show_path
from device.sortlog import log_files, read_lines_from

log = logging.getLogger(__name__)

HEAD_BYTES = 256  # a record is longer: the first bytes hold its time and item number
Record = dict[str, Any]


@dataclass(frozen=True)
class _Look:
    ino: int
    size: int
    head: bytes  # the first HEAD_BYTES bytes (fewer in a shorter file)

    def is_file(self, ino: int, head: bytes) -> bool:
        """Whether this is the file known as (``ino``, ``head``): same inode, and one head begins
        the other (the known head is shorter when the file was shorter then)."""
        shorter, longer = sorted((self.head, head), key=len)
        return self.ino == ino and longer.startswith(shorter)


def _look(path: Path) -> _Look | None:
    """Inode, size and first bytes of ``path``; None when nothing is there. DataError (one line)
    when it is not a regular file that can be read, or the path cannot be looked at."""
    try:
        fh = open_regular(path, what="sort log", error=DataError)
    except DataError:
        if not exists_entry(path):  # nothing there (yet, or rotated away meanwhile)
            return None
        raise
    with fh:
        st = os.fstat(fh.fileno())
        try:
            head = fh.read(HEAD_BYTES)
        except OSError as exc:
            raise DataError(f"{show_path(path)}: sort log is unreadable ({exc.strerror or exc})") from None
    return _Look(st.st_ino, st.st_size, head)


class LogFollower:
    """New complete records appended to ``path`` since the last poll, across rotations."""

    def __init__(self, path: Path, *, from_start: bool = False):
        """``from_start``: every record of the log and its rotated files is new; otherwise only
        what is appended after now (when the log is missing mid-rotation: after its newest
        rotated file)."""
        self.path = Path(path)
        # The file read last (the log, or a rotated file it became), known by inode and first
        # bytes, and the offset it was read up to; None: nothing read yet, every file is new.
        self._known: tuple[int, bytes] | None = None
        self._offset = 0
        if not from_start:
            for file in reversed(log_files(self.path)):  # the log, else its newest rotated file
                look = _look(file)
                if look is not None:
                    self._known, self._offset = (look.ino, look.head), look.size
                    break

    def _is_known(self, look: _Look | None) -> bool:
        return look is not None and self._known is not None and look.is_file(*self._known)

    def _read(self, path: Path, look: _Look, offset: int) -> list[Record]:
        records, self._offset = read_lines_from(path, offset)
        after = _look(path)  # its first bytes as far as they are written now
        self._known = (look.ino, after.head if after is not None and after.ino == look.ino else look.head)
        return records

    def poll(self) -> list[Record]:
        records: list[Record] = []
        current = _look(self.path)
        if not self._is_known(current):
            records += self._read_rotated()  # what was appended before the log was rotated
        if current is not None:
            offset = self._offset if self._is_known(current) else 0
            if current.size < offset:  # truncated or replaced in place
                offset = 0
            records += self._read(self.path, current, offset)
        return records

    def _read_rotated(self) -> list[Record]:
        """The rest of the file read last (now ``.1`` or older) and every rotated file newer than
        it, however many rotations happened since the last poll; all of them when that file
        is gone (rotated past ``keep``: only newer ones are left) or nothing was read yet."""
        rotated = [p for p in log_files(self.path) if p != self.path]  # oldest first
        looks = [_look(p) for p in rotated]
        start = next((i for i, look in enumerate(looks) if self._is_known(look)), None)
        if start is None and self._known is not None and any(looks):
            log.warning("%s: the file read last was rotated away before it was read to its end; "
                        "records may be missing", show_path(self.path))
        offset = self._offset if start is not None else 0
        records: list[Record] = []
        for file, look in zip(rotated[start or 0:], looks[start or 0:]):
            if look is not None:  # else rotated away meanwhile
                records += self._read(file, look, offset)
            offset = 0
        return records


#: For readers that keep their own position in the log (device/mqtt_position.py).
FileLook, look_file = _Look, _look
