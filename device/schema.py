"""One way to declare and read the sorter's files: the config (TOML), the calibration and the status (JSON).

A file's schema is a tree of frozen dataclasses. Each field's Python type is its type in the
file, and :func:`spec` puts its constraints (``range``, ``choices``, ``pattern``...) beside it::

    @dataclass(frozen=True)
    class CameraConfig:
        width: int = spec(512, range=(64, 4096))  # frame size in pixels

:func:`build` makes such a tree from a parsed TOML or JSON mapping, or raises :class:`SchemaError`
with one line naming the full key path (``actuators.flap.pin``, ``colour_gains[1]``). It rejects
wrong types (a bool is not a number; an int is a float), NaN and infinity, values out of range
or not among the choices, and unknown or missing keys as the file's :class:`Rules` say. Types
understood: bool, int, float, str, ``X | None`` (absent or null), ``int | str`` (the strings
in ``choices``), ``tuple[X, X]`` and ``tuple[X, ...]`` (of ``length`` items, or any number),
``dict[str, X]`` (tables of any names) and nested dataclasses. Checks across fields stay with
each file's reader.
"""

from __future__ import annotations

import math
import re
import types
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from functools import cache
from typing import Any, Union, get_args, get_origin, get_type_hints

_META = "schema"


class SchemaError(ValueError):
    """A value that does not fit the schema; the message is one line naming its key path."""


@dataclass(frozen=True)
class Check:
    """A field's constraints (an element's, for a tuple; a value's, for a dict)."""

    range: tuple[float, float] | None = None  # inclusive
    choices: tuple[str, ...] = ()
    pattern: str = ""  # the whole string must match
    max_len: int | None = None  # of a string
    length: int | None = None  # items of a tuple[X, ...]
    expect: str = ""  # what an ``int | str`` field takes, in words


def spec(default: Any = MISSING, *, factory: Any = MISSING, **check: Any) -> Any:
    """A dataclass field with its constraints (keywords of :class:`Check`)."""
    return field(default=default, default_factory=factory, metadata={_META: Check(**check)})


def bounds(cls: type, name: str) -> tuple[float, float]:
    """The declared range of field ``name`` of ``cls`` (for a command-line option checked the same)."""
    return next(f.metadata[_META].range for f in fields(cls) if f.name == name)


@dataclass(frozen=True)
class Rules:
    """How a file is read and its errors worded (defaults: the JSON files). The templates get
    ``path`` and, as they apply, ``name`` (the expected kind, from ``names``), ``got`` (type and
    value), ``value``, ``lo``, ``hi``, ``choices``, ``known``, ``what``, ``table``, ``key``,
    ``type``, ``n`` and ``count``."""

    ignore_unknown: bool = False  # True: a reader of files that newer writers may extend
    all_required: bool = True  # every key must be there, even one with a default
    names: tuple[tuple[type, str], ...] = ((bool, "true or false"), (int, "an integer"),
                                           (float, "a number"), (str, "a string"))
    wrong_type: str = "{path}: must be {name}, got {got}"
    not_finite: str = "{path}: must be finite, got {value}"
    out_of_range: str = "{path}: must be {name} in [{lo}, {hi}], got {value}"
    not_choice: str = "{path}: must be one of {choices}, got {value}"
    bad_value: str = "{path}: invalid value {value}"
    unknown: str = "{path}: unknown key (known: {known})"
    missing: str = "{path}: missing key"
    not_table: str = "{path}: must be an object, got {type}"
    not_list: str = "{path}: must be a list of {n}, got {type}"
    wrong_length: str = "{path}: must have {n} items, got {count}"

    def name(self, kind: type) -> str:
        return dict(self.names)[kind]


