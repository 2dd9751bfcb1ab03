"""The sorter's TOML configuration, validated once at start.

Every key has a type and, for numbers, a range, declared beside its field (:mod:`device.schema`);
unknown keys, wrong types, NaN/infinity and out-of-range values are rejected with a
:class:`ConfigError` naming the key path, then the checks across keys (pins, bins) run. Defaults make
``waste-sorter run --source VIDEO`` work on a laptop. See ``device/config.example.toml``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.camera import device_source
from device.camera.sim import is_sim_source, parse_sim_source
from device.errors import CameraError, ConfigError, first_line
from device.gate import GateThresholds
from device.mqtt_config import MqttConfig, check_mqtt
from device.presence import PresenceSettings
from device.safe_open import MiB, read_regular, show_path
from device.schema import TOML, SchemaError, build, spec

MAX_CONFIG_BYTES = MiB  # the example file is 6 KiB
PIN = (0, 27)  # BCM GPIO numbers

# The tables of named entries that have defaults. A config file changes them key by key: a
# class, bin or actuator it names changes only the keys it gives (``[bins.paper]`` /
# ``angle_deg = -50.0`` moves the paper bin and leaves the rest), a new name adds an entry, and
# ``NAME = false`` removes a default one (:func:`with_named_defaults`).
DEFAULT_CLASSES = {"cardboard": "paper", "paper": "paper", "glass": "glass",
                   "metal": "containers", "plastic": "containers", "trash": "landfill"}
DEFAULT_ACTUATORS = {"diverter": {"type": "servo", "pin": 12}}
DEFAULT_BINS = {name: {"actuator": "diverter", "angle_deg": angle}
                for name, angle in (("paper", -60.0), ("glass", -20.0), ("containers", 20.0), ("landfill", 60.0))}
NAMED_DEFAULTS = ((("routing", "classes"), DEFAULT_CLASSES), (("actuators",), DEFAULT_ACTUATORS),
                  (("bins",), DEFAULT_BINS))


@dataclass(frozen=True)
class CameraConfig:
    source: str = "picamera2"
    width: int = spec(512, range=(64, 4096))
    height: int = spec(384, range=(48, 4096))
    timeout_s: float = spec(2.0, range=(0.1, 15))
    folder_fps: float = spec(10.0, range=(0.1, 240))


@dataclass(frozen=True)
class ModelConfig:
    path: str = ""  # "" = the model shipped with the package
    # onnxruntime threads, or "auto": the cores the process may use
    threads: int | str = spec("auto", range=(1, 16), choices=("auto",), expect='a whole number or "auto"')
    frames_per_item: int = spec(3, range=(1, 30))
    # decide before presence calls the item settled once this many frames of its still run
    # agree on the class with at least this mean confidence (no more frames would change it)
    early_decision: bool = True
    early_frames: int = spec(2, range=(1, 30))
    early_confidence: float = spec(0.9, range=(0.5, 1.0))


@dataclass(frozen=True)
class RoutingConfig:
    fallback_bin: str = "landfill"
    min_confidence: float = spec(0.55, range=(0, 1))
    classes: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_CLASSES))


@dataclass(frozen=True)
class ActuatorConfig:
    type: str = spec(choices=("servo", "pulse"))
    pin: int = spec(range=PIN)
    active_high: bool = True  # pulse outputs
    min_angle_deg: float = spec(-90.0, range=(-180, 180))  # servos
    max_angle_deg: float = spec(90.0, range=(-180, 180))
    home_angle_deg: float = spec(0.0, range=(-180, 180))
    min_pulse_width_ms: float = spec(1.0, range=(0.1, 5))
    max_pulse_width_ms: float = spec(2.0, range=(0.1, 5))


@dataclass(frozen=True)
class BinConfig:
    actuator: str
    angle_deg: float = spec(0.0, range=(-180, 180))  # servo: where the diverter points for this bin
    hold_ms: float = spec(800.0, range=(10, 10_000))  # servo: time at the bin angle before going home
    pulse_ms: float = spec(200.0, range=(5, 5_000))  # pulse: time the output is on
    # indicator: a light that shows an item was routed here (none: no light)
    light_pin: int | None = spec(None, range=PIN)


@dataclass(frozen=True)
class LogConfig:
    path: str = "sort.jsonl"
    max_bytes: int = spec(10_000_000, range=(1_000, 10**11))
    keep: int = spec(5, range=(1, 100))


@dataclass(frozen=True)
class CaptureConfig:
    """Decision frames of uncertain and sampled items kept to be labelled (device/capture.py)."""

    enabled: bool = False  # the device's config (config.example.toml, installed) turns it on
    dir: str = "/var/lib/waste-sorter/captures"
    # capture items decided below this; None: routing.min_confidence
    min_confidence: float | None = spec(None, range=(0, 1))
    sample_every: int = spec(20, range=(0, 1_000_000))  # and every Nth item whatever its confidence; 0 = none
    max_mb: float = spec(500.0, range=(1, 1_000_000))  # the folder's quota: the oldest captures are deleted beyond it


@dataclass(frozen=True)
class GpioConfig:
    pin_factory: str = spec("auto", choices=("auto", "mock", "lgpio", "rpigpio", "pigpio", "native"))


@dataclass(frozen=True)
class IndicatorConfig:
    """What the person at the bin sees and hears (``device/indicator.py``); every output is
    optional, and no pin at all (the section absent) means no indicator. A light per bin is
    ``bins.NAME.light_pin``."""

    ready_pin: int | None = spec(None, range=PIN)  # on: drop the next item; blinking: deciding; off: wait
    buzzer_pin: int | None = spec(None, range=PIN)  # beeps for a fallback decision and when an item is stuck
    active_high: bool = True  # the indicator's outputs are on when their pin is high
    blink_ms: float = spec(250.0, range=(50, 5_000))  # the ready light, deciding: this long on, this long off
    show_ms: float = spec(3000.0, range=(100, 60_000))  # a bin light stays on this long after an item is routed there
    fallback_beep_ms: float = spec(150.0, range=(0, 5_000))  # 0: no beep
    stuck_beep_ms: float = spec(1000.0, range=(0, 10_000))  # 0: no beep


@dataclass(frozen=True)
class CalibrationConfig:
    path: str = ""  # "" = no calibration: defaults, board learned at start


def _default_actuators() -> dict[str, ActuatorConfig]:
    return {name: ActuatorConfig(**raw) for name, raw in DEFAULT_ACTUATORS.items()}


def _default_bins() -> dict[str, BinConfig]:
    return {name: BinConfig(**raw) for name, raw in DEFAULT_BINS.items()}


@dataclass(frozen=True)
class DeviceConfig:
    """Which sorter this is, in every sort record (``device_id``, part of ``record_id``)."""

    id: str = spec("", pattern=r"[A-Za-z0-9._-]*", max_len=64)  # "" = the host name


@dataclass(frozen=True)
class Config:
    camera: CameraConfig = field(default_factory=CameraConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    gate: GateThresholds = field(default_factory=GateThresholds)
    presence: PresenceSettings = field(default_factory=PresenceSettings)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    actuators: dict[str, ActuatorConfig] = field(default_factory=_default_actuators)
    bins: dict[str, BinConfig] = field(default_factory=_default_bins)
    log: LogConfig = field(default_factory=LogConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    indicator: IndicatorConfig = field(default_factory=IndicatorConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)  # `waste-sorter mqtt` only


def parse_config(raw: dict[str, Any]) -> Config:
    """Validate a parsed TOML document; errors name the key path (the caller adds the file)."""
    try:
        config = build(Config, with_named_defaults(raw), TOML)
    except SchemaError as exc:
        raise ConfigError(str(exc)) from None
    _check_references(config)
    _check_actuators(config)
    _check_indicator_pins(config)
    _check_timing(config)
    _check_routing(config)
    check_mqtt(config.mqtt)
    return config


def with_named_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` (a parsed config file) with its tables of named entries merged into their defaults
    (:data:`NAMED_DEFAULTS`): a name the file gives changes only the keys it gives, a new name
    adds an entry, ``NAME = false`` removes a default entry (ConfigError naming the key when
    there is no such default). Whatever is not a table is left for the schema to reject."""
    merged = dict(raw)
    for path, defaults in NAMED_DEFAULTS:
        parent = merged
        for key in path[:-1]:
            if not isinstance(parent.get(key, {}), dict):
                break
            parent[key] = parent = dict(parent.get(key, {}))
        else:
            given = parent.get(path[-1], {})
            if isinstance(given, dict):
                parent[path[-1]] = _merge_named(".".join(path), defaults, given)
    return merged


