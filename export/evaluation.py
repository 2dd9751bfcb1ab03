"""What a model scores on labelled photos, through the device's own classifier.

Class folders are matched to the model's classes by name, in any case (``Cardboard/`` holds
cardboard); a folder may hold only some of the classes. Photos that cannot be read are skipped
with a warning and listed. A photo may be scored as it is or relit under one of
:data:`device.scenes.relight.CONDITIONS` (its item on one board under one light).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.classifier import Classifier
from device.contract import read_rgb
from device.errors import DataError
from device.scenes.relight import CONDITIONS, relight

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    classes: tuple[str, ...]
    labels: np.ndarray  # true class index per photo
    probabilities: np.ndarray  # N x classes
    paths: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # photos that could not be read

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(1)

    @property
    def confusion(self) -> np.ndarray:
        """rows: true class, columns: predicted class."""
        k = len(self.classes)
        return np.bincount(self.labels * k + self.predictions, minlength=k * k).reshape(k, k)

    def summary(self) -> dict:
        c = self.confusion
        per_class = {}
        for i, name in enumerate(self.classes):
            predicted, actual = int(c[:, i].sum()), int(c[i, :].sum())
            per_class[name] = {"precision": float(c[i, i] / predicted) if predicted else 0.0,
                               "recall": float(c[i, i] / actual) if actual else 0.0, "n": actual}
        n = int(c.sum())
        return {"accuracy": float(np.trace(c) / n) if n else 0.0, "n": n, "classes": list(self.classes),
                "per_class": per_class, "confusion": c.tolist(), "skipped": list(self.skipped)}

    def most_confused(self, k: int = 16) -> list[tuple[str, str, str, float]]:
        """(path, true, predicted, confidence) of the most confidently wrong photos."""
        wrong = np.flatnonzero(self.predictions != self.labels)
        conf = self.probabilities[wrong, self.predictions[wrong]]
        order = wrong[np.argsort(-conf)][:k]
        return [(self.paths[i], self.classes[self.labels[i]], self.classes[self.predictions[i]],
                 float(self.probabilities[i, self.predictions[i]])) for i in order]


def photo_lists(data: list[Path], classes: tuple[str, ...], split: Path | None,
                subset: str) -> list[list[tuple[Path, int]]]:
    """Each folder's photos (of ``subset`` of ``split``, if given) with the model's class index."""
    if split is not None:
        from export.data_split import load_data_split

        s = load_data_split(split, data)
        index = {name: class_index(name, classes) for name in s.classes}
        missing = [c for c, i in index.items() if i is None]
        if missing:
            raise DataError(f"{split}: classes {missing} are unknown to the model")
        return [[(p, index[s.classes[label]]) for p, label in s.folder_paths(i, subset)]
                for i in range(len(s.folders))]
    return [photo_list(Path(root), classes) for root in data]


def photo_list(data: Path, classes: tuple[str, ...]) -> list[tuple[Path, int]]:
    """Every photo of the folder ``data`` with the model's class index of its folder."""
    from export.split import scan_image_folder

    folder_classes, per_class = scan_image_folder(data, min_classes=1)
    index = {name: class_index(name, classes) for name in folder_classes}
    unknown = [c for c, i in index.items() if i is None]
    if unknown:
        raise DataError(f"{data}: class folders {unknown} are not classes of the model {list(classes)}")
    return [(data / rel, index[c]) for c in folder_classes for rel in per_class[c]]


def class_index(name: str, classes: tuple[str, ...]) -> int | None:
    """The model class a folder name stands for: the same name, else the same name in another case."""
    if name in classes:
        return classes.index(name)
    folded = [i for i, c in enumerate(classes) if c.casefold() == name.casefold()]
    return folded[0] if len(folded) == 1 else None


def evaluate(classifier: Classifier, items: list[tuple[Path, int]], batch: int = 32,
             condition: str | None = None) -> Evaluation:
    """Score every readable photo (relit under ``condition`` if one is named); an unreadable one
    is logged and listed in ``skipped``."""
    probs, done, skipped = [], [], []
    for start in range(0, len(items), batch):
        images = []
        for path, label in items[start:start + batch]:
            try:
                images.append(load_photo(str(path), condition))
            except DataError as exc:  # names the file
                log.warning("skipped %s", exc)
                skipped.append(str(path))
                continue
            done.append((path, label))
        if images:
            probs.append(classifier.probabilities(images))
    return Evaluation(classifier.classes, np.array([label for _, label in done], dtype=np.int64),
                      np.concatenate(probs) if probs else np.zeros((0, len(classifier.classes))),
                      tuple(str(p) for p, _ in done), tuple(skipped))


def merge(evaluations: list[Evaluation]) -> Evaluation:
    """One evaluation of the photos of several (of one model's classes)."""
    first = evaluations[0]
    return Evaluation(first.classes, np.concatenate([e.labels for e in evaluations]),
                      np.concatenate([e.probabilities for e in evaluations]),
                      tuple(p for e in evaluations for p in e.paths), tuple(p for e in evaluations for p in e.skipped))


def load_photo(path: str, condition: str | None = None) -> np.ndarray:
    """A photo as it is, or relit under one of :data:`device.scenes.relight.CONDITIONS`."""
    rgb = read_rgb(path)
    return relight(rgb, CONDITIONS[condition]) if condition else rgb
