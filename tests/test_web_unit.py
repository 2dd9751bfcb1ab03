"""The web page's systemd unit (systemd/waste-sorter-web.service): off by default, the sorter's
user, no runtime or state folder of its own (stopping it must not remove the sorter's),
loopback only, `systemd-analyze verify` clean and its security exposure low."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from test_systemd_unit import EXEC_BINARY, MAX_EXPOSURE, ROOT, problems, settings, tool

UNIT = ROOT / "systemd" / "waste-sorter-web.service"


def one(key: str, section: str = "Service") -> str:
    values = settings(UNIT)[(section, key)]
    assert len(values) == 1, f"{key} is set {len(values)} times"
    return values[0]


def test_web_unit_settings():
    s = settings(UNIT)
    assert one("ExecStart") == (f"{EXEC_BINARY} web --config /etc/waste-sorter/config.toml "
                                "--status-file /run/waste-sorter/status.json --bind 127.0.0.1 --port 8080")
    assert one("User") == one("Group") == "waste-sorter"  # labels.json as `sudo -u waste-sorter captures label`
    for key in ("RuntimeDirectory", "StateDirectory", "LogsDirectory", "ConfigurationDirectory"):
        assert ("Service", key) not in s  # they are waste-sorter.service's
    assert one("ProtectSystem") == "strict" and one("ReadWritePaths") == "-/var/lib/waste-sorter/captures"
    assert one("IPAddressDeny") == "any" and one("IPAddressAllow") == "localhost"
    assert one("PrivateDevices") == "yes" and ("Service", "SupplementaryGroups") not in s  # no camera, no GPIO
    assert s[("Install", "WantedBy")] == ["multi-user.target"]
    install = (ROOT / "systemd" / "install.sh").read_text()
    assert 'install -m 0644 "$SRC_DIR/systemd/$WEB_SERVICE"' in install  # installed ...
    assert not re.search(r"^\s*systemctl (enable|start|restart)\b.*WEB_SERVICE", install, re.M)  # ... not enabled


def test_web_unit_verifies(tmp_path):
    copy = tmp_path / "waste-sorter-web.service"
    copy.write_text(UNIT.read_text().replace(EXEC_BINARY, sys.executable))
    result = subprocess.run([tool("systemd-analyze"), "verify", str(copy)], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
    output = result.stdout + result.stderr
    assert result.returncode == 0 and not problems(output), output


def test_web_unit_exposure():
    result = subprocess.run([tool("systemd-analyze"), "security", "--offline=yes", "--no-pager", str(UNIT)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
