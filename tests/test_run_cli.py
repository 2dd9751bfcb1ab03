"""The run command's start-up checks and its end: a calibration made for another frame size is
refused (at start and on reload), and sort records the log could not take reach the journal.

The command is device.cli.main on a real video (the shared two-item scene) with the mock pin
factory; the camera seam is wrapped only to make it stop, as test_camera_stops.py does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest

from device.calibration_file.store import save_calibration
from helpers import make_calibration
from device.commands import run as run_cli
from device.camera import CameraBase, open_camera
from device.cli import main as cli_main
from device.commands.demo_scene import make_board
from device.errors import CalibrationError, CameraError
from device.gate import board_stats

BOARD = make_board(seed=1)  # 512 x 384, the camera's default size


pytestmark = pytest.mark.usefixtures("own_signal_handlers")  # main() installs the sorter's handlers


def scene_calibration(cal_id: str, board=BOARD):
    h, w = board.shape[:2]
    return replace(make_calibration(cal_id), board=board_stats(board), image_size=(w, h))


def test_calibration_for_another_frame_size_is_refused_at_start(tmp_path, config_path, colour_model_path,
                                                                 capsys):
    small = make_board(size=(128, 96), seed=1)
    cal_path = save_calibration(tmp_path / "cal" / "calibration.json", scene_calibration("small-1", small), small)
    code = cli_main(["run", "--check-config", "--config", str(config_path), "--model", str(colour_model_path),
                     "--calibration", str(cal_path)])
    out, err = capsys.readouterr()
    assert code == 80 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"waste-sorter run: error: {cal_path}: image_size 128x96 ")
    assert "512x384" in err


def test_reload_checks_the_frame_size_too(two_item_scene, tmp_path, config_path, colour_model_path, capsys,
                                          monkeypatch):
    cal_path = save_calibration(tmp_path / "cal" / "calibration.json", scene_calibration("cal-1"), BOARD)
    loaders = []
    real_sorter = run_cli.Sorter

    def sorter_spy(*args, **kwargs):  # the loader main() hands the loop for SIGHUP
        loaders.append(kwargs["calibration_loader"])
        return real_sorter(*args, **kwargs)

    monkeypatch.setattr(run_cli, "Sorter", sorter_spy)
    code = cli_main(["run", "--config", str(config_path), "--source", str(two_item_scene[0]),
                     "--model", str(colour_model_path), "--calibration", str(cal_path),
                     "--log", str(tmp_path / "sort.jsonl")])
    capsys.readouterr()
    assert code == 0 and len(loaders) == 1
    assert loaders[0]()[0].id == "cal-1"
    small = make_board(size=(128, 96), seed=1)  # a valid calibration, for another camera size
    save_calibration(cal_path, scene_calibration("small-2", small), small)
    with pytest.raises(CalibrationError, match=r"image_size 128x96 of calibration small-2 .* 512x384"):
        loaders[0]()


class StopsAfter(CameraBase):
    """The real camera until ``n`` frames were delivered, then CameraError (a camera that stops)."""

    def __init__(self, inner, n: int):
        self.inner, self.n, self.frames = inner, n, 0

    def capture(self):
        if self.frames >= self.n:
            raise CameraError("scripted: camera stopped delivering frames")
        self.frames += 1
        return self.inner.capture()

    def close(self) -> None:
        self.inner.close()


def journaled_records(caplog) -> list[dict]:
    prefix = "unwritten sort record: "
    return [json.loads(r.getMessage()[len(prefix):]) for r in caplog.records
            if r.name == "device.commands.run" and r.levelno == logging.ERROR and r.getMessage().startswith(prefix)]


def test_records_the_log_could_not_take_reach_the_journal_when_the_camera_stops(
        two_item_scene, tmp_path, config_path, colour_model_path, caplog, capsys, monkeypatch):
    scene_path, truth = two_item_scene
    stop_after = round(truth[0]["leave_s"] * 10) + 3  # item 1 sorted, item 2 not yet there
    monkeypatch.setattr(run_cli, "open_camera", lambda source, **kw: StopsAfter(open_camera(source, **kw), stop_after))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # the log's folder is a file: every write fails
    with caplog.at_level(logging.ERROR, logger="device"):
        code = cli_main(["run", "--config", str(config_path), "--source", str(scene_path),
                         "--model", str(colour_model_path), "--log", str(blocker / "sort.jsonl")])
    out, err = capsys.readouterr()
    assert code == 74 and err == "waste-sorter run: error: scripted: camera stopped delivering frames\n"
    assert [(r["item"], r["bin"], r["label"]) for r in journaled_records(caplog)] == [(1, "paper", "cardboard")]


def test_records_the_log_could_not_take_reach_the_journal_at_the_end(
        two_item_scene, tmp_path, config_path, colour_model_path, caplog, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with caplog.at_level(logging.ERROR, logger="device"):
        code = cli_main(["run", "--config", str(config_path), "--source", str(two_item_scene[0]),
                         "--model", str(colour_model_path), "--log", str(blocker / "sort.jsonl")])
    capsys.readouterr()
    assert code == 75
    assert [(r["item"], r["bin"]) for r in journaled_records(caplog)] == [(1, "paper"), (2, "metal")]



@pytest.mark.parametrize("option, expected", [
    (["--max-items", "0"], "--max-items must be at least 1"),
    (["--source", "picamera2:x"], "--source: camera source 'picamera2:x': expected picamera2, picamera2:N or "
                                  "opencv:N (N a camera number)"),
])
def test_a_bad_option_is_a_one_line_usage_error(config_path, colour_model_path, capsys, option, expected):
    code = cli_main(["run", "--config", str(config_path), "--model", str(colour_model_path)] + option)
    assert code == 2
    assert capsys.readouterr().err.strip() == f"waste-sorter run: error: {expected}"
