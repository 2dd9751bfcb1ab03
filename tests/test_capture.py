"""The capture writer: which items it captures, what it writes, the quota, and that it never holds
up sorting (a full queue, a full disk, a folder another sorter uses). Frames are real images,
the JPEGs are decoded back with OpenCV; a writer thread is held at a gate (a threading.Event)
where a test needs it busy, so nothing sleeps."""

from __future__ import annotations

import errno
import json
import logging
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

import device.capture as capture_module
from helpers import BLUE, CAPTURE_CLASSES, GREEN, RED, item_on, record
from device.capture import CaptureWriter
from device.capture_ids import ID_MARK_FILE, CaptureIds, first_free_id, read_id_mark
from device.capture_store import LABELS_FILE, read_captures
from device.config import Config, parse_config
from device.commands.demo_scene import make_board

BOARD = make_board(seed=1)
FRAMES = [item_on(BOARD, RED), item_on(BOARD, GREEN), item_on(BOARD, BLUE)]


def writer(folder: Path, **kwargs) -> CaptureWriter:
    settings = {"min_confidence": 0.6, "sample_every": 4, "max_mb": 50, "classes": CAPTURE_CLASSES,
                "queue_items": 16, "model_sha256": "ab" * 32, **kwargs}
    return CaptureWriter(folder, **settings)


class Gate:
    """Holds the writer thread inside its first write until opened; ``writer`` is that thread."""

    def __init__(self, monkeypatch):
        self.entered, self.opened = threading.Event(), threading.Event()
        self.writer: threading.Thread | None = None
        real = capture_module.write_file

        def held(path, data):
            self.writer = threading.current_thread()
            self.entered.set()
            assert self.opened.wait(10), "the test never opened the gate"
            real(path, data)

        monkeypatch.setattr(capture_module, "write_file", held)


def test_uncertain_and_every_nth_item_are_captured_with_their_frames_and_record(tmp_path):
    confidences = [0.9, 0.5, 0.95, 0.97, 0.59, 0.6, 0.99, 0.8, 0.3]
    with writer(tmp_path / "caps") as w:
        ids = [w.offer(record(i, c), FRAMES) for i, c in enumerate(confidences, start=1)]
    # below 0.6: items 2, 5, 9; every 4th item offered: 4 and 8
    assert ids == ["", "1", "", "2", "3", "", "", "4", "5"]
    assert w.counts.written == 5 and w.counts.offered == 9
    captures = read_captures(tmp_path / "caps")
    assert [(c.id, c.why, c.record["item"]) for c in captures] == [
        (1, "uncertain", 2), (2, "sample", 4), (3, "uncertain", 5), (4, "sample", 8), (5, "uncertain", 9)]
    first = captures[0]
    assert first.record == {**json.loads(record(2, 0.5).to_json()), "capture_id": "1"}  # the sort record, named
    assert first.record["top3"] == [["glass", 0.5], ["metal", 0.5]] and first.record["calibration_id"] == "cal-7"
    assert first.classes == CAPTURE_CLASSES and first.model_sha256 == "ab" * 32 and first.label == ""
    assert first.frames == ("1-1.jpg", "1-2.jpg", "1-3.jpg")
    for name, rgb in zip(first.frames, FRAMES):
        decoded = cv2.cvtColor(cv2.imread(str(tmp_path / "caps" / name)), cv2.COLOR_BGR2RGB)
        assert decoded.shape == rgb.shape
        assert np.abs(decoded.astype(int) - rgb).mean() < 2.0  # JPEG quality 90: the frame itself


