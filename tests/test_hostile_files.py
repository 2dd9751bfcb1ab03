"""Special files and impossible paths for every command that reads a file: no traceback, no
hang, the documented exit code and one line naming the path.

The table crosses the kinds of hostile path (a directory, a FIFO, a link to an endless device,
a dangling and a looping symbolic link, a name longer than the file system allows, a file
without read permission) with every option of every command that names a file to read. Each
command runs in this process through ``device.cli.main``; "one line" counts the error line on
stderr and the WARNING records the command logs (each is one line on stderr). A watchdog alarm
turns a hang into a failure, and a memory ceiling turns a read of ``/dev/zero`` into one before
it can take the machine's memory.

Tests run as root in CI, and root reads a file without read permission: there the
no-permission cases run in one subprocess that may not override file modes.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

from device.calibration_file.store import save_calibration
from helpers import CONFIG, colour_contract, colour_model, make_calibration
from device.cli import main as cli_main
from device.commands.demo_scene import make_board
from device.gate import board_stats
from export.package import save_model

HANG_S = 20  # far beyond any of these commands' own time; a FIFO would block forever
MEMORY_HEADROOM_BYTES = 1 << 30
KINDS = ("directory", "fifo", "endless-device", "dangling-symlink", "looping-symlink", "too-long-path",
         "no-permission")
AS_ROOT = os.geteuid() == 0
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2  # <linux/prctl.h>, <linux/capability.h>


class Hung(BaseException):
    """Raised by the watchdog alarm; not an OSError (TimeoutError is one), which a reader would
    catch and report as an unreadable file."""


def make_hostile(folder: Path, kind: str) -> Path:
    """A path of ``kind`` in ``folder``."""
    path = folder / "hostile"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "endless-device":
        path.symlink_to("/dev/zero")
    elif kind == "dangling-symlink":
        path.symlink_to(folder / "gone")
    elif kind == "looping-symlink":
        path.symlink_to(path)
    elif kind == "too-long-path":
        path = folder / ("x" * 300)  # NAME_MAX is 255
    elif kind == "no-permission":
        path.write_text('{"a": 1}\n')
        path.chmod(0)
    else:  # pragma: no cover - a typo in the table
        raise ValueError(kind)
    return path


def inputs(folder: Path) -> dict[str, Path]:
    """Valid files for the options a case does not make hostile."""
    files = {"config": folder / "config.toml", "model": folder / "colour.onnx", "log": folder / "sort.jsonl",
             "status": folder / "status.json", "video": folder / "missing.mp4", "photos": folder / "photos"}
    files["config"].write_text(CONFIG)
    files["truth"] = folder / "scene.truth.json"
    files["truth"].write_text('{"items": []}')
    save_model(colour_model(), files["model"], colour_contract())
    files["photos"].mkdir()
    return files


#: What the line says about each kind of path.
PROBLEM = {"directory": "directory", "fifo": "FIFO", "endless-device": "character device",
           "dangling-symlink": "dangling symbolic link", "looping-symlink": "symbolic link that loops",
           "too-long-path": "too long", "no-permission": "Permission denied"}

# (command line with H for the hostile path, the exit code, what the line names)
CASES = {
    "run --config": (["run", "--check-config", "--model", "{model}", "--config", "H"], 78, "config file"),
    "run --calibration": (["run", "--check-config", "--config", "{config}", "--model", "{model}",
                           "--calibration", "H"], 80, "calibration file"),
    "run --model": (["run", "--check-config", "--config", "{config}", "--model", "H"], 79, "model"),
    "run --log": (["run", "--check-config", "--config", "{config}", "--model", "{model}", "--log", "H"], 78,
                  "sort log"),
    "run --source": (["run", "--config", "{config}", "--model", "{model}", "--log", "{log}", "--source", "H"],
                     74, "camera source"),
    "calibrate --check --out": (["calibrate", "--check", "--source", "sim", "--width", "64", "--height", "48",
                                 "--out", "H"], 80, "calibration file"),
    "calibrate --config": (["calibrate", "--check", "--source", "sim", "--config", "H"], 78, "config file"),
    "logs --log": (["logs", "--log", "H"], 65, "sort log"),
    "logs --config": (["logs", "--config", "H"], 78, "config file"),
    "status --status-file": (["status", "--log", "{log}", "--status-file", "H"], 0, "runtime status"),
    "status --log": (["status", "--status-file", "{status}", "--log", "H"], 0, "sort log"),
    "status --config": (["status", "--status-file", "{status}", "--config", "H"], 78, "config file"),
    "evaluate --model": (["evaluate", "--data", "{photos}", "--model", "H"], 79, "model"),
    "score-scene --truth": (["score-scene", "--log", "{log}", "--truth", "H"], 65, "scene truth file"),
    "score-scene --log": (["score-scene", "--truth", "{truth}", "--log", "H"], 65, "sort log"),
}  # bench loads its --model through the same Classifier as run and evaluate
# A folder is a source of images, and a sort log may be a link to a file yet to be written; a
# log without write permission is the documented read-only disk (records kept, exit 75).
NOT_HOSTILE = {("run --source", "directory"), ("run --log", "dangling-symlink"), ("run --log", "no-permission")}
TABLE = [pytest.param(case, kind, id=f"{case}-{kind}") for case in CASES for kind in KINDS
         if (case, kind) not in NOT_HOSTILE and not (AS_ROOT and kind == "no-permission")]  # root: see below


def argv_for(case: str, hostile: Path, files: dict[str, Path]) -> list[str]:
    template, _, _ = CASES[case]
    return [str(hostile) if arg == "H" else arg.format(**files) for arg in template]


def shown(path: Path) -> str:
    """What of ``path`` a one-line message must hold (a too-long one is shortened in the middle)."""
    return str(path)[:100]


@pytest.fixture
def guarded(monkeypatch):
    """An alarm that ends a hang with TimeoutError, and a ceiling on this process's memory."""
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    saved_handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

    def hung(signum, frame):
        raise Hung(f"the command still runs after {HANG_S} s")

    previous = signal.signal(signal.SIGALRM, hung)
    limits = resource.getrlimit(resource.RLIMIT_DATA)
    with open("/proc/self/status") as fh:
        data_kib = next(int(line.split()[1]) for line in fh if line.startswith("VmData:"))
    ceiling = data_kib * 1024 + MEMORY_HEADROOM_BYTES
    if limits[1] == resource.RLIM_INFINITY or ceiling < limits[1]:
        resource.setrlimit(resource.RLIMIT_DATA, (ceiling, limits[1]))
    signal.alarm(HANG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_DATA, limits)
        for s, handler in saved_handlers.items():
            signal.signal(s, handler)


