"""Several data folders (``--data`` repeated) as one training set with one split manifest.

Typically TrashNet, split by its own manifest (``device/model/split.json``, so its test photos
stay out of training as they did for the shipped model), plus the device photos a sorter
captured (``waste-sorter captures export``), split by item so that no device photo of an item
is trained on when another photo of it is tested on (:func:`export.split.make_item_split`).

Each folder keeps its own split and hash (:class:`export.split.Split`). The classes of several
folders are all of theirs in name order, as a scanned folder's are (so TrashNet's six, in the
shipped model's order, whichever folder comes first); a class index in :meth:`DataSplit.paths`
is into those. One folder is exactly the one-folder manifest and hash of before; several are saved
as ``{"folders": [manifest, ...], "sha256": ...}`` whose hash covers each folder's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from device.atomic import write_bytes
from device.errors import DataError
from device.safe_open import exists_entry, show_path
from export.split import (SUBSETS, Split, folder_manifests, make_split, read_manifest, split_from_body,
                          with_label_map)


@dataclass(frozen=True)
class DataSplit:
    folders: tuple[Split, ...]

    @property
    def classes(self) -> tuple[str, ...]:
        if len(self.folders) == 1 and not self.folders[0].label_map:
            return self.folders[0].classes  # as its manifest has them
        return tuple(sorted({c for s in self.folders for folder in s.classes for c in s.allowed(folder)}))

    @property
    def targets(self) -> tuple[tuple[int, ...], ...]:
        """What a label index stands for: the classes a photo of that label may be. The first
        ``len(classes)`` are the classes themselves; after them come the set-valued labels of
        ``--label-map`` (``paper-or-cardboard``: cardboard or paper), in order."""
        sets = sorted({self._classes_of(s, folder) for s in self.folders for folder in s.classes} -
                      {(k,) for k in range(len(self.classes))})
        return tuple((k,) for k in range(len(self.classes))) + tuple(sets)

    @property
    def target_names(self) -> tuple[str, ...]:
        """A name per :attr:`targets`: the class, or the first class folder given that set."""
        first = {}
        for s in self.folders:
            for folder in s.classes:
                first.setdefault(self._classes_of(s, folder), folder)
        return tuple(self.classes) + tuple(first[t] for t in self.targets[len(self.classes):])

    @property
    def label_sets(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """The set-valued labels after the classes, as :attr:`export.evaluation.Evaluation.label_sets`."""
        k = len(self.classes)
        return tuple(zip(self.target_names[k:], self.targets[k:]))

    def _classes_of(self, split: Split, folder: str) -> tuple[int, ...]:
        position = {name: i for i, name in enumerate(self.classes)}
        return tuple(sorted(position[c] for c in split.allowed(folder)))

    @property
    def sha256(self) -> str:
        if len(self.folders) == 1:
            return self.folders[0].sha256
        return hashlib.sha256(json.dumps([s.sha256 for s in self.folders]).encode()).hexdigest()

    def folder_paths(self, index: int, subset: str) -> list[tuple[Path, int]]:
        """One folder's photos of ``subset``, with label indices into :attr:`targets` (a class
        index into :attr:`classes` where the label is one class)."""
        split = self.folders[index]
        target = {t: i for i, t in enumerate(self.targets)}
        of_folder = [target[self._classes_of(split, folder)] for folder in split.classes]
        return [(path, of_folder[label]) for path, label in split.paths(subset)]

    def paths(self, subset: str) -> list[tuple[Path, int]]:
        return [item for i in range(len(self.folders)) for item in self.folder_paths(i, subset)]

    def training_items(self, *, with_val: bool, replay_per_class: int | None = None) -> list[tuple[Path, int]]:
        """What to train on: every folder's train photos (and val photos ``with_val``). With
        ``replay_per_class``, at most that many per class of the first folder, spread evenly
        over its list, with all the others': a short fine-tune on device photos that keeps the
        first folder's classes in view."""
        per_folder = []
        for i in range(len(self.folders)):
            items = self.folder_paths(i, "train") + (self.folder_paths(i, "val") if with_val else [])
            if i == 0 and replay_per_class is not None and len(self.folders) > 1:
                items = [x for c in range(len(self.targets)) for x in _spread([x for x in items if x[1] == c],
                                                                               replay_per_class)]
            per_folder.append(items)
        return [item for items in per_folder for item in items]

    def describe(self) -> list[str]:
        """A line per folder: its subsets' sizes and how it was split."""
        lines = []
        for split in self.folders:
            kind = "device photos, split by capture" if split.device_photos else f"split with seed {split.seed}"
            counts = " / ".join(f"{len(split.files[s])} {s}" for s in SUBSETS)
            lines.append(f"{split.root} ({kind}): {counts}")
        return lines

    def save(self, path: Path) -> None:
        if len(self.folders) == 1:
            self.folders[0].save(path)
            return
        body = {"folders": [s.body() for s in self.folders], "sha256": self.sha256}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, json.dumps(body, indent=1).encode())


