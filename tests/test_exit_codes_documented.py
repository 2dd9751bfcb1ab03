"""Every exit code a command uses is in the README's table of exit codes: the ``exit_code`` of
each error class and each code a command returns itself, found in the source (so a module
added later is held to it too)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def documented_codes() -> set[int]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| exit | meaning |"):]
    table = table[:table.index("\n\n")]
    codes: set[int] = set()
    for row in table.splitlines()[2:]:
        cell = row.split("|")[1].strip()
        lo, _, hi = cell.partition("-")
        codes.update(range(int(lo), int(hi or lo) + 1))
    return codes


def command_modules() -> list[Path]:
    """The modules of the commands (device/cli.py names them) and the dispatcher itself."""
    from device.cli import SUBCOMMANDS

    return [ROOT / "device" / "cli.py"] + [ROOT / (module.replace(".", "/") + ".py")
                                           for module, _ in SUBCOMMANDS.values()]


def used_codes() -> dict[int, str]:
    used: dict[int, str] = {2: "argparse"}
    for folder in ("device", "calibration", "export"):
        for path in (ROOT / folder).rglob("*.py"):
            for code in re.findall(r"exit_code = (\d+)", path.read_text()):
                used[int(code)] = str(path.relative_to(ROOT))
    for path in command_modules():
        for code in re.findall(r"^\s+return (\d+)$", path.read_text(), flags=re.M):
            used[int(code)] = str(path.relative_to(ROOT))
    return used


def test_the_readme_lists_every_exit_code_the_commands_use():
    documented = documented_codes()
    missing = {code: where for code, where in used_codes().items() if code not in documented}
    assert not missing, f"exit codes used but not in the README's table: {missing}"
    assert {3, 65, 74, 78, 79, 80, 9, 15} <= documented
