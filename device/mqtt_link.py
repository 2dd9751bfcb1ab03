"""The connection to the broker: a paho-mqtt client driven from the publisher's one thread.

It connects, and after a failure or a lost connection waits ``reconnect_min_s``, doubling up to
``reconnect_max_s``, before the next try. Each problem is one line in the journal naming the
broker and what went wrong (an unknown host, a refused connection, a refused TLS certificate,
a wrong password), logged once while it lasts, never a traceback. The last will is ``offline``
on the availability topic (retained); :meth:`BrokerLink.close` says ``offline`` itself.
Messages not acknowledged when the connection drops are sent again by paho after it is back.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from device.errors import ConfigError, SorterError, first_line
from device.mqtt_config import BrokerSettings
from device.mqtt_topics import OFFLINE

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
EXTRA_IN_FLIGHT = 20  # retained status, stats and discovery messages beside the records


class BrokerError(SorterError):
    """The broker could not be reached in time by a command that needs it now (``--forget``,
    ``fleet``); the publisher itself never gives up."""

    exit_code = 69  # EX_UNAVAILABLE


class BrokerLink:
    def __init__(self, settings: BrokerSettings, *, will_topic: str | None, max_in_flight: int = 100,
                 reconnect_min_s: float = 1.0, reconnect_max_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        self.reconnect_min_s, self.reconnect_max_s = reconnect_min_s, reconnect_max_s
        self._clock, self._sleep = clock, sleep
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                                  protocol=mqtt.MQTTv311, clean_session=True)
        self.client.connect_timeout = CONNECT_TIMEOUT_S
        if settings.username:
            self.client.username_pw_set(settings.username, settings.password or None)
        if settings.tls:
            self._set_tls()
        if will_topic:
            self.client.will_set(will_topic, OFFLINE, qos=1, retain=True)
        self.client.max_inflight_messages_set(max_in_flight + EXTRA_IN_FLIGHT)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.connect_async(settings.host, settings.port, settings.keepalive_s)
        self.connected = False  # the broker accepted the connection (CONNACK)
        self.connects = 0  # connections accepted so far
        self.just_connected = False  # set at each accepted connection; the publisher clears it
        self.acked: list[int] = []  # message ids the broker acknowledged, for the publisher to take
        self._open = False  # a socket is open (connected, or waiting for the CONNACK)
        self._next_try_s = 0.0
        self._delay_s = reconnect_min_s
        self._problem: str | None = None  # the problem logged last (logged again only when it changes)

    def _set_tls(self) -> None:
        s = self.settings
        try:
            self.client.tls_set(ca_certs=s.ca_file or None, certfile=s.cert_file or None, keyfile=s.key_file or None)
        except FileNotFoundError as exc:
            raise ConfigError(f"mqtt: TLS file {exc.filename or ''} not found (ca_file, cert_file, key_file)") from None
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"mqtt: TLS files unusable ({first_line(exc)}) (ca_file, cert_file, key_file)") from None

    @property
    def problem(self) -> str | None:
        """What went wrong at the last try (None once connected)."""
        return self._problem

    # ------------------------------------------------------------ driving

    def poll(self, timeout_s: float) -> None:
        """Connect when due, then read and write the socket for up to ``timeout_s``."""
        if not self._open:
            wait_s = self._next_try_s - self._clock()
            if wait_s > 0:
                self._sleep(min(timeout_s, wait_s))
                return
            self._try_connect()
            if not self._open:
                return
        rc = self.client.loop(timeout=timeout_s)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and self._open:
            self._closed(f"connection lost ({mqtt.error_string(rc)})")

    def _try_connect(self) -> None:
        try:
            self.client.reconnect()
        except (OSError, ssl.SSLError, ValueError) as exc:  # ssl.SSLError is an OSError too
            self._failed(self._describe(exc))
            return
        self._open = True

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, socket.gaierror):
            return f"unknown host ({exc.strerror or first_line(exc)})"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"TLS certificate refused ({exc.verify_message or first_line(exc)})"
        if isinstance(exc, ssl.SSLError):
            return f"TLS handshake failed ({exc.reason or first_line(exc)})"
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused (is a broker listening there?)"
        if isinstance(exc, TimeoutError):
            return f"no answer within {CONNECT_TIMEOUT_S:g} s"
        if isinstance(exc, OSError):
            return exc.strerror or first_line(exc)
        return first_line(exc)

    def _failed(self, problem: str) -> None:
        """Schedule the next try; log ``problem`` unless it is the one logged last."""
        self._open = False
        self.connected = False
        if problem != self._problem:
            log.warning("broker %s: %s; retrying, waiting up to %g s between tries",
                        self.settings.name, problem, self.reconnect_max_s)
            self._problem = problem
        else:
            log.debug("broker %s: %s (again)", self.settings.name, problem)
        self._next_try_s = self._clock() + self._delay_s
        self._delay_s = min(self._delay_s * 2, self.reconnect_max_s)

    def _closed(self, problem: str) -> None:
        if self.connected:  # it worked until now: the first retry comes soon
            self._delay_s = self.reconnect_min_s
        self._open = self.connected = False
        try:
            self.client.disconnect()  # close the socket (no DISCONNECT reaches a broker that is gone)
        except (OSError, ValueError):
            pass
        self._failed(problem)

    # ------------------------------------------------------------ paho's callbacks (in poll)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._open = False  # the broker closes it; the socket is dropped below
            try:
                client.disconnect()
            except (OSError, ValueError):
                pass
            self._failed(f"refused the connection: {reason_code}")
            return
        self.connected = True
        self.connects += 1
        self.just_connected = True
        self._delay_s = self.reconnect_min_s
        log.info("connected to broker %s%s", self.settings.name,
                 "" if self._problem is None else f" (after: {self._problem})")
        self._problem = None

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected:
            self.connected = False
            self._open = False
            self._delay_s = self.reconnect_min_s
            self._failed(f"connection lost ({reason_code})")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self.acked.append(mid)

    # ------------------------------------------------------------ publishing

    def publish(self, topic: str, payload: str, *, retain: bool = False) -> int:
        """Send ``payload`` with QoS 1; its message id (the broker's acknowledgement shows up
        in :attr:`acked`). Sent again after a reconnect until acknowledged."""
        return self.client.publish(topic, payload, qos=1, retain=retain).mid

    def wait_connected(self, timeout_s: float) -> None:
        """Poll until the broker accepted the connection; BrokerError after ``timeout_s``."""
        until = self._clock() + timeout_s
        while not self.connected:
            if self._clock() >= until:
                raise BrokerError(f"broker {self.settings.name}: not connected within {timeout_s:g} s "
                                  f"({self._problem or 'no answer'})")
            self.poll(0.05)

    def wait_acked(self, mids: set[int], timeout_s: float) -> bool:
        """Poll until every message id in ``mids`` is acknowledged; whether they were in time."""
        until = self._clock() + timeout_s
        waiting = set(mids)
        while waiting and self._clock() < until:
            self.poll(0.05)
            waiting -= set(self.take_acked())
        return not waiting

    def take_acked(self) -> list[int]:
        acked, self.acked = self.acked, []
        return acked

    def close(self, *, say_offline: str | None = None, timeout_s: float = 2.0) -> None:
        """Disconnect; first, when connected, publish ``offline`` (retained) on ``say_offline``
        and wait up to ``timeout_s`` for it to be acknowledged (a clean disconnect sends no will)."""
        if self.connected and say_offline:
            info = self.client.publish(say_offline, OFFLINE, qos=1, retain=True)
            until = self._clock() + timeout_s
            while self.connected and not info.is_published() and self._clock() < until:
                self.poll(0.05)
        was_open, self._open, self.connected = self._open, False, False  # no "connection lost" for this one
        try:
            if was_open:
                self.client.disconnect()
                self.client.loop(timeout=0.1)
        except (OSError, ValueError):
            pass

    def __enter__(self) -> "BrokerLink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
