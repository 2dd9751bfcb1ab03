"""Is the sorter running, and what did it do today?

Reads the service state (systemctl), the live status file the sorter rewrites every few seconds
(frame rate, rejected frames, model and calibration in use) and the sort log (last item, items
today). Works without the service too: missing parts are reported as such.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, TextIO

from device.errors import DataError
from device.commands.logs import record_time, resolve_log_path
from device.runtime_status import DEFAULT_STATUS_PATH, RuntimeStatus, parse_utc, read_runtime_status
from device.service import UNIT, systemctl
from device.sortlog import log_files, read_lines_from

log = logging.getLogger(__name__)

STALE_AFTER_S = 30.0  # the sorter rewrites the status file every few seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status-file", type=Path, default=DEFAULT_STATUS_PATH,
                        help=f"live status written by the sorter ({DEFAULT_STATUS_PATH})")
    parser.add_argument("--config", type=Path, help="config file; its [log].path is the default log")
    parser.add_argument("--log", type=Path, help="sort log (default: from --config, else the service's)")
    parser.add_argument("--json", action="store_true", help="one JSON object")


def service_state(run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
                  which: Callable[[str], str | None] = shutil.which) -> str:
    """``systemctl is-active`` of the service: active, inactive, failed, ...; "unknown" without systemctl."""
    try:
        result = systemctl("is-active", UNIT, timeout_s=5, run=run, which=which)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if result is None:  # no systemctl here
        return "unknown"
    return (result.stdout or "").strip() or "unknown"


def local_day_start(now: float) -> float:
    day = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


def log_today(path: Path, now: float) -> tuple[dict[str, Any] | None, int]:
    """The last record and the number of records since local midnight; reads newest files first."""
    start = local_day_start(now)
    last: dict[str, Any] | None = None
    today = 0
    for file in reversed(log_files(path)):
        records = read_lines_from(file)[0]
        older_than_today = False
        file_last = None
        for record in records:
            file_last = record
            t = record_time(record)
            if t is not None and t >= start:
                today += 1
            elif t is not None:
                older_than_today = True
        last = last or file_last
        if older_than_today:
            break
    return last, today


def _age(text: str, now: float) -> float | None:
    t = parse_utc(text)
    return None if t is None else max(0.0, now - t)


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds / 86400:.0f} d"


def collect(status_file: Path, log_path: Path, now: float, service: str) -> dict[str, Any]:
    status: RuntimeStatus | None = read_runtime_status(status_file)
    try:
        last, today = log_today(log_path, now)
    except DataError as exc:  # a log that is a folder, a FIFO, ...: the rest is still worth showing
        log.warning("%s", exc)
        last, today = None, 0
    report: dict[str, Any] = {"service": service, "status_file": str(status_file), "log": str(log_path),
                              "items_today": today, "last_item": last, "runtime": None}
    if last is not None:
        t = record_time(last)
        report["last_item_age_s"] = None if t is None else round(max(0.0, now - t), 1)
    if status is not None:
        report["runtime"] = runtime_report(status, now)
    return report


def runtime_report(status: RuntimeStatus, now: float) -> dict[str, Any]:
    """What the status file says, with ages at ``now`` (seconds since the epoch): `status`'s
    "runtime" and the web page's Now."""
    updated_age = _age(status.updated_utc, now)
    return {
        "state": status.state,
        "stale": updated_age is None or updated_age > STALE_AFTER_S,
        "updated_age_s": None if updated_age is None else round(updated_age, 1),
        "uptime_s": None if _age(status.started_utc, now) is None else round(_age(status.started_utc, now), 1),
        "fps": status.fps, "frames": status.frames, "frames_rejected": status.frames_rejected,
        "rejected_rate": round(status.frames_rejected / status.frames, 4) if status.frames else None,
        "reject_reasons": status.reject_reasons, "items_since_start": status.items,
        "model_path": status.model_path, "model_sha256": status.model_sha256,
        "model_age_s": _age(status.model_mtime_utc, now),
        "calibration_id": status.calibration_id,
        "calibration_age_s": _age(status.calibration_created_utc, now),
        "log_pending": status.log_pending, "log_dropped": status.log_dropped,
        "indicator": status.indicator, "stuck_events": status.stuck_events,
    }


