"""How presence looks at a frame: small colour views, differences that a shaking camera does not
fool, the light's gain, and whether a board with no reference looks empty.

Frames are compared at :data:`SMALL_SIZE`, in each colour channel (an orange item on a grey
board of the same brightness is still an item), in levels 0-255; the light's gain is measured
on their brightness. A camera that shakes by a pixel or two
moves every edge of a textured board or item by a fraction of a small pixel: a plain difference
calls those edges "changed" (2-8% of the board). :func:`shake_tolerant_diff` instead asks how far
each pixel lies outside the range of values the other view has within one small pixel around it
(the (2*SHAKE_RADIUS+1)^2 neighbourhood, +-4 px at 512x384): a shifted edge stays inside that
range, an item that appears or moves does not.
"""

from __future__ import annotations

import cv2
import numpy as np

from device.flatfield import fit_background

SMALL_SIZE = (128, 96)  # width, height of the views presence compares
SHAKE_RADIUS = 1  # small pixels of misregistration tolerated (1 = +-4 px at 512x384)
CLIPPED_GREY = 245  # brightness (small view) at which a pixel is taken for clipped
GAIN_RANGE = (0.4, 2.5)
PRIOR_WINDOW = 0.03  # log gain around the last gain that counts as the same light (+-3%)
PRIOR_MIN_SHARE = 0.02  # share of the pixels that must agree with the last gain to keep it  # light changes presence compensates (ratio of grey levels)
_KERNEL = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * SHAKE_RADIUS + 1, 2 * SHAKE_RADIUS + 1))
_LOG_BINS = np.linspace(np.log(GAIN_RANGE[0]), np.log(GAIN_RANGE[1]), 161)


def small_rgb(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, SMALL_SIZE, interpolation=cv2.INTER_AREA)


def to_small_view(image: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 RGB -> float32 RGB view at SMALL_SIZE, lightly blurred (sensor noise)."""
    return cv2.GaussianBlur(small_rgb(image), (3, 3), 0).astype(np.float32)


def brightness(view: np.ndarray) -> np.ndarray:
    """Grey levels of a small RGB view (float32)."""
    return cv2.cvtColor(view, cv2.COLOR_RGB2GRAY)


def relative_gain(view: np.ndarray, reference: np.ndarray, prior: float | None = None) -> float:
    """The light's gain from ``reference`` to ``view`` (small views). Clipped pixels (a white
    item, glare) say nothing about the light and are left out. With the last gain as ``prior``,
    the light is taken as unchanged (or drifting, +-PRIOR_WINDOW) as long as PRIOR_MIN_SHARE of
    the pixels still agree with it: an item covering most of the board is not taken for a
    change of light. Otherwise the light changed: the most common ratio of the pixels (the
    board's, even when an item covers half of it; a median would not be). In GAIN_RANGE."""
    view, reference = brightness(view), brightness(reference)
    usable = (view < CLIPPED_GREY) & (reference < CLIPPED_GREY)
    if usable.mean() < 0.1:
        usable = np.ones_like(usable)
    log_ratio = np.log((view[usable] + 1.0) / (reference[usable] + 1.0))
    if prior is not None:
        agree = log_ratio[np.abs(log_ratio - np.log(prior)) <= PRIOR_WINDOW]
        if agree.size >= PRIOR_MIN_SHARE * log_ratio.size:
            return float(np.clip(np.exp(np.median(agree)), *GAIN_RANGE))
    counts, edges = np.histogram(log_ratio, bins=_LOG_BINS)
    if counts.sum() == 0:  # every pixel outside the range: the frame is blown out or black
        return float(np.clip(np.exp(np.median(log_ratio)), *GAIN_RANGE))
    smooth = np.convolve(counts, np.ones(5), mode="same")
    peak = 0.5 * (edges[np.argmax(smooth)] + edges[np.argmax(smooth) + 1])
    near = log_ratio[np.abs(log_ratio - peak) <= 0.04]
    return float(np.exp(np.median(near))) if near.size else float(np.exp(peak))


def _outside_range(view: np.ndarray, other: np.ndarray) -> np.ndarray:
    """How far each pixel of ``view`` lies outside [min, max] of ``other`` around it."""
    low, high = cv2.erode(other, _KERNEL), cv2.dilate(other, _KERNEL)
    return np.maximum(low - view, view - high).clip(min=0.0)


def shake_tolerant_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel difference of two small views (HxW, largest over the channels) that ignores a
    shift of up to SHAKE_RADIUS small pixels between them (either way round)."""
    diff = np.maximum(_outside_range(a, b), _outside_range(b, a))
    return diff.max(axis=2) if diff.ndim == 3 else diff


def changed_mask(view: np.ndarray, reference: np.ndarray, level: float) -> np.ndarray:
    """Where ``view`` differs from ``reference`` by more than ``level`` levels (bool HxW)."""
    return shake_tolerant_diff(view, reference) > level


def board_deviation_share(image: np.ndarray, level: float) -> float:
    """Share of a frame that is not a smooth board: pixels further than ``level`` grey levels
    from a smooth surface fitted to the frame's border (the board under its light, with its
    vignetting). Used when there is no board reference to compare with: an empty board is
    close to 0, an item on it is not."""
    view = to_small_view(image)
    board = fit_background(small_rgb(image)).astype(np.float32)
    return float((shake_tolerant_diff(view, board) > level).mean())