def test_the_threshold_defaults_to_routing_and_capture_can_be_switched_off(tmp_path):
    config = parse_config({"routing": {"min_confidence": 0.7},
                           "capture": {"enabled": True, "dir": str(tmp_path / "a"), "sample_every": 0}})
    with CaptureWriter.from_config(config, classes=CAPTURE_CLASSES) as w:
        assert w.min_confidence == 0.7
        assert [w.offer(record(i, c), FRAMES) for i, c in enumerate([0.69, 0.71, 0.2], start=1)] == ["1", "", "2"]
    explicit = parse_config({"capture": {"enabled": True, "dir": str(tmp_path / "b"), "min_confidence": 0.3}})
    with CaptureWriter.from_config(explicit) as w:
        assert w.min_confidence == 0.3 and w.sample_every == 20 and w.max_bytes == 500_000_000
    off = replace(Config(), capture=replace(Config().capture, dir=str(tmp_path / "off")))
    assert not off.capture.enabled  # the built-in default: a replay on a laptop writes no images
    with CaptureWriter.from_config(off) as w:
        assert w.offer(record(1, 0.1), FRAMES) == ""
        assert w.summary() == "captures: off"
    assert not (tmp_path / "off").exists()
    with CaptureWriter.off() as w:
        assert w.offer(record(1, 0.1), FRAMES) == "" and w.counts.offered == 0


def test_an_item_without_frames_is_not_captured(tmp_path):
    with writer(tmp_path / "caps", sample_every=1) as w:
        assert w.offer(record(1, 0.0, label=""), []) == ""
        assert w.offer(record(2, 0.0, label=""), FRAMES[:1]) == "1"
    assert read_captures(tmp_path / "caps")[0].frames == ("1-1.jpg",)


def capture_bytes(tmp_path: Path) -> int:
    """What one capture of FRAMES takes on disk."""
    with writer(tmp_path / "one", sample_every=1) as w:
        w.offer(record(1, 0.9), FRAMES)
    return sum(p.stat().st_size for p in (tmp_path / "one").glob("1*"))


def test_quota_deletes_the_oldest_captures_and_ids_go_on_after_a_restart(tmp_path, caplog):
    folder, size = tmp_path / "caps", capture_bytes(tmp_path)
    with caplog.at_level(logging.INFO, logger="device.capture"), \
            writer(folder, sample_every=1, max_mb=2.5 * size / 1e6) as w:  # room for two captures
        ids = [w.offer(record(i, 0.9), FRAMES) for i in range(1, 9)]
    assert ids == [str(i) for i in range(1, 9)]
    assert [c.id for c in read_captures(folder)] == [7, 8]
    assert sorted(p.name for p in folder.iterdir()) == [".last-id", ".writer.lock", "7-1.jpg", "7-2.jpg", "7-3.jpg",
                                                        "7.json", "8-1.jpg", "8-2.jpg", "8-3.jpg", "8.json"]
    assert w.counts.deleted == 6
    assert "is at its quota of " in caplog.text and ": deleting the oldest captures" in caplog.text
    # A restart goes on counting, past the labels too (a label is never inherited by a new capture).
    (folder / LABELS_FILE).write_text(json.dumps({"12": "glass"}))
    with writer(folder, sample_every=1) as again:
        assert again.offer(record(1, 0.9), FRAMES) == "13"
    assert [c.id for c in read_captures(folder)] == [7, 8, 13]


def test_a_capture_the_quota_cannot_delete_stays_counted_and_goes_on_a_later_pass(tmp_path, monkeypatch, caplog):
    folder, size = tmp_path / "caps", capture_bytes(tmp_path)
    real, refused = capture_module.delete_capture, []

    def delete_once_refused(where, capture_id, names):
        if not refused:  # the first deletion fails (EACCES), later ones go through
            refused.append(capture_id)
            raise OSError(errno.EACCES, "Permission denied")
        return real(where, capture_id, names)

    monkeypatch.setattr(capture_module, "delete_capture", delete_once_refused)
    with caplog.at_level(logging.WARNING, logger="device.capture"), \
            writer(folder, sample_every=1, max_mb=2.5 * size / 1e6) as w:  # room for two captures
        assert [w.offer(record(i, 0.9), FRAMES) for i in range(1, 5)] == ["1", "2", "3", "4"]
    assert refused == [1] and f"capture 1 could not be deleted from {folder} (Permission denied)" in caplog.text
    # capture 1 stayed counted: capture 2 went in its place, and 1 went on the next pass
    assert [c.id for c in read_captures(folder)] == [3, 4] and w.counts.deleted == 2
    assert sum(p.stat().st_size for p in folder.glob("[0-9]*")) <= 2.5 * size


