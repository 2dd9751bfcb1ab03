"""The sorter's TOML configuration, validated once at start.

Every key has a type and, for numbers, a range; unknown keys, wrong types, NaN/infinity and
out-of-range values are rejected with a :class:`ConfigError` naming the key path. Defaults make
``waste-sorter run --source VIDEO`` work on a laptop. See ``device/config.example.toml``.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from device.camera import device_source
from device.errors import ConfigError, first_line
from device.gate import THRESHOLD_RANGES, GateThresholds
from device.presence import PresenceSettings
from device.safe_open import MiB, read_regular, show_path

MAX_CONFIG_BYTES = MiB  # the example file is 6 KiB


@dataclass(frozen=True)
class CameraConfig:
    source: str = "picamera2"
    width: int = 512
    height: int = 384
    timeout_s: float = 2.0
    folder_fps: float = 10.0


@dataclass(frozen=True)
class ModelConfig:
    path: str = ""  # "" = the model shipped with the package
    threads: int | str = "auto"  # onnxruntime threads, or "auto": the cores the process may use
    frames_per_item: int = 3
    # decide before presence calls the item settled once this many frames of its still run
    # agree on the class with at least this mean confidence (no more frames would change it)
    early_decision: bool = True
    early_frames: int = 2
    early_confidence: float = 0.9


@dataclass(frozen=True)
class RoutingConfig:
    fallback_bin: str = "landfill"
    min_confidence: float = 0.55
    classes: dict[str, str] = field(default_factory=lambda: {
        "cardboard": "paper", "paper": "paper", "glass": "glass",
        "metal": "containers", "plastic": "containers", "trash": "landfill"})


@dataclass(frozen=True)
class ActuatorConfig:
    type: str  # "servo" | "pulse"
    pin: int
    active_high: bool = True  # pulse outputs
    min_angle_deg: float = -90.0  # servos
    max_angle_deg: float = 90.0
    home_angle_deg: float = 0.0
    min_pulse_width_ms: float = 1.0
    max_pulse_width_ms: float = 2.0


@dataclass(frozen=True)
class BinConfig:
    actuator: str
    angle_deg: float = 0.0  # servo: where the diverter points for this bin
    hold_ms: float = 800.0  # servo: time at the bin angle before going home
    pulse_ms: float = 200.0  # pulse: time the output is on
    light_pin: int | None = None  # indicator: a light that shows an item was routed here (none: no light)


@dataclass(frozen=True)
class LogConfig:
    path: str = "sort.jsonl"
    max_bytes: int = 10_000_000
    keep: int = 5


@dataclass(frozen=True)
class CaptureConfig:
    """Decision frames of uncertain and sampled items kept to be labelled (device/capture.py)."""

    enabled: bool = False  # the device's config (config.example.toml, installed) turns it on
    dir: str = "/var/lib/waste-sorter/captures"
    min_confidence: float | None = None  # capture items decided below this; None: routing.min_confidence
    sample_every: int = 20  # and every Nth item whatever its confidence; 0 = none
    max_mb: float = 500.0  # the folder's quota: the oldest captures are deleted beyond it


@dataclass(frozen=True)
class GpioConfig:
    pin_factory: str = "auto"  # auto | mock | lgpio | rpigpio | pigpio | native


@dataclass(frozen=True)
class IndicatorConfig:
    """What the person at the bin sees and hears (``device/indicator.py``); every output is
    optional, and no pin at all (the section absent) means no indicator. A light per bin is
    ``bins.NAME.light_pin``."""

    ready_pin: int | None = None  # on: drop the next item; blinking: deciding; off: wait
    buzzer_pin: int | None = None  # beeps for a fallback decision and when an item is stuck
    active_high: bool = True  # the indicator's outputs are on when their pin is high
    blink_ms: float = 250.0  # the ready light, deciding: this long on, this long off
    show_ms: float = 3000.0  # a bin light stays on this long after an item is routed there
    fallback_beep_ms: float = 150.0  # 0: no beep
    stuck_beep_ms: float = 1000.0  # 0: no beep


@dataclass(frozen=True)
class CalibrationConfig:
    path: str = ""  # "" = no calibration: defaults, board learned at start


def _default_actuators() -> dict[str, ActuatorConfig]:
    return {"diverter": ActuatorConfig(type="servo", pin=12)}


def _default_bins() -> dict[str, BinConfig]:
    return {name: BinConfig(actuator="diverter", angle_deg=angle)
            for name, angle in (("paper", -60.0), ("glass", -20.0), ("containers", 20.0), ("landfill", 60.0))}


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


#: Allowed ranges (inclusive) by key path; "*" stands for any table name.
RANGES: dict[str, tuple[float, float]] = {
    "camera.width": (64, 4096), "camera.height": (48, 4096), "camera.timeout_s": (0.1, 15),
    "camera.folder_fps": (0.1, 240),
    "model.threads": (1, 16), "model.frames_per_item": (1, 30),
    "model.early_frames": (1, 30), "model.early_confidence": (0.5, 1.0),
    **{f"gate.{name}": bounds for name, bounds in THRESHOLD_RANGES.items()},
    "presence.diff_level": (1, 255), "presence.item_frac": (0.001, 0.9),
    # empty_frac and settle_motion_frac are "below which" shares: 0 would mean never empty /
    # never still, so the smallest is one pixel in a million
    "presence.empty_frac": (1e-6, 0.9), "presence.motion_level": (1, 255),
    "presence.settle_motion_frac": (1e-6, 0.5), "presence.settle_s": (0.0, 30), "presence.max_settle_s": (0.1, 120),
    "presence.clear_s": (0.0, 30), "presence.min_item_s": (0.0, 30), "presence.learn_s": (0.0, 60),
    "presence.adapt_rate": (0, 1),
    "presence.stuck_warn_s": (0, 3600),
    "routing.min_confidence": (0, 1),
    "actuators.*.pin": (0, 27), "actuators.*.min_angle_deg": (-180, 180),
    "actuators.*.max_angle_deg": (-180, 180), "actuators.*.home_angle_deg": (-180, 180),
    "actuators.*.min_pulse_width_ms": (0.1, 5), "actuators.*.max_pulse_width_ms": (0.1, 5),
    "bins.*.angle_deg": (-180, 180), "bins.*.hold_ms": (10, 10_000), "bins.*.pulse_ms": (5, 5_000),
    "bins.*.light_pin": (0, 27), "indicator.ready_pin": (0, 27), "indicator.buzzer_pin": (0, 27),
    "indicator.blink_ms": (50, 5_000), "indicator.show_ms": (100, 60_000),
    "indicator.fallback_beep_ms": (0, 5_000), "indicator.stuck_beep_ms": (0, 10_000),
    "log.max_bytes": (1_000, 10**11), "log.keep": (1, 100),
    "capture.min_confidence": (0, 1), "capture.sample_every": (0, 1_000_000), "capture.max_mb": (1, 1_000_000),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "actuators.*.type": ("servo", "pulse"),
    "gpio.pin_factory": ("auto", "mock", "lgpio", "rpigpio", "pigpio", "native"),
}


def _short(value: Any) -> str:
    """``repr(value)`` for a message, at most 60 characters (a TOML value can be a megabyte)."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # a deeply nested array, an integer too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _check_value(value: Any, kind: type, path: str, generic: str) -> Any:
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise ConfigError(f"{path}: must be a finite number, got {value}")
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"{path}: expected {kind.__name__}, got {type(value).__name__} {_short(value)}")
    if generic in RANGES:
        low, high = RANGES[generic]
        if not low <= value <= high:
            raise ConfigError(f"{path}: {_short(value)} is out of range [{low}, {high}]")
    if generic in CHOICES and value not in CHOICES[generic]:
        raise ConfigError(f"{path}: {_short(value)} is not one of {', '.join(CHOICES[generic])}")
    return value


