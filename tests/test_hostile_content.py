"""Any content, one outcome: a value, or the project's one-line error naming the file.

Hypothesis writes hostile config, calibration, sort-log and status-file contents (deep nesting,
``NaN``/``Infinity``/``1e400``, integers of thousands of digits, binary, truncation, valid
documents with one value replaced) to a real file and runs the loader or the command that reads
it. Derandomized and bounded, so it is as repeatable as any other test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from device.calibration_file import store
from device.cli import main as cli_main
from device.config import Config, load_config
from device.errors import CalibrationError, ConfigError
from helpers import event, make_calibration

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
EXAMPLE_CONFIG = (Path(__file__).resolve().parents[1] / "device" / "config.example.toml").read_text()


def one_line_error_naming(exc: Exception, path: Path) -> None:
    text = str(exc)
    assert "\n" not in text and text.startswith(f"{path}: "), text


def strict_json(text: str):
    """What ``jq`` accepts: no NaN or Infinity."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON output"))


# ---------------------------------------------------------------- hostile pieces

def nested(open_: str, close: str, inner: str = ""):
    return st.integers(1, 3000).map(lambda n: open_ * n + inner + close * n)


JSON_TOKENS = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "9" * 5000, "-" + "9" * 30,
                     "true", "null", '"x"', '""', "[]", "{}", '"\\u0000\\n"', "0.5", "-1", "1.0", "[1, 2]"]),
    nested("[", "]"), nested('{"a":', "}", "1"),
    st.integers(-10**25, 10**25).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(json.dumps),
    st.text(max_size=20).map(json.dumps),
)
TOML_VALUES = st.one_of(
    st.sampled_from(["inf", "-inf", "nan", "+nan", "1e400", "-1e400", "9" * 5000, "0x" + "f" * 40, "true", "''",
                     '"x"', '"\\u0000"', "[]", "{}", "1979-05-27T07:32:00Z", "07:32:00", "[1, 'a']", "0.5", "-3"]),
    nested("[", "]"), nested("{a=", "}", "1"),
    st.integers(-10**25, 10**25).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=20).map(json.dumps),
)
BYTES = st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode))


# ---------------------------------------------------------------- config

_VALUE_LINE = re.compile(r"^(\s*[A-Za-z_]+\s*=\s*)(.*)$", re.M)
EXAMPLE_VALUE_LINES = [m.start() for m in _VALUE_LINE.finditer(EXAMPLE_CONFIG)]


def replace_value(index: int, value: str) -> str:
    """The example config with the value on its index-th ``key = value`` line replaced."""
    start = EXAMPLE_VALUE_LINES[index % len(EXAMPLE_VALUE_LINES)]
    match = _VALUE_LINE.match(EXAMPLE_CONFIG, start)
    return EXAMPLE_CONFIG[:start] + match.group(1) + value + EXAMPLE_CONFIG[match.end():]


SECTIONS = st.sampled_from(["camera", "model", "calibration", "gate", "presence", "routing", "routing.classes",
                            "actuators.diverter", "bins.paper", "log", "gpio", "x", "a.b.c"])
KEYS = st.sampled_from(["source", "width", "timeout_s", "threads", "path", "saturation_level", "settle_s",
                        "empty_frac", "min_confidence", "pin", "type", "angle_deg", "max_bytes", "pin_factory",
                        "cardboard", "x"])
CONFIG_TEXT = st.one_of(
    st.builds(replace_value, st.integers(0, 200), TOML_VALUES),
    st.builds(lambda s, k, v: f"[{s}]\n{k} = {v}\n", SECTIONS, KEYS, TOML_VALUES),
    st.builds(lambda k, v: f"{k} = {v}\n", KEYS, TOML_VALUES),
    nested("[", "]").map(lambda t: f"[{t}]\n"),
)


@FUZZ
@given(st.one_of(CONFIG_TEXT.map(str.encode), BYTES))
@example(b"[camera]\nwidth = " + b"9" * 5000 + b"\n")  # the cases the fault injection found, always tried
@example(b"a = " + b"[" * 3000 + b"]" * 3000 + b"\n")
@example(b"[camera]\nsource = " + b"[" * 400 + b"]" * 400 + b"\n")
@example(b"[presence]\nsettle_s = 1e400\n")
def test_fuzz_config(tmp_path, data):
    path = tmp_path / "config.toml"
    path.write_bytes(data)
    try:
        assert isinstance(load_config(path), Config)
    except ConfigError as exc:
        one_line_error_naming(exc, path)


# ---------------------------------------------------------------- calibration

BOARD = np.full((24, 32, 3), 190, np.uint8)
CALIBRATION_TEXT = json.dumps(make_calibration().to_dict())
_JSON_VALUE = re.compile(r'(?<=": )(-?[0-9][0-9.e+-]*|"[^"]*"|true|false|null)')
CALIBRATION_VALUES = [m.span() for m in _JSON_VALUE.finditer(CALIBRATION_TEXT)]


def replace_calibration_value(index: int, token: str) -> str:
    start, end = CALIBRATION_VALUES[index % len(CALIBRATION_VALUES)]
    return CALIBRATION_TEXT[:start] + token + CALIBRATION_TEXT[end:]


