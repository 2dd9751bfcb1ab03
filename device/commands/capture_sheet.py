"""A contact sheet of captures: one PNG of numbered tiles to look at in any image viewer (after
``scp``), so that ``waste-sorter captures label ID CLASS`` can be typed from it.

Each tile is a capture's last decision frame with its id in large type in the top-left corner
and what the model said (class and confidence; the label too, once it has one) along the bottom.
Made with OpenCV alone: it runs on the Pi, where matplotlib is not installed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from device.capture_store import Capture
from device.contract import read_rgb
from device.errors import DataError

log = logging.getLogger(__name__)

TILE_SIZE = (320, 240)  # width, height of one capture on the sheet
COLUMNS = 5
GAP_PX = 6
BACKGROUND = (40, 40, 40)  # RGB
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float, thickness: int) -> None:
    """White text with a black outline, readable on any frame."""
    cv2.putText(image, text, origin, FONT, scale, (0, 0, 0), thickness + 3, cv2.LINE_AA)
    cv2.putText(image, text, origin, FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def tile(capture: Capture, rgb: np.ndarray | None) -> np.ndarray:
    """One capture's tile (RGB); a frame that cannot be read is a grey tile that says so."""
    w, h = TILE_SIZE
    if rgb is None:
        out = np.full((h, w, 3), 90, np.uint8)
        _text(out, "frame unreadable", (10, h // 2), 0.6, 1)
    else:
        out = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    cv2.rectangle(out, (0, 0), (14 + 26 * len(str(capture.id)), 46), (0, 0, 0), -1)
    _text(out, str(capture.id), (6, 38), 1.2, 2)
    said = f"{capture.predicted or '-'} {capture.confidence:.2f}"
    if capture.label:
        said += f"  = {capture.label}"
    cv2.rectangle(out, (0, h - 28), (w, h), (0, 0, 0), -1)
    _text(out, said, (6, h - 8), 0.6, 1)
    return out


def contact_sheet(folder: Path, captures: list[Capture]) -> np.ndarray:
    """The tiles of ``captures`` in rows of COLUMNS, in the order given (RGB)."""
    if not captures:
        raise DataError("no captures to put on a sheet")
    w, h = TILE_SIZE
    rows = (len(captures) + COLUMNS - 1) // COLUMNS
    columns = min(COLUMNS, len(captures))
    sheet = np.empty((rows * (h + GAP_PX) + GAP_PX, columns * (w + GAP_PX) + GAP_PX, 3), np.uint8)
    sheet[:] = BACKGROUND
    for i, capture in enumerate(captures):
        try:
            rgb = read_rgb(str(Path(folder) / capture.frames[-1])) if capture.frames else None
        except DataError as exc:
            log.warning("capture %d: %s", capture.id, exc)
            rgb = None
        y = GAP_PX + (i // COLUMNS) * (h + GAP_PX)
        x = GAP_PX + (i % COLUMNS) * (w + GAP_PX)
        sheet[y:y + h, x:x + w] = tile(capture, rgb)
    return sheet


def write_sheet(path: Path, sheet: np.ndarray) -> None:
    """Write the sheet as a PNG; DataError naming the path when it cannot be written."""
    try:
        ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError("PNG encoding failed")
        Path(path).write_bytes(png.tobytes())
    except OSError as exc:
        raise DataError(f"{path}: cannot write the contact sheet ({exc.strerror or exc})") from None
