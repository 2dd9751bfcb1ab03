"""The calibration file: schema, strict loading, atomic saving, history and rollback.

Files (all in the calibration file's folder, e.g. ``/var/lib/waste-sorter/``)::

    calibration.json          the active calibration (schema below)
    board-<id>.png            the empty-board reference of calibration <id> (8-bit RGB PNG)
    histogram-<id>.png        its histogram, for a technician to copy off with scp
    history/NNNN-<id>.json    earlier versions, NNNN increasing; --rollback restores the newest
    history/rolled-back-<id>.json   versions replaced by a rollback (listed by --history;
                              --restore ID brings one back, the current one going to history)

The schema and its strict parser are in :mod:`device.calibration_file.schema`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from device.calibration_file.schema import MAX_FILE_BYTES, Calibration, parse_bytes
from device import atomic
from device.errors import CalibrationError
from device.safe_open import MiB, exists_entry, read_regular, show_path

log = logging.getLogger(__name__)

MAX_BOARD_PNG_BYTES = 64 * MiB  # a 4096x4096 RGB PNG is at most 48 MiB
MAX_KEPT_BYTES = 16 * MiB  # the largest current file save/rollback copy into history/

HISTORY_DIR = "history"
KEEP_VERSIONS = 20  # history entries kept; older ones (and their PNGs) are pruned
_HISTORY_ENTRY = re.compile(r"^(\d{4,})-(.+)\.json$")


def load_calibration(path: str | Path) -> Calibration:
    """The calibration in ``path``; CalibrationError (one line) for any problem."""
    path = Path(path)
    data = read_regular(path, what="calibration file", error=CalibrationError, limit_bytes=MAX_FILE_BYTES)
    return parse_bytes(data, show_path(path))


def load_board_image(path: str | Path, calibration: Calibration) -> np.ndarray:
    """The empty-board reference (uint8 HxWx3 RGB) of ``calibration`` stored beside ``path``."""
    png = Path(path).parent / calibration.board_reference
    if not exists_entry(png):
        raise CalibrationError(f"{show_path(png)}: board reference image is missing")
    data = read_regular(png, what="board reference image", error=CalibrationError, limit_bytes=MAX_BOARD_PNG_BYTES)
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    except cv2.error:
        bgr = None
    if bgr is None:
        raise CalibrationError(f"{show_path(png)}: board reference image is not a readable PNG")
    _check_board_size(png, bgr, calibration)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _check_board_size(where: Path, image: np.ndarray, calibration: Calibration) -> None:
    """The board image must have the calibration's image_size (read back and before saving)."""
    width, height = calibration.image_size
    if image.shape[:2] != (height, width):
        raise CalibrationError(f"{where}: board reference image is {image.shape[1]}x{image.shape[0]}, but the "
                               f"calibration's image_size is {width}x{height}")


def load_with_board(path: str | Path) -> tuple[Calibration, np.ndarray]:
    """Calibration and board image, both checked (see :func:`load_for_camera` for the sorter's)."""
    calibration = load_calibration(path)
    return calibration, load_board_image(path, calibration)


def load_for_camera(path: str | Path, size: tuple[int, int]) -> tuple[Calibration, np.ndarray]:
    """The one loader of a calibration the sorter is to use: ``waste-sorter run`` (at start and
    on SIGHUP) and ``calibrate --check`` call it, so a cron check catches every calibration the
    sorter cannot start with. (calibration, board image); CalibrationError also when it was made
    for frames of another size than the camera's ``size`` (width, height): its board reference and
    gate statistics would not describe the frames the sorter sees."""
    calibration, board = load_with_board(path)
    if tuple(calibration.image_size) != tuple(size):
        cw, ch = calibration.image_size
        raise CalibrationError(f"{show_path(path)}: image_size {cw}x{ch} of calibration {calibration.id} does not "
                               f"match the camera's {size[0]}x{size[1]} (camera.width, camera.height); "
                               f"recalibrate or set the camera size")
    return calibration, board


def is_absent(path: str | Path) -> bool:
    """True only when nothing at all is at ``path`` ("no calibration yet"): a dangling or looping
    symbolic link, a name too long or a folder in the way is a calibration that is there but
    broken, and :func:`load_for_camera` says what is wrong with it."""
    return not exists_entry(path)


# ----------------------------------------------------------------------------- saving

def _id_of(data: bytes, path: Path) -> str:
    """The id of a calibration file's bytes, or "unreadable" (it is kept all the same)."""
    try:
        return parse_bytes(data, str(path)).id
    except CalibrationError:
        return "unreadable"


