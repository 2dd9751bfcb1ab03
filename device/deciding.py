"""Deciding items without stopping the loop: classify as they settle, decide when the result is there.

The :class:`Decider` feeds the :class:`~device.inference_worker.InferenceWorker` one job at a
time, most urgent first:

1. the frames a decided item still needs (usually none, or only its settling frame);
2. otherwise, speculatively, the newest still frame of the item on the board, so that by the
   time presence calls it settled most of its frames are classified already.

An item whose latest ``model.early_frames`` still frames agree on their top class with a mean
confidence of at least ``model.early_confidence`` is decided at once (``early``), before presence
would call it settled (never while the board is learned: every frame then counts as the item's,
the item taken away and the empty board too). An item is routed and its bin actuated the moment
its last frame is classified, on the worker thread (``actuate`` must be thread-safe); the loop
then writes the record from the :class:`Outcome`. Decisions complete in the order the items
were decided.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable

from device.config import ModelConfig, RoutingConfig
from device.decision import Decision, decide, how_decided
from device.errors import ActuatorError, ModelError
from device.inference_worker import InferenceResult, InferenceWorker
from device.item_frames import FrameSlot, ItemFrames

log = logging.getLogger(__name__)

#: How long the end of a run waits for an inference in progress (seconds).
FINISH_WAIT_S = 10.0


@dataclass(frozen=True)
class Actuation:
    moved: bool  # False: the actuators are stopping (a signal), nothing moved
    error: ActuatorError | None = None


@dataclass(frozen=True)
class Outcome:
    """A decided item, routed and actuated (or not, and why): what its record says."""

    item: ItemFrames
    event: str  # presence's deciding event, "early", or "stopped" (the run ended first)
    source_time_s: float  # the frame that decided it
    decision: Decision
    reason: str
    actuator_error: ActuatorError | None
    latency_ms: float  # deciding frame processed -> actuated
    slots: tuple[FrameSlot, ...]  # the frames the decision used
    actuated: bool = False  # the bin's actuator moved for it


@dataclass(eq=False)
class _Pending:
    item: ItemFrames
    event: str
    t: float
    slots: list[FrameSlot]
    started: float  # time.perf_counter() when the deciding frame was processed
    error: ModelError | None = None
    outcome: Outcome | None = None


class Decider:
    def __init__(self, worker: InferenceWorker, classes: tuple[str, ...], routing: RoutingConfig,
                 model: ModelConfig, actuate: Callable[[str, float], Actuation], min_item_s: float = 0.0):
        """``actuate(bin_name, source_time_s)`` moves the bin's actuator (any thread);
        ``min_item_s``: how long something must have been there before it may be decided early
        (presence's: anything gone sooner is not an item)."""
        self.min_item_s = min_item_s
        self.worker = worker
        self.classes = classes
        self.routing = routing
        self.model = model
        self.actuate = actuate
        self._pending: deque[_Pending] = deque()
        self._lock = threading.RLock()  # pending decisions: the loop and the worker's ``then``
        self.inference_ms: deque[float] = deque(maxlen=1000)  # the latest jobs' times (the bench reads them)

    @property
    def waiting(self) -> int:
        """Decided items whose outcome has not been taken yet."""
        return len(self._pending)

    def decide(self, item: ItemFrames, event: str, t: float) -> None:
        """Presence decided ``item`` (``event``) at source time ``t``; its outcome comes out of
        :meth:`advance` once its frames are classified (at once when they already are)."""
        result, error = self.worker.poll(), None  # a frame of it just classified counts (and may decide it early)
        if result is not None:
            try:
                self._took(result, item, t)
            except BaseException as exc:  # noqa: BLE001 - re-raised once this item is safely pending
                error = exc
        if not item.decided:  # decided early: presence's verdict comes later and changes nothing
            item.decided = True
            self._add(_Pending(item, event, t, item.for_decision(event == "settled"), time.perf_counter()))
        if error is not None:
            raise error

    def _add(self, pending: _Pending) -> None:
        with self._lock:
            self._pending.append(pending)
            self._complete_in_order()

    def advance(self, current: ItemFrames | None, t: float) -> list[Outcome]:
        """Take the worker's result, decide what can be decided, start the next job (the items'
        frames first, then a speculative one of ``current``); the outcomes, in order."""
        while True:
            result = self.worker.poll()
            if result is not None:
                self._took(result, current, t)
            submitted = self.worker.idle and self._submit_next(current)
            if result is None and not submitted:
                break
        return self._completed()

    def finish(self, current: ItemFrames | None, t: float, why: str) -> list[Outcome]:
        """The run ends: wait for the inference in progress, then an outcome for every item
        still undecided (``current`` too, if it is one), without classifying more."""
        result = self.worker.wait(FINISH_WAIT_S)
        if result is not None and result.then_error is not None:  # the run is ending: say it, record the rest
            log.error("deciding an item failed: %s", result.then_error)
        with self._lock:
            for pending in self._pending:
                if pending.outcome is None:
                    failed = next((s.error for s in pending.slots if s.error is not None), None)
                    chosen, pending.slots = pending.slots, [s for s in pending.slots if s.probabilities is not None]
                    pending.error = failed if not pending.slots else None
                    self._complete(pending, why, unclassified=bool(chosen) and not pending.slots and not failed)
        if current is not None and not current.decided:
            current.decided = True
            pending = _Pending(current, "stopped", t, [s for s in current.for_decision(True)
                                                       if s.probabilities is not None], time.perf_counter())
            with self._lock:
                self._pending.append(pending)
                self._complete(pending, why)
        return self._completed()

    # -- the worker --------------------------------------------------------------------------
    def _submit_next(self, current: ItemFrames | None) -> bool:
        with self._lock:
            for pending in self._pending:
                if pending.outcome is None and pending.error is None:
                    needed = [s for s in pending.slots if not s.done]
                    if needed:
                        self.worker.submit([s.image for s in needed], needed, then=self._classified)
                        return True
        slot = current.next_to_classify() if current is not None else None
        if slot is None:
            return False
        current.in_flight = slot
        self.worker.submit([slot.image], [slot], then=self._classified)
        return True

    def _classified(self, result: InferenceResult) -> None:
        """On the worker thread, as soon as a job is done: its frames' probabilities, then every
        decision that was waiting for them (routed and actuated now, not at the next frame)."""
        slots: list[FrameSlot] = result.tag
        with self._lock:
            for i, slot in enumerate(slots):
                if result.probabilities is not None:
                    slot.probabilities = result.probabilities[i]
                else:
                    slot.error = result.error
            self._complete_in_order()

    def _took(self, result: InferenceResult, current: ItemFrames | None, t: float) -> None:
        """On the loop's thread: the finished job's frames join their item's still run; an item
        whose still frames agree is decided early."""
        if result.then_error is not None:
            raise result.then_error
        self.inference_ms.append(result.inference_ms)
        if result.error is not None:
            log.debug("classifying %d frame(s) failed: %s", len(result.tag), result.error)
        slots: list[FrameSlot] = result.tag
        if current is None or not slots or current.in_flight is not slots[0]:
            return
        current.in_flight = None
        if result.probabilities is None or current.decided:
            return
        current.classified_as(slots[0], slots[0].probabilities)
        if (self.model.early_decision and current.may_decide_early
                and t - current.arrived_s >= self.min_item_s):  # an item, not a hand passing
            agreeing = current.agreeing(self.model.early_frames)
            if agreeing and sum(s.probabilities.max() for s in agreeing) / len(agreeing) >= self.model.early_confidence:
                current.decided = True
                self._add(_Pending(current, "early", t, list(current.classified), time.perf_counter()))

    # -- completing ---------------------------------------------------------------------------
    def _complete_in_order(self) -> None:
        for pending in self._pending:
            if pending.outcome is None:
                if not all(s.done for s in pending.slots):
                    return  # the items after it wait: bins are actuated in the order items were decided
                pending.error = next((s.error for s in pending.slots if s.error is not None), None)
                self._complete(pending)

    def _complete(self, pending: _Pending, stopped_why: str = "", unclassified: bool = False) -> None:
        decision = decide(self.classes, self.routing, pending.item, pending.slots, pending.error)
        if unclassified:
            decision = replace(decision, reason="not classified before the run ended")
        reason = how_decided(pending.event, decision)
        error, moved = None, False
        if stopped_why:
            reason = _joined(f"{stopped_why}: not actuated", reason)
        else:
            actuation = self.actuate(decision.bin, pending.t)
            if actuation.error is not None:
                error = actuation.error
                reason = _joined(f"actuator failed ({actuation.error})", reason)
            elif not actuation.moved:
                reason = _joined("stopping: not actuated", reason)
            moved = actuation.moved
        pending.outcome = Outcome(pending.item, pending.event, pending.t, decision, reason, error,
                                  (time.perf_counter() - pending.started) * 1000, tuple(pending.slots), moved)

    def _completed(self) -> list[Outcome]:
        done = []
        with self._lock:
            while self._pending and self._pending[0].outcome is not None:
                done.append(self._pending.popleft().outcome)
        return done


def _joined(first: str, reason: str) -> str:
    return first + (f" ({reason})" if reason and first.startswith(("stopping", "run")) else
                    f"; {reason}" if reason else "")