def test_a_folder_over_a_lowered_quota_is_trimmed_when_the_writer_starts(tmp_path):
    folder, size = tmp_path / "caps", capture_bytes(tmp_path)
    with writer(folder, sample_every=1) as w:
        for i in range(1, 7):
            w.offer(record(i, 0.9), FRAMES)
    with writer(folder, sample_every=1, max_mb=3.5 * size / 1e6) as w:
        pass
    assert [c.id for c in read_captures(folder)] == [4, 5, 6] and w.counts.deleted == 3


def test_a_full_queue_drops_captures_with_a_counted_warning_a_minute(tmp_path, monkeypatch, caplog):
    gate = Gate(monkeypatch)
    now = [0.0]
    w = writer(tmp_path / "caps", sample_every=1, queue_items=2, clock=lambda: now[0])
    assert w.offer(record(1, 0.9), FRAMES) == "1"
    assert gate.entered.wait(10)  # the writer holds capture 1; the queue is empty again
    assert [w.offer(record(i, 0.9), FRAMES) for i in (2, 3)] == ["2", "3"]
    with caplog.at_level(logging.WARNING, logger="device.capture"):
        assert [w.offer(record(i, 0.9), FRAMES) for i in (4, 5)] == ["", ""]  # dropped, never waited for
        now[0] = 61.0
        assert w.offer(record(6, 0.9), FRAMES) == ""
    warnings = [r.getMessage() for r in caplog.records if "queue full" in r.getMessage()]
    assert warnings == ["capture queue full (2 waiting): item 4 not captured, 1 dropped so far",
                        "capture queue full (2 waiting): item 6 not captured, 3 dropped so far"]
    gate.opened.set()
    w.close()
    assert (w.counts.written, w.counts.dropped) == (3, 3)
    assert [c.id for c in read_captures(tmp_path / "caps")] == [1, 2, 3]
    assert "3 dropped (queue full)" in w.summary()


def test_a_full_disk_loses_captures_with_one_warning_a_minute_and_leaves_no_partial_files(tmp_path, monkeypatch,
                                                                                         caplog):
    real = capture_module.write_file
    full = [True]

    def disk(path, data):
        if full[0] and path.name.endswith("-2.jpg"):  # the first frame fits, the second does not
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(capture_module, "write_file", disk)
    now = [0.0]
    with caplog.at_level(logging.WARNING, logger="device.capture"):
        with writer(tmp_path / "caps", sample_every=1, clock=lambda: now[0]) as w:
            assert [w.offer(record(i, 0.9), FRAMES) for i in (1, 2, 3)] == ["1", "2", "3"]  # ids at once
        lost = [r.getMessage() for r in caplog.records if "not written" in r.getMessage()]
        assert lost == [f"capture 1 not written to {tmp_path / 'caps'} (No space left on device); "
                        "1 capture(s) lost so far"]
        assert w.counts.failed == 3 and w.counts.written == 0
        assert sorted(p.name for p in (tmp_path / "caps").iterdir()) == [".last-id", ".writer.lock"]  # no half
        full[0] = False  # room again: captures come back by themselves, and ids 1-3 stay used (records name them)
        with writer(tmp_path / "caps", sample_every=1) as w:
            assert w.offer(record(4, 0.9), FRAMES) == "4"
        assert w.counts.written == 1


def test_a_frame_that_is_no_image_is_a_failed_capture_not_a_crash(tmp_path, caplog):
    with writer(tmp_path / "caps", sample_every=1) as w:
        assert w.offer(record(1, 0.9), [np.zeros((4, 4), np.float64)]) == "1"
        assert w.offer(record(2, 0.9), FRAMES) == "2"
    assert (w.counts.failed, w.counts.written) == (1, 1)
    assert [c.id for c in read_captures(tmp_path / "caps")] == [2]
    assert "capture 1 not written" in caplog.text


def test_a_folder_another_sorter_captures_into_or_that_cannot_be_made_is_skipped_with_one_warning(tmp_path, caplog):
    with writer(tmp_path / "caps") as first:
        with writer(tmp_path / "caps") as second:
            assert second.offer(record(1, 0.1), FRAMES) == ""
            assert first.offer(record(1, 0.1), FRAMES) == "1"
    assert "is in use by another sorter: not capturing in this run" in caplog.text
    (tmp_path / "file").write_text("not a folder")
    with writer(tmp_path / "file" / "caps") as w:
        assert not w.enabled and w.offer(record(1, 0.1), FRAMES) == ""
    assert caplog.text.count("cannot be used") == 1


