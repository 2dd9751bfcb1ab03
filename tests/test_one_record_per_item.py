"""Every item in front of the camera gets exactly one record (issue 14): a shaking camera, flash
frames in a rest, an item taken away before it settles, an actuator that fails, an item lying
on the board at start, a calibration's board that is not what the camera sees; and what is not
an item (a hand passing, light changing over the empty board) gets none.

Frames are rendered by the project's scene renderer (device.scenes.render: shake, noise, light
changes, hands) or composed here, and fed to ``Sorter.step`` at 10 fps with real onnxruntime
(the colour model) and gpiozero's MockFactory.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from device.actuators import BinActuators
from device.camera import open_camera
from device.classifier import Classifier
from device.errors import ActuatorError
from device.gate import board_stats
from device.loop import Sorter
from device.scenes.render import Nuisances, SceneItem, Timing, expose, make_board, render
from device.sortlog import SortLog, read_records

from helpers import BLUE, RED, item_on, make_calibration

FPS = 10


def striped_item(board: np.ndarray, colour, box=(150, 100, 360, 280)) -> np.ndarray:
    """A textured item: ``colour`` with dark stripes every 6 pixels (sub-pixel shake moves
    every stripe edge)."""
    image = board.copy()
    x0, y0, x1, y1 = box
    cv2.rectangle(image, (x0, y0), (x1, y1), colour, -1)
    for x in range(x0, x1, 6):
        cv2.line(image, (x, y0), (x, y1), tuple(c // 3 for c in colour), 2)
    return image


def sort_frames(config, model_path, log_path, frames, *, calibration=None, actuators_hook=None):
    """Step the sorter through ``frames`` (uint8 RGB) at FPS; returns (summary, records)."""
    rng = np.random.default_rng(0)
    with BinActuators(config.actuators, config.bins, pin_factory=MockFactory(pin_class=MockPWMPin)) as actuators, \
            SortLog(log_path) as sortlog:
        sorter = Sorter(config, camera=None, classifier=Classifier(model_path), actuators=actuators,
                        sortlog=sortlog, calibration=calibration)
        try:
            for index, image in enumerate(frames):
                if actuators_hook:
                    actuators_hook(index, actuators)
                noisy = np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8)
                sorter.step(noisy, index / FPS)
        finally:
            summary = sorter.summary
    return summary, list(read_records(log_path))


def sort_video(config, model_path, log_path, video):
    with open_camera(str(video)) as camera:
        frames = []
        while (frame := camera.capture()) is not None:
            frames.append(frame.image)
    return sort_frames(config, model_path, log_path, frames)


def test_an_item_at_rest_under_camera_shake_settles_in_settle_s(scene_config, colour_model_path, tmp_path):
    """+-1.5 px of shake every frame and sensor noise on striped items: each settles settle_s
    after it came to rest (the old pixel difference saw 2-8% of the board move and never
    settled them, so they left without a record)."""
    board = make_board(seed=5)
    items = [SceneItem(striped_item(board, RED), "cardboard"), SceneItem(striped_item(board, BLUE), "metal")]
    truth = render(items, tmp_path / "shake.mkv", board=board, timing=Timing(fps=FPS, still_s=1.2), seed=5,
                   nuisances=Nuisances(shake_px=1.5, noise=3.0, motion_blur=True))
    summary, records = sort_video(scene_config, colour_model_path, tmp_path / "sort.jsonl", tmp_path / "shake.mkv")

    assert [(r["label"], r["bin"], r["settled"]) for r in records] == [("cardboard", "paper", True),
                                                                      ("metal", "metal", True)]
    for record, item in zip(records, truth):
        waited_s = record["source_time"] - item["still_s"]
        assert scene_config.presence.settle_s <= waited_s <= scene_config.presence.settle_s + 0.11 + 1e-6


def test_flash_frames_in_a_rest_neither_break_nor_make_the_still_run(scene_config, colour_model_path, tmp_path):
    """A flash every fourth frame of a 1.6 s rest: never 0.5 s without one. The flash frames are
    rejected (counted by reason) and skipped by the still run, so the item settles 0.5 s after it
    came to rest plus the skipped flashes, on accepted frames only."""
    board = make_board(seed=3)
    item = item_on(board, RED)
    rest = [expose(item, 4.0) if k % 4 == 3 else item for k in range(16)]
    frames = [board] * 15 + rest + [board] * 10
    summary, records = sort_frames(scene_config, colour_model_path, tmp_path / "sort.jsonl", frames)

    assert len(records) == 1
    record = records[0]
    assert (record["label"], record["bin"], record["settled"], record["reason"]) == ("cardboard", "paper", True, "")
    assert record["frames_used"] == 3 and record["reject_reasons"] == {"overexposed": 1}
    assert record["source_time"] == pytest.approx(1.5 + 0.1 + 0.5)  # still from 1.6 s; the flash at 1.8 s skipped


@pytest.mark.parametrize("kind", ["normal", "overexposed"])
def test_an_item_taken_away_before_it_settles_gets_one_record(scene_config, colour_model_path, tmp_path, kind):
    """Dropped, at rest for 0.2 s, taken away: decided when the board is clear again, on the
    frames it had (or, blown out on every frame, with the reason that it had none)."""
    board = make_board(seed=7)
    items = [SceneItem(item_on(board, RED), "cardboard", "quick" if kind == "normal" else "overexposed")]
    timing = Timing(fps=FPS, still_s=0.2)
    truth = render(items, tmp_path / "quick.mp4", board=board, timing=timing, seed=7)
    summary, records = sort_video(scene_config, colour_model_path, tmp_path / "sort.jsonl", tmp_path / "quick.mp4")

    assert len(records) == 1 and summary.items == 1 and summary.unsettled == 1
    record = records[0]
    assert record["settled"] is False
    assert truth[0]["leave_s"] <= record["source_time"] <= truth[0]["leave_s"] + scene_config.presence.clear_s + 0.11
    if kind == "normal":
        assert (record["label"], record["bin"]) == ("cardboard", "paper")
        assert record["reason"] == "left before it settled" and record["frames_used"] > 0
    else:
        assert (record["label"], record["bin"], record["frames_used"]) == ("", "landfill", 0)
        assert record["reason"].startswith("left before a usable frame: all frames rejected (overexposed x")


def test_hands_passing_and_light_changing_over_the_empty_board_are_no_items(scene_config, colour_model_path,
                                                                           tmp_path):
    """Around one item: the light steps down 30%, ramps back over 1 s, steps up 30%, hands pass
    (0.2-0.3 s) over the empty board, under shake: one record, and each hand is counted as a
    passing disturbance (an arrival gone within min_item_s), not lost without a trace."""
    board = make_board(seed=8)
    items = [SceneItem(striped_item(board, RED), "cardboard"), SceneItem(striped_item(board, BLUE), "metal")]
    nuisances = Nuisances(shake_px=1.0, noise=3.0, hands=(1, 2),
                          light_changes=((1, 0.7, 0.0), (1, 1.0, 1.0), (2, 1.3, 0.0)))
    events: list[dict] = []
    render(items, tmp_path / "room.mkv", board=board, timing=Timing(fps=FPS, still_s=1.2), seed=8,
           nuisances=nuisances, events=events)
    summary, records = sort_video(scene_config, colour_model_path, tmp_path / "sort.jsonl", tmp_path / "room.mkv")

    assert [e["event"] for e in events] == ["light", "light", "hand", "light", "hand"]
    assert [(r["label"], r["settled"]) for r in records] == [("cardboard", True), ("metal", True)]
    assert summary.passing == 2


def test_the_record_is_written_before_an_actuator_error_ends_the_run(scene_config, colour_model_path, tmp_path):
    """The flap's GPIO fails (gpiozero raises GPIODeviceClosed) as a blue item is sorted to it:
    the item's record is in the sort log, naming the failure, and then the run ends (exit 69)."""
    board = make_board(seed=3)
    frames = [board] * 15 + [item_on(board, BLUE)] * 20 + [board] * 5

    def break_flap(index, actuators):
        if index == 20:
            actuators.devices["flap"].close()

    with pytest.raises(ActuatorError, match=r"actuators\.flap: could not move for bin metal"):
        sort_frames(scene_config, colour_model_path, tmp_path / "sort.jsonl", frames, actuators_hook=break_flap)
    records = list(read_records(tmp_path / "sort.jsonl"))
    assert [(r["item"], r["label"], r["bin"]) for r in records] == [(1, "metal", "metal")]
    assert records[0]["reason"].startswith("actuator failed (actuators.flap: could not move for bin metal")


