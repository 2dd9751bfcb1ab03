"""Training on device photos: exported captures are split by item and stably, several --data
folders are one split (the first keeping its manifest), evaluate reports device photos apart,
and the whole path without the loop: capture -> label -> export -> fine-tune the shipped model
-> export -> quantize -> evaluate (slow: torch)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import (BLUE, GREEN, PER_CLASS, RED, SHIPPED, TRASHNET, fine_tune_and_evaluate, item_on,
                     label_from_truth, record)
from device.capture import CaptureWriter
from device.commands.capture_export import EXPORT_MARKER, EXPORT_KIND
from device.cli import main as cli_main
from device.contract import read_rgb
from device.commands.demo_scene import make_board
from device.errors import DataError
from device.scenes.render import SceneItem, scene_stage, still_view
from export.data_split import DataSplit, load_data_split, split_for_training
from export.split import SUBSETS, item_key, load_split, make_item_split, make_split


def write_export(root: Path, labels: dict[int, str], frames: int = 3, image=None) -> Path:
    """A folder as `captures export` writes it: CLASS/cap-ID-K.jpg and the marker."""
    image = np.full((48, 64, 3), 128, np.uint8) if image is None else image
    for capture_id, label in labels.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for k in range(1, frames + 1):
            cv2.imwrite(str(root / label / f"cap-{capture_id}-{k}.jpg"), image)
    (root / EXPORT_MARKER).write_text(json.dumps({"kind": EXPORT_KIND, "captures": labels}))
    return root


def subsets_by_item(split) -> dict[str, str]:
    """item -> its subset; fails if an item's photos are in two subsets."""
    owner: dict[str, str] = {}
    for subset in SUBSETS:
        for rel, _ in split.files[subset]:
            assert owner.setdefault(item_key(rel), subset) == subset, f"{rel} is in two subsets"
    return owner


def test_device_photos_are_split_by_capture_and_keep_their_subset_as_the_folder_grows(tmp_path):
    classes = ("glass", "metal", "paper")
    first = write_export(tmp_path / "a", {i: classes[i % 3] for i in range(1, 61)})
    before = make_split(first, val_frac=0.1, test_frac=0.2, seed=0)  # a capture export: by item, any seed
    assert before.method == "item" and before.device_photos
    owner = subsets_by_item(before)
    assert len(owner) == 60 and {s: list(owner.values()).count(s) for s in SUBSETS} == {
        "train": 45, "val": 3, "test": 12}  # a hash of each id: fixed for good
    # 140 captures more, and capture 7 relabelled: no earlier capture changes subset
    grown = write_export(tmp_path / "b", {**{i: classes[i % 3] for i in range(1, 201)}, 7: "paper"})
    after = make_item_split(grown, val_frac=0.1, test_frac=0.2)
    assert subsets_by_item(after).items() >= owner.items()
    assert make_split(grown, val_frac=0.1, test_frac=0.2, seed=5).files == after.files  # whatever the seed
    assert 0.12 < len(after.files["test"]) / (3 * 200) < 0.28


def test_several_folders_are_one_split_with_all_their_classes_in_name_order(tmp_path):
    photos = write_plain(tmp_path / "photos", {"metal": 4, "paper": 4, "trash": 4})
    device = write_export(tmp_path / "device", {1: "glass", 2: "metal", 3: "metal", 4: "glass"})
    one = DataSplit((make_split(photos, val_frac=0.25, test_frac=0.25, seed=0),))
    assert one.sha256 == one.folders[0].sha256  # one folder: the manifest and hash of before
    one.save(tmp_path / "one.json")
    assert "folders" not in json.loads((tmp_path / "one.json").read_text())
    two = split_for_training(tmp_path / "s.json", tmp_path / "s.json", [photos, device], val_frac=0.25,
                             test_frac=0.25, seed=0)
    assert two.classes == ("glass", "metal", "paper", "trash")
    assert {(p.parent.name, label) for p, label in two.paths("train") + two.paths("test")} <= {
        ("glass", 0), ("metal", 1), ("paper", 2), ("trash", 3)}
    again = load_data_split(tmp_path / "s.json", [photos, device])
    assert again.sha256 == two.sha256 and again.folders[1].device_photos
    with pytest.raises(DataError, match=r"s\.json: a split of 2 data folders, but 1 --data folders were given"):
        load_data_split(tmp_path / "s.json", [photos])
    with pytest.raises(DataError, match=r"one\.json: a split of one data folder, but 2 --data folders"):
        load_data_split(tmp_path / "one.json", [photos, device])


