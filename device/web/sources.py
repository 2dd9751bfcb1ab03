"""What the pages show, read from the files the sorter writes (nothing is asked of the sorter):

    the status file   /run/waste-sorter/status.json  state, ready light, frames, stuck events
    the latest frame  frame.jpg beside it (:mod:`device.frame_preview`)
    the sort log      today's records, followed as they are appended (across rotations)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.commands.logs import record_time, summarize
from device.commands.status import local_day_start, runtime_report, service_state
from device.errors import DataError
from device.frame_preview import FRAME_FILE
from device.log_follow import LogFollower
from device.sortlog import log_files, read_lines_from
from device.runtime_status import read_runtime_status
from device.safe_open import exists_entry, read_regular

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 4 * 1024 * 1024  # the sorter writes about 15 KB
LAST_ITEMS = 12
SERVICE_EVERY_S = 10.0  # systemctl is asked at most this often


@dataclass(frozen=True)
class Sources:
    status_file: Path
    log_path: Path
    capture_dir: Path

    @property
    def frame_file(self) -> Path:
        return self.status_file.with_name(FRAME_FILE)


def _key(record: dict[str, Any]) -> tuple:
    return record.get("record_id"), record.get("ts"), record.get("item"), record.get("source_time")


class TodayLog:
    """The sort log's records since local midnight, followed as the sorter appends them: at
    the first page the files written to since midnight are read (a full log of older days is
    not), then only what is appended (a busy log is not read again per page)."""

    def __init__(self, path: Path, clock=time.time):
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        self._follower: LogFollower | None = None
        self._overlap: set[tuple] = set()  # read at the start: the follower's first poll may repeat them
        self._records: deque[dict[str, Any]] = deque()
        self._day_start = 0.0
        self.problem = ""

    def _start(self, day: float) -> None:
        self._records.clear()
        self._overlap.clear()
        follower = LogFollower(self.path)  # from the end as it is now: nothing falls between
        for file in log_files(self.path):
            try:
                if file.stat().st_mtime < day:
                    continue  # last written before midnight: no record of today
            except OSError:
                continue  # rotated away meanwhile
            for record in read_lines_from(file)[0]:
                if (record_time(record) or 0.0) >= day:
                    self._records.append(record)
                    self._overlap.add(_key(record))
        self._follower, self._day_start = follower, day

    def records(self) -> list[dict[str, Any]]:
        """Today's records, oldest first (what could be read: a log that cannot be read is
        ``problem``, and the records read so far stay)."""
        with self._lock:
            day = local_day_start(self.clock())
            try:
                if self._follower is None:
                    self._start(day)
                new = self._follower.poll()
                self.problem = ""
            except DataError as exc:  # a log that is a folder, a FIFO, unreadable ...
                new, self.problem = [], str(exc)
            if self._overlap:
                new, self._overlap = [r for r in new if _key(r) not in self._overlap], set()
            self._records.extend(r for r in new if (record_time(r) or 0.0) >= day)
            if day != self._day_start:  # past midnight: yesterday's go
                self._day_start = day
                while self._records and (record_time(self._records[0]) or 0.0) < day:
                    self._records.popleft()
            return list(self._records)


class NowSource:
    """The Now page's facts."""

    def __init__(self, sources: Sources, today: TodayLog, clock=time.time, service=service_state):
        self.sources, self.today, self.clock, self._service = sources, today, clock, service
        self._service_at, self._service_said = -1e18, "unknown"

    def service(self) -> str:
        now = time.monotonic()
        if now - self._service_at >= SERVICE_EVERY_S:
            self._service_at, self._service_said = now, self._service()
        return self._service_said

    def report(self) -> dict[str, Any]:
        now = self.clock()
        status = read_runtime_status(self.sources.status_file)
        records = self.today.records()
        return {"service": self.service(), "runtime": None if status is None else runtime_report(status, now),
                "status_file": str(self.sources.status_file), "items_today": len(records),
                "last_items": records[-LAST_ITEMS:][::-1], "log": str(self.sources.log_path),
                "log_problem": self.today.problem}

    def frame(self) -> bytes | None:
        """The latest frame's JPEG; None when the sorter writes none."""
        path = self.sources.frame_file
        if not exists_entry(path):
            return None
        try:
            return read_regular(path, what="latest frame", error=DataError, limit_bytes=MAX_FRAME_BYTES)
        except DataError as exc:
            log.warning("%s", exc)
            return None


def today_summary(today: TodayLog) -> dict[str, Any]:
    """``logs --summary`` of today's records (one implementation: :func:`summarize`)."""
    return summarize(today.records())