def run_in_process(argv: list[str], capsys, caplog) -> tuple[int, list[str]]:
    """(exit code, the lines the command writes to stderr: its error line and its warnings)."""
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        code = cli_main(argv)
    err = capsys.readouterr().err
    lines = err.splitlines() + [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    return code, lines


@pytest.mark.parametrize("case, kind", TABLE)
def test_a_hostile_path_is_one_line_and_the_documented_exit_code(case, kind, tmp_path, capsys, caplog, guarded):
    files = inputs(tmp_path)
    hostile = make_hostile(tmp_path, kind)
    code, lines = run_in_process(argv_for(case, hostile, files), capsys, caplog)
    _, expected_code, what = CASES[case]
    assert code == expected_code, lines
    assert len(lines) == 1, lines
    assert shown(hostile) in lines[0] and what in lines[0] and PROBLEM[kind] in lines[0], lines


def _without_file_mode_override() -> None:
    """In the child before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding
    set, so root's process, after exec, is refused a file its mode does not let it read."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_no_permission_as_root(tmp_path):
    """Every case of the table with a file its user may not read, for root: in one subprocess
    that cannot override file modes (root reads any file otherwise)."""
    if not AS_ROOT:
        pytest.skip("not root: the table's no-permission cases run in this process")
    runs = []
    for case in CASES:
        if (case, "no-permission") in NOT_HOSTILE:
            continue
        work = tmp_path / case.replace(" ", "_").replace("-", "")
        work.mkdir()
        files = inputs(work)
        hostile = make_hostile(work, "no-permission")
        runs.append((case, str(hostile), argv_for(case, hostile, files)))
    driver = (
        "import io, json, logging, sys\n"
        "from contextlib import redirect_stderr, redirect_stdout\n"
        "from device.cli import main\n"
        "try:\n"
        "    open(sys.argv[2]).read()\n"
        "except PermissionError:\n"
        "    pass\n"
        "else:\n"
        "    sys.exit('OVERRIDE: this process still reads a file without read permission')\n"
        "results = []\n"
        "for case, argv in json.loads(sys.argv[1]):\n"
        "    err = io.StringIO()\n"
        "    logging.getLogger().handlers.clear()\n"
        "    with redirect_stderr(err), redirect_stdout(io.StringIO()):\n"
        "        code = main(argv)\n"
        "    results.append((case, code, err.getvalue()))\n"
        "print(json.dumps(results))\n")
    try:
        proc = subprocess.run([sys.executable, "-c", driver, json.dumps([(c, a) for c, _, a in runs]), runs[0][1]],
                              capture_output=True, text=True, timeout=HANG_S * len(runs), cwd=tmp_path,
                              preexec_fn=_without_file_mode_override,
                              env={**os.environ, "GPIOZERO_PIN_FACTORY": "mock"})
    except subprocess.SubprocessError as exc:  # no CAP_SETPCAP to drop capabilities with
        pytest.skip(f"cannot drop root's file-mode override here ({exc})")
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = {case: (code, err) for case, code, err in json.loads(proc.stdout.splitlines()[-1])}
    for case, hostile, _ in runs:
        code, err = results[case]
        _, expected_code, what = CASES[case]
        lines = err.splitlines()
        assert (case, code) == (case, expected_code), err
        assert len(lines) == 1 and hostile in lines[0] and what in lines[0], (case, err)
        assert PROBLEM["no-permission"] in lines[0], (case, err)


# ---------------------------------------------------------------- one loader for run and calibrate --check

BOARD = make_board(seed=1)  # 512 x 384, the camera's default size


def scene_calibration(folder: Path, board=BOARD) -> Path:
    h, w = board.shape[:2]
    from dataclasses import replace

    calibration = replace(make_calibration("cal-1"), board=board_stats(board), image_size=(w, h))
    return save_calibration(folder / "calibration.json", calibration, board)


def spoil_board_missing(cal: Path) -> None:
    next(cal.parent.glob("board-*.png")).unlink()


def spoil_board_unreadable(cal: Path) -> None:
    next(cal.parent.glob("board-*.png")).write_bytes(b"not a png")


def spoil_board_wrong_size(cal: Path) -> None:
    import cv2

    cv2.imwrite(str(next(cal.parent.glob("board-*.png"))), BOARD[:100, :100])


def spoil_board_fifo(cal: Path) -> None:
    board = next(cal.parent.glob("board-*.png"))
    board.unlink()
    os.mkfifo(board)


def spoil_other_camera_size(cal: Path) -> None:
    small = make_board(size=(128, 96), seed=1)
    for old in cal.parent.glob("board-*.png"):
        old.unlink()
    cal.unlink()
    scene_calibration(cal.parent, small)


def spoil_dangling_link(cal: Path) -> None:
    cal.unlink()
    cal.symlink_to(cal.parent / "gone.json")


def spoil_looping_link(cal: Path) -> None:
    cal.unlink()
    cal.symlink_to(cal)


@pytest.mark.parametrize("spoil, message", [
    (spoil_board_missing, "board reference image is missing"),
    (spoil_board_unreadable, "board reference image is not a readable PNG"),
    (spoil_board_wrong_size, "board reference image is 100x100"),
    (spoil_board_fifo, "board reference image is a FIFO, not a regular file"),
    (spoil_other_camera_size, "image_size 128x96 of calibration cal-1 does not match the camera's 512x384"),
    (spoil_dangling_link, "calibration file is a dangling symbolic link"),
    (spoil_looping_link, "calibration file is a symbolic link that loops"),
], ids=["board-missing", "board-unreadable", "board-wrong-size", "board-fifo", "other-camera-size",
        "dangling-link", "looping-link"])
def test_calibrate_check_refuses_every_calibration_run_refuses(spoil, message, tmp_path, capsys, caplog, guarded):
    """``calibrate --check`` (cron) and ``run`` load a calibration through one loader: both exit
    80 with the same one line for a calibration the sorter cannot start with."""
    cal = scene_calibration(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    model = tmp_path / "colour.onnx"
    save_model(colour_model(), model, colour_contract())
    spoil(cal)
    run = run_in_process(["run", "--check-config", "--config", str(config), "--model", str(model),
                          "--calibration", str(cal)], capsys, caplog)
    check = run_in_process(["calibrate", "--check", "--source", "sim", "--config", str(config), "--out", str(cal)],
                           capsys, caplog)
    for code, lines in (run, check):
        assert code == 80 and len(lines) == 1 and message in lines[0], lines
    assert run[1][0].split(": error: ")[1] == check[1][0].split(": error: ")[1]


# ---------------------------------------------------------------- a FIFO among a folder's images

def test_a_fifo_named_like_an_image_is_skipped_not_waited_for(tmp_path, caplog, guarded):
    import cv2
    import numpy as np

    from device.camera import open_camera

    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "0001.png"), np.full((8, 8, 3), 90, np.uint8))
    os.mkfifo(folder / "0002.png")
    (folder / "0003.png").symlink_to("/dev/zero")
    cv2.imwrite(str(folder / "0004.png"), np.full((8, 8, 3), 200, np.uint8))
    with caplog.at_level(logging.WARNING), open_camera(str(folder)) as camera:
        frames = []
        while (frame := camera.capture()) is not None:
            frames.append(frame)
    assert [f.metadata["path"][-8:] for f in frames] == ["0001.png", "0004.png"]
    assert [f.index for f in frames] == [0, 3]  # the source time of the skipped images still passes
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"{folder / '0002.png'}: image is a FIFO, not a regular file, skipped",
                        f"{folder / '0003.png'}: image is a character device, not a regular file, skipped"]