def test_the_first_folder_keeps_the_manifest_it_was_given(tmp_path):
    photos = write_plain(tmp_path / "photos", {"metal": 8, "paper": 8})
    manifest = make_split(photos, val_frac=0.25, test_frac=0.25, seed=7)
    manifest.save(tmp_path / "model-split.json")
    device = write_export(tmp_path / "device", {i: "metal" for i in range(1, 9)})
    out = tmp_path / "run" / "split.json"
    split = split_for_training(tmp_path / "model-split.json", out, [photos, device], val_frac=0.1,
                               test_frac=0.1, seed=0)
    assert split.folders[0].files == manifest.files  # its test photos stay out, as for the model before
    assert load_data_split(out, [photos, device]).sha256 == split.sha256  # written where export looks
    assert json.loads((tmp_path / "model-split.json").read_text())["sha256"] == manifest.sha256  # untouched


def test_replay_takes_at_most_n_per_class_of_the_first_folder_and_all_device_photos(tmp_path):
    photos = write_plain(tmp_path / "photos", {"metal": 12, "paper": 12})
    device = write_export(tmp_path / "device", {i: "metal" for i in range(1, 41)})
    split = split_for_training(tmp_path / "s.json", tmp_path / "s.json", [photos, device], val_frac=0.0,
                               test_frac=0.25, seed=0)
    items = split.training_items(with_val=False, replay_per_class=2)
    first = [p for p, _ in items if p.parent.parent == photos]
    assert sorted(p.parent.name for p in first) == ["metal", "metal", "paper", "paper"]
    assert [p for p, _ in items if p.parent.parent == device] == [p for p, _ in split.folder_paths(1, "train")]
    assert len(split.training_items(with_val=False)) == len(split.paths("train"))


def write_plain(root: Path, counts: dict[str, int]) -> Path:
    """An ImageFolder of small grey photos."""
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / name / f"{i}.png"), np.full((24, 32, 3), 100 + i, np.uint8))
    return root


def with_label(manifest: dict, label) -> dict:
    """``manifest`` with its first train photo's class index set to ``label``, hash made to match."""
    files = {s: [list(f) for f in manifest[s]] for s in SUBSETS}
    files["train"][0][1] = label
    return {**manifest, **files, "sha256": hashlib.sha256(json.dumps(
        {"classes": manifest["classes"], **files}, sort_keys=True, separators=(",", ":")).encode()).hexdigest()}


@pytest.mark.parametrize("spoil, message", [
    (lambda m: {"folders": 3}, "split manifest key 'folders': expected a list of folder manifests, got 3"),
    (lambda m: {"folders": [1]}, r"split manifest key 'folders': expected a list of folder manifests, got \[1\]"),
    (lambda m: b"[" * 100_000, r"unreadable split manifest \(nested more than 32 levels deep\)"),
    (lambda m: b'{"seed": NaN}', r"unreadable split manifest \(NaN is not a number this project reads\)"),
    (lambda m: ["a"], r"unreadable split manifest \(not a JSON object\)"),
    (lambda m: with_label(m, 2), r"split manifest key 'train': class index 2 of 'metal/0\.png' is not one of the 2 "
                                 r"classes \(0 to 1\)"),
    (lambda m: with_label(m, -1), "split manifest key 'train': class index -1 of"),
    (lambda m: with_label(m, "0"), r"split manifest key 'train': expected \[path, class index\], "
                                   r"got \['metal/0.png', '0'\]"),
    (lambda m: {**m, "classes": "metal"}, "split manifest key 'classes': expected a list of class names"),
    (lambda m: {k: v for k, v in m.items() if k != "test"}, "split manifest key 'test': missing"),
])
def test_a_bad_split_manifest_is_a_one_line_error_naming_the_file(tmp_path, spoil, message):
    photos = write_plain(tmp_path / "photos", {"metal": 4, "paper": 4})
    manifest = make_split(photos, val_frac=0.25, test_frac=0.25, seed=0).body()
    spoiled = spoil(manifest)
    path = tmp_path / "split.json"
    path.write_bytes(spoiled if isinstance(spoiled, bytes) else json.dumps(spoiled).encode())
    for read in (lambda: load_data_split(path, [photos]), lambda: load_split(path, photos),
                 lambda: split_for_training(path, tmp_path / "run" / "split.json", [photos], val_frac=0.25,
                                            test_frac=0.25, seed=0)):
        with pytest.raises(DataError, match=f"^{re.escape(str(path))}: {message}") as error:
            read()
        assert "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_train_always_writes_the_split_it_used_where_export_looks(tmp_path):
    photos = write_plain(tmp_path / "photos", {"metal": 4, "paper": 4})
    device = write_export(tmp_path / "device", {i: "metal" for i in range(1, 5)})
    fractions = {"val_frac": 0.25, "test_frac": 0.25, "seed": 0}
    made, out = tmp_path / "made.json", tmp_path / "run" / "split.json"
    split = split_for_training(made, out, [photos, device], **fractions)  # --split names a file not there yet
    assert load_data_split(made, [photos, device]).sha256 == split.sha256  # made there
    assert load_data_split(out, [photos, device]).sha256 == split.sha256  # and where export looks
    out.unlink()
    assert split_for_training(made, out, [photos, device], **fractions).sha256 == split.sha256  # as it is
    assert load_data_split(out, [photos, device]).sha256 == split.sha256
    one = tmp_path / "one.json"
    make_split(photos, **fractions).save(one)
    out.unlink()
    assert split_for_training(one, out, [photos], **fractions).sha256 == load_split(one, photos).sha256
    assert load_data_split(out, [photos]).sha256 == load_split(one, photos).sha256


