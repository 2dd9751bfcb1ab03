"""The ``waste-sorter`` command itself: --version, -v before or after the subcommand."""

from __future__ import annotations

from importlib.metadata import version

from device import cli
from device.cli import main


def test_version_names_the_installed_package(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"waste-sorter {version('waste-sorter')}\n"


def test_verbose_works_before_and_after_the_subcommand(tmp_path, monkeypatch):
    log = tmp_path / "sort.jsonl"
    log.write_text("")
    asked = []
    monkeypatch.setattr(cli, "setup_logging", asked.append)  # the entry point's one logging switch
    for argv in (["-v", "logs", "--log", str(log)], ["logs", "-v", "--log", str(log)], ["logs", "--log", str(log)]):
        assert cli.main(argv) == 0
    assert asked == [True, True, False]


def test_no_command_is_a_usage_error_that_shows_the_global_options(capsys):
    assert main([]) == 2
    assert "[-v] [--version] COMMAND" in capsys.readouterr().out
