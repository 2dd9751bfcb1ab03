"""Recalibrate the camera over SSH: exposure, white balance, empty-board reference, gate.

Steps (about a minute on a Pi; every step is printed, no display needed):

  1. clear the board: remove every item, leave the light as it is during sorting;
  2. exposure search: manual ExposureTime and AnalogueGain until the empty board's median
     luma is near the target (default 190 of 255) with under 0.5% clipped pixels; white
     balance is measured once and then fixed as ColourGains. New controls apply some frames
     later, so each step waits until the frame metadata shows them applied;
  3. board reference: the per-pixel median of --frames frames of the empty board;
  4. gate thresholds: derived from the reference and the configured [gate] values;
  5. save: the calibration JSON (atomically; the previous one kept in history/), the board
     PNG and a histogram PNG beside it, to copy off with scp;
  6. reload: systemctl reload waste-sorter.service if it is active (--no-reload to skip);
  7. test item: run `waste-sorter run` with an item on the board to see what it says.

Sources: picamera2 (searched), sim[:light=..,glare=..,tint=..] (a simulated camera, searched),
or a recorded video / image folder / opencv:N of the empty board (no exposure search
possible: the controls are kept as given). A running sorter holds the Pi camera: stop it
(sudo systemctl stop waste-sorter.service) before calibrating, start it afterwards.

Other modes:
  --check     measure the empty scene against the calibration; exit 0 when it matches,
              8 + flags on drift (level 1, saturation 2, colour 4: so 9-15), for cron
  --rollback  restore the previous calibration (and reload the sorter); the version it
              replaces stays listed by --history, and --restore ID brings it back
  --restore ID  make a kept version (earlier, or rolled back) the current one again
  --history   list the kept versions

After a reload, calibrate waits up to --reload-wait-s for the sorter's status file to name the
new calibration, and says the sorter uses it only then.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from device.calibration_file import store
from calibration.console import pause, say
from calibration.exposure import ExposureLimits, SearchStep, apply_and_settle, search_exposure
from calibration.reference import DriftLimits, assess_drift, capture_frames, derive_gate, make_reference
from calibration.reload import UNIT, confirm_reload, reload_sorter
from device.calibration_file.schema import Calibration, ExposureTarget
from device.camera import AdjustableCamera, ExposureControls, check_source_option, open_camera
from device.config import CameraConfig, load_config
from device.errors import CalibrationError, UsageError
from device.runtime_status import DEFAULT_STATUS_PATH
from device.schema import bounds

log = logging.getLogger(__name__)

DEFAULT_PATH = "calibration.json"
DEFAULT_CONTROLS = ExposureControls(10_000, 1.0, (1.0, 1.0))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="report drift of the empty scene (exit 0 ok, 9-15 drift)")
    mode.add_argument("--rollback", action="store_true", help="restore the previous calibration")
    mode.add_argument("--history", action="store_true", help="list the kept calibration versions")
    mode.add_argument("--restore", metavar="ID", help="make the kept version ID current again (see --history)")
    parser.add_argument("--config", type=Path, help="sorter configuration (TOML) for the camera, path and gate")
    parser.add_argument("--source", help="camera source: picamera2, sim[:opts], opencv:N, a video or image folder "
                                         "(default: the config's camera.source)")
    parser.add_argument("--out", type=Path, help="calibration file (default: the config's calibration.path, "
                                                 f"else ./{DEFAULT_PATH})")
    parser.add_argument("--width", type=int, help="frame width (default: the config's camera.width)")
    parser.add_argument("--height", type=int, help="frame height (default: the config's camera.height)")
    target = parser.add_argument_group("exposure target and search")
    target.add_argument("--target-luma", type=float, default=190.0, help="empty board median luma (default 190)")
    target.add_argument("--tolerance", type=float, default=8.0, help="± levels around the target (default 8)")
    target.add_argument("--max-saturated", type=float, default=0.005,
                        help="largest clipped pixel fraction of the board (default 0.005 = 0.5%%)")
    target.add_argument("--exposure-us", type=int, help="start (or, for recorded sources, the given) exposure")
    target.add_argument("--gain", type=float, help="start (or given) analogue gain")
    target.add_argument("--colour-gains", type=float, nargs=2, metavar=("RED", "BLUE"),
                        help="given ColourGains (skips the white balance measurement)")
    target.add_argument("--max-exposure-us", type=int, default=ExposureLimits.max_exposure_us,
                        help="longest exposure (longer blurs moving items; default %(default)s)")
    target.add_argument("--max-gain", type=float, default=ExposureLimits.max_gain, help="highest gain (default %(default)s)")
    target.add_argument("--max-steps", type=int, default=ExposureLimits.max_steps, help="search steps (default %(default)s)")
    target.add_argument("--frames", type=int, default=15, help="frames in the median reference (default 15)")
    check = parser.add_argument_group("--check limits")
    check.add_argument("--level-drift", type=float, default=DriftLimits.level, help="median luma change (default 15)")
    check.add_argument("--colour-drift", type=float, default=DriftLimits.colour, help="relative colour change (default 0.08)")
    reload = parser.add_argument_group("reload")
    reload.add_argument("--no-reload", action="store_true", help="do not reload the running sorter")
    reload.add_argument("--unit", default=UNIT, help=f"systemd unit to reload (default {UNIT})")
    reload.add_argument("--status-file", type=Path, default=DEFAULT_STATUS_PATH,
                        help=f"the sorter's live status, read to see the new calibration in use ({DEFAULT_STATUS_PATH})")
    reload.add_argument("--reload-wait-s", type=float, default=10.0,
                        help="how long to wait for the sorter to report the new calibration (default %(default)s)")
    parser.add_argument("--test-item", action="store_true",
                        help="step 7: after saving, wait for an item and show what the classifier says")
    parser.add_argument("-y", "--yes", action="store_true", help="no prompts (also when stdin is not a terminal)")


def open_source(source: str, size: tuple[int, int], controls: ExposureControls | None, config: Any) -> Any:
    return open_camera(source, controls=controls, timeout_s=config.camera.timeout_s, size=size,
                       folder_fps=config.camera.folder_fps)


def _start_controls(args: argparse.Namespace, out: Path) -> ExposureControls:
    base = DEFAULT_CONTROLS
    if not store.is_absent(out):
        try:
            base = store.load_calibration(out).controls
        except CalibrationError as exc:
            log.warning("current calibration ignored: %s", exc)
    return ExposureControls(args.exposure_us if args.exposure_us is not None else base.exposure_us,
                            args.gain if args.gain is not None else base.analogue_gain,
                            tuple(args.colour_gains) if args.colour_gains else base.colour_gains)


def _validate(args: argparse.Namespace) -> None:
    checks = [(1 <= args.target_luma <= 254, "--target-luma must be in 1..254"),
              (0.5 <= args.tolerance <= 100, "--tolerance must be in 0.5..100"),
              (0 <= args.max_saturated <= 1, "--max-saturated must be a fraction in 0..1"),
              (1 <= args.frames <= 1000, "--frames must be in 1..1000"),
              (1 <= args.max_steps <= 100, "--max-steps must be in 1..100"),
              (100 <= args.max_exposure_us <= 10_000_000, "--max-exposure-us must be in 100..10000000"),
              (1 <= args.max_gain <= 64, "--max-gain must be in 1..64")]
    ranges = {"--width": (args.width, bounds(CameraConfig, "width")),
              "--height": (args.height, bounds(CameraConfig, "height")),
              "--exposure-us": (args.exposure_us, bounds(Calibration, "exposure_us")),
              "--gain": (args.gain, bounds(Calibration, "analogue_gain"))}
    checks += [(value is None or lo <= value <= hi, f"{option} must be in {_plain(lo)}..{_plain(hi)}")
               for option, (value, (lo, hi)) in ranges.items()]
    lo, hi = bounds(Calibration, "colour_gains")
    checks.append((args.colour_gains is None or all(lo <= g <= hi for g in args.colour_gains),
                   f"--colour-gains must each be in {_plain(lo)}..{_plain(hi)}"))
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    if args.source:
        check_source_option(args.source)


def _plain(value: float) -> str:
    """10000000 and 1.0 as written in a range message (not 1e+07, 1.0)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def main(args: argparse.Namespace) -> int:
    if not 0 <= args.reload_wait_s <= 600:
        raise UsageError("--reload-wait-s must be in 0..600")
    config = load_config(args.config)
    out = Path(args.out or config.calibration.path or DEFAULT_PATH)
    if args.history:
        return _history(out)
    if args.rollback or args.restore:
        replaced = _current_id(out)
        calibration = store.restore(out, args.restore) if args.restore else store.rollback(out)
        say(f"{'restored' if args.restore else 'rolled back'} {out} to calibration {calibration.id} of "
            f"{calibration.created_utc}" + (f" (calibrate --restore {replaced} goes back)" if replaced else ""))
        _reload(args, calibration.id)
        return 0
    _validate(args)
    source = args.source or config.camera.source
    size = (args.width or config.camera.width, args.height or config.camera.height)
    if args.check:
        return _check(args, out, source, size, config)
    return _calibrate(args, out, source, size, config)


