"""How an evaluation is shown: its tables (per class, per folder, per device condition) and
its PNGs (the confusion matrix and the most confidently wrong photos; only where matplotlib is
installed, which is not a device dependency)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from device.commands.capture_export import is_capture_export
from export.evaluation import Evaluation, load_photo, merge

log = logging.getLogger(__name__)


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
    width = max(len(c) for c in e.label_names)
    lines = [f"accuracy {100 * s['accuracy']:.2f}% on {s['n']} photos", "",
             f"{'class':<{width}}  precision  recall     n"]
    for name, m in s["per_class"].items():
        lines.append(f"{name:<{width}}  {100 * m['precision']:8.1f}%  {100 * m['recall']:5.1f}%  {m['n']:4d}")
    for (name, allowed), m in zip(e.label_sets, s.get("per_label_set", {}).values()):
        either = " or ".join(e.classes[i] for i in allowed)
        lines.append(f"{name:<{width}}  {'':>9}  {100 * m['recall']:5.1f}%  {m['n']:4d}  (right as {either})")
    lines += ["", "confusion (rows: true, columns: predicted)",
              " " * (width + 2) + " ".join(f"{c[:6]:>6}" for c in e.classes)]
    for name, row in zip(e.label_names, e.confusion):
        lines.append(f"{name:<{width}}  " + " ".join(f"{v:6d}" for v in row))
    if e.skipped:
        shown = ", ".join(e.skipped[:5]) + (f" and {len(e.skipped) - 5} more" if len(e.skipped) > 5 else "")
        lines += ["", f"skipped {len(e.skipped)} unreadable photo{'s' if len(e.skipped) > 1 else ''}: {shown}"]
    return "\n".join(lines)


def write_plots(e: Evaluation, out_dir: Path, condition: str | None = None, prefix: str = "") -> list[Path]:
    """confusion.png and most_confused.png (``_NAME`` added for a relit condition, whose photos
    are shown relit; ``prefix`` before the names: one data folder's)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no PNGs written (pip install matplotlib)")
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 5 + 0.4 * len(e.label_sets)))
    c = e.confusion
    ax.imshow(c, cmap="Blues")
    ax.set(xticks=range(len(e.classes)), yticks=range(len(e.label_names)), xticklabels=e.classes,
           yticklabels=e.label_names, xlabel="predicted", ylabel="true",
           title=f"accuracy {100 * e.summary()['accuracy']:.1f}% (n={int(c.sum())})")
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    for (i, j), v in np.ndenumerate(c):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > c.max() / 2 else "black")
    fig.tight_layout()
    suffix = f"_{condition}" if condition else ""
    if condition:
        ax.set_title(f"{condition}: {ax.get_title()}")
    paths = [out_dir / f"{prefix}confusion{suffix}.png"]
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
        paths.append(out_dir / f"{prefix}most_confused{suffix}.png")
        fig.savefig(paths[1], dpi=100)
        plt.close(fig)
    return paths
