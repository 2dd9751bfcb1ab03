"""Labelling captures in the browser: the queue of unlabelled captures, biggest doubt first,
and the label and undo behind its keys. Labels go through :func:`label_captures`, the function
``captures label`` uses, so ``captures export`` and ``train`` take them unchanged.

Doubt is the margin between the model's first and second class (its top-3 in the sort record):
the smaller, the more a label teaches the model. Undo is per browser session: the last label
given is taken back (the capture unlabelled again, or its earlier label restored).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from device.capture_store import Capture, capture_id_of, read_captures, remove_labels
from device.commands.captures import canonical_label, label_captures
from device.errors import UsageError

_FRAME = re.compile(r"^\d{1,12}-\d{1,3}\.jpg$")
MAX_FRAME_BYTES = 8 * 1024 * 1024  # a captured frame is about 40 KB
MAX_LABEL_CHARS = 255  # a class is a folder name
UNDO_DEPTH = 50  # labels one session can take back
SESSIONS = 200  # sessions whose undo is remembered (the oldest forgotten first)


class LabelError(Exception):
    """A label request that cannot be done; ``status`` is its HTTP status (400, 404)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def top3_of(capture: Capture) -> list[tuple[str, float]]:
    """The model's top-3 in the capture's record ([name, probability] pairs; others left out)."""
    entries = capture.record.get("top3")
    return [(str(e[0]), float(e[1])) for e in (entries if isinstance(entries, list) else [])
            if isinstance(e, list) and len(e) == 2 and isinstance(e[1], (int, float))][:3]


def margin(capture: Capture) -> float:
    """First minus second probability of the model's top-3; its confidence without a top-3."""
    top = sorted((p for _, p in top3_of(capture)), reverse=True)
    if not top:
        return capture.confidence
    return top[0] - (top[1] if len(top) > 1 else 0.0)


def by_doubt(captures: list[Capture]) -> list[Capture]:
    """Unlabelled captures, biggest doubt (smallest margin) first; the older first on a tie."""
    return sorted((c for c in captures if not c.label), key=lambda c: (margin(c), c.id))


@dataclass(frozen=True)
class Labelled:
    capture_id: int
    label: str  # "" when an undo left it unlabelled
    left: int  # unlabelled captures left in the folder


class Labeller:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._undo: OrderedDict[str, list[tuple[int, str]]] = OrderedDict()

    def queue(self) -> list[Capture]:
        return by_doubt(read_captures(self.folder))

    def frame_path(self, name: str) -> Path:
        """The file of a captured frame named ``name``; LabelError (404) for anything else (a
        path, another file of the folder)."""
        if not _FRAME.fullmatch(name) or capture_id_of(name) is None:
            raise LabelError(404, f"{name[:80]!r} is not a captured frame")
        return self.folder / name

    def _capture(self, capture_id: str) -> tuple[Capture, list[Capture]]:
        if not re.fullmatch(r"\d{1,12}", capture_id or ""):
            raise LabelError(400, f"{capture_id[:40]!r} is not a capture id")
        captures = read_captures(self.folder)
        found = next((c for c in captures if c.id == int(capture_id)), None)
        if found is None:
            raise LabelError(404, f"capture {int(capture_id)} is no longer in the folder (deleted to keep it "
                                  "under capture.max_mb, or by hand)")
        return found, captures

    def label(self, session: str, capture_id: str, class_name: str) -> Labelled:
        with self._lock:
            capture, captures = self._capture(capture_id)
            class_name = canonical_label(class_name[:MAX_LABEL_CHARS], [capture])
            try:
                label_captures(self.folder, [capture], class_name)
            except UsageError as exc:  # not a class of the model that decided it
                raise LabelError(400, str(exc)) from None
            stack = self._undo.setdefault(session, [])
            self._undo.move_to_end(session)
            stack.append((capture.id, capture.label))
            del stack[:-UNDO_DEPTH]
            while len(self._undo) > SESSIONS:
                self._undo.popitem(last=False)
            left = sum(1 for c in captures if not c.label and c.id != capture.id)
            return Labelled(capture.id, class_name, left)

    def undo(self, session: str) -> Labelled:
        with self._lock:
            stack = self._undo.get(session) or []
            if not stack:
                raise LabelError(400, "nothing to undo")
            capture_id, before = stack.pop()
            try:
                capture, _ = self._capture(str(capture_id))
            except LabelError:
                remove_labels(self.folder, [capture_id])  # gone meanwhile: no label left behind
                raise
            if before:
                label_captures(self.folder, [capture], before)
            else:
                remove_labels(self.folder, [capture_id])
            left = sum(1 for c in read_captures(self.folder) if not c.label)
            return Labelled(capture_id, before, left)