def _history(out: Path) -> int:
    """Every kept version: earlier ones (--rollback goes to the last), the active one, and those
    a rollback replaced (--restore ID brings one back)."""
    rolled = store.rolled_back(out)
    for path in store.history(out) + ([] if store.is_absent(out) else [out]) + rolled:
        try:
            cal = store.load_calibration(path)
            line = f"{cal.id}  {cal.created_utc}  {cal.exposure_us} us  gain {cal.analogue_gain:.2f}  {cal.source}"
        except CalibrationError as exc:
            line = f"unreadable ({exc})"
        kind = "active     " if path == out else "rolled back" if path in rolled else "earlier    "
        say(f"{kind}  {line}")
    if rolled:
        say("(calibrate --restore ID makes a kept version current again)")
    return 0


def _current_id(out: Path) -> str:
    """The id of the calibration at ``out`` ("" when there is none or it is unreadable)."""
    try:
        return "" if store.is_absent(out) else store.load_calibration(out).id
    except CalibrationError:
        return ""


def _reload(args: argparse.Namespace, calibration_id: str) -> None:
    """Reload the sorter, and say it uses ``calibration_id`` only once its status file says so."""
    if args.no_reload:
        say(f"not reloading (--no-reload); later: sudo systemctl reload {args.unit}")
        return
    reloaded, line = reload_sorter(args.unit)
    say(line)
    if reloaded:
        say(confirm_reload(args.status_file, calibration_id, wait_s=args.reload_wait_s, unit=args.unit)[1])


