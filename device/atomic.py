"""Crash-safe file writes: temporary file, fsync, rename, fsync of the folder.

A reader sees either the old file or the new one, never a torn mix, even when the process is
killed or the power fails midway. Temporary files are named ``.NAME.tmp-PID-RANDOM[.SUFFIX]``
in the target's folder (a rename is atomic only within one file system); one left behind by a
killed process (one no longer running) is removed by :func:`clean_stray_temps` before the next
write.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

_TEMP = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]{8}(\.[A-Za-z0-9]+)?$")


def temp_path(path: Path, keep_suffix: bool = False) -> Path:
    """A fresh temporary name next to ``path`` (with ``path``'s suffix when ``keep_suffix``)."""
    suffix = path.suffix if keep_suffix else ""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_with(path: Path, writer: Callable[[Path], None], keep_suffix: bool = False, *,
               durable: bool = True) -> None:
    """Atomically create ``path`` from ``writer(temp_path)``; the temp file never survives.
    ``durable=False`` skips the fsyncs: a reader still never sees half a file, but after a power
    cut the file may be old or empty (for files in tmpfs, or ones the sorter's own sort-log
    fsyncs must not queue behind, such as captured images)."""
    path = Path(path)
    tmp = temp_path(path, keep_suffix)
    try:
        writer(tmp)
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # pragma: no cover - nothing better to do
            log.warning("%s: temporary file could not be removed", tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def write_bytes(path: Path, data: bytes, *, keep_suffix: bool = False, durable: bool = True) -> None:
    """Atomically replace ``path`` with ``data`` (see :func:`write_with`)."""

    def writer(tmp: Path) -> None:
        with open(tmp, "xb") as fh:
            fh.write(data)

    write_with(path, writer, keep_suffix, durable=durable)


def _writer_alive(pid: int) -> bool:
    """Whether process ``pid`` (the writer named in a temporary file) still runs: its write may
    still be under way (another calibrate, a ``captures label`` beside the sorter)."""
    try:
        os.kill(pid, 0)
    except PermissionError:  # another user's process: it runs
        return True
    except (ProcessLookupError, OverflowError):  # none such; a number too big to be a pid
        return False
    return True


def clean_stray_temps(folder: Path) -> int:
    """Remove temporary files a killed write left in ``folder``: those whose writer no longer
    runs (one that does may be writing it now); how many."""
    removed = 0
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return 0
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match and not _writer_alive(int(match.group(1))) and entry.is_file():
            try:
                entry.unlink()
                removed += 1
                log.info("removed stray temporary file %s", entry)
            except OSError:
                log.warning("%s: stray temporary file could not be removed", entry)
    return removed
