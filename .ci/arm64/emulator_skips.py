"""pytest plugin of the arm64 lane (make test-arm64; loaded with -p emulator_skips): tests that
cannot work under proot + qemu-user are skipped there, each with its reason. Active only when
WASTE_SORTER_EMULATED=1 (set by .ci/arm64/enter.sh); the x86 suite never loads it.

Tests that need the train extra (torch) skip on their own in this lane, which installs the
device side and the dev extra only, by pytest.importorskip("torch") ("could not import 'torch'"):
tests/test_export_pipeline.py and tests/test_warm_start.py (whole files), one test of
tests/test_board_normalisation.py and of tests/test_capture_loop.py, two of
tests/test_capture_training.py."""

from __future__ import annotations

import os

import pytest

#: test node id (or a prefix of one: a file, a test without its parameters) -> why it cannot
#: work under the emulator
SKIPS: dict[str, str] = {
    "tests/test_signals.py::test_sigterm_during_actuation_makes_pins_safe_at_once_and_run_returns[capture-times-out]":
        "asserts the pins are safe within 0.1 s of wall time after the signal; emulated code runs "
        "tens of times slower than a Pi (0.124 s measured here)",
    "tests/test_signals.py::test_sighup_reloads_only_when_the_board_is_empty":
        "qemu-user delivers a signal a process sends itself (os.kill(os.getpid(), SIGHUP)) after "
        "kill() has returned; the test checks the handler ran right after os.kill, as Linux does",
}


def pytest_collection_modifyitems(config, items):
    if os.environ.get("WASTE_SORTER_EMULATED") != "1":
        return

    def matches(nodeid: str, prefix: str) -> bool:
        return nodeid == prefix or nodeid.startswith(prefix + "[") or nodeid.startswith(prefix + "::")

    for item in items:
        for prefix, reason in SKIPS.items():
            if matches(item.nodeid, prefix):
                item.add_marker(pytest.mark.skip(reason=f"arm64 lane (proot + qemu-user): {reason}"))
                break
