"""Exposure search: manual ExposureTime and AnalogueGain until the empty board hits the target.

Each step requests controls, then reads frames until the metadata shows them applied
(picamera2 applies new controls only some frames later), measures the board with
:func:`device.gate.measure` and proposes the next total exposure (``exposure_us * gain``)
from a gamma model of the camera (luma ~ exposure ** (1 / 2.2)). A bracket of the largest
exposure known too dark and the smallest known too bright keeps the search from oscillating:
a proposal outside it is replaced by the bracket's geometric mean. Exposure time is preferred
over gain (gain adds noise) up to ``max_exposure_us`` (longer blurs moving items).

White balance is measured once, on the first frame that is neither dark nor clipped: the board
is taken as neutral, and the red and blue gains that make its mean colour grey (in linear
light) are then kept fixed as ColourGains.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import numpy as np

from device.calibration_file.schema import ExposureTarget
from device.camera import ExposureControls, Frame
from device.errors import CalibrationError
from device.gamma import GAMMA
from device.gate import FrameStats, measure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExposureLimits:
    min_exposure_us: int = 100
    max_exposure_us: int = 30_000
    min_gain: float = 1.0
    max_gain: float = 8.0
    max_steps: int = 14  # exposure settings tried before giving up
    settle_frames: int = 12  # frames to wait for requested controls to show in the metadata


@dataclass(frozen=True)
class SearchStep:
    step: int
    controls: ExposureControls  # as applied (read back from the metadata)
    median_luma: float
    saturated_frac: float


@dataclass(frozen=True)
class SearchResult:
    controls: ExposureControls
    stats: FrameStats
    steps: tuple[SearchStep, ...]


def applied_controls(metadata: Mapping[str, Any], fallback: ExposureControls) -> ExposureControls:
    """The controls a frame was taken with, from picamera2-style metadata."""
    try:
        exposure_us = int(metadata.get("ExposureTime", fallback.exposure_us))
        gain = float(metadata.get("AnalogueGain", fallback.analogue_gain))
        red, blue = (float(g) for g in metadata.get("ColourGains", fallback.colour_gains))
    except (TypeError, ValueError):
        return fallback
    return ExposureControls(exposure_us, gain, (red, blue))


def _close(applied: ExposureControls, wanted: ExposureControls) -> bool:
    return (abs(applied.exposure_us - wanted.exposure_us) <= 0.03 * wanted.exposure_us + 50
            and abs(applied.analogue_gain - wanted.analogue_gain) <= 0.05 * wanted.analogue_gain + 0.07
            and all(abs(a - w) <= 0.02 * w + 0.01 for a, w in zip(applied.colour_gains, wanted.colour_gains)))


def apply_and_settle(camera: Any, controls: ExposureControls, max_frames: int) -> tuple[Frame, ExposureControls]:
    """Request ``controls``; the first frame taken with them and the values read back."""
    camera.set_controls(controls)
    applied = controls
    for _ in range(max_frames):
        frame = camera.capture()
        if frame is None:
            raise CalibrationError("camera source ended during the exposure search")
        applied = applied_controls(frame.metadata, controls)
        if _close(applied, controls):
            return frame, applied
    raise CalibrationError(
        f"camera did not apply ExposureTime={controls.exposure_us} AnalogueGain={controls.analogue_gain:.2f} "
        f"within {max_frames} frames (reads back {applied.exposure_us} us, gain {applied.analogue_gain:.2f})")


def linear_mean_rgb(image: np.ndarray, saturation_level: int = 250) -> np.ndarray:
    """Mean linear-light RGB of pixels neither clipped nor near black (all pixels if none)."""
    pixels = image.reshape(-1, 3)
    usable = (pixels.max(axis=1) < saturation_level) & (pixels.min(axis=1) > 8)
    if usable.sum() >= 0.01 * len(pixels):
        pixels = pixels[usable]
    return ((pixels.astype(np.float64) / 255.0) ** GAMMA).mean(axis=0)


def white_balance_gains(image: np.ndarray, current: tuple[float, float],
                        saturation_level: int = 250) -> tuple[float, float]:
    """ColourGains that make the (neutral) board grey, from a frame taken with ``current``."""
    r, g, b = np.maximum(linear_mean_rgb(image, saturation_level), 1e-6)
    red = float(np.clip(current[0] * g / r, 0.25, 8.0))
    blue = float(np.clip(current[1] * g / b, 0.25, 8.0))
    return round(red, 3), round(blue, 3)


def split_exposure(total: float, limits: ExposureLimits, colour_gains: tuple[float, float]) -> ExposureControls:
    """Exposure time first, then gain, for a total of ``exposure_us * gain``."""
    exposure_us = int(np.clip(total / limits.min_gain, limits.min_exposure_us, limits.max_exposure_us))
    gain = float(np.clip(total / exposure_us, limits.min_gain, limits.max_gain))
    return ExposureControls(exposure_us, round(gain, 3), colour_gains)


def _verdict(stats: FrameStats, target: ExposureTarget) -> int:
    """-1 too dark, 0 on target, +1 too bright."""
    if stats.saturated_frac >= target.max_saturated_frac or stats.median_luma > target.median_luma + target.tolerance:
        return 1
    if stats.median_luma < target.median_luma - target.tolerance:
        return -1
    return 0


def _factor(stats: FrameStats, target: ExposureTarget, verdict: int) -> float:
    if stats.median_luma >= 250 or stats.saturated_frac > 0.5:
        return 0.25
    if stats.median_luma < 3:
        return 8.0
    factor = float(np.clip((target.median_luma / stats.median_luma) ** GAMMA, 0.125, 8.0))
    return min(factor, 0.85) if verdict > 0 else max(factor, 1.15)


@dataclass
class _Bracket:
    """The largest total exposure known too dark and the smallest known too bright."""

    too_dark: float = 0.0
    too_bright: float = math.inf

    def note(self, verdict: int, total: float) -> None:
        if verdict > 0:
            self.too_bright = min(self.too_bright, total)
        elif verdict < 0:
            self.too_dark = max(self.too_dark, total)

    def keep_inside(self, wanted: float) -> float:
        """``wanted``, or the geometric mean of a closed bracket when it falls outside it."""
        if self.too_dark > 0 and self.too_bright < math.inf and not self.too_dark < wanted < self.too_bright:
            return math.sqrt(self.too_dark * self.too_bright)
        return wanted

    @property
    def closed_within_3_percent(self) -> bool:
        return self.too_bright < math.inf and self.too_bright / max(self.too_dark, 1e-9) < 1.03


def search_exposure(camera: Any, start: ExposureControls, target: ExposureTarget,
                    limits: ExposureLimits = ExposureLimits(), *, measure_white_balance: bool = True,
                    saturation_level: int = 250,
                    on_step: Callable[[SearchStep], None] | None = None) -> SearchResult:
    """Search controls that put the board on ``target``; CalibrationError if it cannot."""
    controls = split_exposure(start.exposure_us * start.analogue_gain, limits, start.colour_gains)
    bracket = _Bracket()  # of total exposures
    wb_done = not measure_white_balance
    steps: list[SearchStep] = []
    for number in range(1, limits.max_steps + 1):
        frame, applied = apply_and_settle(camera, controls, limits.settle_frames)
        stats = measure(frame.image, saturation_level)
        step = SearchStep(number, applied, stats.median_luma, stats.saturated_frac)
        steps.append(step)
        if on_step:
            on_step(step)
        total = applied.exposure_us * applied.analogue_gain
        if not wb_done and 60 <= stats.median_luma <= 235 and stats.saturated_frac < 0.05:
            wb_done = True
            gains = white_balance_gains(frame.image, applied.colour_gains, saturation_level)
            log.info("white balance measured: ColourGains red %.3f blue %.3f", *gains)
            if not _close(replace(applied, colour_gains=gains), applied):
                controls = replace(applied, colour_gains=gains)
                bracket = _Bracket()  # the level moves a little with the gains
                continue
        verdict = _verdict(stats, target)
        if verdict == 0 and wb_done:
            return SearchResult(applied, stats, tuple(steps))
        bracket.note(verdict, total)
        _refuse_unreachable(stats, target, limits, verdict, total, bracket)
        wanted = bracket.keep_inside(total * _factor(stats, target, verdict) if verdict else total)
        wanted = float(np.clip(wanted, limits.min_exposure_us * limits.min_gain,
                               limits.max_exposure_us * limits.max_gain))
        controls = split_exposure(wanted, limits, applied.colour_gains)
    last = steps[-1]
    raise CalibrationError(
        f"exposure search did not converge in {limits.max_steps} steps (last: {last.controls.exposure_us} us, "
        f"gain {last.controls.analogue_gain:.2f}, median luma {last.median_luma:.0f}, "
        f"{100 * last.saturated_frac:.2f}% saturated)")


def _refuse_unreachable(stats: FrameStats, target: ExposureTarget, limits: ExposureLimits, verdict: int,
                        total: float, bracket: _Bracket) -> None:
    """CalibrationError, saying what to change, when no exposure can put the board on target."""
    min_total = limits.min_exposure_us * limits.min_gain
    max_total = limits.max_exposure_us * limits.max_gain
    where = (f"median luma {stats.median_luma:.0f} (target {target.median_luma:.0f} ± {target.tolerance:.0f}), "
             f"{100 * stats.saturated_frac:.2f}% saturated (at most {100 * target.max_saturated_frac:.2f}%)")
    if verdict < 0 and total >= max_total * 0.98:
        raise CalibrationError(
            f"scene too dark: at the longest exposure ({limits.max_exposure_us} us) and highest gain "
            f"({limits.max_gain:g}) the empty board has {where}; add light or raise --max-exposure-us/--max-gain")
    if verdict > 0 and total <= min_total * 1.02:
        raise CalibrationError(
            f"scene too bright: at the shortest exposure ({limits.min_exposure_us} us) and gain "
            f"{limits.min_gain:g} the empty board has {where}; shade the board or lower the light")
    if stats.saturated_frac >= target.max_saturated_frac and stats.median_luma < target.median_luma - target.tolerance:
        raise CalibrationError(
            f"target unreachable: the empty board has {where}, so part of it clips before the board "
            f"is bright enough; glare or a reflective spot? Clear it, or relax --target-luma/--max-saturated")
    if bracket.closed_within_3_percent:
        raise CalibrationError(
            f"target unreachable: the empty board has {where} between two exposures 3% apart; "
            f"glare or a reflective spot on the board? Clear it, or relax --target-luma/--max-saturated")
