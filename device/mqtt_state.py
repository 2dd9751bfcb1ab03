"""What the retained ``status`` message says about a bin: its state and its faults.

The state comes from the sorter's live status file (device/runtime_status.py), in the words a
fleet operator uses; the faults from the status file and the last record delivered.

=============  ===========================================================
sorter state   published state
=============  ===========================================================
starting       starting
learning       learning (the empty board, at start)
empty          ready (drop the next item)
occupied       sorting (an item is on the board, moving)
settled        deciding (an item lies still and is being classified)
deciding       deciding (its classification is still running)
stuck          stuck
stopped        stopped (also: no status file, or one not rewritten for 30 s)
=============  ===========================================================
"""

from __future__ import annotations

from typing import Any

from device.runtime_status import RuntimeStatus, parse_utc
from device.sortlog import utc_iso

STALE_AFTER_S = 30.0  # the sorter rewrites its status file every 2 s of frames
STATES = {"starting": "starting", "learning": "learning", "empty": "ready", "occupied": "sorting",
          "settled": "deciding", "deciding": "deciding", "stuck": "stuck", "stopped": "stopped"}
#: Fault names, as the ``faults`` list of the status message holds them.
FAULTS = {
    "stuck": "an item is stuck on the board",
    "camera_stopped": "the sorter runs but has read no frame for 30 s (camera stopped)",
    "disk_full": "sort records wait in memory or were lost (the log's disk is full or read-only)",
    "model_failure": "the classifier failed on the last item",
    "not_running": "the sorter is not running (no live status file, or it says stopped)",
}


def bin_status(status: RuntimeStatus | None, last_record: dict[str, Any] | None, now_s: float, *,
               stale_after_s: float = STALE_AFTER_S) -> dict[str, Any]:
    """The ``status`` message at ``now_s`` (seconds since the epoch) for the live status
    ``status`` (None: no file) and the last record delivered."""
    faults: list[str] = []
    if status is None:
        state, sorter_state, updated = "stopped", "", ""
        faults.append("not_running")
    else:
        sorter_state, updated = status.state, status.updated_utc
        state = STATES.get(status.state, status.state)
        updated_s = parse_utc(status.updated_utc)
        stale = updated_s is None or now_s - updated_s > stale_after_s
        if status.state == "stuck":
            faults.append("stuck")
        if status.state == "stopped":
            faults.append("not_running")
        elif stale:
            state = "stopped"
            faults.append("camera_stopped")
        if status.log_pending or status.log_dropped:
            faults.append("disk_full")
    if last_record is not None and "classifier failed" in str(last_record.get("reason", "")):
        faults.append("model_failure")
    return {"state": state, "sorter_state": sorter_state, "faults": faults, "problem": bool(faults),
            "sorter_updated_utc": updated, "published_utc": utc_iso(now_s),
            "items_since_start": status.items if status else 0}


def same_status(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    """Whether ``b`` says what ``a`` said (the times aside): no need to publish it again yet."""
    if a is None:
        return False
    keys = ("state", "sorter_state", "faults", "items_since_start")
    return all(a.get(k) == b.get(k) for k in keys)