def test_an_item_on_the_board_at_start_is_sorted_and_its_removal_is_no_item(scene_config, colour_model_path,
                                                                           tmp_path, caplog):
    """No calibration, the sorter starts with a red item lying on the board: the still scene is
    not learned as the board (it would hide the item and turn its removal into a phantom). The
    item is sorted, learning says once that it waits, and the board is learned once it lies
    empty; the next item is sorted against it."""
    board = make_board(seed=3)
    frames = [item_on(board, RED)] * 15 + [board] * 15 + [item_on(board, BLUE)] * 20 + [board] * 10
    with caplog.at_level(logging.INFO):
        summary, records = sort_frames(scene_config, colour_model_path, tmp_path / "sort.jsonl", frames)

    assert [(r["label"], r["bin"], r["settled"]) for r in records] == [("cardboard", "paper", True),
                                                                      ("metal", "metal", True)]
    assert records[0]["source_time"] < 1.5  # decided while it lay there, not after its removal
    assert 3.0 < records[1]["source_time"] < 5.0
    waits = [r for r in caplog.records if "not empty at start" in r.getMessage()]
    assert len(waits) == 1 and waits[0].levelno == logging.WARNING
    learned = [r.getMessage() for r in caplog.records if "empty board learned" in r.getMessage()]
    assert len(learned) == 1


