"""The sort log at its edges: a torn last line longer than the cut's window, blank and malformed
lines, rotated files that are folders, a FIFO in the log's place, and `logs -f` when several
rotations happen between two polls. Logs are written with SortLog; nothing sleeps."""

from __future__ import annotations

import json
import logging
import os

import pytest

from device.commands import logs as logs_cli
from device.cli import main as cli_main
from device.sortlog import SortLog, log_files, read_lines_from, read_records
from helpers import event


def items(records) -> list[int]:
    return [r["item"] for r in records]


def test_a_torn_last_line_longer_than_a_mebibyte_is_cut_whole(tmp_path):
    path = tmp_path / "sort.jsonl"
    with SortLog(path) as sort_log:
        sort_log.append(event(1))
    size_after_1 = path.stat().st_size
    with open(path, "ab") as fh:  # killed while writing a line of 3 MiB (no newline at its end)
        fh.write(b'{"item": 2, "label": "' + b"x" * (3 << 20))
    with SortLog(path) as sort_log:  # restarted
        sort_log.append(event(3))
    assert items(read_records(path)) == [1, 3]
    assert path.stat().st_size == size_after_1 + len(event(3).to_json()) + 1


def test_a_torn_line_with_no_newline_before_it_leaves_an_empty_log(tmp_path):
    path = tmp_path / "sort.jsonl"
    path.write_bytes(b"y" * ((1 << 20) + 10))  # the first line, torn, longer than 1 MiB
    with SortLog(path) as sort_log:
        sort_log.append(event(1))
    assert path.read_bytes() == (event(1).to_json() + "\n").encode()


def test_blank_lines_are_passed_over_without_a_warning(tmp_path, caplog):
    path = tmp_path / "sort.jsonl"
    path.write_text("\n".join(["", event(1).to_json(), "", "   ", "\t", event(2).to_json(), ""]) + "\n")
    with caplog.at_level(logging.WARNING):
        assert items(read_records(path)) == [1, 2]
    assert caplog.records == []


def test_malformed_lines_give_one_warning_per_file_naming_it_and_the_count(tmp_path, caplog):
    path = tmp_path / "sort.jsonl"
    bad = ["{not json", '{"item": 9, "latency_ms": Infinity}', '{"item": 9, "confidence": NaN}',
           '{"item": 9, "latency_ms": 1e400}', "[" * 50_000 + "]" * 50_000, b"\xff\xfe".decode("latin-1"),
           '{"item": 9, "frames_used": 1' + "0" * 400 + "}"]
    path.write_text("\n".join([event(1).to_json(), *bad, event(2).to_json()]) + "\n")
    with caplog.at_level(logging.WARNING):
        assert items(read_records(path)) == [1, 2]
    assert [r.getMessage() for r in caplog.records] == [f"{path}: skipped 7 malformed line(s)"]


def test_a_line_longer_than_a_mebibyte_is_skipped_and_the_next_one_read(tmp_path, caplog):
    path = tmp_path / "sort.jsonl"
    huge = '{"item": 9, "label": "' + "x" * (2 << 20) + '"}'
    path.write_text("\n".join([event(1).to_json(), huge, event(2).to_json()]) + "\n")
    with caplog.at_level(logging.WARNING):
        records, end = read_lines_from(path)
    assert items(records) == [1, 2] and end == path.stat().st_size
    assert len(caplog.records) == 1


def test_non_finite_numbers_never_reach_the_json_output(tmp_path, capsys):
    path = tmp_path / "sort.jsonl"
    write = [event(1).to_json(), '{"ts": "2024-01-01T00:00:00.000Z", "item": 2, "latency_ms": Infinity, '
                                 '"reject_reasons": {"glare": 1e400}}']
    path.write_text("\n".join(write) + "\n")
    for argv in (["--json"], ["--summary", "--json"]):
        assert cli_main(["logs", "--log", str(path), *argv]) == 0
        for line in capsys.readouterr().out.splitlines():  # strict JSON: what jq reads
            json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in the output"))


def test_a_rotated_log_that_is_a_folder_is_one_line_exit_65(tmp_path, capsys):
    path = tmp_path / "sort.jsonl"
    with SortLog(path) as sort_log:
        sort_log.append(event(1))
    (tmp_path / "sort.jsonl.2").mkdir()
    assert cli_main(["logs", "--log", str(path)]) == 65
    err = capsys.readouterr().err
    assert err == f"waste-sorter logs: error: {path}.2: sort log is a directory, not a regular file\n"


def test_a_fifo_in_the_logs_place_takes_no_record_and_never_blocks(tmp_path):
    path = tmp_path / "sort.jsonl"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # someone reads it: writes would succeed
    try:
        sort_log = SortLog(path)
        assert sort_log.append(event(1)) is False and sort_log.pending == 1
        assert os.read(reader, 4096) == b""  # nothing went into the pipe (and no writer holds it)
    finally:
        os.close(reader)


# ---------------------------------------------------------------- logs -f and rotations

def test_follow_reads_a_rotated_file_that_still_exists_after_two_rotations_between_polls(tmp_path, caplog):
    """keep=1: the file read last is rotated twice, so it is gone and ``.1`` is the file after it."""
    path = tmp_path / "sort.jsonl"
    sort_log = SortLog(path, max_bytes=1_000, keep=1)  # about two records per file
    sort_log.append(event(1))
    follower = logs_cli.LogFollower(path)
    seen: list[int] = []
    next_item = 2
    for _ in range(4):
        for _ in range(5):  # several rotations between two polls
            sort_log.append(event(next_item))
            next_item += 1
        with caplog.at_level(logging.WARNING):
            seen += items(follower.poll())
    still_there = items(read_records(path))
    assert set(still_there) <= set(seen)  # nothing that still exists was skipped
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert any("records may be missing" in r.getMessage() for r in caplog.records)


def test_follow_when_the_log_is_missing_mid_rotation_and_rotates_again(tmp_path):
    path = tmp_path / "sort.jsonl"
    sort_log = SortLog(path, max_bytes=1_000, keep=5)
    sort_log.append(event(1))
    follower = logs_cli.LogFollower(path)
    sort_log.append(event(2))
    os.replace(path, path.with_name("sort.jsonl.1"))  # the sorter's rotation, caught between its two steps
    assert items(follower.poll()) == [2]
    for item in range(3, 12):  # the sorter goes on: the new log is written and rotated again
        sort_log.append(event(item))
    assert len(log_files(path)) >= 3
    assert items(follower.poll()) == list(range(3, 12))


def test_follow_started_while_the_log_is_missing_mid_rotation_shows_only_new_records(tmp_path):
    path = tmp_path / "sort.jsonl"
    sort_log = SortLog(path, max_bytes=1_000, keep=5)
    for item in range(1, 4):
        sort_log.append(event(item))
    os.replace(path, path.with_name("sort.jsonl.9"))  # no current log when `logs -f` starts
    follower = logs_cli.LogFollower(path)
    for item in range(4, 9):
        sort_log.append(event(item))
    assert items(follower.poll()) == list(range(4, 9))
