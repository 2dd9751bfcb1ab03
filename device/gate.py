"""The exposure gate: every frame is checked before it is used.

A frame is rejected, with a reason, when it is structurally unusable (shape, dtype, non-finite
values), too dark, overexposed or shows glare. Exposure is judged against the empty board
(:class:`BoardStats`, from the calibration or learned at start-up): a near-white board that is
partly clipped on its own is the normal scene, not an overexposed one.

Bright items are items, glare is glare. When presence says where the item is (``item_mask``,
the changed region), exposure is judged on the board around the item, and clipping is glare
when it appeared or moved since the last frame (anywhere), or lies in the middle of the frame
but off the item: a white item whose own pixels clip, in the same place frame after frame, is
classified as long as it clips on at most MAX_ITEM_CLIPPED_FRAC of its area. A flash clips the
board too (overexposed). The gate keeps the previous frame's clipped pixels for that
comparison, so one gate judges one camera's frames, in order. Without an item mask (no board
reference yet) glare is clipping in the middle of the frame, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from device.schema import spec

GRID = 4  # clipped pixels are counted in GRID x GRID cells; glare in the central ones
MASK_SIZE = (128, 96)  # width, height of the clipped mask and luma view (presence's view size)
MAX_ITEM_CLIPPED_FRAC = 0.75  # an item clipped on more of its area is overexposed
FRESH_CLIP_GLARE_FRAC = 0.01  # share of the frame newly clipped since the last frame (+-1 px) that is glare
MIN_CLIP_INSIDE_FRAC = 0.9  # share of newly clipped pixels that must lie on the item
MAX_ITEM_MASK_FRAC = 0.75  # an item mask covering more than this gives no board to judge by
_NEAR = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))


@dataclass(frozen=True)
class GateThresholds:
    """The config's ``[gate]`` and the calibration file's ``gate`` object (same ranges)."""

    saturation_level: int = spec(250, range=(128, 255))  # a pixel whose brightest channel reaches this is clipped
    max_extra_saturated_frac: float = spec(0.45, range=(0.01, 1))  # clipped fraction above the board's that rejects
    max_level_rise: float = spec(55.0, range=(1, 255))  # median luma above the board's that rejects (0-255 levels)
    max_glare_center_frac: float = spec(0.30, range=(0.05, 1))  # newly clipped share of the board's central half: glare
    min_median_luma: float = spec(20.0, range=(0, 200))  # darker frames are unusable
    min_level_ratio: float = spec(0.35, range=(0, 1))  # median luma below this share of the board's is too dark


@dataclass(frozen=True)
class BoardStats:
    """Exposure statistics of the empty board the gate judges frames against."""

    median_luma: float = spec(190.0, range=(0, 255))
    saturated_frac: float = spec(0.0, range=(0, 1))
    cell_saturated_frac: tuple[float, ...] = spec((0.0,) * (GRID * GRID), range=(0, 1), length=GRID * GRID)


@dataclass(frozen=True)
class FrameStats:
    median_luma: float
    saturated_frac: float
    cell_saturated_frac: tuple[float, ...]
    #: MASK_SIZE views: grey levels (uint8) and clipped pixels (bool)
    luma: np.ndarray | None = field(default=None, compare=False, repr=False)
    clipped: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class GateVerdict:
    accepted: bool
    reason: str  # "" when accepted, else one of REASONS
    stats: FrameStats | None


REASONS = ("bad_shape", "bad_dtype", "non_finite", "too_dark", "overexposed", "glare")


def center_frac(cells: tuple[float, ...]) -> float:
    """Clipped share of the central half (width and height) of the frame, where items lie."""
    grid = np.asarray(cells).reshape(GRID, GRID)
    return float(grid[GRID // 4:GRID - GRID // 4, GRID // 4:GRID - GRID // 4].mean())


def check_structure(image: object, expected_hw: tuple[int, int] | None = None) -> str:
    """'' for a uint8 HxWx3 image (of ``expected_hw`` when given), else the reason."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        return "bad_shape"
    if expected_hw is not None and image.shape[:2] != tuple(expected_hw):
        return "bad_shape"
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
            return "non_finite"
        return "bad_dtype"
    return ""


def measure(image: np.ndarray, saturation_level: int = 250) -> FrameStats:
    """Median luma and clipped-pixel fractions (whole frame and per grid cell), with the
    MASK_SIZE luma and clipped views."""
    small = cv2.resize(image, MASK_SIZE, interpolation=cv2.INTER_AREA)
    luma = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    r, g, b = cv2.split(image)
    brightest = cv2.max(cv2.max(r, g), b)
    _, clipped = cv2.threshold(brightest, saturation_level - 1, 255, cv2.THRESH_BINARY)  # 0 or 255
    cells = cv2.resize(clipped.astype(np.float32), (GRID, GRID), interpolation=cv2.INTER_AREA) / 255.0
    clipped_small = cv2.resize(clipped, MASK_SIZE, interpolation=cv2.INTER_AREA) > 127
    return FrameStats(float(np.median(luma)), cv2.countNonZero(clipped) / clipped.size,
                      tuple(float(v) for v in cells.ravel()), luma, clipped_small)


