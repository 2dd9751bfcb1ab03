"""The exposure gate on real TrashNet photos, on broken frames, and on bright items against glare."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from device.contract import read_rgb
from device.commands.demo_scene import expose, make_board
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


# -- bright items and glare, once presence says where the item is ----------------------------
ITEM_BOX = (140, 90, 380, 290)  # x0, y0, x1, y1 of a 240 x 200 item in the 512 x 384 frame


def pale_item(board: np.ndarray, clipped_box=(190, 125, 320, 250)) -> np.ndarray:
    """A pale red item whose own pixels clip (white) on ``clipped_box`` (a third of it)."""
    image = board.copy()
    x0, y0, x1, y1 = ITEM_BOX
    image[y0:y1, x0:x1] = (235, 120, 120)
    x0, y0, x1, y1 = clipped_box
    image[y0:y1, x0:x1] = 255
    return image


def item_mask() -> np.ndarray:
    """Presence's changed region for ITEM_BOX, at the gate's MASK_SIZE (128 x 96)."""
    mask = np.zeros((96, 128), bool)
    x0, y0, x1, y1 = (v // 4 for v in ITEM_BOX)
    mask[y0:y1, x0:x1] = True
    return mask


def test_an_item_whose_own_pixels_clip_in_the_same_place_is_not_glare(gate):
    board = make_board()
    item = pale_item(board)
    assert gate.check(item).reason == "glare"  # without an item mask: clipping in the middle
    fresh = ExposureGate(GateThresholds(), board_stats(board), board_image=board)
    verdicts = [fresh.check(item, item_mask=item_mask()) for _ in range(3)]
    assert [v.reason for v in verdicts] == ["glare", "", ""]  # the frame its clipping appears on, then item


def test_a_highlight_that_moves_over_the_item_is_glare():
    board = make_board()
    gate = ExposureGate(GateThresholds(), board_stats(board), board_image=board)
    item = pale_item(board, clipped_box=(0, 0, 0, 0))
    reasons = []
    for x in (160, 230, 300, 230):  # a specular highlight sweeping over the item, then gone
        frame = item.copy()
        cv2.ellipse(frame, (x, 190), (45, 35), 0, 0, 360, (255, 255, 255), -1)
        reasons.append(gate.check(frame, item_mask=item_mask()).reason)
    reasons.append(gate.check(item, item_mask=item_mask()).reason)
    assert reasons == ["glare", "glare", "glare", "glare", ""]


def test_an_item_blown_out_on_most_of_it_and_a_flash_are_overexposed():
    board = make_board()
    gate = ExposureGate(GateThresholds(), board_stats(board), board_image=board)
    blown = pale_item(board, clipped_box=(145, 95, 375, 285))  # 90% of the item clips
    assert [gate.check(blown, item_mask=item_mask()).reason for _ in range(2)] == ["glare", "overexposed"]
    flash = expose(pale_item(board), 4.0)  # the whole frame, board and all
    assert gate.check(flash, item_mask=item_mask()).reason == "overexposed"