def test_evaluate_reports_device_photos_apart(tmp_path, colour_model_path, capsys):
    board = make_board(seed=1)
    photos = tmp_path / "photos"
    for label, colour in (("cardboard", RED), ("glass", GREEN)):
        (photos / label).mkdir(parents=True)
        cv2.imwrite(str(photos / label / "a.png"), cv2.cvtColor(item_on(board, colour), cv2.COLOR_RGB2BGR))
    # device photos: a blue item (metal) said right, a blue item labelled glass said wrong
    device = write_export(tmp_path / "device", {1: "metal", 2: "glass"}, frames=2,
                          image=cv2.cvtColor(item_on(board, BLUE), cv2.COLOR_RGB2BGR))
    argv = ["evaluate", "--model", str(colour_model_path), "--data", str(photos), "--data", str(device)]
    assert cli_main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["n"], report["accuracy"]) == (6, 4 / 6)
    assert [(f["data"], f["device_photos"], f["n"], f["accuracy"]) for f in report["folders"]] == [
        (str(photos), False, 2, 1.0), (str(device), True, 4, 0.5)]
    assert (report["device_photos"]["n"], report["device_photos"]["accuracy"]) == (4, 0.5)
    assert cli_main(argv) == 0
    text = capsys.readouterr().out
    assert "  device photos   50.00% on     4  " in text and "accuracy on device photos: 50.00% on 4 photos" in text


def test_starting_from_a_model_of_other_classes_is_said(caplog):
    pytest.importorskip("torch")
    from export.onnx_weights import warn_other_classes

    warn_other_classes(SHIPPED, ("cardboard", "glass", "metal", "paper", "plastic", "trash"))
    assert caplog.text == ""
    warn_other_classes(SHIPPED, ("glass", "metal"))
    assert "its classes (cardboard, glass, metal, paper, plastic, trash) are not the data's (glass, metal)" \
        in caplog.text


# ---------------------------------------------------------------- the whole path (torch)

@pytest.mark.slow
def test_captures_labelled_exported_and_fine_tuned_on_without_the_loop(small_trashnet, tmp_path, capsys):
    pytest.importorskip("torch")
    stage = scene_stage(seed=1)
    classes = ("cardboard", "glass", "metal", "paper", "plastic", "trash")
    truth = {}
    with CaptureWriter(tmp_path / "caps", min_confidence=0.55, sample_every=2, classes=classes) as w:
        for item in range(1, 17):  # items on the demo board, as the camera sees them
            label = classes[item % 6]
            photo = sorted((TRASHNET / label).glob("*.jpg"))[PER_CLASS + item]
            frame = still_view(SceneItem(read_rgb(str(photo)), label), stage)
            capture_id = w.offer(record(item, 0.4 if item % 3 else 0.9, label), [frame, frame])
            if capture_id:
                truth[capture_id] = label
    assert len(truth) == 13  # 11 uncertain, and items 6 and 12 (confident, sampled)
    label_from_truth(tmp_path / "caps", truth)
    export = tmp_path / "export"
    assert cli_main(["captures", "export", "--dir", str(tmp_path / "caps"), "--out", str(export)]) == 0
    assert "exported 13 captures (26 photos)" in capsys.readouterr().out
    report = fine_tune_and_evaluate(small_trashnet, export, tmp_path / "run", capsys)
    assert 0.0 <= report["device_photos"]["accuracy"] <= 1.0
    int8 = tmp_path / "model-int8.onnx"
    assert cli_main(["quantize", "--model", str(tmp_path / "run" / "model.onnx"), "--data", str(small_trashnet),
                     "--data", str(export), "--split", str(tmp_path / "run" / "split.json"), "--out", str(int8),
                     "--calibration-photos", "8", "--max-drop", "100", "--relight", "none"]) == 0
    assert f"test split ({report['n']} photos)" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "run")  # checkpoints are large
