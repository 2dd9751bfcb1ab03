"""What happens after an item settles: a board that changes without clearing, and how long the
actuators hold when classification takes real time on a live camera.

Frames are synthesised and fed to ``Sorter.step`` at 10 fps with real onnxruntime (the colour
model) and gpiozero's MockFactory.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from device.actuators import BinActuators
from device.classifier import Classifier
from device.commands.demo_scene import make_board
from device.errors import ConfigError
from device.gate import board_stats
from device.inference_worker import InferenceWorker
from device.loop import Sorter
from device.notify import Notifier
from device.sortlog import SortLog, read_records

from helpers import BLUE, GREEN, RED, bind_notify_socket, item_on, make_calibration, received

FPS = 10


def noisy(image: np.ndarray, rng) -> np.ndarray:
    return np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8)


def run_frames(config, model_path, log_path, frames, states: list[str] | None = None, notifier=None) -> list[dict]:
    """Step the sorter through ``frames`` at FPS; returns the sort log's records (and appends the
    sorter's state after each frame to ``states``)."""
    rng = np.random.default_rng(0)
    with BinActuators(config.actuators, config.bins, pin_factory=MockFactory(pin_class=MockPWMPin)) as actuators, \
            SortLog(log_path) as sortlog:
        sorter = Sorter(config, camera=None, classifier=Classifier(model_path), actuators=actuators,
                        sortlog=sortlog, notifier=notifier)
        for index, image in enumerate(frames):
            sorter.step(noisy(image, rng), index / FPS)
            if states is not None:
                states.append(sorter.state)
    return list(read_records(log_path))


def test_a_second_item_dropped_on_a_settled_board_is_sorted_too(scene_config, colour_model_path, tmp_path):
    board = make_board(seed=3)
    both = item_on(board, RED)
    cv2.rectangle(both, (360, 120), (470, 250), GREEN, -1)  # a green item lands beside the red one
    frames = [board] * 15 + [item_on(board, RED)] * 20 + [both] * 20 + [board] * 10
    records = run_frames(scene_config, colour_model_path, tmp_path / "sort.jsonl", frames)

    assert [r["item"] for r in records] == [1, 2]
    assert records[0]["label"] == "cardboard" and records[0]["bin"] == "paper"
    assert 3.5 < records[1]["source_time"] < 5.5  # after the green item arrived at 3.5 s and settled


def test_an_item_swapped_for_another_without_the_board_clearing_is_sorted(scene_config, colour_model_path,
                                                                         tmp_path):
    board = make_board(seed=3)
    frames = [board] * 15 + [item_on(board, RED)] * 20 + [item_on(board, BLUE)] * 20 + [board] * 10
    records = run_frames(scene_config, colour_model_path, tmp_path / "sort.jsonl", frames)

    assert [(r["item"], r["label"], r["bin"]) for r in records] == [(1, "cardboard", "paper"),
                                                                   (2, "metal", "metal")]


def test_a_disturbance_that_leaves_the_same_view_is_not_a_new_item(scene_config, colour_model_path, tmp_path):
    board = make_board(seed=3)
    hand = item_on(board, RED)
    cv2.rectangle(hand, (0, 300), (200, 384), (150, 110, 90), -1)  # a hand passes, then withdraws
    frames = [board] * 15 + [item_on(board, RED)] * 15 + [hand] * 3 + [item_on(board, RED)] * 20 + [board] * 10
    records = run_frames(scene_config, colour_model_path, tmp_path / "sort.jsonl", frames)

    assert [r["item"] for r in records] == [1]


@pytest.mark.parametrize("then", ["cleared", "changed"])
def test_an_item_left_on_the_board_after_sorting_is_warned_about_once(scene_config, colour_model_path,
                                                                     tmp_path, caplog, then):
    """stuck_warn_s = 2: the red item settles and is sorted at about 2 s and stays until 8 s; the
    sorter warns once, at 2 s after sorting, reads "stuck" (status file and systemd STATUS) until
    the board clears or a blue item is dropped beside the red one, then sorts the next item."""
    config = replace(scene_config, presence=replace(scene_config.presence, stuck_warn_s=2.0))
    board = make_board(seed=3)
    if then == "cleared":
        after = [board] * 10 + [item_on(board, BLUE)] * 15 + [board] * 5
    else:
        both = item_on(board, RED)
        cv2.rectangle(both, (360, 120), (470, 250), BLUE, -1)
        after = [both] * 25 + [board] * 5
    frames = [board] * 15 + [item_on(board, RED)] * 65 + after
    states: list[str] = []
    path, sock = bind_notify_socket(tmp_path)
    with caplog.at_level(logging.WARNING, logger="device.loop"), Notifier(path) as notifier:
        records = run_frames(config, colour_model_path, tmp_path / "sort.jsonl", frames, states, notifier)

    assert [r["item"] for r in records] == [1, 2] and records[0]["bin"] == "paper"
    assert then == "changed" or records[1]["bin"] == "metal"  # red and blue together: whichever wins
    warnings = [r.getMessage() for r in caplog.records if "still on the board" in r.getMessage()]
    assert len(warnings) == 1 and "item 1" in warnings[0] and "paper" in warnings[0]
    first_stuck = states.index("stuck")
    assert round(first_stuck / FPS - records[0]["source_time"], 1) == 2.0
    assert set(states[first_stuck:80]) == {"stuck"}  # until the red item leaves (or the blue lands) at 8 s
    assert "stuck" not in states[90:]
    assert received(sock) == ["STATUS=stuck: item 1 still on the board", "STATUS=sorting"]


