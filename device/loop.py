"""The sorting loop, top to bottom: the only module that knows all the others.

    frame -> frame checks -> gate -> presence -> item frames -> decider (model on its worker)
          -> route -> actuate -> recorder (sort log, capture, bin light) ; stuck watch, indicator

Time is the frame's timestamp; only the actuators (and the indicator) on a live camera run on
``clock``, so a hold lasts its full time from the moment the actuator moves. SIGTERM/SIGINT put
every output safe inside the handler and end the loop when the capture in progress returns;
SIGHUP reloads the calibration between items (board empty), keeping the last good one when the
new file is invalid. Every item gets exactly one record, whatever happens (see
:mod:`device.presence` and :mod:`device.deciding`), appended before an actuator error ends the
run; items still undecided when the run ends get theirs too (:meth:`Sorter.finish`).
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Callable

import numpy as np

from device import record_ids
from device.actuators import BinActuators
from device.camera import AdjustableCamera, Camera
from device.capture import CaptureWriter
from device.classifier import Classifier
from device.config import Config, routing_problems
from device.deciding import Actuation, Decider, Outcome
from device.decision import RunSummary
from device.errors import ActuatorError, CalibrationError, CameraError
from device.frame_checks import FrameChecks
from device.frame_preview import FramePreview
from device.gate import ExposureGate, GateVerdict, board_stats
from device.indicator import Indicator
from device.inference_worker import InferenceWorker
from device.item_frames import DECIDING_EVENTS, ItemFrames, belongs_to_item, observe
from device.notify import watchdog_interval_s
from device.presence import PresenceDetector, State
from device.recorder import Recorder
from device.sortlog import SortLog
from device.stuck_watch import StuckWatch

log = logging.getLogger(__name__)

class Sorter:
    def __init__(self, config: Config, *, camera: Camera, classifier: Classifier, actuators: BinActuators,
                 sortlog: SortLog, calibration=None, calibration_loader: Callable[[], tuple] | None = None,
                 notifier=None, status_writer: Callable[["Sorter"], None] | None = None,
                 clock: Callable[[], float] | None = None, sleep: Callable[[float], None] = time.sleep,
                 inference: InferenceWorker | None = None, indicator: Indicator | None = None,
                 capture: CaptureWriter | None = None, preview: FramePreview | None = None):
        """``clock`` (seconds) times the actuators; ``None`` times them on frame timestamps
        (source time: a replay actuates identically at any speed). ``sleep`` waits out the last
        hold or pulse when a run ends at ``max_items`` on a clock. ``inference``: where the model
        runs; by default a worker thread on a clock (a live camera), inline in source time.
        ``indicator``: the lights and buzzer the person at the bin sees (:mod:`device.indicator`);
        ``capture``: saves the frames of items worth labelling (:mod:`device.capture`);
        ``preview``: the newest frame as a JPEG for the web page (:mod:`device.frame_preview`)."""
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self.camera = camera
        self.classifier = classifier
        self.actuators = actuators
        self.sortlog = sortlog
        self.notifier = notifier
        self.indicator = indicator
        self.capture = capture or CaptureWriter.off()
        self.preview = preview or FramePreview.off()
        self.status_writer = status_writer
        self.calibration_loader = calibration_loader
        self.gate = ExposureGate(config.gate)
        self.presence = PresenceDetector(config.presence)
        self.calibration = None
        self.calibration_id = ""
        self.frame_checks = FrameChecks()
        if calibration is not None:
            self.apply_calibration(*calibration)
        self._owns_worker = inference is None
        self.worker = inference or InferenceWorker(classifier, threaded=clock is not None)
        self.decider = Decider(self.worker, classifier.classes, config.routing, config.model, self._actuate,
                               min_item_s=config.presence.min_item_s)
        if clock is not None:
            actuators.time_on(clock)  # holds and pulses end on time whatever the loop is doing
        self.summary = RunSummary()
        self.state = "starting"
        self._stop_signal: int | None = None
        self.source_ended = False  # a finite source gave its last frame (not a signal, --max-items)
        self._reload_requested = False
        self._item: ItemFrames | None = None
        self._last_t = 0.0
        self._ready_sent, self._status_at_s, self._watchdog_s = False, None, None
        self.stuck = StuckWatch(config.presence.stuck_warn_s)
        self.recorder = Recorder(sortlog=sortlog, summary=self.summary, capture=self.capture, indicator=indicator,
                                 stuck=self.stuck, fallback_bin=config.routing.fallback_bin,
                                 model_sha256=classifier.sha256, device_id=record_ids.device_id(config.device.id))
        for problem in routing_problems(config, classifier.classes):
            log.warning("%s", problem)

    def close(self) -> None:
        """Stop the inference worker the sorter started (``run()`` does it when it ends)."""
        if self._owns_worker:
            self.worker.close()

    def __enter__(self) -> "Sorter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calibration -------------------------------------------------------------------
    def apply_calibration(self, calibration, board_image: np.ndarray, *, reloaded: bool = False) -> None:
        """Use ``calibration``: the camera's controls first (CameraError if it refuses them:
        nothing else has changed then), then its gate and board reference (``reloaded``: on a
        SIGHUP, not at start)."""
        if isinstance(self.camera, AdjustableCamera):
            self.camera.set_controls(calibration.controls)
        self.gate = ExposureGate(calibration.gate, calibration.board, board_image=board_image)
        first_view = (f"the first still view after reloading calibration {calibration.id}" if reloaded
                      else "the view at start")
        self.presence = PresenceDetector(self.config.presence, reference=board_image, first_view=first_view)
        self.calibration, self.calibration_id = calibration, calibration.id
        self.frame_checks.expect(board_image.shape[:2], f"calibration {calibration.id}'s board reference")
        log.info("calibration %s in use", calibration.id)

    def _reload_calibration(self) -> None:
        self._reload_requested = False
        if self.calibration_loader is None:
            log.warning("reload requested but no calibration file is configured")
            return
        if self.notifier:
            self.notifier.reloading()
        try:
            self.apply_calibration(*self.calibration_loader(), reloaded=True)
        except (CalibrationError, CameraError) as exc:
            log.error("calibration reload rejected, keeping %s: %s", self.calibration_id or "defaults", exc)
        if self.notifier:
            self.notifier.ready()

    # -- signals -----------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)

    @property
    def stop_signal(self) -> int | None:
        """The signal (SIGTERM, SIGINT) that asked the sorter to stop; None until one came."""
        return self._stop_signal

    def _on_stop_signal(self, signum, _frame) -> None:
        self.actuators.safe_all()  # first, whatever the loop is blocked on
        if self.indicator:
            self.indicator.safe_all()
        self._stop_signal = signum

    def _on_reload_signal(self, _signum, _frame) -> None:
        self._reload_requested = True

    # -- the loop ----------------------------------------------------------------------
    def run(self, max_items: int | None = None) -> RunSummary:
        self._watchdog_s = watchdog_interval_s()
        if self.notifier:
            self.notifier.status("starting")
        try:
            while (frame := self._next_frame()) is not None:
                verdict = self.step(frame.image, frame.timestamp_s)
                self.preview.offer(frame.image, frame.timestamp_s, verdict, self.presence, self.state)
                self._report(frame.timestamp_s)
                if max_items is not None and self.summary.items >= max_items:
                    log.info("reached --max-items %d", max_items)
                    self._let_actuators_finish()
                    break
        finally:
            self._shut_down()
        return self.summary

    def _next_frame(self):
        """The camera's next frame; None at the end of the source or once a stop signal came
        (a frame captured after the signal is not processed, and a capture that then times
        out is no error)."""
        if self._stop_signal is not None:
            return None
        try:
            frame = self.camera.capture()
        except CameraError as exc:
            if self._stop_signal is None:
                raise
            log.info("stopping; the camera gave no frame after the signal (%s)", exc)
            return None
        if self._stop_signal is not None:  # stopped while capturing: act on nothing more
            return None
        if frame is None:
            log.info("end of source")
            self.source_ended = True
            self.finish("source ended")
        return frame

    def _report(self, t: float) -> None:
        """systemd's READY (after the first frame) and watchdog; the status file every 2 s."""
        if self.notifier:
            if not self._ready_sent:
                self.notifier.ready("sorting")
                self._ready_sent = True
            self.notifier.watchdog_if_due(self._watchdog_s)
        if self.status_writer and (self._status_at_s is None or t - self._status_at_s >= 2.0):
            self._status_at_s = t
            self.status_writer(self)

    def _shut_down(self) -> None:
        """Every output safe first, then a record for every item left, then say so."""
        self.actuators.safe_all()
        if self.indicator:
            self.indicator.safe_all()
        self.finish("stopping")
        self.close()
        self.sortlog.flush()
        self.state = "stopped"
        if self.notifier:
            self.notifier.stopping()
        if self.status_writer:
            self.status_writer(self)

    def _let_actuators_finish(self) -> None:
        """On a clock, the last bin's hold or pulse runs its full time before the run ends (a
        signal still ends it at once); in source time there is no more time to wait for."""
        if self.clock is None:
            return
        while self._stop_signal is None and (until_s := self.actuators.active_until_s) is not None:
            remaining_s = until_s - self.clock()
            if remaining_s > 0:
                self.sleep(min(remaining_s, 0.05))
            self.actuators.update(self.clock())

    def step(self, image: np.ndarray, t: float) -> GateVerdict:
        """Process one frame at source time ``t`` (seconds)."""
        self.summary.frames += 1
        self.summary.source_seconds = self._last_t = t
        self.actuators.update(self._actuator_time_s(t))
        self.frame_checks.check_size(image)
        verdict, update = observe(self.gate, self.presence, image, t)
        if update is None:  # structurally broken: cannot even look for an item in it
            self._count_reject(verdict)
            self.frame_checks.warn_unusable_once(image, verdict.reason)
            return verdict
        if update.event == "arrived" and self.indicator:
            self.indicator.arrived(self._actuator_time_s(t))
        said = self.stuck.board_event(update.event, t)
        if said and self.notifier:
            self.notifier.status("sorting" if said == "sorting again" else said)
        self.state = "stuck" if self.stuck.stuck else update.state.value
        if update.event == "learned":
            board = self.presence.reference_image
            self.gate = ExposureGate(self.gate.thresholds, board_stats(board, self.gate.thresholds.saturation_level),
                                     board_image=board)
        if update.state is not State.LEARNING:
            self._count_reject(verdict)
        self._follow_item(image, verdict, update, t)
        self._record_all(self.decider.advance(self._item, t))
        if self.decider.waiting and not self.stuck.stuck:  # a decided item waits for its classification
            self.state = "deciding"
        if self.indicator:
            self.indicator.show_state(self.state, self._actuator_time_s(t))
        if update.state is State.EMPTY and self._reload_requested:
            self._reload_calibration()
        return verdict

    def _follow_item(self, image: np.ndarray, verdict: GateVerdict, update, t: float) -> None:
        """The item's frames (a new item at its arrival), and its decision at presence's verdict."""
        if update.event == "arrived" or (self._item is None and belongs_to_item(update)):
            number = self.summary.items + self.decider.waiting + 1  # an arrival that passes gives its number back
            self._item = ItemFrames(number=number, keep=self.config.model.frames_per_item, arrived_s=t,
                                    may_decide_early=update.state is not State.LEARNING)
        item = self._item
        if item is not None and belongs_to_item(update):
            item.add(image, verdict, update)
        if update.event in DECIDING_EVENTS and item is not None:
            self._item = None
            self.decider.decide(item, update.event, t)
        elif update.event in ("departed", "learned", "passed"):
            self._item = None
            if update.event == "passed":
                self.summary.passing += 1
                log.info("something passed over the board at %.2f s and was gone within %.1f s: not an item",
                         t, self.config.presence.min_item_s)

    def _actuator_time_s(self, frame_time_s: float) -> float:
        return self.clock() if self.clock is not None else frame_time_s

    def _count_reject(self, verdict: GateVerdict) -> None:
        if not verdict.accepted:
            self.summary.rejected_by_reason[verdict.reason] += 1


    def _actuate(self, bin_name: str, t: float) -> Actuation:
        """Move ``bin_name``'s actuator for an item decided at source time ``t`` (the decider
        calls this from the inference thread the moment the item's last frame is classified)."""
        if self._stop_signal is not None:
            return Actuation(moved=False)
        try:
            return Actuation(moved=self.actuators.actuate(bin_name, self._actuator_time_s(t)))
        except ActuatorError as exc:
            return Actuation(moved=False, error=exc)

    def finish(self, why: str) -> None:
        """A record for every item not yet recorded when the run ends (never an item lost):
        waits for the inference in progress, classifies nothing more; ``why`` ("stopping",
        "source ended") says why items decided now were not actuated. ``run()`` calls it."""
        current = self._item if self.presence.state is State.OCCUPIED else None
        self._item = None
        try:
            outcomes = self.decider.finish(current, self._last_t, why)
        except Exception:  # noqa: BLE001 - a bug in the last decision must not hide the first error
            log.exception("deciding the last items failed")
            return
        self._record_all(outcomes, raise_errors=False)

    def _record_all(self, outcomes: list[Outcome], *, raise_errors: bool = True) -> None:
        """Every outcome's record first; then the first error among them ends the run."""
        errors = [error for outcome in outcomes
                  if (error := self.recorder.record(outcome, calibration_id=self.calibration_id,
                                                    now_s=self._actuator_time_s(outcome.source_time_s)))]
        if errors and raise_errors:
            raise errors[0]
