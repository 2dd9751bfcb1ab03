"""Render a demo scene: items from a folder of labelled photos dropped on one board under one light.

    waste-sorter demo-scene --photos ../shared/datasets/trashnet --out scene.mp4 --items 12
    waste-sorter demo-scene --photos DIR --split device/model/split.json --items 120 --all-nuisances

Every item is cut out of its photo and laid on the scene's one textured board, at the same place
and size as in the photo (the photo is fitted to the frame as the classifier fits it), lit by
the scene's one light (:mod:`device.scenes.render`). Options add the nuisances of a real camera
and room: camera shake, sensor noise, motion blur on the drop, items with flash or glare frames,
whole overexposed items, items white enough to clip, items taken away before they settle,
light changes and hands passing over the empty board, an item on the board at start;
``--all-nuisances`` turns every one of them on. Rendering is seeded: the same options give the
same video. A ``scene.truth.json`` beside the video says what happened when (seconds of video
time); ``waste-sorter score-scene`` scores a sort log against it.

The photos are ImageFolder-style (one folder per class), e.g. TrashNet
(github.com/garythung/trashnet, ``dataset-resized``); ``--split`` takes the photos of one
subset of a split manifest (``device/model/split.json``: the model's own test photos;
``--subset train`` or ``val`` draws from the photos it was trained on). ``--light`` and
``--board-seed`` fix the board and the light apart from ``--seed``, so two scenes of other items
can share one board under one light (e.g. one to capture and fine-tune on, one to measure).
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict
from pathlib import Path

from device.contract import read_rgb
from device.errors import DataError, UsageError
from device.scenes.relight import CONDITIONS
from device.scenes.render import KINDS, Nuisances, SceneItem, Timing, expose, render, still_view
from device.scenes.stage import FRAME_SIZE, Stage, make_board, plain_stage, scene_stage, stage_of

__all__ = ["FRAME_SIZE", "KINDS", "Nuisances", "SceneItem", "Stage", "Timing", "expose", "make_board",
           "plain_stage", "render", "scene_stage", "still_view", "photo_items", "main", "add_arguments"]

#: Share of the items given each per-item nuisance by --all-nuisances (the rest are normal).
ALL_NUISANCES = {"overexposed": 0.05, "glare": 0.08, "flash": 0.08, "clip": 0.08, "quick": 0.08}


def photo_pool(photos: Path, split: Path | None = None, subset: str = "test") -> list[tuple[str, Path]]:
    """(label, path) of every photo to draw from: the folder's, or one subset of a split manifest."""
    try:
        classes = sorted(p.name for p in Path(photos).iterdir() if p.is_dir())
    except FileNotFoundError:
        raise DataError(f"{photos}: photo folder does not exist") from None
    except OSError as exc:  # not a folder, no permission
        raise DataError(f"{photos}: photo folder is unreadable ({exc.strerror or exc})") from None
    if split is None:
        pool = [(c, p) for c in classes for p in sorted((Path(photos) / c).glob("*.jpg"))]
    else:
        try:
            manifest = json.loads(Path(split).read_text())
            names, entries = manifest["classes"], manifest[subset]
            pool = [(names[index], Path(photos) / relative) for relative, index in entries]
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise DataError(f"{split}: not a split manifest with a {subset!r} subset ({exc})") from None
        missing = [str(p) for _, p in pool if not p.is_file()]
        if missing:
            raise DataError(f"{split}: {len(missing)} of its {subset} photos are not in {photos} (e.g. {missing[0]})")
    if not pool:
        raise DataError(f"{photos}: no class folders with .jpg photos")
    return pool


