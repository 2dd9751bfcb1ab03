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