def _spread(items: list, n: int) -> list:
    """At most ``n`` of ``items``, evenly spaced through the list (deterministic)."""
    if len(items) <= n:
        return items
    return [items[i * len(items) // n] for i in range(n)]


def load_data_split(path: Path, roots: list[Path]) -> DataSplit:
    """The split of ``roots`` in the manifest ``path`` (one folder's, or several's in order)."""
    return data_split_from_manifest(read_manifest(path), path, [Path(r) for r in roots])


def data_split_from_manifest(raw: dict, path: Path, roots: list[Path]) -> DataSplit:
    """The split of ``roots`` a manifest's content (:func:`export.split.read_manifest`) describes."""
    bodies = folder_manifests(raw, path)
    if "folders" not in raw:
        if len(roots) != 1:
            raise DataError(f"{show_path(path)}: a split of one data folder, but {len(roots)} --data folders were "
                            "given; give the split.json train wrote for these folders")
        return DataSplit((split_from_body(raw, roots[0], path),))
    if len(bodies) != len(roots):
        raise DataError(f"{show_path(path)}: a split of {len(bodies)} data folders, but {len(roots)} --data folders "
                        "were given (give them in the order train had them)")
    split = DataSplit(tuple(split_from_body(body, root, path) for body, root in zip(bodies, roots)))
    if raw.get("sha256") != split.sha256:
        raise DataError(f"{show_path(path)}: split manifest hash does not match its folders")
    return split


def split_for_training(path: Path, out_path: Path, roots: list[Path], *, val_frac: float, test_frac: float,
                       seed: int, label_map: dict[str, tuple[str, ...]] | None = None) -> DataSplit:
    """The split ``train`` uses. The manifest at ``path`` when it exists: one of as many folders
    is used as it is; a one-folder manifest with several folders is the first folder's (the
    others are split afresh: capture exports by item). Without one, every folder is split afresh
    and the manifest saved at ``path``. The split used is always saved at ``out_path`` too,
    which ``export`` and ``quantize`` then take. ``label_map`` (``train --label-map``) is
    recorded in each folder's manifest; a manifest that records another one is refused."""
    path, out_path, roots = Path(path), Path(out_path), [Path(r) for r in roots]
    mapping = label_map or {}

    def fresh(root: Path) -> Split:
        return with_label_map(make_split(root, val_frac=val_frac, test_frac=test_frac, seed=seed), mapping)

    if exists_entry(path):
        raw = read_manifest(path)
        as_is = "folders" in raw or len(roots) == 1  # the manifest at path is the whole split
        if as_is:
            split = data_split_from_manifest(raw, path, roots)
        else:
            split = DataSplit((split_from_body(raw, roots[0], path), *[fresh(root) for root in roots[1:]]))
        for folder in split.folders:
            if label_map is not None and with_label_map(folder, mapping).label_map != folder.label_map:
                raise DataError(f"{show_path(path)}: the split of {folder.root} records the label map "
                                f"{folder.label_map or 'none'}, not --label-map's {mapping or 'none'}")
    else:
        split = DataSplit(tuple(fresh(root) for root in roots))
        split.save(path)
        as_is = True
    if not (as_is and out_path.resolve() == path.resolve()):
        split.save(out_path)
    return split
