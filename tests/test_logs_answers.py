"""`waste-sorter logs` answers every query: a missing log is one line with a listed exit code,
``-f`` on a log not there yet says once that it waits, and a filter that matches nothing says
so (on stderr; stdout stays the records). Time is injected, nothing sleeps."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from device.commands import logs as logs_cli
from device.errors import DataError
from device.sortlog import SortLog
from helpers import NOW, args_for, event


def write_log(path: Path, events) -> Path:
    with SortLog(path) as sort_log:
        for e in events:
            assert sort_log.append(e)
    return path


@pytest.fixture
def log_path(tmp_path) -> Path:
    return write_log(tmp_path / "sort.jsonl", [
        event(1, t=NOW - 3 * 3600, label="glass", bin_="glass"),
        event(2, t=NOW - 2 * 3600, label="paper", bin_="paper"),
    ])


def logs(*argv: str, **kwargs) -> tuple[int, str]:
    out = io.StringIO()
    code = logs_cli.show_logs(args_for(*argv), out, now=NOW, **kwargs)
    return code, out.getvalue()


def test_a_missing_log_is_one_line_with_exit_65(tmp_path):
    with pytest.raises(DataError, match=r"^.*none\.jsonl: no sort log there \(yet\)") as info:
        logs("--log", str(tmp_path / "none.jsonl"))
    assert info.value.exit_code == 65


def test_follow_on_a_missing_log_says_once_that_it_waits_then_shows_it(tmp_path, capsys):
    path = tmp_path / "sort.jsonl"
    polls = []

    def sleep(_s: float) -> None:  # the log appears at the second poll
        polls.append(1)
        if len(polls) == 2:
            write_log(path, [event(1, label="metal", bin_="containers")])

    code, out = logs("--log", str(path), "-f", sleep=sleep, max_polls=4)
    err = capsys.readouterr().err
    assert code == 0
    assert err == f"waste-sorter logs: no sort log at {path} yet: waiting for it (Ctrl-C to stop)\n"
    assert out.count("\n") == 1 and "#1  metal 0.90 -> containers" in out


def test_a_bin_that_matches_nothing_says_so_and_lists_the_bins(log_path, capsys):
    code, out = logs("--log", str(log_path), "--bin", "glas")
    assert code == 0 and out == ""
    assert capsys.readouterr().err == (f"waste-sorter logs: no items match --bin glas (of 2 in {log_path}; "
                                       f"bins: glass, paper)\n")


def test_since_that_matches_nothing_says_so_with_the_last_items_time(log_path, capsys):
    code, out = logs("--log", str(log_path), "--since", "1m", "--json")
    assert code == 0 and out == ""
    err = capsys.readouterr().err
    assert err.startswith("waste-sorter logs: no items match --since 1m (of 2 in ")
    assert "the last item is of 20" in err and err.count("\n") == 1


def test_a_summary_of_nothing_says_which_filter(log_path, capsys):
    code, out = logs("--log", str(log_path), "--label", "metal", "--summary")
    assert code == 0 and out == "no items\n"
    assert "no items match --label metal (of 2" in capsys.readouterr().err


def test_a_filter_that_matches_says_nothing_more(log_path, capsys):
    code, out = logs("--log", str(log_path), "--bin", "Glass")  # whatever the case, as captures label
    assert code == 0 and "#1  glass" in out and capsys.readouterr().err == ""


def test_an_empty_log_says_it_has_no_items_yet(tmp_path, capsys):
    path = tmp_path / "sort.jsonl"
    path.write_text("")
    code, out = logs("--log", str(path))
    assert code == 0 and out == "" and capsys.readouterr().err == f"waste-sorter logs: no items in {path} yet\n"
