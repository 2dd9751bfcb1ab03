"""Strict JSON for files a user or a crash may have mangled: a value, or ValueError with a reason.

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``1e400`` (an infinite float), integers of
thousands of digits (which ``float()`` cannot take), and raises RecursionError, not ValueError,
on deeply nested input. :func:`loads` refuses all of these with a ValueError whose message is a
short reason, so a reader needs one ``except ValueError`` to turn any content into either a
value or its one-line error.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32  # the project's JSON files nest 3 levels deep
MAX_INT_DIGITS = 19  # |n| < 10**19: every integer the project writes, and float() takes it


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number this project reads")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:24]} is too large")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"integer of {len(text.lstrip('-'))} digits is too large")
    return int(text)


def _depth_exceeds(value: Any, max_depth: int) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > max_depth:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value in ``data`` (UTF-8 when bytes); ValueError (a one-line reason) for
    malformed text, non-finite or overlong numbers, or nesting deeper than ``max_depth``."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                           parse_int=_bounded_int)
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except RecursionError:
        raise ValueError(f"nested more than {max_depth} levels deep") from None
    except ValueError as exc:  # JSONDecodeError and the hooks' errors
        raise ValueError(str(exc).splitlines()[0][:120] if str(exc) else "not valid JSON") from None
    if _depth_exceeds(value, max_depth):
        raise ValueError(f"nested more than {max_depth} levels deep")
    return value
