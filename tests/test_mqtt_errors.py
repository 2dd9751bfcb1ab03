"""A broker the publisher cannot use: a wrong password, a CA that did not sign the broker's
certificate, an unknown host. Each is one journal line naming the broker and the problem while
the publisher keeps trying (no traceback, no line per try); TLS with the right CA delivers."""

from __future__ import annotations

import time

from helpers import event
from mqtt_broker import PASSWORD, PublisherProcess, Subscriber, broker  # noqa: F401 - broker is a fixture

from device.sortlog import SortLog

DEVICE = "bin-1"
TRIES_S = 1.2  # at 0.1 s doubling to 0.5 s between tries: 4 or more tries


def problem_lines(pub: PublisherProcess) -> list[str]:
    pub.wait_for_line("WARNING device.mqtt_link: broker")  # started, and the first try failed
    time.sleep(TRIES_S)
    assert pub.process.poll() is None, "the publisher must keep trying"
    assert pub.terminate() == 0
    lines = pub.lines()
    assert not [line for line in lines if "Traceback" in line or "Error:" in line], lines
    return [line for line in lines if line.startswith("WARNING") and "broker" in line]


def test_wrong_password_is_one_line_and_never_shows_the_password(tmp_path, broker):
    pub = PublisherProcess(tmp_path, broker.config(device_id=DEVICE, password="not-the-password"))
    lines = problem_lines(pub)
    assert len(lines) == 1, pub.lines()
    assert f"broker 127.0.0.1:{broker.port}: refused the connection: Not authorized" in lines[0]
    assert "not-the-password" not in pub.journal.read_text()


def test_a_ca_that_did_not_sign_the_broker_is_one_line(tmp_path, broker):
    pub = PublisherProcess(tmp_path, broker.config(device_id=DEVICE, tls=True, ca=broker.other_ca))
    lines = problem_lines(pub)
    assert len(lines) == 1, pub.lines()
    assert f"broker 127.0.0.1:{broker.tls_port}: TLS certificate refused" in lines[0]
    assert "certificate" in lines[0].split("TLS certificate refused", 1)[1]  # OpenSSL's reason


def test_unknown_host_is_one_line(tmp_path, broker):
    config = broker.config(device_id=DEVICE).replace('host = "127.0.0.1"', 'host = "no-such-broker.invalid"')
    pub = PublisherProcess(tmp_path, config)
    lines = problem_lines(pub)
    assert len(lines) == 1 and "broker no-such-broker.invalid:" in lines[0] and "unknown host" in lines[0], pub.lines()


def test_tls_with_the_right_ca_delivers(tmp_path, broker):
    sub = Subscriber(broker, f"waste-sorter/{DEVICE}/record", clean=True)
    with SortLog(tmp_path / "sort.jsonl") as log:
        for item in (1, 2, 3):
            log.append(event(item))
    pub = PublisherProcess(tmp_path, broker.config(device_id=DEVICE, tls=True))
    sub.wait_for(lambda: [r["item"] for r in sub.records()] == [1, 2, 3], what="3 records over TLS")
    pub.terminate()
    sub.close()
    assert not [line for line in pub.lines() if line.startswith(("WARNING", "ERROR"))], pub.lines()


def test_a_password_file_others_may_read_is_refused_at_start(tmp_path, broker):
    config = broker.config(device_id=DEVICE)
    password_file = next(line.split('"')[1] for line in config.splitlines() if line.startswith("password_file"))
    (tmp_path / "pw").write_text(PASSWORD)
    (tmp_path / "pw").chmod(0o644)
    pub = PublisherProcess(tmp_path, config.replace(password_file, str(tmp_path / "pw")))
    assert pub.process.wait(timeout=20) == 78
    assert pub.lines()[-1] == (f"waste-sorter mqtt: error: mqtt.password_file: {tmp_path / 'pw'} may be read "
                               "by others (mode 0644); chmod 600 it")
