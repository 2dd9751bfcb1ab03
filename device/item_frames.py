"""The frames one item is judged on: one definition for the sorting loop and for calibration's
test item.

A frame belongs to the item on the board from the frame that announces it (``arrived``) up to
and including the frame that decides it (``settled``, or ``unsettled`` when it never stopped
moving). Rejected frames are counted by reason; accepted ones are kept. A settled item is
classified on the accepted frames of its final still run (the settling frame is the stillest
of them); an unsettled one on its latest accepted frames, moving or not.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from device.gate import GateVerdict
from device.presence import PresenceUpdate, State

DECIDING_EVENTS = ("settled", "unsettled")


def belongs_to_item(update: PresenceUpdate) -> bool:
    """Whether a frame with this presence update is one of the item's frames."""
    return update.state is State.OCCUPIED or update.event in DECIDING_EVENTS


@dataclass
class ItemFrames:
    number: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> frames
    still: deque = field(default_factory=lambda: deque(maxlen=64))  # (image, verdict) of the still run
    recent: deque = field(default_factory=lambda: deque(maxlen=32))  # accepted images, moving or not

    def add(self, image: np.ndarray, verdict: GateVerdict, update: PresenceUpdate) -> None:
        """Take one of the item's frames (see :func:`belongs_to_item`)."""
        if verdict.accepted:
            self.recent.append(image)
        else:
            self.rejected[verdict.reason] += 1
        if update.stable:
            self.still.append((image, verdict))
        else:
            self.still.clear()  # it moved: only the final still run counts

    def for_decision(self, settled: bool, n: int) -> list[np.ndarray]:
        """Up to ``n`` accepted frames to classify: the still run's if settled, else the latest."""
        if settled:
            return [image for image, verdict in self.still if verdict.accepted][-n:]
        return list(self.recent)[-n:]

    def no_frame_reason(self) -> str:
        """Why :meth:`for_decision` found nothing: every frame rejected, or every still one."""
        if self.recent:  # seen well while it moved, but not once it lay still
            reasons = Counter(verdict.reason for _, verdict in self.still)
            return f"all still frames rejected ({_counts(reasons)})"
        return f"all frames rejected ({_counts(self.rejected)})"


def _counts(reasons: Counter) -> str:
    return ", ".join(f"{reason} x{n}" for reason, n in reasons.most_common()) or "none"
