"""`waste-sorter status` shows what the person at the bin sees; status files without it still read."""

from __future__ import annotations

import argparse
import io
import json
import time
from dataclasses import asdict

from gpiozero.pins.mock import MockFactory, MockPWMPin

from device.commands import status as status_cli
from device.config import BinConfig, IndicatorConfig
from device.indicator import Indicator
from device.runtime_status import RuntimeStatus, read_runtime_status, write_runtime_status
from device.sortlog import utc_iso

NOW = time.time()


def status_of(status_file, log_path, *options: str) -> str:
    parser = argparse.ArgumentParser()
    status_cli.add_arguments(parser)
    args = parser.parse_args(["--status-file", str(status_file), "--log", str(log_path), *options])
    out = io.StringIO()
    assert status_cli.show_status(args, out, now=NOW, service="active") == 0
    return out.getvalue()


def runtime(**values) -> RuntimeStatus:
    return RuntimeStatus(updated_utc=utc_iso(NOW - 1), started_utc=utc_iso(NOW - 60), state="occupied", **values)


def test_status_shows_what_the_person_at_the_bin_sees(tmp_path):
    """What the sorter writes is the indicator's own description of the moment."""
    bins = {"paper": BinConfig("diverter", light_pin=20)}
    with Indicator(IndicatorConfig(ready_pin=5, buzzer_pin=6), bins, pin_factory=MockFactory(pin_class=MockPWMPin)) \
            as indicator:
        indicator.show_state("empty", 1.0)
        indicator.routed("paper", 1.0, fallback=True)
        seen = indicator.what_the_person_sees().describe()
    assert seen == "ready light on (drop the next item), paper light on, buzzer sounding"
    status_file = tmp_path / "status.json"
    write_runtime_status(status_file, runtime(indicator=seen))
    assert read_runtime_status(status_file).indicator == seen
    text = status_of(status_file, tmp_path / "sort.jsonl")
    assert "\nindicator    ready light on (drop the next item), paper light on, buzzer sounding\n" in text
    report = json.loads(status_of(status_file, tmp_path / "sort.jsonl", "--json"))
    assert report["runtime"]["indicator"] == seen


def test_a_status_file_from_before_the_indicator_still_reads(tmp_path):
    status_file = tmp_path / "status.json"
    old = asdict(runtime())
    del old["indicator"]
    status_file.write_text(json.dumps(old))
    assert read_runtime_status(status_file) == runtime()
    text = status_of(status_file, tmp_path / "sort.jsonl")
    assert "state        occupied" in text and "indicator" not in text  # a sorter without one says nothing
    assert json.loads(status_of(status_file, tmp_path / "sort.jsonl", "--json"))["runtime"]["indicator"] == ""


def test_a_non_text_indicator_makes_the_status_file_invalid_not_a_crash(tmp_path, caplog):
    status_file = tmp_path / "status.json"
    status_file.write_text(json.dumps({**asdict(runtime()), "indicator": {"ready": "on"}}))
    assert read_runtime_status(status_file) is None
    assert "indicator: expected a string" in caplog.text
