"""device/schema.py: one mechanism reads the config, the calibration and the status file; and the
example config, every commented-out example taken in, documents and passes every key."""

from __future__ import annotations

import re
import tomllib
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

import pytest

from device.config import Config, parse_config
from device.schema import JSON, TOML, SchemaError, bounds, build, plain, spec

EXAMPLE = Path(__file__).resolve().parents[1] / "device" / "config.example.toml"


@dataclass(frozen=True)
class Inner:
    level: int = spec(5, range=(1, 10))
    ratio: float = spec(0.5, range=(0, 1))
    mode: str = spec("a", choices=("a", "b"))
    name: str = spec("x", pattern="[a-z]{1,8}")
    on: bool = True
    pair: tuple[float, float] = spec((0.0, 0.0), range=(0, 1))
    many: tuple[int, ...] = spec((), range=(0, 9))  # no length: any number of items


@dataclass(frozen=True)
class Needs:
    pin: int = spec(range=(0, 27))
    label: str = ""


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    tables: dict[str, Needs] = field(default_factory=dict)
    threads: int | str = spec("auto", range=(1, 4), choices=("auto",), expect='a number or "auto"')
    light: int | None = spec(None, range=(0, 27))


def test_a_valid_mapping_builds_the_frozen_tree_with_defaults():
    built = build(Outer, {"inner": {"ratio": 1, "pair": [0, 0.5], "many": [1, 2, 3]}, "tables": {"t": {"pin": 3}},
                          "threads": 2}, TOML)
    assert built == Outer(Inner(ratio=1.0, pair=(0.0, 0.5), many=(1, 2, 3)), {"t": Needs(3)}, threads=2)
    assert build(Inner, {"many": []}, TOML).many == ()
    assert type(built.inner.ratio) is float and built.light is None
    assert build(Outer, plain(built), JSON) == built  # what plain writes, build reads back
    assert bounds(Inner, "level") == (1, 10)


@pytest.mark.parametrize("raw, message", [
    ({"inner": {"levl": 3}}, "inner.levl: unknown key (known: level, ratio, mode, name, on, pair, many)"),
    ({"extra": {}}, "extra: unknown section (known: inner, tables, threads, light)"),
    ({"inner": {"level": "3"}}, "inner.level: expected int, got str '3'"),
    ({"inner": {"level": True}}, "inner.level: expected int, got bool True"),
    ({"inner": {"ratio": False}}, "inner.ratio: expected float, got bool False"),
    ({"inner": {"level": 3.0}}, "inner.level: expected int, got float 3.0"),
    ({"inner": {"on": 1}}, "inner.on: expected bool, got int 1"),
    ({"inner": {"ratio": float("nan")}}, "inner.ratio: must be a finite number, got nan"),
    ({"inner": {"ratio": float("-inf")}}, "inner.ratio: must be a finite number, got -inf"),
    ({"inner": {"ratio": 10**400}}, "inner.ratio: must be a finite number, got 1000"),
    ({"inner": {"level": 11}}, r"inner.level: 11 is out of range [1, 10]"),
    ({"inner": {"ratio": 2}}, r"inner.ratio: 2.0 is out of range [0, 1]"),
    ({"inner": {"mode": "c"}}, "inner.mode: 'c' is not one of a, b"),
    ({"inner": {"name": "X"}}, "inner.name: invalid value 'X'"),
    ({"inner": {"pair": [0.5, 2]}}, r"inner.pair[1]: 2.0 is out of range [0, 1]"),
    ({"inner": {"pair": [0.5]}}, "inner.pair: must have 2 items, got 1"),
    ({"inner": {"many": [1, 10]}}, r"inner.many[1]: 10 is out of range [0, 9]"),
    ({"inner": {"many": 3}}, "inner.many: must be a list of any length, got int"),
    ({"inner": 3}, "inner: expected a table, got int"),
    ({"tables": {"t": {"pin": 28}}}, r"tables.t.pin: 28 is out of range [0, 27]"),
    ({"tables": {"t": {"label": "x"}}}, "tables.t: missing key pin"),
    ({"tables": {"t": {"pin": 1, "x\ny": 2}}}, "tables.t.x\ny: unknown key"),
    ({"threads": "many"}, "threads: expected a number or \"auto\", got 'many'"),
    ({"threads": 0}, r"threads: 0 is out of range [1, 4]"),
    ({"light": 5.0}, "light: expected int, got float 5.0"),
])
def test_the_config_rules_name_the_key_path_of_each_defect(raw, message):
    with pytest.raises(SchemaError) as info:
        build(Outer, raw, TOML)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("inner, message", [
    ({"level": 11}, "inner.level: must be an integer in [1, 10], got 11"),
    ({"on": 0}, "inner.on: must be true or false, got int 0"),
    ({"ratio": float("inf")}, "inner.ratio: must be finite, got inf"),
    ({"pair": "ab"}, "inner.pair: must be a list of 2, got str"),
    ({"mode": "c"}, "inner.mode: must be one of a, b, got 'c'"),
])
def test_the_json_rules_word_the_same_checks_for_the_calibration_file(inner, message):
    doc = plain(Outer())  # a whole document: the JSON rules want every key
    doc["inner"].update(inner)
    with pytest.raises(SchemaError) as info:
        build(Outer, doc, JSON)
    assert str(info.value).startswith(message)
    with pytest.raises(SchemaError, match=r"^inner\.level: missing key$"):
        build(Outer, {"inner": {}}, JSON)
    with pytest.raises(SchemaError, match=r"^\(top level\): must be an object, got list$"):
        build(Outer, [1], JSON)


def _uncommented_example() -> str:
    """The example config with every commented-out example (a section, a key) taken in."""
    return re.sub(r"^# (\[[a-z_.]+\]|[a-z_]+ = )", r"\1", EXAMPLE.read_text(), flags=re.MULTILINE)


def test_the_example_config_with_every_example_taken_in_is_valid():
    config = parse_config(tomllib.loads(_uncommented_example()))
    assert config.actuators["flap"].type == "pulse" and config.bins["metal"].actuator == "flap"
    assert config.indicator.ready_pin == 5 and config.bins["paper"].light_pin == 20
    assert config.capture.min_confidence == 0.55


def _declared(cls: type) -> dict[str, typing.Any]:
    return {f.name: typing.get_type_hints(cls)[f.name] for f in fields(cls)}


def test_the_example_config_documents_every_key():
    raw = tomllib.loads(_uncommented_example())
    for section, hint in _declared(Config).items():
        if is_dataclass(hint):
            assert set(raw[section]) == set(_declared(hint)), section
        else:  # a table of tables: every key is shown in one of them
            kind = typing.get_args(hint)[1]
            assert set().union(*raw[section].values()) == set(_declared(kind)), section
