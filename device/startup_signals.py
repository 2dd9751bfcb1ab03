"""Signals that arrive while ``waste-sorter run`` starts, before the sorter's own handlers exist.

Loading the model, opening the camera and setting up GPIO take seconds. Python's default
handlers would let a SIGHUP (``systemctl reload`` right after a start) kill the process, and a
SIGTERM end it without putting the actuators in their safe state. :class:`StartupSignals`
installs handlers that only take note, from the very start of the command; once the sorter's
handlers are installed, :meth:`StartupSignals.hand_over` raises the noted signals again, so the
sorter reacts to them as if they had come a moment later (SIGTERM: every actuator safe, the loop
ends before its first frame; SIGHUP: the calibration is reloaded between items).
"""

from __future__ import annotations

import logging
import signal
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
HANDLED = (*STOP_SIGNALS, signal.SIGHUP)


class StartupSignals:
    def __init__(self) -> None:
        self.stop_signal: int | None = None
        self.reload_requested = False
        self._saved: dict[int, Any] = {}

    def _note(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self.reload_requested = True
        elif self.stop_signal is None:
            self.stop_signal = signum

    def __enter__(self) -> "StartupSignals":
        for signum in HANDLED:
            self._saved[signum] = signal.signal(signum, self._note)
        return self

    def hand_over(self) -> None:
        """Raise the signals noted so far again: call it right after the sorter installed its
        own handlers. A stop signal wins over a reload."""
        if self.reload_requested and self.stop_signal is None:
            log.info("SIGHUP during start-up: reloading the calibration between items")
            signal.raise_signal(signal.SIGHUP)
        if self.stop_signal is not None:
            log.info("%s during start-up: stopping", signal.Signals(self.stop_signal).name)
            signal.raise_signal(self.stop_signal)

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
