"""The publisher's unit (systemd/waste-sorter-mqtt.service): started after the sorter, its own
user, `systemd-analyze verify` clean, and `systemd-analyze security` no worse than the sorter's
unit but for the network it needs (checked setting by setting, and the overall exposure)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from test_systemd_unit import EXEC_BINARY, MAX_EXPOSURE, UNIT, problems, settings, tool

from device.errors import ConfigError

MQTT_UNIT = UNIT.with_name("waste-sorter-mqtt.service")
#: What the sorter's unit has and a publisher cannot: it talks to a broker over the network.
NETWORK_ITEMS = {"PrivateNetwork=", "RestrictAddressFamilies=~AF_(INET|INET6)", "IPAddressDeny="}


def one(key: str, section: str = "Service") -> str:
    values = settings(MQTT_UNIT)[(section, key)]
    assert len(values) == 1, f"{key} is set {len(values)} times"
    return values[0]


def test_unit_settings():
    assert "waste-sorter.service" in one("After", "Unit").split()
    assert one("ExecStart") == (f"{EXEC_BINARY} mqtt --config /etc/waste-sorter/config.toml "
                                "--log /var/log/waste-sorter/sort.jsonl --status-file /run/waste-sorter/status.json")
    assert one("User") == one("Group") == "waste-sorter-mqtt"
    assert one("StateDirectory") == "waste-sorter-mqtt" and one("UMask") == "0077"
    assert one("Restart") == "on-failure" and one("RestartPreventExitStatus") == str(ConfigError.exit_code)
    assert one("WantedBy", "Install") == "multi-user.target"
    assert "password" not in one("ExecStart").lower()


def test_systemd_analyze_verify(tmp_path):
    copy = tmp_path / MQTT_UNIT.name
    copy.write_text(MQTT_UNIT.read_text().replace(EXEC_BINARY, sys.executable))
    result = subprocess.run([tool("systemd-analyze"), "verify", str(copy)], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
    output = result.stdout + result.stderr
    assert result.returncode == 0 and not problems(output), output


def security(unit: Path) -> tuple[float, set[str]]:
    """The overall exposure and the names of the settings marked as missing."""
    result = subprocess.run([tool("systemd-analyze"), "security", "--offline=yes", "--no-pager", str(unit)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    missing = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("✗")}
    return float(match.group(1)), missing


def test_security_no_worse_than_the_sorter_but_for_the_network():
    sorter_exposure, sorter_missing = security(UNIT)
    exposure, missing = security(MQTT_UNIT)
    assert missing - sorter_missing <= NETWORK_ITEMS, missing - sorter_missing
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}"
    assert exposure - sorter_exposure <= 0.6, (exposure, sorter_exposure)  # only the network's share
