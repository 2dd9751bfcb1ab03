"""The frames one item is judged on: one definition for the sorting loop and for calibration's
test item.

:func:`observe` is how both look at a frame: presence's view first (where the item is), then
the gate (which judges clipping against that item), then presence's update, which skips what
the gate rejected.

A frame belongs to the item while presence says it shows it (:attr:`PresenceUpdate.on_item`),
from the frame that announces it up to the one that decides it. Rejected frames are counted by
reason; accepted ones are kept. A settled item is classified on the accepted frames of its
final still run (the settling frame is the stillest of them); an item decided otherwise (it
kept moving, or it left before it settled) on the stillest accepted frames it had.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from device.gate import ExposureGate, GateVerdict, check_structure
from device.presence import DECIDING_EVENTS, PresenceDetector, PresenceUpdate

__all__ = ["DECIDING_EVENTS", "ItemFrames", "belongs_to_item", "observe"]


def observe(gate: ExposureGate, presence: PresenceDetector, image: np.ndarray,
            t: float) -> tuple[GateVerdict, PresenceUpdate | None]:
    """Gate and presence for one frame; no presence update for a structurally broken one."""
    if check_structure(image, gate.expected_hw):
        return gate.check(image), None
    view = presence.view(image)
    verdict = gate.check(image, item_mask=view.changed)
    return verdict, presence.update(view, t, verdict.reason)


def belongs_to_item(update: PresenceUpdate) -> bool:
    """Whether a frame with this presence update is one of the item's frames."""
    return update.on_item


@dataclass
class ItemFrames:
    number: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> frames
    still: deque = field(default_factory=lambda: deque(maxlen=64))  # accepted images of the still run
    seen: deque = field(default_factory=lambda: deque(maxlen=32))  # (motion share, image), accepted

    def add(self, image: np.ndarray, verdict: GateVerdict, update: PresenceUpdate) -> None:
        """Take one of the item's frames (see :func:`belongs_to_item`). A rejected frame is
        counted and otherwise ignored: it does not end the still run."""
        if not verdict.accepted:
            self.rejected[verdict.reason] += 1
            return
        self.seen.append((update.motion_frac, image))
        if update.stable:
            self.still.append(image)
        else:
            self.still.clear()  # it moved: only the final still run counts

    def for_decision(self, settled: bool, n: int) -> list[np.ndarray]:
        """Up to ``n`` accepted frames to classify: the still run's latest if settled, else the
        stillest it had (in time order)."""
        if settled and self.still:
            return list(self.still)[-n:]
        order = sorted(range(len(self.seen)), key=lambda i: (self.seen[i][0], -i))[:n]
        return [self.seen[i][1] for i in sorted(order)]

    def no_frame_reason(self) -> str:
        """Why :meth:`for_decision` found nothing."""
        return f"all frames rejected ({_counts(self.rejected)})" if self.rejected else "no frame of it"


def _counts(reasons: Counter) -> str:
    return ", ".join(f"{reason} x{n}" for reason, n in reasons.most_common()) or "none"
