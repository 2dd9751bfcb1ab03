"""The ``[mqtt]`` section and what the publisher derives without a broker: validation with key
paths, the password kept out of every output, the counts and the status message, record ids,
and the sorter never importing paho."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from device.cli import main as cli_main
from device.commands import fleet
from device.config import parse_config
from device.errors import ConfigError
from device.mqtt_config import broker_settings
from device.mqtt_publisher import record_payload
from device.mqtt_state import bin_status
from device.mqtt_stats import SortStats
from device.runtime_status import RuntimeStatus
from device.sortlog import utc_iso

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("mqtt, message", [
    ({"hots": "x"}, "mqtt.hots: unknown key"),
    ({"port": 0}, "mqtt.port: 0 is out of range [1, 65535]"),
    ({"prefix": "bins/#"}, "mqtt.prefix"),
    ({"device_id": "bin 1"}, "mqtt.device_id"),
    ({"keepalive_s": 1}, "mqtt.keepalive_s: 1 is out of range"),
    ({"cert_file": "/c.pem"}, "mqtt.key_file: needed with mqtt.cert_file"),
    ({"password_file": "/p"}, "mqtt.password_file: needs mqtt.username"),
    ({"reconnect_min_s": 5.0, "reconnect_max_s": 1.0}, "mqtt.reconnect_min_s: 5.0 must be at most"),
])
def test_invalid_mqtt_keys_are_named(mqtt, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("#", r"\#")):
        parse_config({"mqtt": mqtt})


def test_defaults_and_tls_port():
    config = parse_config({"mqtt": {"host": "broker.lan", "ca_file": "/etc/ca.pem"}}).mqtt
    settings = broker_settings(config, "bin-1")
    assert (settings.port, settings.tls, settings.client_id) == (8883, True, "waste-sorter-bin-1")
    assert broker_settings(parse_config({"mqtt": {"host": "b"}}).mqtt, "x").port == 1883
    with pytest.raises(ConfigError, match="mqtt.host: no broker configured"):
        broker_settings(parse_config({}).mqtt, "x")


def test_the_password_appears_nowhere(tmp_path, capsys):
    secret = "s3cret-Pa55"
    password_file = tmp_path / "password"
    password_file.write_text(secret + "\n")
    password_file.chmod(0o600)
    config = tmp_path / "config.toml"
    config.write_text(f'[mqtt]\nhost = "broker.lan"\nusername = "bin"\npassword_file = "{password_file}"\n')
    settings = broker_settings(parse_config({"mqtt": {"host": "b", "username": "u",
                                                      "password_file": str(password_file)}}).mqtt, "x")
    assert settings.password == secret
    assert secret not in repr(settings) and secret not in settings.describe()
    assert cli_main(["mqtt", "--config", str(config), "--check-config"]) == 0
    out = capsys.readouterr()
    assert "mqtt config OK; broker broker.lan:1883, no TLS, user bin with a password" in out.out
    assert secret not in out.out + out.err
    password_file.chmod(0o640)
    assert cli_main(["mqtt", "--config", str(config), "--check-config"]) == 78
    assert "may be read by others (mode 0640)" in capsys.readouterr().err


def test_record_ids_kept_or_made():
    assert '"record_id":"bin-1-run-7"' in record_payload({"item": 7, "record_id": "bin-1-run-7"}, "bin-1")
    made = record_payload({"ts": "2026-01-01T10:00:00.000Z", "item": 3}, "bin-2")
    assert '"device_id":"bin-2"' in made and '"record_id":"bin-2-2026-01-01T10:00:00.000Z-3"' in made


def test_counts_are_today_s_and_survive_a_save():
    now = time.time()
    stats = SortStats()
    stats.add({"ts": utc_iso(now - 86400 * 2, ms=True), "item": 1, "bin": "glass", "label": "glass"})
    for item, reason in ((2, ""), (3, "low confidence"), (4, "")):
        stats.add({"ts": utc_iso(now - 30, ms=True), "item": item, "bin": "glass", "label": "glass", "reason": reason})
    message = SortStats(stats.to_json()).message(("paper", "glass"), now)
    assert message["items_today"] == 3 and message["bins"] == {"paper": 0, "glass": 3}
    assert message["fallback_rate"] == round(1 / 3, 4) and message["items_last_hour"] == 3
    assert message["last"]["item"] == 4


def test_fleet_counts_the_last_hour_as_the_stats_message_does():
    """Items at 10:00:00, 10:00:30 and 11:00:05; at 11:00:40 the hour before reaches back to
    10:00:40, inside the 10:00 minute: the publisher counts that minute, and so must fleet."""
    base = 1_800_000_000 - 1_800_000_000 % 3600  # an hour's start, epoch seconds
    stats = SortStats()
    for offset_s in (0, 30, 3605):
        stats.add({"ts": utc_iso(base + offset_s, ms=True), "item": offset_s, "bin": "glass", "label": "glass"})
    for now_s, expected in ((base + 3640, 3), (base + 3659, 3), (base + 3660, 1), (base + 3700, 1)):
        message = stats.message(("glass",), now_s)  # from 10:01 on, only 11:00:05 counts
        assert message["items_last_hour"] == expected, now_s
        assert fleet.items_last_hour(message, now_s)[0] == expected, now_s


def test_status_message_names_state_and_faults():
    now = time.time()
    ok = RuntimeStatus(updated_utc=utc_iso(now), started_utc=utc_iso(now), state="settled")
    assert bin_status(ok, None, now)["state"] == "deciding" and bin_status(ok, None, now)["faults"] == []
    failed = bin_status(ok, {"reason": "classifier failed"}, now)
    assert failed["faults"] == ["model_failure"] and failed["problem"]


def test_the_sorter_does_not_import_paho():
    code = ("import sys, device.commands.run, device.config, device.loop; "
            "sys.exit(1 if any(m.startswith('paho') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0
