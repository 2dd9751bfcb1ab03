"""The calibration file's schema and its strict parser (bytes -> :class:`Calibration`).

Schema of ``calibration.json`` (schema 1; every key required, unknown keys rejected)::

    {
      "schema": 1,
      "id": "20250101T120000Z-1a2b3c",          # [A-Za-z0-9._-], 1-64 chars
      "created_utc": "2025-01-01T12:00:00+00:00",  # ISO 8601
      "source": "picamera2",                    # camera source it was made with (<= 300 chars)
      "exposure_searched": true,                # false: a recorded source, controls as given
      "exposure_us": 8000,                      # int, 1 .. 10_000_000 (ExposureTime)
      "analogue_gain": 1.5,                     # 1.0 .. 64.0 (AnalogueGain)
      "colour_gains": [1.9, 1.6],               # (red, blue), each 0.05 .. 32.0 (ColourGains)
      "target": {"median_luma": 190.0,          # 1 .. 254, the empty board's level searched for
                 "tolerance": 8.0,              # 0.5 .. 100 levels
                 "max_saturated_frac": 0.005},  # 0 .. 1
      "frames": 15,                             # int 1 .. 1000, frames in the median reference
      "image_size": [512, 384],                 # [width, height], ints 1 .. 20000
      "board_reference": "board-<id>.png",      # plain file name in this folder
      "board_mean_rgb": [180.1, 182.0, 179.5],  # mean of unclipped board pixels, 0 .. 255
      "board": {"median_luma": 190.2,           # device.gate.BoardStats, 0 .. 255
                "saturated_frac": 0.0,          # 0 .. 1
                "cell_saturated_frac": [0.0, ...]},  # 16 values (4x4 grid), 0 .. 1
      "gate": {"saturation_level": 250,         # device.gate.GateThresholds, ranges declared
               "max_extra_saturated_frac": 0.3, #   there (the config's [gate] has the
               "max_level_rise": 40.0,          #   same): int 128 .. 255,
               "max_glare_center_frac": 0.3,    #   0.01 .. 1, 1 .. 255, 0.05 .. 1,
               "min_median_luma": 20.0,         #   0 .. 200,
               "min_level_ratio": 0.35}         #   0 .. 1
    }

The JSON is read by :func:`device.safe_json.loads` (no ``NaN``/``Infinity``, no number too large
for a float, no deep nesting); booleans are not numbers, and a float key accepts an integer;
:mod:`device.schema` reads the keys as declared on :class:`Calibration`.
Any defect raises :class:`CalibrationError` with one line naming the file, the key path and the
reason; nothing else escapes :func:`load_calibration`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from device import safe_json
from device.camera import ExposureControls
from device.errors import CalibrationError
from device.gate import BoardStats, GateThresholds
from device.schema import JSON, SchemaError, build, plain, short, spec

SCHEMA = 1
MAX_FILE_BYTES = 1_000_000
_NAME = r"[A-Za-z0-9._-]"


@dataclass(frozen=True)
class ExposureTarget:
    """Where the exposure search puts the empty board."""

    median_luma: float = spec(190.0, range=(1, 254))
    tolerance: float = spec(8.0, range=(0.5, 100))
    max_saturated_frac: float = spec(0.005, range=(0, 1))


@dataclass(frozen=True)
class Calibration:
    """The file's keys but ``schema``. The calibrate command checks its options against the
    camera controls' ranges too (``device.schema.bounds``)."""

    id: str = spec(pattern=_NAME + "{1,64}")
    created_utc: str = spec(max_len=40)  # ISO 8601
    exposure_us: int = spec(range=(1, 10_000_000))  # ExposureTime
    analogue_gain: float = spec(range=(1.0, 64.0))  # AnalogueGain
    colour_gains: tuple[float, float] = spec(range=(0.05, 32.0))  # (red, blue): ColourGains
    board_reference: str = spec(pattern=_NAME + r"{1,100}\.png")  # PNG file name in the calibration's folder
    board: BoardStats
    gate: GateThresholds
    target: ExposureTarget = field(default_factory=ExposureTarget)
    board_mean_rgb: tuple[float, float, float] = spec((0.0, 0.0, 0.0), range=(0, 255))
    image_size: tuple[int, int] = spec((0, 0), range=(1, 20_000))  # (width, height); (0, 0) only before validation
    frames: int = spec(1, range=(1, 1000))
    source: str = spec("", max_len=300)
    exposure_searched: bool = True

    @property
    def controls(self) -> ExposureControls:
        return ExposureControls(self.exposure_us, self.analogue_gain, self.colour_gains)

    @property
    def histogram_name(self) -> str:
        return f"histogram-{self.id}.png"

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **plain(self)}


def parse_calibration(raw: Any) -> Calibration:
    """Validate a decoded JSON document; raises SchemaError (wrapped by the callers)."""
    if isinstance(raw, dict):
        schema = raw.get("schema")
        if "schema" not in raw:
            raise SchemaError("schema: missing key")
        if type(schema) is not int or schema != SCHEMA:
            raise SchemaError(f"schema: unsupported schema {short(schema)} (this version reads {SCHEMA})")
        raw = {key: value for key, value in raw.items() if key != "schema"}
    calibration = build(Calibration, raw, JSON)
    try:
        datetime.fromisoformat(calibration.created_utc)
    except ValueError:
        raise SchemaError(f"created_utc: not an ISO 8601 time: {short(calibration.created_utc)}") from None
    return calibration


def parse_bytes(data: bytes, source: str) -> Calibration:
    """A calibration from the bytes of a file; ``source`` names it in errors."""
    if len(data) > MAX_FILE_BYTES:
        raise CalibrationError(f"{source}: file is too large ({len(data)} bytes, at most {MAX_FILE_BYTES})")
    try:
        raw = safe_json.loads(data)
    except ValueError as exc:  # malformed, NaN/Infinity, overlong numbers, nested too deeply, not UTF-8
        raise CalibrationError(f"{source}: not valid JSON ({exc})") from None
    try:
        return parse_calibration(raw)
    except SchemaError as exc:
        raise CalibrationError(f"{source}: {exc}") from None
