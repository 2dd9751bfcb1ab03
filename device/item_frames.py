"""The frames one item is judged on: one definition for the sorting loop and for calibration's
test item.

:func:`observe` is how both look at a frame: presence's view first (where the item is), then
the gate (which judges clipping against that item), then presence's update, which skips what
the gate rejected.

A frame belongs to the item while presence says it shows it (:attr:`PresenceUpdate.on_item`),
from the frame that announces it up to the one that decides it. Rejected frames are counted by
reason; accepted ones become :class:`FrameSlot`\\ s. An item keeps only the frames it may still
use (``keep``, the model's frames per item): the newest frames of its current still run, those
of them already classified, and its ``keep`` stillest frames, so its memory is bounded however
long it lies there. A settled item is decided on the latest classified frames of its final still
run (the loop classifies them as they arrive, see :meth:`ItemFrames.next_to_classify`); an item
decided otherwise (it kept moving, or it left before it settled) on the stillest frames it had.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from device.gate import ExposureGate, GateVerdict, check_structure
from device.presence import DECIDING_EVENTS, PresenceDetector, PresenceUpdate

__all__ = ["DECIDING_EVENTS", "FrameSlot", "ItemFrames", "belongs_to_item", "observe"]


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


@dataclass(eq=False)
class FrameSlot:
    """One accepted frame of an item, and its class probabilities once classified."""

    seq: int  # the item's accepted frames, counted from 0
    image: np.ndarray
    motion_frac: float
    run: int  # the still run it belongs to; -1 when the item was moving
    probabilities: np.ndarray | None = None  # one row, the contract's class order
    error: Exception | None = None  # the model failed on it (it is not tried again)

    @property
    def done(self) -> bool:
        """Classified, or the model failed on it."""
        return self.probabilities is not None or self.error is not None


@dataclass
class ItemFrames:
    number: int = 0
    keep: int = 3  # frames a decision uses (model.frames_per_item)
    arrived_s: float = 0.0  # source time of its first frame
    rejected: Counter = field(default_factory=Counter)  # reason -> frames
    in_flight: FrameSlot | None = None  # being classified (set by the loop)
    decided: bool = False  # decided before presence's deciding event (early): keeps nothing more
    # False for frames gathered while the board is learned: every such frame counts as the item's
    # (there is no board to tell it from), so only the learner's verdict may decide them
    may_decide_early: bool = True
    _run: int = 0
    _seq: int = 0
    still: deque = field(init=False)  # newest slots of the current still run
    classified: deque = field(init=False)  # classified slots of the current still run, in time order
    stillest: list = field(default_factory=list)  # the ``keep`` stillest slots, any run

    def __post_init__(self) -> None:
        self.still = deque(maxlen=self.keep)
        self.classified = deque(maxlen=self.keep)

    def add(self, image: np.ndarray, verdict: GateVerdict, update: PresenceUpdate) -> FrameSlot | None:
        """Take one of the item's frames (see :func:`belongs_to_item`). A rejected frame is
        counted and otherwise ignored: it does not end the still run."""
        if not verdict.accepted:
            self.rejected[verdict.reason] += 1
            return None
        if self.decided:
            return None
        if not update.stable and self.still:  # it moved: only the final still run counts
            self._run += 1
            self.still.clear()
            self.classified.clear()
        slot = FrameSlot(self._seq, image, update.motion_frac, self._run if update.stable else -1)
        self._seq += 1
        if update.stable:
            self.still.append(slot)
        self.stillest.append(slot)
        self.stillest.sort(key=lambda s: (s.motion_frac, -s.seq))  # stillest first, then the latest
        del self.stillest[self.keep:]
        return slot

    def next_to_classify(self) -> FrameSlot | None:
        """The newest frame of the still run not yet classified (nor being classified)."""
        if self.decided or not self.still:
            return None
        newest = self.still[-1]
        return newest if not newest.done and newest is not self.in_flight else None

    def classified_as(self, slot: FrameSlot, probabilities: np.ndarray) -> None:
        """Record ``slot``'s probabilities; it counts for the still run it was taken in only."""
        slot.probabilities = probabilities
        if slot.run == self._run and slot.run >= 0 and slot not in self.classified:
            self.classified.append(slot)

    def for_decision(self, settled: bool) -> list[FrameSlot]:
        """Up to ``keep`` frames to decide on, in time order. Settled: the still run's latest
        classified frames and the one being classified, or, with none of the run in flight, its
        newest frame (so at most one more inference is needed); otherwise the stillest frames it had."""
        if settled and self.still:
            chosen = list(self.classified)
            if self.in_flight is not None and self.in_flight.run == self._run:
                chosen.append(self.in_flight)
            elif not self.still[-1].done:  # classified when the worker is free
                chosen.append(self.still[-1])
            return sorted(chosen, key=lambda s: s.seq)[-self.keep:]
        return sorted(self.stillest, key=lambda s: s.seq)

    def agreeing(self, n: int) -> list[FrameSlot]:
        """The still run's latest ``n`` classified frames when they all have the same top class
        (for an early decision), else nothing."""
        latest = list(self.classified)[-n:]
        if len(latest) < n or len({int(np.argmax(s.probabilities)) for s in latest}) != 1:
            return []
        return latest

    def no_frame_reason(self) -> str:
        """Why :meth:`for_decision` found nothing."""
        return f"all frames rejected ({_counts(self.rejected)})" if self.rejected else "no frame of it"


def _counts(reasons: Counter) -> str:
    return ", ".join(f"{reason} x{n}" for reason, n in reasons.most_common()) or "none"
