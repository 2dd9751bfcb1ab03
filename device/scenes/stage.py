"""The stage a scene is filmed on: one board (linear albedo) under one light.

A plain stage renders a uint8 board image as it is (its items are full frames on it); the
demo's stage is a textured mid-grey board under neutral light with some vignetting, or the
board and light of one of :data:`device.scenes.relight.CONDITIONS`. A scene's truth file
records its stage (:func:`stage_of`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.errors import DataError
from device.scenes.relight import CONDITIONS, textured_board, to_linear

FRAME_SIZE = (512, 384)  # width, height


@dataclass(frozen=True, eq=False)
class Stage:
    """The one board (linear albedo, HxWx3) under the one light."""

    board: np.ndarray
    light: tuple[float, float, float] = (1.0, 1.0, 1.0)
    level: float = 1.0
    vignette: float = 0.0
    plain: np.ndarray | None = None  # the uint8 board image a plain stage was made from


def plain_stage(board: np.ndarray) -> Stage:
    """A stage that renders ``board`` (uint8 RGB) as it is: items are full frames on it."""
    return Stage(to_linear(board), plain=board)


#: The demo stage's exposure: a white item does not clip even when the room gets 30% brighter.
SCENE_LEVEL = 0.8


def scene_stage(seed: int = 0, *, light: str | None = None, board_seed: int | None = None) -> Stage:
    """The demo's stage: a textured mid-grey board (white items and dark ones both stand out),
    neutral light with some vignetting, exposed so that a white item does not clip even when
    the room gets 30% brighter. The board's texture is drawn from ``board_seed`` (default:
    ``seed``). ``light`` names one of :data:`device.scenes.relight.CONDITIONS`: its board colour (with
    the same texture), its light's colour and its level (relative to that exposure)."""
    board_seed = seed if board_seed is None else board_seed
    if light is None:
        return Stage(textured_board(FRAME_SIZE, seed=board_seed), level=SCENE_LEVEL, vignette=0.25)
    if light not in CONDITIONS:
        raise DataError(f"unknown light {light!r} (one of {', '.join(CONDITIONS)})")
    condition = CONDITIONS[light]
    return Stage(textured_board(FRAME_SIZE, seed=board_seed, albedo=condition.board), light=condition.light,
                 level=SCENE_LEVEL * condition.level, vignette=0.25)


def stage_of(record: dict) -> Stage:
    """The stage a scene's truth file records (``{"seed": N}``, with ``board_seed`` and ``light``
    when they were chosen apart from the seed)."""
    return scene_stage(record["seed"], light=record.get("light"), board_seed=record.get("board_seed"))


def make_board(size=FRAME_SIZE, seed: int = 0) -> np.ndarray:
    """A near-white poster board with gentle vignetting and texture (uint8 RGB)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2
    shade = 1.0 - 0.35 * r2
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.normal(0, 3, (h, w)).astype(np.float32), (0, 0), 3)
    base = np.array([206, 203, 196], np.float32)
    board = base[None, None, :] * shade[..., None] + texture[..., None]
    return np.clip(board, 0, 255).astype(np.uint8)
