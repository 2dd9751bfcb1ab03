"""Render a demo scene: items from a folder of labelled photos dropped on an empty board.

    waste-sorter demo-scene --photos ../shared/datasets/trashnet --out scene.mp4 --items 12

Each item falls in (motion), lies still, and is taken away; between items the board is empty.
Some items are fully overexposed (every frame blown out), some show a few glare frames, and
once the light over the whole board changes. A ``scene.truth.json`` beside the video lists
each item's photo, label, kind and times (seconds of video time), for checking a sort log.
The photos are ImageFolder-style (one folder per class), e.g. TrashNet
(github.com/garythung/trashnet, ``dataset-resized``).
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from device.contract import read_rgb
from device.errors import DataError

FRAME_SIZE = (512, 384)  # width, height


@dataclass(frozen=True)
class SceneItem:
    """One item: how it looks once settled (full frame, RGB) and what happens to it."""

    image: np.ndarray
    label: str
    kind: str = "normal"  # normal | overexposed | glare
    source: str = ""


@dataclass(frozen=True)
class Timing:
    fps: float = 10.0
    lead_in_s: float = 1.5  # empty board at the start (the sorter learns it)
    fall_s: float = 0.4
    still_s: float = 1.6
    leave_s: float = 0.4
    gap_s: float = 1.0


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


def expose(image: np.ndarray, gain: float) -> np.ndarray:
    """Scale linear light by ``gain`` and clip, as a longer exposure would."""
    linear = (image.astype(np.float32) / 255.0) ** 2.2
    return (np.clip(linear * gain, 0, 1) ** (1 / 2.2) * 255).astype(np.uint8)


def shifted(board: np.ndarray, item: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The item frame moved by (dx, dy) pixels over the board."""
    h, w = board.shape[:2]
    frame = board.copy()
    xs, ys = slice(max(0, dx), min(w, w + dx)), slice(max(0, dy), min(h, h + dy))
    frame[ys, xs] = item[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    return frame


def add_glare(image: np.ndarray, rng: random.Random) -> np.ndarray:
    h, w = image.shape[:2]
    out = image.copy()
    center = (rng.randint(w // 3, 2 * w // 3), rng.randint(h // 3, 2 * h // 3))
    cv2.ellipse(out, center, (w // 5, h // 5), rng.randint(0, 180), 0, 360, (255, 255, 255), -1)
    return out


def render(items: list[SceneItem], out: Path, *, board: np.ndarray | None = None, timing: Timing = Timing(),
           light_change_after: int | None = None, seed: int = 0, noise: float = 2.0) -> list[dict]:
    """Write the scene video to ``out``; returns the truth records (one per item)."""
    board = make_board(seed=seed) if board is None else board
    h, w = board.shape[:2]
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), timing.fps, (w, h))
    if not writer.isOpened():
        raise DataError(f"{out}: cannot write video")
    count = 0
    light = 1.0

    def emit(frame: np.ndarray, gain: float = 1.0, glare: bool = False) -> float:
        """One frame; light and exposure gain act together in linear light, before clipping;
        glare (a specular highlight) clips whatever the exposure."""
        nonlocal count
        if gain * light != 1.0:
            frame = expose(frame, gain * light)
        if glare:
            frame = add_glare(frame, rng)
        noisy = np.clip(frame.astype(np.float32) + np_rng.normal(0, noise, frame.shape), 0, 255)
        writer.write(cv2.cvtColor(noisy.astype(np.uint8), cv2.COLOR_RGB2BGR))
        count += 1
        return (count - 1) / timing.fps

    def frames(seconds: float) -> int:
        return max(1, round(seconds * timing.fps))

    truth = []
    for _ in range(frames(timing.lead_in_s)):
        emit(board)
    for number, item in enumerate(items, start=1):
        look = cv2.resize(item.image, (w, h), interpolation=cv2.INTER_AREA)
        gain = 6.0 if item.kind == "overexposed" else 1.0
        n_fall = frames(timing.fall_s)
        arrive_s = count / timing.fps
        for k in range(n_fall):
            frame = shifted(board, look, 0, -int((1 - (k + 1) / (n_fall + 1)) * h * 0.7))
            emit(frame, gain)
        still_start_s = count / timing.fps
        n_still = frames(timing.still_s)
        glare = set(range(1, 4)) if item.kind == "glare" else set()
        for k in range(n_still):
            emit(look, gain, glare=k in glare)
        n_leave = frames(timing.leave_s)
        for k in range(n_leave):
            frame = shifted(board, look, int((k + 1) / (n_leave + 1) * w * 0.8), 0)
            emit(frame, gain)
        leave_s = count / timing.fps
        truth.append({"item": number, "label": item.label, "kind": item.kind, "source": item.source,
                      "arrive_s": arrive_s, "still_s": still_start_s, "leave_s": leave_s})
        n_gap = frames(timing.gap_s)
        for k in range(n_gap):
            if light_change_after == number:
                light = 1.0 - 0.25 * (k + 1) / n_gap  # the room gets darker over the gap
            emit(board)
    writer.release()
    return truth


def photo_items(photos: Path, n: int, *, seed: int, overexposed: int, glare: int) -> list[SceneItem]:
    try:
        classes = sorted(p.name for p in Path(photos).iterdir() if p.is_dir())
    except FileNotFoundError:
        raise DataError(f"{photos}: photo folder does not exist") from None
    except OSError as exc:  # not a folder, no permission
        raise DataError(f"{photos}: photo folder is unreadable ({exc.strerror or exc})") from None
    pool = [(c, p) for c in classes for p in sorted((Path(photos) / c).glob("*.jpg"))]
    if not pool:
        raise DataError(f"{photos}: no class folders with .jpg photos")
    rng = random.Random(seed)
    chosen = rng.sample(pool, min(n, len(pool)))
    kinds = ["overexposed"] * overexposed + ["glare"] * glare
    kinds += ["normal"] * (len(chosen) - len(kinds))
    rng.shuffle(kinds)
    return [SceneItem(read_rgb(str(p)), c, k, f"{c}/{p.name}") for (c, p), k in zip(chosen, kinds)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--photos", type=Path, required=True, help="ImageFolder of labelled photos")
    p.add_argument("--out", type=Path, default=Path("scene.mp4"))
    p.add_argument("--items", type=int, default=12)
    p.add_argument("--overexposed", type=int, default=2, help="items whose frames are all blown out")
    p.add_argument("--glare", type=int, default=2, help="items with a few glare frames")
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)


def main(args) -> int:
    items = photo_items(args.photos, args.items, seed=args.seed, overexposed=args.overexposed, glare=args.glare)
    truth = render(items, args.out, timing=Timing(fps=args.fps), light_change_after=len(items) // 2 or None,
                   seed=args.seed)
    truth_path = args.out.with_suffix(".truth.json")
    truth_path.write_text(json.dumps({"fps": args.fps, "timing": asdict(Timing(fps=args.fps)), "items": truth},
                                     indent=1))
    print(f"wrote {args.out} ({len(truth)} items) and {truth_path}")
    return 0
