"""calibrate --test-item: after calibrating on a recorded scene, the next item is classified."""

from __future__ import annotations

from device.cli import main as cli_main
from device.demo_scene import SceneItem, Timing, make_board, render
from conftest import RED, item_on


def test_test_item_step_classifies_the_next_item(tmp_path, colour_model_path, capsys):
    board = make_board(seed=4)
    render([SceneItem(item_on(board, RED), "cardboard")], tmp_path / "scene.mp4", board=board,
           timing=Timing(fps=10, lead_in_s=3.0), seed=4)
    config = tmp_path / "config.toml"
    config.write_text(f'[model]\npath = "{colour_model_path}"\n')
    code = cli_main(["calibrate", "--config", str(config), "--source", str(tmp_path / "scene.mp4"),
                     "--out", str(tmp_path / "cal" / "calibration.json"), "--frames", "10", "-y", "--no-reload",
                     "--test-item"])
    out = capsys.readouterr().out
    assert code == 0
    assert "7. Test item: place one item on the board." in out
    assert "classified as cardboard (cardboard 1.00" in out
