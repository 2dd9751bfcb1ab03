"""Evaluate a model on a folder of labelled photos, through the device's own classifier.

    waste-sorter evaluate --data DIR [--data DIR2 ...] [--model M] [--split S --subset test]
                          [--out-dir D] [--json] [--relight all | --relight grey,warm,dim,green]

Needs only the device dependencies (onnxruntime, OpenCV, numpy). Without ``--model`` the
device's default model is evaluated. Class folders are matched to the model's classes by name,
in any case (``Cardboard/`` holds cardboard); a folder may hold only some of the classes.
Photos that cannot be read are skipped with a warning and listed in the report. With several
``--data`` folders (and the split ``train`` wrote for them) each folder is also reported on its
own, and a folder of device photos (``waste-sorter captures export``) is named as such: the
accuracy on what the sorter's own camera saw, apart from the photos'.

``--relight`` measures the model under device conditions as well: each photo's own background
and light are taken out and the item is put on one board under one light
(:mod:`device.scenes.relight`: a grey board, the same under warm tungsten-like light, at 60% light, and
a green board). Each condition reports accuracy, per-class figures and the share of photos
whose label changed from the photo as it is ("label changed by relighting").

PNGs (the confusion matrix and the most confidently wrong photos) are written only with
``--out-dir``, and only where matplotlib is installed (``pip install matplotlib``; it is not a
device dependency); without it, or if they cannot be written, a warning says so and the printed
result and exit status stay as they are.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.commands.capture_export import is_capture_export
from device.classifier import Classifier
from device.contract import read_rgb
from device.errors import DataError, UsageError
from device.scenes.relight import CONDITIONS, relight

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, action="append",
                   help="ImageFolder: one folder per class; repeat for several (each is reported too)")
    p.add_argument("--model", type=Path, help="ONNX model (default: the device's shipped model)")
    p.add_argument("--split", type=Path, help="evaluate only one subset of this split manifest")
    p.add_argument("--subset", choices=("train", "val", "test"), default="test")
    p.add_argument("--out-dir", type=Path,
                   help="also write confusion.png and most_confused.png here (needs matplotlib); "
                        "without this option no PNGs are written")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--relight", metavar="NAMES",
                   help=f"also measure on the photos relit onto one board: 'all' or a comma-separated "
                        f"list of {', '.join(CONDITIONS)}")


def relight_names(value: str | None) -> list[str]:
    """The conditions named by ``--relight`` (``all``: every one), or a UsageError."""
    if not value:
        return []
    names = list(CONDITIONS) if value.strip() == "all" else [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown or not names:
        raise UsageError(f"--relight: unknown condition {', '.join(unknown) or repr(value)} "
                         f"(choose all or some of {', '.join(CONDITIONS)})")
    return list(dict.fromkeys(names))


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


def folder_summaries(data: list[Path], per_folder: list[Evaluation]) -> dict:
    """Each folder's summary, and that of the device photos of all of them (None without)."""
    folders = [{"data": str(root), "device_photos": is_capture_export(root), **e.summary()}
               for root, e in zip(data, per_folder)]
    device = [e for root, e in zip(data, per_folder) if is_capture_export(root)]
    return {"folders": folders, "device_photos": merge(device).summary() if device else None}


def format_folders(summaries: dict) -> str:
    lines = ["per folder"]
    for f in summaries["folders"]:
        kind = "device photos" if f["device_photos"] else "photos"
        lines.append(f"  {kind:<13} {100 * f['accuracy']:7.2f}% on {f['n']:5d}  {f['data']}")
    device = summaries["device_photos"]
    if device is not None:
        lines.append(f"accuracy on device photos: {100 * device['accuracy']:.2f}% on {device['n']} photos")
    return "\n".join(lines)


def load_photo(path: str, condition: str | None = None) -> np.ndarray:
    """A photo as it is, or relit under one of :data:`device.scenes.relight.CONDITIONS`."""
    rgb = read_rgb(path)
    return relight(rgb, CONDITIONS[condition]) if condition else rgb