def _build(cls, table: Any, path: str, generic: str):
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: expected a table, got {type(table).__name__}")
    known = {f.name: f for f in fields(cls)}
    for key in table:
        if key not in known:
            raise ConfigError(f"{path}.{key}: unknown key (known: {', '.join(known)})")
    values = {}
    for name, f in known.items():
        if name not in table:
            continue
        kind = {"int": int, "float": float, "str": str, "bool": bool,
                "int | None": int, "float | None": float}.get(str(f.type), None)  # None: absent (optional GPIO pins)
        if str(f.type) == "int | str":  # a number, or "auto" (model.threads)
            value = table[name]
            if isinstance(value, str) and value != "auto":
                raise ConfigError(f"{path}.{name}: expected a whole number or \"auto\", got {_short(value)}")
            values[name] = value if value == "auto" else _check_value(value, int, f"{path}.{name}",
                                                                      f"{generic}.{name}")
        elif kind is None:  # dict[str, str]
            values[name] = _string_map(table[name], f"{path}.{name}")
        else:
            values[name] = _check_value(table[name], kind, f"{path}.{name}", f"{generic}.{name}")
    try:
        return cls(**values)
    except TypeError as exc:  # a required key is missing
        raise ConfigError(f"{path}: {exc}") from None


def _string_map(table: Any, path: str) -> dict[str, str]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: expected a table")
    return {k: _check_value(v, str, f"{path}.{k}", "") for k, v in table.items()}


