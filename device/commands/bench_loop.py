"""The bench's live runs: a rendered scene played by a :class:`~device.camera.paced.PacedCamera`
through the real :meth:`Sorter.run <device.loop.Sorter.run>` (``clock=time.monotonic``: the model on
its worker thread, actuators timed on the clock), with gpiozero's MockFactory.

From one paced run: the wall time of every ``Sorter.step`` call (the loop's own cost per frame;
inference is on the worker thread, never inside a step), the sort records' decision latency
(deciding frame processed -> actuated), and how late each hold ended: from the mock pins' own
state history (``MockPin.states``, monotonic clock), when the actuator went back to safe against
when it left safe plus its hold. From a few more runs, each with a fresh sorter: the time from a
SIGTERM sent to this process while an inference runs and an actuator is active until every pin
is safe again.

The scene and configuration make holds end while the model runs: items rest 2.5 s, are decided
once still for 2 s (no early decisions: the worst case for decision latency), and every bin holds
2.9 s, so that each hold ends while the next item's frames are being classified.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import cv2

from device.commands.bench_stats import spread
from device.classifier import Classifier
from device.config import Config
from device.commands.demo_scene import SceneItem, Timing, make_board, render

log = logging.getLogger(__name__)

TIMING = Timing(fps=10, lead_in_s=1.5, fall_s=0.4, still_s=2.5, leave_s=0.4, gap_s=0.6)
SETTLE_S = 2.0
HOLD_MS = 2900.0
COLOURS = ((150, 60, 40), (60, 140, 60), (50, 60, 150), (170, 150, 60), (120, 70, 140), (70, 150, 160))
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def bench_config(model: Path | None) -> Config:
    """Default configuration, with the bench's settle time and holds (see the module docstring)."""
    config = Config()
    return replace(
        config, model=replace(config.model, path=str(model or ""), early_decision=False),
        presence=replace(config.presence, settle_s=SETTLE_S),
        bins={name: replace(b, hold_ms=HOLD_MS, pulse_ms=HOLD_MS) for name, b in config.bins.items()})


def render_scene(path: Path, items: int) -> Path:
    """``items`` coloured boxes dropped one after another on a textured board (512x384)."""
    board = make_board()
    looks = []
    for i in range(items):
        look = board.copy()
        cv2.rectangle(look, (170 + 10 * (i % 3), 110), (340, 270 - 10 * (i % 2)), COLOURS[i % len(COLOURS)], -1)
        looks.append(SceneItem(look, "x"))
    render(looks, path, board=board, timing=TIMING)
    return path


class InferenceProbe:
    """Wraps ``classifier.probabilities`` (what the inference worker calls) to know when the
    model runs: the (start, end) monotonic times of every call, and ``on_start`` called as one
    begins."""

    def __init__(self, classifier: Classifier):
        self.intervals: list[tuple[float, float]] = []
        self.running = False
        self.on_start = None
        original = classifier.probabilities

        def probabilities(images):
            start_s = time.monotonic()
            self.running = True
            if self.on_start is not None:
                self.on_start()
            try:
                return original(images)
            finally:
                self.running = False
                self.intervals.append((start_s, time.monotonic()))

        classifier.probabilities = probabilities

    def during(self, t_s: float) -> bool:
        return any(start <= t_s <= end for start, end in self.intervals)


class PinWatch:
    """Every pin of a MockFactory, its safe state (the state when the watch starts: the actuators
    have just been made) and its history from then on, in absolute monotonic seconds. MockPin
    stamps each state with the time since the previous change (``PinState.timestamp``)."""

    def __init__(self, factory):
        self.pins = list(factory.pins.values())
        self.safe = [pin.state for pin in self.pins]
        before_s = time.monotonic()
        for pin in self.pins:
            pin.clear_states()
        self.cleared_s = (before_s + time.monotonic()) / 2

    def timeline(self, index: int) -> list[tuple[float, float]]:
        t_s, out = self.cleared_s, []
        for state in self.pins[index].states[1:]:
            t_s += state.timestamp
            out.append((t_s, float(state.state)))
        return out

    def is_safe(self, index: int, value: float) -> bool:
        return math.isclose(value, float(self.safe[index]), abs_tol=1e-9)

    def holds(self) -> list[tuple[float, float]]:
        """(moved, back to safe) of every completed excursion from safe; "moved" is the last
        move before the return (a second actuation during a hold restarts it)."""
        out = []
        for i in range(len(self.pins)):
            moved_s = None
            for t_s, value in self.timeline(i):
                if self.is_safe(i, value):
                    if moved_s is not None:
                        out.append((moved_s, t_s))
                    moved_s = None
                else:
                    moved_s = t_s
        return out

    def all_safe_s(self, after_s: float) -> float | None:
        """When every pin was safe again after ``after_s``; None when all were safe at ``after_s``."""
        latest, any_active = after_s, False
        for i in range(len(self.pins)):
            state = float(self.safe[i])
            timeline = self.timeline(i)
            for t_s, value in timeline:
                if t_s > after_s:
                    break
                state = value
            if self.is_safe(i, state):
                continue
            any_active = True
            back = next((t_s for t_s, value in timeline if t_s > after_s and self.is_safe(i, value)), math.inf)
            latest = max(latest, back)
        return latest if any_active else None