def test_items_that_follow_one_lying_there_at_start_with_short_gaps_each_get_a_record(scene_config,
                                                                                   colour_model_path, tmp_path):
    """No calibration, an item lying there at start, then items every 1.8 s: each rests 1 s and
    the board lies empty for 0.8 s between them, shorter than ``learn_s`` (1 s). The board is
    learned from the first still, empty gap (``settle_s`` long once an item has been there), and
    every item gets its one record (before, none was seen until the board had lain empty for
    learn_s: a busy stream lost every item)."""
    board = make_board(seed=3)
    frames = [item_on(board, RED)] * 15
    for colour in (BLUE, RED, BLUE, RED):
        frames += [board] * 8 + [item_on(board, colour)] * 10
    frames += [board] * 10
    summary, records = sort_frames(scene_config, colour_model_path, tmp_path / "sort.jsonl", frames)

    assert [(r["label"], r["settled"]) for r in records] == [("cardboard", True), ("metal", True),
                                                             ("cardboard", True), ("metal", True),
                                                             ("cardboard", True)]


def test_a_quiet_start_learns_the_board_from_learn_s_not_from_a_shorter_gap(scene_config, colour_model_path,
                                                                           tmp_path, caplog):
    """Nothing lay there at start: 0.7 s of empty board (less than learn_s) is not learned from,
    so the item that comes lies on a board not yet learned: it is sorted as an item lying there,
    and the board is learned after it (from settle_s: items are coming)."""
    board = make_board(seed=3)
    frames = [board] * 7 + [item_on(board, BLUE)] * 20 + [board] * 15
    with caplog.at_level(logging.INFO):
        summary, records = sort_frames(scene_config, colour_model_path, tmp_path / "sort.jsonl", frames)

    assert [(r["label"], r["settled"]) for r in records] == [("metal", True)]
    messages = [r.getMessage() for r in caplog.records]
    waited = [i for i, m in enumerate(messages) if "not empty at start" in m]
    learned = [i for i, m in enumerate(messages) if m == "empty board learned from 0.5 s of still, empty scene"]
    assert len(waited) == 1 and len(learned) == 1 and waited[0] < learned[0]


def test_a_scene_that_moves_at_start_is_not_learned_as_the_board(scene_config, colour_model_path, tmp_path, caplog):
    """No calibration, and for 4 s something keeps moving over the board (a hand, a shaken
    item): nothing is learned from it, that is said once, and the board is learned once it lies
    still and empty; the next item is sorted against it."""
    board = make_board(seed=3)
    moving = []
    for i in range(40):
        image = board.copy()
        cv2.rectangle(image, (100 + 9 * (i % 7), 110), (260 + 9 * (i % 7), 270), RED, -1)
        moving.append(image)
    frames = moving + [board] * 15 + [item_on(board, BLUE)] * 20 + [board] * 10
    with caplog.at_level(logging.INFO):
        summary, records = sort_frames(scene_config, colour_model_path, tmp_path / "sort.jsonl", frames)

    assert [(r["label"], r["bin"], r["settled"]) for r in records] == [("metal", "metal", True)]
    waits = [r.getMessage() for r in caplog.records if "has not been still" in r.getMessage()]
    assert waits == ["the scene has not been still for 3 s since start: waiting for a still, empty board to learn"]
    assert len([r for r in caplog.records if "empty board learned" in r.getMessage()]) == 1


def test_a_calibration_board_that_differs_from_the_view_at_start_is_warned_about(scene_config, colour_model_path,
                                                                                tmp_path, caplog):
    """Checked once the scene first lies still: an item lying on the calibrated board at start
    gives one warning (and is sorted); the empty board it was calibrated on gives none."""
    board = make_board(seed=3)
    calibration = replace(make_calibration("cal-3"), image_size=(512, 384), board=board_stats(board))
    for start, expected in ((item_on(board, RED), 1), (board, 0)):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            summary, records = sort_frames(scene_config, colour_model_path, tmp_path / f"sort-{expected}.jsonl",
                                           [start] * 15 + [board] * 10, calibration=(calibration, board))
        warnings = [r.getMessage() for r in caplog.records if "differs from the board reference" in r.getMessage()]
        assert len(warnings) == expected and all("recalibrate" in w for w in warnings)
        assert [(r["label"], r["calibration_id"]) for r in records] == [("cardboard", "cal-3")] * expected


def test_a_white_item_that_clips_in_the_middle_is_classified_not_glare(scene_config, colour_model_path, tmp_path):
    """A pale red item whose own pixels clip on a third of it, over a third of the middle of the
    frame, in the same place frame after frame: its frames are classified (the old gate called
    every one of them glare and sent the item to the fallback bin)."""
    board = make_board(seed=3)
    item = board.copy()
    cv2.rectangle(item, (140, 90), (380, 290), (235, 120, 120), -1)  # 240 x 200
    cv2.rectangle(item, (190, 125), (320, 250), (255, 215, 215), -1)  # 130 x 125 clipped: 34% of it
    frames = [board] * 15 + [item] * 20 + [board] * 10
    summary, records = sort_frames(scene_config, colour_model_path, tmp_path / "sort.jsonl", frames)

    assert [(r["label"], r["bin"], r["settled"], r["reason"]) for r in records] == [("cardboard", "paper", True, "")]
    assert records[0]["frames_used"] == 3
    assert records[0]["reject_reasons"] == {"glare": 1}  # only the frame its clipping appeared on
