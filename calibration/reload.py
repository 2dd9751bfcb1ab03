"""Tell a running sorter to load the new calibration: ``systemctl reload UNIT`` (SIGHUP).

Quietly skipped, with a hint, where systemctl is missing (a laptop, a container) or the unit is
not active; a failed reload (e.g. no permission) is reported with the command to run by hand.
"""

from __future__ import annotations

import logging
import subprocess

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
    return True, f"{unit} reloaded: the sorter now uses the new calibration"
