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
from device.errors import DataError
from device.scenes.relight import CONDITIONS, read_frame_shaped, relight

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    classes: tuple[str, ...]
    labels: np.ndarray  # label index per photo: a class index, or beyond the classes a set-valued label
    probabilities: np.ndarray  # N x classes
    paths: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # photos that could not be read
    #: The set-valued labels after the classes (``train --label-map``): each label's name
    #: (``paper-or-cardboard``) and the class indices it allows (either is right).
    label_sets: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def label_names(self) -> tuple[str, ...]:
        """A name per label index: the classes, then the set-valued labels."""
        return tuple(self.classes) + tuple(name for name, _ in self.label_sets)

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(1)

    @property
    def correct(self) -> np.ndarray:
        """Whether each photo's top class is one its label allows."""
        allowed = np.zeros((len(self.label_names), len(self.classes)), dtype=bool)
        allowed[np.arange(len(self.classes)), np.arange(len(self.classes))] = True
        for row, (_, classes) in enumerate(self.label_sets, len(self.classes)):
            allowed[row, list(classes)] = True
        return allowed[self.labels, self.predictions] if len(self.labels) else np.zeros(0, dtype=bool)

    @property
    def confusion(self) -> np.ndarray:
        """rows: true label (the classes, then any set-valued labels), columns: predicted class."""
        k, rows = len(self.classes), len(self.label_names)
        return np.bincount(self.labels * k + self.predictions, minlength=rows * k).reshape(rows, k)

    def summary(self) -> dict:
        c, correct = self.confusion, self.correct
        k = len(self.classes)
        per_class = {}
        for i, name in enumerate(self.classes):
            predicted, actual = self.predictions == i, self.labels == i
            per_class[name] = {"precision": float(correct[predicted].mean()) if predicted.any() else 0.0,
                               "recall": float(c[i, i] / actual.sum()) if actual.any() else 0.0,
                               "n": int(actual.sum())}
        per_label = {name: {"recall": float(correct[self.labels == row].mean()) if (self.labels == row).any() else 0.0,
                            "n": int((self.labels == row).sum())}
                     for row, (name, _) in enumerate(self.label_sets, k)}
        n = int(c.sum())
        return {"accuracy": float(correct.mean()) if n else 0.0, "n": n, "classes": list(self.classes),
                "per_class": per_class, "confusion": c.tolist(), "skipped": list(self.skipped),
                **({"per_label_set": per_label, "labels": list(self.label_names)} if self.label_sets else {})}

    def most_confused(self, k: int = 16) -> list[tuple[str, str, str, float]]:
        """(path, true, predicted, confidence) of the most confidently wrong photos."""
        wrong = np.flatnonzero(~self.correct)
        conf = self.probabilities[wrong, self.predictions[wrong]]
        order = wrong[np.argsort(-conf)][:k]
        names = self.label_names
        return [(self.paths[i], names[self.labels[i]], self.classes[self.predictions[i]],
                 float(self.probabilities[i, self.predictions[i]])) for i in order]


@dataclass(frozen=True)
class PhotoLists:
    """Each ``--data`` folder's photos with their label index (:class:`Evaluation`'s), and the
    set-valued labels those indices name beyond the model's classes."""

    folders: list[list[tuple[Path, int]]]
    label_sets: tuple[tuple[str, tuple[int, ...]], ...] = ()


def photo_lists(data: list[Path], classes: tuple[str, ...], split: Path | None, subset: str) -> PhotoLists:
    """Each folder's photos (of ``subset`` of ``split``, if given) with the model's class index
    (or, for a split with set-valued labels, the label's index after the classes)."""
    if split is not None:
        from export.data_split import load_data_split

        s = load_data_split(split, data)
        index = {name: class_index(name, classes) for name in s.classes}
        missing = [c for c, i in index.items() if i is None]
        if missing:
            raise DataError(f"{split}: classes {missing} are unknown to the model")
        label_sets = tuple((name, tuple(sorted(index[s.classes[c]] for c in t))) for name, t in s.label_sets)
        label_of = [index[name] for name in s.classes] + list(range(len(classes), len(classes) + len(label_sets)))
        return PhotoLists([[(p, label_of[label]) for p, label in s.folder_paths(i, subset)]
                           for i in range(len(s.folders))], label_sets)
    return PhotoLists([photo_list(Path(root), classes) for root in data])


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
             condition: str | None = None, label_sets: tuple = ()) -> Evaluation:
    """Score every readable photo (relit under ``condition`` if one is named); an unreadable one
    is logged and listed in ``skipped``. ``label_sets``: as :attr:`Evaluation.label_sets`."""
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
                      tuple(str(p) for p, _ in done), tuple(skipped), tuple(label_sets))


def merge(evaluations: list[Evaluation]) -> Evaluation:
    """One evaluation of the photos of several (of one model's classes)."""
    first = evaluations[0]
    return Evaluation(first.classes, np.concatenate([e.labels for e in evaluations]),
                      np.concatenate([e.probabilities for e in evaluations]),
                      tuple(p for e in evaluations for p in e.paths), tuple(p for e in evaluations for p in e.skipped),
                      first.label_sets)


def load_photo(path: str, condition: str | None = None) -> np.ndarray:
    """A photo as it is, or relit under one of :data:`device.scenes.relight.CONDITIONS`; a
    photo of another shape than the camera's is laid on a 4:3 board first
    (:func:`device.scenes.relight.frame_shaped`), as training does."""
    rgb = read_frame_shaped(path)
    return relight(rgb, CONDITIONS[condition]) if condition else rgb
