"""Read, follow, filter and summarise the sort log (across rotated files).

examples:
  waste-sorter logs                      the last 20 items
  waste-sorter logs -f                   ... then follow new ones (survives log rotation)
  waste-sorter logs --since 2h --reason any      items sent to the fallback bin in the last 2 hours
  waste-sorter logs --since 2024-05-01 --summary counts per bin, class and hour; latency
  waste-sorter logs --label glass --json         JSON lines, for jq

--since takes an ISO date or time (local time unless it ends in Z or an offset) or a relative
age: 90s, 30m, 2h, 1d, 1w. --label and --bin match whatever the case (Glass, glass).
A filter that matches nothing says so on stderr (exit 0); a missing log exits 65 (with -f:
it says once that it waits for the log to appear).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections import Counter, deque
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TextIO

from device.errors import DataError, UsageError
from device.log_follow import LogFollower
from device.runtime_status import parse_utc
from device.safe_open import show_path
from device.sortlog import log_files, read_records
from device.stats import percentile

log = logging.getLogger(__name__)

DEFAULT_LOG_PATH = Path("/var/log/waste-sorter/sort.jsonl")
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
Record = dict[str, Any]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="config file; its [log].path is the default log")
    parser.add_argument("--log", type=Path, help=f"sort log (default: from --config, else {DEFAULT_LOG_PATH})")
    parser.add_argument("-n", "--lines", type=int, default=20, metavar="N", help="show the last N items (20)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new items")
    parser.add_argument("--poll-s", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--since", help="only items since a date/time or an age (2h, 30m, 1d)")
    parser.add_argument("--label", help="only items the classifier called LABEL")
    parser.add_argument("--bin", help="only items sent to BIN")
    parser.add_argument("--reason", help="only items whose reason contains TEXT ('any': any reason)")
    parser.add_argument("--summary", action="store_true",
                        help="counts per bin, class and hour; reject reasons; uncertain rate; latency")
    parser.add_argument("--json", action="store_true", help="JSON lines (records) or one JSON object (summary)")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colour output (auto: only on a terminal)")


def resolve_log_path(log_arg: Path | None, config_arg: Path | None) -> Path:
    """``--log``, else the config's ``[log].path``, else the service's log."""
    if log_arg is not None:
        return Path(log_arg)
    if config_arg is not None:
        from device.config import load_config

        return Path(load_config(config_arg).log.path)
    return DEFAULT_LOG_PATH


# ---------------------------------------------------------------- filtering

def parse_since(text: str, now: float | None = None) -> float:
    """Seconds since the epoch for ``--since``: an age (``2h``) or an ISO date/time."""
    now = time.time() if now is None else now
    match = _RELATIVE.match(text)
    if match:
        return now - float(match.group(1)) * _UNIT_S[match.group(2)]
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r}: expected an ISO date/time or an age like 30m, 2h, 1d") from None
    return parsed.timestamp()  # naive = local time


def record_time(record: Record) -> float | None:
    ts = record.get("ts")
    return parse_utc(ts) if isinstance(ts, str) else None


class Seen:
    """What the records read had, for saying why a filter matched none of them."""

    def __init__(self) -> None:
        self.records = 0
        self.bins: Counter[str] = Counter()
        self.labels: Counter[str] = Counter()
        self.last_ts = ""

    def count(self, record: Record) -> Record:
        self.records += 1
        self.bins[str(record.get("bin", ""))] += 1
        self.labels[str(record.get("label", "")) or "(none)"] += 1
        self.last_ts = str(record.get("ts", "")) or self.last_ts
        return record


def no_match_note(args: argparse.Namespace, path: Path, seen: Seen) -> str:
    """One line saying that nothing matched, and what there was instead."""
    if not seen.records:
        return f"no items in {path} yet"
    asked = [f"{flag} {value}" for flag, value in (("--since", args.since), ("--label", args.label),
                                                    ("--bin", args.bin), ("--reason", args.reason)) if value]
    hints = []
    if args.bin:
        hints.append("bins: " + ", ".join(sorted(seen.bins)))
    if args.label:
        hints.append("classes: " + ", ".join(sorted(seen.labels)))
    if args.since:
        hints.append(f"the last item is of {seen.last_ts or '?'}")
    return (f"no items match {' '.join(asked)} (of {seen.records} in {path}"
            + ("; " + "; ".join(hints) if hints else "") + ")")


def make_filter(since: float | None = None, label: str | None = None, bin_: str | None = None,
                reason: str | None = None) -> Callable[[Record], bool]:
    def keep(record: Record) -> bool:
        if since is not None:
            t = record_time(record)
            if t is None or t < since:
                return False
        if label is not None and str(record.get("label", "")).lower() != label.lower():
            return False
        if bin_ is not None and str(record.get("bin", "")).lower() != bin_.lower():
            return False
        if reason is not None:
            text = str(record.get("reason", "") or "")
            if reason == "any":
                return bool(text)
            return reason.lower() in text.lower()
        return True

    return keep


# ---------------------------------------------------------------- following

def follow(follower: LogFollower, *, poll_s: float = 1.0, sleep: Callable[[float], None] = time.sleep,
           max_polls: int | None = None) -> Iterator[list[Record]]:
    """Yield each poll's new records (possibly empty), forever or ``max_polls`` times."""
    polls = 0
    while max_polls is None or polls < max_polls:
        sleep(poll_s)
        polls += 1
        yield follower.poll()


