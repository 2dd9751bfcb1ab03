"""What a technician types is what the bin does: a partial table changes only the keys it gives,
and ``run --check-config`` checks what it can without the hardware (the camera source and its
backend, the GPIO backend) and prints where each class goes. Every TOML snippet in the README
and every example in config.example.toml loads."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from device.cli import main as cli_main
from device.config import DEFAULT_CLASSES, Config, load_config, parse_config
from device.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "device" / "config.example.toml"


def check_config(capsys, *argv) -> tuple[int, str, str]:
    code = cli_main(["run", "--check-config", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def write_config(tmp_path, monkeypatch):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")

    def write(text: str) -> Path:
        path = tmp_path / "config.toml"
        path.write_text(text)
        return path

    return write


# ---------------------------------------------------------------- partial tables

def test_one_routed_class_changes_that_class_only():
    config = parse_config({"routing": {"classes": {"trash": "glass"}}})
    assert config.routing.classes == {**DEFAULT_CLASSES, "trash": "glass"}


def test_a_key_of_a_default_bin_changes_that_key_only():
    config = parse_config({"bins": {"paper": {"angle_deg": -50.0}}})
    defaults = Config()
    assert config.bins["paper"] == defaults.bins["paper"].__class__(actuator="diverter", angle_deg=-50.0)
    assert {name: b for name, b in config.bins.items() if name != "paper"} == \
        {name: b for name, b in defaults.bins.items() if name != "paper"}


def test_a_new_bin_and_actuator_are_added_beside_the_defaults():
    config = parse_config({"actuators": {"flap": {"type": "pulse", "pin": 17}},
                           "bins": {"metal": {"actuator": "flap", "pulse_ms": 150.0}},
                           "routing": {"classes": {"metal": "metal"}}})
    assert set(config.actuators) == {"diverter", "flap"}
    assert set(config.bins) == {"paper", "glass", "containers", "landfill", "metal"}
    assert config.routing.classes["metal"] == "metal" and config.routing.classes["plastic"] == "containers"


def test_false_removes_a_default_entry_and_names_a_missing_one():
    config = parse_config({"bins": {"glass": False}, "routing": {"classes": {"glass": "landfill"}}})
    assert "glass" not in config.bins and config.routing.classes["glass"] == "landfill"
    with pytest.raises(ConfigError, match=r"^bins\.glas: false removes a default entry, but there is no "
                                          r"default 'glas' \(defaults: paper, glass, containers, landfill\)$"):
        parse_config({"bins": {"glas": False}})
    with pytest.raises(ConfigError, match=r"^routing\.classes\.glass: no bin named 'glass'$"):
        parse_config({"bins": {"glass": False}})  # still routed there: say so, never a silent fallback


def test_a_new_bin_still_needs_its_actuator():
    with pytest.raises(ConfigError, match=r"^bins: missing key actuator$|bins\.metal: missing key actuator"):
        parse_config({"bins": {"metal": {"pulse_ms": 150.0}}})


def test_check_config_of_a_one_line_override_prints_the_routing_it_leaves(write_config, colour_model_path,
                                                                          capsys):
    """The issue's config: only trash = "landfill". Every other class keeps its bin, no warning."""
    config = write_config('[routing.classes]\ntrash = "landfill"\n')
    code, out, err = check_config(capsys, "--config", config, "--model", colour_model_path, "--source", "sim")
    assert code == 0 and err == ""
    lines = out.splitlines()
    routing = lines[lines.index("routing (class -> bin):") + 1:]
    assert routing == ["  cardboard -> paper", "  glass     -> glass", "  metal     -> containers",
                       "  below 0.55 confidence, or no usable frame -> landfill"]


def test_check_config_shows_an_unrouted_class_going_to_the_fallback(write_config, colour_model_path, capsys):
    config = write_config('[routing.classes]\nglass = false\n')
    code, out, _ = check_config(capsys, "--config", config, "--model", colour_model_path, "--source", "sim")
    assert code == 0
    assert "  glass     -> landfill (not routed: the fallback bin)" in out.splitlines()
    assert "warning: classes without a bin go to the fallback bin: glass" in out.splitlines()


# ---------------------------------------------------------------- what --check-config checks

def test_a_misspelt_camera_source_in_the_config_fails_the_check(write_config, colour_model_path, capsys):
    config = write_config('[camera]\nsource = "picamra2"\n')
    code, out, err = check_config(capsys, "--config", config, "--model", colour_model_path)
    assert code == 78 and out == ""  # a config error: systemd does not restart on it
    assert err == (f"waste-sorter run: error: {config}: camera.source: camera source 'picamra2': no such file "
                   f"or folder (or use picamera2, picamera2:N, opencv:N, sim)\n")


