"""The sorter's latest frame for the web page (device/frame_preview.py): rate-limited by frame
time, drawn on, written atomically, never able to fail the sort; and the sorter's records are
the same with it on or off and with the web server running beside it or not."""

from __future__ import annotations

import logging
import threading
import urllib.request

import cv2
import numpy as np
import pytest

from device.commands.demo_scene import make_board
from device.frame_preview import FRAME_FILE, FramePreview
from device.gate import GateVerdict
from device.presence import PresenceDetector, PresenceSettings
from device.web.server import WebServer
from device.web.sources import Sources
from helpers import RED, colour_scene, item_on, sort_scene

ACCEPTED = GateVerdict(True, "", None)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return colour_scene(tmp_path_factory.mktemp("web-frame"), rounds=1)


def test_at_most_one_frame_per_interval_of_frame_time_and_a_new_source_at_once(tmp_path):
    board = make_board(seed=1)
    presence = PresenceDetector(PresenceSettings(), reference=board)
    preview = FramePreview(tmp_path / FRAME_FILE, interval_s=0.4)
    for i in range(21):  # 2 s at 10 fps
        preview.offer(item_on(board, RED), i / 10, ACCEPTED, presence, "settled")
    assert preview.written == 6  # 0, 0.4, ... 2.0
    preview.offer(board, 0.05, ACCEPTED, presence, "empty")  # time went back: another source
    assert preview.written == 7
    image = cv2.imread(str(tmp_path / FRAME_FILE))
    assert image.shape == (240, 320, 3)
    assert [p.name for p in tmp_path.iterdir()] == [FRAME_FILE]  # no temporary file left


def test_the_presence_region_and_the_verdict_are_drawn():
    board = make_board(seed=1)
    presence = PresenceDetector(PresenceSettings(), reference=board)
    preview = FramePreview(None)
    item = item_on(board, RED)  # the item covers x 170-340, y 110-270 of 512x384
    accepted = cv2.imdecode(np.frombuffer(preview.render(item, ACCEPTED, presence, "settled"), np.uint8), 1)
    rejected = cv2.imdecode(np.frombuffer(preview.render(item, GateVerdict(False, "glare", None), presence,
                                                         "occupied"), np.uint8), 1)
    plain = cv2.resize(cv2.cvtColor(item, cv2.COLOR_RGB2BGR), (320, 240), interpolation=cv2.INTER_LINEAR)
    for drawn, channel in ((accepted, 1), (rejected, 2)):  # BGR: a green box, a red box
        changed = np.abs(drawn.astype(int) - plain.astype(int)).max(axis=2) > 60
        changed[:20] = False  # the banner
        ys, xs = np.nonzero(changed)
        assert abs(xs.min() - 106) <= 8 and abs(xs.max() - 212) <= 8  # around the item: 170-340 of 512
        assert abs(ys.min() - 69) <= 8 and abs(ys.max() - 168) <= 8  # 110-270 of 384
        colour = drawn[changed].mean(axis=0)
        assert colour.argmax() == channel, colour
    assert accepted[:18].mean() < 40 and accepted[:18].max() > 150  # the banner: dark, with text


def test_the_box_is_the_region_presence_judged_the_frame_by():
    """The loop's frame: the preview boxes the mask of presence's own view of it (the one the gate
    judged clipping by), not a second look, which after an update may see another board."""
    board = make_board(seed=1)
    presence = PresenceDetector(PresenceSettings(), reference=board)
    item = item_on(board, RED)
    view = presence.view(item)
    presence.update(view, 0.0)
    assert presence.changed_region(item) is view.changed
    other = item.copy()  # another array of the same pixels: computed afresh, state unchanged
    state = presence.state
    assert presence.changed_region(other) is not view.changed
    assert np.array_equal(presence.changed_region(other), view.changed) and presence.state is state


def test_a_frame_that_cannot_be_written_is_logged_once_and_the_sort_goes_on(tmp_path, caplog):
    (tmp_path / FRAME_FILE).mkdir()  # a folder where the frame goes: the rename fails
    preview = FramePreview(tmp_path / FRAME_FILE, interval_s=0.1)
    board = make_board(seed=1)
    presence = PresenceDetector(PresenceSettings(), reference=board)
    with caplog.at_level(logging.WARNING):
        for i in range(5):
            preview.offer(board, i * 0.2, ACCEPTED, presence, "empty")
    assert preview.failed == 5 and preview.written == 0
    assert len([r for r in caplog.records if "latest frame not written" in r.message]) == 1


PER_RUN = ("ts", "latency_ms", "record_id", "run_id")  # wall time and the run's own ids


def strip(records):
    return [{k: v for k, v in r.items() if k not in PER_RUN} for r in records]


def test_records_are_the_same_with_the_frame_on_or_off_and_the_web_server_running_or_not(scene, tmp_path):
    off = sort_scene(scene, tmp_path / "off.jsonl", config="config_no_capture")
    assert not list(tmp_path.glob(f"**/{FRAME_FILE}"))
    on = sort_scene(scene, tmp_path / "on.jsonl", "--status-file", str(tmp_path / "on" / "status.json"),
                    config="config_no_capture")
    assert (tmp_path / "on" / FRAME_FILE).stat().st_size > 1000
    broken = tmp_path / "broken"
    (broken / FRAME_FILE).mkdir(parents=True)
    failing = sort_scene(scene, tmp_path / "broken.jsonl", "--status-file", str(broken / "status.json"),
                         config="config_no_capture")
    served = tmp_path / "served"
    sources = Sources(status_file=served / "status.json", log_path=tmp_path / "served.jsonl",
                      capture_dir=tmp_path / "no-captures")
    stop, answers = threading.Event(), []

    def browse(url):  # a browser on every page while the sorter runs
        while not stop.is_set():
            for page in ("/now", "/now/facts", "/frame.jpg", "/today", "/label"):
                try:
                    with urllib.request.urlopen(url + page, timeout=5) as answer:
                        answers.append(answer.status)
                except urllib.error.HTTPError as exc:
                    answers.append(exc.code)

    with WebServer(("127.0.0.1", 0), sources).start() as server:
        browser = threading.Thread(target=browse, args=(server.url,))
        browser.start()
        try:
            with_web = sort_scene(scene, sources.log_path, "--status-file", str(sources.status_file),
                                  config="config_no_capture")
        finally:
            stop.set()
            browser.join(10)
    assert len(off) == 4 and answers.count(200) > 5
    assert strip(on) == strip(off) == strip(failing) == strip(with_web)
