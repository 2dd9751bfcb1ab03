"""The capture folder: one definition of its files for the sorter that writes captures and for
``waste-sorter captures`` that lists, labels and exports them.

    DIR/17-1.jpg 17-2.jpg 17-3.jpg   the frames item 17's decision used (RGB, JPEG)
    DIR/17.json                      its sidecar: why it was captured, the sort record, the
                                     model's classes and SHA-256 (written last: a capture
                                     without it is incomplete and not listed)
    DIR/labels.json                  {"17": "glass", "18": "skip"}: written by `captures label`
                                     only, so the sorter and a person never write the same file
    DIR/.last-id                     the highest capture id handed out or reserved
                                     (:mod:`device.capture_ids`)

Capture ids are whole numbers counted up per folder (the oldest capture has the lowest), so
they are short to type after reading them off a contact sheet. A sidecar or labels file that is
damaged is skipped with one warning; its capture is simply not listed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from device import safe_json
from device.atomic import write_bytes
from device.errors import DataError
from device.safe_open import MiB, exists_entry, read_regular, show_path
from device.schema import short

log = logging.getLogger(__name__)

FORMAT = 1
LABELS_FILE = "labels.json"
WRITER_LOCK = ".writer.lock"  # held by the sorter writing captures (one writer per folder)
LABELS_LOCK = ".labels.lock"  # held while labels.json is rewritten
SKIP = "skip"  # the label of a capture that shows no item worth learning from
MAX_SIDECAR_BYTES = 256 * 1024  # a sidecar is about 1 KiB
MAX_LABELS_BYTES = 64 * MiB
_NAME = re.compile(r"^(\d{1,12})(?:-(\d{1,3}))?\.(json|jpg)$")
_ID_KEY = re.compile(r"\d{1,12}", re.ASCII)


def frame_name(capture_id: int, k: int) -> str:
    """The file of a capture's ``k``-th frame (from 1)."""
    return f"{capture_id}-{k}.jpg"


def sidecar_name(capture_id: int) -> str:
    return f"{capture_id}.json"


def capture_id_of(name: str) -> int | None:
    """The capture a file of the folder belongs to (``17-2.jpg``, ``17.json``), else None."""
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Capture:
    """One capture as its sidecar describes it, and its label ("" while unlabelled)."""

    id: int
    why: str  # "uncertain" (decided below the threshold) or "sample" (every Nth item)
    frames: tuple[str, ...]  # file names in the folder
    classes: tuple[str, ...]  # the model's classes: what it may be labelled
    record: dict[str, Any]  # the item's sort record
    model_sha256: str = ""
    label: str = ""

    @property
    def ts(self) -> str:
        return str(self.record.get("ts", ""))

    @property
    def predicted(self) -> str:
        return str(self.record.get("label", "") or "")

    @property
    def confidence(self) -> float:
        value = self.record.get("confidence")
        return float(value) if isinstance(value, (int, float)) else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "ts": self.ts, "predicted": self.predicted, "confidence": self.confidence,
                "why": self.why, "label": self.label or None, "frames": list(self.frames),
                "classes": list(self.classes), "model_sha256": self.model_sha256, "record": self.record}


def sidecar_body(capture_id: int, why: str, frames: list[str], classes: tuple[str, ...], model_sha256: str,
                 record_json: str) -> bytes:
    """The sidecar of a capture; ``record_json`` is the sort record as the log has it."""
    body = {"format": FORMAT, "id": capture_id, "why": why, "frames": frames, "classes": list(classes),
            "model_sha256": model_sha256, "record": json.loads(record_json)}
    return (json.dumps(body, separators=(",", ":")) + "\n").encode()


def write_file(path: Path, data: bytes) -> None:
    """Create ``path`` under a temporary name, then rename it: a reader never sees half a file.
    No fsync, so the sorter's own sort-log fsyncs never queue behind images; after a power cut
    a capture may be unreadable, and readers skip it."""
    write_bytes(path, data, keep_suffix=True, durable=False)


def delete_capture(folder: Path, capture_id: int, names: list[str]) -> int:
    """Remove a capture's files (the sidecar first: it is no longer listed while its frames
    go); the bytes freed."""
    freed = 0
    for name in sorted(names, key=lambda n: not n.endswith(".json")):
        path = folder / name
        try:
            size = path.stat().st_size
            path.unlink()
            freed += size
        except FileNotFoundError:
            continue
    return freed


def folder_files(folder: Path) -> dict[int, list[str]]:
    """Each capture id's files in ``folder``, by id; other files are left out."""
    files: dict[int, list[str]] = {}
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise DataError(f"{show_path(folder)}: capture folder is unreadable ({exc.strerror or exc})") from None
    for name in names:
        capture_id = capture_id_of(name)
        if capture_id is not None:
            files.setdefault(capture_id, []).append(name)
    return dict(sorted(files.items()))


def capture_sizes(folder: Path) -> dict[int, int]:
    """The bytes of each capture in ``folder``, by id (oldest first); a file gone meanwhile
    counts nothing."""
    sizes: dict[int, int] = {}
    for capture_id, names in folder_files(folder).items():
        total = 0
        for name in names:
            try:
                total += (folder / name).stat().st_size
            except OSError:
                continue
        sizes[capture_id] = total
    return sizes


