"""A real Mosquitto broker for the MQTT tests (Debian's ``mosquitto``; `make test` installs it):
on 127.0.0.1, a plain and a TLS listener on free ports, a password file made with
``mosquitto_passwd`` and certificates made here with ``cryptography`` (a CA, the broker's
certificate for 127.0.0.1 signed by it, and a second CA that signed nothing the broker has).
It can be started, killed (SIGKILL) and started again on the same ports; persistence keeps
the sessions it saved at a clean stop (a subscriber's) across a later kill. Also a subscriber
that records every message, and the fixtures of the tests (pytest finds them when a test
module imports them)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

USER, PASSWORD = "sorter", "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_ca(folder: Path, name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def make_server_cert(folder: Path, ca_key, ca_cert) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Mosquitto:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o755)
        self.port, self.tls_port = free_port(), free_port()
        ca_key, ca_cert = make_ca(self.folder, "ca")
        make_ca(self.folder, "other-ca")
        self.ca, self.other_ca = self.folder / "ca.pem", self.folder / "other-ca.pem"
        cert, key = make_server_cert(self.folder, ca_key, ca_cert)
        passwd = self.folder / "passwd"
        subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b", "-c", str(passwd),
                        USER, PASSWORD], check=True, capture_output=True, timeout=30)
        for path in (passwd, key):
            os.chmod(path, 0o644)  # mosquitto may run as its own user when started as root
        (self.folder / "data").mkdir(exist_ok=True)
        os.chmod(self.folder / "data", 0o777)
        lines = ["per_listener_settings false", "allow_anonymous false", f"password_file {passwd}",
                 "persistence true", f"persistence_location {self.folder / 'data'}/",
                 "set_tcp_nodelay true", "max_queued_messages 0", "log_type error", "log_type warning",
                 f"listener {self.port} 127.0.0.1", f"listener {self.tls_port} 127.0.0.1",
                 f"cafile {self.ca}", f"certfile {cert}", f"keyfile {key}"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to the mosquitto user, who cannot read pytest's folders
        self.conf = self.folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.log = open(self.folder / "mosquitto.log", "ab")
        self.process = subprocess.Popen([binary, "-c", str(self.conf)], stdout=self.log, stderr=subprocess.STDOUT)
        until = time.monotonic() + timeout_s
        while time.monotonic() < until:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {(self.folder / 'mosquitto.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start listening")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def config(self, *, tls: bool = False, password: str = PASSWORD, ca: Path | None = None, **mqtt) -> str:
        """An ``[mqtt]`` section for this broker (the password file written next to it, mode 0600)."""
        pw = self.folder / f"password-{abs(hash(password))}"
        pw.write_text(password + "\n")
        os.chmod(pw, 0o600)
        keys = {"host": "127.0.0.1", "port": self.tls_port if tls else self.port, "username": USER,
                "password_file": str(pw), "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, **mqtt}
        if tls:
            keys["ca_file"] = str(ca or self.ca)
        return "[mqtt]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())


class Subscriber:
    """A paho client (a persistent session: the broker keeps its messages while it is away)
    that records every message it gets: ``messages`` of (topic, payload text, retained)."""

    def __init__(self, broker: Mosquitto, topic: str, *, client_id: str = "test-subscriber", clean: bool = False):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, str, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        self.client.username_pw_set(USER, PASSWORD)
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(30), "no SUBACK"

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))

    def on(self, suffix: str) -> list[str]:
        with self.lock:
            return [payload for topic, payload, _ in self.messages if topic.endswith(suffix)]

    def records(self) -> list[dict]:
        return [json.loads(p) for p in self.on("/record")]

    def wait_for(self, check, timeout_s: float = 30.0, what: str = "messages") -> None:
        until = time.monotonic() + timeout_s
        while time.monotonic() < until:
            if check():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; got {len(self.messages)} message(s)")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def retained(broker: Mosquitto, topic: str, timeout_s: float = 2.0) -> dict[str, str]:
    """The retained messages on ``topic`` (a filter) now: topic -> payload."""
    sub = Subscriber(broker, topic, client_id=f"retained-{time.monotonic_ns()}", clean=True)
    try:
        count = -1
        while count != len(sub.messages):  # the broker sends what it retains right after the SUBACK
            count = len(sub.messages)
            time.sleep(0.3)
        with sub.lock:
            return {t: p for t, p, r in sub.messages if r}
    finally:
        sub.close()


@pytest.fixture
def broker(tmp_path):
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        if os.environ.get("CI"):
            pytest.fail("mosquitto is missing; `make test` installs it")
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    server = Mosquitto(tmp_path / "broker")
    server.start()
    yield server
    server.kill()


ROOT = Path(__file__).resolve().parents[1]


class PublisherProcess:
    """`waste-sorter mqtt` in its own process (so that it can be killed), with small intervals;
    its journal (stderr) in ``folder``/publisher-N.log."""

    count = 0

    def __init__(self, folder: Path, config_text: str, *extra: str, log: Path | None = None):
        PublisherProcess.count += 1
        self.folder = Path(folder)
        self.config = self.folder / "config.toml"
        self.config.write_text(config_text)
        self.log = log or self.folder / "sort.jsonl"
        self.status = self.folder / "status.json"
        self.journal = self.folder / f"publisher-{PublisherProcess.count}.log"
        argv = [sys.executable, "-m", "device.cli", "mqtt", "--config", str(self.config), "--log", str(self.log),
                "--status-file", str(self.status), "--poll-s", "0.05", "--status-interval-s", "0.1",
                "--stats-interval-s", "0.1", "--save-interval-s", "0.2", *extra]
        if "position_file" not in config_text and "--position-file" not in extra:  # never the service's
            argv += ["--position-file", str(self.folder / "position.json")]
        self.process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(self.journal, "wb"))

    def lines(self) -> list[str]:
        return self.journal.read_text().splitlines()

    def wait_for_line(self, text: str, timeout_s: float = 30.0) -> str:
        """The first journal line holding ``text``, once there (start-up is slow on a loaded machine)."""
        until = time.monotonic() + timeout_s
        while time.monotonic() < until:
            found = [line for line in self.lines() if text in line]
            if found:
                return found[0]
            assert self.process.poll() is None, self.lines()
            time.sleep(0.05)
        raise AssertionError(f"no line with {text!r} in {self.lines()}")

    def terminate(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=15)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=15)


def position_file(folder: Path) -> Path:
    return Path(folder) / "position.json"