def relit_summary(e: Evaluation, photo: Evaluation) -> dict:
    """A relit evaluation's summary plus the share of photos whose label relighting changed."""
    same = dict(zip(photo.paths, photo.predictions))
    changed = [same[p] != pred for p, pred in zip(e.paths, e.predictions) if p in same]
    return {**e.summary(), "label_changed": float(np.mean(changed)) if changed else 0.0}


def format_conditions(photo: Evaluation, relit: dict[str, Evaluation]) -> str:
    lines = ["device conditions (each photo's item on one board under one light)",
             f"{'condition':<10} accuracy  label changed  " + "  ".join(f"{c[:8]:>8}" for c in photo.classes)]
    for name, e in {"photo": photo, **relit}.items():
        s = relit_summary(e, photo)
        recalls = "  ".join(f"{100 * m['recall']:7.1f}%" for m in s["per_class"].values())
        changed = "" if name == "photo" else f"{100 * s['label_changed']:.1f}%"
        lines.append(f"{name:<10} {100 * s['accuracy']:7.2f}%  {changed:>13}  {recalls}")
    lines.append("(columns after 'label changed': recall per class)")
    return "\n".join(lines)


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
    if e.skipped:
        shown = ", ".join(e.skipped[:5]) + (f" and {len(e.skipped) - 5} more" if len(e.skipped) > 5 else "")
        lines += ["", f"skipped {len(e.skipped)} unreadable photo{'s' if len(e.skipped) > 1 else ''}: {shown}"]
    return "\n".join(lines)


def write_plots(e: Evaluation, out_dir: Path, condition: str | None = None) -> list[Path]:
    """confusion.png and most_confused.png (``_NAME`` added for a relit condition, whose photos
    are shown relit)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no PNGs written (pip install matplotlib)")
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
    suffix = f"_{condition}" if condition else ""
    if condition:
        ax.set_title(f"{condition}: {ax.get_title()}")
    paths = [out_dir / f"confusion{suffix}.png"]
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    wrong = e.most_confused(16)
    if wrong:
        cols = 4
        rows = (len(wrong) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.6 * rows), squeeze=False)
        for ax, (path, true, pred, conf) in zip(axes.ravel(), wrong):
            ax.imshow(load_photo(path, condition))
            ax.set_title(f"{Path(path).name}\ntrue {true} / said {pred} {conf:.2f}", fontsize=8)
        for ax in axes.ravel():
            ax.axis("off")
        fig.suptitle("most confidently wrong")
        fig.tight_layout()
        paths.append(out_dir / f"most_confused{suffix}.png")
        fig.savefig(paths[1], dpi=100)
        plt.close(fig)
    return paths


def main(args) -> int:
    conditions = relight_names(args.relight)
    classifier = Classifier(args.model, threads=args.threads)
    lists = photo_lists(args.data, classifier.classes, args.split, args.subset)
    items = [item for folder in lists for item in folder]
    shown = ", ".join(map(str, args.data))
    if not items:
        raise DataError(f"{shown}: no photos to evaluate")
    per_folder = [evaluate(classifier, folder) for folder in lists]
    result = merge(per_folder)
    if not len(result.labels):
        raise DataError(f"{shown}: none of the {len(items)} photos could be read")
    folders = folder_summaries(args.data, per_folder)
    relit = {name: evaluate(classifier, items, condition=name) for name in conditions}
    if args.json:
        extra = {"relit": {name: relit_summary(e, result) for name, e in relit.items()}} if relit else {}
        print(json.dumps({**result.summary(), "model": str(classifier.path),
                          "model_sha256": classifier.sha256, **folders, **extra}))
    else:
        print(format_report(result))
        if len(args.data) > 1 or folders["device_photos"] is not None:
            print("\n" + format_folders(folders))
        if relit:
            print("\n" + format_conditions(result, relit))
    if args.out_dir:
        try:
            for condition, e in {None: result, **relit}.items():
                for path in write_plots(e, args.out_dir, condition):
                    log.info("wrote %s", path)
        except OSError as exc:  # the result is printed already: a lost PNG is only a warning
            log.warning("could not write the PNGs to %s (%s)", args.out_dir, exc)
    return 0