def state_line(rt: dict[str, Any]) -> str:
    """The sorter's state and how long it has run: up so long while the status file is fresh;
    for a run that stopped (or stopped updating it), when that was and how long it had run."""
    updated, uptime = rt["updated_age_s"], rt["uptime_s"]
    ran = None if updated is None or uptime is None else max(0.0, uptime - updated)
    if rt["state"] == "stopped":
        return f"stopped {format_age(updated)} ago, after running {format_age(ran)}"
    if rt["stale"]:
        return (f"{rt['state']} {format_age(updated)} ago, after running {format_age(ran)}; STALE: not updated "
                f"since (the sorter hung or was killed)")
    return f"{rt['state']}, up {format_age(uptime)}"


def format_report(report: dict[str, Any]) -> str:
    lines = [f"service      {report['service']}"]
    rt = report["runtime"]
    if rt is None:
        lines.append(f"live status  none at {report['status_file']} (sorter not running, or see --status-file)")
    else:
        lines.append(f"state        {state_line(rt)}")
        rate = "-" if rt["rejected_rate"] is None else f"{rt['rejected_rate'] * 100:.1f}%"
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(rt["reject_reasons"].items(), key=lambda kv: -kv[1]))
        lines.append(f"frames       {rt['fps']:.1f} fps, {rt['frames']} read, {rt['frames_rejected']} rejected "
                     f"({rate}){': ' + reasons if reasons else ''}")
        lines.append(f"model        {rt['model_path'] or '?'} sha256 {rt['model_sha256'][:12] or '?'}, "
                     f"age {format_age(rt['model_age_s'])}")
        lines.append(f"calibration  {rt['calibration_id'] or 'none'}, age {format_age(rt['calibration_age_s'])}")
        lines.append(f"items        {rt['items_since_start']} since start")
        if rt["indicator"]:  # what the person at the bin sees (a sorter with an [indicator])
            lines.append(f"indicator    {rt['indicator']}")
        if rt["stuck_events"]:
            lines.append(f"stuck        {rt['stuck_events']} time(s) a sorted item stayed on the board, since start")
        if rt["log_pending"] or rt["log_dropped"]:
            lines.append(f"SORT LOG     {rt['log_pending']} record(s) waiting to be written, {rt['log_dropped']} lost: "
                         f"is the log's disk full or read-only? (journalctl -u waste-sorter)")
    lines.append(f"items today  {report['items_today']}  (log {report['log']})")
    last = report["last_item"]
    if last is None:
        lines.append("last item    none")
    else:
        reason = f" [{last['reason']}]" if last.get("reason") else ""
        lines.append(f"last item    #{last.get('item', '?')} {last.get('label') or '-'} -> {last.get('bin', '?')}"
                     f"{reason}, {format_age(report.get('last_item_age_s'))} ago ({last.get('ts', '?')})")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    return show_status(args, sys.stdout)


def show_status(args: argparse.Namespace, out: TextIO, *, now: float | None = None,
                service: str | None = None) -> int:
    """`waste-sorter status` with ``args`` (its parsed arguments), writing to ``out``; :func:`main`
    calls it with stdout and the defaults. The report is at ``now`` (seconds since the epoch;
    default: the time) for a service in state ``service`` (default: what :func:`service_state`
    asks systemctl)."""
    now = time.time() if now is None else now
    log_path = resolve_log_path(args.log, args.config)
    report = collect(args.status_file, log_path, now, service_state() if service is None else service)
    out.write((json.dumps(report) if args.json else format_report(report)) + "\n")
    return 0
