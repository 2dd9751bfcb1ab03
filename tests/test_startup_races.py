"""Start-up and stop races: signals before the sorter's handlers exist, a stop signal between the
loop's stop check and a servo write, and which GPIO failures a restart may fix (exit 69) or not
(exit 78), with a plain bug left a bug.

The signal tests run ``waste-sorter run`` in a subprocess (a default SIGHUP or SIGTERM handler
would end the test process itself); a small driver makes the signal arrive at a chosen step
of the start: while the model loads, or right after GPIO is set up with a servo out.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from helpers import CONFIG
from device import actuators as actuators_module
from device.actuators import BinActuators, resolve_pin_factory
from device.errors import ActuatorError, ConfigError

DRIVER = """
import os, signal, sys
import device.classifier
from device.actuators import BinActuators

hook, argv = sys.argv[1], sys.argv[2:]
if hook in ("hup-while-the-model-loads", "term-while-the-model-loads"):
    sent = signal.SIGHUP if hook.startswith("hup") else signal.SIGTERM
    load = device.classifier.Classifier.__init__

    def init(self, *args, **kwargs):
        os.kill(os.getpid(), sent)  # process-directed, as systemd sends it
        load(self, *args, **kwargs)

    device.classifier.Classifier.__init__ = init
elif hook == "term-after-gpio-setup":
    setup, safe_all = BinActuators.__init__, BinActuators.safe_all

    def init(self, *args, **kwargs):
        setup(self, *args, **kwargs)
        self.devices["diverter"].angle = -60  # a servo out when the signal comes
        os.kill(os.getpid(), signal.SIGTERM)

    def logged_safe_all(self):
        safe_all(self)
        print(f"safe_all: diverter at {self.devices['diverter'].angle:g}", file=sys.stderr, flush=True)

    BinActuators.__init__, BinActuators.safe_all = init, logged_safe_all
from device.cli import main
sys.exit(main(argv))
"""


@pytest.mark.parametrize("hook", ["hup-while-the-model-loads", "term-while-the-model-loads",
                                  "term-after-gpio-setup"])
def test_a_signal_during_start_up_is_handled_like_one_a_moment_later(hook, two_item_scene, colour_model_path,
                                                                     tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    argv = ["run", "--config", str(config), "--source", str(two_item_scene[0]), "--model", str(colour_model_path),
            "--log", str(tmp_path / "sort.jsonl")]
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.run([sys.executable, "-c", DRIVER, hook, *argv], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-1500:]  # not killed by the default handler (-1, -15)
    assert "Traceback" not in proc.stderr
    if hook == "hup-while-the-model-loads":  # a reload request: the scene is sorted all the same
        assert "2 item(s)" in proc.stdout
        assert "reload requested but no calibration file is configured" in proc.stderr
    elif hook == "term-while-the-model-loads":  # stopped before the camera and GPIO were touched
        assert proc.stdout == ""
        assert "SIGTERM during start-up: stopping before the camera and GPIO are opened" in proc.stderr
    else:  # the handler made every actuator safe at once; no frame was sorted
        assert proc.stderr.count("safe_all: ") >= 1
        assert proc.stderr.split("safe_all: ")[1].startswith("diverter at 0\n")
        assert "0 item(s) in 0.0 s of source, 0 frames" in proc.stdout


# ---------------------------------------------------------------- a stop between the check and the write

@pytest.fixture
def bins(scene_config):
    with BinActuators(scene_config.actuators, scene_config.bins,
                      pin_factory=MockFactory(pin_class=MockPWMPin)) as act:
        yield act


def test_after_safe_all_actuate_moves_nothing(bins, caplog):
    """The stop handler's safe_all() ran after the loop checked for a stop signal, before the
    loop's actuate(): the servo stays home and the pulse output off."""
    bins.safe_all()
    assert bins.actuate("paper", 1.0) is False and bins.actuate("metal", 1.0) is False and bins.stopping
    assert bins.devices["diverter"].angle == 0 and bins.devices["flap"].value == 0
    assert not bins.busy
    assert "not actuated, the actuators are stopping" in caplog.text


