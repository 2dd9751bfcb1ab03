"""Bins to gpiozero devices: a diverter servo angle or a timed pulse on an output per bin.

After each action the device goes back to its safe state (servo at its home angle, output
off) once the bin's hold or pulse time has passed, in source time: the loop calls
:meth:`BinActuators.update` with every frame's timestamp, so a replayed scene actuates
identically at any speed. :meth:`BinActuators.safe_all` is what signal handlers and error
paths call; ``close()`` does it too.

GPIO backend (:func:`resolve_pin_factory`): gpiozero's real one on a Raspberry Pi, its
``MockFactory`` (with PWM-capable mock pins, for servos) when configured or off a Pi — never a
silent mock on a Pi.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from device.config import ActuatorConfig, BinConfig
from device.errors import ActuatorError, ConfigError, first_line

log = logging.getLogger(__name__)

TIME_TOLERANCE_S = 1e-6  # frame timestamps are sums of floats: 9.3 + 0.8 must reach 10.1


def is_raspberry_pi() -> bool:
    try:
        return "raspberry pi" in Path("/proc/device-tree/model").read_text(errors="replace").lower()
    except OSError:
        return False


def resolve_pin_factory(name: str):
    """A gpiozero pin factory for the configured name ("auto", "mock", "lgpio", ...)."""
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    start, shown = _pin_factory_start(name)
    if start is None:
        if shown == "auto":
            log.warning("not a Raspberry Pi: GPIO is simulated (gpiozero MockFactory)")
        return MockFactory(pin_class=MockPWMPin)
    try:
        return start()
    except Exception as exc:  # noqa: BLE001 - sorted below: GPIO trouble or a bug
        if not is_gpio_failure(exc):
            raise
        # gpiochip busy or not ready yet, no access to /dev/gpiomem, pigpiod not running (and,
        # for the default backend, gpiozero's "no default pin factory" after all of these):
        # a start failure, which a restart may well get past
        raise ActuatorError(f"gpio.pin_factory: cannot start GPIO backend {shown} ({first_line(exc)})") from None


def check_pin_factory(name: str) -> str:
    """The GPIO backend ``name`` picks, in words, its library imported but not started (``run
    --check-config``: no pin is claimed); ConfigError as :func:`resolve_pin_factory` would raise."""
    start, shown = _pin_factory_start(name)
    if start is None:
        return "simulated (gpiozero MockFactory)" + (": not a Raspberry Pi" if shown == "auto" else "")
    return f"{shown} (imports; not started)"


def _pin_factory_start(name: str):
    """(what starts the pin factory, its name as shown); (None, "mock" or "auto") for the
    simulated one. ConfigError when gpiozero knows no such factory or its library is missing."""
    env = os.environ.get("GPIOZERO_PIN_FACTORY", "").strip().lower()
    if name == "mock" or (name == "auto" and env == "mock"):
        return None, "mock"
    if name == "auto" and not env and not is_raspberry_pi():
        return None, "auto"
    factory_name = env if name == "auto" else name
    shown = repr(factory_name or "default")
    if not factory_name:
        from gpiozero import Device

        return Device._default_pin_factory, shown
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group="gpiozero_pin_factories") if ep.name == factory_name]
    if not found:
        raise ConfigError(f"gpio.pin_factory: gpiozero knows no pin factory {factory_name!r}")
    try:
        return found[0].load(), shown
    except ImportError as exc:  # its library is not installed: a restart cannot fix that
        raise ConfigError(f"gpio.pin_factory: GPIO backend {shown} is not installed "
                          f"({first_line(exc)})") from None


#: Top-level modules whose exceptions mean "the GPIO hardware or its driver refused".
GPIO_LIBRARIES = ("gpiozero", "lgpio", "pigpio", "RPi")


def is_gpio_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is GPIO trouble (exit 69, a restart may fix it), not a bug in this code:
    an OSError, a plain RuntimeError (what RPi.GPIO raises), an error class of a GPIO library,
    or any error raised inside one (gpiozero's AttributeError on a device closed under it). A
    TypeError, KeyError, ... raised in this project's code is a bug: it is not turned into an
    ActuatorError, which systemd would restart as if the hardware had hiccuped."""
    if isinstance(exc, OSError) or type(exc) is RuntimeError:
        return True
    if type(exc).__module__.split(".")[0] in GPIO_LIBRARIES:
        return True
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    raised_in = str(tb.tb_frame.f_globals.get("__name__", "")) if tb is not None else ""
    return raised_in.split(".")[0] in GPIO_LIBRARIES