def _check(args: argparse.Namespace, out: Path, source: str, size: tuple[int, int], config: Any) -> int:
    calibration, _board = store.load_for_camera(out, size)  # the sorter's own loader: what it refuses fails here
    limits = DriftLimits(level=args.level_drift, saturated_frac=calibration.target.max_saturated_frac,
                         colour=args.colour_drift)
    with open_source(source, size, calibration.controls, config) as camera:
        if isinstance(camera, AdjustableCamera):
            apply_and_settle(camera, calibration.controls, ExposureLimits().settle_frames)
        reference = make_reference(capture_frames(camera, args.frames), calibration.gate.saturation_level)
    drift = assess_drift(calibration, reference, limits)
    say(f"{'DRIFT' if drift.flags else 'OK'} calibration {calibration.id}: {drift.describe(calibration, limits)}")
    if drift.flags:
        say("recalibrate: waste-sorter calibrate" + (f" --config {args.config}" if args.config else ""))
    return drift.exit_code


def _print_step(step: SearchStep) -> None:
    c = step.controls
    say(f"   step {step.step:2d}: {c.exposure_us:6d} us  gain {c.analogue_gain:5.2f}  "
        f"colour gains {c.colour_gains[0]:.2f}/{c.colour_gains[1]:.2f}  ->  median luma {step.median_luma:5.1f}, "
        f"{100 * step.saturated_frac:5.2f}% clipped")


