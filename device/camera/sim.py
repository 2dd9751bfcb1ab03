"""A simulated camera for laptops and CI: exposure and gain really change the image.

The scene is an empty board in linear light (a light, slightly textured board with a few grey
marks and vignetting, under a warm illuminant). Each frame is formed like on a sensor::

    raw    = radiance * illuminant * exposure_us * analogue_gain * SENSITIVITY + noise
    pixel  = encode(clip(clip(raw) * colour gains))      # encode: gamma 1/2.2, 8 bits

with shot and read noise from a seeded RNG, so a run is reproducible. Like picamera2, controls
given to :meth:`SimulatedCamera.set_controls` take effect ``delay_frames`` frames later,
exposure is quantised to whole sensor lines and gain to 1/16 steps, and the values actually
applied are echoed in each frame's metadata (``ExposureTime``, ``AnalogueGain``,
``ColourGains``, ``SensorTimestamp``).

Source strings (``waste-sorter calibrate --source sim:light=0.5,glare=0.02``, ``waste-sorter run
--source sim:frames=100``): ``sim`` or ``sim:KEY=VALUE,...`` with ``light`` (illumination
factor, 1 = normal), ``glare`` (fraction of the board covered by a specular spot), ``tint``
(red/blue balance of the light), ``seed``, ``delay`` (frames before new controls apply),
``frames`` (the source ends after this many frames; 0, the default, never) and ``marks`` (the
size of two grey marks on the board, 0.02 of the frame's width and height each way). It films the empty
board only: ``run`` learns the board from it and sorts nothing, a check of an installation
without a camera. Its time is source time (``frame / fps``); ``run --realtime`` plays it at
its 30 frames a second.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace

import numpy as np

from device.camera.base import CameraBase, ExposureControls, Frame
from device.errors import CameraError
from device.gamma import GAMMA

log = logging.getLogger(__name__)

LINE_US = 20  # exposure is quantised to sensor lines
SENSITIVITY = 1.0 / 12_000  # board radiance 0.8 reaches ~0.5 linear at ~15 ms, gain 1
MIN_EXPOSURE_US, MAX_EXPOSURE_US = LINE_US, 1_000_000
MIN_GAIN, MAX_GAIN = 1.0, 16.0


@dataclass(frozen=True)
class SimScene:
    light: float = 1.0  # illumination factor
    glare: float = 0.0  # fraction of the board covered by a specular reflection
    tint: float = 1.0  # >1 warmer (more red, less blue) light
    seed: int = 0
    delay: int = 3  # frames before new controls apply
    frames: int = 0  # the source ends after this many frames; 0: never
    # half the width of two grey marks on the board, a share of the frame's (small enough that
    # together they cover under presence.item_frac of the board, so run learns it as empty)
    marks: float = 0.02


def is_sim_source(source: str) -> bool:
    """Whether ``source`` names the simulated camera (``sim`` or ``sim:OPTIONS``)."""
    return source == "sim" or source.startswith("sim:")


def parse_sim_source(source: str) -> SimScene:
    """``sim`` or ``sim:light=0.5,glare=0.01,...`` (see the module docstring)."""
    name, _, options = source.partition(":")
    if name != "sim":
        raise CameraError(f"camera source {source!r}: not a simulated camera")
    scene = SimScene()
    kinds = {f.name: f.type for f in fields(SimScene)}
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        if key not in kinds:
            raise CameraError(f"camera source {source!r}: unknown option {key!r} (use {', '.join(kinds)})")
        try:
            number = int(value) if kinds[key] in ("int", int) else float(value)
        except ValueError:
            raise CameraError(f"camera source {source!r}: {key} must be a number") from None
        if not np.isfinite(number) or number < 0 or number > 1e6:
            raise CameraError(f"camera source {source!r}: {key} out of range")
        scene = replace(scene, **{key: number})
    return scene


def _quantise(controls: ExposureControls) -> ExposureControls:
    lines = max(1, int(controls.exposure_us) // LINE_US)
    exposure_us = int(np.clip(lines * LINE_US, MIN_EXPOSURE_US, MAX_EXPOSURE_US))
    gain = float(np.clip(round(float(controls.analogue_gain) * 16) / 16, MIN_GAIN, MAX_GAIN))
    red, blue = (float(np.clip(g, 0.05, 32.0)) for g in controls.colour_gains)
    return ExposureControls(exposure_us, gain, (red, blue))


class SimulatedCamera(CameraBase):
    """An endless simulated camera with picamera2-like manual controls."""

    def __init__(self, scene: SimScene | None = None, *, size: tuple[int, int] = (256, 192),
                 controls: ExposureControls | None = None, fps: float = 30.0):
        self.scene = scene or SimScene()
        self.size = (int(size[0]), int(size[1]))
        self.fps = fps
        self._rng = np.random.default_rng(self.scene.seed)
        self._radiance = self._render_scene()
        self._applied = _quantise(controls or ExposureControls(10_000, 1.0, (1.0, 1.0)))
        self._pending: list[tuple[int, ExposureControls]] = []
        self._index = 0
        self._closed = False

    def _render_scene(self) -> np.ndarray:
        """Linear radiance (HxWx3 float32) of the empty board under the illuminant."""
        w, h = self.size
        rng = np.random.default_rng(self.scene.seed + 1)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        albedo = 0.8 * (1.0 - 0.12 * r2) + rng.normal(0, 0.01, (h, w)).astype(np.float32)
        for cx, cy in ((0.2, 0.25), (0.8, 0.75)):  # two grey registration marks
            mark = (np.abs(xx - cx * w) < w * self.scene.marks) & (np.abs(yy - cy * h) < h * self.scene.marks)
            albedo[mark] = 0.3
        illuminant = np.array([1.0 * self.scene.tint, 0.85, 0.6 / self.scene.tint], np.float32)
        radiance = albedo[..., None] * illuminant * self.scene.light
        if self.scene.glare > 0:  # a specular spot, far brighter than the board
            spot = (((xx - 0.65 * w) ** 2 + (yy - 0.4 * h) ** 2) < self.scene.glare * w * h / np.pi)
            radiance[spot] = 40.0 * self.scene.light
        return radiance.astype(np.float32)

    @property
    def applied(self) -> ExposureControls:
        return self._applied

    def set_controls(self, controls: ExposureControls) -> None:
        """Request manual controls; they apply ``scene.delay`` frames from now."""
        self._pending.append((self._index + int(self.scene.delay), _quantise(controls)))

    def capture(self) -> Frame | None:
        if self._closed:
            raise CameraError("sim: camera is closed")
        if self.scene.frames and self._index >= self.scene.frames:
            return None
        while self._pending and self._pending[0][0] <= self._index:
            self._applied = self._pending.pop(0)[1]
        c = self._applied
        signal = self._radiance * (c.exposure_us * SENSITIVITY)
        sigma = np.sqrt(0.002 ** 2 + 0.0004 * np.clip(signal, 0, 1))  # read + shot noise, at gain 1
        raw = np.clip(signal + self._rng.standard_normal(signal.shape, np.float32) * sigma, 0, 1)
        raw = np.clip(raw * c.analogue_gain, 0, 1)  # the ADC clips after the gain
        balanced = raw * np.array([c.colour_gains[0], 1.0, c.colour_gains[1]], np.float32)
        encoded = np.clip(balanced, 0, 1) ** (1 / GAMMA)
        image = (encoded * 255 + 0.5).astype(np.uint8)
        metadata = {"ExposureTime": c.exposure_us, "AnalogueGain": c.analogue_gain,
                    "ColourGains": c.colour_gains, "SensorTimestamp": int(self._index * 1e9 / self.fps),
                    "FrameDuration": int(1e6 / self.fps)}
        frame = Frame(image, self._index / self.fps, self._index, metadata)
        self._index += 1
        return frame

    def close(self) -> None:
        self._closed = True
