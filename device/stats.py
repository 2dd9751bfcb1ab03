"""One percentile for everything that reports times: the run summary, `logs --summary`, the
scene score and the bench."""

from __future__ import annotations

from typing import Iterable

import numpy as np


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, linear interpolation) of ``values``; None when empty."""
    values = list(values)
    return float(np.percentile(values, q)) if values else None
