"""Sort items: camera -> exposure gate -> presence -> classifier -> GPIO bins -> sort log.

    waste-sorter run --source scene.mp4 --log sort.jsonl      # a recorded scene, simulated GPIO
    waste-sorter run --config /etc/waste-sorter/config.toml   # the Pi camera and real GPIO
    waste-sorter run --check-config --config FILE             # validate and exit

--source: picamera2 | opencv:N | a video file | a folder of images | sim[:frames=N,...] (a
simulated camera filming an empty board; overrides [camera].source); --realtime plays a
recording at its own pace as a live camera would deliver it. A folder of images is a camera's
frames in name order: the empty board first, then items dropped on it (a folder of photos of
items is refused at its end, exit 65: `waste-sorter evaluate --data` classifies those).
A finite source ends the run cleanly and prints a summary: items per bin, rejected frames by
reason, p50/p95 latency. --check-config opens nothing: it checks the config, the camera source
(its backend imports), the GPIO backend, the calibration and the model, and prints where each
class goes. Exit codes: 78 config, 79 model, 80 calibration, 74 camera, 69 GPIO, 65 data,
3 a missing dependency (picamera2), 2 usage, 75 records unwritten.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

from device.actuators import BinActuators, check_pin_factory, resolve_pin_factory
from device.camera import check_source, check_source_option, open_camera
from device.capture import CaptureWriter
from device.classifier import Classifier
from device.config import Config, effective_routing, load_config, routing_problems
from device.errors import CameraError, ConfigError, DataError, UsageError
from device.calibration_file.store import is_absent, load_for_camera
from device.loop import Sorter
from device.frame_preview import FramePreview
from device.presence import State
from device.indicator import Indicator, format_history
from device.notify import Notifier
from device.camera.paced import PacedCamera
from device.runtime_status import RuntimeStatus, write_runtime_status
from device.safe_open import is_regular_or_absent, show_path
from device.sortlog import SortLog, utc_iso
from device.startup_signals import StartupSignals

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML configuration (default: built-in defaults)")
    p.add_argument("--source", help="camera source, overrides [camera].source")
    p.add_argument("--model", type=Path, help="ONNX model, overrides [model].path")
    p.add_argument("--calibration", type=Path, help="calibration file, overrides [calibration].path")
    p.add_argument("--log", type=Path, help="sort log (JSON lines), overrides [log].path")
    p.add_argument("--max-items", type=int, help="stop after this many items")
    p.add_argument("--status-file", type=Path, help="rewrite a runtime status JSON here (for `status`), and "
                   "the newest frame as frame.jpg beside it (for `web`)")
    p.add_argument("--realtime", action="store_true",
                   help="play a recording at its own pace as if filmed now (inference on its thread, "
                        "actuators on the clock), as on a live camera")
    p.add_argument("--check-config", action="store_true",
                   help="validate config, calibration and model, then exit")


def effective_config(args) -> Config:
    config = load_config(args.config)
    if args.source:
        check_source_option(args.source)
        config = replace(config, camera=replace(config.camera, source=args.source))
    if args.model:
        config = replace(config, model=replace(config.model, path=str(args.model)))
    if args.calibration:
        config = replace(config, calibration=replace(config.calibration, path=str(args.calibration)))
    if args.log:
        config = replace(config, log=replace(config.log, path=str(args.log)))
    if args.max_items is not None and args.max_items < 1:
        raise UsageError("--max-items must be at least 1")
    return config


#: The sorter's calibration loader (shared with ``calibrate --check``).
load_calibration_for = load_for_camera


def paced_if(camera, realtime: bool):
    """``camera``, played at its own pace when ``--realtime`` asks for it (a recording)."""
    if not realtime or camera.live:
        return camera
    return PacedCamera(camera)


def check_log_path(path: Path) -> None:
    """ConfigError unless the sort log can be a regular file at ``path``: a FIFO would block the
    first append, a folder or a name too long would only fail later, record by record."""
    problem = is_regular_or_absent(path)
    if problem is not None:
        raise ConfigError(f"{show_path(path)}: sort log {problem} (log.path, --log)")


def main(args) -> int:
    with StartupSignals() as early:  # from here on a SIGTERM, SIGINT or SIGHUP cannot kill the start
        return _main(args, early)


def _main(args, early: "StartupSignals") -> int:
    config = effective_config(args)
    size = (config.camera.width, config.camera.height)
    calibration_path = Path(config.calibration.path) if config.calibration.path else None
    calibration = _calibration_at_start(calibration_path, size)
    check_log_path(Path(config.log.path))
    classifier = Classifier(config.model.path or None, threads=config.model.threads)
    camera_said = checked_source(config.camera.source, from_option=bool(args.source), config_path=args.config)
    if args.check_config:
        return _report_config(config, classifier, calibration, camera_said, check_pin_factory(config.gpio.pin_factory))
    if early.stop_signal is not None:  # stopped while the model loaded: no camera, no GPIO touched
        log.info("%s during start-up: stopping before the camera and GPIO are opened",
                 signal.Signals(early.stop_signal).name)
        return 0
    status_writer = _status_writer(args.status_file, classifier) if args.status_file else None
    controls = calibration[0].controls if calibration else None
    sortlog = SortLog(Path(config.log.path), max_bytes=config.log.max_bytes, keep=config.log.keep)
    pin_factory = resolve_pin_factory(config.gpio.pin_factory)  # one for the actuators and the lights
    try:
        with classifier, CaptureWriter.from_config(config, classes=classifier.classes,
                                                   model_sha256=classifier.sha256) as capture, \
                Notifier() as notifier, \
                open_camera(config.camera.source, controls=controls, timeout_s=config.camera.timeout_s,
                            size=size, folder_fps=config.camera.folder_fps) as opened, \
                paced_if(opened, args.realtime) as camera, \
                BinActuators(config.actuators, config.bins, pin_factory=pin_factory) as actuators, \
                Indicator(config.indicator, config.bins, pin_factory=pin_factory) as indicator, \
                sortlog:
            sorter = Sorter(config, camera=camera, classifier=classifier, actuators=actuators, sortlog=sortlog,
                            calibration=calibration,
                            calibration_loader=((lambda: load_calibration_for(calibration_path, size))
                                                if calibration_path else None),
                            notifier=notifier, status_writer=status_writer, indicator=indicator, capture=capture,
                            preview=FramePreview.beside(args.status_file),
                            clock=time.monotonic if camera.live else None)
            sorter.install_signal_handlers()
            early.hand_over()  # a signal of the start-up reaches the sorter now
            summary = sorter.run(max_items=args.max_items)
            never_learned = sorter.source_ended and sorter.presence.state is State.LEARNING
    finally:
        _journal_unwritten(sortlog)
    if never_learned and not summary.items and not camera.live:
        raise DataError(_never_learned(config, summary))
    print(summary.format())
    print(capture.summary())
    if indicator.history and not camera.live:  # a recording: what the person at the bin saw, change by change
        print(format_history(indicator.history))
    if sortlog.pending:
        return 75
    return 0


def checked_source(source: str, *, from_option: bool, config_path: Path | None = None) -> str:
    """``source`` in words, checked without opening it (:func:`device.camera.check_source`). A
    source from ``--source`` that is not there exits 74 as when it is opened; one from the
    config's ``camera.source`` is a config error (78): a restart would not make it appear."""
    try:
        return check_source(source)
    except CameraError as exc:
        if from_option:
            raise
        where = f"{show_path(config_path)}: " if config_path else ""
        raise ConfigError(f"{where}camera.source: {exc}") from None


