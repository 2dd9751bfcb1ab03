"""The loop never waits for the model: inference on its worker thread, speculative classification
of still frames, early decisions, bounded frames per item, a record for every item at the end.

The worker thread is real; a classifier held at a gate (a real threading.Event, opened by the
test) stands for a slow model, so what the loop does while an inference runs is exact. Frames are
stepped by hand at 10 fps on a clock the test moves; nothing sleeps.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from device.actuators import BinActuators
from device.classifier import Classifier
from device.commands.demo_scene import make_board
from device.errors import ModelError
from device.gate import GateVerdict
from device.inference_worker import InferenceWorker
from device.item_frames import ItemFrames
from device.loop import Sorter
from device.presence import PresenceUpdate, State
from device.sortlog import SortLog, read_records

from helpers import BLUE, RED, item_on

FPS = 10
BOARD = make_board(seed=3)
GATE_TIMEOUT_S = 20.0  # a bound, not a pace: a loop that waited for the model would hang this long


class HeldClassifier(Classifier):
    """The real classifier, held before each inference until the test opens ``gate``."""

    def __init__(self, path):
        self.gate = threading.Event()
        self.gate.set()  # loading runs the self-test
        self.started = threading.Event()
        super().__init__(path)

    def probabilities(self, images):
        self.started.set()
        if not self.gate.wait(GATE_TIMEOUT_S):
            raise AssertionError("the test never opened the gate")
        return super().probabilities(images)


def frames(*stretches):
    """Noisy frames: (image, count) stretches at FPS."""
    rng = np.random.default_rng(0)
    for image, count in stretches:
        for _ in range(count):
            yield np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8)


@contextmanager
def live_sorter(config, model_path, log_path):
    """(sorter, classifier, actuators, clock, log path) on a live clock with the worker thread."""
    classifier = HeldClassifier(model_path)
    clock = [0.0]
    with BinActuators(config.actuators, config.bins, pin_factory=MockFactory(pin_class=MockPWMPin)) as actuators, \
            SortLog(log_path) as sortlog:
        sorter = Sorter(config, camera=None, classifier=classifier, actuators=actuators, sortlog=sortlog,
                        clock=lambda: clock[0])
        try:
            yield sorter, classifier, actuators, clock, log_path
        finally:
            classifier.gate.set()
            sorter.worker.close()


@pytest.fixture
def bench(scene_config, colour_model_path, tmp_path):
    with live_sorter(scene_config, colour_model_path, tmp_path / "sort.jsonl") as parts:
        yield parts


def step_all(sorter, clock, images, start_index=0) -> int:
    index = start_index
    for image in images:
        clock[0] = index / FPS
        sorter.step(image, index / FPS)
        index += 1
    return index


def test_the_loop_keeps_reading_frames_while_the_model_runs(bench):
    """Every inference is held: the item settles, is taken away and the board is empty again,
    all while its only classified frame is still in the model. No record is invented meanwhile;
    once the model answers, the item gets exactly one, on the frame that was being classified."""
    sorter, classifier, _actuators, clock, log_path = bench
    index = step_all(sorter, clock, frames((BOARD, 15)))  # the board is learned
    assert sorter.worker.wait_done(GATE_TIMEOUT_S)
    classifier.gate.clear()
    index = step_all(sorter, clock, frames((item_on(BOARD, RED), 20), (BOARD, 15)), index)
    assert classifier.started.is_set() and not sorter.worker.idle
    assert sorter.summary.frames == 50 and sorter.presence.state is State.EMPTY
    assert list(read_records(log_path)) == [] and sorter.decider.waiting == 1
    classifier.gate.set()
    sorter.finish("source ended")
    records = list(read_records(log_path))
    assert [(r["item"], r["label"], r["bin"], r["frames_used"], r["reason"]) for r in records] == [
        (1, "cardboard", "paper", 1, "")]  # the frame in the model when it settled: no second inference
    assert index == 50


def test_a_hold_ends_on_time_while_the_model_runs(bench):
    """The first item is sorted (diverter out for 0.8 s); the second item's inference is held.
    The diverter goes home on time all the same."""
    sorter, classifier, actuators, clock, log_path = bench
    index = step_all(sorter, clock, frames((BOARD, 15), (item_on(BOARD, RED), 12)))
    assert sorter.worker.wait_done(GATE_TIMEOUT_S)  # let the settled item's last inference land ...
    index = step_all(sorter, clock, frames((item_on(BOARD, RED), 1)), index)  # ... and be recorded
    [first] = read_records(log_path)
    assert actuators.devices["diverter"].angle == pytest.approx(-60, abs=0.5)
    classifier.gate.clear()
    index = step_all(sorter, clock, frames((BOARD, 4), (item_on(BOARD, BLUE), 8)), index)
    assert not sorter.worker.idle  # the blue item's frame is held in the model
    assert clock[0] > first["source_time"] + 0.8
    assert actuators.devices["diverter"].angle == pytest.approx(0, abs=0.5)


def test_sigterm_during_an_inference_makes_the_pins_safe_at_once_and_the_item_still_gets_a_record(
        scene_config, colour_model_path, tmp_path, own_signal_handlers):
    """The diverter is out (5 s hold) and the next item's inference is held when SIGTERM comes:
    the diverter is home when the handler returns; the held item still gets its record, not
    actuated."""
    bins = dict(scene_config.bins, paper=replace(scene_config.bins["paper"], hold_ms=5000.0))
    with live_sorter(replace(scene_config, bins=bins), colour_model_path, tmp_path / "sort.jsonl") as parts:
        sigterm_during_an_inference(*parts)


def sigterm_during_an_inference(sorter, classifier, actuators, clock, log_path):
    sorter.install_signal_handlers()
    index = step_all(sorter, clock, frames((BOARD, 15), (item_on(BOARD, RED), 12)))
    assert sorter.worker.wait_done(GATE_TIMEOUT_S)
    index = step_all(sorter, clock, frames((item_on(BOARD, RED), 1)), index)
    assert actuators.devices["diverter"].angle == pytest.approx(-60, abs=0.5)
    classifier.gate.clear()
    step_all(sorter, clock, frames((BOARD, 4), (item_on(BOARD, BLUE), 12)), index)
    assert not sorter.worker.idle and sorter.decider.waiting == 1  # the blue item waits for its inference
    os.kill(os.getpid(), signal.SIGTERM)
    assert actuators.devices["diverter"].angle == pytest.approx(0, abs=0.5)  # inside the handler
    classifier.gate.set()
    sorter.finish("stopping")
    records = list(read_records(log_path))
    assert [(r["label"], r["bin"]) for r in records] == [("cardboard", "paper"), ("metal", "metal")]
    assert records[1]["reason"] == "stopping: not actuated"
    assert actuators.devices["diverter"].angle == pytest.approx(0, abs=0.5)
    assert not actuators.devices["flap"].value  # the metal bin's output never pulsed


def run_inline(config, model_path, log_path, images, *, finish: str | None = None):
    with BinActuators(config.actuators, config.bins, pin_factory=MockFactory(pin_class=MockPWMPin)) as actuators, \
            SortLog(log_path) as sortlog:
        sorter = Sorter(config, camera=None, classifier=Classifier(model_path), actuators=actuators, sortlog=sortlog)
        for index, image in enumerate(images):
            sorter.step(image, index / FPS)
        if finish:
            sorter.finish(finish)
    return sorter, list(read_records(log_path))


def test_an_item_whose_first_still_frames_agree_is_decided_early_and_once(scene_config, colour_model_path, tmp_path):
    """Early decisions on: the red item's still frames agree at > 0.9, so it is decided as soon
    as it has been there presence.min_item_s (anything gone sooner is no item), before presence
    would call it settled; presence's verdict later makes no second record. With early
    decisions off it waits for settle_s."""
    early = replace(scene_config, model=replace(scene_config.model, early_decision=True))
    images = list(frames((BOARD, 15), (item_on(BOARD, RED), 20), (BOARD, 10), (item_on(BOARD, BLUE), 20),
                         (BOARD, 10)))
    _, records = run_inline(early, colour_model_path, tmp_path / "early.jsonl", images)
    _, settled = run_inline(scene_config, colour_model_path, tmp_path / "settled.jsonl", images)
    assert [(r["label"], r["early"]) for r in records] == [("cardboard", True), ("metal", True)]
    assert [(r["label"], r["early"], r["frames_used"]) for r in settled] == [("cardboard", False, 3),
                                                                             ("metal", False, 3)]
    arrivals_s = (1.5, 4.5)
    for fast, slow, arrived_s in zip(records, settled, arrivals_s):
        assert arrived_s + scene_config.presence.min_item_s - 1e-6 <= fast["source_time"] < slow["source_time"]


def test_an_item_on_the_board_when_the_source_ends_gets_a_record(scene_config, colour_model_path, tmp_path):
    """The recording ends while the item is still moving in: it is recorded, not actuated."""
    images = [item_on(BOARD, RED) if i % 2 else BOARD for i in range(8)]  # flickers: never still
    sorter, records = run_inline(scene_config, colour_model_path, tmp_path / "sort.jsonl",
                                 list(frames((BOARD, 15))) + images, finish="source ended")
    assert len(records) == 1 and records[0]["reason"].startswith("source ended: not actuated")
    assert records[0]["settled"] is False and sorter.summary.items == 1


def test_a_model_that_fails_on_every_frame_ends_each_item_in_the_fallback_bin_once(scene_config, colour_model_path,
                                                                                  tmp_path):
    """Speculative classifications that fail are not retried frame after frame (that used to
    spin): each item is decided once, "classifier failed", fallback bin."""

    class Failing(Classifier):
        def probabilities(self, images):
            if getattr(self, "broken", False):
                raise ModelError("inference failed (test)")
            return super().probabilities(images)

    classifier = Failing(colour_model_path)
    classifier.broken = True
    with BinActuators(scene_config.actuators, scene_config.bins,
                      pin_factory=MockFactory(pin_class=MockPWMPin)) as actuators, \
            SortLog(tmp_path / "sort.jsonl") as sortlog:
        sorter = Sorter(scene_config, camera=None, classifier=classifier, actuators=actuators, sortlog=sortlog)
        for index, image in enumerate(frames((BOARD, 15), (item_on(BOARD, RED), 20), (BOARD, 10))):
            sorter.step(image, index / FPS)
    records = list(read_records(tmp_path / "sort.jsonl"))
    assert [(r["bin"], r["reason"]) for r in records] == [("landfill", "classifier failed")]


def test_an_item_keeps_only_the_frames_it_may_still_use():
    """200 frames of an item that keeps shifting between still and moving: it holds at most
    2 x frames_per_item images (newest still ones and stillest ones), not the whole stay."""
    item = ItemFrames(number=1, keep=3)
    accepted = GateVerdict(True, "", None)
    rng = np.random.default_rng(1)
    for i in range(200):
        stable = i % 7 != 0
        update = PresenceUpdate(State.OCCUPIED, "", 0.1, float(rng.uniform(0, 0.05)), stable, on_item=True)
        slot = item.add(np.full((4, 4, 3), i % 256, np.uint8), accepted, update)
        if stable and i % 2:
            item.classified_as(slot, np.array([0.9, 0.1]))
    held = {id(s.image) for s in (*item.still, *item.classified, *item.stillest)}
    assert len(held) <= 6
    assert [s.seq for s in item.for_decision(settled=True)] == sorted(s.seq for s in item.for_decision(True))
    assert len(item.for_decision(settled=False)) == 3


def test_the_worker_runs_one_job_at_a_time_and_hands_each_result_back_once(colour_model_path):
    classifier = Classifier(colour_model_path)
    images = [item_on(BOARD, RED), item_on(BOARD, BLUE)]
    expected = classifier.probabilities(images)
    on_thread = []
    with InferenceWorker(classifier, threaded=True) as worker:
        worker.submit(images, "tag", then=lambda result: on_thread.append(threading.current_thread().name) or 7)
        with pytest.raises(RuntimeError, match="busy"):
            worker.submit(images, "again")
        result = worker.wait(GATE_TIMEOUT_S)
        assert worker.poll() is None and worker.idle
    assert result.tag == "tag" and result.then_result == 7 and on_thread == ["inference"]
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)
    inline = InferenceWorker(classifier, threaded=False)
    inline.submit(images, "inline")
    assert not inline.idle and inline.poll().tag == "inline" and inline.idle


def test_a_classifier_that_crashes_is_a_model_failure_not_a_dead_worker(colour_model_path):
    """Any exception of preprocessing or the model (a cv2 error, a MemoryError) comes back as
    the job's ModelError; the worker thread lives on and takes the next job (it used to die,
    leaving the sorter reading frames and deciding nothing, the watchdog content)."""

    class Crashing(Classifier):
        crash = False

        def probabilities(self, images):
            if self.crash:
                raise ValueError("a frame preprocessing could not take")
            return super().probabilities(images)

    classifier = Crashing(colour_model_path)
    classifier.crash = True
    with InferenceWorker(classifier, threaded=True) as worker:
        worker.submit([item_on(BOARD, RED)], "first")
        crashed = worker.wait(GATE_TIMEOUT_S)
        classifier.crash = False
        worker.submit([item_on(BOARD, RED)], "second")
        recovered = worker.wait(GATE_TIMEOUT_S)
    assert isinstance(crashed.error, ModelError) and "inference crashed (ValueError" in str(crashed.error)
    assert recovered.error is None and recovered.probabilities.shape == (1, 3)


def test_something_gone_within_min_item_s_is_never_decided_early(scene_config, colour_model_path, tmp_path):
    """A red thing lies still for 0.4 s (< presence.min_item_s 0.5 s) and is gone: its still
    frames agree at once, but it is no item (presence: passed), so nothing is decided, actuated
    or recorded."""
    early = replace(scene_config, model=replace(scene_config.model, early_decision=True))
    images = list(frames((BOARD, 15), (item_on(BOARD, RED), 4), (BOARD, 15)))
    sorter, records = run_inline(early, colour_model_path, tmp_path / "sort.jsonl", images)
    assert records == [] and sorter.summary.items == 0 and sorter.summary.passing == 1


def test_an_item_lying_there_at_start_gets_one_record_and_its_departure_none_with_early_decisions(
        scene_config, colour_model_path, tmp_path):
    """The sorter starts with no board learned and a red item lying on it: the item is decided
    once, and the frames after it (the item taken away, the empty board being learned) are no
    item, even though the model is sure of them: no early decision while the board is learned
    (that was a phantom record, and a bin moved, on a scene whose item lay there at start). A
    blue item after it is decided early as usual."""
    early = replace(scene_config, model=replace(scene_config.model, early_decision=True))
    images = list(frames((item_on(BOARD, RED), 20), (BOARD, 30), (item_on(BOARD, BLUE), 20), (BOARD, 10)))
    sorter, records = run_inline(early, colour_model_path, tmp_path / "sort.jsonl", images)
    assert [(r["label"], r["early"]) for r in records] == [("cardboard", False), ("metal", True)]
    assert sorter.summary.items == 2
