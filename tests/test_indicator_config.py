"""The [indicator] section and bins' light_pin: optional, documented, pins checked with key paths."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from device.config import IndicatorConfig, load_config, parse_config
from device.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "device" / "config.example.toml"
INDICATOR_KEYS = ("[indicator]", "ready_pin", "buzzer_pin", "active_high", "blink_ms", "show_ms",
                  "fallback_beep_ms", "stuck_beep_ms", "light_pin")


def with_bins(**bins) -> dict:
    """A raw config: the default diverter on GPIO 12, and ``bins`` (name -> extra keys)."""
    return {"actuators": {"diverter": {"type": "servo", "pin": 12}},
            "bins": {name: {"actuator": "diverter", **extra} for name, extra in bins.items()},
            "routing": {"fallback_bin": "landfill", "classes": {}}}


def test_no_section_means_no_indicator():
    config = parse_config({})
    assert config.indicator == IndicatorConfig()
    assert config.indicator.ready_pin is None and config.indicator.buzzer_pin is None
    assert all(b.light_pin is None for b in config.bins.values())


def test_the_example_files_commented_indicator_is_valid_once_uncommented():
    """The example documents the section commented out (the defaults have none); taken in, it
    parses to what it says."""
    text = EXAMPLE.read_text()
    pattern = r"^# (" + "|".join(re.escape(k) for k in INDICATOR_KEYS) + ")"
    uncommented = re.sub(pattern, r"\1", text, flags=re.MULTILINE)
    assert load_config(EXAMPLE).indicator == IndicatorConfig()
    config = parse_config(tomllib.loads(uncommented))
    assert config.indicator == IndicatorConfig(ready_pin=5, buzzer_pin=6)
    assert config.bins["paper"].light_pin == 20


def test_indicator_pins_and_bin_lights_are_read():
    raw = with_bins(paper={"light_pin": 20}, landfill={})
    raw["indicator"] = {"ready_pin": 5, "buzzer_pin": 6, "active_high": False, "blink_ms": 400, "show_ms": 1500}
    config = parse_config(raw)
    assert config.indicator == IndicatorConfig(ready_pin=5, buzzer_pin=6, active_high=False, blink_ms=400.0,
                                               show_ms=1500.0)
    assert config.bins["paper"].light_pin == 20 and config.bins["landfill"].light_pin is None


@pytest.mark.parametrize("indicator, bins, message", [
    ({"ready_pin": 12}, {}, r"^indicator\.ready_pin: GPIO 12 is already used by actuators\.diverter$"),
    ({"ready_pin": 5, "buzzer_pin": 5}, {}, r"^indicator\.buzzer_pin: GPIO 5 is already used by indicator\.ready_pin$"),
    ({"ready_pin": 5}, {"paper": {"light_pin": 5}},
     r"^bins\.paper\.light_pin: GPIO 5 is already used by indicator\.ready_pin$"),
    ({}, {"paper": {"light_pin": 20}, "glass": {"light_pin": 20}},
     r"^bins\.glass\.light_pin: GPIO 20 is already used by bins\.paper\.light_pin$"),
    ({}, {"glass": {"light_pin": 12}}, r"^bins\.glass\.light_pin: GPIO 12 is already used by actuators\.diverter$"),
    ({"ready_pin": 40}, {}, r"^indicator\.ready_pin: 40 is out of range \[0, 27\]$"),
    ({"buzzer_pin": "6"}, {}, r"^indicator\.buzzer_pin: expected int, got str '6'$"),
    ({"ready_pin": 5.0}, {}, r"^indicator\.ready_pin: expected int, got float 5\.0$"),
    ({}, {"paper": {"light_pin": True}}, r"^bins\.paper\.light_pin: expected int, got bool True$"),
    ({"blink_ms": 10}, {}, r"^indicator\.blink_ms: 10\.0 is out of range \[50, 5000\]$"),
    ({"show_ms": float("nan")}, {}, r"^indicator\.show_ms: must be a finite number"),
    ({"stuck_beep_ms": -1}, {}, r"^indicator\.stuck_beep_ms: -1\.0 is out of range \[0, 10000\]$"),
    ({"colour": "red"}, {}, r"^indicator\.colour: unknown key \(known: ready_pin, buzzer_pin, "),
])
def test_bad_indicator_settings_name_their_key_path(indicator, bins, message):
    raw = with_bins(landfill={}, **{name: extra for name, extra in bins.items()})
    raw["indicator"] = indicator
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_a_clash_is_reported_with_the_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[indicator]\nready_pin = 12\n')  # the default diverter's pin
    with pytest.raises(ConfigError, match=r"config\.toml: indicator\.ready_pin: GPIO 12 is already used by "
                                          r"actuators\.diverter$") as err:
        load_config(path)
    assert err.value.exit_code == 78