def _merge_named(where: str, defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    table = {name: dict(value) if isinstance(value, dict) else value for name, value in defaults.items()}
    for name, value in given.items():
        if value is False:
            if name not in defaults:
                raise ConfigError(f"{where}.{name}: false removes a default entry, but there is no default "
                                  f"{name!r} (defaults: {', '.join(defaults)})")
            del table[name]
        elif isinstance(value, dict) and isinstance(table.get(name), dict):
            table[name] = {**table[name], **value}
        else:
            table[name] = value
    return table


def _check_references(config: Config) -> None:
    try:
        if is_sim_source(config.camera.source):
            parse_sim_source(config.camera.source)
        device_source(config.camera.source)
    except (ValueError, CameraError) as exc:
        raise ConfigError(f"camera.source: {exc}") from None
    if config.presence.empty_frac >= config.presence.item_frac:
        raise ConfigError(f"presence.empty_frac: {config.presence.empty_frac} must be less than "
                          f"presence.item_frac ({config.presence.item_frac})")
    for name, bin_ in config.bins.items():
        actuator = config.actuators.get(bin_.actuator)
        if actuator is None:
            raise ConfigError(f"bins.{name}.actuator: no actuator named {bin_.actuator!r}")
        if actuator.type == "servo" and not actuator.min_angle_deg <= bin_.angle_deg <= actuator.max_angle_deg:
            raise ConfigError(f"bins.{name}.angle_deg: {bin_.angle_deg} is outside the servo's "
                              f"[{actuator.min_angle_deg}, {actuator.max_angle_deg}]")


def _check_actuators(config: Config) -> None:
    """Servo angles and pulse widths in order; no two actuators on one pin."""
    pins: dict[int, str] = {}
    for name, actuator in config.actuators.items():
        if actuator.type == "servo" and not (
                actuator.min_angle_deg < actuator.max_angle_deg
                and actuator.min_angle_deg <= actuator.home_angle_deg <= actuator.max_angle_deg):
            raise ConfigError(f"actuators.{name}: need min_angle_deg < max_angle_deg with home_angle_deg between")
        if actuator.type == "servo" and actuator.min_pulse_width_ms >= actuator.max_pulse_width_ms:
            raise ConfigError(f"actuators.{name}.min_pulse_width_ms: {actuator.min_pulse_width_ms} must be "
                              f"less than actuators.{name}.max_pulse_width_ms ({actuator.max_pulse_width_ms})")
    for name, actuator in config.actuators.items():
        if actuator.pin in pins:
            raise ConfigError(f"actuators.{name}.pin: GPIO {actuator.pin} is already used by "
                              f"actuators.{pins[actuator.pin]}")
        pins[actuator.pin] = name


def _check_timing(config: Config) -> None:
    if config.model.early_frames > config.model.frames_per_item:
        raise ConfigError(f"model.early_frames: {config.model.early_frames} must be at most "
                          f"model.frames_per_item ({config.model.frames_per_item})")
    if config.presence.max_settle_s <= config.presence.settle_s:
        raise ConfigError(f"presence.max_settle_s: {config.presence.max_settle_s} must be longer than "
                          f"presence.settle_s ({config.presence.settle_s})")
    longest_s = max((_actuation_s(config, b) for b in config.bins.values()), default=0.0)
    if 0 < config.presence.stuck_warn_s <= longest_s + config.presence.clear_s:
        raise ConfigError(f"presence.stuck_warn_s: {config.presence.stuck_warn_s} must be 0 (off) or longer than "
                          f"the longest bin hold/pulse plus presence.clear_s ({longest_s + config.presence.clear_s:g} s)")


def _actuation_s(config: Config, bin_: BinConfig) -> float:
    """How long routing to ``bin_`` drives its actuator (device/actuators.py): a servo holds the
    bin angle ``hold_ms``, a pulse output is on ``pulse_ms``; the other setting is unused."""
    servo = config.actuators[bin_.actuator].type == "servo"
    return (bin_.hold_ms if servo else bin_.pulse_ms) / 1000


def _check_routing(config: Config) -> None:
    if config.capture.enabled and not config.capture.dir.strip():
        raise ConfigError("capture.dir: must name a folder when capture.enabled is true")
    if config.routing.fallback_bin not in config.bins:
        raise ConfigError(f"routing.fallback_bin: no bin named {config.routing.fallback_bin!r}")
    for label, bin_name in config.routing.classes.items():
        if bin_name not in config.bins:
            raise ConfigError(f"routing.classes.{label}: no bin named {bin_name!r}")


def _check_indicator_pins(config: Config) -> None:
    """The indicator's pins must not clash with an actuator's or with each other."""
    used = {actuator.pin: f"actuators.{name}" for name, actuator in config.actuators.items()}
    wanted = [("indicator.ready_pin", config.indicator.ready_pin),
              ("indicator.buzzer_pin", config.indicator.buzzer_pin)]
    wanted += [(f"bins.{name}.light_pin", bin_.light_pin) for name, bin_ in config.bins.items()]
    for path, pin in wanted:
        if pin is None:
            continue
        if pin in used:
            raise ConfigError(f"{path}: GPIO {pin} is already used by {used[pin]}")
        used[pin] = path


def routing_problems(config: Config, classes: tuple[str, ...]) -> list[str]:
    """What looks wrong in routing the model's ``classes`` (warnings: the sorter still runs).
    A default class the model lacks is not warned about: the file did not ask for it."""
    problems = []
    unrouted = [c for c in classes if c not in config.routing.classes]
    if unrouted:
        problems.append(f"classes without a bin go to the fallback bin: {', '.join(unrouted)}")
    for label in sorted(set(config.routing.classes) - set(classes)):
        if DEFAULT_CLASSES.get(label) != config.routing.classes[label]:
            problems.append(f"routing.classes.{label}: the model has no class {label!r} (it has {', '.join(classes)})")
    routed = set(config.routing.classes.values()) | {config.routing.fallback_bin}
    for bin_name in sorted(set(config.bins) - routed):
        problems.append(f"bins.{bin_name}: no class is routed to it (routing.classes)")
    return problems


def effective_routing(config: Config, classes: tuple[str, ...]) -> list[str]:
    """Where each of the model's ``classes`` goes, one line each, then the fallback (for
    ``run --check-config``): what the bins will do with this config and model."""
    width = max(map(len, classes), default=0)
    fallback = config.routing.fallback_bin
    lines = [f"{c:<{width}} -> {config.routing.classes[c]}" if c in config.routing.classes
             else f"{c:<{width}} -> {fallback} (not routed: the fallback bin)" for c in classes]
    lines.append(f"below {config.routing.min_confidence:g} confidence, or no usable frame -> {fallback}")
    return lines


def load_config(path: Path | None) -> Config:
    """The configuration in ``path``, or the defaults when ``path`` is None."""
    if path is None:
        return Config()
    shown = show_path(path)
    data = read_regular(path, what="config file", error=ConfigError, limit_bytes=MAX_CONFIG_BYTES)
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: config file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: invalid TOML ({first_line(exc, 160)})") from None
    except RecursionError:
        raise ConfigError(f"{shown}: invalid TOML (nested too deeply)") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise ConfigError(f"{shown}: invalid TOML ({first_line(exc, 160)})") from None
    try:
        return parse_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{shown}: {exc}") from None