def _never_learned(config: Config, summary) -> str:
    """Why a recording that sorted nothing never learned the board: what a source must show."""
    source = config.camera.source
    return (f"camera source {source!r}: sorted nothing, the board was never learned: its {summary.frames} frames "
            f"never showed the empty board still for presence.learn_s ({config.presence.learn_s:g} s). "
            f"A video or a folder of images (played in name order at camera.folder_fps) must film the empty "
            f"board first, then items dropped on it; to classify photos of items one by one, use "
            f"`waste-sorter evaluate --data FOLDER`")


def _calibration_at_start(path: Path | None, size: tuple[int, int]):
    """The calibration (and its board) the run starts with; None without one (a warning when the
    config names a file that is not there yet)."""
    if path and is_absent(path):
        log.warning("no calibration at %s yet: default gate, board learned at start; "
                    "`waste-sorter calibrate` writes it and reloads the sorter", path)
        return None
    return load_calibration_for(path, size) if path else None


def _report_config(config: Config, classifier: Classifier, calibration, camera_said: str, gpio_said: str) -> int:
    """``--check-config``: what was loaded and checked (nothing opened), where each class goes,
    and the routing problems as warnings."""
    print(f"config OK; model {classifier.path.name} ({classifier.sha256[:12]}, classes "
          f"{', '.join(classifier.classes)}); calibration {calibration[0].id if calibration else 'none'}")
    print(f"camera   {camera_said}")
    print(f"gpio     {gpio_said}")
    print("routing (class -> bin):")
    for line in effective_routing(config, classifier.classes):
        print(f"  {line}")
    for problem in routing_problems(config, classifier.classes):
        print(f"warning: {problem}")
    return 0


def _journal_unwritten(sortlog: SortLog) -> None:
    """Records the sort log still holds in memory (disk full, read-only) go to the journal, one
    ERROR line each, so ending the run (normally or by an error) does not lose them."""
    lines = sortlog.unwritten()
    if not lines:
        return
    log.error("%d record(s) could not be written to %s; they follow, one per line", len(lines), sortlog.path)
    for line in lines:
        log.error("unwritten sort record: %s", line)


def _status_writer(path: Path, classifier: Classifier):
    """A callback the loop calls every few seconds to rewrite the runtime status file."""
    started_utc, started = utc_iso(), time.monotonic()
    model_mtime = utc_iso(classifier.path.stat().st_mtime)

    def write(sorter: Sorter) -> None:
        s = sorter.summary
        elapsed = max(1e-6, time.monotonic() - started)
        status = RuntimeStatus(
            updated_utc=utc_iso(), started_utc=started_utc, frames=s.frames,
            frames_rejected=sum(s.rejected_by_reason.values()), reject_reasons=dict(s.rejected_by_reason),
            items=s.items, fps=s.frames / elapsed, model_path=str(classifier.path),
            model_sha256=classifier.sha256, model_mtime_utc=model_mtime,
            calibration_id=sorter.calibration_id,
            calibration_created_utc=getattr(sorter.calibration, "created_utc", ""),
            state=sorter.state, pid=os.getpid(), log_pending=sorter.sortlog.pending,
            log_dropped=sorter.sortlog.dropped, stuck_events=sorter.stuck.events,
            indicator=sorter.indicator.what_the_person_sees().describe() if sorter.indicator else "")
        try:
            write_runtime_status(path, status)
        except OSError as exc:
            log.debug("status file %s not written: %s", path, exc)

    return write
