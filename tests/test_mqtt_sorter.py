"""A scene sorted by the real sorter (`waste-sorter run`, mock GPIO) with the publisher running
beside it: every record reaches the broker as the log has it, and the sorter's records (their
decisions and their source times) are the same as in a run without the publisher."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from helpers import CONFIG
from mqtt_broker import ROOT, PublisherProcess, Subscriber, broker  # noqa: F401 - broker is a fixture

from device.sortlog import read_records

# differ from run to run whatever runs beside the sorter: wall times, ids of the run
PER_RUN = ("ts", "latency_ms", "record_id", "run_id")


def sort(scene, model, config, log, status) -> None:
    result = subprocess.run([sys.executable, "-m", "device.cli", "run", "--config", str(config), "--model", str(model),
                             "--source", str(scene), "--log", str(log), "--status-file", str(status)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "GPIOZERO_PIN_FACTORY": "mock"})
    assert result.returncode == 0, result.stderr[-2000:]


def decisions(log) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in PER_RUN} for r in read_records(log)]


def test_the_sorter_sorts_the_same_with_the_publisher_beside_it(tmp_path, broker, two_item_scene, colour_model_path):
    scene, truth = two_item_scene
    config = tmp_path / "sorter.toml"
    config.write_text(CONFIG)
    alone, beside = tmp_path / "alone", tmp_path / "beside"
    for folder in (alone, beside):
        folder.mkdir()
    sort(scene, colour_model_path, config, alone / "sort.jsonl", alone / "status.json")

    sub = Subscriber(broker, "waste-sorter/bin-1/#", clean=True)
    pub = PublisherProcess(beside, broker.config(device_id="bin-1", position_file=str(beside / "position.json")))
    sub.wait_for(lambda: sub.on("/availability")[-1:] == ["online"], what="online")
    sort(scene, colour_model_path, config, beside / "sort.jsonl", beside / "status.json")
    logged = list(read_records(beside / "sort.jsonl"))
    assert len(logged) == len(truth) == 2
    sub.wait_for(lambda: len(sub.records()) == len(logged), what="the scene's records")
    for got, record in zip(sub.records(), logged):
        assert got == {**record, "record_id": got["record_id"], "device_id": got["device_id"]}
        assert got["record_id"] == record.get("record_id", got["record_id"])  # the sorter's own, when it has one
        assert got["device_id"] == (record.get("device_id") or "bin-1")
    sub.wait_for(lambda: sub.on("/status") and json.loads(sub.on("/status")[-1])["state"] == "stopped",
                 what="the sorter's last status")
    pub.terminate()
    sub.close()
    assert decisions(beside / "sort.jsonl") == decisions(alone / "sort.jsonl")