def parse_config(raw: dict[str, Any]) -> Config:
    """Validate a parsed TOML document; errors name the key path (the caller adds the file)."""
    sections = {f.name: f for f in fields(Config)}
    for key in raw:
        if key not in sections:
            raise ConfigError(f"{key}: unknown section (known: {', '.join(sections)})")
    values: dict[str, Any] = {}
    for name, cls in (("camera", CameraConfig), ("model", ModelConfig), ("calibration", CalibrationConfig),
                      ("gate", GateThresholds), ("presence", PresenceSettings), ("routing", RoutingConfig),
                      ("log", LogConfig), ("gpio", GpioConfig), ("indicator", IndicatorConfig),
                      ("capture", CaptureConfig)):
        if name in raw:
            values[name] = _build(cls, raw[name], name, name)
    for name, cls in (("actuators", ActuatorConfig), ("bins", BinConfig)):
        if name in raw:
            if not isinstance(raw[name], dict) or not raw[name]:
                raise ConfigError(f"{name}: expected a non-empty table of tables")
            values[name] = {k: _build(cls, v, f"{name}.{k}", f"{name}.*") for k, v in raw[name].items()}
    config = Config(**values)
    _check_references(config)
    return config


def _check_references(config: Config) -> None:
    try:
        device_source(config.camera.source)
    except ValueError as exc:
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
    for name, actuator in config.actuators.items():
        if actuator.type == "servo" and not (
                actuator.min_angle_deg < actuator.max_angle_deg
                and actuator.min_angle_deg <= actuator.home_angle_deg <= actuator.max_angle_deg):
            raise ConfigError(f"actuators.{name}: need min_angle_deg < max_angle_deg with home_angle_deg between")
        if actuator.type == "servo" and actuator.min_pulse_width_ms >= actuator.max_pulse_width_ms:
            raise ConfigError(f"actuators.{name}.min_pulse_width_ms: {actuator.min_pulse_width_ms} must be "
                              f"less than actuators.{name}.max_pulse_width_ms ({actuator.max_pulse_width_ms})")
    pins: dict[int, str] = {}
    for name, actuator in config.actuators.items():
        if actuator.pin in pins:
            raise ConfigError(f"actuators.{name}.pin: GPIO {actuator.pin} is already used by "
                              f"actuators.{pins[actuator.pin]}")
        pins[actuator.pin] = name
    _check_indicator_pins(config)
    if config.model.early_frames > config.model.frames_per_item:
        raise ConfigError(f"model.early_frames: {config.model.early_frames} must be at most "
                          f"model.frames_per_item ({config.model.frames_per_item})")
    if config.presence.max_settle_s <= config.presence.settle_s:
        raise ConfigError(f"presence.max_settle_s: {config.presence.max_settle_s} must be longer than "
                          f"presence.settle_s ({config.presence.settle_s})")
    longest_s = max((max(b.hold_ms, b.pulse_ms) / 1000 for b in config.bins.values()), default=0.0)
    if 0 < config.presence.stuck_warn_s <= longest_s + config.presence.clear_s:
        raise ConfigError(f"presence.stuck_warn_s: {config.presence.stuck_warn_s} must be 0 (off) or longer than "
                          f"the longest bin hold/pulse plus presence.clear_s ({longest_s + config.presence.clear_s:g} s)")
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
    """What looks wrong in routing the model's ``classes`` (warnings: the sorter still runs)."""
    problems = []
    unrouted = [c for c in classes if c not in config.routing.classes]
    if unrouted:
        problems.append(f"classes without a bin go to the fallback bin: {', '.join(unrouted)}")
    for label in sorted(set(config.routing.classes) - set(classes)):
        problems.append(f"routing.classes.{label}: the model has no class {label!r} (it has {', '.join(classes)})")
    routed = set(config.routing.classes.values()) | {config.routing.fallback_bin}
    for bin_name in sorted(set(config.bins) - routed):
        problems.append(f"bins.{bin_name}: no class is routed to it (routing.classes)")
    return problems


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
    except RecursionError:  # a deeply nested value where a number or a string belongs
        raise ConfigError(f"{shown}: a value is nested too deeply") from None
