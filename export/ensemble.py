"""Several models read as one, to measure teachers together before a student learns from them
(``waste-sorter evaluate --model A --model B``; ``train --teacher A --teacher B`` distils from
the same mean).

Each model keeps its own preprocessing contract (its input size, its flatfield step): a frame
is prepared for each as the device would prepare it for that model alone, and the ensemble's
class probabilities are the mean of theirs. The models must have the same classes in the same
order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from device.classifier import Classifier
from device.errors import UsageError


class Ensemble:
    def __init__(self, models: list[Classifier]):
        if not models:
            raise ValueError("an ensemble needs at least one model")
        first = models[0]
        for other in models[1:]:
            if other.classes != first.classes:
                raise UsageError(f"{other.path}: classes {list(other.classes)} differ from "
                                 f"{first.path}'s {list(first.classes)}; an ensemble needs the same classes")
        self.models = list(models)

    @classmethod
    def load(cls, paths: list[Path | None], *, threads: int | str = 2) -> "Classifier | Ensemble":
        """One model as itself (None: the shipped one), several as their ensemble."""
        if len(paths) <= 1:
            return Classifier(paths[0] if paths else None, threads=threads)
        return cls([Classifier(p, threads=threads) for p in paths])

    @property
    def classes(self) -> tuple[str, ...]:
        return self.models[0].classes

    @property
    def path(self) -> str:
        """The members' paths, joined by " + " (how reports name it)."""
        return " + ".join(str(m.path) for m in self.models)

    @property
    def sha256(self) -> str:
        return " + ".join(m.sha256 for m in self.models)

    def probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        """The mean of the members' class probabilities (N x classes) of uint8 RGB frames."""
        return np.mean([m.probabilities(images) for m in self.models], axis=0)

    def close(self) -> None:
        for m in self.models:
            m.close()

    def __enter__(self) -> "Ensemble":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
