"""The exposure gate: every frame is checked before it is used.

A frame is rejected, with a reason, when it is structurally unusable (shape, dtype, non-finite
values), too dark, overexposed or shows glare. Exposure is judged against the empty board
(:class:`BoardStats`, from the calibration or learned at start-up): a near-white board that is
partly clipped on its own is the normal scene, not an overexposed one.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

GRID = 4  # clipped pixels are counted in GRID x GRID cells; glare in the central ones


@dataclass(frozen=True)
class GateThresholds:
    saturation_level: int = 250  # a pixel whose brightest channel reaches this is clipped
    max_extra_saturated_frac: float = 0.45  # clipped fraction above the board's that rejects
    max_level_rise: float = 55.0  # median luma above the board's that rejects (0-255 levels)
    max_glare_center_frac: float = 0.30  # newly clipped share of the board's central half that is glare
    min_median_luma: float = 20.0  # darker frames are unusable
    min_level_ratio: float = 0.35  # median luma below this share of the board's is too dark


#: Allowed range (inclusive) of each threshold: one table for the config's ``[gate]`` and the
#: calibration file's ``gate`` object.
THRESHOLD_RANGES: dict[str, tuple[float, float]] = {
    "saturation_level": (128, 255), "max_extra_saturated_frac": (0.01, 1), "max_level_rise": (1, 255),
    "max_glare_center_frac": (0.05, 1), "min_median_luma": (0, 200), "min_level_ratio": (0, 1),
}


@dataclass(frozen=True)
class BoardStats:
    """Exposure statistics of the empty board the gate judges frames against."""

    median_luma: float = 190.0
    saturated_frac: float = 0.0
    cell_saturated_frac: tuple[float, ...] = (0.0,) * (GRID * GRID)


@dataclass(frozen=True)
class FrameStats:
    median_luma: float
    saturated_frac: float
    cell_saturated_frac: tuple[float, ...]


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
    """Median luma and clipped-pixel fractions (whole frame and per grid cell)."""
    small = cv2.resize(image, (128, 96), interpolation=cv2.INTER_AREA)
    luma = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    r, g, b = cv2.split(image)
    brightest = cv2.max(cv2.max(r, g), b)
    _, clipped = cv2.threshold(brightest, saturation_level - 1, 255, cv2.THRESH_BINARY)  # 0 or 255
    cells = cv2.resize(clipped.astype(np.float32), (GRID, GRID), interpolation=cv2.INTER_AREA) / 255.0
    return FrameStats(float(np.median(luma)), cv2.countNonZero(clipped) / clipped.size,
                      tuple(float(v) for v in cells.ravel()))


def board_stats(board: np.ndarray, saturation_level: int = 250) -> BoardStats:
    s = measure(board, saturation_level)
    return BoardStats(s.median_luma, s.saturated_frac, s.cell_saturated_frac)


class ExposureGate:
    def __init__(self, thresholds: GateThresholds, board: BoardStats | None = None,
                 expected_hw: tuple[int, int] | None = None):
        self.thresholds = thresholds
        self.board = board or BoardStats()
        self.expected_hw = expected_hw

    def check(self, image: np.ndarray) -> GateVerdict:
        reason = check_structure(image, self.expected_hw)
        if reason:
            return GateVerdict(False, reason, None)
        t, b = self.thresholds, self.board
        s = measure(image, t.saturation_level)
        if s.median_luma < max(t.min_median_luma, t.min_level_ratio * b.median_luma):
            reason = "too_dark"
        elif (s.saturated_frac > b.saturated_frac + t.max_extra_saturated_frac
              or (b.median_luma + t.max_level_rise < 255 and s.median_luma > b.median_luma + t.max_level_rise)):
            reason = "overexposed"
        elif center_frac(s.cell_saturated_frac) - center_frac(b.cell_saturated_frac) > t.max_glare_center_frac:
            reason = "glare"
        return GateVerdict(not reason, reason, s)