def test_close_waits_a_bounded_time_and_nothing_is_captured_after_it(tmp_path, monkeypatch, caplog):
    gate = Gate(monkeypatch)
    w = writer(tmp_path / "caps", sample_every=1)
    assert w.offer(record(1, 0.9), FRAMES) == "1"
    assert gate.entered.wait(10)
    w.offer(record(2, 0.9), FRAMES)
    w.close(timeout_s=0)  # the writer is stuck in capture 1: close does not wait for it
    assert "capture writer still busy after 0 s at exit" in caplog.text
    assert w.offer(record(3, 0.9), FRAMES) == ""
    gate.opened.set()
    gate.writer.join(10)  # (only so that it does not write into the next test's folders)


def test_the_folder_stays_locked_until_the_writer_thread_has_ended(tmp_path, monkeypatch, caplog):
    gate = Gate(monkeypatch)
    w = writer(tmp_path / "caps", sample_every=1)
    assert w.offer(record(1, 0.9), FRAMES) == "1"
    assert gate.entered.wait(10)
    w.close(timeout_s=0)  # capture 1 is still being written
    with writer(tmp_path / "caps", sample_every=1) as second:
        assert not second.enabled  # two writers of one folder would write the same ids
    assert "is in use by another sorter" in caplog.text
    gate.opened.set()
    gate.writer.join(10)
    with writer(tmp_path / "caps", sample_every=1) as third:
        assert third.enabled and third.offer(record(2, 0.9), FRAMES) == "2"
    assert [c.id for c in read_captures(tmp_path / "caps")] == [1, 2]


KILLED_BEFORE_WRITING = """
import os, signal, sys, threading
import numpy as np
import device.capture as capture_module
from device.sortlog import SortEvent

capture_module.write_file = lambda path, data: threading.Event().wait()  # the disk never gets to it
writer = capture_module.CaptureWriter(sys.argv[1], sample_every=1)
item = SortEvent("2024-05-01T10:00:01.000Z", 1.0, 1, "glass", 0.9, (), "glass", "", 1, 0, {}, 1.0, "", "")
print(writer.offer(item, [np.zeros((48, 64, 3), np.uint8)]), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_an_id_handed_out_before_the_sorter_is_killed_is_never_handed_out_again(tmp_path):
    folder, repo = tmp_path / "caps", Path(__file__).resolve().parents[1]
    ids = []
    for _ in range(2):
        run = subprocess.run([sys.executable, "-c", KILLED_BEFORE_WRITING, str(folder)], cwd=repo,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == -signal.SIGKILL, run.stderr
        ids.append(int(run.stdout))  # the sort record named it, but nothing was written
    assert read_captures(folder) == []
    with writer(folder, sample_every=1) as w:
        ids.append(int(w.offer(record(1, 0.9), FRAMES)))
    assert ids[0] < ids[1] < ids[2]


def test_ids_are_on_disk_before_they_are_handed_out_and_a_clean_close_gives_back_the_rest(tmp_path, caplog):
    ids, handed = CaptureIds(tmp_path, block=4), []
    for _ in range(10):
        ids.reserve_ahead()  # as the writer thread does once per capture
        assert read_id_mark(tmp_path) >= ids.peek()
        handed.append(ids.peek())
        ids.advance()
    assert handed == list(range(1, 11))
    ids.release_unused()
    assert read_id_mark(tmp_path) == 10 and first_free_id(tmp_path) == 11
    again = CaptureIds(tmp_path, block=4)  # the writer thread never reserves more: the ids run out
    for _ in range(4):
        again.advance()
    assert again.peek() is None and read_id_mark(tmp_path) == 14
    (tmp_path / ID_MARK_FILE).write_text("fourteen")
    (tmp_path / "12.json").write_text("{}")
    assert first_free_id(tmp_path) == 13
    assert "capture id mark is damaged (expected a whole number); counting capture ids from the captures" \
           in caplog.text
