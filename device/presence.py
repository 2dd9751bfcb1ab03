"""Presence and settling: is an item on the board, has it stopped moving, has it left?

Frames are compared with the empty-board reference at 128x96 in grey levels, after a global
gain compensation (the median ratio frame/reference), so a change of light over the whole board
is not an item. States move EMPTY -> OCCUPIED -> SETTLED -> EMPTY; the ``settled`` event fires
once per item (or ``unsettled`` when an item keeps moving for ``max_settle_s``), and the
next item is armed once the board has been empty for ``clear_s``. A settled board that is
disturbed and comes to rest looking different (a second item dropped on the first, one item
swapped for another, debris left behind by the actuators) counts as a new arrival; the same
view after a disturbance (a hand passing, glare) does not. All times are the frames' own
timestamps (seconds of source time).

Without a reference from calibration, the first ``learn_s`` seconds of frames (an empty scene)
are taken as the board (state LEARNING).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import cv2
import numpy as np

SMALL_SIZE = (128, 96)
MAX_LEARN_FRAMES = 32  # the board reference is the median of at most this many frames


class State(enum.Enum):
    LEARNING = "learning"
    EMPTY = "empty"
    OCCUPIED = "occupied"
    SETTLED = "settled"


@dataclass(frozen=True)
class PresenceSettings:
    diff_level: float = 28.0  # grey levels from the board that count as "changed"
    item_frac: float = 0.02  # changed share of the board that means an item is there
    empty_frac: float = 0.008  # changed share below which the board is empty
    motion_level: float = 14.0  # grey levels frame-to-frame that count as motion
    settle_motion_frac: float = 0.01  # moving share below which the item is still
    settle_s: float = 0.5  # still for this long = settled
    max_settle_s: float = 4.0  # present this long without settling = decide anyway ("unsettled")
    clear_s: float = 0.3  # empty for this long = departed
    learn_s: float = 1.0  # reference learned from this much empty scene without calibration
    adapt_rate: float = 0.02  # how fast the reference follows slow drift while empty
    stuck_warn_s: float = 30.0  # an item still on the board this long after it was sorted: warn (0: never)


@dataclass(frozen=True)
class PresenceUpdate:
    state: State
    event: str  # "", "learned", "arrived", "settled", "unsettled" (gave up waiting), "departed"
    changed_frac: float
    motion_frac: float
    stable: bool  # the frame is part of a still run (usable for classification)


def to_small_gray(image: np.ndarray) -> np.ndarray:
    small = cv2.resize(image, SMALL_SIZE, interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), (3, 3), 0).astype(np.float32)


class PresenceDetector:
    def __init__(self, settings: PresenceSettings, reference: np.ndarray | None = None):
        self.settings = settings
        self.state = State.LEARNING
        self.reference_image: np.ndarray | None = None
        self._ref: np.ndarray | None = None
        self._learning: list[np.ndarray] = []
        self._learn_start: float | None = None
        self._prev: np.ndarray | None = None
        self._still_since: float | None = None
        self._empty_since: float | None = None
        self._arrived_at = 0.0
        self._settled_view: np.ndarray | None = None  # what the board looked like when it settled
        self._disturbed = False  # moved since it settled
        if reference is not None:
            self.set_reference(reference)

    def set_reference(self, board: np.ndarray) -> None:
        """Use ``board`` (uint8 HxWx3 RGB of the empty board) as the reference."""
        self.reference_image = board
        self._ref = to_small_gray(board)
        if self.state is State.LEARNING:
            self.state = State.EMPTY

    def update(self, image: np.ndarray, timestamp_s: float, *, overexposed: bool = False) -> PresenceUpdate:
        """Advance with one frame. ``overexposed`` (from the gate) counts as a changed board:
        an item whose every frame is blown out still arrives, settles and leaves once."""
        s = self.settings
        small = to_small_gray(image)
        if self._ref is None:
            return self._learn(image, small, timestamp_s)
        ratio = (small + 1.0) / (self._ref + 1.0)
        gain = float(np.median(ratio))
        compensated = small / max(gain, 1e-3)
        changed_frac = 1.0 if overexposed else self._changed_share(compensated, self._ref)
        motion_frac = 1.0 if self._prev is None else float((np.abs(compensated - self._prev) > s.motion_level).mean())
        self._prev = compensated
        if motion_frac < s.settle_motion_frac:
            self._still_since = timestamp_s if self._still_since is None else self._still_since
        else:
            self._still_since = None
        still_for = 0.0 if self._still_since is None else timestamp_s - self._still_since
        event = ""
        if self.state is State.EMPTY:
            if changed_frac > s.item_frac:
                self.state, event = State.OCCUPIED, "arrived"
                self._arrived_at = timestamp_s
            elif motion_frac < s.settle_motion_frac and s.adapt_rate > 0:
                self._ref += s.adapt_rate * (compensated - self._ref)
        elif self.state is State.OCCUPIED:
            if changed_frac < s.empty_frac:
                self.state, event = State.EMPTY, "departed"  # left before it settled
            elif still_for >= s.settle_s:
                self.state, event = State.SETTLED, "settled"
            elif timestamp_s - self._arrived_at >= s.max_settle_s:
                self.state, event = State.SETTLED, "unsettled"
            if self.state is State.SETTLED:
                self._settled_view, self._disturbed = compensated, False
        elif self.state is State.SETTLED:
            if changed_frac < s.empty_frac:
                self._empty_since = timestamp_s if self._empty_since is None else self._empty_since
                if timestamp_s - self._empty_since >= s.clear_s:
                    self.state, event = State.EMPTY, "departed"
                    self._empty_since = None
            else:
                self._empty_since = None
                if motion_frac >= s.settle_motion_frac and not overexposed:
                    self._disturbed = True
                elif self._disturbed and still_for >= s.settle_s:
                    self._disturbed = False
                    if self._changed_share(compensated, self._settled_view) > s.item_frac:
                        self.state, event = State.OCCUPIED, "arrived"  # settles after settle_s more
                        self._arrived_at = self._still_since = timestamp_s
        stable = self.state in (State.OCCUPIED, State.SETTLED) and self._still_since is not None
        return PresenceUpdate(self.state, event, changed_frac, motion_frac, stable)

    def _changed_share(self, view: np.ndarray, reference: np.ndarray) -> float:
        """Share of the board where ``view`` differs from ``reference`` by > ``diff_level``."""
        return float((np.abs(view - reference) > self.settings.diff_level).mean())

    def _learn(self, image: np.ndarray, small: np.ndarray, timestamp_s: float) -> PresenceUpdate:
        if self._learn_start is None:
            self._learn_start = timestamp_s
        if len(self._learning) < MAX_LEARN_FRAMES:
            self._learning.append(image)
        if timestamp_s - self._learn_start < self.settings.learn_s:
            return PresenceUpdate(State.LEARNING, "", 0.0, 0.0, False)
        board = np.median(np.stack(self._learning), axis=0).astype(np.uint8)
        self._learning = []
        self.set_reference(board)
        self._prev = small
        return PresenceUpdate(self.state, "learned", 0.0, 0.0, False)
