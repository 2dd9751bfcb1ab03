"""One line per bin that publishes to an MQTT broker (`waste-sorter mqtt` on each of them).

examples:
  waste-sorter fleet --broker mqtt.example.org                  the bins now, then exit
  waste-sorter fleet --broker mqtt.example.org --watch          ... kept current
  waste-sorter fleet --config /etc/waste-sorter/config.toml     broker, TLS and login of [mqtt]

Each line: the bin, online/offline, when it was last heard from, its state, items in the last
hour, today's fallback rate and its faults. What is shown is what the broker retains.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from device.commands.status import format_age
from device.config import load_config
from device.errors import UsageError
from device.mqtt_config import broker_settings
from device.mqtt_link import BrokerLink
from device.mqtt_stats import in_last_hour
from device.runtime_status import parse_utc

CONNECT_TIMEOUT_S = 15.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", metavar="HOST", help="the broker (default: the config's mqtt.host)")
    p.add_argument("--port", type=int, help="its port (default: mqtt.port, else 1883, 8883 with TLS)")
    p.add_argument("--config", type=Path, help="config file whose [mqtt] gives TLS, login and prefix")
    p.add_argument("--prefix", help="topic prefix (default: mqtt.prefix, waste-sorter)")
    p.add_argument("--watch", action="store_true", help="keep the lines current")
    p.add_argument("--interval-s", type=float, default=2.0, help="with --watch: redraw every N seconds (2)")
    p.add_argument("--wait-s", type=float, default=1.0, help="how long to collect retained messages (1)")
    p.add_argument("--json", action="store_true", help="one JSON object: bin -> what the broker holds")


@dataclass
class Bin:
    availability: str = "?"
    status: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


class Fleet:
    """What the broker retains about each bin under ``prefix``, kept current by messages."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.bins: dict[str, Bin] = {}

    @property
    def subscriptions(self) -> list[str]:
        return [f"{self.prefix}/+/{name}" for name in ("availability", "status", "stats")]

    def take(self, topic: str, payload: bytes) -> None:
        rest = topic[len(self.prefix) + 1:] if topic.startswith(self.prefix + "/") else ""
        device, _, name = rest.rpartition("/")
        if not device or "/" in device:
            return
        if not payload:  # an empty retained message: the bin was forgotten
            if name == "availability":
                self.bins.pop(device, None)
            return
        text = payload.decode("utf-8", "replace")
        entry = self.bins.setdefault(device, Bin())
        if name == "availability":
            entry.availability = text[:16]
            return
        try:
            body = json.loads(text)
        except ValueError:
            return
        if isinstance(body, dict) and name in ("status", "stats"):
            setattr(entry, name, body)


def items_last_hour(stats: dict[str, Any], now_s: float) -> tuple[int | None, float | None]:
    """Items and fallback rate of the hour before ``now_s``, from the per-minute counts (keyed by
    each minute's start, epoch seconds), by the publisher's own rule (:func:`in_last_hour`)."""
    minutes = stats.get("per_minute")
    if not isinstance(minutes, dict):
        return None, None
    items = fallback = 0
    for start, counts in minutes.items():
        if str(start).isdigit() and in_last_hour(int(start) // 60, now_s) and isinstance(counts, list) \
                and len(counts) == 2:
            items += int(counts[0]) if isinstance(counts[0], int) else 0
            fallback += int(counts[1]) if isinstance(counts[1], int) else 0
    return items, (fallback / items if items else None)


def format_line(device: str, entry: Bin, now_s: float) -> str:
    seen = parse_utc(str(entry.status.get("published_utc", "")))
    age = format_age(None if seen is None else max(0.0, now_s - seen))
    hour, _ = items_last_hour(entry.stats, now_s)
    rate = entry.stats.get("fallback_rate")
    rate_text = f"{rate * 100:.1f}%" if isinstance(rate, (int, float)) and entry.stats.get("items_today") else "-"
    faults = entry.status.get("faults")
    fault_text = ",".join(str(f) for f in faults) if isinstance(faults, list) and faults else "-"
    return (f"{device:<20} {entry.availability:<8} seen {age + ' ago':<10} {str(entry.status.get('state', '?')):<9}"
            f" items/h {'?' if hour is None else hour:>4}  fallback today {rate_text:>6}  faults {fault_text}")


def format_fleet(fleet: Fleet, now_s: float) -> str:
    if not fleet.bins:
        return f"no bins under {fleet.prefix}/ on this broker"
    header = f"{'bin':<20} {'':<8} {'last seen':<15} state"
    return "\n".join([header] + [format_line(d, fleet.bins[d], now_s) for d in sorted(fleet.bins)])


def main(args: argparse.Namespace) -> int:
    return show_fleet(args, sys.stdout)


def show_fleet(args: argparse.Namespace, out: TextIO, *, max_redraws: int | None = None) -> int:
    config = load_config(args.config).mqtt
    if args.broker:
        config = replace(config, host=args.broker)
    if args.port is not None:
        config = replace(config, port=args.port)
    if not config.host:
        raise UsageError("--broker HOST is needed (or a --config with mqtt.host)")
    if args.interval_s <= 0 or args.wait_s < 0:
        raise UsageError("--interval-s must be > 0 and --wait-s >= 0")
    settings = replace(broker_settings(config, "fleet"), client_id=f"waste-sorter-fleet-{time.time_ns() % 10**9}")
    fleet = Fleet(args.prefix or config.prefix)
    with BrokerLink(settings, will_topic=None, reconnect_min_s=config.reconnect_min_s,
                    reconnect_max_s=config.reconnect_max_s) as link:
        link.client.on_message = lambda client, userdata, message: fleet.take(message.topic, message.payload)
        link.wait_connected(CONNECT_TIMEOUT_S)
        subscribed = _subscribe(link, fleet)
        _poll_for(link, args.wait_s)
        redraws = 0
        while True:
            now = time.time()
            if args.json:
                out.write(json.dumps({d: vars(b) for d, b in sorted(fleet.bins.items())}) + "\n")
            else:
                clear = "\033[H\033[J" if args.watch and out.isatty() else ""
                out.write(clear + format_fleet(fleet, now) + "\n")
            out.flush()
            redraws += 1
            if not args.watch or (max_redraws is not None and redraws >= max_redraws):
                return 0
            _poll_for(link, args.interval_s)
            if link.connected and link.connects != subscribed:  # connected again: a new session
                subscribed = _subscribe(link, fleet)


def _subscribe(link: BrokerLink, fleet: Fleet) -> int:
    """Subscribe to what the fleet shows; the connection's number (BrokerLink.connects)."""
    for topic in fleet.subscriptions:
        link.client.subscribe(topic, qos=1)
    return link.connects


def _poll_for(link: BrokerLink, seconds: float) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        link.poll(min(0.1, max(0.0, until - time.monotonic())))
