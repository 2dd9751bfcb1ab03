"""The sort log reader, `waste-sorter logs`, `waste-sorter status`, the runtime status file and a
full or read-only log disk. Logs are written with SortLog; time is injected, nothing sleeps."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
from pathlib import Path

import pytest

import device.sortlog
from device.commands import logs as logs_cli
from device.commands import status as status_cli
from device.cli import main as cli_main
from device.runtime_status import RuntimeStatus, read_runtime_status, write_runtime_status
from device.sortlog import SortLog, read_records, utc_iso
from helpers import NOW, args_for, event, iso, run_logs


def write_log(path: Path, events, **kwargs) -> None:
    with SortLog(path, **kwargs) as sort_log:
        for e in events:
            assert sort_log.append(e)


# ---------------------------------------------------------------- reader

def test_read_records_across_rotated_files_skips_torn_last_line(tmp_path):
    path = tmp_path / "sort.jsonl"
    write_log(path, [event(i) for i in range(1, 41)], max_bytes=2_000, keep=50)
    assert len(device.sortlog.log_files(path)) > 3  # rotated several times
    with open(path, "ab") as fh:
        fh.write(b'{"ts":"2024-01-01T00:00:00.000Z","item":41,"la')  # crash mid-write
    assert [r["item"] for r in read_records(path)] == list(range(1, 41))


# ---------------------------------------------------------------- logs

@pytest.fixture
def mixed_log(tmp_path) -> Path:
    path = tmp_path / "sort.jsonl"
    events = [
        event(1, t=NOW - 3 * 86400, label="glass", bin_="glass", latency_ms=5),
        event(2, t=NOW - 3 * 3600, label="paper", bin_="paper", latency_ms=10, rejects={"glare": 2}),
        event(3, t=NOW - 90 * 60, label="plastic", bin_="landfill", reason="low confidence 0.41",
              latency_ms=20, rejects={"glare": 1, "dark": 1}),
        event(4, t=NOW - 30 * 60, label="glass", bin_="glass", latency_ms=30),
        event(5, t=NOW - 10 * 60, label="", bin_="landfill", reason="no usable frame", latency_ms=40,
              rejects={"dark": 3}),
    ]
    write_log(path, events, max_bytes=1_500)
    return path


def test_logs_tail_plain_text(mixed_log):
    text = run_logs("--log", str(mixed_log), "-n", "2")
    lines = text.splitlines()
    assert len(lines) == 2
    assert "#4" in lines[0] and "glass" in lines[0]
    assert "#5" in lines[1] and "[no usable frame]" in lines[1]
    assert "\033[" not in text  # not a terminal: no colour


def test_logs_json_lines_and_filters(mixed_log):
    def items(*argv):
        return [json.loads(line)["item"] for line in run_logs("--log", str(mixed_log), "--json", *argv).splitlines()]

    assert items() == [1, 2, 3, 4, 5]
    assert items("--since", "2h") == [3, 4, 5]
    assert items("--since", "1d") == [2, 3, 4, 5]
    assert items("--since", iso(NOW - 45 * 60)) == [4, 5]
    assert items("--label", "GLASS") == [1, 4]
    assert items("--bin", "landfill") == [3, 5]
    assert items("--reason", "any") == [3, 5]
    assert items("--reason", "confidence") == [3]
    assert items("--bin", "glass", "--since", "1h") == [4]


def test_logs_bad_since_is_a_one_line_usage_error(mixed_log, capsys):
    assert cli_main(["logs", "--log", str(mixed_log), "--since", "yesterday-ish"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("waste-sorter logs: error: --since 'yesterday-ish': expected an ISO date/time or an age "
                   "like 30m, 2h, 1d")


def test_logs_summary_json(mixed_log):
    summary = json.loads(run_logs("--log", str(mixed_log), "--summary", "--json"))
    assert summary["items"] == 5
    assert summary["bins"] == {"glass": 2, "landfill": 2, "paper": 1}
    assert summary["labels"] == {"glass": 2, "paper": 1, "plastic": 1, "(none)": 1}
    assert summary["reject_reasons"] == {"dark": 4, "glare": 3}
    assert summary["uncertain"] == 2 and summary["uncertain_rate"] == 0.4
    assert summary["latency_ms_p50"] == 20.0
    assert summary["latency_ms_p95"] == pytest.approx(38.0)
    assert sum(h["items"] for h in summary["per_hour"].values()) == 5
    assert all(hour.endswith(":00Z") for hour in summary["per_hour"])
    recent = json.loads(run_logs("--log", str(mixed_log), "--summary", "--json", "--since", "1h"))
    assert recent["items"] == 2 and recent["bins"] == {"glass": 1, "landfill": 1}


def test_logs_summary_text(mixed_log):
    text = run_logs("--log", str(mixed_log), "--summary")
    assert "items      5" in text and "uncertain  2 (40.0%)" in text and "p95" in text
    assert "per hour (UTC):" in text


def test_logs_follow_across_rotation_without_sleeping(tmp_path):
    path = tmp_path / "sort.jsonl"
    sort_log = SortLog(path, max_bytes=1_500, keep=10)
    for i in range(1, 4):
        sort_log.append(event(i))
    next_item = iter(range(4, 100))
    sleeps = []

    def fake_sleep(seconds):  # the sorter writes while `logs -f` waits
        sleeps.append(seconds)
        for _ in range(3):  # several records per poll: rotations happen mid-poll
            sort_log.append(event(next(next_item), reason="low confidence" if len(sleeps) == 2 else ""))

    text = run_logs("--log", str(path), "-f", "-n", "2", "--json", sleep=fake_sleep, max_polls=4)
    assert [json.loads(line)["item"] for line in text.splitlines()] == list(range(2, 16))
    assert len(device.sortlog.log_files(path)) > 2 and sleeps == [1.0] * 4
    filtered = run_logs("--log", str(path), "-f", "-n", "0", "--reason", "any", "--json",
                        sleep=lambda s: sort_log.append(event(99, reason="x")), max_polls=2)
    assert [json.loads(line)["item"] for line in filtered.splitlines()] == [99, 99]


def test_follower_survives_truncation_and_missing_file(tmp_path):
    path = tmp_path / "sort.jsonl"
    follower = logs_cli.LogFollower(path)
    assert follower.poll() == []  # no log yet
    write_log(path, [event(1), event(2)])
    assert [r["item"] for r in follower.poll()] == [1, 2]
    path.write_text(event(3).to_json() + "\n" + '{"item": 4')  # replaced in place, torn last line
    assert [r["item"] for r in follower.poll()] == [3]
    with open(path, "a") as fh:
        fh.write(', "ts": "x"}\n')
    assert [r["item"] for r in follower.poll()] == [4]


def test_logs_via_command_line_and_missing_log(tmp_path, mixed_log, capsys):
    assert cli_main(["logs", "--log", str(mixed_log), "-n", "1"]) == 0
    assert "#5" in capsys.readouterr().out
    assert cli_main(["logs", "--log", str(tmp_path / "none.jsonl")]) == 65  # README: 65 a sort log logs reads
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"waste-sorter logs: error: {tmp_path / 'none.jsonl'}: "
                                                    f"no sort log there (yet)")


def test_log_path_from_config(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'[log]\npath = "{tmp_path / "x.jsonl"}"\n')
    assert logs_cli.resolve_log_path(None, config) == tmp_path / "x.jsonl"
    assert logs_cli.resolve_log_path(tmp_path / "y", config) == tmp_path / "y"
    assert logs_cli.resolve_log_path(None, None) == logs_cli.DEFAULT_LOG_PATH


# ---------------------------------------------------------------- runtime status and `status`

def runtime(now: float, **overrides) -> RuntimeStatus:
    values = dict(updated_utc=utc_iso(now - 2), started_utc=utc_iso(now - 7200), frames=1000,
                  frames_rejected=50, reject_reasons={"glare": 40, "dark": 10}, items=42, fps=9.5,
                  model_path="/opt/waste-sorter/model.onnx", model_sha256="0123456789abcdef",
                  model_mtime_utc=utc_iso(now - 10 * 86400), calibration_id="cal-7",
                  calibration_created_utc=utc_iso(now - 3 * 3600), state="sorting", pid=1234)
    values.update(overrides)
    return RuntimeStatus(**values)


def test_runtime_status_round_trip_is_atomic(tmp_path):
    path = tmp_path / "run" / "status.json"
    status = runtime(NOW)
    write_runtime_status(path, status)
    write_runtime_status(path, status)
    assert read_runtime_status(path) == status
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]  # no temp files left
    assert path.stat().st_mode & 0o777 == 0o644


def test_runtime_status_tolerates_missing_corrupt_and_foreign_files(tmp_path, caplog):
    path = tmp_path / "status.json"
    assert read_runtime_status(path) is None
    path.write_text("{not json")
    assert read_runtime_status(path) is None
    path.write_text(json.dumps({"updated_utc": "a", "started_utc": "b", "new_field": 1}))
    assert read_runtime_status(path) == RuntimeStatus(updated_utc="a", started_utc="b")
    path.write_text(json.dumps({"frames": 3}))
    assert read_runtime_status(path) is None
    assert any("status" in r.message for r in caplog.records)


def test_status_report(tmp_path, mixed_log):
    status_file = tmp_path / "status.json"
    write_runtime_status(status_file, runtime(NOW))
    args = args_for("--status-file", str(status_file), "--log", str(mixed_log), "--json", module=status_cli)
    out = io.StringIO()
    assert status_cli.show_status(args, out, now=NOW, service="active") == 0
    report = json.loads(out.getvalue())
    midnight = status_cli.local_day_start(NOW)
    expected_today = sum(1 for r in read_records(mixed_log) if logs_cli.record_time(r) >= midnight)
    assert report["service"] == "active"
    assert report["items_today"] == expected_today
    assert report["last_item"]["item"] == 5 and report["last_item_age_s"] == pytest.approx(600, abs=1)
    rt = report["runtime"]
    assert rt["fps"] == 9.5 and rt["rejected_rate"] == 0.05 and not rt["stale"]
    assert rt["model_age_s"] == pytest.approx(10 * 86400, abs=2)
    assert rt["calibration_id"] == "cal-7" and rt["calibration_age_s"] == pytest.approx(3 * 3600, abs=2)

    text_args = args_for("--status-file", str(status_file), "--log", str(mixed_log), module=status_cli)
    out = io.StringIO()
    status_cli.show_status(text_args, out, now=NOW + 600, service="active")
    text = out.getvalue()
    assert "service      active" in text and "STALE" in text and "9.5 fps" in text and "cal-7" in text
    assert "glare 40, dark 10" in text and "last item    #5" in text
    assert "SORT LOG" not in text


def test_status_shows_sort_records_the_log_could_not_take(tmp_path, mixed_log):
    status_file = tmp_path / "status.json"
    write_runtime_status(status_file, runtime(NOW, log_pending=7, log_dropped=2))
    out = io.StringIO()
    status_cli.show_status(args_for("--status-file", str(status_file), "--log", str(mixed_log),
                                    module=status_cli), out, now=NOW, service="active")
    assert ("SORT LOG     7 record(s) waiting to be written, 2 lost: is the log's disk full or read-only?"
            in out.getvalue())
    out = io.StringIO()
    status_cli.show_status(args_for("--status-file", str(status_file), "--log", str(mixed_log), "--json",
                                    module=status_cli), out, now=NOW, service="active")
    runtime_report = json.loads(out.getvalue())["runtime"]
    assert (runtime_report["log_pending"], runtime_report["log_dropped"]) == (7, 2)


def test_status_without_sorter_or_log(tmp_path):
    args = args_for("--status-file", str(tmp_path / "none.json"), "--log", str(tmp_path / "none.jsonl"),
                    module=status_cli)
    out = io.StringIO()
    assert status_cli.show_status(args, out, now=NOW, service="inactive") == 0
    text = out.getvalue()
    assert "inactive" in text and "live status  none" in text and "last item    none" in text


def test_items_today_stops_at_older_rotated_files(tmp_path):
    path = tmp_path / "sort.jsonl"
    now = NOW
    midnight = status_cli.local_day_start(now)
    old = [event(i, t=midnight - 86400 + i) for i in range(1, 11)]
    new = [event(i, t=midnight + i) for i in range(11, 21)]
    write_log(path, old + new, max_bytes=1_500, keep=50)
    last, today = status_cli.log_today(path, now)
    assert today == 10 and last["item"] == 20


def test_service_state():
    assert status_cli.service_state(which=lambda name: None) == "unknown"

    class Result:
        stdout = "failed\n"

    assert status_cli.service_state(run=lambda *a, **k: Result(), which=lambda n: "/bin/systemctl") == "failed"

    def broken(*a, **k):
        raise OSError("boom")

    assert status_cli.service_state(run=broken, which=lambda n: "/bin/systemctl") == "unknown"


# ---------------------------------------------------------------- disk full, read-only directory

class _FullDiskOs:
    """``os`` as device.sortlog sees it, with ``write`` failing (ENOSPC) while ``full`` is set."""

    def __init__(self) -> None:
        self.full = True

    def write(self, fd, data):
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)

    def __getattr__(self, name):
        return getattr(os, name)


def test_disk_full_one_error_a_minute_and_recovery(tmp_path, monkeypatch, caplog):
    fake_os = _FullDiskOs()
    monkeypatch.setattr(device.sortlog, "os", fake_os)
    clock_s = [1000.0]
    path = tmp_path / "sort.jsonl"
    sort_log = SortLog(path, max_bytes=2_000, keep=50, clock=lambda: clock_s[0])
    with caplog.at_level(logging.WARNING, logger="device.sortlog"):
        for i in range(1, 31):  # one item every 10 s for 5 minutes, disk full
            assert sort_log.append(event(i)) is False  # sorting goes on; the record waits
            clock_s[0] += 10
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 5  # t = 0, 60, 120, 180, 240 s
        assert sort_log.pending == 30
        fake_os.full = False
        assert sort_log.append(event(31)) is True
        assert any("writable again" in r.message for r in caplog.records)
    assert sort_log.pending == 0
    assert [r["item"] for r in read_records(path)] == list(range(1, 32))
    assert len(device.sortlog.log_files(path)) > 1  # caught up across a rotation


def test_read_only_directory_then_recovery(tmp_path, caplog):
    directory = tmp_path / "logs"
    directory.mkdir()
    path = directory / "sort.jsonl"
    directory.chmod(0o500)
    try:
        if os.access(directory, os.W_OK):
            pytest.skip("chmod does not stop this user from writing (root)")
        clock_s = [0.0]
        sort_log = SortLog(path, clock=lambda: clock_s[0])
        with caplog.at_level(logging.ERROR, logger="device.sortlog"):
            for i in range(1, 4):
                assert sort_log.append(event(i)) is False
                clock_s[0] += 1
        assert len(caplog.records) == 1
    finally:
        directory.chmod(0o700)
    assert sort_log.append(event(4)) is True
    assert [r["item"] for r in read_records(path)] == [1, 2, 3, 4]


def test_read_only_filesystem_as_any_user(tmp_path, monkeypatch, caplog):
    """Like the chmod test, but runs as root too: ``open`` fails with EROFS, then works again."""
    class ReadOnlyOs(_FullDiskOs):
        def open(self, *args, **kwargs):
            if self.full:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            return os.open(*args, **kwargs)

        def write(self, fd, data):
            return os.write(fd, data)

    fake_os = ReadOnlyOs()
    monkeypatch.setattr(device.sortlog, "os", fake_os)
    clock_s = [0.0]
    path = tmp_path / "sort.jsonl"
    sort_log = SortLog(path, clock=lambda: clock_s[0])
    with caplog.at_level(logging.ERROR, logger="device.sortlog"):
        for i in range(1, 8):  # 7 items 20 s apart: errors at t = 0 and 60 and 120
            assert sort_log.append(event(i)) is False
            clock_s[0] += 20
    assert len(caplog.records) == 3 and "Read-only file system" in caplog.records[0].getMessage()
    fake_os.full = False
    assert sort_log.append(event(8)) is True
    assert [r["item"] for r in read_records(path)] == list(range(1, 9))


def test_append_after_a_torn_last_line_loses_no_record(tmp_path):
    from device.sortlog import SortLog, read_records

    log_path = tmp_path / "sort.jsonl"
    with SortLog(log_path) as sortlog:
        sortlog.append(event(1))
    with open(log_path, "ab") as fh:
        fh.write(event(2).to_json().encode()[:40])  # the process died mid-write
    with SortLog(log_path) as sortlog:  # restarted sorter
        sortlog.append(event(3))
    assert [r["item"] for r in read_records(log_path)] == [1, 3]
    assert log_path.read_bytes().endswith(b"\n")


def test_a_full_queue_drops_the_oldest_records_and_says_so_once_a_minute(tmp_path, caplog):
    (tmp_path / "a-file").write_text("")
    clock_s = [0.0]
    sort_log = SortLog(tmp_path / "a-file" / "sort.jsonl", max_pending=3, clock=lambda: clock_s[0])  # unwritable
    with caplog.at_level(logging.ERROR, logger="device.sortlog"):
        for i in range(1, 11):
            assert sort_log.append(event(i)) is False
            clock_s[0] += 10  # items 5 and 11 s apart: the second "queue full" line comes at 60 s
    assert sort_log.dropped == 7 and sort_log.pending == 3
    assert [json.loads(line)["item"] for line in sort_log.unwritten()] == [8, 9, 10]
    full = [r.getMessage() for r in caplog.records if "queue full" in r.getMessage()]
    assert full == ["sort log queue full (3 records): the oldest waiting records are lost, 1 so far",
                    "sort log queue full (3 records): the oldest waiting records are lost, 7 so far"]


@pytest.mark.parametrize("state, updated_ago_s, expected", [
    ("stopped", 660, "state        stopped 11 min ago, after running 22 s"),  # not "up 11 min STALE"
    ("stopped", 3, "state        stopped 3 s ago, after running 22 s"),
    ("sorting", 660, "state        sorting 11 min ago, after running 22 s; STALE: not updated since (the "
                     "sorter hung or was killed)"),
    ("sorting", 3, "state        sorting, up 25 s"),
])
def test_status_says_how_long_a_run_lasted_and_when_it_stopped(tmp_path, state, updated_ago_s, expected):
    status_file = tmp_path / "status.json"
    now = float(int(NOW))  # the status file's times are whole seconds
    write_runtime_status(status_file, runtime(now, state=state, updated_utc=utc_iso(now - updated_ago_s),
                                              started_utc=utc_iso(now - updated_ago_s - 22)))
    out = io.StringIO()
    status_cli.show_status(args_for("--status-file", str(status_file), "--log", str(tmp_path / "none.jsonl"),
                                    module=status_cli), out, now=now, service="inactive")
    assert expected in out.getvalue().splitlines()
