"""device.notify against a fake NOTIFY_SOCKET: a real AF_UNIX datagram socket bound in a temp dir."""

from __future__ import annotations

import logging
import os
import socket

import pytest

from helpers import bind_notify_socket, received
from device.notify import Notifier, watchdog_interval_s


@pytest.fixture
def notify_socket(tmp_path):
    """(path, receiving socket)."""
    path, sock = bind_notify_socket(tmp_path)
    yield path, sock
    sock.close()



class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_no_socket_is_a_silent_no_op():
    notifier = Notifier(environ={})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.status("x") is False
    assert notifier.sent == 0


def test_ready_once_then_watchdog_pings_only_when_called(notify_socket):
    path, sock = notify_socket
    clock = FakeClock()
    notifier = Notifier(environ={"NOTIFY_SOCKET": path}, clock=clock)
    assert notifier.ready(status="sorting")
    for _ in range(3):  # the loop made progress three times
        clock.now += 5
        assert notifier.watchdog()
    messages = received(sock)
    assert messages[0] == "READY=1\nSTATUS=sorting"
    assert sum("READY=1" in m for m in messages) == 1
    assert messages[1:] == ["WATCHDOG=1"] * 3
    # the loop is stuck: 100 s pass without watchdog(); other notifications (a status line) still
    # go out, and none of them pings or moves the watchdog time
    clock.now += 100
    assert notifier.status("waiting for the camera")
    assert notifier.watchdog_if_due(None) is False  # the watchdog is off: no ping, however late
    assert received(sock) == ["STATUS=waiting for the camera"]
    assert notifier.last_watchdog_at == 15
    assert notifier.watchdog()  # progress again: one ping, stamped now
    assert received(sock) == ["WATCHDOG=1"] and notifier.last_watchdog_at == 115


def test_watchdog_if_due_paces_pings(notify_socket):
    path, sock = notify_socket
    clock = FakeClock()
    notifier = Notifier(path, clock=clock)
    sent = []
    for _ in range(10):  # 10 loop iterations, 1 s apart, interval 3 s
        sent.append(notifier.watchdog_if_due(3.0))
        clock.now += 1
    assert sent.count(True) == 4  # t = 0, 3, 6, 9
    assert received(sock) == ["WATCHDOG=1"] * 4
    assert notifier.watchdog_if_due(None) is False


def test_status_stopping_reloading(notify_socket):
    path, sock = notify_socket
    notifier = Notifier(path)
    notifier.status("sorting\n12 items")
    notifier.stopping()
    notifier.reloading()
    messages = received(sock)
    assert messages[0] == "STATUS=sorting 12 items"
    assert messages[1] == "STOPPING=1"
    assert messages[2].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert int(messages[2].rsplit("=", 1)[1]) > 0


def test_abstract_socket():
    name = f"waste-sorter-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.setblocking(False)
    try:
        assert Notifier(environ={"NOTIFY_SOCKET": "@" + name}).ready()
        assert received(sock) == ["READY=1"]
    finally:
        sock.close()


def test_send_errors_never_raise_and_log_once(tmp_path, caplog):
    notifier = Notifier(str(tmp_path / "nobody-listens.sock"))
    with caplog.at_level(logging.WARNING, logger="device.notify"):
        assert notifier.ready() is False
        assert notifier.watchdog() is False
        assert notifier.watchdog() is False
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_unsupported_socket_kind_is_disabled():
    assert not Notifier(environ={"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "junk"}, None),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
])
def test_watchdog_interval(env, expected):
    assert watchdog_interval_s(env) == expected


def test_watchdog_interval_for_this_process():
    assert watchdog_interval_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}) == 1.0
