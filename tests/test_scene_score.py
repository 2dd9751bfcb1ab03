"""The realistic scene simulator and its scorer: ``waste-sorter demo-scene`` with every nuisance
on TrashNet test photos (the project's split), sorted by ``waste-sorter run``, scored by
``waste-sorter score-scene``; and the scorer's rules on a hand-written truth and log."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.cli import main as cli_main
from device.config import RoutingConfig
from device.scenes.render import Nuisances, SceneItem, Timing, make_board, render
from device.commands.score_scene import score

from helpers import BLUE, RED, item_on

SPLIT = Path(__file__).resolve().parents[1] / "device" / "model" / "split.json"


def item(n, kind, label, arrive_s):
    return {"item": n, "label": label, "kind": kind, "source": "", "arrive_s": arrive_s, "still_s": arrive_s + 0.4,
            "remove_s": arrive_s + 1.4, "leave_s": arrive_s + 1.8}


def record(t, label, bin_="paper", reason="", settled=True, confidence=0.9):
    return {"source_time": t, "label": label, "bin": bin_, "reason": reason, "settled": settled,
            "confidence": confidence}


def test_the_scorer_counts_one_record_per_item_extras_and_phantoms():
    truth = {"items": [item(1, "normal", "paper", 1.0), item(2, "normal", "glass", 4.0),
                       item(3, "overexposed", "metal", 7.0), item(4, "quick", "plastic", 10.0),
                       item(5, "normal", "metal", 13.0), item(6, "normal", "trash", 16.0)]}  # 6: no record
    records = [
        record(1.9, "paper"),  # item 1 at rest: right
        record(3.0, "cardboard"),  # settled after item 1 was gone (2.8 s): a phantom
        record(4.9, "glass"), record(5.5, "glass"),  # item 2 twice
        record(9.1, "", "landfill", "left before a usable frame: all frames rejected (overexposed x9)", False),
        record(12.1, "plastic", "containers", "left before it settled", False),  # after it left: still its own
        record(14.0, "metal", "landfill", "low confidence 0.40 < 0.55", confidence=0.4),
    ]
    result = score(truth, records, RoutingConfig())

    assert (result.items, result.exactly_one, result.without_record, result.with_several) == (6, 4, 1, 1)
    assert (result.records, result.extra_records) == (7, 2)
    assert (result.normal_items, result.normal_correct) == (4, 3)  # item 5's label is right, unsure or not
    assert (result.overexposed_items, result.overexposed_to_fallback) == (1, 1)
    assert result.fallback_records == 2
    assert result.latencies_s == pytest.approx([0.5, 0.5, 0.6])  # items 1, 2, 5, decided at rest
    assert result.by_kind == {"normal": [4, 2, 3], "overexposed": [1, 1, 0], "quick": [1, 1, 1]}


def test_the_same_seed_renders_the_same_scene(tmp_path):
    board = make_board(seed=2)
    items = [SceneItem(item_on(board, RED), "cardboard", "flash"), SceneItem(item_on(board, BLUE), "metal", "glare")]
    nuisances = Nuisances(shake_px=1.5, noise=3.0, motion_blur=True, hands=(1,), light_changes=((1, 0.7, 0.5),))
    timing = Timing(fps=10, lead_in_s=0.5, still_s=1.0, gap_s=0.6)
    videos = []
    for name in ("a.mp4", "b.mp4"):
        truth = render(items, tmp_path / name, board=board, timing=timing, seed=9, nuisances=nuisances)
        capture, frames = cv2.VideoCapture(str(tmp_path / name)), []
        while (frame := capture.read())[0]:
            frames.append(frame[1])
        videos.append((truth, np.stack(frames)))
    assert videos[0][0] == videos[1][0] and len(videos[0][0][0]["flash_s"]) == 3
    assert np.array_equal(videos[0][1], videos[1][1])


def test_a_photo_scene_with_every_nuisance_gets_one_record_per_item(trashnet, tmp_path, monkeypatch, capsys):
    """Eight TrashNet test photos on one board under one light: an item on the board at start,
    an overexposed one, one with glare, one with flash frames, one white enough to clip, one
    taken away early and two normal ones, under shake, noise, motion blur, a light change and a
    hand passing. Whatever the model makes of them, each gets exactly one record, nothing else
    does, and the overexposed one goes to the fallback bin with a reason."""
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    scene, log = tmp_path / "scene.mp4", tmp_path / "sort.jsonl"
    assert cli_main(["demo-scene", "--photos", str(trashnet), "--split", str(SPLIT), "--items", "8",
                     "--all-nuisances", "--seed", "4", "--out", str(scene)]) == 0
    truth = json.loads(scene.with_suffix(".truth.json").read_text())
    assert sorted(i["kind"] for i in truth["items"]) == ["at_start", "clip", "flash", "glare", "normal", "normal",
                                                         "overexposed", "quick"]
    assert sorted(e["event"] for e in truth["events"]) == ["hand", "light"]
    test_photos = {path for path, _ in json.loads(SPLIT.read_text())["test"]}
    assert {i["source"] for i in truth["items"]} <= test_photos
    assert cli_main(["run", "--source", str(scene), "--log", str(log)]) == 0
    capsys.readouterr()
    assert cli_main(["score-scene", "--truth", str(scene.with_suffix(".truth.json")), "--log", str(log),
                     "--json", "--reference"]) == 0
    figures = json.loads(capsys.readouterr().out)

    assert (figures["items"], figures["exactly_one"], figures["extra_records"]) == (8, 8, 0)
    assert (figures["overexposed_items"], figures["overexposed_to_fallback"]) == (1, 1)
    assert figures["normal_items"] == 2
    assert 0 <= figures["reference_correct"] <= 2 and 0 <= figures["camera_reference_correct"] <= 2