def test_the_same_source_fails_the_start_the_same_way(write_config, colour_model_path, tmp_path, capsys):
    config = write_config('[camera]\nsource = "picamra2"\n')
    code = cli_main(["run", "--config", str(config), "--model", str(colour_model_path),
                     "--log", str(tmp_path / "sort.jsonl")])
    assert code == 78 and "camera.source: camera source 'picamra2'" in capsys.readouterr().err


@pytest.mark.parametrize("check", [True, False], ids=["check-config", "start"])
def test_picamera2_missing_exits_3(check, write_config, colour_model_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 -> ModuleNotFoundError
    config = write_config('[camera]\nsource = "picamera2"\n')
    argv = ["run", "--config", str(config), "--model", str(colour_model_path), "--log", str(tmp_path / "s.jsonl")]
    code = cli_main(argv + (["--check-config"] if check else []))
    out, err = capsys.readouterr()
    assert code == 3 and out == "" and err.count("\n") == 1
    assert err.startswith("waste-sorter run: error: picamera2 is not installed (on Raspberry Pi OS: apt install")


def test_a_gpio_backend_that_is_not_installed_fails_the_check(write_config, colour_model_path, capsys,
                                                              monkeypatch):
    pytest.importorskip("gpiozero")
    try:
        import pigpio  # noqa: F401
        pytest.skip("pigpio is installed here")
    except ImportError:
        pass
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY")
    config = write_config('[gpio]\npin_factory = "pigpio"\n')
    code, out, err = check_config(capsys, "--config", config, "--model", colour_model_path, "--source", "sim")
    assert code == 78 and out == ""
    assert err.startswith("waste-sorter run: error: gpio.pin_factory: GPIO backend 'pigpio' is not installed")


def test_check_config_opens_no_camera(write_config, colour_model_path, capsys):
    """No USB camera 7 here: opening it would fail (74); the check names it and opens nothing."""
    config = write_config("")
    code, out, err = check_config(capsys, "--config", config, "--model", colour_model_path, "--source", "opencv:7")
    assert code == 0 and err == ""
    assert "camera   opencv:7: a USB camera through OpenCV (not opened)" in out.splitlines()
    assert "gpio     simulated (gpiozero MockFactory)" in out.splitlines()


def test_a_folder_without_images_fails_the_check(write_config, colour_model_path, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = check_config(capsys, "--config", write_config(""), "--model", colour_model_path,
                                  "--source", empty)
    assert code == 74 and out == "" and err == f"waste-sorter run: error: {empty}: folder holds no images " \
                                                f"(.jpg, .jpeg, .png, .bmp)\n"


# ---------------------------------------------------------------- the documented snippets load

def toml_blocks(markdown: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", markdown, flags=re.S)


def uncommented_examples(text: str) -> str:
    """The example file with its commented-out examples (``# [actuators.flap]``, ``# light_pin =
    20``, ...) turned on: what a user gets by removing the ``# ``."""
    return "\n".join(re.sub(r"^# (\[[a-z_.]+\](?:\s+#.*)?|[a-z_]+ = .*)$", r"\1", line) for line in text.splitlines())


def test_every_toml_snippet_of_the_readme_loads(tmp_path):
    blocks = toml_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 3
    for i, block in enumerate(blocks):
        path = tmp_path / f"readme-{i}.toml"
        path.write_text(block)
        load_config(path)  # raises ConfigError naming the key otherwise


def test_the_example_file_loads_with_every_example_turned_on(tmp_path):
    text = uncommented_examples(EXAMPLE.read_text())
    assert "\n[actuators.flap]" in text and "\n[indicator]" in text and "\nlight_pin = 20" in text
    path = tmp_path / "examples.toml"
    path.write_text(text)
    config = load_config(path)
    assert config.bins["metal"].actuator == "flap" and config.indicator.ready_pin == 5
    assert config.bins["paper"].light_pin == 20 and config.capture.min_confidence == 0.55


def test_the_demo_config_loads_with_the_default_bins_and_their_lights():
    config = load_config(ROOT / "device" / "demo.toml")
    assert {name: b.light_pin for name, b in config.bins.items()} == \
        {"paper": 20, "glass": 21, "containers": 22, "landfill": 23}
    assert {name: b.angle_deg for name, b in config.bins.items()} == \
        {name: b.angle_deg for name, b in Config().bins.items()}


@pytest.mark.parametrize("value", ["hall 2", "a/b", "x" * 65])
def test_a_device_id_is_a_plain_name(value):
    with pytest.raises(ConfigError, match=r"^device\.id: invalid value"):
        parse_config({"device": {"id": value}})


def test_a_sim_source_in_the_config_is_checked_like_on_the_command_line():
    assert parse_config({"camera": {"source": "sim:frames=30,light=0.8"}}).camera.source == "sim:frames=30,light=0.8"
    with pytest.raises(ConfigError, match=r"^camera\.source: camera source 'sim:fog=1': unknown option 'fog'"):
        parse_config({"camera": {"source": "sim:fog=1"}})
