"""The empty-board reference, the gate thresholds derived from it, and drift against it.

The reference is the per-pixel median of N frames (noise and a passing hand drop out). The
gate's thresholds start from the configured ones and adapt to the board: the level rise that
means "overexposed" must fit below 255 (a board at 230 cannot rise by 50) yet stay well above
the frame-to-frame noise of the level, and the extra clipped fraction stays above the
board's own clipping noise.

Drift (``waste-sorter calibrate --check``) compares the current empty scene with the
reference: median luma (level), clipped fraction (saturation) and the red/green and
blue/green ratios of the board's mean colour in linear light (colour). The exit code is
``8 + flags`` (level 1, saturation 2, colour 4), so 9 to 15 mean drift, 0 none.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from calibration.exposure import linear_mean_rgb
from device.calibration_file.schema import Calibration
from device.errors import CalibrationError
from device.gamma import GAMMA
from device.gate import BoardStats, FrameStats, GateThresholds, board_stats, check_structure, measure

log = logging.getLogger(__name__)

DRIFT_BASE = 8
DRIFT_LEVEL, DRIFT_SATURATION, DRIFT_COLOUR = 1, 2, 4


@dataclass(frozen=True)
class Reference:
    image: np.ndarray  # uint8 HxWx3 RGB, per-pixel median
    board: BoardStats
    mean_rgb: tuple[float, float, float]  # of unclipped pixels, 0-255 (display levels)
    frame_stats: tuple[FrameStats, ...]  # of each frame, for the noise of the level


def capture_frames(camera: Any, count: int) -> list[np.ndarray]:
    """Up to ``count`` frames (fewer at the end of a recorded source, at least one)."""
    images: list[np.ndarray] = []
    shape = None
    while len(images) < count:
        frame = camera.capture()
        if frame is None:
            break
        if check_structure(frame.image):
            raise CalibrationError(f"camera delivered an unusable frame ({check_structure(frame.image)})")
        if shape is not None and frame.image.shape != shape:
            raise CalibrationError(f"frame size changed from {shape[1]}x{shape[0]} during the capture")
        shape = frame.image.shape
        images.append(frame.image)
    if not images:
        raise CalibrationError("camera source delivered no frames for the board reference")
    if len(images) < count:
        log.warning("source ended after %d of %d frames; the reference uses those", len(images), count)
    return images


def make_reference(images: list[np.ndarray], saturation_level: int = 250) -> Reference:
    stack = np.stack(images)
    median = np.median(stack, axis=0) if len(images) > 1 else stack[0]
    image = np.ascontiguousarray(np.round(median).astype(np.uint8))
    mean = linear_mean_rgb(image, saturation_level) ** (1 / GAMMA) * 255
    return Reference(image, board_stats(image, saturation_level), tuple(float(v) for v in mean),
                     tuple(measure(im, saturation_level) for im in images))


def derive_gate(base: GateThresholds, reference: Reference) -> GateThresholds:
    """Gate thresholds fitted to the board (see the module docstring)."""
    board = reference.board
    levels = [s.median_luma for s in reference.frame_stats]
    sats = [s.saturated_frac for s in reference.frame_stats]
    level_noise = float(np.std(levels)) if len(levels) > 1 else 1.0
    headroom = 255.0 - board.median_luma
    rise = min(base.max_level_rise, max(0.6 * headroom, 8 * level_noise, 3.0))
    extra = max(base.max_extra_saturated_frac, 10 * float(np.std(sats)) if len(sats) > 1 else 0.0)
    extra = min(extra, max(0.05, 1.0 - board.saturated_frac - 0.05))
    return replace(base, max_level_rise=round(float(rise), 2), max_extra_saturated_frac=round(float(extra), 4))


@dataclass(frozen=True)
class DriftLimits:
    level: float = 15.0  # median luma levels
    saturated_frac: float = 0.005  # clipped fraction above the reference's
    colour: float = 0.08  # relative change of the red/green or blue/green ratio


@dataclass(frozen=True)
class Drift:
    level_delta: float
    saturated_frac: float
    colour_delta: float
    flags: int

    @property
    def exit_code(self) -> int:
        return DRIFT_BASE + self.flags if self.flags else 0

    def describe(self, calibration: Calibration, limits: DriftLimits) -> str:
        def mark(flag: int) -> str:
            return "DRIFT" if self.flags & flag else "ok"
        return (f"level {mark(DRIFT_LEVEL)}: median luma {calibration.board.median_luma + self.level_delta:.1f} "
                f"vs {calibration.board.median_luma:.1f} ({self.level_delta:+.1f}, limit ±{limits.level:g}); "
                f"saturation {mark(DRIFT_SATURATION)}: {100 * self.saturated_frac:.2f}% clipped vs "
                f"{100 * calibration.board.saturated_frac:.2f}% (limit +{100 * limits.saturated_frac:.2f}%); "
                f"colour {mark(DRIFT_COLOUR)}: {100 * self.colour_delta:.1f}% (limit {100 * limits.colour:.0f}%)")


def _chroma(mean_rgb: tuple[float, float, float] | np.ndarray) -> tuple[float, float]:
    r, g, b = (max((float(v) / 255.0) ** GAMMA, 1e-6) for v in mean_rgb)
    return r / g, b / g


def assess_drift(calibration: Calibration, reference: Reference, limits: DriftLimits = DriftLimits()) -> Drift:
    level_delta = reference.board.median_luma - calibration.board.median_luma
    saturated = reference.board.saturated_frac
    (r0, b0), (r1, b1) = _chroma(calibration.board_mean_rgb), _chroma(reference.mean_rgb)
    colour = max(abs(math.log(r1 / r0)), abs(math.log(b1 / b0)))
    flags = 0
    if abs(level_delta) > limits.level:
        flags |= DRIFT_LEVEL
    if saturated > calibration.board.saturated_frac + limits.saturated_frac:
        flags |= DRIFT_SATURATION
    if colour > limits.colour:
        flags |= DRIFT_COLOUR
    return Drift(float(level_delta), float(saturated), float(colour), flags)
