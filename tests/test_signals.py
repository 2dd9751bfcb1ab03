"""Real signals: SIGTERM while a bin is actuated and the camera blocks; SIGHUP reloads only between items.

In-process tests install the Sorter's own handlers and send real signals to this process (from a
thread while the main thread is blocked in a capture, as on the device); the original handlers
are restored afterwards. One test runs ``waste-sorter run`` as a real subprocess.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from device.calibration_file.store import load_with_board, save_calibration
from device.actuators import BinActuators
from device.camera.opencv import VideoFileCamera
from device.classifier import Classifier
from device.commands.demo_scene import Timing, make_board
from device.gate import board_stats
from device.loop import Sorter
from device.sortlog import SortLog, read_records
from helpers import CONFIG, BlockingCamera, make_calibration

BOARD = make_board(seed=1)


@pytest.fixture
def scene(two_item_scene):
    return two_item_scene


@pytest.fixture
def config(scene_config):
    return scene_config


def sigterm_while_blocked(scene_path, config, model_path, log_path, *, release_after_signal: bool):
    factory = MockFactory(pin_class=MockPWMPin)
    with BinActuators(config.actuators, config.bins, pin_factory=factory) as act, SortLog(log_path) as sortlog:
        diverter, flap = act.devices["diverter"], act.devices["flap"]
        camera = BlockingCamera(VideoFileCamera(scene_path), lambda: act.busy)
        sorter = Sorter(config, camera=camera, classifier=Classifier(model_path), actuators=act, sortlog=sortlog)
        sorter.install_signal_handlers()
        seen: dict = {}

        def killer():
            assert camera.blocking.wait(20)
            act.actuate("metal", sorter.summary.source_seconds)  # the pulse output is on too
            seen.update(angle=diverter.angle, flap=flap.value, frames=sorter.summary.frames)
            seen["signal_at"] = time.monotonic()
            os.kill(os.getpid(), signal.SIGTERM)  # process-directed, as systemd sends it
            while (diverter.angle != 0 or flap.value) and time.monotonic() - seen["signal_at"] < 2:
                time.sleep(0.001)  # bounded wait for the handler, which runs in the main thread
            seen["safe_at"] = time.monotonic()
            if release_after_signal:
                camera.release.set()

        thread = threading.Thread(target=killer)
        thread.start()
        summary = sorter.run()
        returned_at = time.monotonic()
        thread.join(5)
        state = {"angle": diverter.angle, "flap": flap.value}
    return sorter, summary, seen, returned_at, state


@pytest.mark.parametrize("release_after_signal", [False, True], ids=["capture-times-out", "frame-after-signal"])
def test_sigterm_during_actuation_makes_pins_safe_at_once_and_run_returns(
        scene, config, colour_model_path, tmp_path, own_signal_handlers, release_after_signal):
    sorter, summary, seen, returned_at, state = sigterm_while_blocked(
        scene[0], config, colour_model_path, tmp_path / "sort.jsonl", release_after_signal=release_after_signal)
    assert seen["angle"] == pytest.approx(-60, abs=0.5) and seen["flap"] == 1  # actuated when the signal came
    assert seen["safe_at"] - seen["signal_at"] < 0.1  # the handler, not the end of the loop, made them safe
    assert returned_at - seen["signal_at"] < 1.0 + 0.5  # at the latest when the blocked capture gives up
    assert sorter.stop_signal == signal.SIGTERM and sorter.state == "stopped"
    assert summary.frames == seen["frames"]  # a frame arriving after the signal is not processed
    assert summary.items == 1 and state == {"angle": 0, "flap": 0}


def test_sighup_reloads_only_when_the_board_is_empty(scene, config, colour_model_path, tmp_path,
                                                     own_signal_handlers):
    calibration = replace(make_calibration("cal-1"), board=board_stats(BOARD), image_size=(512, 384))
    cal_path = save_calibration(tmp_path / "calibration.json", calibration, BOARD)
    loads = []

    def loader():
        loads.append(sorter.presence.state.value)
        return load_with_board(cal_path)

    with BinActuators(config.actuators, config.bins, pin_factory=MockFactory(pin_class=MockPWMPin)) as act, \
            SortLog(tmp_path / "sort.jsonl") as sortlog, VideoFileCamera(scene[0]) as camera:
        sorter = Sorter(config, camera=camera, classifier=Classifier(colour_model_path), actuators=act,
                        sortlog=sortlog, calibration_loader=loader)
        sorter.install_signal_handlers()
        states, hup_frame, reloaded_frame = [], None, None
        while (frame := camera.capture()) is not None:
            sorter.step(frame.image, frame.timestamp_s)
            states.append(sorter.state)
            if sorter.state == "occupied" and not loads and hup_frame is None:
                os.kill(os.getpid(), signal.SIGHUP)
                assert not loads and sorter.calibration_id == ""  # not with the item on the board
                hup_frame = len(states)
            if loads and reloaded_frame is None:
                reloaded_frame = len(states)
    assert loads == ["empty"]  # once, and with the board empty
    assert sorter.calibration_id == "cal-1"
    assert "settled" in states[hup_frame:reloaded_frame] and states[reloaded_frame - 1] == "empty"
    assert [r["calibration_id"] for r in read_records(tmp_path / "sort.jsonl")] == ["", "cal-1"]


def test_sigterm_ends_the_run_command_with_exit_0(scene, colour_model_path, tmp_path):
    folder = tmp_path if len(str(tmp_path)) < 80 else Path(tempfile.mkdtemp(prefix="sig"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(folder / "notify.sock"))
    sock.settimeout(30)
    config_path = tmp_path / "config.toml"
    config_path.write_text(CONFIG)
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock", "NOTIFY_SOCKET": str(folder / "notify.sock")}
    env.pop("WATCHDOG_USEC", None)
    cmd = [sys.executable, "-m", "device.cli", "run", "--config", str(config_path), "--source", str(scene[0]),
           "--model", str(colour_model_path), "--log", str(tmp_path / "sort.jsonl")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        messages = []
        while not any(m.startswith("READY=1") for m in messages):
            messages.append(sock.recv(4096).decode())  # bounded by the socket timeout
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.settimeout(1)
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except (TimeoutError, socket.timeout):
                break
        sock.close()
    assert proc.returncode == 0, err
    assert messages[-1] == "STOPPING=1"
    frames = int(out.split(" frames")[0].rsplit(" ", 1)[1])
    total = round((scene[1][-1]["leave_s"] + Timing().gap_s) * 10)
    assert 1 <= frames < total and "item(s)" in out  # stopped by the signal, not the end of the video