def _live_sorter(config, classifier, recording, actuators, sortlog):
    from device.loop import Sorter
    from device.camera.paced import PacedCamera

    camera = PacedCamera(recording)
    return Sorter(config, camera=camera, classifier=classifier, actuators=actuators, sortlog=sortlog,
                  clock=time.monotonic), camera


def paced_run(classifier: Classifier, probe: InferenceProbe, config: Config, video: Path, items: int,
              tmp: Path) -> dict[str, float]:
    """One paced live run until ``items`` items are sorted (and the last hold has ended)."""
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from device.actuators import BinActuators
    from device.camera import open_camera
    from device.sortlog import SortLog

    factory = MockFactory(pin_class=MockPWMPin)
    step_ms: list[float] = []
    probe.intervals.clear()
    with open_camera(str(video)) as recording, \
            BinActuators(config.actuators, config.bins, pin_factory=factory) as actuators, \
            SortLog(tmp / "paced.jsonl") as sortlog:
        sorter, camera = _live_sorter(config, classifier, recording, actuators, sortlog)
        watch = PinWatch(factory)
        step = sorter.step

        def timed_step(image, t):
            start = time.perf_counter()
            try:
                return step(image, t)
            finally:
                step_ms.append((time.perf_counter() - start) * 1000)

        sorter.step = timed_step  # Sorter.run calls self.step: each call is timed, nothing else changes
        summary = sorter.run(max_items=items)
        holds = watch.holds()
        inference_ms = list(sorter.decider.inference_ms)
    hold_s = HOLD_MS / 1000
    ended = [(moved, back) for moved, back in holds if back - moved >= hold_s - 0.001]  # not cut by the end
    late_ms = [(back - moved - hold_s) * 1000 for moved, back in ended]
    figures = {"loop_frames": summary.frames, "loop_frames_dropped": camera.dropped, "loop_items": summary.items,
               **spread("loop_step_ms", step_ms, with_max=True),
               **spread("decision_latency_ms", summary.latencies_ms, with_max=True),
               **spread("inference_in_run_ms", inference_ms),
               "hold_ends": len(late_ms), "hold_ends_cut_short": len(holds) - len(late_ms),
               "hold_ends_during_inference": sum(probe.during(back) for _, back in ended),
               **spread("hold_end_late_ms", late_ms, with_max=True)}
    figures["decision_latency_ms_p50"] = figures.pop("decision_latency_ms_median")
    return figures


def signal_trial(classifier: Classifier, probe: InferenceProbe, config: Config, video: Path,
                 tmp: Path) -> tuple[float, bool] | None:
    """(ms from a SIGTERM to this process until every pin is safe, whether an inference was
    running when it was sent), with a fresh sorter; None when the scene gave no moment with an
    inference running and an actuator active."""
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from device.actuators import BinActuators
    from device.camera import open_camera
    from device.sortlog import SortLog

    factory = MockFactory(pin_class=MockPWMPin)
    fire, done = threading.Event(), threading.Event()
    sent: dict[str, float | bool] = {}

    def send() -> None:
        while not done.is_set():
            if fire.wait(0.05):
                sent["during"] = probe.running
                sent["t_s"] = time.monotonic()
                os.kill(os.getpid(), signal.SIGTERM)
                return

    with open_camera(str(video)) as recording, \
            BinActuators(config.actuators, config.bins, pin_factory=factory) as actuators, \
            SortLog(tmp / "signal.jsonl") as sortlog:
        sorter, _ = _live_sorter(config, classifier, recording, actuators, sortlog)
        watch = PinWatch(factory)
        probe.on_start = lambda: actuators.busy and fire.set()
        previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        helper = threading.Thread(target=send, name="bench-signal", daemon=True)
        sorter.install_signal_handlers()
        try:
            helper.start()
            sorter.run()
        finally:
            probe.on_start = None
            done.set()
            helper.join()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if "t_s" not in sent:
            return None
        safe_s = watch.all_safe_s(sent["t_s"])
    if safe_s is None or math.isinf(safe_s):
        return None
    return (safe_s - sent["t_s"]) * 1000, bool(sent["during"])


def signal_trials(classifier: Classifier, probe: InferenceProbe, config: Config, video: Path, tmp: Path,
                  trials: int) -> dict[str, float]:
    results = [r for r in (signal_trial(classifier, probe, config, video, tmp) for _ in range(trials))
               if r is not None]
    times = [ms for ms, _ in results]
    out = spread("signal_to_safe_ms", times, with_max=True)
    del out["signal_to_safe_ms_p95"]
    return {**out, "signal_trials": len(results), "signal_trials_during_inference": sum(d for _, d in results)}
