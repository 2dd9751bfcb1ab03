"""Evaluate a model on a folder of labelled photos, through the device's own classifier.

    waste-sorter evaluate --data DIR [--data DIR2 ...] [--model M [--model M2 ...]] [--split S --subset test]
                          [--out-dir D] [--json] [--relight all | --relight grey,warm,dim,green,textured]

Needs only the device dependencies (onnxruntime, OpenCV, numpy). Without ``--model`` the
device's default model is evaluated; with several, their ensemble (:mod:`export.ensemble`). Class folders are matched to the model's classes by name,
in any case (``Cardboard/`` holds cardboard); a folder may hold only some of the classes.
Photos that cannot be read are skipped with a warning and listed in the report. With several
``--data`` folders (and the split ``train`` wrote for them) each folder is also reported on its
own, and a folder of device photos (``waste-sorter captures export``) is named as such: the
accuracy on what the sorter's own camera saw, apart from the photos'.

``--relight`` measures the model under device conditions as well: each photo's own background
and light are taken out and the item is put on one board under one light
(:mod:`device.scenes.relight`: a grey board, the same under warm tungsten-like light, at 60%
light, a green board, and the grey board with a grain and blotches of 6%). Each condition
reports accuracy, per-class figures and the share of photos whose label changed from the photo
as it is ("label changed by relighting").

PNGs (the confusion matrix and the most confidently wrong photos) are written only with
``--out-dir``, and only where matplotlib is installed (``pip install matplotlib``; it is not a
device dependency); without it, or if they cannot be written, a warning says so and the printed
result and exit status stay as they are.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from device.errors import DataError, UsageError
from device.scenes.relight import CONDITIONS
from export.ensemble import Ensemble
from export.evaluation import Evaluation, evaluate, merge, photo_lists
from export.evaluation_report import (folder_summaries, format_conditions, format_folders, format_report,
                                      relit_summary, write_plots)

__all__ = ["Evaluation", "add_arguments", "main", "relight_names"]  # Evaluation: export.evaluation's

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, action="append",
                   help="ImageFolder: one folder per class; repeat for several (each is reported too)")
    p.add_argument("--model", type=Path, action="append", default=[],
                   help="ONNX model (default: the device's shipped model); repeat to measure several "
                        "as one ensemble (the mean of their class probabilities, each with its own "
                        "preprocessing)")
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


def main(args) -> int:
    conditions = relight_names(args.relight)
    classifier = Ensemble.load(args.model, threads=args.threads)
    lists = photo_lists(args.data, classifier.classes, args.split, args.subset)
    items = [item for folder in lists.folders for item in folder]
    shown = ", ".join(map(str, args.data))
    if not items:
        raise DataError(f"{shown}: no photos to evaluate")
    per_folder = [evaluate(classifier, folder, label_sets=lists.label_sets) for folder in lists.folders]
    result = merge(per_folder)
    if not len(result.labels):
        raise DataError(f"{shown}: none of the {len(items)} photos could be read")
    folders = folder_summaries(args.data, per_folder)
    relit_per_folder = [{name: evaluate(classifier, folder, condition=name, label_sets=lists.label_sets)
                         for name in conditions} for folder in lists.folders]
    relit = {name: merge([r[name] for r in relit_per_folder]) for name in conditions}
    several = len(args.data) > 1
    if args.json:
        extra = {"relit": {name: relit_summary(e, result) for name, e in relit.items()}} if relit else {}
        for summary, photo, folder_relit in zip(folders["folders"], per_folder, relit_per_folder):
            if folder_relit:
                summary["relit"] = {name: relit_summary(e, photo) for name, e in folder_relit.items()}
        print(json.dumps({**result.summary(), "model": str(classifier.path),
                          "model_sha256": classifier.sha256, **folders, **extra}))
    else:
        print(format_report(result))
        if several or folders["device_photos"] is not None:
            print("\n" + format_folders(folders))
        if relit:
            print("\n" + format_conditions(result, relit))
        if several:  # each source apart: a figure on one photo set is not the others'
            for root, photo, folder_relit in zip(args.data, per_folder, relit_per_folder):
                print(f"\n== {root}\n" + format_report(photo))
                if folder_relit:
                    print("\n" + format_conditions(photo, folder_relit))
    if args.out_dir:
        try:
            plots = [("", result, relit)]
            if several:
                plots += [(f"{Path(root).name}_", photo, folder_relit)
                          for root, photo, folder_relit in zip(args.data, per_folder, relit_per_folder)]
            for prefix, photo, conditions_of in plots:
                for condition, e in {None: photo, **conditions_of}.items():
                    for path in write_plots(e, args.out_dir, condition, prefix):
                        log.info("wrote %s", path)
        except (OSError, DataError) as exc:  # printed already: a lost PNG (or photo on it) is only a warning
            log.warning("could not write the PNGs to %s (%s)", args.out_dir, exc)
    return 0
