"""Board normalisation: take the board and the light out of a picture, the same way everywhere.

A sorter sees every item on one board under one light; the photos it was trained on were taken
on many backgrounds under many lights. :func:`flatten_board` estimates the background (board x
light, with its vignetting and colour cast) as a smooth surface fitted to the picture's border,
divides it out and scales the result so the board reads :data:`CANONICAL_BOARD` in every
channel: flat field and white balance in one step. Items are judged against their board, not
the board against other boards.

The model contract (:mod:`device.contract`) names this step (``flatfield = "border"``); the
device runs it on each frame before classifying, training and ``evaluate`` run it on each photo:
one function for all three.
"""

from __future__ import annotations

import cv2
import numpy as np

#: The board fit is made on a picture this small (width, height): cheap, and the same whatever
#: the input size.
FIT_SIZE = (64, 48)
#: Width of the border ring the board is fitted to, in pixels of FIT_SIZE.
BORDER_PX = 5
#: Share of the ring's pixels kept for the final fit (the rest, an item touching the edge or a
#: highlight, is trimmed away as outliers).
KEEP_FRAC = 0.7
#: Fits made, each on the ring pixels closest to the one before (the first: to the ring's median).
FIT_ROUNDS = 3
#: The level (0-255, every channel) the board reads after normalisation: room above it for items
#: brighter than their board (a white item on a mid-grey board is about 1.5x the board).
CANONICAL_BOARD = 160.0


def _design(width: int, height: int) -> np.ndarray:
    """Quadratic surface terms (1, x, y, x^2, xy, y^2) on a width x height grid, x and y in [-1, 1]."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    x = (xx + 0.5) / width * 2 - 1
    y = (yy + 0.5) / height * 2 - 1
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1)


_SMALL_DESIGN = _design(*FIT_SIZE)
_RING = np.ones(FIT_SIZE[::-1], dtype=bool)
_RING[BORDER_PX:-BORDER_PX, BORDER_PX:-BORDER_PX] = False


def fit_background(rgb: np.ndarray) -> np.ndarray:
    """The board x light under an HxWx3 uint8 picture: float32 HxWx3, >= 1, fitted to its border.

    A quadratic surface in log intensity per channel (vignetting, a light from one side, a
    colour cast), fitted to the outer ring's pixels that agree best with the fit before (an item
    lying across an edge, a highlight are left out).
    """
    small = cv2.resize(rgb, FIT_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
    logs = np.log1p(small)
    a = _SMALL_DESIGN[_RING]
    b = logs[_RING]
    estimate = np.median(b, axis=0)  # first guess: a flat board, robust to an item on one side
    for _ in range(FIT_ROUNDS):
        residual = np.abs(estimate - b).sum(axis=1)
        keep = residual <= np.quantile(residual, KEEP_FRAC)
        coeffs = np.linalg.lstsq(a[keep], b[keep], rcond=None)[0]
        estimate = a @ coeffs
    surface = np.expm1(_SMALL_DESIGN @ coeffs)
    height, width = rgb.shape[:2]
    surface = cv2.resize(surface, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.maximum(surface, 1.0)


def flatten_board(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> HxWx3 uint8 RGB with the board at :data:`CANONICAL_BOARD` everywhere."""
    flat = rgb.astype(np.float32) * (CANONICAL_BOARD / fit_background(rgb))
    return np.clip(flat + 0.5, 0, 255).astype(np.uint8)
