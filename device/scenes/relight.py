"""Put a photographed item on another board under another light, as a sorter's camera sees it.

Each photo's own background and light are fitted as a smooth surface from its border
(:func:`device.flatfield.fit_background`) and divided out; what matches that background is the
background (a soft mask), the rest is the item. The item, at its reflectance, is laid on a new
board and lit by a new light with vignetting, in linear light, then clipped as a sensor does.

Used by ``evaluate --relight`` (the device conditions a model is measured under), by training
(random boards and lights, so a model reads the item and not the backdrop) and by
``demo-scene`` (every item on one board under one light).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.contract import read_rgb
from device.flatfield import fit_background
from device.gamma import GAMMA

#: Reflectance assumed for a photo's own background (TrashNet: white poster board).
PHOTO_BOARD_ALBEDO = 0.85
#: A pixel whose ratio to the fitted background is within MASK_NEAR of 1 (every channel) is
#: background; beyond MASK_FAR it is item; in between it is blended.
MASK_NEAR, MASK_FAR = 0.07, 0.16


@dataclass(frozen=True)
class Condition:
    """A board and a light: ``board`` reflectance per RGB channel (0-1), ``light`` colour gains,
    ``level`` the light's intensity (1 = the camera's exposure for this board), ``vignette`` the
    fall-off at the corners (0 none, 0.4 = corners at 60% light), ``texture`` the board's."""

    name: str
    board: tuple[float, float, float]
    light: tuple[float, float, float] = (1.0, 1.0, 1.0)
    level: float = 1.0
    vignette: float = 0.3
    texture: float = 0.0  # the board's grain and blotches, relative (:func:`textured_board`); 0 = plain


GREY = (0.62, 0.62, 0.62)
#: The device conditions ``evaluate --relight`` knows (the photos themselves are "photo").
CONDITIONS: dict[str, Condition] = {
    "grey": Condition("grey", GREY),
    "warm": Condition("warm", GREY, light=(1.0, 0.78, 0.52)),  # tungsten-like, about 3000 K
    "dim": Condition("dim", GREY, level=0.6),
    "green": Condition("green", (0.30, 0.52, 0.36)),  # a green cutting mat
    "textured": Condition("textured", GREY, texture=0.06),  # grain and blotches, as the scenes' board
}


def to_linear(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) / 255.0) ** GAMMA


def to_uint8(linear: np.ndarray) -> np.ndarray:
    return (np.clip(linear, 0.0, 1.0) ** (1.0 / GAMMA) * 255.0 + 0.5).astype(np.uint8)


def textured_board(size: tuple[int, int], seed: int = 0, albedo=(0.5, 0.5, 0.48), texture: float = 0.06) -> np.ndarray:
    """A board of ``size`` (width, height) with a fine grain and a blotchy texture of relative
    strength ``texture`` around ``albedo`` (linear albedo, HxWx3), drawn from ``seed``."""
    w, h = size
    rng = np.random.default_rng(seed)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.2)
    blotches = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 8)
    pattern = grain / grain.std() + 0.7 * blotches / blotches.std()
    return (np.asarray(albedo, np.float32)[None, None] * (1 + texture * pattern[..., None])).clip(0.01, 1)


def vignette_field(height: int, width: int, strength: float) -> np.ndarray:
    """HxW light fall-off: 1 in the centre, 1 - strength in the corners."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((xx + 0.5) / width * 2 - 1) ** 2 + ((yy + 0.5) / height * 2 - 1) ** 2
    return 1.0 - strength * r2 / 2.0


@dataclass(frozen=True)
class Cutout:
    """A photo taken apart: the item's reflectance (linear, HxWx3) and how much of each pixel is
    the photo's own background (HxW, 0-1)."""

    reflectance: np.ndarray
    background: np.ndarray


def cut_out(rgb: np.ndarray) -> Cutout:
    """Divide a photo's fitted background out of it and find where that background shows."""
    surface = fit_background(rgb)
    ratio = rgb.astype(np.float32) / surface
    deviation = np.abs(ratio - 1.0).max(axis=2)
    mask = np.clip((MASK_FAR - deviation) / (MASK_FAR - MASK_NEAR), 0.0, 1.0)
    mask = cv2.GaussianBlur(mask, (0, 0), 1.5)
    reflectance = np.clip(ratio, 0.0, None) ** GAMMA * PHOTO_BOARD_ALBEDO
    return Cutout(reflectance.astype(np.float32), mask.astype(np.float32))