def _current_bytes(path: Path) -> bytes | None:
    """The file at ``path`` that a save or rollback keeps in history/ before replacing it; None
    when there is none (nothing there, or a dangling link, which the new file replaces).
    CalibrationError when it cannot be kept (a FIFO, a folder, a looping link, ...): replacing it
    would lose it, or block on it."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return None
    except OSError:
        pass  # read_regular says what is wrong
    return read_regular(path, what="current calibration file", error=CalibrationError, limit_bytes=MAX_KEPT_BYTES)


def _encode(calibration: Calibration) -> bytes:
    data = (json.dumps(calibration.to_dict(), indent=2, allow_nan=False) + "\n").encode()
    parse_bytes(data, f"calibration {calibration.id}")  # never write what could not be read back
    return data


def _history(path: Path) -> list[tuple[int, Path]]:
    folder = path.parent / HISTORY_DIR
    try:
        if not folder.is_dir():
            return []
    except OSError:  # a path too long for the file system: it has no history either
        return []
    entries = []
    for entry in folder.iterdir():
        match = _HISTORY_ENTRY.match(entry.name)
        if match and entry.is_file():
            entries.append((int(match.group(1)), entry))
    return sorted(entries)


def history(path: str | Path) -> list[Path]:
    """Earlier versions, oldest first (the last is what :func:`rollback` restores)."""
    return [p for _, p in _history(Path(path))]


def rolled_back(path: str | Path) -> list[Path]:
    """Versions a rollback replaced (newer than what is current then), oldest first by time."""
    folder = Path(path).parent / HISTORY_DIR
    try:
        found = [p for p in folder.glob("rolled-back-*.json") if p.is_file()]
    except OSError:
        return []
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def _write_png(png: Path, image: np.ndarray) -> None:
    def writer(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cv2.imwrite could not write {tmp}")

    atomic.write_with(png, writer, keep_suffix=True)


def save_calibration(path: str | Path, calibration: Calibration, board_image: np.ndarray) -> Path:
    """Write the board PNG, keep the current file in history/, then replace ``path`` atomically."""
    path = Path(path)
    if not isinstance(board_image, np.ndarray) or board_image.dtype != np.uint8 \
            or board_image.ndim != 3 or board_image.shape[2] != 3:
        raise CalibrationError(f"{path}: board image must be uint8 HxWx3 RGB")
    _check_board_size(path, board_image, calibration)
    data = _encode(calibration)
    folder, hist = path.parent, path.parent / HISTORY_DIR
    entry: Path | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic.clean_stray_temps(folder)
        atomic.clean_stray_temps(hist)
        previous = _current_bytes(path)
        _write_png(folder / calibration.board_reference, board_image)
        if previous is not None:
            old_id = _id_of(previous, path)
            entries = _history(path)
            number = entries[-1][0] + 1 if entries else 1
            hist.mkdir(exist_ok=True)
            entry = hist / f"{number:04d}-{old_id}.json"
            atomic.write_bytes(entry, previous)
        atomic.write_bytes(path, data)
    except OSError as exc:
        if entry is not None:  # the current file stays current: it is not an earlier version
            entry.unlink(missing_ok=True)
        raise CalibrationError(f"{path}: calibration could not be written ({exc})") from exc
    _prune(path)
    log.info("calibration %s written to %s", calibration.id, path)
    return path


def _prune(path: Path) -> None:
    """Drop history beyond KEEP_VERSIONS entries and PNGs no kept version refers to."""
    keep = KEEP_VERSIONS
    entries = _history(path)
    try:
        for _, old in entries[:-keep] if len(entries) > keep else []:
            old.unlink()
        kept = [p for _, p in _history(path)] + [path]
        kept += sorted((path.parent / HISTORY_DIR).glob("rolled-back-*.json"))
        ids = set()
        for p in kept:
            match = re.match(r"^(?:\d{4,}-|rolled-back-)?(.+)\.json$", p.name)
            try:
                ids.add(load_calibration(p).id)
            except CalibrationError:
                if match:
                    ids.add(match.group(1))
        for png in list(path.parent.glob("board-*.png")) + list(path.parent.glob("histogram-*.png")):
            if png.stem.split("-", 1)[1] not in ids:
                png.unlink()
    except OSError as exc:
        log.warning("%s: old calibration versions could not be pruned (%s)", path, exc)


def _make_current(path: Path, kept: Path, name_for_current: Callable[[bytes], str], what: str) -> Calibration:
    """Make the kept version ``kept`` the current calibration: it and its board PNG are checked
    first, then the current file (if any) is kept in history/ as ``name_for_current(its bytes)``,
    ``kept`` is written in its place and removed. ``what`` names the step in the error."""
    calibration = load_calibration(kept)
    load_board_image(path, calibration)  # its board PNG must still be there
    restored = read_regular(kept, what="calibration file", error=CalibrationError, limit_bytes=MAX_FILE_BYTES)
    current = _current_bytes(path)
    hist = path.parent / HISTORY_DIR
    try:
        if current is not None:
            atomic.write_bytes(hist / name_for_current(current), current)
        atomic.write_bytes(path, restored)
        kept.unlink()
        atomic.fsync_dir(hist)
    except OSError as exc:
        raise CalibrationError(f"{path}: {what} failed ({exc})") from exc
    return calibration


def rollback(path: str | Path) -> Calibration:
    """Restore the newest earlier version; the replaced one goes to history/rolled-back-<id>.json."""
    path = Path(path)
    entries = _history(path)
    if not entries:
        raise CalibrationError(f"{path}: no earlier calibration to roll back to")
    calibration = _make_current(path, entries[-1][1], lambda current: f"rolled-back-{_id_of(current, path)}.json",
                                "rollback")
    log.info("rolled back %s to calibration %s", path, calibration.id)
    return calibration


def restore(path: str | Path, calibration_id: str) -> Calibration:
    """Make the kept version ``calibration_id`` (an earlier one, or one a rollback replaced) the
    current calibration again, as if it were saved anew: the current file goes to history/ as
    the newest earlier version (so --rollback returns to it). CalibrationError when no kept
    version has that id, or its board PNG is gone."""
    path = Path(path)
    kept = history(path) + rolled_back(path)
    found = None
    for candidate in reversed(kept):  # the newest of that id
        try:
            if load_calibration(candidate).id == calibration_id:
                found = candidate
                break
        except CalibrationError:
            continue
    if found is None:
        raise CalibrationError(f"{path}: no kept calibration {calibration_id!r} (see calibrate --history)")

    def newest_earlier(current: bytes) -> str:
        entries = _history(path)
        return f"{(entries[-1][0] + 1 if entries else 1):04d}-{_id_of(current, path)}.json"

    calibration = _make_current(path, found, newest_earlier, "restore")
    log.info("restored calibration %s to %s", calibration.id, path)
    return calibration
