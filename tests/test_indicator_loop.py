"""The indicator driven by the whole loop (issue 20's "done when"): a scripted scene through real
OpenCV video, onnxruntime and gpiozero MockFactory pins, recorded frame by frame.

- the ready light is on only while the board is empty and armed, and blinks from each item's
  arrival to its decision;
- at each item's record, the lit bin light is the record's bin (the buzzer beeps for the
  fallback decision);
- every light is off within 100 ms of a real SIGTERM, and after a crash.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from device.actuators import BinActuators
from device.camera import CameraBase, open_camera
from device.camera.opencv import VideoFileCamera
from device.classifier import Classifier
from device.config import load_config
from device.commands.demo_scene import SceneItem, Timing, make_board, render
from device.errors import CameraError
from device.indicator import Indicator
from device.loop import Sorter
from device.sortlog import SortLog, read_records

from helpers import BLUE, CONFIG, GREEN, RED, BlockingCamera, item_on

READY, BUZZER = 5, 6
LIGHTS = {"paper": 20, "glass": 21, "landfill": 22, "metal": 23}
FPS = 10


def indicator_config(*, blink_ms: float = 200, show_ms: float = 3000) -> str:
    """The scripted scenes' configuration with an indicator: a ready light, a buzzer and a light
    at every bin."""
    text = CONFIG + (f"[indicator]\nready_pin = {READY}\nbuzzer_pin = {BUZZER}\nblink_ms = {blink_ms}\n"
                     f"show_ms = {show_ms}\n")
    for name, pin in LIGHTS.items():
        text = text.replace(f"[bins.{name}]\n", f"[bins.{name}]\nlight_pin = {pin}\n")
    return text


class TimedPin(MockPWMPin):
    """A mock pin that also notes the monotonic time of each change (to time a signal's effect)."""

    def _change_state(self, value):
        changed = super()._change_state(value)
        if changed:
            self.changed_at = time.monotonic()
        return changed


def lit(factory) -> set[str]:
    """The indicator outputs that are on."""
    outputs = {"ready": READY, "buzzer": BUZZER, **LIGHTS}
    return {name for name, pin in outputs.items() if factory.pin(pin).state}


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Like test_loop_scene's: red (-> paper), green (-> glass), an overexposed blue item (-> the
    fallback bin, landfill), a light change, green with glare (-> glass), blue (-> metal)."""
    folder = tmp_path_factory.mktemp("scene")
    board = make_board(seed=1)
    items = [SceneItem(item_on(board, RED), "cardboard"), SceneItem(item_on(board, GREEN), "glass"),
             SceneItem(item_on(board, BLUE), "metal", "overexposed"),
             SceneItem(item_on(board, GREEN), "glass", "glare"), SceneItem(item_on(board, BLUE), "metal")]
    truth = render(items, folder / "scene.mp4", board=board, timing=Timing(fps=FPS), light_change_after=3, seed=1)
    return folder / "scene.mp4", truth


class RecordingCamera(CameraBase):
    """The scene's frames; at every capture, what the previous frame left: (frame time, the
    loop's state, records so far, outputs lit)."""

    def __init__(self, inner, factory):
        self.inner, self.factory = inner, factory
        self.sorter: Sorter | None = None
        self.timeline: list[tuple[float, str, int, set[str]]] = []
        self._last_t: float | None = None

    def capture(self):
        if self._last_t is not None:
            self.timeline.append((self._last_t, self.sorter.state, self.sorter.summary.items, lit(self.factory)))
        frame = self.inner.capture()
        self._last_t = None if frame is None else frame.timestamp_s
        return frame

    def close(self) -> None:
        self.inner.close()


def run_scene(scene_path: Path, config_path: Path, model_path: Path, log_path: Path):
    config = load_config(config_path)
    factory = MockFactory(pin_class=MockPWMPin)
    with RecordingCamera(open_camera(str(scene_path)), factory) as camera, \
            BinActuators(config.actuators, config.bins, pin_factory=factory) as actuators, \
            Indicator(config.indicator, config.bins, pin_factory=factory) as indicator, \
            SortLog(log_path) as sortlog:
        sorter = Sorter(config, camera=camera, classifier=Classifier(model_path), actuators=actuators,
                        sortlog=sortlog, indicator=indicator)
        camera.sorter = sorter
        sorter.run()
        after_run = lit(factory)
    return camera.timeline, list(read_records(log_path)), after_run, list(indicator.history)


@pytest.fixture(scope="module")
def scene_run(scene, tmp_path_factory, colour_model_path_module):
    folder = tmp_path_factory.mktemp("run")
    config_path = folder / "config.toml"
    config_path.write_text(indicator_config())
    return run_scene(scene[0], config_path, colour_model_path_module, folder / "sort.jsonl")


@pytest.fixture(scope="module")
def colour_model_path_module(tmp_path_factory) -> Path:
    from helpers import colour_contract, colour_model
    from export.package import save_model

    path = tmp_path_factory.mktemp("model") / "colour.onnx"
    save_model(colour_model(), path, colour_contract())
    return path


def item_stretches(timeline) -> list[tuple[int, int]]:
    """(first frame, deciding frame) of each item: from the frame its arrival shows (the board
    leaves "empty" for an item state) to the frame its record appears."""
    stretches, start = [], None
    for k, (_t, state, records, _lit) in enumerate(timeline):
        previous = timeline[k - 1] if k else None
        if start is None and state in ("occupied", "deciding") and (previous is None or previous[1] == "empty"):
            start = k
        if start is not None and previous is not None and records > previous[2]:
            stretches.append((start, k))
            start = None
    return stretches


