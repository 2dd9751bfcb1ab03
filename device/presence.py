"""Presence and settling: is an item on the board, has it stopped moving, has it left?

Frames are compared with the empty-board reference at 128x96 in each colour channel, after a
global gain compensation (the light's gain, see :func:`device.board_view.relative_gain`), so a
change of light over the whole board is not an item, and with differences that a camera
shaking by a pixel or two does not fool (:mod:`device.board_view`). States move EMPTY -> OCCUPIED -> SETTLED -> EMPTY.

Every arrival that stays ``min_item_s`` is an item and gets exactly one deciding event:
``settled`` once it has been still for ``settle_s``; ``unsettled`` when it keeps moving for
``max_settle_s``; ``left`` when it leaves before either (the board empty for ``clear_s``). An
arrival that is gone sooner (a hand passing, a flash) is ``passed``: not an item. Frames the
gate rejected (a flash, glare, an overexposed frame) count neither as motion nor as stillness
nor as an empty board; only an overexposed frame counts as "something is there", so an item
whose every frame is blown out still arrives and leaves once. A settled board that is disturbed
and comes to rest looking different (a second item dropped on the first, one item swapped for
another, debris left behind by the actuators) counts as a new arrival; the same view after a
disturbance (a hand passing, glare) does not. All times are the frames' own timestamps.

Without a reference from calibration (state LEARNING), the board is learned from a still run
of ``learn_s`` seconds that looks like an empty board (:mod:`device.board_learning`); an item
lying there at start is decided (``settled``) instead and learning waits for the empty board
(then ``settle_s`` of it: items are coming).
A calibration's board is checked when the scene first lies still: a view that differs from it
is warned about once (and sorted as an item).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

import numpy as np

from device.board_learning import BoardLearner
from device.board_view import changed_mask, relative_gain, shake_tolerant_diff, to_small_view
from device.schema import spec

log = logging.getLogger(__name__)

EPS_S = 1e-6  # frame timestamps are sums of floats: 3.2 + 0.3 must reach 3.5
#: A settled board that comes to rest again is a new item only when it differs from its settled
#: view by diff_level x RESETTLE_LEVEL on item_frac x RESETTLE_SHARE of the board: an item
#: nudged by a hand or the actuator is not a second item.
RESETTLE_LEVEL, RESETTLE_SHARE = 2.0, 4.0


class State(enum.Enum):
    LEARNING = "learning"
    EMPTY = "empty"
    OCCUPIED = "occupied"
    SETTLED = "settled"


@dataclass(frozen=True)
class PresenceSettings:
    """The config's ``[presence]``. empty_frac and settle_motion_frac are "below which" shares: 0
    would mean never empty / never still, so the smallest is one pixel in a million."""

    diff_level: float = spec(12.0, range=(1, 255))  # levels (any colour channel) from the board that count as "changed"
    item_frac: float = spec(0.005, range=(0.001, 0.9))  # changed share of the board that means an item is there
    empty_frac: float = spec(0.002, range=(1e-6, 0.9))  # changed share below which the board is empty
    motion_level: float = spec(14.0, range=(1, 255))  # levels (any colour channel) frame-to-frame that count as motion
    settle_motion_frac: float = spec(0.01, range=(1e-6, 0.5))  # moving share below which the item is still
    settle_s: float = spec(0.5, range=(0.0, 30))  # still for this long = settled
    max_settle_s: float = spec(4.0, range=(0.1, 120))  # present this long, not settled: decide anyway ("unsettled")
    clear_s: float = spec(0.3, range=(0.0, 30))  # empty for this long = departed
    min_item_s: float = spec(0.5, range=(0.0, 30))  # an arrival gone sooner is not an item (a hand passing, a flash)
    learn_s: float = spec(1.0, range=(0.0, 60))  # without calibration: board learned from this much still, empty scene
    adapt_rate: float = spec(0.02, range=(0, 1))  # how fast the reference follows slow drift while empty
    stuck_warn_s: float = spec(30.0, range=(0, 3600))  # an item still there this long after sorting: warn (0: never)


#: The events that decide an item (one per item).
DECIDING_EVENTS = ("settled", "unsettled", "left")


@dataclass(frozen=True)
class PresenceUpdate:
    state: State
    event: str  # "", "learned", "arrived", "passed", "departed" or one of DECIDING_EVENTS
    changed_frac: float
    motion_frac: float  # 1.0 for a frame presence did not compare (rejected, the first)
    stable: bool  # the frame is part of a still run (usable for classification)
    on_item: bool = False  # the frame shows the item being decided (its frames for the decision)


@dataclass(frozen=True, eq=False)
class View:
    """A frame as presence sees it: the small view (gain-compensated when there is a reference)
    and, with a reference, the changed region (the item mask the gate judges clipping by)."""

    image: np.ndarray = field(repr=False)
    small: np.ndarray = field(repr=False)
    changed: np.ndarray | None = field(default=None, repr=False)
    gain: float = 1.0  # the light's gain against the reference


class PresenceDetector:
    def __init__(self, settings: PresenceSettings, reference: np.ndarray | None = None, *,
                 first_view: str = "the view at start"):
        """``first_view``: what the first still view compared with ``reference`` is called in
        the warning when they differ (at start, or after a reload)."""
        self.settings = settings
        self._first_view = first_view
        self.state = State.LEARNING
        self.reference_image: np.ndarray | None = None
        self._ref: np.ndarray | None = None
        self._learner = BoardLearner(settings)
        self._prev: np.ndarray | None = None  # last accepted view
        self._gain: float | None = None  # the light's gain in the last accepted frame
        self._still_since: float | None = None
        self._empty_since: float | None = None
        self._arrived_at = 0.0
        self._fresh = False  # arrived on an empty board (not a change of a settled one)
        self._settled_view: np.ndarray | None = None  # what the board looked like when it settled
        self._disturbed = False  # moved since it settled
        self._check_start = reference is not None  # compare the first still view with it
        self._last_view: View | None = None  # the view of the last update
        if reference is not None:
            self.set_reference(reference)

    def set_reference(self, board: np.ndarray) -> None:
        """Use ``board`` (uint8 HxWx3 RGB of the empty board) as the reference."""
        self.reference_image = board
        self._ref = to_small_view(board)
        if self.state is State.LEARNING:
            self.state = State.EMPTY

    def view(self, image: np.ndarray) -> View:
        small = to_small_view(image)
        if self._ref is None:
            return View(image, small)
        gain = relative_gain(small, self._ref, self._gain)
        compensated = small / gain
        return View(image, compensated, changed_mask(compensated, self._ref, self.settings.diff_level), gain)

    def changed_region(self, image: np.ndarray) -> np.ndarray | None:
        """Where ``image`` differs from the board (the mask of :meth:`view`; None without a
        reference): the last update's own view when it was of this very image, so a frame is
        not looked at twice; otherwise computed, presence's state unchanged."""
        last = self._last_view
        if last is not None and last.image is image:
            return last.changed
        return self.view(image).changed

    def update(self, frame: np.ndarray | View, timestamp_s: float, reject_reason: str = "") -> PresenceUpdate:
        """Advance with one frame (an image or its :meth:`view`); ``reject_reason`` is the
        gate's reason when it rejected the frame."""
        view = frame if isinstance(frame, View) else self.view(frame)
        self._last_view = view
        if self._ref is None:
            return self._learn(view, timestamp_s)
        s, t = self.settings, timestamp_s
        rejected = bool(reject_reason)
        overexposed = reject_reason == "overexposed"
        changed_frac = 1.0 if overexposed else float(view.changed.mean())
        motion_frac = 1.0
        if not rejected:  # a rejected frame is neither motion nor stillness nor an empty board
            self._gain = view.gain
            if self._prev is not None:
                motion_frac = float((shake_tolerant_diff(view.small, self._prev) > s.motion_level).mean())
            self._prev = view.small
            still = motion_frac < s.settle_motion_frac
            self._still_since = (self._still_since if self._still_since is not None else t) if still else None
            self._empty_since = ((self._empty_since if self._empty_since is not None else t)
                                 if changed_frac < s.empty_frac else None)
        still_for = 0.0 if self._still_since is None else t - self._still_since
        if self._check_start and not rejected and still_for + EPS_S >= s.settle_s:
            self._check_start = False
            if changed_frac > s.item_frac:
                log.warning("%s differs from the board reference on %.0f%% of the board: an item "
                            "on it is sorted now; if the board is empty, the camera or the board moved "
                            "(recalibrate)", self._first_view, 100 * changed_frac)
        event = ""
        if self.state is State.EMPTY:
            if changed_frac > s.item_frac:  # rejected or not: something is there
                self.state, event = State.OCCUPIED, "arrived"
                self._arrived_at, self._fresh, self._empty_since = t, True, None
            elif not rejected and self._still_since is not None and s.adapt_rate > 0:
                self._ref += s.adapt_rate * (view.small - self._ref)
        elif self.state is State.OCCUPIED:
            event = self._occupied(view, t, changed_frac, still_for, rejected)
        elif self.state is State.SETTLED:
            event = self._settled(view, t, changed_frac, motion_frac, still_for, rejected)
        stable = (not rejected and self.state in (State.OCCUPIED, State.SETTLED) and self._still_since is not None)
        on_item = (self.state is State.OCCUPIED and (rejected or changed_frac >= s.empty_frac)) \
            or event in ("settled", "unsettled")
        return PresenceUpdate(self.state, event, changed_frac, motion_frac, stable, on_item)

    def _occupied(self, view: View, t: float, changed_frac: float, still_for: float, rejected: bool) -> str:
        s = self.settings
        if self._empty_since is not None and t - self._empty_since + EPS_S >= s.clear_s:
            self.state = State.EMPTY
            stayed_s = self._empty_since - self._arrived_at
            self._empty_since = None
            return "passed" if self._fresh and stayed_s + EPS_S < s.min_item_s else "left"
        event = ""
        if not rejected and changed_frac >= s.empty_frac and still_for + EPS_S >= s.settle_s:
            event = "settled"
        elif t - self._arrived_at + EPS_S >= s.max_settle_s:
            event = "unsettled"
        if event:
            self.state = State.SETTLED
            self._settled_view, self._disturbed = view.small, False
        return event

    def _settled(self, view: View, t: float, changed_frac: float, motion_frac: float, still_for: float,
                 rejected: bool) -> str:
        s = self.settings
        if self._empty_since is not None:
            if t - self._empty_since + EPS_S >= s.clear_s:
                self.state, self._empty_since = State.EMPTY, None
                return "departed"
            return ""
        if rejected:
            return ""
        if motion_frac >= s.settle_motion_frac:
            self._disturbed = True
        elif self._disturbed and still_for + EPS_S >= s.settle_s:
            self._disturbed = False
            if (changed_mask(view.small, self._settled_view, s.diff_level * RESETTLE_LEVEL).mean()
                    > s.item_frac * RESETTLE_SHARE):
                self.state = State.OCCUPIED  # settles after settle_s more
                self._arrived_at, self._still_since, self._fresh = t, t, False
                return "arrived"
        return ""

    def _learn(self, view: View, t: float) -> PresenceUpdate:
        step = self._learner.update(view.image, view.small, t)
        if step.board is not None:
            self.set_reference(step.board)
            self._prev = to_small_view(step.board)
            return PresenceUpdate(self.state, "learned", 0.0, step.motion_frac, False)
        return PresenceUpdate(State.LEARNING, step.event, step.deviation_frac, step.motion_frac, step.stable,
                              on_item=True)
