"""systemd service notifications (``Type=notify``) over ``$NOTIFY_SOCKET``, standard library only.

The sorting loop calls :meth:`Notifier.ready` once it sorts, and :meth:`Notifier.watchdog` only
while it makes progress, so a hung camera or model stops the pings and systemd restarts the
service (``WatchdogSec=``). Outside systemd (``NOTIFY_SOCKET`` unset) every call is a no-op.
A failed send is logged (once) and never raised: notifications must not stop the sorting.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable, Mapping

log = logging.getLogger(__name__)


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """How often to ping: half of ``$WATCHDOG_USEC``; None when the watchdog is off.

    ``$WATCHDOG_PID``, when set, must be this process (systemd sets it for the main process).
    """
    env = os.environ if environ is None else environ
    raw = env.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return usec / 2 / 1_000_000


def _address(raw: str) -> str | bytes | None:
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()  # abstract namespace socket
    if raw.startswith("/"):
        return raw
    return None  # vsock and other transports are not supported


class Notifier:
    """Sends ``sd_notify`` messages; a no-op when ``NOTIFY_SOCKET`` is unset."""

    def __init__(self, socket_path: str | None = None, *,
                 environ: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "") if socket_path is None else socket_path
        self._address = _address(raw) if raw else None
        if raw and self._address is None:
            log.warning("NOTIFY_SOCKET=%r not supported; systemd notifications are off", raw)
        self._clock = clock
        self._sock: socket.socket | None = None
        self._failed = False
        self.sent = 0
        self.last_watchdog_at: float | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        """One keep-alive ping; call it only after the loop made progress."""
        self.last_watchdog_at = self._clock()
        return self.send("WATCHDOG=1")

    def watchdog_if_due(self, interval_s: float | None) -> bool:
        """Ping unless the last ping is younger than ``interval_s`` (None: watchdog off)."""
        if interval_s is None or self._address is None:
            return False
        now = self._clock()
        if self.last_watchdog_at is not None and now - self.last_watchdog_at < interval_s:
            return False
        return self.watchdog()

    def status(self, text: str) -> bool:
        return self.send("STATUS=" + text.replace("\n", " "))

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        """Announce a reload (SIGHUP); call :meth:`ready` when it is done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def send(self, message: str) -> bool:
        """True if the message went out; False when disabled or the send failed."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._failed:
                log.warning("systemd notification failed (%s); will keep trying quietly", exc)
            self._failed = True
            self.close()
            return False
        if self._failed:
            log.info("systemd notifications work again")
            self._failed = False
        self.sent += 1
        return True

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def __enter__(self) -> "Notifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
