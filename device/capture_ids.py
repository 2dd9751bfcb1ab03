"""Capture ids that are never handed out twice in one folder, across runs too.

The sort record names its capture id when the item is decided, before the capture is written,
so an id must never come back: not after a capture is lost at exit (a close that timed out, a
SIGKILL, a power cut), nor after a failed write. Counting from the files on disk would hand
such ids out again and an old sort-log record would name another item. So the folder keeps a
high-water mark, ``DIR/.last-id``: the highest id handed out or reserved, written atomically
and durably (:mod:`device.atomic`) *before* an id below it is handed out. Ids are reserved a
block at a time by the writer thread, so the sorting loop never waits on the disk; a clean
close brings the mark down to the last id handed out, so ids stay short to type.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from device.atomic import write_bytes
from device.capture_store import highest_id
from device.errors import DataError
from device.safe_open import exists_entry, read_regular, show_path

log = logging.getLogger(__name__)

ID_MARK_FILE = ".last-id"
_MARK = re.compile(rb"(\d{1,12})\n?")


def read_id_mark(folder: Path) -> int:
    """The highest id the folder's mark says was handed out or reserved; 0 without a mark.
    DataError when it is damaged."""
    path = Path(folder) / ID_MARK_FILE
    if not exists_entry(path):
        return 0
    match = _MARK.fullmatch(read_regular(path, what="capture id mark", error=DataError, limit_bytes=64))
    if not match:
        raise DataError(f"{show_path(path)}: capture id mark is damaged (expected a whole number)")
    return int(match.group(1))


def write_id_mark(folder: Path, last_id: int) -> None:
    """Record ``last_id`` as handed out or reserved (atomic and durable); OSError when it cannot."""
    write_bytes(Path(folder) / ID_MARK_FILE, f"{last_id}\n".encode())


def first_free_id(folder: Path) -> int:
    """The first id the folder has never used: past its captures, its labels and its mark. A
    damaged mark is a warning (the folder's files are counted from then)."""
    try:
        mark = read_id_mark(folder)
    except DataError as exc:
        log.warning("%s; counting capture ids from the captures and labels in the folder", exc)
        mark = 0
    return max(highest_id(folder), mark) + 1


class CaptureIds:
    """The ids of one writer: :meth:`peek` and :meth:`advance` on the loop's thread (no I/O),
    :meth:`reserve_ahead` on the writer's. Reserves its first block at once (OSError when the
    mark cannot be written)."""

    def __init__(self, folder: Path, block: int):
        self.folder = Path(folder)
        self.block = max(2, block)
        self.next_id = first_free_id(self.folder)
        self.reserved = self.next_id - 1  # the highest id the mark on disk covers
        self.reserve_ahead()

    def peek(self) -> int | None:
        """The next id, or None when none is reserved (the mark could not be written)."""
        return self.next_id if self.next_id <= self.reserved else None

    def advance(self) -> None:
        """The id :meth:`peek` gave is handed out."""
        self.next_id += 1

    def reserve_ahead(self) -> None:
        """Reserve the next block when less than half of this one is left: the mark first, then
        the ids. OSError when the mark cannot be written."""
        next_id = self.next_id
        if self.reserved - next_id + 1 >= self.block // 2:
            return
        last = next_id + self.block - 1
        write_id_mark(self.folder, last)
        self.reserved = max(self.reserved, last)

    def release_unused(self) -> None:
        """Bring the mark down to the last id handed out (after the last :meth:`advance`)."""
        if self.next_id - 1 < self.reserved:
            write_id_mark(self.folder, self.next_id - 1)
            self.reserved = self.next_id - 1
