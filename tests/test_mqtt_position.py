"""The publisher's position in the sort log (device/mqtt_position.py): read in bounded batches
across rotations, resumed from a saved position, a torn last line left until it is whole, and
the position file replaced atomically."""

from __future__ import annotations

import json
import logging

from helpers import event

from device.mqtt_position import LogCursor, PositionStore
from device.sortlog import SortLog, read_records


def write(path, first: int, count: int, *, max_bytes: int = 2_000, keep: int = 50) -> None:
    with SortLog(path, max_bytes=max_bytes, keep=keep) as log:
        for item in range(first, first + count):
            log.append(event(item))


def items(entries) -> list[int]:
    return [e.record["item"] for e in entries]


def test_batches_are_bounded_and_cross_rotations_in_order(tmp_path):
    log = tmp_path / "sort.jsonl"
    write(log, 1, 40)
    assert len(list(tmp_path.glob("sort.jsonl.*"))) >= 6
    cursor, seen = LogCursor(log), []
    while batch := cursor.read(7):
        assert len(batch) <= 7
        seen += items(batch)
    assert seen == [r["item"] for r in read_records(log)] == list(range(1, 41))
    assert cursor.read(7) == []


def test_a_saved_position_resumes_after_more_rotations(tmp_path):
    log = tmp_path / "sort.jsonl"
    write(log, 1, 12)
    first = LogCursor(log).read(10)
    store = PositionStore(tmp_path / "state" / "position.json")
    store.save(first[-1].position, {"day": "2026-01-01"})
    write(log, 13, 40)  # the file of item 10 is now an older rotated file
    saved = store.load()
    assert saved.stats == {"day": "2026-01-01"}
    cursor, seen = LogCursor(log, saved.position), []
    while batch := cursor.read(5):
        seen += items(batch)
    assert seen == list(range(11, 53))


def test_a_position_whose_file_was_rotated_away_goes_on_from_the_oldest_file(tmp_path, caplog):
    log = tmp_path / "sort.jsonl"
    write(log, 1, 3, keep=1)
    position = LogCursor(log).read(2)[-1].position
    write(log, 4, 30, keep=1)  # rotated past keep: only sort.jsonl.1 and sort.jsonl are left
    with caplog.at_level(logging.WARNING):
        rest = items(LogCursor(log, position).read(100))
    assert rest == [r["item"] for r in read_records(log)] and rest[0] > 3
    assert "rotated away before it was read to its end" in caplog.text


def test_a_torn_last_line_waits_until_it_is_whole(tmp_path):
    log = tmp_path / "sort.jsonl"
    write(log, 1, 2)
    line = event(3).to_json() + "\n"
    with open(log, "a") as fh:
        fh.write(line[:40])
    cursor = LogCursor(log)
    assert items(cursor.read(10)) == [1, 2]
    assert cursor.read(10) == []
    with open(log, "a") as fh:
        fh.write(line[40:])
    assert items(cursor.read(10)) == [3]


def test_malformed_lines_are_passed_over(tmp_path, caplog):
    log = tmp_path / "sort.jsonl"
    log.write_text(event(1).to_json() + "\nnot json\n\n[1, 2]\n" + event(2).to_json() + "\n")
    with caplog.at_level(logging.WARNING):
        assert items(LogCursor(log).read(10)) == [1, 2]
    assert "skipped 1 malformed line" in caplog.text


def test_an_over_long_last_line_is_passed_over_once(tmp_path, caplog):
    from device.sortlog import MAX_LINE_BYTES

    log = tmp_path / "sort.jsonl"
    log.write_text(event(1).to_json() + "\n" + "x" * (MAX_LINE_BYTES + 10) + "\n")
    cursor = LogCursor(log)
    with caplog.at_level(logging.WARNING):
        assert items(cursor.read(10)) == [1]
        assert cursor.position.offset == log.stat().st_size  # past the long line, not before it
        caplog.clear()
        assert cursor.read(10) == []
    assert "malformed" not in caplog.text  # not read and warned about again on every poll


def test_position_file_round_trip_and_damage(tmp_path, caplog):
    log = tmp_path / "sort.jsonl"
    write(log, 1, 3)
    entry = LogCursor(log).read(2)[-1]
    store = PositionStore(tmp_path / "position.json")
    assert store.load().position is None  # none yet: from the start
    store.save(entry.position, {"bins": {"containers": 2}})
    assert store.load().position == entry.position
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    assert json.loads(store.path.read_text())["version"] == 1
    store.path.write_text('{"version": 1, "position": {"ino": "x"}}')
    with caplog.at_level(logging.WARNING):
        assert store.load().position is None
    assert "position file unusable" in caplog.text
