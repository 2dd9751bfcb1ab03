"""calibrate --test-item: after calibrating on a recorded scene, the next item is classified
with the sorter's own choice of frames (device.item_frames)."""

from __future__ import annotations

from device.cli import main as cli_main
from device.commands.demo_scene import SceneItem, Timing, make_board, render
from helpers import RED, item_on


def calibrate_and_test(tmp_path, colour_model_path, capsys, item: SceneItem, board) -> tuple[int, str]:
    render([item], tmp_path / "scene.mp4", board=board, timing=Timing(fps=10, lead_in_s=3.0), seed=4)
    config = tmp_path / "config.toml"
    config.write_text(f'[model]\npath = "{colour_model_path}"\n')
    code = cli_main(["calibrate", "--config", str(config), "--source", str(tmp_path / "scene.mp4"),
                     "--out", str(tmp_path / "cal" / "calibration.json"), "--frames", "10", "-y", "--no-reload",
                     "--test-item"])
    return code, capsys.readouterr().out


def test_test_item_step_classifies_the_next_item(tmp_path, colour_model_path, capsys):
    board = make_board(seed=4)
    code, out = calibrate_and_test(tmp_path, colour_model_path, capsys, SceneItem(item_on(board, RED), "cardboard"),
                                   board)
    assert code == 0
    assert "7. Test item: place one item on the board." in out
    assert "classified as cardboard (cardboard 1.00" in out


def test_an_overexposed_test_item_says_why_it_was_not_classified(tmp_path, colour_model_path, capsys):
    board = make_board(seed=4)
    code, out = calibrate_and_test(tmp_path, colour_model_path, capsys,
                                   SceneItem(item_on(board, RED), "cardboard", "overexposed"), board)
    assert code == 0
    assert "rejected (overexposed)" in out
    assert "the item could not be classified: all frames rejected (overexposed x" in out
    assert "classified as" not in out
