"""The project's exceptions: one root, one subclass per kind of bad input.

Each carries an ``exit_code`` so the command line and systemd (``RestartPreventExitStatus=``)
can tell a configuration mistake, which a restart cannot fix, from a transient failure.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SorterError(Exception):
    """Root of every error this project raises on purpose. The message is one line: control
    characters that came from the input (a key named "a\\nb", say) are shown escaped."""

    exit_code = 1

    def __init__(self, message: str = ""):
        super().__init__(_CONTROL.sub(lambda m: repr(m.group())[1:-1], str(message)))


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, at most ``limit`` characters, or its type name
    when it has no message: the detail a one-line error quotes from a library's exception."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


class UsageError(SorterError):
    """A command-line option out of range or malformed (argparse's own mistakes exit 2 too)."""

    exit_code = 2


class DependencyError(SorterError):
    """A library the chosen backend needs is not installed or breaks on import (picamera2)."""

    exit_code = 3


class ConfigError(SorterError):
    """The TOML configuration is unreadable or invalid (message names the key path)."""

    exit_code = 78  # EX_CONFIG


class ModelError(SorterError):
    """The model file is missing, corrupt, or breaks the model contract."""

    exit_code = 79


class CalibrationError(SorterError):
    """A calibration file is unreadable or invalid (message names the key path)."""

    exit_code = 80


class CameraError(SorterError):
    """The camera could not be opened or stopped delivering frames."""

    exit_code = 74  # EX_IOERR


class ActuatorError(SorterError):
    """GPIO could not drive an actuator (a line held by another process, a driver hiccup):
    a restart may well succeed, unlike a pin the configuration got wrong (ConfigError)."""

    exit_code = 69  # EX_UNAVAILABLE


class DataError(SorterError):
    """A data folder, split manifest or checkpoint is missing or damaged."""

    exit_code = 65  # EX_DATAERR


#: Exit codes after which a restart would fail the same way (for systemd).
NO_RESTART_EXIT_CODES = (DependencyError.exit_code, ConfigError.exit_code, ModelError.exit_code,
                         CalibrationError.exit_code)