def _calibrate(args: argparse.Namespace, out: Path, source: str, size: tuple[int, int], config: Any) -> int:
    target = ExposureTarget(args.target_luma, args.tolerance, args.max_saturated)
    limits = ExposureLimits(max_exposure_us=args.max_exposure_us, max_gain=args.max_gain, max_steps=args.max_steps)
    start = _start_controls(args, out)
    saturation_level = config.gate.saturation_level
    pause(args, "1. Clear the board: remove every item; keep the light as it is when sorting.")
    with open_source(source, size, start, config) as camera:
        searched = isinstance(camera, AdjustableCamera)
        if searched:
            say(f"2. Exposure search (target median luma {target.median_luma:g} ± {target.tolerance:g}, "
                f"under {100 * target.max_saturated_frac:.2f}% clipped):")
            result = search_exposure(camera, start, target, limits, saturation_level=saturation_level,
                                     measure_white_balance=args.colour_gains is None, on_step=_print_step)
            controls = result.controls
            say(f"   reached in {len(result.steps)} steps: {controls.exposure_us} us, gain {controls.analogue_gain:.2f}")
        else:
            controls = start
            say(f"2. Exposure search: not possible with source {source!r} (recorded, or no manual controls); "
                f"keeping the controls as given: {controls.exposure_us} us, gain {controls.analogue_gain:.2f}, "
                f"colour gains {controls.colour_gains[0]:.2f}/{controls.colour_gains[1]:.2f}")
        say(f"3. Board reference: median of {args.frames} frames ...")
        reference = make_reference(capture_frames(camera, args.frames), saturation_level)
        calibration = _finish(args, out, source, config, controls, searched, reference, target)
        if args.test_item:
            from calibration.item_test import run_item_test  # loads the model's runtime only when asked

            run_item_test(args, camera, config, calibration, reference.image)
        return 0


def _finish(args, out, source, config, controls, searched, reference, target) -> Calibration:
    """Steps 4-6: gate thresholds, save, reload; returns the calibration written."""
    board = reference.board
    say(f"   board median luma {board.median_luma:.1f}, {100 * board.saturated_frac:.2f}% clipped "
        f"({reference.image.shape[1]}x{reference.image.shape[0]})")
    if not searched and (abs(board.median_luma - target.median_luma) > target.tolerance
                         or board.saturated_frac >= target.max_saturated_frac):
        say(f"   warning: the recorded board is off target ({target.median_luma:g} ± {target.tolerance:g}, "
            f"under {100 * target.max_saturated_frac:.2f}% clipped); the gate is fitted to it anyway")
    gate = derive_gate(config.gate, reference)
    say(f"4. Gate thresholds: overexposed above luma {board.median_luma + gate.max_level_rise:.0f} or "
        f"{100 * (board.saturated_frac + gate.max_extra_saturated_frac):.0f}% clipped; too dark below "
        f"{max(gate.min_median_luma, gate.min_level_ratio * board.median_luma):.0f}")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    cal_id = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    calibration = Calibration(
        id=cal_id, created_utc=now.isoformat(), exposure_us=int(controls.exposure_us),
        analogue_gain=float(controls.analogue_gain), colour_gains=tuple(float(g) for g in controls.colour_gains),
        board_reference=f"board-{cal_id}.png", board=board, gate=gate, target=target,
        board_mean_rgb=reference.mean_rgb, image_size=(reference.image.shape[1], reference.image.shape[0]),
        frames=len(reference.frame_stats), source=source[:300], exposure_searched=searched)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CalibrationError(f"{out.parent}: folder for the calibration cannot be made "
                               f"({exc.strerror or exc})") from None
    from calibration.report import write_histogram

    histogram = write_histogram(out.parent / calibration.histogram_name, reference.image, calibration)
    try:
        store.save_calibration(out, calibration, reference.image)
    except BaseException:
        if histogram is not None:
            histogram.unlink(missing_ok=True)
        raise
    folder = out.resolve().parent
    say(f"5. Saved calibration {cal_id} to {out.resolve()} (previous versions in {folder / store.HISTORY_DIR})")
    host = socket.gethostname()
    pictures = [folder / calibration.board_reference] + ([histogram.resolve()] if histogram else [])
    say(f"   to look at it: scp {' '.join(f'{host}:{p}' for p in pictures)} .")
    if config.calibration.path and Path(config.calibration.path).resolve() != out.resolve():
        say(f"   note: the config reads {config.calibration.path}, not this file")
    say("6. Reload:")
    _reload(args, cal_id)
    cfg = f" --config {args.config}" if args.config else ""
    if not args.test_item:
        say(f"7. Test item: `waste-sorter calibrate --test-item{cfg}` or `waste-sorter run{cfg}` shows what "
            f"an item is classified as; `waste-sorter calibrate --check{cfg}` checks for drift later.")
    return calibration
