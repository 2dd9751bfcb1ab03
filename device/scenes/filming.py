"""The camera a rendered scene is filmed with: it lights the stage's albedo (linear light,
vignetting, clipped as a sensor does), shakes sub-pixel, adds glare and sensor noise, writes
each frame to the video and counts video time. Its random draws (``rng`` for what happens in
the scene, ``np_rng`` for the sensor) come from the scene's seed."""

from __future__ import annotations

import random

import cv2
import numpy as np

from device.scenes.relight import light_up
from device.scenes.stage import Stage


class SceneCamera:
    """Lights, shakes, clips, adds noise and writes frames; counts video time."""

    def __init__(self, writer, stage: Stage, fps: float, seed: int, *, shake_px: float = 0.0, noise: float = 0.0):
        self.writer, self.stage, self.fps = writer, stage, fps
        self.shake_px, self.noise = shake_px, noise
        self.rng, self.np_rng = random.Random(seed), np.random.default_rng(seed)
        self.count = 0
        self.light = 1.0  # the room's light, relative to the stage's level
        self._lit: tuple[np.ndarray, float, np.ndarray] | None = None  # (albedo, level, its uint8 frame)
        self._noise: np.ndarray | None = None

    @property
    def now_s(self) -> float:
        return self.count / self.fps

    def frames(self, seconds: float) -> int:
        return max(1, round(seconds * self.fps))

    def emit(self, albedo: np.ndarray, gain: float = 1.0, glare_on: np.ndarray | None = None) -> None:
        s = self.stage
        level = s.level * self.light * gain
        if self._lit is None or self._lit[0] is not albedo or self._lit[1] != level:  # a still scene is lit once
            self._lit = (albedo, level, light_up(albedo, s.light, level, s.vignette))
        frame = self._lit[2]
        if self.shake_px > 0:  # a sub-pixel shift (bicubic: bilinear would blur every frame)
            dx, dy = (self.np_rng.uniform(-self.shake_px, self.shake_px) for _ in range(2))
            m = np.float32([[1, 0, dx], [0, 1, dy]])
            frame = cv2.warpAffine(frame, m, frame.shape[1::-1], flags=cv2.INTER_CUBIC,
                                   borderMode=cv2.BORDER_REFLECT)
        if glare_on is not None:
            frame = add_glare(frame, glare_on, self.rng)
        if self.noise > 0:  # a window at a random place of a noise field twice the frame's size (fast)
            h, w = frame.shape[:2]
            if self._noise is None:
                self._noise = self.np_rng.standard_normal((2 * h, 2 * w, 3), dtype=np.float32) * self.noise
            y, x = int(self.np_rng.integers(0, h)), int(self.np_rng.integers(0, w))
            frame = np.clip(frame + self._noise[y:y + h, x:x + w], 0, 255).astype(np.uint8)
        self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.count += 1


def add_glare(image: np.ndarray, where: np.ndarray, rng: random.Random) -> np.ndarray:
    """A specular highlight centred somewhere on ``where`` (HxW coverage), clipped white."""
    h, w = image.shape[:2]
    ys, xs = np.nonzero(where > 0.5)
    if len(xs):
        i = rng.randrange(len(xs))
        center = (int(xs[i]), int(ys[i]))
    else:
        center = (rng.randint(w // 3, 2 * w // 3), rng.randint(h // 3, 2 * h // 3))
    out = image.copy()
    cv2.ellipse(out, center, (w // 5, h // 5), rng.randint(0, 180), 0, 360, (255, 255, 255), -1)
    return out
