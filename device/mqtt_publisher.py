"""The publisher's loop: sort records from the log to the broker, the bin's state beside them.

Records are read from the sort log at the saved position, at most ``max_in_flight`` of them
sent and not yet acknowledged (QoS 1); each acknowledgement, taken in log order, counts the
record in the stats and moves the position, which is saved atomically at most every
``save_interval_s`` and at the end. So memory stays bounded however long the broker is away,
a restart sends again only what was not acknowledged, and the sorter never waits: it does not
know the publisher exists. On each connection the bin says ``online`` (retained; the last
will says ``offline``), its discovery configs, status and stats; the status file is read
every ``status_interval_s`` and published when it says something new, or every
``heartbeat_s``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from device.mqtt_link import BrokerLink
from device.mqtt_position import Entry, LogCursor, PositionStore
from device.mqtt_state import bin_status, same_status
from device.mqtt_stats import SortStats
from device.mqtt_topics import ONLINE, Topics
from device.runtime_status import read_runtime_status

log = logging.getLogger(__name__)

Record = dict[str, Any]
SAVE_ERROR_INTERVAL_S = 60.0


def record_id(record: Record, device: str) -> str:
    """The record's own ``record_id``; for records written before it existed, one made of the
    device, the record's time and its item number (unique on one sorter)."""
    own = record.get("record_id")
    if isinstance(own, str) and own:
        return own
    return f"{device}-{record.get('ts', '')}-{record.get('item', '')}"


def record_payload(record: Record, device: str) -> str:
    """The record as the sort log has it, with ``device_id`` and ``record_id`` for consumers
    that drop a repeat."""
    body = dict(record)
    body["device_id"] = record.get("device_id") or device
    body["record_id"] = record_id(record, device)
    return json.dumps(body, separators=(",", ":"))


class Publisher:
    def __init__(self, link: BrokerLink, topics: Topics, *, log_path: Path, status_path: Path,
                 store: PositionStore, bins: tuple[str, ...], discovery: list[tuple[str, str]] = (),
                 max_in_flight: int = 100, poll_s: float = 0.5, status_interval_s: float = 1.0,
                 stats_interval_s: float = 1.0, heartbeat_s: float = 60.0, save_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.time):
        self.link, self.topics, self.bins = link, topics, bins
        self.status_path = Path(status_path)
        self.store = store
        self.discovery = list(discovery)
        self.max_in_flight = max_in_flight
        self.poll_s, self.status_interval_s, self.stats_interval_s = poll_s, status_interval_s, stats_interval_s
        self.heartbeat_s, self.save_interval_s = heartbeat_s, save_interval_s
        self._clock = clock
        saved = store.load()
        self.cursor = LogCursor(Path(log_path), saved.position)
        self.position = saved.position  # after the last record the broker acknowledged
        self.stats = SortStats(saved.stats)
        self.in_flight: deque[tuple[int, Entry]] = deque()  # (message id, entry), in log order
        self._in_flight_ids: set[int] = set()
        self._acked_ids: set[int] = set()
        self.delivered = 0  # records acknowledged since start
        self._dirty = False  # acknowledged records not saved yet
        self._saved_at = self._status_at = self._stats_at = self._read_at = self._save_error_at = float("-inf")
        self._stats_changed = True
        self._status_sent: dict[str, Any] | None = None
        self._status_sent_at = float("-inf")
        self._log_had_more = False

    # ------------------------------------------------------------ the loop

    def run(self, should_stop: Callable[[], bool], *, tick_s: float = 0.05) -> None:
        """Step until ``should_stop()``; then save the position and say ``offline``."""
        try:
            while not should_stop():
                self.step(tick_s)
        finally:
            self.close()

    def step(self, tick_s: float = 0.05) -> None:
        self.link.poll(tick_s)
        self._take_acks()
        now = self._clock()
        if self.link.connected:
            if self.link.just_connected:
                self.link.just_connected = False
                self._announce(now)
            self._send_records(now)
            if now - self._status_at >= self.status_interval_s:
                self._status_at = now
                self._publish_status(now)
            if self._stats_changed and now - self._stats_at >= self.stats_interval_s \
                    or now - self._stats_at >= self.heartbeat_s:
                self._publish_stats(now)
        if self._dirty and now - self._saved_at >= self.save_interval_s:
            self.save()

    def _announce(self, now: float) -> None:
        """What a broker that restarted (and lost its retained messages) must hear again."""
        self.link.publish(self.topics.availability, ONLINE, retain=True)
        for topic, payload in self.discovery:
            self.link.publish(topic, payload, retain=True)
        self._status_sent = None
        self._publish_status(now)
        self._publish_stats(now)

    def _send_records(self, now: float) -> None:
        room = self.max_in_flight - len(self.in_flight)
        if room <= 0 or (not self._log_had_more and now - self._read_at < self.poll_s):
            return
        self._read_at = now
        entries = self.cursor.read(room)
        self._log_had_more = len(entries) == room  # maybe more waiting: read again at the next step
        for entry in entries:
            mid = self.link.publish(self.topics.record, record_payload(entry.record, self.topics.device))
            self.in_flight.append((mid, entry))
            self._in_flight_ids.add(mid)

    def _take_acks(self) -> None:
        for mid in self.link.take_acked():
            if mid in self._in_flight_ids:
                self._acked_ids.add(mid)
        while self.in_flight and self.in_flight[0][0] in self._acked_ids:
            mid, entry = self.in_flight.popleft()
            self._acked_ids.discard(mid)
            self._in_flight_ids.discard(mid)
            self.stats.add({**entry.record, "record_id": record_id(entry.record, self.topics.device)})
            self.position = entry.position
            self.delivered += 1
            self._dirty = self._stats_changed = True

    def _publish_status(self, now: float) -> None:
        message = bin_status(read_runtime_status(self.status_path), self.stats.last, now)
        if same_status(self._status_sent, message) and now - self._status_sent_at < self.heartbeat_s:
            return
        self.link.publish(self.topics.status, json.dumps(message), retain=True)
        self._status_sent, self._status_sent_at = message, now

    def _publish_stats(self, now: float) -> None:
        self._stats_at = now
        self._stats_changed = False
        self.link.publish(self.topics.stats, json.dumps(self.stats.message(self.bins, now)), retain=True)

    # ------------------------------------------------------------ the position

    def save(self) -> None:
        """Save the position of the last acknowledged record and the counts up to it."""
        now = self._clock()
        self._saved_at = now
        try:
            self.store.save(self.position, self.stats.to_json())
        except OSError as exc:
            if now - self._save_error_at >= SAVE_ERROR_INTERVAL_S:
                self._save_error_at = now
                log.error("position file %s not written (%s); records delivered since the last save "
                          "will be sent again after a restart", self.store.path, exc.strerror or exc)
            return
        self._dirty = False

    def close(self) -> None:
        """Take the last acknowledgements, save, say ``offline`` and disconnect."""
        self._take_acks()
        self.save()
        self.link.close(say_offline=self.topics.availability)
        self._take_acks()
        if self._dirty:
            self.save()
