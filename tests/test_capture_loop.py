"""Learn from the bin, end to end: a demo scene sorted with capture on (`waste-sorter run`, the
shipped model, gpiozero's MockFactory), the captures labelled from the scene's truth file,
exported, the shipped model fine-tuned on them for a few steps, and evaluated on device photos.
Every step's output is checked (slow: torch)."""

from __future__ import annotations

import json

import cv2
import pytest

from device.commands.capture_sheet import GAP_PX, TILE_SIZE
from device.cli import main as cli_main
from device.commands.score_scene import match
from device.sortlog import read_records
from export.split import scan_image_folder
from helpers import fine_tune_and_evaluate, label_from_truth

ITEMS = 8


@pytest.mark.slow
def test_a_scene_sorted_with_capture_on_is_labelled_exported_and_fine_tuned_on(small_trashnet, tmp_path,
                                                                               monkeypatch, capsys):
    pytest.importorskip("torch")
    scene = tmp_path / "scene.mp4"
    assert cli_main(["demo-scene", "--photos", str(small_trashnet), "--out", str(scene), "--items", str(ITEMS),
                     "--overexposed", "0", "--glare", "1", "--light-changes", "0", "--seed", "3"]) == 0
    truth = json.loads(scene.with_suffix(".truth.json").read_text())
    caps, log = tmp_path / "caps", tmp_path / "sort.jsonl"
    config = tmp_path / "config.toml"
    config.write_text(f'[capture]\nenabled = true\ndir = "{caps}"\nsample_every = 1\n')  # every item
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")

    # 1. sort with capture on: every record names its capture, which holds that record and its frames
    assert cli_main(["run", "--config", str(config), "--source", str(scene), "--log", str(log)]) == 0
    capsys.readouterr()
    records = list(read_records(log))
    assert len(records) == ITEMS and all(r["capture_id"] for r in records)
    assert cli_main(["captures", "list", "--dir", str(caps), "--json", "-n", "0"]) == 0
    captures = {str(c["id"]): c for c in map(json.loads, capsys.readouterr().out.splitlines())}
    assert sorted(captures, key=int) == [r["capture_id"] for r in records]
    for r in records:
        capture = captures[r["capture_id"]]
        assert capture["record"] == r and capture["label"] is None
        assert len(capture["frames"]) == r["frames_used"] > 0  # the frames the decision used
        assert cv2.imread(str(caps / capture["frames"][0])).shape == (384, 512, 3)

    # 2. a contact sheet of them, numbered
    sheet = tmp_path / "sheet.png"
    assert cli_main(["captures", "sheet", "--dir", str(caps), "--out", str(sheet)]) == 0
    assert f"{ITEMS} of {ITEMS} unlabelled captures" in capsys.readouterr().out
    w, h = TILE_SIZE
    assert cv2.imread(str(sheet)).shape[:2] == (2 * (h + GAP_PX) + GAP_PX, 5 * (w + GAP_PX) + GAP_PX)

    # 3. labelled from the truth file: each record's item is the scene item it belongs to
    per_item, phantoms = match(truth["items"], records)
    assert phantoms == [] and all(len(rs) == 1 for rs in per_item)
    label_from_truth(caps, {rs[0]["capture_id"]: item["label"] for item, rs in zip(truth["items"], per_item)})
    capsys.readouterr()
    assert cli_main(["captures", "list", "--dir", str(caps), "--json", "--unlabelled"]) == 0
    assert capsys.readouterr().out == ""

    # 4. exported: an ImageFolder of the items' frames under their true classes
    export = tmp_path / "export"
    assert cli_main(["captures", "export", "--dir", str(caps), "--out", str(export)]) == 0
    assert f"exported {ITEMS} captures" in capsys.readouterr().out
    classes, per_class = scan_image_folder(export, min_classes=1)
    truth_counts = {}
    for item in truth["items"]:
        truth_counts[item["label"]] = truth_counts.get(item["label"], 0) + 1
    frames_used = {r["capture_id"]: r["frames_used"] for r in records}
    assert {c: len({p.split("-")[1] for p in per_class[c]}) for c in classes} == truth_counts
    assert sum(map(len, per_class.values())) == sum(frames_used.values())

    # 5. fine-tuned from the shipped model on TrashNet and the device photos, evaluated apart
    report = fine_tune_and_evaluate(small_trashnet, export, tmp_path / "run", capsys)
    assert report["device_photos"]["n"] > 0
