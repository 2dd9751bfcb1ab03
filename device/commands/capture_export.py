"""Labelled captures as an ImageFolder for ``waste-sorter train --data``.

    OUT/glass/cap-17-1.jpg cap-17-2.jpg cap-17-3.jpg   one folder per class, every frame
    OUT/captures.json                                  the marker: device photos, which captures

The marker tells training and evaluation that the folder holds device photos: they are split
by capture (all frames of one item in the same subset, by a hash of its id, so a capture never
changes subset as the folder grows; :func:`export.split.make_item_split`) and evaluate reports
them separately. Exporting again into the same folder brings it up to date: new captures are
added, relabelled ones move, captures labelled ``skip`` since go; captures the sorter deleted
since (its quota) stay, as the export may be their only copy. A folder that is not an export
is never written into, and a label that is no class of the capture's model is refused.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from device.atomic import write_bytes, write_with
from device.capture_store import LABELS_FILE, SKIP, Capture, label_problem
from device.contract import read_rgb
from device.errors import DataError
from device.safe_open import show_path
from device.sortlog import utc_iso

log = logging.getLogger(__name__)

EXPORT_MARKER = "captures.json"
EXPORT_KIND = "waste-sorter captures"
_EXPORTED = re.compile(r"^cap-(\d{1,12})-\d{1,3}\.jpg$")


def exported_name(capture_id: int, k: int) -> str:
    return f"cap-{capture_id}-{k}.jpg"


def exported_item(name: str) -> str | None:
    """The capture an exported photo shows (``cap-17-2.jpg`` -> ``cap-17``), else None."""
    match = _EXPORTED.match(name)
    return f"cap-{match.group(1)}" if match else None


def is_capture_export(root: Path) -> bool:
    """Whether ``root`` was written by ``captures export`` (it holds the marker)."""
    try:
        body = json.loads((Path(root) / EXPORT_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(body, dict) and body.get("kind") == EXPORT_KIND


@dataclass(frozen=True)
class ExportResult:
    per_class: dict[str, int]  # captures per class in the export (kept ones included)
    photos: int  # frames in the export
    copied: int  # frames written this time
    removed: int  # frames of captures no longer labelled so (relabelled, skipped)
    unreadable: tuple[int, ...]  # captures left out: a frame could not be read
    kept: tuple[int, ...] = ()  # exported before and gone from the capture folder since: kept as they are


def export_labelled(folder: Path, captures: list[Capture], out: Path) -> ExportResult:
    """Bring the ImageFolder ``out`` up to date with the labelled ``captures`` of ``folder``.
    Photos of captures no longer in ``folder`` (deleted by its quota since) stay: the export
    may be their only copy. A label that is not the capture's model's class or "skip" is a
    DataError before anything is written."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_capture_export(out))):
        raise DataError(f"{show_path(out)}: exists and is not a capture export; choose a new or empty folder")
    for capture in captures:
        problem = label_problem(capture.label, capture.classes) if capture.label else None
        if problem:
            raise DataError(f"{show_path(Path(folder) / LABELS_FILE)}: capture {capture.id}: {problem}")
    wanted: dict[Path, Path] = {}
    labels: dict[int, str] = {}
    unreadable = []
    for capture in captures:
        if capture.label in ("", SKIP):
            continue
        sources = [Path(folder) / name for name in capture.frames]
        try:
            for source in sources:
                read_rgb(str(source))  # a frame cut short by a power cut is left out, not trained on
        except DataError as exc:
            log.warning("capture %d left out: %s", capture.id, exc)
            unreadable.append(capture.id)
            continue
        labels[capture.id] = capture.label
        for k, source in enumerate(sources, start=1):
            wanted[Path(capture.label) / exported_name(capture.id, k)] = source
    try:
        out.mkdir(parents=True, exist_ok=True)
        removed, staying = _remove_relabelled(out, {c.id: c.label for c in captures})
        copied = 0
        for rel, source in wanted.items():
            target = out / rel
            if target.exists() and target.stat().st_size == source.stat().st_size:
                continue
            target.parent.mkdir(exist_ok=True)
            write_with(target, lambda tmp, source=source: shutil.copyfile(source, tmp), keep_suffix=True,
                       durable=False)
            copied += 1
        exported = {**{capture_id: label for _, capture_id, label in staying}, **labels}
        per_class = dict(sorted(Counter(exported.values()).items()))
        marker = {"kind": EXPORT_KIND, "format": 1, "source": str(folder), "exported_utc": utc_iso(),
                  "classes": per_class, "captures": {str(k): v for k, v in sorted(exported.items())}}
        write_bytes(out / EXPORT_MARKER, (json.dumps(marker, indent=1) + "\n").encode())
    except OSError as exc:
        raise DataError(f"{show_path(out)}: export failed ({exc.strerror or exc})") from None
    in_source = {c.id for c in captures}
    kept = sorted({capture_id for _, capture_id, _ in staying} - in_source)
    photos = len(set(wanted) | {rel for rel, _, _ in staying})
    return ExportResult(per_class, photos, copied, removed, tuple(unreadable), tuple(kept))


def _remove_relabelled(out: Path, source_labels: dict[int, str]) -> tuple[int, list[tuple[Path, int, str]]]:
    """Delete the exported photos of captures in the capture folder whose label there is no
    longer their class folder (relabelled, skipped); class folders left empty go too. How many
    went, and (relative path, capture id, class) of each exported photo that stays: those of
    captures gone from the capture folder are never deleted."""
    removed, staying = 0, []
    for class_dir in [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]:
        for photo in class_dir.iterdir():
            match = _EXPORTED.match(photo.name)
            if not match:
                continue
            capture_id = int(match.group(1))
            if capture_id in source_labels and source_labels[capture_id] != class_dir.name:
                photo.unlink()
                removed += 1
            else:
                staying.append((photo.relative_to(out), capture_id, class_dir.name))
        if not any(class_dir.iterdir()):
            class_dir.rmdir()
    return removed, staying
