"""Pictures for a technician without a display: a histogram PNG to copy off with scp.

matplotlib (Agg backend, no display) is imported inside :func:`write_histogram` only, so
loading a calibration on the sorter never pays for it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from device import atomic
from device.calibration_file.schema import Calibration

log = logging.getLogger(__name__)


def write_histogram(path: Path, board_image: np.ndarray, calibration: Calibration) -> Path | None:
    """Luma and per-channel histograms of the board, with the target and clipping level marked.
    None (with a warning) where matplotlib is not installed (on a Pi: apt install python3-matplotlib)
    or the PNG cannot be written."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed: no histogram PNG (apt install python3-matplotlib)")
        return None

    luma = cv2.cvtColor(board_image, cv2.COLOR_RGB2GRAY)
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    bins = np.arange(257)
    for channel, colour in enumerate(("tab:red", "tab:green", "tab:blue")):
        ax.hist(board_image[..., channel].ravel(), bins=bins, histtype="step", color=colour,
                label="RGB"[channel], alpha=0.8)
    ax.hist(luma.ravel(), bins=bins, histtype="stepfilled", color="0.4", alpha=0.35, label="luma")
    target = calibration.target
    ax.axvspan(target.median_luma - target.tolerance, target.median_luma + target.tolerance,
               color="tab:green", alpha=0.15, label=f"target {target.median_luma:.0f}")
    ax.axvline(calibration.board.median_luma, color="k", lw=1, label=f"median {calibration.board.median_luma:.1f}")
    ax.axvline(calibration.gate.saturation_level, color="tab:red", ls="--", lw=1, label="clipped")
    ax.set_xlim(0, 256)
    ax.set_xlabel("level (0-255)")
    ax.set_ylabel("pixels")
    ax.set_title(f"calibration {calibration.id}: {calibration.exposure_us} us, gain {calibration.analogue_gain:.2f}, "
                 f"{100 * calibration.board.saturated_frac:.2f}% clipped", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    try:
        atomic.write_with(Path(path), lambda tmp: fig.savefig(tmp, format="png"), keep_suffix=True)
    except OSError as exc:  # the histogram is a convenience: the calibration is saved without it
        log.warning("%s: histogram not written (%s)", path, exc.strerror or exc)
        return None
    return Path(path)
