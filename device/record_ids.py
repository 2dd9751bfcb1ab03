"""Names that tell one sort record from every other, across runs and sorters.

``record_id`` = ``<device_id>-<run_id>-<item>``: the sorter's id (``[device] id``, else the host
name), the run's id (its start in UTC to the second and 24 random bits, so two runs started in
the same second on one sorter differ) and the item number of that run. It is a string to
compare whole, not to take apart (a device id may hold ``-``); a fleet consumer drops a record
it has seen by it, and an operator names an item by it.
"""

from __future__ import annotations

import re
import secrets
import socket
import time

_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9._-]")
MAX_DEVICE_ID = 64


def device_id(configured: str = "") -> str:
    """``configured`` (``[device] id``), else this machine's host name with anything but letters,
    digits, ``.``, ``_`` and ``-`` replaced by ``_`` ("unknown" when it has none)."""
    if configured:
        return configured
    host = _NOT_ALLOWED.sub("_", socket.gethostname())[:MAX_DEVICE_ID]
    return host or "unknown"


def new_run_id(now_s: float | None = None) -> str:
    """A new run's id: ``20250101T120000Z-1a2b3c`` (UTC start, 6 random hex digits)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now_s is None else now_s))
    return f"{stamp}-{secrets.token_hex(3)}"


def record_id(device: str, run: str, item: int) -> str:
    return f"{device}-{run}-{item}"