def _key(record: Record) -> tuple[Any, Any]:
    """A record's identity: its ``record_id`` (unique across runs and sorters), else, in records
    written before it existed, its time and item number."""
    if record.get("record_id"):
        return "record_id", record["record_id"]
    return record.get("ts"), record.get("item")


def note(text: str) -> None:
    """A line for the person reading, on stderr: stdout stays the records (or the JSON)."""
    print(f"waste-sorter logs: {text}", file=sys.stderr, flush=True)


def drop_seen(batch: list[Record], last_seen: tuple[Any, Any] | None) -> list[Record]:
    """``batch`` without the records up to ``last_seen`` (already shown by the tail)."""
    keys = [_key(r) for r in batch]
    if last_seen is None or last_seen not in keys:
        return batch
    return batch[len(keys) - keys[::-1].index(last_seen):]


# ---------------------------------------------------------------- summary

def summarize(records: Iterable[Record]) -> dict[str, Any]:
    bins: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    rejects: Counter[str] = Counter()
    per_hour: dict[str, dict[str, Any]] = {}
    latencies: list[float] = []
    total = uncertain = 0
    first = last = None
    for record in records:
        total += 1
        bin_, label = str(record.get("bin", "")), str(record.get("label", "")) or "(none)"
        bins[bin_] += 1
        labels[label] += 1
        if record.get("reason"):
            uncertain += 1
        reasons = record.get("reject_reasons")
        if isinstance(reasons, dict):
            for name, count in reasons.items():
                if isinstance(count, (int, float)):
                    rejects[str(name)] += int(count)
        latency = record.get("latency_ms")
        if isinstance(latency, (int, float)):
            latencies.append(float(latency))
        ts = str(record.get("ts", ""))
        first = first or ts
        last = ts
        hour = per_hour.setdefault(ts[:13] + ":00Z" if len(ts) >= 13 else "unknown",
                                   {"items": 0, "uncertain": 0, "bins": Counter(), "labels": Counter()})
        hour["items"] += 1
        hour["uncertain"] += bool(record.get("reason"))
        hour["bins"][bin_] += 1
        hour["labels"][label] += 1
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    return {
        "items": total, "first_ts": first, "last_ts": last,
        "bins": dict(bins.most_common()), "labels": dict(labels.most_common()),
        "per_hour": {h: {"items": v["items"], "uncertain": v["uncertain"], "bins": dict(v["bins"]),
                         "labels": dict(v["labels"])}
                     for h, v in sorted(per_hour.items())},
        "reject_reasons": dict(rejects.most_common()),
        "uncertain": uncertain,
        "uncertain_rate": round(uncertain / total, 4) if total else None,
        "latency_ms_p50": None if p50 is None else round(p50, 2),
        "latency_ms_p95": None if p95 is None else round(p95, 2),
    }


def _counts(counts: dict[str, int]) -> str:
    return "  ".join(f"{name} {n}" for name, n in counts.items()) or "-"


