"""One item's decision, apart from the loop: what it is, which bin, why, and the run's tally.

:func:`decide` turns an item's classified frames into a :class:`Decision` (the fallback bin with
a reason when there is nothing to classify, the model fails or is unsure); :func:`how_decided`
adds how the item was decided when it did not settle; :class:`RunSummary` counts what a run did.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from device.classifier import Prediction, prediction_from
from device.config import RoutingConfig
from device.errors import ModelError
from device.item_frames import FrameSlot, ItemFrames
from device.stats import percentile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    label: str  # "" when nothing was classified
    confidence: float
    top3: tuple[tuple[str, float], ...]
    bin: str
    reason: str  # "" when sorted normally
    frames_used: int
    model_error: ModelError | None = None


def route(routing: RoutingConfig, prediction: Prediction) -> Decision:
    """Where a classified item goes: its class's bin, or the fallback bin when the model is unsure."""
    label, confidence = prediction.label, prediction.confidence
    bin_name, reason = routing.classes.get(label, routing.fallback_bin), ""
    if confidence < routing.min_confidence:
        bin_name, reason = routing.fallback_bin, f"low confidence {confidence:.2f} < {routing.min_confidence:.2f}"
    elif label not in routing.classes:
        reason = f"no bin for class {label}"
    return Decision(label, confidence, prediction.top3, bin_name, reason, prediction.frames)


def decide(classes: tuple[str, ...], routing: RoutingConfig, item: ItemFrames, slots: list[FrameSlot],
           error: ModelError | None = None) -> Decision:
    """The item's decision from its chosen frames, once each of them is classified (or the
    model failed on them: ``error``); the fallback bin with a reason when there is nothing to go on."""
    if not slots:
        return Decision("", 0.0, (), routing.fallback_bin, item.no_frame_reason(), 0)
    if error is not None or any(s.probabilities is None for s in slots):
        error = error or ModelError("no probabilities for a chosen frame")
        log.error("item %d not classified: %s", item.number, error)
        return Decision("", 0.0, (), routing.fallback_bin, "classifier failed", len(slots), error)
    return route(routing, prediction_from(classes, np.stack([s.probabilities for s in slots])))


def how_decided(event: str, decision: Decision) -> str:
    """The reason to record for an item decided by presence ``event``: an item that left
    before it settled says so (and whether it had a usable frame at all)."""
    if event != "left":
        return decision.reason
    if not decision.frames_used:
        return "left before a usable frame" + (f": {decision.reason}" if decision.reason.startswith("all") else "")
    return "left before it settled" + (f"; {decision.reason}" if decision.reason else "")


@dataclass
class RunSummary:
    frames: int = 0
    items: int = 0
    items_per_bin: Counter = field(default_factory=Counter)
    rejected_by_reason: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    source_seconds: float = 0.0
    unsettled: int = 0  # items decided without settling (kept moving, or left first)
    passing: int = 0  # arrivals gone within presence.min_item_s: not items

    def latency_percentile_ms(self, q: float) -> float:
        return percentile(self.latencies_ms, q) or 0.0

    def format(self) -> str:
        bins = ", ".join(f"{b}={n}" for b, n in sorted(self.items_per_bin.items())) or "none"
        rejects = ", ".join(f"{r}={n}" for r, n in self.rejected_by_reason.most_common()) or "none"
        return (f"{self.items} item(s) in {self.source_seconds:.1f} s of source, {self.frames} frames\n"
                f"  items per bin: {bins}\n"
                f"  decided without settling: {self.unsettled}; passing disturbances (not items): {self.passing}\n"
                f"  rejected frames: {sum(self.rejected_by_reason.values())} ({rejects})\n"
                f"  latency settled->actuated: p50 {self.latency_percentile_ms(50):.1f} ms, "
                f"p95 {self.latency_percentile_ms(95):.1f} ms")
