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
      "gate": {"saturation_level": 250,         # device.gate.GateThresholds, ranges in
               "max_extra_saturated_frac": 0.3, #   device.gate.THRESHOLD_RANGES (the config's
               "max_level_rise": 40.0,          #   [gate] has the same): int 128 .. 255,
               "max_glare_center_frac": 0.3,    #   0.01 .. 1, 1 .. 255, 0.05 .. 1,
               "min_median_luma": 20.0,         #   0 .. 200,
               "min_level_ratio": 0.35}         #   0 .. 1
    }

Numbers must be finite (JSON ``NaN``/``Infinity`` are rejected), booleans are not numbers, and a
float key accepts an integer. Any defect raises :class:`CalibrationError` with one line naming
the file, the key path and the reason; nothing else escapes :func:`load_calibration`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

from device.camera import ExposureControls
from device.errors import CalibrationError, first_line
from device.gate import GRID, THRESHOLD_RANGES, BoardStats, GateThresholds

SCHEMA = 1
MAX_FILE_BYTES = 1_000_000
#: Allowed ranges (inclusive) of the camera controls a calibration holds (the calibrate command's
#: options are checked against them too).
CONTROL_RANGES: dict[str, tuple[float, float]] = {
    "exposure_us": (1, 10_000_000), "analogue_gain": (1.0, 64.0), "colour_gains": (0.05, 32.0),
}
_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_PNG_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}\.png$")


@dataclass(frozen=True)
class ExposureTarget:
    """Where the exposure search puts the empty board."""

    median_luma: float = 190.0
    tolerance: float = 8.0
    max_saturated_frac: float = 0.005


@dataclass(frozen=True)
class Calibration:
    id: str
    created_utc: str  # ISO 8601
    exposure_us: int
    analogue_gain: float
    colour_gains: tuple[float, float]  # (red, blue)
    board_reference: str  # PNG file name relative to the calibration file's folder
    board: BoardStats
    gate: GateThresholds
    target: ExposureTarget = field(default_factory=ExposureTarget)
    board_mean_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)
    image_size: tuple[int, int] = (0, 0)  # (width, height); (0, 0) only before validation
    frames: int = 1
    source: str = ""
    exposure_searched: bool = True

    @property
    def controls(self) -> ExposureControls:
        return ExposureControls(self.exposure_us, self.analogue_gain, self.colour_gains)

    @property
    def histogram_name(self) -> str:
        return f"histogram-{self.id}.png"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "id": self.id, "created_utc": self.created_utc, "source": self.source,
            "exposure_searched": self.exposure_searched, "exposure_us": self.exposure_us,
            "analogue_gain": self.analogue_gain, "colour_gains": list(self.colour_gains),
            "target": asdict(self.target), "frames": self.frames, "image_size": list(self.image_size),
            "board_reference": self.board_reference, "board_mean_rgb": list(self.board_mean_rgb),
            "board": {"median_luma": self.board.median_luma, "saturated_frac": self.board.saturated_frac,
                      "cell_saturated_frac": list(self.board.cell_saturated_frac)},
            "gate": asdict(self.gate),
        }


# ----------------------------------------------------------------------------- validation

class _Bad(Exception):
    def __init__(self, path: str, reason: str):
        super().__init__(f"{path or '(top level)'}: {reason}")


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # e.g. an int too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 40 else text[:37] + "..."