def photo_items(photos: Path, n: int, *, seed: int, overexposed: int = 0, glare: int = 0, flash: int = 0,
                clip: int = 0, quick: int = 0, at_start: bool = False, split: Path | None = None,
                subset: str = "test") -> list[SceneItem]:
    """``n`` photos drawn (seeded) with the given number of items of each kind."""
    pool = photo_pool(photos, split, subset)
    rng = random.Random(seed)
    chosen = rng.sample(pool, min(n, len(pool)))
    kinds = (["overexposed"] * overexposed + ["glare"] * glare + ["flash"] * flash + ["clip"] * clip
             + ["quick"] * quick)[:len(chosen)]
    kinds += ["normal"] * (len(chosen) - len(kinds))
    rng.shuffle(kinds)
    if at_start and kinds:
        kinds[kinds.index("normal") if "normal" in kinds else 0] = "at_start"
    root = Path(photos)
    return [SceneItem(read_rgb(str(p)), c, k, str(p.relative_to(root)) if p.is_relative_to(root) else str(p))
            for (c, p), k in zip(chosen, kinds)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--photos", type=Path, required=True, help="ImageFolder of labelled photos")
    p.add_argument("--split", type=Path, help="draw from the test photos of this split manifest")
    p.add_argument("--subset", choices=("train", "val", "test"), default="test",
                   help="the subset of --split to draw from (default: test)")
    p.add_argument("--out", type=Path, default=Path("scene.mp4"), help="the video (default %(default)s)")
    p.add_argument("--items", type=int, default=12, help="items in the scene (default %(default)s)")
    nuisance = p.add_argument_group("nuisances (each an option; --all-nuisances turns every one on)")
    nuisance.add_argument("--overexposed", type=int, default=2,
                          help="items whose frames are all blown out (default %(default)s)")
    nuisance.add_argument("--glare", type=int, default=2, help="items with a few glare frames (default %(default)s)")
    nuisance.add_argument("--flash", type=int, default=0,
                          help="items with a few flash frames while they rest (default %(default)s)")
    nuisance.add_argument("--clip", type=int, default=0,
                          help="items white enough that 20-40%% of them clips (default %(default)s)")
    nuisance.add_argument("--quick", type=int, default=0,
                          help="items taken away before they settle (default %(default)s)")
    nuisance.add_argument("--at-start", action="store_true",
                          help="the first item lies on the board at start (default: off)")
    nuisance.add_argument("--shake-px", type=float, default=0.0,
                          help="camera shake, pixels (every frame; default %(default)s)")
    nuisance.add_argument("--noise", type=float, default=2.0, help="sensor noise, grey levels (default %(default)s)")
    nuisance.add_argument("--motion-blur", action="store_true", help="blur items as they fall (default: off)")
    nuisance.add_argument("--light-changes", type=int, default=1,
                          help="light changes over the empty board (default %(default)s)")
    nuisance.add_argument("--hands", type=int, default=0,
                          help="hands passing over the empty board (default %(default)s)")
    p.add_argument("--still-s", type=float, default=1.6, help="how long an item rests, s (default %(default)s)")
    p.add_argument("--gap-s", type=float, default=1.0, help="empty board between items, s (default %(default)s)")
    shares = ", ".join(f"{kind} {share:.0%}" for kind, share in ALL_NUISANCES.items()).replace("%", "%%")
    nuisance.add_argument("--all-nuisances", action="store_true",
                          help=f"every nuisance: shake 1 px, noise 3, motion blur, items of each kind ({shares} of "
                               f"--items, at least 1 each), light changes and hands every ~10 items, an item at "
                               f"start, rests of 1 s, gaps of 0.8 s")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the scene's draw of photos and events (default %(default)s)")
    p.add_argument("--board-seed", type=int, help="the board's texture (default: --seed)")
    p.add_argument("--light", choices=tuple(CONDITIONS),
                   help="board colour and light of one of evaluate --relight's conditions (warm: tungsten-like; "
                        "a scene's board is always textured: textured is the same as grey; "
                        "default: a mid-grey board under neutral light)")


def _apply_all_nuisances(args) -> None:
    n = args.items
    for kind, share in ALL_NUISANCES.items():
        setattr(args, kind, max(1, round(share * n)))
    args.at_start, args.motion_blur = True, True
    args.shake_px, args.noise = max(args.shake_px, 1.0), max(args.noise, 3.0)
    args.light_changes, args.hands = max(1, n // 10), max(1, n // 10)
    args.still_s, args.gap_s = 1.0, 0.8


def _light_changes(count: int, n_items: int, rng: random.Random) -> tuple[tuple[int, float, float], ...]:
    """``count`` changes spread over the scene: steps and 1 s ramps of +-30%, kept within 0.7-1.3."""
    changes, level = [], 1.0
    for k in range(count):
        after = max(1, round((k + 0.5) * n_items / count))
        level = rng.choice([v for v in (0.7, 1.0, 1.3) if abs(v - level) > 0.2 and abs(v / level - 1) <= 0.45])
        changes.append((after, level, 0.0 if k % 2 == 0 else 1.0))
    return tuple(changes)


def _check(args) -> None:
    if args.items < 1:
        raise UsageError("--items must be at least 1")
    for name in ("overexposed", "glare", "flash", "clip", "quick", "light_changes", "hands"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must not be negative")
    if not (0 <= args.shake_px <= 8 and 0 <= args.noise <= 50 and 0.5 <= args.fps <= 120
            and 0.1 <= args.still_s <= 30 and 0.1 <= args.gap_s <= 30):
        raise UsageError("--shake-px 0-8, --noise 0-50, --fps 0.5-120, --still-s and --gap-s 0.1-30")
    if args.subset != "test" and args.split is None:
        raise UsageError("--subset needs --split (the manifest whose subset to draw from)")


def main(args) -> int:
    if args.all_nuisances:
        _apply_all_nuisances(args)
    _check(args)
    items = photo_items(args.photos, args.items, seed=args.seed, overexposed=args.overexposed, glare=args.glare,
                        flash=args.flash, clip=args.clip, quick=args.quick, at_start=args.at_start, split=args.split,
                        subset=args.subset)
    rng = random.Random(args.seed + 1)
    n = len(items)
    hands = tuple(sorted(rng.sample(range(1, n + 1), min(args.hands, n))))
    nuisances = Nuisances(shake_px=args.shake_px, noise=args.noise, motion_blur=args.motion_blur,
                          light_changes=_light_changes(args.light_changes, n, rng), hands=hands)
    timing = Timing(fps=args.fps, still_s=args.still_s, gap_s=args.gap_s)
    stage_record = {"seed": args.seed}
    if args.board_seed is not None:
        stage_record["board_seed"] = args.board_seed
    if args.light is not None:
        stage_record["light"] = args.light
    stage = stage_of(stage_record)
    events: list[dict] = []
    truth = render(items, args.out, stage=stage, timing=timing, seed=args.seed, nuisances=nuisances, events=events)
    truth_path = args.out.with_suffix(".truth.json")
    truth_path.write_text(json.dumps({
        "fps": args.fps, "timing": asdict(timing), "nuisances": asdict(nuisances),
        "stage": stage_record, "photos": str(args.photos), "video": args.out.name, "items": truth,
        "events": events}, indent=1))
    kinds = ", ".join(f"{k} {sum(i.kind == k for i in items)}" for k in KINDS if any(i.kind == k for i in items))
    print(f"wrote {args.out} ({n} items: {kinds}) and {truth_path}")
    return 0
