"""Evaluate a model on a folder of labelled photos, through the device's own classifier.

    waste-sorter evaluate --data DIR [--model M] [--split S --subset test] [--out-dir D] [--json]

Needs only the device dependencies (onnxruntime, OpenCV, numpy); the PNGs (confusion matrix,
the most confidently wrong photos) need matplotlib and are skipped without it. Without
``--model`` the device's default model is evaluated. Class folders are matched to the model's
classes by name.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.classifier import Classifier
from device.contract import read_rgb
from device.errors import DataError

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="ImageFolder: one folder per class")
    p.add_argument("--model", type=Path, help="ONNX model (default: the device's shipped model)")
    p.add_argument("--split", type=Path, help="evaluate only one subset of this split manifest")
    p.add_argument("--subset", choices=("train", "val", "test"), default="test")
    p.add_argument("--out-dir", type=Path, help="write confusion.png and most_confused.png here")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--threads", type=int, default=2)


@dataclass(frozen=True)
class Evaluation:
    classes: tuple[str, ...]
    labels: np.ndarray  # true class index per photo
    probabilities: np.ndarray  # N x classes
    paths: tuple[str, ...]

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
                "per_class": per_class, "confusion": c.tolist()}

    def most_confused(self, k: int = 16) -> list[tuple[str, str, str, float]]:
        """(path, true, predicted, confidence) of the most confidently wrong photos."""
        wrong = np.flatnonzero(self.predictions != self.labels)
        conf = self.probabilities[wrong, self.predictions[wrong]]
        order = wrong[np.argsort(-conf)][:k]
        return [(self.paths[i], self.classes[self.labels[i]], self.classes[self.predictions[i]],
                 float(self.probabilities[i, self.predictions[i]])) for i in order]


def photo_list(data: Path, classes: tuple[str, ...], split: Path | None, subset: str) -> list[tuple[Path, int]]:
    if split is not None:
        from export.split import load_split

        s = load_split(split, data)
        index = {name: classes.index(name) for name in s.classes if name in classes}
        missing = [c for c in s.classes if c not in index]
        if missing:
            raise DataError(f"{split}: classes {missing} are unknown to the model")
        return [(p, index[s.classes[label]]) for p, label in s.paths(subset)]
    from export.split import scan_image_folder

    folder_classes, per_class = scan_image_folder(data)
    unknown = [c for c in folder_classes if c not in classes]
    if unknown:
        raise DataError(f"{data}: class folders {unknown} are not classes of the model {list(classes)}")
    return [(data / rel, classes.index(c)) for c in folder_classes for rel in per_class[c]]


def evaluate(classifier: Classifier, items: list[tuple[Path, int]], batch: int = 32) -> Evaluation:
    probs = []
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        probs.append(classifier.probabilities([read_rgb(str(p)) for p, _ in chunk]))
    return Evaluation(classifier.classes, np.array([label for _, label in items], dtype=np.int64),
                      np.concatenate(probs) if probs else np.zeros((0, len(classifier.classes))),
                      tuple(str(p) for p, _ in items))


def format_report(e: Evaluation) -> str:
    s = e.summary()
    width = max(len(c) for c in e.classes)
    lines = [f"accuracy {100 * s['accuracy']:.2f}% on {s['n']} photos", "",
             f"{'class':<{width}}  precision  recall     n"]
    for name, m in s["per_class"].items():
        lines.append(f"{name:<{width}}  {100 * m['precision']:8.1f}%  {100 * m['recall']:5.1f}%  {m['n']:4d}")
    lines += ["", "confusion (rows: true, columns: predicted)",
              " " * (width + 2) + " ".join(f"{c[:6]:>6}" for c in e.classes)]
    for name, row in zip(e.classes, e.confusion):
        lines.append(f"{name:<{width}}  " + " ".join(f"{v:6d}" for v in row))
    return "\n".join(lines)


def write_plots(e: Evaluation, out_dir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no PNGs written")
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 5))
    c = e.confusion
    ax.imshow(c, cmap="Blues")
    ax.set(xticks=range(len(e.classes)), yticks=range(len(e.classes)), xticklabels=e.classes,
           yticklabels=e.classes, xlabel="predicted", ylabel="true",
           title=f"accuracy {100 * e.summary()['accuracy']:.1f}% (n={int(c.sum())})")
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    for (i, j), v in np.ndenumerate(c):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > c.max() / 2 else "black")
    fig.tight_layout()
    paths = [out_dir / "confusion.png"]
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    wrong = e.most_confused(16)
    if wrong:
        cols = 4
        rows = (len(wrong) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.6 * rows), squeeze=False)
        for ax, (path, true, pred, conf) in zip(axes.ravel(), wrong):
            ax.imshow(read_rgb(path))
            ax.set_title(f"{Path(path).name}\ntrue {true} / said {pred} {conf:.2f}", fontsize=8)
        for ax in axes.ravel():
            ax.axis("off")
        fig.suptitle("most confidently wrong")
        fig.tight_layout()
        paths.append(out_dir / "most_confused.png")
        fig.savefig(paths[1], dpi=100)
        plt.close(fig)
    return paths


def main(args) -> int:
    classifier = Classifier(args.model, threads=args.threads)
    items = photo_list(args.data, classifier.classes, args.split, args.subset)
    if not items:
        raise DataError(f"{args.data}: no photos to evaluate")
    result = evaluate(classifier, items)
    if args.json:
        print(json.dumps({**result.summary(), "model": str(classifier.path),
                          "model_sha256": classifier.sha256}))
    else:
        print(format_report(result))
    if args.out_dir:
        for path in write_plots(result, args.out_dir):
            log.info("wrote %s", path)
    return 0