def gpio_setup_error(exc: Exception, *, pin_key: str, device_key: str) -> Exception:
    """What a GPIO device that could not be set up means, to raise: a ConfigError naming
    ``pin_key`` for a pin that does not exist or cannot do PWM; an ActuatorError naming
    ``device_key`` for a busy line or driver trouble (exit 69: a restart may succeed); ``exc``
    itself for a bug, which stays a bug (a traceback), not a restartable 69."""
    from gpiozero.exc import PinInvalidPin, PinPWMUnsupported

    if isinstance(exc, (PinInvalidPin, PinPWMUnsupported)):
        return ConfigError(f"{pin_key}: {exc}")
    if not is_gpio_failure(exc):
        return exc
    return ActuatorError(f"{device_key}: cannot set up GPIO ({first_line(exc)})")


@dataclass
class _Active:
    actuator: str
    until_s: float


class BinActuators:
    def __init__(self, actuators: dict[str, ActuatorConfig], bins: dict[str, BinConfig], *, pin_factory):
        from gpiozero import AngularServo, DigitalOutputDevice

        self.bins = dict(bins)
        self.configs = dict(actuators)
        self.devices: dict[str, object] = {}
        self._active: dict[str, _Active] = {}
        self._stopping = False  # set by safe_all(): nothing moves any more
        self._lock = threading.RLock()  # actuate/update from the loop, the inference thread, the timer
        self._timer: threading.Thread | None = None
        self._timer_wake = threading.Condition(self._lock)
        self._timer_error: Exception | None = None
        self._closed = False
        name = ""
        try:
            for name, cfg in actuators.items():
                if cfg.type == "servo":
                    self.devices[name] = AngularServo(
                        cfg.pin, initial_angle=cfg.home_angle_deg, min_angle=cfg.min_angle_deg,
                        max_angle=cfg.max_angle_deg, min_pulse_width=cfg.min_pulse_width_ms / 1000,
                        max_pulse_width=cfg.max_pulse_width_ms / 1000, pin_factory=pin_factory)
                else:
                    self.devices[name] = DigitalOutputDevice(
                        cfg.pin, active_high=cfg.active_high, initial_value=False, pin_factory=pin_factory)
        except Exception as exc:  # noqa: BLE001 - sorted by gpio_setup_error
            self.close()
            raise gpio_setup_error(exc, pin_key=f"actuators.{name}.pin", device_key=f"actuators.{name}") from None

    def actuate(self, bin_name: str, now_s: float) -> bool:
        """Move/pulse the bin's actuator; it returns to safe at ``now_s`` + hold/pulse time.
        Once :meth:`safe_all` has run (a stop signal), nothing moves any more: a signal handled
        between the loop's stop check and this call, or during the write, leaves every actuator
        safe. False when it did not move for that reason (see :attr:`stopping`)."""
        with self._lock:
            moved = self._actuate(bin_name, now_s)
            self._timer_wake.notify_all()
            return moved

    def _actuate(self, bin_name: str, now_s: float) -> bool:
        bin_ = self.bins[bin_name]
        if self._stopping:
            log.warning("bin %s: not actuated, the actuators are stopping", bin_name)
            return False
        device, cfg = self.devices[bin_.actuator], self.configs[bin_.actuator]
        try:
            if cfg.type == "servo":
                device.angle = bin_.angle_deg
                duration_s = bin_.hold_ms / 1000
            else:
                device.on()
                duration_s = bin_.pulse_ms / 1000
            if self._stopping:  # safe_all() ran while this one moved: back to safe at once
                self._make_safe(bin_.actuator)
                log.warning("bin %s: actuation undone, the actuators are stopping", bin_name)
                return False
        except Exception as exc:  # noqa: BLE001 - gpiozero / pin driver errors
            if not is_gpio_failure(exc):
                raise
            raise ActuatorError(f"actuators.{bin_.actuator}: could not move for bin {bin_name} "
                                f"({first_line(exc)})") from exc
        self._active[bin_.actuator] = _Active(bin_.actuator, now_s + duration_s)
        log.debug("bin %s: %s active until %.3f s", bin_name, bin_.actuator, now_s + duration_s)
        return True

    @property
    def stopping(self) -> bool:
        """True once :meth:`safe_all` ran (a stop signal, shutdown): nothing moves any more."""
        return self._stopping

    def time_on(self, clock) -> None:
        """From now on a thread of its own returns each actuator to safe when its time on
        ``clock`` (seconds, the clock :meth:`actuate` is given) is up, whatever the loop is busy
        with; :meth:`update` still works. An error there is raised by the next :meth:`update`."""
        if self._timer is not None:
            return
        self._timer = threading.Thread(target=self._end_on_time, args=(clock,), name="actuator-timer", daemon=True)
        self._timer.start()

    def _end_on_time(self, clock) -> None:
        with self._lock:
            while not self._closed:
                due_s = min((a.until_s for a in list(self._active.values())), default=None)
                if due_s is None:
                    self._timer_wake.wait()
                    continue
                wait_s = due_s - clock()
                if wait_s > 0:
                    self._timer_wake.wait(min(wait_s, 1.0))
                    continue
                try:
                    self._update(clock())
                except Exception as exc:  # noqa: BLE001 - never a silent death: the loop's next update() raises it
                    self._timer_error = exc
                    self._active.clear()

    def update(self, now_s: float) -> None:
        """Return every actuator whose time is up to its safe state."""
        with self._lock:
            if self._timer_error is not None:
                error, self._timer_error = self._timer_error, None
                raise error
            self._update(now_s)

    def _update(self, now_s: float) -> None:
        for name in [n for n, a in list(self._active.items()) if now_s + TIME_TOLERANCE_S >= a.until_s]:
            try:
                self._make_safe(name)
            except Exception as exc:  # noqa: BLE001 - gpiozero / pin driver errors
                if not is_gpio_failure(exc):
                    raise
                raise ActuatorError(f"actuators.{name}: could not return to its safe state "
                                    f"({first_line(exc)})") from exc
            self._active.pop(name, None)  # a signal handler's safe_all() may have cleared it

    @property
    def busy(self) -> bool:
        return bool(self._active)

    @property
    def active_until_s(self) -> float | None:
        """When the last active actuator goes back to safe (its timebase), or None if none is active."""
        return max((a.until_s for a in list(self._active.values())), default=None)

    def _make_safe(self, name: str) -> None:
        device, cfg = self.devices[name], self.configs[name]
        if cfg.type == "servo":
            device.angle = cfg.home_angle_deg
        else:
            device.off()

    def safe_all(self) -> None:
        """Every actuator to its safe state now (signal handlers, errors, shutdown); from then on
        :meth:`actuate` moves nothing (the sorter is stopping)."""
        self._stopping = True  # first: an actuate() this handler interrupted undoes its move
        for name in list(self.devices):
            try:
                self._make_safe(name)
            except Exception as exc:  # a closed device must not stop the others going safe
                log.error("actuator %s: could not go to its safe state (%s)", name, first_line(exc))
        self._active.clear()

    def close(self) -> None:
        self.safe_all()
        with self._lock:
            self._closed = True
            self._timer_wake.notify_all()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join(timeout=2.0)
        for device in self.devices.values():
            device.close()
        self.devices = {}

    def __enter__(self) -> "BinActuators":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
