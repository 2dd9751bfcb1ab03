"""waste-sorter demo-scene with a --photos folder that is not there: one line, exit 65, no video."""

from __future__ import annotations

import pytest

from device.cli import main as cli_main


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