def format_summary(summary: dict[str, Any]) -> str:
    if not summary["items"]:
        return "no items"
    rate = summary["uncertain_rate"]
    lines = [
        f"items      {summary['items']}  ({summary['first_ts']} .. {summary['last_ts']})",
        f"bins       {_counts(summary['bins'])}",
        f"classes    {_counts(summary['labels'])}",
        f"uncertain  {summary['uncertain']} ({rate * 100:.1f}%)",
        f"rejected frames while deciding items  {_counts(summary['reject_reasons'])}",
        f"latency    p50 {summary['latency_ms_p50']} ms  p95 {summary['latency_ms_p95']} ms",
        "per hour (UTC):",
    ]
    for hour, row in summary["per_hour"].items():
        lines.append(f"  {hour}  {row['items']:>5}  bins: {_counts(row['bins'])}  classes: {_counts(row['labels'])}")
    return "\n".join(lines)


# ---------------------------------------------------------------- records

def format_record(record: Record, color: bool = False) -> str:
    confidence = record.get("confidence")
    conf = f"{confidence:.2f}" if isinstance(confidence, (int, float)) else "?"
    latency = record.get("latency_ms")
    lat = f"{latency:.0f} ms" if isinstance(latency, (int, float)) else "? ms"
    text = (f"{record.get('ts', '?')}  #{record.get('item', '?')}  {record.get('label') or '-'} {conf}"
            f" -> {record.get('bin', '?')}  frames {record.get('frames_used', '?')}"
            f"+{record.get('frames_rejected', 0)} rejected  {lat}")
    capture_id = record.get("capture_id")  # records written before captures have none
    if capture_id:
        text += f"  capture {capture_id}"
    reason = record.get("reason")
    if reason:
        text += f"  [{reason}]"
        if color:
            text = f"\033[33m{text}\033[0m"
    return text


def emit(records: Iterable[Record], out: TextIO, *, as_json: bool, color: bool) -> None:
    for record in records:
        out.write((json.dumps(record, separators=(",", ":")) if as_json else format_record(record, color)) + "\n")
    out.flush()


def main(args: argparse.Namespace) -> int:
    try:
        return show_logs(args, sys.stdout)
    except BrokenPipeError:  # `waste-sorter logs -f | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def show_logs(args: argparse.Namespace, out: TextIO, *, now: float | None = None,
              sleep: Callable[[float], None] = time.sleep, max_polls: int | None = None) -> int:
    """`waste-sorter logs` with ``args`` (its parsed arguments), writing to ``out``; :func:`main`
    calls it with stdout and the defaults. ``now`` (seconds since the epoch; default: the time)
    is what ``--since 2h`` counts back from; ``-f`` polls every ``--poll-s`` seconds, waiting
    with ``sleep``, forever or ``max_polls`` times."""
    path = resolve_log_path(args.log, args.config)
    if args.lines < 0:
        raise UsageError(f"-n {args.lines}: must be >= 0")
    since = parse_since(args.since, now) if args.since else None
    keep = make_filter(since, args.label, args.bin, args.reason)
    if not log_files(path):
        if not args.follow:
            raise DataError(f"{show_path(path)}: no sort log there (yet): --log, or the config's log.path "
                            f"(the sorter writes it with its first item)")
        note(f"no sort log at {show_path(path)} yet: waiting for it (Ctrl-C to stop)")
    color = args.color == "always" or (args.color == "auto" and out.isatty()
                                       and not os.environ.get("NO_COLOR"))
    seen = Seen()
    if args.summary:
        summary = summarize(r for r in read_records(path) if keep(seen.count(r)))
        if not summary["items"]:
            note(no_match_note(args, path, seen))
        out.write((json.dumps(summary) if args.json else format_summary(summary)) + "\n")
        return 0
    follower = LogFollower(path) if args.follow else None  # before the tail: nothing falls between
    tail: deque[Record] = deque(maxlen=args.lines)
    last_seen = None
    matched = 0
    for record in read_records(path):
        last_seen = _key(seen.count(record))
        if keep(record):
            tail.append(record)
            matched += 1
    if not matched and args.lines and log_files(path):
        note(no_match_note(args, path, seen) + ("; following" if follower is not None else ""))
    emit(tail, out, as_json=args.json, color=color)
    if follower is not None:
        for batch in follow(follower, poll_s=args.poll_s, sleep=sleep, max_polls=max_polls):
            batch, last_seen = drop_seen(batch, last_seen), None
            emit((r for r in batch if keep(r)), out, as_json=args.json, color=color)
    return 0
