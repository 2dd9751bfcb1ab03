"""The systemd unit and the installer: settings the issue asks for, `systemd-analyze verify`
(which exits 0 even on unknown keys, so its output is checked), the security exposure score,
and `bash -n` / `--help` of install.sh."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from device.errors import NO_RESTART_EXIT_CODES

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "waste-sorter.service"
INSTALL = ROOT / "systemd" / "install.sh"
EXEC_BINARY = "/opt/waste-sorter/venv/bin/waste-sorter"
MAX_EXPOSURE = 1.0
VERIFY_PROBLEMS = ("Unknown key", "Unknown section", "Failed to parse", "Invalid", "Missing",
                   "is not executable", "Unknown lvalue", "bad-setting")


def tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing; CI must check the unit")
        pytest.skip(f"{name} is not installed")
    return path


def settings(path: Path = UNIT) -> dict[tuple[str, str], list[str]]:
    """(section, key) -> values in order (keys may repeat)."""
    result: dict[tuple[str, str], list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        result.setdefault((section, key.strip()), []).append(value.strip())
    return result


def one(key: str, section: str = "Service") -> str:
    values = settings()[(section, key)]
    assert len(values) == 1, f"{key} is set {len(values)} times"
    return values[0]


def test_service_settings():
    s = settings()
    assert one("Type") == "notify"
    assert one("WatchdogSec") and one("TimeoutStopSec")
    assert one("Restart") == "on-failure"
    assert one("StartLimitBurst", "Unit") and one("StartLimitIntervalSec", "Unit")
    assert sorted(int(c) for c in one("RestartPreventExitStatus").split()) == sorted(NO_RESTART_EXIT_CODES)
    assert one("ExecReload").endswith("kill -HUP $MAINPID")
    assert one("ExecStart") == (f"{EXEC_BINARY} run --config /etc/waste-sorter/config.toml "
                                "--log /var/log/waste-sorter/sort.jsonl --status-file /run/waste-sorter/status.json")
    assert one("User") == "waste-sorter"
    assert set(one("SupplementaryGroups").split()) == {"video", "gpio"}
    assert one("DevicePolicy") == "closed"
    allowed = {v.split()[0] for v in s[("Service", "DeviceAllow")]}
    assert {"char-gpiochip", "char-video4linux", "char-media", "char-dma_heap"} <= allowed
    for key in ("StateDirectory", "LogsDirectory", "ConfigurationDirectory", "RuntimeDirectory"):
        assert one(key) == "waste-sorter"
    assert "LG_WD=%S/waste-sorter" in s[("Service", "Environment")]
    assert ("Service", "ProcSubset") not in s  # onnxruntime reads /proc/cpuinfo
    assert ("Service", "PrivateDevices") not in s  # would hide the camera and GPIO
    assert s[("Install", "WantedBy")] == ["multi-user.target"]


def verify_output(unit_text: str, tmp_path: Path) -> tuple[int, str]:
    """`systemd-analyze verify` of a copy whose ExecStart binary exists on this machine."""
    copy = tmp_path / "waste-sorter.service"
    copy.write_text(unit_text.replace(EXEC_BINARY, sys.executable))
    result = subprocess.run([tool("systemd-analyze"), "verify", str(copy)], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
    return result.returncode, result.stdout + result.stderr


def problems(output: str) -> list[str]:
    return [line for line in output.splitlines() if any(p in line for p in VERIFY_PROBLEMS)]


def test_systemd_analyze_verify(tmp_path):
    assert EXEC_BINARY in UNIT.read_text()
    rc, output = verify_output(UNIT.read_text(), tmp_path)
    assert rc == 0 and not problems(output), output


def test_verify_check_catches_unknown_keys(tmp_path):
    """systemd-analyze exits 0 on an unknown key: make sure the output check sees it."""
    broken = UNIT.read_text().replace("[Service]\n", "[Service]\nWatchDogSecs=5\n", 1)
    rc, output = verify_output(broken, tmp_path)
    assert problems(output), output


def test_security_exposure(tmp_path):
    result = subprocess.run([tool("systemd-analyze"), "security", "--offline=yes", "--no-pager", str(UNIT)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}\n{result.stdout}"


def test_install_script_syntax_and_help():
    bash = tool("bash")
    assert os.access(INSTALL, os.X_OK)
    check = subprocess.run([bash, "-n", str(INSTALL)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    help_ = subprocess.run([bash, str(INSTALL), "--help"], capture_output=True, text=True, timeout=30)
    assert help_.returncode == 0 and "--uninstall" in help_.stdout and "--purge" in help_.stdout
    bad = subprocess.run([bash, str(INSTALL), "--bogus"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown option" in bad.stderr
    purge_alone = subprocess.run([bash, str(INSTALL), "--purge"], capture_output=True, text=True, timeout=30)
    assert purge_alone.returncode == 2
