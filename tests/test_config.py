"""Config: the example file documents the defaults; bad values name their key path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from device.config import DEFAULT_CLASSES, Config, load_config, parse_config
from device.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "device" / "config.example.toml"


def test_example_file_is_valid_and_matches_the_defaults():
    config = load_config(EXAMPLE)
    defaults = Config()
    # the example sets two deployment paths and turns capture on (the device's config is this
    # file, installed); everything else is the built-in default
    assert config.calibration.path == "/var/lib/waste-sorter/calibration.json"
    assert config.log.path == "/var/log/waste-sorter/sort.jsonl"
    assert config.capture.enabled and not defaults.capture.enabled
    assert replace(config, calibration=defaults.calibration, log=replace(config.log, path=defaults.log.path),
                   capture=replace(config.capture, enabled=False)) == defaults


@pytest.mark.parametrize("raw, message", [
    ({"camera": {"fps": 3}}, "camera.fps: unknown key"),
    ({"camera": {"a\nb": 3}}, r"^camera\.a\\nb: unknown key"),  # still one line
    ({"kamera": {}}, "kamera: unknown section"),
    ({"camera": {"width": True}}, "camera.width: expected int, got bool"),
    ({"camera": {"timeout_s": float("inf")}}, "camera.timeout_s: must be a finite number"),
    ({"gate": {"saturation_level": 300}}, r"gate.saturation_level: 300 is out of range \[128, 255\]"),
    ({"presence": {"settle_s": "1"}}, "presence.settle_s: expected float, got str"),
    ({"model": {"threads": "many"}}, r'^model\.threads: expected a whole number or "auto", got \'many\'$'),
    ({"model": {"threads": 0}}, r"^model\.threads: 0 is out of range \[1, 16\]"),
    ({"presence": {"empty_frac": 0}}, r"^presence\.empty_frac: 0\.0 is out of range \[1e-06, 0\.9\]"),  # never empty
    ({"presence": {"settle_motion_frac": 0.0}}, r"^presence\.settle_motion_frac: 0\.0 is out of range"),  # never still
    ({"presence": {"empty_frac": 0.05}}, r"^presence\.empty_frac: 0\.05 must be less than presence\.item_frac \(0\.005\)$"),
    ({"camera": {"source": "picamera2:x"}},
     r"^camera\.source: camera source 'picamera2:x': expected picamera2, picamera2:N or opencv:N"),
    ({"camera": {"source": "opencv:"}}, r"^camera\.source: camera source 'opencv:': expected"),
    ({"actuators": {"d": {"type": "servo"}}}, "actuators.d:.*pin"),
    ({"actuators": {"d": {"type": "laser", "pin": 3}}}, "actuators.d.type: 'laser' is not one of"),
    ({"actuators": {"d": {"type": "servo", "pin": 40}}}, r"actuators.d.pin: 40 is out of range \[0, 27\]"),
    ({"bins": {"x": {"actuator": "none"}}}, "bins.x.actuator: no actuator named 'none'"),
    ({"bins": {"x": {"actuator": "diverter", "angle_deg": 120}}}, "bins.x.angle_deg: 120.0 is outside"),
    ({"routing": {"fallback_bin": "moon"}}, "routing.fallback_bin: no bin named 'moon'"),
    ({"presence": {"stuck_warn_s": 1.0}}, r"presence.stuck_warn_s: 1.0 must be 0 \(off\) or longer than .*\(1.1 s\)"),
    ({"routing": {"classes": {"glass": "moon"}}}, "routing.classes.glass: no bin named 'moon'"),
    ({"routing": {"classes": {"glass": 3}}}, "routing.classes.glass: expected str"),
    ({"actuators": {"diverter": {"type": "servo", "pin": 12, "min_pulse_width_ms": 2.0,
                                 "max_pulse_width_ms": 1.0}}},
     r"^actuators\.diverter\.min_pulse_width_ms: 2\.0 must be less than actuators\.diverter\.max_pulse_width_ms"),
    ({"actuators": {"diverter": {"type": "servo", "pin": 12, "min_pulse_width_ms": 1.5,
                                 "max_pulse_width_ms": 1.5}}},
     r"^actuators\.diverter\.min_pulse_width_ms: 1\.5 must be less than"),
    ({"actuators": {"diverter": {"type": "servo", "pin": 12}, "flap": {"type": "pulse", "pin": 12}}},
     r"^actuators\.flap\.pin: GPIO 12 is already used by actuators\.diverter$"),
    ({"capture": {"max_mb": 0.5}}, r"^capture\.max_mb: 0\.5 is out of range \[1, 1000000\]"),
    ({"capture": {"min_confidence": 1.5}}, r"^capture\.min_confidence: 1\.5 is out of range \[0, 1\]"),
    ({"capture": {"sample_every": -1}}, r"^capture\.sample_every: -1 is out of range"),
    ({"capture": {"enabled": "yes"}}, r"^capture\.enabled: expected bool, got str"),
    ({"capture": {"enabled": True, "dir": " "}}, r"^capture\.dir: must name a folder when capture\.enabled is true$"),
])
def test_bad_values_are_rejected_with_the_key_path(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


@pytest.mark.parametrize("source", ["picamera2", "picamera2:1", "opencv:0", "scene.mp4", "/data/photos",
                                    "picamera2.mp4", "picamera2-frames", "opencv"])
def test_camera_sources_that_name_a_device_or_a_path_are_accepted(source):
    assert parse_config({"camera": {"source": source}}).camera.source == source


def test_distinct_pins_and_ordered_pulse_widths_are_accepted():
    config = parse_config({"actuators": {"diverter": {"type": "servo", "pin": 12, "min_pulse_width_ms": 0.5,
                                                      "max_pulse_width_ms": 2.5},
                                         "flap": {"type": "pulse", "pin": 17}}})
    assert {a.pin for a in config.actuators.values()} == {12, 17}
    assert config.actuators["diverter"].max_pulse_width_ms == 2.5


def test_the_stuck_warning_is_checked_against_the_time_each_bin_actually_drives_its_actuator():
    def pulse_only(pulse_ms: float) -> dict:  # hold_ms (servos only) keeps its default of 800 ms
        return {"actuators": {"flap": {"type": "pulse", "pin": 17}, "diverter": False},  # false: no default
                "bins": {"landfill": {"actuator": "flap", "pulse_ms": pulse_ms},
                         "paper": False, "glass": False, "containers": False},
                "routing": {"fallback_bin": "landfill", "classes": dict.fromkeys(DEFAULT_CLASSES, False)},
                "presence": {"stuck_warn_s": 1.0}}

    assert parse_config(pulse_only(200)).presence.stuck_warn_s == 1.0  # 0.2 s pulse + 0.3 s clear_s
    with pytest.raises(ConfigError, match=r"^presence\.stuck_warn_s: 1\.0 must be 0 \(off\) or longer than "
                                          r".*\(1\.2 s\)$"):
        parse_config(pulse_only(900))


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[camera\nwidth = 3")
    with pytest.raises(ConfigError, match=r"bad.toml: invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"missing.toml: config file does not exist"):
        load_config(tmp_path / "missing.toml")
    bad.write_text("[gate]\nmin_level_ratio = 2\n")
    with pytest.raises(ConfigError, match=r"bad.toml: gate.min_level_ratio: 2.0 is out of range"):
        load_config(bad)


def test_model_threads_default_to_the_cores_the_process_may_use(colour_model_path):
    import os

    from device.classifier import Classifier

    assert Config().model.threads == parse_config({"model": {"threads": "auto"}}).model.threads == "auto"
    assert parse_config({"model": {"threads": 3}}).model.threads == 3
    with Classifier(colour_model_path, threads="auto") as classifier:
        assert classifier.threads == len(os.sched_getaffinity(0))
    with Classifier(colour_model_path, threads=1) as classifier:
        assert classifier.threads == 1