def read_captures(folder: Path) -> list[Capture]:
    """Every complete capture in ``folder`` with its label, oldest first. DataError when the
    folder does not exist or cannot be read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{show_path(folder)}: no capture folder there (capture.dir, --dir)")
    labels = read_labels(folder)
    captures, damaged = [], []
    for capture_id, names in folder_files(folder).items():
        if sidecar_name(capture_id) not in names:
            continue  # being written, or cut short
        try:
            capture = _read_sidecar(folder / sidecar_name(capture_id), capture_id)
        except (DataError, ValueError, KeyError, TypeError):
            damaged.append(capture_id)
            continue
        captures.append(replace(capture, label=labels.get(capture_id, "")))
    if damaged:
        log.warning("%s: skipped %d damaged capture sidecar(s), e.g. %s", show_path(folder), len(damaged),
                    sidecar_name(damaged[0]))
    return captures


def _read_sidecar(path: Path, capture_id: int) -> Capture:
    body = safe_json.loads(read_regular(path, what="capture sidecar", error=DataError,
                                        limit_bytes=MAX_SIDECAR_BYTES))
    if not isinstance(body, dict) or body.get("id") != capture_id or not isinstance(body["record"], dict):
        raise ValueError("not a sidecar of this capture")
    frames = tuple(str(name) for name in body["frames"])
    if any(capture_id_of(name) != capture_id for name in frames):
        raise ValueError("frames of another capture")
    return Capture(id=capture_id, why=str(body["why"]), frames=frames,
                   classes=tuple(str(c) for c in body["classes"]), record=body["record"],
                   model_sha256=str(body.get("model_sha256", "")))


def read_labels(folder: Path) -> dict[int, str]:
    """``labels.json``: capture id -> label; {} when there is none yet. A damaged file is a
    DataError (labelling on top of it would lose the labels it held), an entry that is not
    ``"ID": "CLASS"`` included: left out, it would be gone at the next rewrite."""
    path = Path(folder) / LABELS_FILE
    if not exists_entry(path):
        return {}
    try:
        body = safe_json.loads(read_regular(path, what="labels file", error=DataError, limit_bytes=MAX_LABELS_BYTES))
        problem = "" if isinstance(body, dict) else "not an object"
    except ValueError as exc:
        problem = str(exc)
    if not problem:
        bad = [k for k, v in body.items() if not (_ID_KEY.fullmatch(k) and isinstance(v, str))]
        problem = f"entry {short(bad[0], 40)}: {short(body[bad[0]], 40)}" if bad else ""
    if problem:
        raise DataError(f"{show_path(path)}: labels file is damaged ({problem}; expected {{\"ID\": \"CLASS\", ...}}); "
                        "move it aside to start labelling afresh")
    return {int(k): v for k, v in body.items()}


def label_problem(label: str, classes: tuple[str, ...]) -> str | None:
    """Why ``label`` cannot label a capture the model of ``classes`` decided (None: it can). A
    label is "skip" or one of the classes, and a plain folder name: the export makes a folder
    of it, which must lie in the export (no "/", "..") and be seen by training (no leading ".")."""
    if label == SKIP:
        return None
    if label not in classes:
        return f"{label!r} is not a class of the model that decided it ({', '.join(classes)}) or '{SKIP}'"
    if not is_folder_name(label):
        return f"{label!r} cannot be a class folder's name (empty, a leading '.', '/' or a NUL)"
    return None


def is_folder_name(name: str) -> bool:
    """Whether ``name`` is one plain, visible folder name (not "", ".", ".." or "a/b")."""
    return 0 < len(name) <= 255 and not name.startswith(".") and "/" not in name and "\x00" not in name


def lock_for_writing(folder: Path) -> int | None:
    """Make ``folder`` and take its writer lock: the descriptor that holds it (closing it lets
    go), or None when another sorter holds it. OSError when the folder cannot be made."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(folder) / WRITER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


@contextmanager
def labels_locked(folder: Path) -> Iterator[None]:
    """Hold the folder's labels lock: one `captures label` at a time rewrites labels.json."""
    fd = os.open(Path(folder) / LABELS_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _labels_bytes(labels: dict[int, str]) -> bytes:
    body = {str(k): v for k, v in sorted(labels.items())}
    return (json.dumps(body, indent=0) + "\n").encode()


def write_labels(folder: Path, updates: dict[int, str]) -> dict[int, str]:
    """Set the labels of ``updates`` (the others stay); the labels they replace (id -> old)."""
    folder = Path(folder)
    try:
        with labels_locked(folder):
            labels = read_labels(folder)
            replaced = {i: labels[i] for i in updates if i in labels and labels[i] != updates[i]}
            labels.update(updates)
            write_bytes(folder / LABELS_FILE, _labels_bytes(labels))
    except OSError as exc:
        raise DataError(f"{show_path(folder / LABELS_FILE)}: cannot write the labels ({exc.strerror or exc}); "
                        "label as the user the sorter runs as (sudo -u waste-sorter ...)") from None
    return replaced


def remove_labels(folder: Path, ids: list[int]) -> dict[int, str]:
    """Take the labels of ``ids`` away (unlabelled again: the web page's undo of a first
    label); the labels removed (id -> old)."""
    folder = Path(folder)
    try:
        with labels_locked(folder):
            labels = read_labels(folder)
            removed = {i: labels.pop(i) for i in ids if i in labels}
            if removed:
                write_bytes(folder / LABELS_FILE, _labels_bytes(labels))
    except OSError as exc:
        raise DataError(f"{show_path(folder / LABELS_FILE)}: cannot write the labels ({exc.strerror or exc}); "
                        "label as the user the sorter runs as (sudo -u waste-sorter ...)") from None
    return removed


def highest_id(folder: Path) -> int:
    """The highest capture id the folder has used (captures and labels), 0 for a new folder:
    ids are never reused, so an old label never lands on a new capture."""
    used = list(folder_files(folder))
    try:
        used += list(read_labels(folder))
    except DataError:
        pass  # a damaged labels file does not stop the sorter; `captures label` says so
    return max(used, default=0)
