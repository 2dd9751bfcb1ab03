"""Where a training step's time goes: the seconds between named marks, summed over an epoch.

On a GPU the marks are CUDA events recorded in the stream, so timing adds no synchronisation
to a step (the events are read once, at the epoch's end); on a CPU they are clock readings.
``train`` prints the images a second of each stage per epoch and writes them to the history
(:func:`throughput`), so a slow stage (data loading, typically) is visible.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch


class Laps:
    """``start()`` then ``lap(name)`` at the end of each stage; ``seconds()`` the sums by name."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._marks: list[tuple[str | None, object]] = []
        self._cpu: dict[str, float] = defaultdict(float)

    def _now(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start(self) -> None:
        self._marks.append((None, self._now()))

    def lap(self, name: str) -> None:
        self._marks.append((name, self._now()))

    def seconds(self) -> dict[str, float]:
        """Seconds by stage since the last call (waits for the GPU to reach the last mark)."""
        if self.cuda and self._marks:
            self._marks[-1][1].synchronize()
        totals: dict[str, float] = defaultdict(float)
        for (_, before), (name, after) in zip(self._marks, self._marks[1:]):
            if name is not None:
                totals[name] += (before.elapsed_time(after) / 1000.0 if self.cuda else after - before)
        self._marks.clear()
        return dict(totals)


def throughput(images: int, seconds: dict[str, float], data_seconds: float, workers: int,
               data_wait_s: float, processes: int) -> dict:
    """The epoch's images a second by stage: ``student`` (forward, loss, backward, step),
    ``teachers`` (their forward), ``data`` (what the loader can deliver: decoding, relighting,
    augmentation in ``workers`` processes, or in the training process with none), with the
    seconds the training loop waited for data; ``images`` over all ``processes``."""
    def rate(s: float) -> float | None:
        return round(images / s, 1) if s > 0 else None

    figures = {"student": rate(seconds.get("student", 0.0)), "teachers": rate(seconds.get("teachers", 0.0)),
               "data": rate(data_seconds / max(1, workers))}
    return {"images_per_s": {k: v for k, v in figures.items() if v is not None},
            "data_wait_s": round(data_wait_s, 2), "workers": workers, "processes": processes}