@FUZZ
@given(st.one_of(st.builds(replace_calibration_value, st.integers(0, 200), JSON_TOKENS).map(str.encode),
                 st.integers(1, len(CALIBRATION_TEXT)).map(lambda n: CALIBRATION_TEXT[:n].encode()),  # torn
                 JSON_TOKENS.map(str.encode), BYTES))
@example(b"[" * 100_000 + b"]" * 100_000)
@example(replace_calibration_value(5, "1e400").encode())
def test_fuzz_calibration(tmp_path, data):
    path = tmp_path / "calibration.json"
    if not (tmp_path / make_calibration().board_reference).exists():
        store.save_calibration(path, make_calibration(), BOARD)
    path.write_bytes(data)
    try:
        calibration, board = store.load_for_camera(path, (32, 24))
        assert board.shape == (24, 32, 3)
    except CalibrationError as exc:
        one_line_error_naming(exc, path)


# ---------------------------------------------------------------- sort log

FIELDS = ["ts", "item", "label", "confidence", "top3", "bin", "reason", "frames_used", "frames_rejected",
          "reject_reasons", "latency_ms", "settled"]


def spoiled_record(field: str, token: str) -> str:
    body = json.loads(event(7).to_json())
    body[field] = "@@"
    return json.dumps(body).replace('"@@"', token)


LOG_LINE = st.one_of(
    st.just(event(1).to_json()), st.builds(spoiled_record, st.sampled_from(FIELDS), JSON_TOKENS),
    JSON_TOKENS, st.sampled_from(["", "   ", "{", '{"reject_reasons": {"glare": 1e300}}']),
    st.text(max_size=40).filter(lambda t: "\n" not in t and "\r" not in t),
)
LOG_COMMANDS = [["logs"], ["logs", "--json"], ["logs", "--summary"], ["logs", "--summary", "--json"],
                ["logs", "--since", "1h", "--reason", "any", "--label", "glass", "--bin", "x", "-n", "3"]]


@FUZZ
@given(st.lists(LOG_LINE, max_size=8), st.booleans(), st.sampled_from(LOG_COMMANDS))
@example([spoiled_record("latency_ms", "Infinity"), spoiled_record("confidence", "NaN")], False, ["logs", "--json"])
@example([spoiled_record("reject_reasons", '{"glare": 1e400}')], False, ["logs", "--summary", "--json"])
@example(["[" * 50_000 + "]" * 50_000, event(1).to_json()], True, ["logs"])
def test_fuzz_sort_log(tmp_path, capsys, lines, torn, command):
    path = tmp_path / "sort.jsonl"
    text = "\n".join(lines) + ("" if torn else "\n")
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    assert cli_main([*command, "--log", str(path)]) == 0
    out = capsys.readouterr().out
    if "--json" in command:
        for line in out.splitlines():
            strict_json(line)
    assert cli_main(["status", "--json", "--log", str(path), "--status-file", str(tmp_path / "none")]) == 0
    strict_json(capsys.readouterr().out)


# ---------------------------------------------------------------- status file

STATUS_KEYS = ["updated_utc", "started_utc", "frames", "frames_rejected", "reject_reasons", "items", "fps",
               "model_path", "model_sha256", "model_mtime_utc", "calibration_id", "calibration_created_utc",
               "state", "pid", "log_pending", "log_dropped"]
GOOD_STATUS = {"updated_utc": "2024-01-01T00:00:00Z", "started_utc": "2024-01-01T00:00:00Z", "frames": 10,
               "frames_rejected": 2, "reject_reasons": {"glare": 2}, "fps": 9.5}


def spoiled_status(values: dict[str, str]) -> str:
    body = dict(GOOD_STATUS)
    body.update({key: f"@@{key}@@" for key in values})
    text = json.dumps(body)
    for key, token in values.items():
        text = text.replace(f'"@@{key}@@"', token)
    return text


@FUZZ
@given(st.one_of(st.dictionaries(st.sampled_from(STATUS_KEYS), JSON_TOKENS, min_size=1, max_size=4).map(spoiled_status),
                 JSON_TOKENS, BYTES.map(lambda b: b.decode("latin-1"))),
       st.booleans())
@example(spoiled_status({"frames": "Infinity"}), False)
@example(spoiled_status({"frames": "1e400", "reject_reasons": '{"x": NaN}'}), True)
@example(spoiled_status({"fps": "NaN"}), True)
@example("[" * 100_000 + "]" * 100_000, False)
def test_fuzz_status_file(tmp_path, capsys, text, as_json):
    path = tmp_path / "status.json"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    argv = ["status", "--status-file", str(path), "--log", str(tmp_path / "none.jsonl")]
    assert cli_main(argv + (["--json"] if as_json else [])) == 0
    out = capsys.readouterr().out
    if as_json:
        strict_json(out)
    else:
        assert out.startswith("service ")


def test_a_config_larger_than_a_mebibyte_is_refused_by_its_size(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(EXAMPLE_CONFIG + "#" * (1 << 20) + "\n")  # valid TOML: a long comment
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: config file is too large ({path.stat().st_size} bytes, at most {1 << 20})"
