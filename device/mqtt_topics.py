"""The publisher's topics and its Home Assistant discovery messages (no paho here).

Topics are ``<prefix>/<device>/<name>`` (README, "A fleet on one MQTT broker", has the table).
Discovery follows Home Assistant's MQTT discovery: one retained config message per entity at
``<discovery prefix>/<component>/<node id>/<object id>/config``, all of one device, removed
by the same topics with an empty retained payload (``waste-sorter mqtt --forget``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

ONLINE, OFFLINE = "online", "offline"
_NOT_ID = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Topics:
    prefix: str
    device: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device}"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def record(self) -> str:
        return f"{self.base}/record"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    def retained(self) -> tuple[str, ...]:
        """Every topic this publisher leaves a retained message on (``--forget`` clears them)."""
        return self.availability, self.status, self.stats


def ha_id(text: str) -> str:
    """``text`` as Home Assistant takes it in a node or object id."""
    return _NOT_ID.sub("_", text)


def discovery_messages(topics: Topics, bins: tuple[str, ...], *, discovery_prefix: str = "homeassistant",
                       version: str = "") -> list[tuple[str, str]]:
    """(topic, JSON payload) of every entity of the bin: state, last class and bin, items today
    (all and per bin), fallback rate, a problem sensor (any fault) and a connectivity sensor."""
    device = topics.device
    node = ha_id(f"waste_sorter_{device}")
    about = {"identifiers": [f"waste-sorter-{device}"], "name": f"Waste sorter {device}",
             "manufacturer": "waste-sorter", "model": "edge waste sorter", "sw_version": version}
    available = {"availability_topic": topics.availability, "payload_available": ONLINE,
                 "payload_not_available": OFFLINE}
    entities: list[tuple[str, str, dict]] = [
        ("sensor", "state", {"name": "State", "state_topic": topics.status, "icon": "mdi:delete-variant",
                             "value_template": "{{ value_json.state }}",
                             "json_attributes_topic": topics.status}),
        ("sensor", "last_class", {"name": "Last class", "state_topic": topics.stats,
                                  "value_template": "{{ (value_json.last or {}).get('label', '') }}"}),
        ("sensor", "last_bin", {"name": "Last bin", "state_topic": topics.stats,
                                "value_template": "{{ (value_json.last or {}).get('bin', '') }}"}),
        ("sensor", "items_today", {"name": "Items today", "state_topic": topics.stats,
                                   "unit_of_measurement": "items", "state_class": "total_increasing",
                                   "value_template": "{{ value_json.items_today }}"}),
        ("sensor", "fallback_rate", {"name": "Fallback rate today", "state_topic": topics.stats,
                                     "unit_of_measurement": "%", "state_class": "measurement",
                                     "value_template": "{{ (value_json.fallback_rate * 100) | round(1) }}"}),
        ("binary_sensor", "problem", {"name": "Problem", "state_topic": topics.status, "device_class": "problem",
                                      "value_template": "{{ 'ON' if value_json.problem else 'OFF' }}",
                                      "json_attributes_topic": topics.status,
                                      "json_attributes_template": "{{ {'faults': value_json.faults} | tojson }}"}),
    ]
    for name in bins:
        entities.append(("sensor", f"items_today_{ha_id(name)}", {
            "name": f"Items today in {name}", "state_topic": topics.stats, "unit_of_measurement": "items",
            "state_class": "total_increasing",
            "value_template": f"{{{{ value_json.bins.get({json.dumps(name)}, 0) }}}}"}))
    messages = []
    for component, object_id, config in entities:
        body = {**config, **available, "unique_id": f"{node}_{object_id}", "device": about,
                "origin": {"name": "waste-sorter", "sw_version": version}}
        messages.append((f"{discovery_prefix}/{component}/{node}/{object_id}/config", json.dumps(body)))
    connectivity = {"name": "Connected", "state_topic": topics.availability, "device_class": "connectivity",
                    "payload_on": ONLINE, "payload_off": OFFLINE, "unique_id": f"{node}_connected",
                    "device": about, "origin": {"name": "waste-sorter", "sw_version": version}}
    messages.append((f"{discovery_prefix}/binary_sensor/{node}/connected/config", json.dumps(connectivity)))
    return messages


def discovery_filter(topics: Topics, discovery_prefix: str = "homeassistant") -> str:
    """A subscription that matches every discovery config of the bin (``--forget`` clears what it finds)."""
    return f"{discovery_prefix}/+/{ha_id(f'waste_sorter_{topics.device}')}/+/config"