def _obj(value: Any, path: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(path, f"must be an object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise _Bad(f"{path}.{unknown[0]}" if path else unknown[0], "unknown key")
    for key in keys:
        if key not in value:
            raise _Bad(f"{path}.{key}" if path else key, "missing key")
    return value


def _num(value: Any, path: str, lo: float, hi: float, integer: bool = False) -> float | int:
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise _Bad(path, f"must be {kind}, got {type(value).__name__} {_short(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Bad(path, f"must be finite, got {_short(value)}")
    if not lo <= value <= hi:
        raise _Bad(path, f"must be {kind} in [{lo:g}, {hi:g}], got {_short(value)}")
    return int(value) if integer else float(value)


def _list(value: Any, path: str, length: int) -> list[Any]:
    if not isinstance(value, list):
        raise _Bad(path, f"must be a list of {length}, got {type(value).__name__}")
    if len(value) != length:
        raise _Bad(path, f"must have {length} items, got {len(value)}")
    return value


def _str(value: Any, path: str, pattern: re.Pattern[str] | None = None, max_len: int = 300) -> str:
    if not isinstance(value, str):
        raise _Bad(path, f"must be a string, got {type(value).__name__}")
    if len(value) > max_len or (pattern is not None and not pattern.match(value)):
        raise _Bad(path, f"invalid value {_short(value)}")
    return value


_TOP_KEYS = ("schema", "id", "created_utc", "source", "exposure_searched", "exposure_us",
             "analogue_gain", "colour_gains", "target", "frames", "image_size", "board_reference",
             "board_mean_rgb", "board", "gate")


def parse_calibration(raw: Any) -> Calibration:
    """Validate a decoded JSON document; raises ``_Bad`` (wrapped by the callers)."""
    top = _obj(raw, "", _TOP_KEYS)
    schema = top["schema"]
    if isinstance(schema, bool) or not isinstance(schema, int) or schema != SCHEMA:
        raise _Bad("schema", f"unsupported schema {_short(schema)} (this version reads {SCHEMA})")
    created = _str(top["created_utc"], "created_utc", max_len=40)
    try:
        datetime.fromisoformat(created)
    except ValueError:
        raise _Bad("created_utc", f"not an ISO 8601 time: {_short(created)}") from None
    searched = top["exposure_searched"]
    if not isinstance(searched, bool):
        raise _Bad("exposure_searched", f"must be true or false, got {_short(searched)}")
    t = _obj(top["target"], "target", ("median_luma", "tolerance", "max_saturated_frac"))
    b = _obj(top["board"], "board", ("median_luma", "saturated_frac", "cell_saturated_frac"))
    cells = _list(b["cell_saturated_frac"], "board.cell_saturated_frac", GRID * GRID)
    g = _obj(top["gate"], "gate", tuple(f.name for f in fields(GateThresholds)))
    return Calibration(
        id=_str(top["id"], "id", _ID),
        created_utc=created,
        source=_str(top["source"], "source"),
        exposure_searched=searched,
        exposure_us=_num(top["exposure_us"], "exposure_us", *CONTROL_RANGES["exposure_us"], integer=True),
        analogue_gain=_num(top["analogue_gain"], "analogue_gain", *CONTROL_RANGES["analogue_gain"]),
        colour_gains=tuple(_num(v, f"colour_gains[{i}]", *CONTROL_RANGES["colour_gains"])
                           for i, v in enumerate(_list(top["colour_gains"], "colour_gains", 2))),
        target=ExposureTarget(_num(t["median_luma"], "target.median_luma", 1, 254),
                              _num(t["tolerance"], "target.tolerance", 0.5, 100),
                              _num(t["max_saturated_frac"], "target.max_saturated_frac", 0, 1)),
        frames=_num(top["frames"], "frames", 1, 1000, integer=True),
        image_size=tuple(_num(v, f"image_size[{i}]", 1, 20_000, integer=True)
                         for i, v in enumerate(_list(top["image_size"], "image_size", 2))),
        board_reference=_str(top["board_reference"], "board_reference", _PNG_NAME),
        board_mean_rgb=tuple(_num(v, f"board_mean_rgb[{i}]", 0, 255)
                             for i, v in enumerate(_list(top["board_mean_rgb"], "board_mean_rgb", 3))),
        board=BoardStats(_num(b["median_luma"], "board.median_luma", 0, 255),
                         _num(b["saturated_frac"], "board.saturated_frac", 0, 1),
                         tuple(_num(v, f"board.cell_saturated_frac[{i}]", 0, 1) for i, v in enumerate(cells))),
        gate=GateThresholds(**{name: _num(g[name], f"gate.{name}", lo, hi, integer=name == "saturation_level")
                               for name, (lo, hi) in THRESHOLD_RANGES.items()}),
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def parse_bytes(data: bytes, source: str) -> Calibration:
    """A calibration from the bytes of a file; ``source`` names it in errors."""
    if len(data) > MAX_FILE_BYTES:
        raise CalibrationError(f"{source}: file is too large ({len(data)} bytes, at most {MAX_FILE_BYTES})")
    try:
        raw = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise CalibrationError(f"{source}: not UTF-8 text") from None
    except RecursionError:
        raise CalibrationError(f"{source}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, over-long integers
        raise CalibrationError(f"{source}: not valid JSON ({first_line(exc, 120)})") from None
    try:
        return parse_calibration(raw)
    except _Bad as exc:
        raise CalibrationError(f"{source}: {exc}") from None
    except (RecursionError, MemoryError, OverflowError, ValueError, TypeError) as exc:  # defensive
        raise CalibrationError(f"{source}: invalid calibration ({type(exc).__name__})") from None
