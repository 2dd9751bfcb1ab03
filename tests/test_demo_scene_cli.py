"""waste-sorter demo-scene: a --photos folder that is not there (one line, exit 65, no video), and
the board, light and subset chosen apart from the seed."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.cli import main as cli_main
from device.scenes.relight import CONDITIONS
from device.scenes.render import stage_of


def a_file(tmp):
    (tmp / "a-file.jpg").write_bytes(b"")
    return tmp / "a-file.jpg"


def empty(tmp):
    (tmp / "empty").mkdir()
    return tmp / "empty"


@pytest.mark.parametrize("make, expected", [
    (lambda tmp: tmp / "no-such-folder", "photo folder does not exist"),
    (a_file, "photo folder is unreadable (Not a directory)"),
    (empty, "no class folders with .jpg photos"),
], ids=["missing", "a-file", "empty"])
def test_bad_photos_folder(tmp_path, capsys, make, expected):
    photos = make(tmp_path)
    out_path = tmp_path / "scene.mp4"
    code = cli_main(["demo-scene", "--photos", str(photos), "--out", str(out_path)])
    out, err = capsys.readouterr()
    assert code == 65 and out == ""
    assert err == f"waste-sorter demo-scene: error: {photos}: {expected}\n"
    assert not out_path.exists()


SPLIT = Path(__file__).resolve().parents[1] / "device" / "model" / "split.json"


def first_frame(video: Path) -> np.ndarray:
    capture = cv2.VideoCapture(str(video))
    ok, frame = capture.read()
    capture.release()
    assert ok
    return frame.astype(np.float32)


def test_board_light_and_subset_apart_from_the_seed(trashnet, tmp_path, capsys):
    """--board-seed and --light fix the board and the light whatever --seed draws; --subset
    draws from another subset of --split; without them a scene is what it always was."""
    quick = ["--photos", str(trashnet), "--split", str(SPLIT), "--items", "2", "--overexposed", "0", "--glare", "0",
             "--noise", "0", "--light-changes", "0", "--still-s", "0.2", "--gap-s", "0.2", "--fps", "5"]
    scenes = {}
    for name, extra in {"a": ["--seed", "1", "--board-seed", "7", "--light", "warm", "--subset", "train"],
                        "b": ["--seed", "2", "--board-seed", "7", "--light", "warm", "--subset", "val"],
                        "plain": ["--seed", "7"]}.items():
        out = tmp_path / f"{name}.mp4"
        assert cli_main(["demo-scene", *quick, *extra, "--out", str(out)]) == 0
        scenes[name] = (json.loads(out.with_suffix(".truth.json").read_text()), first_frame(out))
    capsys.readouterr()
    manifest = json.loads(SPLIT.read_text())
    assert scenes["a"][0]["stage"] == {"seed": 1, "board_seed": 7, "light": "warm"}
    assert scenes["plain"][0]["stage"] == {"seed": 7}  # the defaults: as before
    for name, subset in (("a", "train"), ("b", "val"), ("plain", "test")):
        assert {i["source"] for i in scenes[name][0]["items"]} <= {p for p, _ in manifest[subset]}
    (truth_a, board_a), (_, board_b), (_, board_plain) = scenes["a"], scenes["b"], scenes["plain"]
    assert np.abs(board_a - board_b).mean() < 1.0  # one board under one light, other items
    blue, red = board_a[..., 0].mean(), board_a[..., 2].mean()  # BGR
    assert red - blue > 40 and abs(board_plain[..., 2].mean() - board_plain[..., 0].mean()) < 10  # warm light
    stage = stage_of(truth_a["stage"])  # what score-scene --reference lays the photos on
    assert stage.light == CONDITIONS["warm"].light and stage.board.shape[:2] == board_a.shape[:2]
    assert cli_main(["demo-scene", "--photos", str(trashnet), "--subset", "val", "--out", str(tmp_path / "x.mp4")]) == 2
    assert "--subset needs --split" in capsys.readouterr().err


def test_help_shows_every_nuisances_default(capsys):
    """`demo-scene --help` says what a scene has when an option is left out, and what
    --all-nuisances sets."""
    with pytest.raises(SystemExit) as info:
        cli_main(["demo-scene", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for option, default in (("--overexposed OVEREXPOSED", "(default 2)"), ("--glare GLARE", "(default 2)"),
                            ("--flash FLASH", "(default 0)"), ("--clip CLIP", "(default 0)"),
                            ("--quick QUICK", "(default 0)"), ("--shake-px SHAKE_PX", "default 0.0)"),
                            ("--noise NOISE", "(default 2.0)"), ("--light-changes LIGHT_CHANGES", "(default 1)"),
                            ("--hands HANDS", "(default 0)"), ("--at-start", "(default: off)"),
                            ("--motion-blur", "(default: off)")):
        after = text.split(f" {option} ", 1)[1]
        assert default in after.split(" --", 1)[0], option
    assert "overexposed 5%, glare 8%, flash 8%, clip 8%, quick 8% of --items" in text
