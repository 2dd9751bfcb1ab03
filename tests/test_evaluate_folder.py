"""``evaluate`` and ``scan_image_folder`` on real, messy photo folders: hidden files, nested and
upper-case photos, a corrupt file, folder names in another case and only some of the classes.
The model is the colour classifier from helpers.py (red -> cardboard, green -> glass, blue -> metal)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

import export.evaluate
from helpers import BLUE, GREEN, RED, colour_contract, colour_model
from device.classifier import Classifier
from device.cli import main as cli_main
from device.errors import DataError, UsageError
from export.ensemble import Ensemble
from export.package import save_model
from export.split import scan_image_folder


def photo(path: Path, rgb) -> Path:
    """A solid-colour photo at ``path`` (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((48, 64, 3), rgb[::-1], np.uint8)  # OpenCV writes BGR
    ok, data = cv2.imencode(path.suffix, image)
    assert ok
    path.write_bytes(data.tobytes())
    return path


@pytest.fixture
def messy(tmp_path) -> Path:
    """Folders "Glass" and "cardboard" (sorted: the reverse of the model's order), no metal."""
    root = tmp_path / "photos"
    photo(root / "Glass" / "g1.jpg", GREEN)
    photo(root / "Glass" / "X.JPG", GREEN)
    photo(root / "Glass" / "g2.png", GREEN)
    photo(root / "Glass" / "sub" / "nested.jpg", GREEN)
    photo(root / "Glass" / ".ipynb_checkpoints" / "g1-checkpoint.jpg", RED)  # hidden: not counted
    photo(root / "cardboard" / "r1.jpg", RED)
    (root / "cardboard" / "._r1.jpg").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (root / "cardboard" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "cardboard" / "notes.txt").write_text("not a photo")
    (root / "cardboard" / "corrupt.jpg").write_bytes(b"\xff\xd8 truncated")
    photo(root / ".ipynb_checkpoints" / "x.jpg", BLUE)  # a hidden folder is no class
    return root


def test_scan_skips_hidden_entries_and_walks_class_folders(messy):
    classes, per_class = scan_image_folder(messy)
    assert classes == ("Glass", "cardboard")
    assert per_class == {"Glass": ["Glass/X.JPG", "Glass/g1.jpg", "Glass/g2.png", "Glass/sub/nested.jpg"],
                         "cardboard": ["cardboard/corrupt.jpg", "cardboard/r1.jpg"]}


def test_scan_needs_two_classes_for_training_but_one_may_do(tmp_path):
    photo(tmp_path / "metal" / "a.webp", BLUE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=">= 2 class folders"):
        scan_image_folder(tmp_path)
    assert scan_image_folder(tmp_path, min_classes=1) == (("metal",), {"metal": ["metal/a.webp"]})


def test_evaluate_matches_folders_by_name_and_skips_an_unreadable_photo(messy, colour_model_path, capsys, caplog):
    caplog.set_level(logging.WARNING)
    assert cli_main(["evaluate", "--model", str(colour_model_path), "--data", str(messy), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 5
    assert {c: m["n"] for c, m in report["per_class"].items()} == {"cardboard": 1, "glass": 4, "metal": 0}
    assert report["accuracy"] == 1.0
    assert report["confusion"] == [[1, 0, 0], [0, 4, 0], [0, 0, 0]]
    assert report["skipped"] == [str(messy / "cardboard" / "corrupt.jpg")]
    assert "corrupt.jpg: not a readable image" in caplog.text

    assert cli_main(["evaluate", "--model", str(colour_model_path), "--data", str(messy)]) == 0
    text = capsys.readouterr().out
    assert "accuracy 100.00% on 5 photos" in text
    assert f"skipped 1 unreadable photo: {messy / 'cardboard' / 'corrupt.jpg'}" in text


def test_evaluate_a_single_class_folder(tmp_path, colour_model_path, capsys):
    photo(tmp_path / "Metal" / "b.png", BLUE)
    photo(tmp_path / "Metal" / "c.jpeg", RED)  # a metal photo the colour model calls cardboard
    assert cli_main(["evaluate", "--model", str(colour_model_path), "--data", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["n"], report["accuracy"], report["skipped"]) == (2, 0.5, [])
    assert report["confusion"][2] == [1, 0, 1]


def test_evaluate_refuses_an_unknown_folder_or_nothing_readable(tmp_path, colour_model_path, capsys):
    photo(tmp_path / "glass" / "a.jpg", GREEN)
    photo(tmp_path / "Glas" / "b.jpg", GREEN)
    assert cli_main(["evaluate", "--model", str(colour_model_path), "--data", str(tmp_path)]) == DataError.exit_code
    err = capsys.readouterr().err.strip()
    assert "class folders ['Glas'] are not classes of the model" in err and "\n" not in err

    bad = tmp_path / "bad"
    (bad / "glass").mkdir(parents=True)
    (bad / "glass" / "a.jpg").write_bytes(b"not a jpeg")
    assert cli_main(["evaluate", "--model", str(colour_model_path), "--data", str(bad)]) == DataError.exit_code
    assert "none of the 1 photos could be read" in capsys.readouterr().err


def test_unwritable_out_dir_keeps_the_result(messy, colour_model_path, tmp_path, capsys, caplog):
    caplog.set_level(logging.WARNING)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert cli_main(["evaluate", "--model", str(colour_model_path), "--data", str(messy), "--json",
                     "--out-dir", str(blocked)]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 5
    assert f"could not write the PNGs to {blocked}" in caplog.text

    assert cli_main(["evaluate", "--model", str(colour_model_path), "--data", str(messy), "--json",
                     "--out-dir", str(tmp_path / "pngs")]) == 0
    assert (tmp_path / "pngs" / "confusion.png").stat().st_size > 1000
    assert not (tmp_path / "pngs" / "most_confused.png").exists()  # nothing was wrong


def test_a_photo_gone_after_scoring_loses_only_its_png(tmp_path, colour_model_path, capsys, caplog, monkeypatch):
    photo(tmp_path / "photos" / "glass" / "a.jpg", GREEN)
    wrong = photo(tmp_path / "photos" / "metal" / "b.jpg", RED)  # said cardboard: on most_confused.png
    scored = export.evaluate.evaluate

    def then_photo_deleted(*args, **kwargs):  # a folder tidied up while the evaluation ran
        evaluation = scored(*args, **kwargs)
        wrong.unlink(missing_ok=True)
        return evaluation

    monkeypatch.setattr(export.evaluate, "evaluate", then_photo_deleted)
    caplog.set_level(logging.WARNING)
    assert cli_main(["evaluate", "--model", str(colour_model_path), "--data", str(tmp_path / "photos"), "--json",
                     "--out-dir", str(tmp_path / "pngs")]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 0.5
    assert f"could not write the PNGs to {tmp_path / 'pngs'} ({wrong}: " in caplog.text
    assert (tmp_path / "pngs" / "confusion.png").is_file()


def test_several_models_are_measured_as_their_ensemble(tmp_path, colour_model_path, capsys):
    """The mean of the members' probabilities, each with its own preprocessing: a sure, right
    model outvotes a mildly wrong one that alone gets every photo wrong; classes must agree."""
    photos = tmp_path / "photos"
    for name, rgb in (("cardboard", RED), ("glass", GREEN), ("metal", BLUE)):
        photo(photos / name / f"{name}.jpg", rgb)
    wrong = tmp_path / "wrong.onnx"
    save_model(colour_model(size=(32, 24), gain=-5.0), wrong, colour_contract(size=(32, 24)))  # its own input size

    def report(*models):
        argv = ["evaluate", *[a for m in models for a in ("--model", str(m))], "--data", str(photos), "--json"]
        assert cli_main(argv) == 0
        return json.loads(capsys.readouterr().out)

    assert report(colour_model_path)["accuracy"] == 1.0 and report(wrong)["accuracy"] == 0.0
    both = report(colour_model_path, wrong)
    assert both["accuracy"] == 1.0 and both["model"] == f"{colour_model_path} + {wrong}"
    images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(photos.rglob("*.jpg"))]
    with Classifier(colour_model_path) as right, Classifier(wrong) as bad, Ensemble([right, bad]) as ensemble:
        np.testing.assert_allclose(ensemble.probabilities(images),
                                   (right.probabilities(images) + bad.probabilities(images)) / 2)

    reordered = tmp_path / "reordered.onnx"
    classes = ("glass", "cardboard", "metal")
    save_model(colour_model(classes), reordered, colour_contract(classes))
    assert cli_main(["evaluate", "--model", str(colour_model_path), "--model", str(reordered),
                     "--data", str(photos)]) == UsageError.exit_code
    assert "differ" in capsys.readouterr().err
