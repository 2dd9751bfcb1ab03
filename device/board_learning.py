"""Learning the empty board at start, without a calibration.

The board reference is the median of a still run of ``learn_s`` seconds (at most
MAX_LEARN_FRAMES frames), taken only when that still scene looks like an empty board: nothing in
it stands out from a smooth surface fitted to its border (:func:`board_deviation_share`). A
scene that moves restarts the run. A scene still for ``settle_s`` (``learn_s`` when shorter)
that looks occupied is an item lying on the board at start (the normal case after a restart in
the middle of an item): it is reported once (``settled``, so it gets its decision) and learning
waits, saying so once, until a still empty board is seen; a different item lying still there
later is reported too. Once an item has lain there, items are coming: the board is learned from
that same time of still, empty scene, as the gaps between items may all be shorter than
``learn_s``. A scene that keeps moving from the start is waited for too, and said so once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from device.board_view import board_deviation_share, changed_mask, relative_gain, shake_tolerant_diff, to_small_view

log = logging.getLogger(__name__)

MAX_LEARN_FRAMES = 32  # the board reference is the median of at most this many frames
#: A still scene is an empty board when at most EMPTY_MAX_SHARE of it lies further than
#: EMPTY_LEVEL levels from a smooth surface fitted to its border. A textured board under
#: vignetting and +-30% light stays under 0.1% at this level; relit TrashNet items stand out on
#: 7% or more of the frame (5th percentile), faint ones (a clear bottle) on about 1%.
EMPTY_LEVEL = 14.0
EMPTY_MAX_SHARE = 0.01
NOT_STILL_WARN_S = 3.0  # a scene that moves this long (and 3 x learn_s) from the start is warned about


@dataclass(frozen=True, eq=False)
class LearnStep:
    event: str  # "" or "settled" (an item lying on the board at start, to be decided)
    board: np.ndarray | None  # the learned empty board (uint8 RGB), once there is one
    motion_frac: float
    deviation_frac: float  # share of the still scene that is not a smooth board (0 until judged)
    stable: bool  # part of a still run


class BoardLearner:
    def __init__(self, settings):
        self.settings = settings
        self._prev: np.ndarray | None = None
        self._since: float | None = None
        self._frames: list[np.ndarray] = []
        self._judged = False  # the current still run was judged (an item) already
        self._looked_empty = False  # the current still run looked empty, too short yet to learn from
        self._start_view: np.ndarray | None = None  # the item decided at start
        self._started: float | None = None
        self._warned = False  # the board is not empty
        self._warned_moving = False  # the scene does not lie still

    def update(self, image: np.ndarray, small: np.ndarray, t: float) -> LearnStep:
        """One frame (``small``: its small view). Gate verdicts play no part: without a
        board the gate's judgement is only a default, and a flash moves the scene anyway."""
        s = self.settings
        motion = 1.0
        if self._prev is not None:
            motion = float((shake_tolerant_diff(small / relative_gain(small, self._prev), self._prev)
                            > s.motion_level).mean())
        self._prev = small
        self._started = t if self._started is None else self._started
        if motion >= s.settle_motion_frac:
            self._since, self._frames, self._judged, self._looked_empty = None, [], False, False
            if not self._warned_moving and t - self._started >= max(NOT_STILL_WARN_S, 3 * s.learn_s):
                self._warned_moving = True
                log.warning("the scene has not been still for %.0f s since start: waiting for a still, empty board "
                            "to learn", t - self._started)
            return LearnStep("", None, motion, 0.0, False)
        if self._since is None:
            self._since = t
        if len(self._frames) < MAX_LEARN_FRAMES:
            self._frames.append(image)
        still_s = t - self._since + 1e-6
        # An item lying still is judged as the loop judges one (after settle_s, or learn_s when
        # shorter); the board is learned from learn_s of still, empty scene, or from as long as an
        # item needs once items are coming (one lay there at start): the gaps between them may
        # all be shorter than learn_s.
        empty_needs_s = s.learn_s if self._start_view is None else min(s.settle_s, s.learn_s)
        if self._judged or still_s < min(s.settle_s, s.learn_s) or (self._looked_empty and still_s < empty_needs_s):
            return LearnStep("", None, motion, 0.0, True)
        board = np.median(np.stack(self._frames), axis=0).astype(np.uint8)
        deviation = board_deviation_share(board, EMPTY_LEVEL)
        if deviation <= EMPTY_MAX_SHARE:
            if still_s < empty_needs_s:  # looks empty: learned once still for empty_needs_s
                self._looked_empty = True
                return LearnStep("", None, motion, deviation, True)
            log.info("empty board learned from %.1f s of still, empty scene", still_s)
            return LearnStep("", board, motion, deviation, True)
        self._judged = True
        if not self._warned:
            self._warned = True
            log.warning("the board is not empty at start (%.0f%% of the still scene stands out from a smooth "
                        "board): not learning it; an item lying there is sorted, and the board is learned once "
                        "it lies still and empty (a patterned board never looks empty: calibrate instead)",
                        100 * deviation)
        view = to_small_view(board)
        if self._start_view is not None:
            same = changed_mask(view / relative_gain(view, self._start_view), self._start_view,
                                s.diff_level).mean() <= s.item_frac
            if same:
                return LearnStep("", None, motion, deviation, True)
        self._start_view = view
        return LearnStep("settled", None, motion, deviation, True)