def lay_on_board(cut: Cutout, board: np.ndarray) -> np.ndarray:
    """Linear HxWx3 albedo: the item where the photo showed an item, ``board`` (HxWx3 or 3)
    where it showed its own background."""
    m = cut.background[..., None]
    return m * np.asarray(board, np.float32) + (1.0 - m) * cut.reflectance


def illumination(height: int, width: int, light: tuple[float, float, float], level: float,
                 vignette: float) -> np.ndarray:
    """HxWx3 linear light falling on the board: colour ``light`` at ``level``, with vignetting."""
    return vignette_field(height, width, vignette)[..., None] * (level * np.asarray(light, np.float32))


def light_up(albedo: np.ndarray, light: tuple[float, float, float], level: float,
             vignette: float) -> np.ndarray:
    """uint8 RGB of a linear albedo under a light with vignetting, clipped as a sensor does."""
    return to_uint8(albedo * illumination(*albedo.shape[:2], light, level, vignette))


def relight(rgb: np.ndarray, condition: Condition, board: np.ndarray | None = None) -> np.ndarray:
    """The item of an HxWx3 uint8 photo on ``condition``'s board under its light (uint8 RGB);
    ``board`` (linear albedo, HxWx3 or 3) lays it on that board instead."""
    if board is None:
        board = (textured_board(rgb.shape[1::-1], albedo=condition.board, texture=condition.texture)
                 if condition.texture else condition.board)
    albedo = lay_on_board(cut_out(rgb), board)
    return light_up(albedo, condition.light, condition.level, condition.vignette)


#: The camera's frame shape (width / height). A photo within FRAME_ASPECT_TOLERANCE of it, or of
#: it turned upright (TrashNet's 384x512 photos), is a camera frame: the contract stretches it
#: to the model's input as every model, scene and evaluation here always has.
FRAME_ASPECT, FRAME_ASPECT_TOLERANCE = 4 / 3, 0.02


def is_frame_shaped(width: int, height: int) -> bool:
    """Whether a photo of ``width`` x ``height`` has a camera frame's shape, either way up."""
    return any(abs(aspect - FRAME_ASPECT) <= FRAME_ASPECT_TOLERANCE * FRAME_ASPECT
               for aspect in (width / height, height / width))


def frame_shaped(rgb: np.ndarray) -> np.ndarray:
    """A photo of another shape than a camera frame (a square web photo, a tall bottle) with its
    item laid, at its size, in the middle of a 4:3 board of the photo's own background (its
    fitted light divided out, the board at :data:`PHOTO_BOARD_ALBEDO`): what a camera above a
    board would see, instead of the item stretched. A camera frame's shape
    (:func:`is_frame_shaped`) is returned as it is."""
    h, w = rgb.shape[:2]
    if is_frame_shaped(w, h):
        return rgb
    out_w, out_h = (w, round(w / FRAME_ASPECT)) if w / h > FRAME_ASPECT else (round(h * FRAME_ASPECT), h)
    top, left = (out_h - h) // 2, (out_w - w) // 2
    cut = cut_out(rgb)
    reflectance = np.full((out_h, out_w, 3), PHOTO_BOARD_ALBEDO, np.float32)
    background = np.ones((out_h, out_w), np.float32)
    reflectance[top:top + h, left:left + w] = cut.reflectance
    background[top:top + h, left:left + w] = cut.background
    return to_uint8(lay_on_board(Cutout(reflectance, background), PHOTO_BOARD_ALBEDO))


def read_frame_shaped(path: str) -> np.ndarray:
    """A photo from disk as a model is given it in training, evaluation and calibration: uint8
    RGB, laid on a 4:3 board where it is not a camera frame's shape (:func:`frame_shaped`)."""
    return frame_shaped(read_rgb(path))


def random_condition(rng: np.random.Generator) -> Condition:
    """A board and light drawn for training: boards from dark grey to near white in any hue,
    light from candle-warm to cool daylight, dim to bright, with or without vignetting."""
    lightness = rng.uniform(0.3, 0.9)
    hue_tint = rng.uniform(0.55, 1.0, size=3) if rng.random() < 0.6 else np.ones(3)
    board = tuple(float(v) for v in np.clip(lightness * hue_tint / hue_tint.max(), 0.03, 0.95))
    warmth = rng.uniform(-0.25, 0.5)  # > 0 warm (less blue), < 0 cool (less red)
    light = (1.0 - max(0.0, -warmth), 1.0 - 0.45 * abs(warmth), 1.0 - max(0.0, warmth))
    light = tuple(float(v * rng.uniform(0.92, 1.08)) for v in light)
    return Condition("random", board, light, level=float(rng.uniform(0.45, 1.5)),
                     vignette=float(rng.uniform(0.0, 0.5)))
