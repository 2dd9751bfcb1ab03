"""GPIO set-up failures: a wrong pin is the configuration's fault, a busy line may pass."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from device.actuators import BinActuators
from device.errors import ActuatorError, ConfigError

def test_a_gpio_line_already_in_use_is_an_actuator_error_a_restart_may_fix(scene_config):
    factory = MockFactory(pin_class=MockPWMPin)
    with BinActuators(scene_config.actuators, scene_config.bins, pin_factory=factory):
        with pytest.raises(ActuatorError, match=r"^actuators\.diverter: cannot set up GPIO") as err:
            BinActuators(scene_config.actuators, scene_config.bins, pin_factory=factory)
    assert err.value.exit_code == 69

def test_a_servo_on_a_pin_without_pwm_is_a_config_error_naming_the_pin(scene_config):
    with pytest.raises(ConfigError, match=r"^actuators\.diverter\.pin: ") as err:
        BinActuators(scene_config.actuators, scene_config.bins, pin_factory=MockFactory())
    assert err.value.exit_code == 78


def test_gpio_failing_while_sorting_is_an_actuator_error_naming_the_actuator(scene_config, caplog):
    """A device that can no longer be driven (here: closed under the loop) fails as ActuatorError
    (exit 69, a restart may fix it), both when moving and when going back to safe."""
    factory = MockFactory(pin_class=MockPWMPin)
    with BinActuators(scene_config.actuators, scene_config.bins, pin_factory=factory) as actuators:
        actuators.devices["flap"].close()
        with pytest.raises(ActuatorError, match=r"^actuators\.flap: could not move for bin metal \(") as err:
            actuators.actuate("metal", 0.0)
        assert err.value.exit_code == 69
        actuators.actuate("paper", 0.0)
        actuators.devices["diverter"].close()
        with pytest.raises(ActuatorError, match=r"^actuators\.diverter: could not return to its safe state \("):
            actuators.update(0.8)
    # closing went safe_all(): one line per device that could not go safe, no traceback
    failed = [r for r in caplog.records if "could not go to its safe state" in r.getMessage()]
    assert [r.getMessage().split(" (")[0] for r in failed] == ["actuator diverter: could not go to its safe state",
                                                               "actuator flap: could not go to its safe state"]
    assert not any(r.exc_info for r in caplog.records)
