"""Tell a running sorter to load the new calibration: ``systemctl reload UNIT`` (SIGHUP), then
wait for its status file to name it.

Quietly skipped, with a hint, where systemctl is missing (a laptop, a container) or the unit is
not active; a failed reload (e.g. no permission) is reported with the command to run by hand.
A reload that systemd accepted is only a signal sent: the sorter takes the calibration up when
the board is next empty, and keeps the one it has if it refuses the new one (a wrong size, the
camera refusing its controls). Only its status file naming the new id says that it uses it.
"""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path
from typing import Callable

from device.runtime_status import read_runtime_status
from device.service import UNIT, systemctl

log = logging.getLogger(__name__)


def reload_sorter(unit: str = UNIT, timeout_s: float = 15.0) -> tuple[bool, str]:
    """(reloaded, a line for the technician)."""
    try:
        active = systemctl("is-active", "--quiet", unit, timeout_s=timeout_s)
        if active is None:
            return False, f"no systemctl here; restart the sorter to use the new calibration ({unit} not reloaded)"
        if active.returncode != 0:
            return False, f"{unit} is not running; it will load the calibration when started"
        done = systemctl("reload", unit, timeout_s=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"could not reload {unit} ({exc}); run: sudo systemctl reload {unit}"
    if done.returncode != 0:
        reason = (done.stderr or "").strip().splitlines()[:1]
        return False, (f"reload of {unit} failed ({reason[0] if reason else f'exit {done.returncode}'}); "
                       f"run: sudo systemctl reload {unit}")
    return True, f"{unit} reloaded (SIGHUP sent)"


def confirm_reload(status_file: Path, calibration_id: str, *, wait_s: float = 10.0, unit: str = UNIT,
                   clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                   poll_s: float = 0.5) -> tuple[bool, str]:
    """(in use, a line for the technician): whether the sorter's status file names
    ``calibration_id`` within ``wait_s`` seconds (the sorter rewrites it every 2 s)."""
    deadline = clock() + wait_s
    while True:
        status = read_runtime_status(status_file)
        if status is not None and status.calibration_id == calibration_id:
            return True, f"the sorter now uses calibration {calibration_id}"
        if clock() >= deadline:
            break
        sleep(poll_s)
    now = (f"it still uses {status.calibration_id or 'no calibration'}" if status is not None
           else f"no status file at {status_file}")
    return False, (f"the sorter has not taken calibration {calibration_id} up within {wait_s:g} s ({now}): it "
                   f"reloads when the board is next empty and keeps its calibration if it refuses the new one; "
                   f"`waste-sorter status` shows the one in use, `journalctl -u {unit}` why it refused")