def board_stats(board: np.ndarray, saturation_level: int = 250) -> BoardStats:
    s = measure(board, saturation_level)
    return BoardStats(s.median_luma, s.saturated_frac, s.cell_saturated_frac)


class ExposureGate:
    def __init__(self, thresholds: GateThresholds, board: BoardStats | None = None,
                 expected_hw: tuple[int, int] | None = None, board_image: np.ndarray | None = None):
        """``board_image`` (the empty board, when known) tells the board's own clipped pixels
        from an item's."""
        self.thresholds = thresholds
        self.board = board or BoardStats()
        self.expected_hw = expected_hw
        self._board_clipped = None if board_image is None else measure(board_image, thresholds.saturation_level).clipped
        self._last_clipped: np.ndarray | None = None  # newly clipped pixels of the last frame

    def check(self, image: np.ndarray, item_mask: np.ndarray | None = None) -> GateVerdict:
        """Judge one frame; ``item_mask`` (MASK_SIZE bool, from presence) is where an item is."""
        reason = check_structure(image, self.expected_hw)
        if reason:
            return GateVerdict(False, reason, None)
        t, b = self.thresholds, self.board
        s = measure(image, t.saturation_level)
        clipped = s.clipped if self._board_clipped is None else s.clipped & ~self._board_clipped
        last, self._last_clipped = self._last_clipped, clipped
        if item_mask is not None and not item_mask.any():
            item_mask = None
        if item_mask is None or item_mask.mean() > MAX_ITEM_MASK_FRAC:  # no board left to judge by
            level, saturated = s.median_luma, s.saturated_frac
        else:  # judge the exposure on the board around the item
            board_part = ~cv2.dilate(item_mask.astype(np.uint8), _NEAR).astype(bool)
            level, saturated = float(np.median(s.luma[board_part])), float(s.clipped[board_part].mean())
        if level < max(t.min_median_luma, t.min_level_ratio * b.median_luma):
            reason = "too_dark"
        elif (saturated > b.saturated_frac + t.max_extra_saturated_frac
              or (b.median_luma + t.max_level_rise < 255 and level > b.median_luma + t.max_level_rise)):
            reason = "overexposed"
        elif _glare(center_frac(s.cell_saturated_frac) - center_frac(b.cell_saturated_frac) > t.max_glare_center_frac,
                    clipped, last, item_mask):
            reason = "glare"
        elif item_mask is not None and _item_clipped_frac(clipped, item_mask) > MAX_ITEM_CLIPPED_FRAC:
            reason = "overexposed"  # the item itself is blown out
        return GateVerdict(not reason, reason, s)


def _item_clipped_frac(clipped: np.ndarray, item_mask: np.ndarray) -> float:
    """Clipped share of the item: its changed region and the newly clipped pixels touching it
    (a blown-out part of a white item may differ little from a bright board)."""
    near = cv2.dilate(item_mask.astype(np.uint8), _NEAR).astype(bool)
    item_clipped = clipped & near
    return float(item_clipped.sum() / max(1, (item_mask | item_clipped).sum()))


def _fresh_clipping(clipped: np.ndarray, last: np.ndarray | None) -> float:
    """Share of the frame where clipping appeared since the last frame: where the density of
    clipped pixels (3x3) rose by more than a half over the last frame's within a pixel (so
    pixels flickering about the clipping level under sensor noise, or shifted by shake, are
    not fresh)."""
    density = cv2.blur(clipped.astype(np.float32), (3, 3))
    before = 0.0 if last is None else cv2.dilate(cv2.blur(last.astype(np.float32), (3, 3)), _NEAR)
    return float(((density - before) > 0.5).mean())


def _share_near(pixels: np.ndarray, region: np.ndarray) -> float:
    """Share of ``pixels`` (bool) within one pixel of ``region`` (bool); 1.0 when there are none."""
    count = int(pixels.sum())
    if count == 0:
        return 1.0
    near = cv2.dilate(region.astype(np.uint8), _NEAR).astype(bool)
    return float((pixels & near).sum() / count)


def _glare(central: bool, clipped: np.ndarray, last: np.ndarray | None, item_mask: np.ndarray | None) -> bool:
    """Glare: newly clipped pixels in the middle of the frame (``central``) that are not an
    item's own, or, once presence knows where the item is, clipping that appeared or moved since
    the last frame anywhere (more than FRESH_CLIP_GLARE_FRAC of the frame). An item's own
    clipping is the same as in the last frame (+-1 pixel of shake) and lies on the item."""
    if item_mask is None:
        return central
    if _fresh_clipping(clipped, last) > FRESH_CLIP_GLARE_FRAC:
        return True
    return central and _share_near(clipped, item_mask) < MIN_CLIP_INSIDE_FRAC
