"""The web page's view of today's sort log (device/web/sources.py TodayLog): today's records
only, rotated files of older days not read, appended records followed without repeats, and
yesterday's gone once midnight passes."""

from __future__ import annotations

import os

from device.commands.status import local_day_start
from device.web.sources import TodayLog
from helpers import event

DAY_S = 86400.0


def write(path, records):
    with open(path, "a") as fh:
        fh.writelines(r.to_json() + "\n" for r in records)


def test_today_only_followed_without_repeats_and_midnight_drops_yesterday(tmp_path):
    midnight = local_day_start(1_700_000_000.0)
    now = [midnight + 10 * 3600]  # 10:00 local
    log = tmp_path / "sort.jsonl"
    old = tmp_path / "sort.jsonl.2"  # a rotated file of two days ago
    write(old, [event(1, t=midnight + 100)])  # stamped today, but last written before midnight:
    os.utime(old, (midnight - 2 * DAY_S + 200,) * 2)  # a file it does not read
    rotated = tmp_path / "sort.jsonl.1"  # yesterday evening into this morning
    write(rotated, [event(2, t=midnight - 600), event(3, t=midnight + 600)])
    write(log, [event(4, t=midnight + 3600)])
    today = TodayLog(log, clock=lambda: now[0])
    assert [r["item"] for r in today.records()] == [3, 4]
    write(log, [event(5, t=midnight + 7200), event(6, t=midnight + 7300)])
    assert [r["item"] for r in today.records()] == [3, 4, 5, 6]
    assert [r["item"] for r in today.records()] == [3, 4, 5, 6]  # nothing new, nothing twice
    now[0] = midnight + DAY_S + 60  # past midnight
    write(log, [event(7, t=midnight + DAY_S + 30)])
    assert [r["item"] for r in today.records()] == [7]
    assert today.problem == ""


def test_a_log_that_is_a_folder_is_a_problem_not_an_error(tmp_path):
    (tmp_path / "sort.jsonl").mkdir()
    today = TodayLog(tmp_path / "sort.jsonl")
    assert today.records() == [] and "sort.jsonl" in today.problem
