"""Today's counts of the records the broker acknowledged: per bin, per class, the fallback rate,
items per minute of the last hour and the last item, as the retained ``stats`` message says.

Each record is counted once, when the broker acknowledged it, in log order; the counts are
saved with the position (device/mqtt_position.py), so a restart neither loses nor repeats
them. "Today" is the local day of the record's ``ts``; a record of an earlier day (delivered
late, after days offline) counts in no day's figures but is still the last item.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from typing import Any

from device.runtime_status import parse_utc

HOUR_S = 3600
Record = dict[str, Any]
LAST_KEYS = ("ts", "item", "label", "bin", "reason", "confidence", "record_id")


def local_day(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d")


def in_last_hour(minute: int, now_s: float) -> bool:
    """Whether the minute ``minute`` (epoch seconds // 60) counts in the hour before ``now_s``:
    the minute that holds ``now_s`` − 1 h and every later one. The one rule of the ``stats``
    message and of ``waste-sorter fleet``, which counts from its ``per_minute`` table."""
    return minute >= int((now_s - HOUR_S) // 60)


def is_fallback(record: Record) -> bool:
    """Sent to the fallback bin for a reason (unsure, nothing to classify, ...), as `logs --summary`
    counts "uncertain"."""
    return bool(record.get("reason"))


class SortStats:
    def __init__(self, saved: dict[str, Any] | None = None):
        saved = saved or {}
        self.day = str(saved.get("day", ""))
        self.bins = Counter(_counts(saved.get("bins")))
        self.classes = Counter(_counts(saved.get("classes")))
        self.items = sum(self.bins.values())
        self.fallback = _int(saved.get("fallback"))
        minutes = saved.get("minutes") if isinstance(saved.get("minutes"), dict) else {}
        self.minutes: dict[int, list[int]] = {}  # minute (epoch s / 60) -> [items, fallback]
        for key, value in minutes.items():
            if str(key).isdigit() and isinstance(value, list) and len(value) == 2:
                self.minutes[int(key)] = [_int(value[0]), _int(value[1])]
        self.last: Record | None = saved.get("last") if isinstance(saved.get("last"), dict) else None

    def add(self, record: Record) -> None:
        ts = record.get("ts")
        t = parse_utc(ts) if isinstance(ts, str) else None
        self.last = {key: record.get(key) for key in LAST_KEYS if key in record}
        if t is None:
            return
        day = local_day(t)
        if day > self.day:
            self._new_day(day)
        fallback = is_fallback(record)
        if day == self.day:
            self.bins[str(record.get("bin", ""))] += 1
            self.classes[str(record.get("label", "")) or "(none)"] += 1
            self.items += 1
            self.fallback += fallback
        minute = self.minutes.setdefault(int(t // 60), [0, 0])
        minute[0] += 1
        minute[1] += fallback

    def _new_day(self, day: str) -> None:
        self.day = day
        self.bins.clear()
        self.classes.clear()
        self.items = self.fallback = 0

    def roll(self, now_s: float) -> None:
        """Forget what is older than today and than the last hour at ``now_s``."""
        day = local_day(now_s)
        if day > self.day:
            self._new_day(day)
        for minute in [m for m in self.minutes if not in_last_hour(m, now_s)]:
            del self.minutes[minute]

    def last_hour(self, now_s: float) -> tuple[int, int]:
        """Items and fallback items of the hour before ``now_s``."""
        rows = [v for m, v in self.minutes.items() if in_last_hour(m, now_s)]
        return sum(r[0] for r in rows), sum(r[1] for r in rows)

    def to_json(self) -> dict[str, Any]:
        """What the position file keeps."""
        return {"day": self.day, "bins": dict(self.bins), "classes": dict(self.classes), "fallback": self.fallback,
                "minutes": {str(m): v for m, v in sorted(self.minutes.items())}, "last": self.last}

    def message(self, bins: tuple[str, ...], now_s: float | None = None) -> dict[str, Any]:
        """The retained ``stats`` message at ``now_s``: every configured bin is named (0 when empty)."""
        now_s = time.time() if now_s is None else now_s
        self.roll(now_s)
        hour_items, hour_fallback = self.last_hour(now_s)
        return {
            "day": self.day, "items_today": self.items,
            "bins": {**{name: 0 for name in bins}, **dict(self.bins)},
            "classes": dict(self.classes.most_common()),
            "fallback_today": self.fallback,
            "fallback_rate": round(self.fallback / self.items, 4) if self.items else 0.0,
            "items_last_hour": hour_items,
            "fallback_rate_last_hour": round(hour_fallback / hour_items, 4) if hour_items else 0.0,
            "per_minute": {str(m * 60): v for m, v in sorted(self.minutes.items())},
            "last": self.last,
        }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _counts(raw: Any) -> dict[str, int]:
    return {str(k): _int(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
