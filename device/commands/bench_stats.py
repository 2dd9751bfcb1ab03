"""Summaries the bench prints: medians and 95th percentiles of per-event times (never totals
divided by counts, which hide the slow frames a sorter actually notices)."""

from __future__ import annotations

import math
import time
from typing import Iterable

from device import stats


def percentile(values: Iterable[float], q: float) -> float:
    """:func:`device.stats.percentile`, NaN when there are no values (JSON shows them as null)."""
    value = stats.percentile(values, q)
    return math.nan if value is None else value


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
