"""One way to open a file a user named: regular files only, never blocking, size-limited.

Every loader and reader of the project (config, calibration and its board image, model and
manifest, sort logs, the status file, photos and image folders) opens its file here, so a
directory, a FIFO (whose open or read would wait for a writer forever), a link to an endless
device such as ``/dev/zero``, a dangling or looping symbolic link, a name longer than the file
system allows or a file without read permission all end the same way: one
:class:`~device.errors.SorterError` line, of the caller's subclass, naming the path and the
problem::

    /etc/waste-sorter/config.toml: config file is a FIFO, not a regular file

Only a path that ``stat`` calls a regular file is opened (opening a device can have effects),
with ``O_NONBLOCK`` (opening a FIFO then returns at once), and checked again with ``fstat`` on
the opened descriptor, so a file swapped for a FIFO between the check and the open is refused
too.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

from device.errors import SorterError

MiB = 1 << 20
SHOWN_PATH_CHARS = 300  # a longer path is shortened in messages (its start and its end are kept)

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def show_path(path: str | os.PathLike) -> str:
    """``path`` for a one-line message: as given, or its start and end around "..." when longer
    than SHOWN_PATH_CHARS (a path the file system refuses as too long can be 4 KiB)."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if len(text) <= SHOWN_PATH_CHARS:
        return text
    keep = (SHOWN_PATH_CHARS - 3) // 2
    return f"{text[:keep]}...{text[-keep:]}"


def kind_of(mode: int) -> str:
    """What a file of st_mode ``mode`` is, in words ("a FIFO"); "a regular file" for one."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def exists_entry(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a directory entry at all, a dangling or looping link included
    (``Path.exists`` says False for those, and raises for a name that is too long). Only a
    missing entry (or a missing folder on the way) is False; any other problem is True, so
    the caller goes on to open it and reports that problem."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except (OSError, ValueError):
        return True
    return True


def describe_os_error(path: str | os.PathLike, exc: OSError) -> str:
    """The problem an ``open``/``stat`` error means, in words (without the path)."""
    if exc.errno == errno.ENOENT:
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                target = os.readlink(path)
                return f"is a dangling symbolic link (to {show_path(target)}, which does not exist)"
        except (OSError, ValueError):
            pass
        return "does not exist"
    if exc.errno == errno.ELOOP:
        return "is a symbolic link that loops (too many levels of symbolic links)"
    if exc.errno == errno.ENAMETOOLONG:
        return "cannot be opened: the path is too long for the file system (File name too long)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "is unreadable (Permission denied)"
    if exc.errno == errno.ENOTDIR:
        return "does not exist (a part of the path is not a folder)"
    return f"is unreadable ({exc.strerror or exc})"


def open_regular(path: str | os.PathLike, *, what: str, error: type[SorterError]) -> BinaryIO:
    """``path`` opened for reading in binary mode, or ``error`` (one line): it must be a regular
    file (after following symbolic links) the process may read. Never blocks on a FIFO."""
    shown = show_path(path)
    try:
        mode = os.stat(path).st_mode  # a device is never opened at all (opening some has effects)
        if not stat.S_ISREG(mode):
            raise error(f"{shown}: {what} is {kind_of(mode)}, not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise error(f"{shown}: {what} {describe_os_error(path, exc)}") from None
    except ValueError:  # a NUL byte in the name
        raise error(f"{shown}: {what} cannot be opened: the path holds a NUL character") from None
    try:  # checked again on what was opened: it may have been swapped for a FIFO meanwhile
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{shown}: {what} is {kind_of(mode)}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike, *, what: str, error: type[SorterError], limit_bytes: int) -> bytes:
    """The bytes of ``path`` (see :func:`open_regular`), at most ``limit_bytes`` of them: a larger
    file is ``error`` too, whatever its size claims (a file that grows while read included)."""
    with open_regular(path, what=what, error=error) as fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            if size > limit_bytes:
                raise error(f"{show_path(path)}: {what} is too large ({size} bytes, at most {limit_bytes})")
            # what fstat says, plus one byte to see a file that grew: read(limit + 1) would
            # allocate the whole limit (1 GiB for a model) up front, more than a small Pi has
            data = fh.read(size + 1)
            if len(data) > size:  # it grew while being read: go on, a MiB at a time, up to the limit
                grown = bytearray(data)
                while len(grown) <= limit_bytes and (more := fh.read(min(MiB, limit_bytes + 1 - len(grown)))):
                    grown += more
                data = bytes(grown)
        except OSError as exc:  # EIO, a file on a vanished network share
            raise error(f"{show_path(path)}: {what} is unreadable ({exc.strerror or exc})") from None
    if len(data) > limit_bytes:
        raise error(f"{show_path(path)}: {what} is too large (more than {limit_bytes} bytes)")
    return data


def is_regular_or_absent(path: str | os.PathLike) -> str | None:
    """None when ``path`` is a regular file (links followed) or nothing yet (a dangling link's
    target is created by the first write); otherwise what it is instead, in words, for a
    writer that must not open it (a FIFO would block it, a folder would fail every write)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # a writer that cannot create it says so itself
        return None
    except OSError as exc:
        return describe_os_error(path, exc)
    except ValueError:
        return "cannot be opened: the path holds a NUL character"
    return None if stat.S_ISREG(mode) else f"is {kind_of(mode)}, not a regular file"
