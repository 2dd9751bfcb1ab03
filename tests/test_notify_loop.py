"""The loop's systemd wiring over a real AF_UNIX datagram NOTIFY_SOCKET (test_notify.py covers Notifier).

READY=1 once, after the first frame; WATCHDOG=1 paced by $WATCHDOG_USEC while frames flow; no
ping while the camera stalls; STOPPING=1 at the end, also when the camera fails. The camera is a
small class implementing the project's Camera protocol: it delivers board frames, advances the
clock the Notifier paces pings with (1/8 s per frame, exact in binary), can stall (its clock jumps,
as during a capture that blocks), and notes every datagram received so far before each capture,
with the clock time it was sent at, so the order of frames and messages is exact (the loop is
single-threaded, only a capture moves the clock, and AF_UNIX datagrams arrive at send).
"""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from device.actuators import BinActuators
from device.camera import CameraBase, Frame
from device.classifier import Classifier
from device.config import Config
from device.commands.demo_scene import make_board
from device.errors import CameraError
from device.loop import Sorter
from device.notify import Notifier
from device.sortlog import SortLog

from helpers import bind_notify_socket, received

READY = "READY=1\nSTATUS=sorting"  # the loop is ready and says it sorts
FRAME_S = 0.125
BOARD = make_board(size=(128, 96), seed=2)


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path, sock = bind_notify_socket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # ping every 1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()



class ScriptedCamera(CameraBase):
    """``frames`` board frames; before frame ``stall_at`` its clock jumps ``stall_clock_s`` (a
    capture that blocked that long), then it delivers (or raises, ``fail=True``)."""

    def __init__(self, sock, frames: int, stall_at: int | None = None, stall_clock_s: float = 10.0,
                 fail: bool = False):
        self.sock, self.frames, self.stall_at, self.fail = sock, frames, stall_at, fail
        self.stall_clock_s = stall_clock_s
        self.now, self.index, self.events = 0.0, 0, []
        self.ping_times: list[float] = []  # the clock when each WATCHDOG=1 was sent

    def clock(self) -> float:
        return self.now

    def drain(self) -> None:
        """Note what the loop sent since the last capture (sent at ``now``: only captures move it)."""
        for message in received(self.sock):
            self.events.append(message)
            if message == "WATCHDOG=1":
                self.ping_times.append(self.now)

    def capture(self) -> Frame | None:
        self.drain()
        if self.index == self.stall_at:
            self.events.append("<stall>")
            self.now += self.stall_clock_s
            self.events.append("</stall>")
            if self.fail:
                raise CameraError("scripted: camera stopped delivering frames")
        if self.index >= self.frames:
            return None
        self.events.append(f"frame {self.index}")
        frame = Frame(BOARD, self.index * FRAME_S, self.index)
        self.index += 1
        self.now += FRAME_S
        return frame

    def close(self) -> None:
        pass


def run_loop(camera, colour_model_path, tmp_path) -> list[str]:
    config = Config()
    with BinActuators(config.actuators, config.bins, pin_factory=MockFactory(pin_class=MockPWMPin)) as act, \
            SortLog(tmp_path / "sort.jsonl") as sortlog, Notifier(clock=camera.clock) as notifier:
        sorter = Sorter(config, camera=camera, classifier=Classifier(colour_model_path), actuators=act,
                        sortlog=sortlog, notifier=notifier)
        try:
            sorter.run()
        finally:
            camera.drain()
    return camera.events


def pings_between(events, start: str, end: str) -> int:
    return events[events.index(start):events.index(end)].count("WATCHDOG=1")


def test_ready_once_watchdog_while_frames_flow_none_while_stalled(notify_socket, colour_model_path, tmp_path):
    camera = ScriptedCamera(notify_socket, frames=48, stall_at=24)
    events = run_loop(camera, colour_model_path, tmp_path)

    assert events[0] == "STATUS=starting" and events[1] == "frame 0"
    assert events.count(READY) == 1 and events.index(READY) == 2  # after the first frame
    assert events[3] == "WATCHDOG=1"  # first ping with the first frame
    # 1/8 s per frame, a ping at most every 1 s: frames 0, 8, 16 before the stall
    assert pings_between(events, "frame 0", "<stall>") == 3
    # systemd's view: a ping 1 s after each ping while frames flow, then none for the 10 s stall
    # (frame k is delivered at (k + 1) / 8 s; the stall comes before frame 24)
    assert camera.ping_times == [0.125, 1.125, 2.125, 13.125, 14.125, 15.125]
    # right after the stall (10 s without a ping) the first frame pings, then frames 32 and 40
    assert events[events.index("frame 24") + 1] == "WATCHDOG=1"
    assert pings_between(events, "</stall>", "STOPPING=1") == 3
    assert events[-1] == "STOPPING=1" and events.count("STOPPING=1") == 1
    assert all(m in ("STATUS=starting", READY, "WATCHDOG=1", "STOPPING=1", "<stall>", "</stall>")
               or m.startswith("frame ") for m in events)


def test_no_ping_before_the_first_frame(notify_socket, colour_model_path, tmp_path):
    events = run_loop(ScriptedCamera(notify_socket, frames=3, stall_at=0), colour_model_path, tmp_path)
    assert events[:3] == ["STATUS=starting", "<stall>", "</stall>"]  # no READY, no ping while waiting
    assert events[3:] == ["frame 0", READY, "WATCHDOG=1", "frame 1", "frame 2", "STOPPING=1"]


def test_camera_failure_sends_stopping(notify_socket, colour_model_path, tmp_path):
    camera = ScriptedCamera(notify_socket, frames=20, stall_at=10, fail=True)
    with pytest.raises(CameraError):
        run_loop(camera, colour_model_path, tmp_path)
    events = camera.events
    assert events.count(READY) == 1 and pings_between(events, "frame 0", "<stall>") == 2
    assert events[events.index("<stall>"):] == ["<stall>", "</stall>", "STOPPING=1"]


def test_watchdog_off_without_watchdog_usec(notify_socket, colour_model_path, tmp_path, monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC")
    events = run_loop(ScriptedCamera(notify_socket, frames=20), colour_model_path, tmp_path)
    assert "WATCHDOG=1" not in events
    assert events.count(READY) == 1 and events[-1] == "STOPPING=1"
