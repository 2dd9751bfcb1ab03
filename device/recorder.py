"""Each decided item's record: the sort log line, its capture, the bin's light, the run's tally,
the stuck watch, and whether the run must end (an actuator failed, the model keeps failing).

:class:`Recorder` turns a :class:`~device.deciding.Outcome` into the :class:`SortEvent` that is
appended to the sort log (naming the capture, when the item's frames were captured), lights the
bin the item went to, and counts it in the :class:`~device.decision.RunSummary`.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from device import record_ids
from device.capture import CaptureWriter
from device.deciding import Outcome
from device.decision import RunSummary
from device.indicator import Indicator
from device.errors import ModelError
from device.sortlog import SortEvent, SortLog, utc_iso
from device.stuck_watch import StuckWatch

log = logging.getLogger(__name__)

MAX_MODEL_FAILURES_IN_A_ROW = 3  # then the run ends with ModelError (exit 79)


class Recorder:
    def __init__(self, *, sortlog: SortLog, summary: RunSummary, capture: CaptureWriter,
                 indicator: Indicator | None, stuck: StuckWatch, fallback_bin: str, model_sha256: str,
                 device_id: str = "", run_id: str = ""):
        self.sortlog = sortlog
        self.summary = summary
        self.capture = capture
        self.indicator = indicator
        self.stuck = stuck
        self.model_failures = 0  # items in a row the classifier failed on
        self.fallback_bin = fallback_bin
        self.model_sha256 = model_sha256
        self.device_id = device_id or record_ids.device_id()
        self.run_id = run_id or record_ids.new_run_id()

    def record(self, outcome: Outcome, *, calibration_id: str, now_s: float) -> Exception | None:
        """Append ``outcome``'s record (``now_s``: the actuators' time, the bin light's start);
        then what should end the run, if anything: its actuator failed, or the classifier failed
        on MAX_MODEL_FAILURES_IN_A_ROW items in a row (not a bad item: a broken model)."""
        decision, item, t = outcome.decision, outcome.item, outcome.source_time_s
        settled = outcome.event in ("settled", "early")
        record = SortEvent(
            ts=utc_iso(ms=True), source_time=t, item=item.number, label=decision.label,
            confidence=decision.confidence, top3=decision.top3, bin=decision.bin, reason=outcome.reason,
            frames_used=decision.frames_used, frames_rejected=sum(item.rejected.values()),
            reject_reasons=dict(item.rejected), latency_ms=outcome.latency_ms,
            model_sha256=self.model_sha256[:12], calibration_id=calibration_id, settled=settled,
            early=outcome.event == "early", record_id=record_ids.record_id(self.device_id, self.run_id, item.number),
            device_id=self.device_id, run_id=self.run_id)
        capture_id = self.capture.offer(record, [slot.image for slot in outcome.slots])
        if capture_id:
            record = replace(record, capture_id=capture_id)
        self.sortlog.append(record)
        if self.indicator and outcome.actuated:
            self.indicator.routed(decision.bin, now_s, fallback=decision.bin == self.fallback_bin and bool(decision.reason))
        self.summary.items += 1
        self.summary.items_per_bin[decision.bin] += 1
        self.summary.unsettled += not settled
        self.summary.latencies_ms.append(outcome.latency_ms)
        log.info("item %d at %.2f s: %s (%.2f) -> %s%s", item.number, t, decision.label or "-",
                 decision.confidence, decision.bin, f" [{outcome.reason}]" if outcome.reason else "")
        if outcome.event in ("left", "stopped"):
            self.stuck.forget()
        else:
            self.stuck.sorted(item.number, decision.bin, t)
        self.model_failures = self.model_failures + 1 if decision.model_error else 0
        if outcome.actuator_error is not None:
            return outcome.actuator_error
        if self.model_failures >= MAX_MODEL_FAILURES_IN_A_ROW:
            return ModelError(f"the classifier failed on {self.model_failures} items in a row; "
                              f"the last: {decision.model_error}")
        return None
