"""The exposure gate on real TrashNet photos and on broken frames."""

from __future__ import annotations

import numpy as np
import pytest

from device.contract import read_rgb
from device.demo_scene import expose, make_board
from device.gate import ExposureGate, GateThresholds, board_stats


@pytest.fixture
def gate() -> ExposureGate:
    return ExposureGate(GateThresholds(), board_stats(make_board()))


@pytest.mark.parametrize("photo", ["glass/glass445.jpg", "cardboard/cardboard168.jpg", "metal/metal14.jpg",
                                   "paper/paper1.jpg", "plastic/plastic1.jpg"])
def test_a_partly_clipped_white_board_is_not_overexposed(gate, trashnet, photo):
    # glass445: 40% of its pixels are clipped, all of them board; the bottle is well exposed
    assert gate.check(read_rgb(str(trashnet / photo))).accepted


@pytest.mark.parametrize("photo", ["glass/glass454.jpg", "cardboard/cardboard205.jpg"])
def test_badly_overexposed_photos_are_rejected(gate, trashnet, photo):
    verdict = gate.check(read_rgb(str(trashnet / photo)))
    assert (verdict.accepted, verdict.reason) == (False, "overexposed")


def test_exposure_and_darkness_against_the_board(gate):
    board = make_board()
    assert gate.check(board).accepted
    assert gate.check(expose(board, 1.3)).accepted  # brighter, still inside the margins
    assert not gate.check(expose(board, 1.6)).accepted  # the middle of the board clips
    assert gate.check(expose(board, 4.0)).reason == "overexposed"
    assert gate.check(expose(board, 0.05)).reason == "too_dark"
    glare = board.copy()
    glare[120:250, 150:350] = 255  # a highlight in the middle, where items lie
    assert gate.check(glare).reason == "glare"
    corner = board.copy()
    corner[0:150, 0:200] = 255  # the board's corner clipped: not glare, not overexposed
    assert gate.check(corner).accepted


def test_broken_frames_are_results_with_reasons(gate):
    board = make_board()
    assert gate.check(board[:, :, 0]).reason == "bad_shape"
    assert gate.check(board.astype(np.uint16)).reason == "bad_dtype"
    nan = board.astype(np.float32)
    nan[0, 0, 0] = np.nan
    assert gate.check(nan).reason == "non_finite"
    assert ExposureGate(GateThresholds(), expected_hw=(10, 10)).check(board).reason == "bad_shape"