def test_stuck_warn_s_0_never_warns(scene_config, colour_model_path, tmp_path, caplog):
    config = replace(scene_config, presence=replace(scene_config.presence, stuck_warn_s=0.0))
    board = make_board(seed=3)
    states: list[str] = []
    with caplog.at_level(logging.WARNING, logger="device.loop"):
        records = run_frames(config, colour_model_path, tmp_path / "sort.jsonl",
                             [board] * 15 + [item_on(board, RED)] * 65 + [board] * 10, states)
    assert len(records) == 1 and "stuck" not in states and states[60] == "settled"
    assert not [r for r in caplog.records if "still on the board" in r.getMessage()]


class SlowClassifier(Classifier):
    """The real classifier; each classification moves the live clock on by ``took_s``."""

    def __init__(self, path, clock: list[float], took_s: float):
        self._clock, self._took_s = clock, 0.0  # loading (the self-test) takes no live time
        super().__init__(path)
        self._took_s = took_s

    def probabilities(self, images):
        self._clock[0] += self._took_s
        return super().probabilities(images)


def test_a_live_hold_lasts_its_full_time_from_the_moment_the_actuator_moves(scene_config, colour_model_path,
                                                                           tmp_path):
    """hold_ms is 800 and each classification takes 0.5 s of the live clock; a live camera's
    frames from that time are gone. The diverter moves when the settling frame's classification
    is done (0.5 s after that frame) and must stay out until 0.8 s after it moved, not until
    0.8 s after the settling frame, which the frame clock would give."""
    board = make_board(seed=3)
    rng = np.random.default_rng(0)
    live_s = [0.0]
    classifier = SlowClassifier(colour_model_path, live_s, took_s=0.5)
    angle_after = []  # (live clock after the frame's step in s, diverter angle)
    with BinActuators(scene_config.actuators, scene_config.bins,
                      pin_factory=MockFactory(pin_class=MockPWMPin)) as actuators, \
            SortLog(tmp_path / "sort.jsonl") as sortlog:
        sorter = Sorter(scene_config, camera=None, classifier=classifier, actuators=actuators,
                        sortlog=sortlog, clock=lambda: live_s[0],
                        inference=InferenceWorker(classifier, threaded=False))  # the clock moves in step
        index = 0
        while index < 80:
            live_s[0] = t = index / FPS
            image = item_on(board, RED) if 15 <= index < 70 else board
            sorter.step(noisy(image, rng), t)
            angle_after.append((live_s[0], actuators.devices["diverter"].angle))
            # the next frame a live camera delivers is the first one after the step's classification
            index = max(index + 1, math.ceil(live_s[0] * FPS - 1e-6))
    records = list(read_records(tmp_path / "sort.jsonl"))
    assert len(records) == 1 and records[0]["bin"] == "paper"
    moved_s = records[0]["source_time"] + 0.5  # the settling frame's classification
    out = [t for t, angle in angle_after if angle == pytest.approx(-60, abs=0.5)]
    home = [t for t, angle in angle_after if t > moved_s and angle == pytest.approx(0, abs=0.5)]
    assert min(out) == pytest.approx(moved_s)
    assert max(out) < moved_s + 0.8 - 1e-6 <= min(home)
    assert max(out) > records[0]["source_time"] + 0.8  # still out past the frame clock's end of the hold


def test_the_frame_that_settles_an_item_is_classified_even_with_settle_s_0(scene_config, colour_model_path,
                                                                          tmp_path):
    """With settle_s = 0 an item settles on its first still frame: that frame is what it is judged
    on (it used to be dropped, sending every item to the fallback bin)."""
    config = replace(scene_config, presence=replace(scene_config.presence, settle_s=0.0))
    board = make_board(seed=3)
    frames = [board] * 15 + [item_on(board, RED)] * 20 + [board] * 10
    records = run_frames(config, colour_model_path, tmp_path / "sort.jsonl", frames)
    assert len(records) == 1
    assert (records[0]["label"], records[0]["bin"], records[0]["frames_used"]) == ("cardboard", "paper", 1)


