"""Home Assistant discovery (retained configs of one device, removed by ``--forget``) and the
operator's ``waste-sorter fleet`` view, against a real Mosquitto."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

from helpers import args_for, event
from mqtt_broker import ROOT, PublisherProcess, Subscriber, broker, retained  # noqa: F401 - broker is a fixture

from device.commands import fleet
from device.runtime_status import RuntimeStatus, write_runtime_status
from device.sortlog import SortLog, utc_iso

BINS = ("paper", "glass", "containers", "landfill")  # the default config's


def test_discovery_configs_are_retained_and_forget_removes_everything(tmp_path, broker):
    config = broker.config(device_id="bin-7", position_file=str(tmp_path / "position.json"))
    pub = PublisherProcess(tmp_path, config)
    sub = Subscriber(broker, "homeassistant/#", clean=True)
    sub.wait_for(lambda: len(sub.messages) >= 7 + len(BINS), what="discovery configs")
    configs = retained(broker, "homeassistant/#")
    node = "waste_sorter_bin-7"
    assert set(configs) == {f"homeassistant/sensor/{node}/{name}/config" for name in
                            ("state", "last_class", "last_bin", "items_today", "fallback_rate",
                             *(f"items_today_{b}" for b in BINS))} | \
        {f"homeassistant/binary_sensor/{node}/{name}/config" for name in ("problem", "connected")}
    problem = json.loads(configs[f"homeassistant/binary_sensor/{node}/problem/config"])
    assert problem["device_class"] == "problem" and problem["state_topic"] == "waste-sorter/bin-7/status"
    assert problem["availability_topic"] == "waste-sorter/bin-7/availability"
    assert problem["device"]["identifiers"] == ["waste-sorter-bin-7"]
    paper = json.loads(configs[f"homeassistant/sensor/{node}/items_today_paper/config"])
    assert paper["value_template"] == '{{ value_json.bins.get("paper", 0) }}'
    assert len({json.loads(c)["unique_id"] for c in configs.values()}) == len(configs)
    pub.terminate()
    sub.close()
    forget = subprocess.run([sys.executable, "-m", "device.cli", "mqtt", "--config", str(pub.config), "--forget"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert forget.returncode == 0, forget.stderr
    assert "removed 14 retained message(s) of waste-sorter/bin-7 (11 Home Assistant entities)" in forget.stdout
    assert retained(broker, "homeassistant/#") == {}
    assert retained(broker, "waste-sorter/#") == {}


def test_fleet_shows_one_line_per_bin(tmp_path, broker):
    busy, gone = tmp_path / "busy", tmp_path / "gone"
    for folder in (busy, gone):
        folder.mkdir()
    now = time.time()
    with SortLog(busy / "sort.jsonl") as log:
        for item in range(1, 9):
            log.append(event(item, t=now - 60, reason="" if item % 4 else "low confidence 0.40 < 0.55",
                             bin_="landfill" if item % 4 == 0 else "containers"))
    write_runtime_status(busy / "status.json", RuntimeStatus(updated_utc=utc_iso(), started_utc=utc_iso(),
                                                             state="stuck"))
    write_runtime_status(gone / "status.json", RuntimeStatus(updated_utc=utc_iso(), started_utc=utc_iso(),
                                                             state="empty"))
    pubs = [PublisherProcess(folder, broker.config(device_id=folder.name,
                                                   position_file=str(folder / "position.json")))
            for folder in (busy, gone)]
    sub = Subscriber(broker, "waste-sorter/+/stats", clean=True)
    sub.wait_for(lambda: any(json.loads(p)["items_today"] == 8 for p in sub.on("busy/stats")), what="busy's stats")
    sub.wait_for(lambda: sub.on("gone/stats"), what="gone's stats")
    sub.close()
    pubs[1].kill()  # its last will: offline
    time.sleep(0.3)
    config = tmp_path / "fleet.toml"
    config.write_text(broker.config())
    out = io.StringIO()
    args = args_for("--config", str(config), "--broker", "127.0.0.1", "--wait-s", "0.5", module=fleet)
    assert fleet.show_fleet(args, out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("bin"), lines
    busy_line = next(line for line in lines if line.startswith("busy "))
    gone_line = next(line for line in lines if line.startswith("gone "))
    assert " online " in busy_line and " stuck " in busy_line and "items/h    8" in busy_line
    assert "fallback today  25.0%" in busy_line and busy_line.endswith("faults stuck")
    assert " offline " in gone_line and " ready " in gone_line and gone_line.endswith("faults -")
    # --watch redraws; --json holds what the broker retains
    out = io.StringIO()
    args = args_for("--config", str(config), "--wait-s", "0.3", "--watch", "--interval-s", "0.2", "--json",
                    module=fleet)
    assert fleet.show_fleet(args, out, max_redraws=2) == 0
    views = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(views) == 2 and views[-1]["busy"]["stats"]["items_today"] == 8
    assert views[-1]["gone"]["availability"] == "offline"
    pubs[0].terminate()