def test_ready_light_is_on_only_when_the_board_is_empty_and_armed_and_blinks_until_the_decision(scene_run):
    timeline, records, _after, _history = scene_run
    stretches = item_stretches(timeline)
    deciding = {k for start, end in stretches for k in range(start, end)}
    assert len(records) == 5 and len(stretches) == 5  # every item arrives on an empty, armed board
    for k, (t, state, _records, on) in enumerate(timeline):
        if state == "empty":
            assert "ready" in on, f"{t:.1f} s: empty and armed, the ready light is off"
        elif k not in deciding:
            assert "ready" not in on, f"{t:.1f} s: {state}, not deciding, yet the ready light is on"
    for start, end in stretches:
        seen = [("ready" in timeline[k][3]) for k in range(start, end)]
        assert seen[0], "a blink starts with the light on"
        if len(seen) >= 4:  # 200 ms on, 200 ms off at 10 fps
            assert True in seen and False in seen
        _t, state, _records, on = timeline[end]
        assert "ready" not in on or state == "empty"  # decided: off until the board is empty again (an
        # item decided as it left, like the overexposed one, leaves an empty, armed board at once)


def test_the_lit_bin_light_is_the_records_bin_for_every_item(scene_run):
    timeline, records, after_run, history = scene_run
    at_record = {}
    for k, (_t, _state, count, on) in enumerate(timeline):
        if k and count > timeline[k - 1][2]:
            at_record[count] = on
    assert sorted(at_record) == [r["item"] for r in records] == [1, 2, 3, 4, 5]
    for record in records:
        on = at_record[record["item"]]
        assert on & set(LIGHTS) == {record["bin"]}, record
        fallback = record["bin"] == "landfill" and bool(record["reason"])
        assert ("buzzer" in on) == fallback, record
    assert after_run == set()  # the run ended: every light off
    assert history[-1][1].describe() == "ready light off (stopped), bin lights off, buzzer quiet"


def test_every_light_is_off_within_100_ms_of_sigterm(scene, colour_model_path_module, tmp_path):
    """SIGTERM while the loop waits for a frame, the ready light and a bin light on (and the
    buzzer): the handler, not the end of the loop, puts them all out."""
    config_path = tmp_path / "config.toml"
    config_path.write_text(indicator_config(show_ms=60_000))
    config = load_config(config_path)
    factory = MockFactory(pin_class=TimedPin)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        with BinActuators(config.actuators, config.bins, pin_factory=factory) as actuators, \
                Indicator(config.indicator, config.bins, pin_factory=factory) as indicator, \
                SortLog(tmp_path / "sort.jsonl") as sortlog:
            camera = BlockingCamera(VideoFileCamera(scene[0]), lambda: {"ready", "paper"} <= lit(factory))
            sorter = Sorter(config, camera=camera, classifier=Classifier(colour_model_path_module),
                            actuators=actuators, sortlog=sortlog, indicator=indicator)
            sorter.install_signal_handlers()
            seen: dict = {}

            def killer():
                assert camera.blocking.wait(20)
                indicator.routed("landfill", sorter.summary.source_seconds, fallback=True)  # the buzzer too
                seen["lit"] = lit(factory)
                seen["signal_at"] = time.monotonic()
                os.kill(os.getpid(), signal.SIGTERM)  # process-directed, as systemd sends it

            thread = threading.Thread(target=killer)
            thread.start()
            sorter.run()
            thread.join(5)
            outputs = [READY, BUZZER, *LIGHTS.values()]
            off_at = max(factory.pin(pin).changed_at for pin in outputs if hasattr(factory.pin(pin), "changed_at"))
            assert seen["lit"] == {"ready", "landfill", "buzzer"}
            assert lit(factory) == set() and indicator.stopping
            assert off_at - seen["signal_at"] < 0.1
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


class FailingCamera(CameraBase):
    """The scene's frames until the first record; then the camera fails (a crash of the run)."""

    def __init__(self, inner, sorter_of):
        self.inner, self.sorter_of = inner, sorter_of

    def capture(self):
        if self.sorter_of().summary.items >= 1:
            raise CameraError("camera: gone (test)")
        return self.inner.capture()

    def close(self) -> None:
        self.inner.close()


def test_every_light_is_off_after_a_crash(scene, colour_model_path_module, tmp_path):
    config_path = tmp_path / "config.toml"
    config_path.write_text(indicator_config(show_ms=60_000))
    config = load_config(config_path)
    factory = MockFactory(pin_class=MockPWMPin)
    with BinActuators(config.actuators, config.bins, pin_factory=factory) as actuators, \
            Indicator(config.indicator, config.bins, pin_factory=factory) as indicator, \
            SortLog(tmp_path / "sort.jsonl") as sortlog:
        holder: dict = {}
        camera = FailingCamera(VideoFileCamera(scene[0]), lambda: holder["sorter"])
        holder["sorter"] = sorter = Sorter(config, camera=camera, classifier=Classifier(colour_model_path_module),
                                           actuators=actuators, sortlog=sortlog, indicator=indicator)
        with pytest.raises(CameraError):
            sorter.run()
        assert lit(factory) == set() and indicator.stopping  # before close(): the loop's own way out