def test_the_settling_frame_counts_among_the_still_frames(scene_config, colour_model_path, tmp_path):
    """settle_s = 0.5 s at 10 fps: the still run is the frames at +0.0 .. +0.5 s, six of them."""
    config = replace(scene_config, model=replace(scene_config.model, frames_per_item=30))
    board = make_board(seed=3)
    frames = [board] * 15 + [item_on(board, RED)] * 20 + [board] * 10
    records = run_frames(config, colour_model_path, tmp_path / "sort.jsonl", frames)
    assert [(r["bin"], r["frames_used"]) for r in records] == [("paper", 6)]


def test_an_item_seen_well_only_while_moving_is_decided_on_those_frames_when_it_leaves(scene_config,
                                                                                      colour_model_path, tmp_path):
    """Accepted frames while the item slid in, then every frame blown out until it is gone: the
    blown-out frames are no stillness, so it never settles; when it leaves it is decided on the
    frames it was seen on (it used to be sent to the fallback bin for its rejected still frames)."""
    board = make_board(seed=3)
    sliding = []
    for dx in range(0, 100, 20):  # five accepted frames of a moving item
        image = board.copy()
        cv2.rectangle(image, (100 + dx, 110), (260 + dx, 270), RED, -1)
        sliding.append(image)
    white = np.full_like(board, 255)
    frames = [board] * 15 + sliding + [white] * 12 + [board] * 10
    records = run_frames(scene_config, colour_model_path, tmp_path / "sort.jsonl", frames)
    assert len(records) == 1
    assert (records[0]["label"], records[0]["bin"], records[0]["settled"]) == ("cardboard", "paper", False)
    assert records[0]["frames_used"] == 3 and records[0]["reject_reasons"] == {"overexposed": 12}
    assert records[0]["reason"] == "left before it settled"
    assert records[0]["source_time"] == pytest.approx(3.2 + scene_config.presence.clear_s)  # board back at 3.2 s


def test_frames_of_another_size_than_the_learned_board_end_the_run_with_a_config_error(scene_config,
                                                                                     colour_model_path, tmp_path):
    """The board is learned from 512x384 frames; a camera that then delivers 256x192 (a USB camera
    ignoring the requested size) cannot be compared with it: one clear error, not a squashed board."""
    board = make_board(seed=3)
    frames = [board] * 15 + [cv2.resize(item_on(board, RED), (256, 192))] * 5
    with pytest.raises(ConfigError, match=r"^frames are 256x192, but the first frame is 512x384: set camera\.width"):
        run_frames(scene_config, colour_model_path, tmp_path / "sort.jsonl", frames)


def test_frames_of_another_size_than_the_calibration_end_the_run_with_a_config_error(scene_config,
                                                                                    colour_model_path, tmp_path):
    board = make_board(seed=3)
    calibration = replace(make_calibration("cal-9"), image_size=(512, 384), board=board_stats(board))
    with BinActuators(scene_config.actuators, scene_config.bins,
                      pin_factory=MockFactory(pin_class=MockPWMPin)) as actuators, \
            SortLog(tmp_path / "sort.jsonl") as sortlog:
        sorter = Sorter(scene_config, camera=None, classifier=Classifier(colour_model_path), actuators=actuators,
                        sortlog=sortlog, calibration=(calibration, board))
        with pytest.raises(ConfigError, match=r"^frames are 640x480, but calibration cal-9's board reference "
                                              r"is 512x384"):
            sorter.step(cv2.resize(board, (640, 480)), 0.0)


def test_routing_mistakes_are_warned_about_at_start(scene_config, colour_model_path, tmp_path, caplog):
    """A class name the model does not have (a typo) and a bin nothing is routed to."""
    routing = replace(scene_config.routing, classes={"cardboard": "paper", "glas": "paper", "metal": "metal"})
    config = replace(scene_config, routing=routing)
    with caplog.at_level(logging.WARNING, logger="device.loop"):
        run_frames(config, colour_model_path, tmp_path / "sort.jsonl", [])
    assert [r.getMessage() for r in caplog.records] == [
        "classes without a bin go to the fallback bin: glass",
        "routing.classes.glas: the model has no class 'glas' (it has cardboard, glass, metal)",
        "bins.containers: no class is routed to it (routing.classes)",  # a default bin, kept by the file
        "bins.glass: no class is routed to it (routing.classes)"]
