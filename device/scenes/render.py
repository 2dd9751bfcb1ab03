"""Render a scene as a sorter's camera films it: items dropped one at a time on one board under
one light, with the nuisances of a real camera and a real room.

Each item falls in (motion blurred when asked), lies still, and is taken away; between items
the board is empty. Items are laid on the board with :mod:`device.scenes.relight` (a photo's item at
its reflectance, at the same place and size as in the photo, on the scene's board: its stage,
:mod:`device.scenes.stage`) and filmed by :mod:`device.scenes.filming` (lit in linear light
with vignetting, then clipped as a sensor does). Per item (``SceneItem.kind``):

- ``normal``; ``overexposed`` (every frame of it blown out); ``glare`` (a few frames with a
  moving specular highlight); ``flash`` (a few whole-frame flash frames while it rests);
  ``clip`` (an item white enough that 20-40% of it clips); ``quick`` (taken away after 0.2 s,
  before it could settle); ``at_start`` (lying on the board when the recording starts).

Over the whole scene (:class:`Nuisances`): camera shake (sub-pixel, every frame), sensor noise,
light changes over the empty board (a step or a ramp, after given items) and hands passing over
the empty board (< 0.3 s). Everything is drawn from ``seed``: the same call gives the same video.
The returned truth records say what happened when (seconds of video time).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from device.errors import DataError
from device.scenes.filming import SceneCamera
from device.scenes.relight import GAMMA, Cutout, cut_out, illumination, lay_on_board, light_up, to_linear
from device.scenes.stage import Stage, make_board, plain_stage, scene_stage, stage_of

__all__ = ["KINDS", "Nuisances", "SceneItem", "Timing", "brightened", "expose", "item_cutout", "render", "still_view",
           # the stage's (device.scenes.stage), still taken from here by tests
           "Stage", "make_board", "plain_stage", "scene_stage", "stage_of"]

KINDS = ("normal", "overexposed", "glare", "flash", "clip", "quick", "at_start")
OVEREXPOSED_GAIN = 6.0
CLIP_LEVEL = (250 / 255) ** GAMMA  # linear light that the gate counts as clipped


@dataclass(frozen=True, eq=False)
class SceneItem:
    """One item: a photo (or, on a plain board, the full frame as it looks once settled: RGB)
    and what happens to it."""

    image: np.ndarray
    label: str
    kind: str = "normal"
    source: str = ""


@dataclass(frozen=True)
class Timing:
    fps: float = 10.0
    lead_in_s: float = 1.5  # empty board at the start (the sorter learns it)
    fall_s: float = 0.4
    still_s: float = 1.6
    leave_s: float = 0.4
    gap_s: float = 1.0
    quick_still_s: float = 0.2  # how long a "quick" item rests before it is taken away


@dataclass(frozen=True)
class Nuisances:
    shake_px: float = 0.0  # camera shake: every frame moves by up to this many pixels (sub-pixel)
    noise: float = 2.0  # sensor noise, grey levels (standard deviation)
    motion_blur: bool = False  # blur falling items along their fall
    #: light changes over the empty board: (after item n, new light level, ramp seconds; 0 = a step)
    light_changes: tuple[tuple[int, float, float], ...] = ()
    hands: tuple[int, ...] = ()  # a hand passes over the empty board after these items


def expose(image: np.ndarray, gain: float) -> np.ndarray:
    """Scale linear light by ``gain`` and clip, as a longer exposure would."""
    linear = (image.astype(np.float32) / 255.0) ** GAMMA
    return (np.clip(linear * gain, 0, 1) ** (1 / GAMMA) * 255).astype(np.uint8)


def item_cutout(item: SceneItem, stage: Stage) -> Cutout:
    """The item's reflectance and where its board shows: on a plain stage the pixels that
    differ from the board are the item; a photo is cut out of its own background."""
    if stage.plain is not None and item.image.shape == stage.plain.shape:
        background = np.all(item.image == stage.plain, axis=2).astype(np.float32)
        return Cutout(to_linear(item.image), background)
    h, w = stage.board.shape[:2]
    photo = item.image if item.image.shape[:2] == (h, w) else cv2.resize(item.image, (w, h),
                                                                          interpolation=cv2.INTER_AREA)
    return cut_out(photo)


def brightened(cut: Cutout, stage: Stage, clipped_share: float, light: float = 1.0) -> Cutout:
    """The item made white enough that ``clipped_share`` of its area clips under the stage's
    light (times the room's ``light``)."""
    item = cut.background < 0.5
    if not item.any():
        return cut
    h, w = item.shape
    lit = illumination(h, w, stage.light, stage.level * light, stage.vignette)
    brightest = (cut.reflectance * lit).max(axis=2)[item]
    factor = max(1.0, CLIP_LEVEL / max(float(np.quantile(brightest, 1 - clipped_share)), 1e-4))
    return Cutout(cut.reflectance * factor, cut.background)


def still_view(item: SceneItem, stage: Stage, light: float = 1.0) -> np.ndarray:
    """The item lying still on the stage, the room's light at ``light``: no shake, noise or
    other nuisance (uint8 RGB)."""
    albedo = lay_on_board(item_cutout(item, stage), stage.board)
    return light_up(albedo, stage.light, stage.level * light, stage.vignette)


@dataclass
class _Layer:
    """An item (or a hand) to composite: reflectance and coverage (1 = item), both HxW(x3)."""

    reflectance: np.ndarray
    cover: np.ndarray

    @classmethod
    def of(cls, cut: Cutout) -> "_Layer":
        cover = 1.0 - cut.background
        return cls(cut.reflectance * cover[..., None], cover)

    def moved(self, dx: float, dy: float, blur_px: float = 0.0) -> "_Layer":
        h, w = self.cover.shape
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        refl = cv2.warpAffine(self.reflectance, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
        cover = cv2.warpAffine(self.cover, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
        if blur_px >= 2:  # along the fall (vertical)
            k = int(blur_px) | 1
            kernel = np.full((k, 1), 1.0 / k, np.float32)
            refl, cover = cv2.filter2D(refl, -1, kernel), cv2.filter2D(cover, -1, kernel)
        return _Layer(refl, cover)

    def over(self, albedo: np.ndarray) -> np.ndarray:
        return albedo * (1.0 - self.cover[..., None]) + self.reflectance


def _hand(h: int, w: int, rng: random.Random) -> tuple[_Layer, float, float]:
    """A hand and forearm reaching in from the bottom edge: the layer and its sweep (dx per frame)."""
    cover = np.zeros((h, w), np.float32)
    x = rng.randint(w // 4, 3 * w // 4)
    cv2.ellipse(cover, (x, int(h * 0.45)), (45, 60), rng.randint(-20, 20), 0, 360, 1.0, -1)
    cv2.rectangle(cover, (x - 35, int(h * 0.45)), (x + 35, h), 1.0, -1)
    cover = cv2.GaussianBlur(cover, (0, 0), 3)
    skin = np.array([0.45, 0.28, 0.2], np.float32)
    sweep = rng.choice((-1, 1)) * w * 0.35
    return _Layer(cover[..., None] * skin, cover), -sweep, sweep


def render(items: list[SceneItem], out, *, board: np.ndarray | None = None, stage: Stage | None = None,
           timing: Timing = Timing(), light_change_after: int | None = None, seed: int = 0,
           noise: float = 2.0, nuisances: Nuisances | None = None, events: list[dict] | None = None) -> list[dict]:
    """Write the scene video to ``out``; returns the truth records, one per item (times in
    seconds of video: ``arrive_s``, ``still_s`` it came to rest, ``remove_s`` it started to be
    taken away, ``leave_s`` it was gone; ``flash_s`` its flash frames). Hands passing and light
    changes are appended to ``events`` when given. ``board`` (uint8) makes a plain stage;
    ``light_change_after`` (the room dims by 25% over the gap after that item) and ``noise``
    are shorthands for :class:`Nuisances`. The codec follows ``out``'s suffix (:func:`video_codec`)."""
    if stage is None:
        stage = plain_stage(make_board(seed=seed) if board is None else board)
    if nuisances is None:
        changes = ((light_change_after, 0.75, timing.gap_s),) if light_change_after else ()
        nuisances = Nuisances(noise=noise, light_changes=changes)
    h, w = stage.board.shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*video_codec(out)), timing.fps, (w, h))
    if not writer.isOpened():
        raise DataError(f"{out}: cannot write video")
    cam = SceneCamera(writer, stage, timing.fps, seed, shake_px=nuisances.shake_px, noise=nuisances.noise)
    truth: list[dict] = []
    try:
        _play(cam, items, stage, timing, nuisances, truth, [] if events is None else events)
    finally:
        writer.release()
    return truth


def video_codec(out: Path | str) -> str:
    """The fourcc a scene is written with: lossless FFV1 for ``.mkv`` (frames read back exactly as
    rendered, whichever OpenCV build wrote them), MPEG-4 part 2 otherwise (lossy, like a recorded
    scene). OpenCV's aarch64 and x86 builds encode mp4v differently: the same frames come back
    with different artefacts (a striped red item's colour flickering by more than
    ``presence.motion_level`` on some frames of one build only), so a test whose outcome must not
    depend on the codec renders to ``.mkv``."""
    return "FFV1" if Path(out).suffix.lower() == ".mkv" else "mp4v"


def _play(cam: SceneCamera, items: list[SceneItem], stage: Stage, timing: Timing, nuisances: Nuisances,
          truth: list[dict], events: list[dict]) -> None:
    h, w = stage.board.shape[:2]
    board = stage.board
    starts = [item for item in items if item.kind == "at_start"]
    if not starts:
        for _ in range(cam.frames(timing.lead_in_s)):
            cam.emit(board)
    for number, item in enumerate(sorted(items, key=lambda i: i.kind != "at_start"), start=1):
        if item.kind not in KINDS:
            raise DataError(f"scene item {number}: unknown kind {item.kind!r} (one of {', '.join(KINDS)})")
        cut = item_cutout(item, stage)
        if item.kind == "clip":
            cut = brightened(cut, stage, cam.rng.uniform(0.2, 0.4), cam.light)
        layer = _Layer.of(cut)
        gain = OVEREXPOSED_GAIN if item.kind == "overexposed" else 1.0
        record = {"item": number, "label": item.label, "kind": item.kind, "source": item.source,
                  "light": cam.light, "arrive_s": cam.now_s}
        if item.kind != "at_start":
            n_fall = cam.frames(timing.fall_s)
            for k in range(n_fall):
                lift = (1 - (k + 1) / (n_fall + 1)) * h * 0.7
                blur = 0.5 * h * 0.7 / (n_fall + 1) if nuisances.motion_blur else 0.0
                cam.emit(layer.moved(0, -lift, blur).over(board), gain)
        record["still_s"] = cam.now_s
        rest_s = {"quick": timing.quick_still_s, "at_start": timing.lead_in_s}.get(item.kind, timing.still_s)
        n_still = cam.frames(rest_s)
        glare = set(range(1, 4)) if item.kind == "glare" else set()
        flashes = set(cam.rng.sample(range(2, n_still - 1), min(3, max(0, n_still - 3)))) if item.kind == "flash" else set()
        still = layer.over(board)
        record["flash_s"] = []
        for k in range(n_still):
            if k in flashes:
                record["flash_s"].append(cam.now_s)
            cam.emit(still, gain * (cam.rng.uniform(3.0, 5.0) if k in flashes else 1.0),
                     glare_on=layer.cover if k in glare else None)
        record["remove_s"] = cam.now_s
        n_leave = cam.frames(timing.leave_s)
        for k in range(n_leave):
            cam.emit(layer.moved((k + 1) / (n_leave + 1) * w * 0.8, 0).over(board), gain)
        record["leave_s"] = cam.now_s
        truth.append(record)
        _gap(cam, number, board, timing, nuisances, events, lead_in=item.kind == "at_start")


def _gap(cam: SceneCamera, number: int, board: np.ndarray, timing: Timing, nuisances: Nuisances,
         events: list[dict], lead_in: bool) -> None:
    """The empty board after item ``number``: light changes and hands passing, if any."""
    h, w = board.shape[:2]
    gap_s = timing.lead_in_s if lead_in else timing.gap_s
    for after, level, ramp_s in nuisances.light_changes:
        if after != number:
            continue
        start_s, start_light = cam.now_s, cam.light
        n_ramp = round(ramp_s * cam.fps)
        for k in range(max(1, n_ramp)):
            cam.light = start_light + (level - start_light) * (k + 1) / max(1, n_ramp)
            cam.emit(board)
        events.append({"event": "light", "start_s": start_s, "end_s": cam.now_s, "from": start_light, "to": level})
    if number in nuisances.hands:
        for _ in range(cam.frames(gap_s / 2)):
            cam.emit(board)
        hand, dx0, sweep = _hand(h, w, cam.rng)
        start_s = cam.now_s
        n_hand = cam.rng.choice((2, 3))
        for k in range(n_hand):
            cam.emit(hand.moved(dx0 + 2 * sweep * k / max(1, n_hand - 1), 0).over(board))
        events.append({"event": "hand", "start_s": start_s, "end_s": cam.now_s})
        gap_s /= 2
    for _ in range(cam.frames(gap_s)):
        cam.emit(board)
