"""The ``[mqtt]`` section: where ``waste-sorter mqtt`` publishes and how it logs in.

Only values and their checks live here (no paho import): the sorter reads the same config file
and must not gain a dependency for the publisher. The password is never in the config, only
the path of a file that holds it; :func:`read_password` refuses a file other users may read,
and :class:`BrokerSettings` keeps it out of its ``repr`` so it cannot reach a log line.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from device.errors import ConfigError
from device.safe_open import open_regular, show_path
from device.schema import spec

TOPIC_WORD = r"[A-Za-z0-9._-]+"
MAX_PASSWORD_BYTES = 4096


@dataclass(frozen=True)
class MqttConfig:
    """``[mqtt]`` of the config file (device/config.example.toml shows each key)."""

    host: str = spec("", max_len=253)  # "" = no broker: `waste-sorter mqtt` refuses to start
    port: int | None = spec(None, range=(1, 65535))  # None: 8883 with TLS, else 1883
    tls: bool = False  # TLS with the system's CAs (or ca_file, which implies it)
    ca_file: str = ""  # PEM CA certificate(s) the broker's certificate must chain to
    cert_file: str = ""  # client certificate (PEM), with key_file
    key_file: str = ""
    username: str = spec("", max_len=256)
    password_file: str = ""  # the password alone in a file only the service may read (mode 0600)
    client_id: str = spec("", pattern=r"[A-Za-z0-9._:-]*", max_len=128)  # "" = waste-sorter-<device id>
    prefix: str = spec("waste-sorter", pattern=rf"{TOPIC_WORD}(/{TOPIC_WORD})*", max_len=128)
    device_id: str = spec("", pattern=r"[A-Za-z0-9._-]*", max_len=64)  # "" = [device] id, else the host name
    keepalive_s: int = spec(60, range=(5, 3600))
    discovery: bool = True  # Home Assistant discovery messages (retained)
    discovery_prefix: str = spec("homeassistant", pattern=rf"{TOPIC_WORD}(/{TOPIC_WORD})*", max_len=128)
    position_file: str = "/var/lib/waste-sorter-mqtt/position.json"  # how far the log was delivered
    max_in_flight: int = spec(100, range=(1, 10_000))  # records sent and not yet acknowledged
    reconnect_min_s: float = spec(1.0, range=(0.05, 60))  # first wait after a failed connection; doubles
    reconnect_max_s: float = spec(60.0, range=(0.1, 3600))  # ... up to this


def check_mqtt(config: MqttConfig) -> None:
    """The checks across ``[mqtt]`` keys (ConfigError naming the key)."""
    if bool(config.cert_file) != bool(config.key_file):
        given, missing = ("cert_file", "key_file") if config.cert_file else ("key_file", "cert_file")
        raise ConfigError(f"mqtt.{missing}: needed with mqtt.{given} (a client certificate and its key)")
    if config.password_file and not config.username:
        raise ConfigError("mqtt.password_file: needs mqtt.username")
    if config.reconnect_min_s > config.reconnect_max_s:
        raise ConfigError(f"mqtt.reconnect_min_s: {config.reconnect_min_s} must be at most "
                          f"mqtt.reconnect_max_s ({config.reconnect_max_s})")


def uses_tls(config: MqttConfig) -> bool:
    return config.tls or bool(config.ca_file or config.cert_file)


def read_password(path: str) -> str:
    """The password in ``path`` (its first line): ConfigError (one line) when the file is not a
    regular file, cannot be read, is empty, or may be read by users other than its owner."""
    fh = open_regular(path, what="mqtt.password_file", error=ConfigError)
    with fh:
        mode = os.fstat(fh.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"mqtt.password_file: {show_path(path)} may be read by others "
                              f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it")
        data = fh.read(MAX_PASSWORD_BYTES + 1)
    if len(data) > MAX_PASSWORD_BYTES:
        raise ConfigError(f"mqtt.password_file: {show_path(path)} is longer than a password")
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(f"mqtt.password_file: {show_path(path)} is not UTF-8 text") from None
    if not lines or not lines[0]:
        raise ConfigError(f"mqtt.password_file: {show_path(path)} is empty")
    return lines[0]


@dataclass(frozen=True)
class BrokerSettings:
    """What the client needs to reach the broker, resolved from :class:`MqttConfig`."""

    host: str
    port: int
    tls: bool
    ca_file: str
    cert_file: str
    key_file: str
    username: str
    password: str = field(repr=False)  # never shown: repr() leaves it out
    client_id: str
    keepalive_s: int

    @property
    def name(self) -> str:
        """``host:port``, how messages name the broker."""
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        """One line for --check-config and the journal: no password, only whether there is one."""
        login = f"user {self.username}" + (" with a password" if self.password else "") if self.username \
            else "anonymous"
        tls = "TLS" + (f" (CA {self.ca_file})" if self.ca_file else " (system CAs)") if self.tls else "no TLS"
        cert = f", client certificate {self.cert_file}" if self.cert_file else ""
        return f"broker {self.name}, {tls}{cert}, {login}, client id {self.client_id}"


def broker_settings(config: MqttConfig, device: str) -> BrokerSettings:
    """The broker to use (ConfigError without a host, or for an unreadable password file)."""
    if not config.host:
        raise ConfigError("mqtt.host: no broker configured (set [mqtt] host in the config file)")
    tls = uses_tls(config)
    password = read_password(config.password_file) if config.password_file else ""
    return BrokerSettings(host=config.host, port=config.port or (8883 if tls else 1883), tls=tls,
                          ca_file=config.ca_file, cert_file=config.cert_file, key_file=config.key_file,
                          username=config.username, password=password,
                          client_id=config.client_id or f"waste-sorter-{device}", keepalive_s=config.keepalive_s)
