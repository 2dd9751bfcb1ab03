"""The live status file the running sorter rewrites every few seconds (``waste-sorter status`` reads it).

Default place: ``/run/waste-sorter/status.json`` (``RuntimeDirectory=`` of the service). Writes are
atomic (temporary file in the same directory, then rename), so a reader never sees half a file.
Unknown keys are ignored and missing ones take defaults, so old readers read new writers.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from device import safe_json
from device.atomic import write_with
from device.errors import DataError
from device.safe_open import MiB, exists_entry, read_regular, show_path
from device.schema import JSON, SchemaError, build

log = logging.getLogger(__name__)

DEFAULT_STATUS_PATH = Path("/run/waste-sorter/status.json")
MAX_STATUS_BYTES = MiB  # the sorter writes about 1 KiB
#: Unknown keys are ignored, missing ones take defaults (old readers read new writers).
STATUS_RULES = replace(JSON, ignore_unknown=True, all_required=False, wrong_type="{path}: expected {name}, got {got}")


@dataclass(frozen=True)
class RuntimeStatus:
    updated_utc: str  # when this file was written
    started_utc: str  # when the sorter started
    frames: int = 0  # frames read since start
    frames_rejected: int = 0  # frames the exposure gate rejected since start
    reject_reasons: dict[str, int] = field(default_factory=dict)
    items: int = 0  # items sorted since start
    fps: float = 0.0  # mean frame rate since start
    model_path: str = ""
    model_sha256: str = ""
    model_mtime_utc: str = ""
    calibration_id: str = ""
    calibration_created_utc: str = ""
    state: str = "starting"  # starting, learning, empty, occupied, settled, stuck, stopped
    pid: int = 0
    log_pending: int = 0  # sort records waiting in memory (the log could not be written)
    log_dropped: int = 0  # sort records lost since start (the in-memory queue overflowed)
    indicator: str = ""  # what the person at the bin sees (ready light, bin light, buzzer); "" without one
    stuck_events: int = 0  # times a sorted item stayed on the board past presence.stuck_warn_s, since start

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)


def write_runtime_status(path: Path, status: RuntimeStatus) -> None:
    """Replace ``path`` atomically with ``status`` (mode 0644). Raises OSError on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def writer(tmp: Path) -> None:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(status.to_json() + "\n")
            os.fchmod(fh.fileno(), 0o644)  # operators read it, whatever the service's umask

    write_with(path, writer, durable=False)  # in /run (tmpfs), rewritten every few seconds


def read_runtime_status(path: Path) -> RuntimeStatus | None:
    """The status in ``path``; None (with a warning unless it is just absent) when unusable."""
    if not exists_entry(path):
        return None
    try:
        raw = safe_json.loads(read_regular(path, what="runtime status", error=DataError,
                                           limit_bytes=MAX_STATUS_BYTES))
    except DataError as exc:  # a FIFO, a folder, a dangling link, too large ...
        log.warning("%s", exc)
        return None
    except ValueError as exc:
        log.warning("%s: unreadable runtime status (%s)", show_path(path), exc)
        return None
    try:
        return build(RuntimeStatus, raw, STATUS_RULES)
    except SchemaError as exc:
        log.warning("%s: invalid runtime status (%s)", path, exc)
        return None


def parse_utc(text: str) -> float | None:
    """Seconds since the epoch for an ISO 8601 UTC time (``Z`` or offset); None if unparsable."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    except (ValueError, OverflowError):  # not a time; a year-1 time with an offset
        return None
