"""The model's start-up self-test: a known picture in, the numbers the workstation got out.

``export``/``quantize`` run the model once on :func:`reference_image` and write the class
probabilities into the manifest (``self_test``); :class:`device.classifier.Classifier` runs the
same picture at load and refuses the model when this runtime's numbers differ by more than
:data:`TOLERANCE`: an onnxruntime build or a CPU that computes wrong numbers (a broken int8
kernel, an emulator bug) stops the sorter at start instead of sorting wrongly.
"""

from __future__ import annotations

import numpy as np

#: Name of the reference picture written into the manifest (bump it when the picture changes).
REFERENCE = "synthetic-board-v1"
#: Largest allowed difference in any class probability between the manifest and this runtime
#: (int8 kernels differ slightly between CPUs: about 0.005 between x86 and aarch64).
TOLERANCE = 0.05


def reference_image(width: int = 512, height: int = 384) -> np.ndarray:
    """A deterministic uint8 RGB picture (no random numbers, no file): a lit board with a few
    coloured, textured shapes on it."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    x, y = xx / width, yy / height
    shade = 1.0 - 0.3 * ((x - 0.5) ** 2 + (y - 0.5) ** 2)
    image = np.empty((height, width, 3), np.float32)
    image[:] = np.array([205, 200, 190], np.float32)
    image *= shade[..., None]
    stripes = 0.5 + 0.5 * np.sin(40 * x + 25 * y)
    can = ((x - 0.38) / 0.16) ** 2 + ((y - 0.5) / 0.3) ** 2 < 1
    image[can] = np.stack([90 + 120 * stripes, 95 + 100 * stripes, 110 + 90 * stripes], -1)[can]
    label = (abs(x - 0.68) < 0.12) & (abs(y - 0.45) < 0.2)
    image[label] = np.stack([200 * stripes + 40, 60 + 0 * x, 50 + 30 * stripes], -1)[label]
    return np.clip(image, 0, 255).astype(np.uint8)


def mismatch(expected: list[float], got: np.ndarray) -> float | None:
    """The largest probability difference if it is above :data:`TOLERANCE`, else None."""
    try:
        expected_arr = np.asarray(expected, dtype=np.float64)
    except (TypeError, ValueError):  # a hand-edited or damaged manifest: not numbers
        return float("inf")
    if expected_arr.shape != got.shape:
        return float("inf")
    delta = float(np.abs(expected_arr - got).max())
    return delta if not delta <= TOLERANCE else None
