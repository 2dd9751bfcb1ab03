"""A seeded, stratified train/val/test split of an ImageFolder, kept in a manifest.

The manifest lists every photo by its path relative to the data folder, so the same split is
reused by ``train``, ``export``, ``quantize`` and ``evaluate``; its SHA-256 goes into the model
metadata so a shipped model names the exact split it was trained on.

A folder of device photos written by ``waste-sorter captures export`` is split by item instead
(:func:`make_item_split`): all frames of one capture go to one subset, chosen by a hash of the
capture, so no item is both trained and tested on and a capture keeps its subset however many
captures are added later. Several folders are one split in :mod:`export.data_split`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from device import safe_json
from device.atomic import write_bytes
from device.commands.capture_export import exported_item, is_capture_export
from device.errors import DataError, UsageError
from device.safe_open import MiB, read_regular, show_path
from device.schema import short

SUBSETS = ("train", "val", "test")
METHODS = ("shuffle", "item")  # a split per class with the seed; device photos by capture
MAX_MANIFEST_BYTES = 256 * MiB  # TrashNet's is 90 KB; a folder of 100,000 device photos about 6 MB
#: Photo suffixes, as torchvision's ImageFolder (matched in any case).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Split:
    root: Path
    classes: tuple[str, ...]
    files: dict[str, tuple[tuple[str, int], ...]]  # subset -> ((relative path, class index), ...)
    seed: int
    method: str = "shuffle"  # "shuffle": per class with the seed; "item": device photos by capture
    #: folder -> the model classes its photos may be (``train --label-map``): a set-valued label
    #: (``paper-or-cardboard``: either) or another name (``other-wood``: trash); empty: each
    #: folder is the class of its name.
    label_map: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(_canonical(self.classes, self.files, self.label_map).encode()).hexdigest()

    def allowed(self, folder: str) -> tuple[str, ...]:
        """The model classes a photo of class folder ``folder`` may be."""
        return self.label_map.get(folder, (folder,))

    def paths(self, subset: str) -> list[tuple[Path, int]]:
        return [(self.root / rel, label) for rel, label in self.files[subset]]

    @property
    def device_photos(self) -> bool:
        """Whether the folder holds device photos (a split by item)."""
        return self.method == "item"

    def body(self) -> dict[str, Any]:
        """The manifest's content."""
        return {
            "classes": list(self.classes),
            "seed": self.seed,
            "method": self.method,
            "sha256": self.sha256,
            **({"label_map": {k: list(v) for k, v in self.label_map.items()}} if self.label_map else {}),
            **{s: [[rel, label] for rel, label in self.files[s]] for s in SUBSETS},
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, json.dumps(self.body(), indent=1).encode())


def _canonical(classes, files, label_map=None) -> str:
    mapped = {"label_map": {k: list(v) for k, v in label_map.items()}} if label_map else {}  # older hashes kept
    return json.dumps(
        {"classes": list(classes), **mapped, **{s: [list(f) for f in files[s]] for s in SUBSETS}},
        sort_keys=True,
        separators=(",", ":"),
    )