class _StoppedDuringWrite:
    """A servo whose angle write is interrupted by the stop signal's handler (safe_all)."""

    def __init__(self, servo, actuators):
        self._servo, self._actuators = servo, actuators

    @property
    def angle(self):
        return self._servo.angle

    @angle.setter
    def angle(self, value):
        if value != 0:  # the bin's angle: the signal lands just before the write goes out
            self._actuators.safe_all()
        self._servo.angle = value

    def close(self):
        self._servo.close()


def test_a_stop_signal_during_the_servo_write_leaves_the_servo_home(bins):
    servo = bins.devices["diverter"]
    bins.devices["diverter"] = _StoppedDuringWrite(servo, bins)
    assert bins.actuate("paper", 1.0) is False
    assert servo.angle == 0 and not bins.busy


# ---------------------------------------------------------------- GPIO start failures: 69, 78 or a bug

@dataclass
class _EntryPoint:
    name: str
    factory: object

    def load(self):
        if isinstance(self.factory, BaseException):
            raise self.factory
        return self.factory


def _with_factory(monkeypatch, factory) -> None:
    import importlib.metadata

    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [_EntryPoint("lgpio", factory)])


def test_a_pin_factory_that_cannot_start_is_an_actuator_error_a_restart_may_fix(monkeypatch):
    def busy_chip():
        raise OSError(errno.EBUSY, "gpiochip0 busy")

    _with_factory(monkeypatch, busy_chip)
    with pytest.raises(ActuatorError, match=r"^gpio\.pin_factory: cannot start GPIO backend 'lgpio' "
                                            r"\(\[Errno 16\] gpiochip0 busy\)$") as info:
        resolve_pin_factory("lgpio")
    assert info.value.exit_code == 69


def test_a_pin_factory_whose_library_is_missing_is_a_config_error(monkeypatch):
    _with_factory(monkeypatch, ModuleNotFoundError("No module named 'lgpio'"))
    with pytest.raises(ConfigError, match=r"^gpio\.pin_factory: GPIO backend 'lgpio' is not installed") as info:
        resolve_pin_factory("lgpio")
    assert info.value.exit_code == 78


def test_a_bug_while_starting_gpio_stays_a_bug(monkeypatch):
    def buggy():
        return {}["no such key"]  # a plain bug, not GPIO trouble: no restartable exit 69

    _with_factory(monkeypatch, buggy)
    with pytest.raises(KeyError):
        resolve_pin_factory("lgpio")


class _BuggyServo:
    """A servo whose angle writes hit a bug in this project's code (a TypeError, not GPIO trouble)."""

    def __init__(self, servo):
        self._servo = servo

    @property
    def angle(self):
        return self._servo.angle

    @angle.setter
    def angle(self, value):
        raise TypeError("a bug in this project's code")

    def close(self):
        self._servo.close()


def test_a_bug_while_going_safe_stays_a_bug(bins):
    bins.actuate("paper", 0.0)
    servo = bins.devices["diverter"]
    bins.devices["diverter"] = _BuggyServo(servo)  # going home (safe) is its next write
    try:
        with pytest.raises(TypeError):
            bins.update(1.0)
    finally:
        bins.devices["diverter"] = servo


def test_errors_raised_inside_a_gpio_library_are_gpio_trouble(bins):
    bins.devices["diverter"].close()  # gpiozero then fails with its own AttributeError
    with pytest.raises(ActuatorError, match=r"^actuators\.diverter: could not move for bin paper"):
        bins.actuate("paper", 0.0)
    assert actuators_module.is_gpio_failure(OSError(errno.EIO, "I/O error"))
    assert not actuators_module.is_gpio_failure(TypeError("bug"))
