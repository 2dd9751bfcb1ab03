"""The sorter's systemd service as commands see it: its unit name and one way to ask systemctl.

``waste-sorter status`` asks whether it is active; ``waste-sorter calibrate`` reloads it (SIGHUP)
after writing a calibration. Where there is no systemctl (a laptop, a container) the answer is
``None`` and each command says what that means for it.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Callable

UNIT = "waste-sorter.service"  # systemd/waste-sorter.service


def systemctl(*args: str, timeout_s: float = 15.0, run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
              which: Callable[[str], str | None] = shutil.which) -> subprocess.CompletedProcess | None:
    """``systemctl ARGS`` with stdin closed and its output captured as text; None where there is
    no systemctl. OSError and subprocess.TimeoutExpired are the caller's to word."""
    binary = which("systemctl")
    if binary is None:
        return None
    return run([binary, *args], timeout=timeout_s, stdin=subprocess.DEVNULL, capture_output=True, text=True)
