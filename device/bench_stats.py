"""Summaries the bench prints: medians and 95th percentiles of per-event times (never totals
divided by counts, which hide the slow frames a sorter actually notices)."""

from __future__ import annotations

import math
import time
from typing import Iterable

import numpy as np


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0-100, linear interpolation); NaN when there are no values."""
    values = list(values)
    return float(np.percentile(values, q)) if values else math.nan


def spread(name: str, values: Iterable[float], *, with_max: bool = False) -> dict[str, float]:
    """``{name}_median``, ``{name}_p95`` (and ``{name}_max``) of ``values``; ``name`` carries
    the unit (``gate_ms``)."""
    values = list(values)
    out = {f"{name}_median": percentile(values, 50), f"{name}_p95": percentile(values, 95)}
    if with_max:
        out[f"{name}_max"] = max(values) if values else math.nan
    return out


def timed_ms(fn, *args) -> tuple[float, object]:
    """(milliseconds ``fn(*args)`` took, what it returned)."""
    start = time.perf_counter()
    result = fn(*args)
    return (time.perf_counter() - start) * 1000, result