def scan_image_folder(root: Path, *, min_classes: int = 2) -> tuple[tuple[str, ...], dict[str, list[str]]]:
    """Classes (sorted folder names) and each class's photos (relative paths, sorted).

    Like torchvision's ImageFolder: each class folder is walked recursively (following links),
    photos are recognised by IMG_EXTENSIONS in any case, and hidden entries (``.ipynb_checkpoints/``,
    macOS ``._x.jpg``, ``.DS_Store``) are skipped. Class folders without photos are left out.
    """
    if not root.is_dir():
        raise DataError(f"{root}: data folder does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    per_class = {c: photos for c in classes if (photos := _photos_in(root, c))}
    if len(per_class) < min_classes:
        raise DataError(f"{root}: expected an ImageFolder with >= {min_classes} class folder"
                        f"{'s' if min_classes > 1 else ''} of photos ({', '.join(IMG_EXTENSIONS)})")
    return tuple(per_class), per_class


def _photos_in(root: Path, name: str) -> list[str]:
    """Relative paths ("glass/sub/b.jpg") of the photos anywhere below ``root/name``, sorted."""
    found = []
    for folder, subfolders, files in os.walk(root / name, followlinks=True):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        rel = Path(folder).relative_to(root).as_posix()
        found += [f"{rel}/{f}" for f in files
                  if not f.startswith(".") and f.lower().endswith(IMG_EXTENSIONS)]
    return sorted(found)


def _check_fractions(val_frac: float, test_frac: float) -> None:
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise DataError(f"bad split fractions val={val_frac} test={test_frac}")


def make_split(root: Path, *, val_frac: float, test_frac: float, seed: int) -> Split:
    """Stratified split: each class is shuffled with ``seed`` and cut by the fractions; a
    capture export is split by item (:func:`make_item_split`, whatever the seed)."""
    _check_fractions(val_frac, test_frac)
    if is_capture_export(root):
        return make_item_split(root, val_frac=val_frac, test_frac=test_frac)
    classes, per_class = scan_image_folder(root)
    files: dict[str, list[tuple[str, int]]] = {s: [] for s in SUBSETS}
    for label, name in enumerate(classes):
        photos = list(per_class[name])
        random.Random(f"{seed}:{name}").shuffle(photos)
        n_test = round(len(photos) * test_frac)
        n_val = round(len(photos) * val_frac)
        files["test"] += [(p, label) for p in photos[:n_test]]
        files["val"] += [(p, label) for p in photos[n_test : n_test + n_val]]
        files["train"] += [(p, label) for p in photos[n_test + n_val :]]
    frozen = {s: tuple(sorted(files[s])) for s in SUBSETS}
    return Split(root=root, classes=classes, files=frozen, seed=seed)


def parse_label_map(entries: list[str] | None) -> dict[str, tuple[str, ...]]:
    """``--label-map FOLDER=CLASS[,CLASS...]`` options as {folder: classes}; a UsageError
    naming a malformed one."""
    mapping: dict[str, tuple[str, ...]] = {}
    for entry in entries or ():
        folder, sep, classes = entry.partition("=")
        names = tuple(c.strip() for c in classes.split(",") if c.strip())
        if not sep or not folder.strip() or not names or len(set(names)) != len(names):
            raise UsageError(f"--label-map {entry!r}: expected FOLDER=CLASS or FOLDER=CLASS,CLASS "
                             "(e.g. paper-or-cardboard=cardboard,paper)")
        mapping[folder.strip()] = tuple(sorted(names))
    return mapping


def with_label_map(split: Split, mapping: dict[str, tuple[str, ...]]) -> Split:
    """The split with the entries of ``mapping`` that name one of its class folders."""
    return replace(split, label_map={k: v for k, v in mapping.items() if k in split.classes})


def item_key(rel: str) -> str:
    """What is split as one: a capture (all its exported frames), else the photo itself."""
    name = rel.rsplit("/", 1)[-1]
    return exported_item(name) or rel


def subset_of(key: str, *, val_frac: float, test_frac: float) -> str:
    """The subset of an item, from a hash of its key alone: stable as the folder grows."""
    share = int(hashlib.sha256(f"waste-sorter item {key}".encode()).hexdigest()[:13], 16) / 16**13
    return "test" if share < test_frac else "val" if share < test_frac + val_frac else "train"


def make_item_split(root: Path, *, val_frac: float, test_frac: float) -> Split:
    """Device photos split by item: every photo of a capture in the subset its id hashes to.
    A capture relabelled since keeps its subset."""
    _check_fractions(val_frac, test_frac)
    classes, per_class = scan_image_folder(root, min_classes=1)
    files: dict[str, list[tuple[str, int]]] = {s: [] for s in SUBSETS}
    for label, name in enumerate(classes):
        for rel in per_class[name]:
            files[subset_of(item_key(rel), val_frac=val_frac, test_frac=test_frac)].append((rel, label))
    frozen = {s: tuple(sorted(files[s])) for s in SUBSETS}
    return Split(root=root, classes=classes, files=frozen, seed=0, method="item")


def read_manifest(path: Path) -> dict[str, Any]:
    """The JSON object of a split manifest (one folder's, or several's under "folders"); a
    DataError naming the file when it cannot be read or is not one."""
    data = read_regular(path, what="split manifest", error=DataError, limit_bytes=MAX_MANIFEST_BYTES)
    try:
        raw = safe_json.loads(data)
    except ValueError as exc:
        raise DataError(f"{show_path(path)}: unreadable split manifest ({exc})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{show_path(path)}: unreadable split manifest (not a JSON object)")
    return raw


def folder_manifests(raw: dict[str, Any], path: Path) -> list[Any]:
    """The one-folder manifests in a manifest: itself, or the list under its "folders"."""
    if "folders" not in raw:
        return [raw]
    bodies = raw["folders"]
    if not isinstance(bodies, list) or not bodies or not all(isinstance(body, dict) for body in bodies):
        raise DataError(f"{show_path(path)}: split manifest key 'folders': expected a list of folder manifests, "
                        f"got {short(bodies)}")
    return bodies


def load_split(path: Path, root: Path) -> Split:
    """Read a one-folder manifest and check it against the data folder it describes."""
    raw = read_manifest(path)
    bodies = folder_manifests(raw, path)
    if "folders" in raw:
        raise DataError(f"{show_path(path)}: a split of {len(bodies)} data folders; give as many --data folders")
    return split_from_body(raw, root, path)


def split_from_body(raw: dict[str, Any], root: Path, path: Path) -> Split:
    """The split a one-folder manifest's content (an object) describes, checked against its
    data folder ``root``: a DataError naming ``path``, the key and the problem otherwise."""
    def bad(key: str, problem: str) -> DataError:
        return DataError(f"{show_path(path)}: split manifest key {key!r}: {problem}")

    for key in ("classes", "seed", *SUBSETS):
        if key not in raw:
            raise bad(key, "missing")
    classes = raw["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise bad("classes", f"expected a list of class names, got {short(classes)}")
    files = {}
    for subset in SUBSETS:
        entries = raw[subset]
        if not isinstance(entries, list):
            raise bad(subset, f"expected a list of [path, class index], got {short(entries)}")
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                    and type(entry[1]) is int):
                raise bad(subset, f"expected [path, class index], got {short(entry)}")
            if not 0 <= entry[1] < len(classes):
                raise bad(subset, f"class index {entry[1]} of {short(entry[0])} is not one of the "
                                  f"{len(classes)} classes (0 to {len(classes) - 1})")
        files[subset] = tuple((rel, label) for rel, label in entries)
    if type(raw["seed"]) is not int:
        raise bad("seed", f"expected a whole number, got {short(raw['seed'])}")
    method = raw.get("method", "shuffle")
    if method not in METHODS:
        raise bad("method", f"expected one of {', '.join(METHODS)}, got {short(method)}")
    label_map = raw.get("label_map", {})
    if not (isinstance(label_map, dict) and all(
            k in classes and isinstance(v, list) and v and all(isinstance(c, str) for c in v)
            for k, v in label_map.items())):
        raise bad("label_map", f"expected {{class folder: [model class, ...]}}, got {short(label_map)}")
    split = Split(root=Path(root), classes=tuple(classes), files=files, seed=raw["seed"], method=method,
                  label_map={k: tuple(v) for k, v in label_map.items()})
    if raw.get("sha256") != split.sha256:
        raise DataError(f"{show_path(path)}: split manifest hash does not match its file lists")
    missing = [rel for s in SUBSETS for rel, _ in files[s] if not (Path(root) / rel).is_file()]
    if missing:
        raise DataError(f"{show_path(path)}: {len(missing)} listed photos are missing in {root}, e.g. {missing[0]}")
    return split
