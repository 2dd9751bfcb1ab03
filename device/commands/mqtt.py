"""Publish the sort log and the bin's state to an MQTT broker (a process beside the sorter).

examples:
  waste-sorter mqtt --config /etc/waste-sorter/config.toml        publish until stopped
  waste-sorter mqtt --config FILE --check-config                  broker, topics, position file; exit
  waste-sorter mqtt --config FILE --forget                        remove the bin from Home Assistant

Every record of the log (QoS 1) goes to <prefix>/<device>/record in order, each once the
broker is there, however long it was away: the position in the log is saved after the broker
acknowledged (mqtt.position_file). The state, faults, counts and availability are retained
(README, "A fleet on one MQTT broker"). Needs the mqtt extra: pip install 'waste-sorter[mqtt]'.
Exit codes: 78 config (the [mqtt] section, the password file), 69 broker unreachable (--forget).
"""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from device import record_ids
from device.cli import version
from device.commands.logs import DEFAULT_LOG_PATH
from device.config import Config, load_config
from device.mqtt_config import broker_settings
from device.mqtt_link import BrokerLink, BrokerError
from device.mqtt_position import PositionStore
from device.mqtt_publisher import Publisher
from device.mqtt_topics import Topics, discovery_filter, discovery_messages
from device.runtime_status import DEFAULT_STATUS_PATH

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0  # --forget


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="config file with the [mqtt] section (and [log], [bins])")
    p.add_argument("--log", type=Path, help=f"sort log (default: the config's [log].path with --config, "
                                            f"else {DEFAULT_LOG_PATH})")
    p.add_argument("--status-file", type=Path, default=DEFAULT_STATUS_PATH,
                   help=f"the sorter's live status ({DEFAULT_STATUS_PATH})")
    p.add_argument("--position-file", type=Path, help="where the delivered position is kept (mqtt.position_file)")
    p.add_argument("--check-config", action="store_true", help="show broker, topics and files, then exit")
    p.add_argument("--forget", action="store_true",
                   help="remove the bin's retained messages and Home Assistant entities, then exit")
    # small intervals for tests and the load check
    for name, default in (("--poll-s", 0.5), ("--status-interval-s", 1.0), ("--stats-interval-s", 1.0),
                          ("--heartbeat-s", 60.0), ("--save-interval-s", 1.0)):
        p.add_argument(name, type=float, default=default, help=argparse.SUPPRESS)


def device_of(config: Config) -> str:
    """The device id in the topics: mqtt.device_id, else the sorter's ([device] id, else the host)."""
    return config.mqtt.device_id or record_ids.device_id(config.device.id)


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    mq = config.mqtt
    device = device_of(config)
    settings = broker_settings(mq, device)
    topics = Topics(mq.prefix, device)
    log_path = args.log or (Path(config.log.path) if args.config else DEFAULT_LOG_PATH)
    position_file = args.position_file or Path(mq.position_file)
    bins = tuple(config.bins)
    discovery = discovery_messages(topics, bins, discovery_prefix=mq.discovery_prefix,
                                   version=version()) if mq.discovery else []
    if args.check_config:
        print(f"mqtt config OK; {settings.describe()}")
        print(f"topics {topics.base}/(availability|record|status|stats); "
              f"discovery {f'{len(discovery)} entities under {mq.discovery_prefix}/' if discovery else 'off'}")
        print(f"log {log_path}; status {args.status_file}; position {position_file}")
        return 0
    link = BrokerLink(settings, will_topic=None if args.forget else topics.availability,
                      max_in_flight=mq.max_in_flight,
                      reconnect_min_s=mq.reconnect_min_s, reconnect_max_s=mq.reconnect_max_s)
    if args.forget:
        return forget(link, topics, discovery, discovery_filter(topics, mq.discovery_prefix))
    publisher = Publisher(link, topics, log_path=log_path, status_path=args.status_file,
                          store=PositionStore(position_file), bins=bins, discovery=discovery,
                          max_in_flight=mq.max_in_flight, poll_s=args.poll_s,
                          status_interval_s=args.status_interval_s, stats_interval_s=args.stats_interval_s,
                          heartbeat_s=args.heartbeat_s, save_interval_s=args.save_interval_s)
    stop: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.append(signum))
    log.info("publishing %s as %s/... to %s", log_path, topics.base, settings.describe())
    publisher.run(lambda: bool(stop))
    log.info("stopped (%s); %d record(s) delivered since start", signal.Signals(stop[0]).name if stop else "-",
             publisher.delivered)
    return 0


def forget(link: BrokerLink, topics: Topics, discovery: list[tuple[str, str]], filter_: str) -> int:
    """Empty retained payloads on the bin's topics and on every discovery config of it (those the
    config names, and any other the broker holds under the bin's node id)."""
    found: set[str] = set()
    link.client.on_message = lambda client, userdata, message: found.add(message.topic) if message.retain else None
    with link:
        link.wait_connected(CONNECT_TIMEOUT_S)
        link.client.subscribe(filter_, qos=1)
        for _ in range(10):  # the broker sends what it retains right after the subscription
            link.poll(0.05)
        topics_to_clear = sorted({topic for topic, _ in discovery} | found) + list(topics.retained())
        mids = {link.publish(topic, "", retain=True) for topic in topics_to_clear}
        if not link.wait_acked(mids, CONNECT_TIMEOUT_S):
            raise BrokerError(f"broker {link.settings.name}: not every removal was acknowledged")
    print(f"removed {len(topics_to_clear)} retained message(s) of {topics.base} "
          f"({len(topics_to_clear) - len(topics.retained())} Home Assistant entities)")
    return 0