JSON = Rules()
TOML = replace(
    JSON, all_required=False, names=((bool, "bool"), (int, "int"), (float, "float"), (str, "str")),
    wrong_type="{path}: expected {name}, got {got}", not_finite="{path}: must be a finite number, got {value}",
    out_of_range="{path}: {value} is out of range [{lo}, {hi}]", not_choice="{path}: {value} is not one of {choices}",
    unknown="{path}: unknown {what} (known: {known})", missing="{table}: missing key {key}",
    not_table="{path}: expected a table, got {type}")


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` for a message, at most ``limit`` characters (a value can be a megabyte)."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # a deeply nested array, an integer too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _fail(template: str, path: str, **values: Any) -> SchemaError:
    return SchemaError(template.format(path=path or "(top level)", **values))


def _join(path: str, key: str) -> str:
    key = key if len(key) <= 60 else key[:57] + "..."
    return f"{path}.{key}" if path else key


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def build(cls: type, raw: Any, rules: Rules = JSON, path: str = "") -> Any:
    """A ``cls`` (frozen dataclass) from a parsed mapping; SchemaError for the first defect."""
    if not isinstance(raw, dict):
        raise _fail(rules.not_table, path, type=type(raw).__name__)
    known = {f.name: f for f in fields(cls)}
    unknown = [key for key in raw if key not in known]
    if unknown and not rules.ignore_unknown:
        raise _fail(rules.unknown, _join(path, str(unknown[0])), known=", ".join(known),
                    what="key" if path else "section")
    values = {}
    for name, f in known.items():
        where = _join(path, name)
        if name in raw:
            values[name] = _value(raw[name], _hints(cls)[name], f.metadata.get(_META, Check()), rules, where)
        elif rules.all_required or (f.default is MISSING and f.default_factory is MISSING):
            raise _fail(rules.missing, where, table=path or "(top level)", key=name)
    return cls(**values)


def _value(value: Any, hint: Any, check: Check, rules: Rules, path: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        if value is None and len(kinds) < len(args):  # JSON null for an optional value
            return None
        if str in kinds and len(kinds) > 1 and isinstance(value, str):  # ``int | str``: a word of choices
            if value in check.choices:
                return value
            raise _fail(rules.wrong_type, path, got=short(value), name=check.expect or " or ".join(
                [rules.name(kinds[0]), *map(repr, check.choices)]))
        return _value(value, kinds[0], check, rules, path)
    if is_dataclass(hint):
        return build(hint, value, rules, path)
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(rules.not_table, path, type=type(value).__name__)
        return {k: _value(v, args[1], check, rules, _join(path, k)) for k, v in value.items()}
    if origin is tuple:
        n = check.length if args[-1] is Ellipsis else len(args)
        if not isinstance(value, list):
            raise _fail(rules.not_list, path, n="any length" if n is None else n, type=type(value).__name__)
        if n is not None and len(value) != n:  # a ``tuple[X, ...]`` without ``length``: any
            raise _fail(rules.wrong_length, path, n=n, count=len(value))
        return tuple(_scalar(v, args[0], check, rules, f"{path}[{i}]") for i, v in enumerate(value))
    return _scalar(value, hint, check, rules, path)


def _scalar(value: Any, kind: type, check: Check, rules: Rules, path: str) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is float and number:
        try:
            value = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise _fail(rules.not_finite, path, value=short(value)) from None
    elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _fail(rules.wrong_type, path, name=rules.name(kind), got=f"{type(value).__name__} {short(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(rules.not_finite, path, value=short(value))
    if check.range is not None and not check.range[0] <= value <= check.range[1]:
        lo, hi = check.range
        raise _fail(rules.out_of_range, path, name=rules.name(kind), value=short(value), lo=lo, hi=hi)
    if check.choices and kind is str and value not in check.choices:
        raise _fail(rules.not_choice, path, value=short(value), choices=", ".join(check.choices))
    if isinstance(value, str) and ((check.pattern and not re.fullmatch(check.pattern, value))
                                   or (check.max_len is not None and len(value) > check.max_len)):
        raise _fail(rules.bad_value, path, value=short(value))
    return value


def plain(value: Any) -> Any:
    """A dataclass tree as the dicts, lists and scalars :func:`build` reads back (for JSON)."""
    if is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value
