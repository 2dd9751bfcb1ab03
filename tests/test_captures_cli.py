"""`waste-sorter captures`: list, sheet, label and export a capture folder written by the real
writer from real frames; the sort log's capture ids in `logs`. Outputs are read back (JSON, PNG
decoded with OpenCV, the exported ImageFolder scanned as training scans it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import BLUE, CAPTURE_CLASSES, GREEN, RED, event, item_on, record, run_logs
from device.capture import CaptureWriter
from device.capture_store import capture_id_of, delete_capture
from device.commands.capture_export import EXPORT_MARKER, is_capture_export
from device.commands.capture_sheet import COLUMNS, GAP_PX, TILE_SIZE
from device.cli import main as cli_main
from device.commands.demo_scene import make_board
from device.sortlog import SortLog
from export.split import scan_image_folder

BOARD = make_board(seed=1)
COLOURS = {"cardboard": RED, "glass": GREEN, "metal": BLUE}
#: (what the model said, its confidence) of items 1..6; captured: all (sample_every = 1)
SAID = [("cardboard", 0.91), ("glass", 0.42), ("metal", 0.55), ("glass", 0.97), ("cardboard", 0.3), ("metal", 0.8)]


@pytest.fixture
def folder(tmp_path) -> Path:
    """Six captures (ids 1-6), each item a coloured square on the board."""
    path = tmp_path / "caps"
    with CaptureWriter(path, min_confidence=0.6, sample_every=1, classes=CAPTURE_CLASSES, model_sha256="cd" * 32) as w:
        for item, (label, confidence) in enumerate(SAID, start=1):
            frame = item_on(BOARD, COLOURS[label])
            assert w.offer(record(item, confidence, label), [frame, frame]) == str(item)
    return path


def captures(folder: Path, *argv: str) -> int:
    return cli_main(["captures", *argv[:1], "--dir", str(folder), *argv[1:]])


def listed(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_list_shows_id_time_prediction_and_label_with_the_logs_filters(folder, capsys):
    assert captures(folder, "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["2", "2024-05-01T10:00:02Z", "glass", "0.42", "uncertain", "-"]
    assert lines[0].split() == ["1", "2024-05-01T10:00:01Z", "cardboard", "0.91", "sample", "-"]
    assert len(lines) == 6
    assert captures(folder, "list", "--json", "--label", "glass") == 0
    assert [(c["id"], c["predicted"], c["label"]) for c in listed(capsys)] == [(2, "glass", None), (4, "glass", None)]
    assert captures(folder, "list", "--json", "--reason", "any", "-n", "2") == 0  # below routing's 0.6
    assert [c["id"] for c in listed(capsys)] == [3, 5]
    assert cli_main(["captures", "--dir", str(folder), "list", "--json", "--since", "2024-05-01T10:00:04Z"]) == 0
    assert [c["id"] for c in listed(capsys)] == [4, 5, 6]  # --dir before the action works too
    assert captures(folder, "label", "2", "glass") == 0
    capsys.readouterr()
    assert captures(folder, "list", "--json", "--labelled") == 0
    assert [(c["id"], c["label"]) for c in listed(capsys)] == [(2, "glass")]
    assert captures(folder, "list", "--json", "--unlabelled") == 0
    assert [c["id"] for c in listed(capsys)] == [1, 3, 4, 5, 6]


def test_the_folder_comes_from_the_config(folder, tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text(f'[capture]\nenabled = true\ndir = "{folder}"\n')
    assert cli_main(["captures", "list", "--json", "--config", str(config)]) == 0
    assert len(listed(capsys)) == 6
    assert cli_main(["captures", "list", "--dir", str(tmp_path / "nothing")]) == 65
    assert capsys.readouterr().err.strip() == f"waste-sorter captures: error: {tmp_path / 'nothing'}: no capture " \
                                              "folder there (capture.dir, --dir)"


def test_label_several_ids_and_ranges_relabel_and_skip(folder, capsys):
    assert captures(folder, "label", "1", "5", "cardboard") == 0
    assert capsys.readouterr().out == "cardboard: 1, 5\n"
    assert captures(folder, "label", "2-4", "glass") == 0
    assert captures(folder, "label", "3", "metal") == 0
    assert capsys.readouterr().out == "glass: 2, 3, 4\nmetal: 3\n  3 was glass\n"
    assert captures(folder, "label", "6", "skip") == 0
    assert json.loads((folder / "labels.json").read_text()) == {
        "1": "cardboard", "2": "glass", "3": "metal", "4": "glass", "5": "cardboard", "6": "skip"}


def test_a_label_is_matched_whatever_its_case_as_logs_bin_is(folder, capsys):
    """`logs --bin Glass` matches glass; so does `captures label 2 Glass` (and SKIP is skip)."""
    assert captures(folder, "label", "2", "Glass") == 0
    assert captures(folder, "label", "3", "SKIP") == 0
    assert capsys.readouterr().out == "glass: 2\nskip: 3\n"
    assert json.loads((folder / "labels.json").read_text()) == {"2": "glass", "3": "skip"}


@pytest.mark.parametrize("argv, message", [
    (["1", "glas"], "label: 'glas' is not a class of the model that decided capture 1 (cardboard, glass, metal); "
                    "'skip' for no item worth learning from"),
    (["9", "glass"], "label: no capture 9 in the folder"),
    (["7-9", "glass"], "label: no capture in the range 7-9"),
    (["1", "x2", "glass"], "label: 'x2' is not a capture id (17) or a range (17-24)"),
    (["glass"], "label: give one or more capture ids, then the class (e.g. label 17 18 glass)"),
])
def test_a_bad_label_command_is_a_one_line_usage_error_and_labels_nothing(folder, capsys, argv, message):
    assert captures(folder, "label", *argv) == 2
    assert capsys.readouterr().err == f"waste-sorter captures: error: {message}\n"
    assert not (folder / "labels.json").exists()


def test_a_damaged_labels_file_is_refused_not_overwritten(folder, capsys):
    (folder / "labels.json").write_text('{"1": "glass", ')
    assert captures(folder, "label", "2", "glass") == 65
    assert "labels.json: labels file is damaged" in capsys.readouterr().err
    assert (folder / "labels.json").read_text() == '{"1": "glass", '


def test_sheet_tiles_the_unlabelled_captures_numbered(folder, tmp_path, capsys):
    assert captures(folder, "label", "1", "2", "glass") == 0
    capsys.readouterr()
    out = tmp_path / "sheet.png"
    assert captures(folder, "sheet", "--out", str(out)) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: 4 of 4 unlabelled captures, ids 3 to 6\n")
    sheet = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    w, h = TILE_SIZE
    assert sheet.shape == (h + 2 * GAP_PX, 4 * (w + GAP_PX) + GAP_PX, 3)  # one row of four tiles
    for i, colour in enumerate([BLUE, GREEN, RED, BLUE]):  # captures 3-6: metal, glass, cardboard, metal
        x = GAP_PX + i * (w + GAP_PX)
        centre = sheet[GAP_PX + h // 2 - 5:GAP_PX + h // 2 + 5, x + w // 2 - 5:x + w // 2 + 5].reshape(-1, 3)
        assert np.abs(centre.mean(0) - colour).max() < 12  # the capture's own frame
        number = sheet[GAP_PX + 8:GAP_PX + 40, x + 4:x + 40]
        assert (number > 200).all(-1).any() and (number < 30).all(-1).any()  # white id on black
    assert captures(folder, "sheet", "--out", str(out), "--all", "--count", "7") == 0
    assert "6 of 6 captures, ids 1 to 6" in capsys.readouterr().out
    assert cv2.imread(str(out)).shape[:2] == (2 * (h + GAP_PX) + GAP_PX, COLUMNS * (w + GAP_PX) + GAP_PX)
    assert captures(folder, "label", "3-6", "skip") == 0
    assert captures(folder, "sheet", "--out", str(tmp_path / "none.png")) == 1
    assert "nothing to show" in capsys.readouterr().err and not (tmp_path / "none.png").exists()


def test_export_writes_an_image_folder_and_brings_it_up_to_date(folder, tmp_path, capsys):
    out = tmp_path / "export"
    assert captures(folder, "label", "1", "5", "cardboard") == 0
    assert captures(folder, "label", "2", "4", "glass") == 0
    assert captures(folder, "label", "6", "skip") == 0
    capsys.readouterr()
    assert captures(folder, "export", "--out", str(out)) == 0
    assert capsys.readouterr().out == (f"exported 4 captures (8 photos) to {out}: cardboard 2, glass 2; "
                                       "8 photos new, 0 removed\n")
    classes, per_class = scan_image_folder(out)
    assert per_class == {"cardboard": ["cardboard/cap-1-1.jpg", "cardboard/cap-1-2.jpg", "cardboard/cap-5-1.jpg",
                                       "cardboard/cap-5-2.jpg"],
                         "glass": ["glass/cap-2-1.jpg", "glass/cap-2-2.jpg", "glass/cap-4-1.jpg", "glass/cap-4-2.jpg"]}
    assert (out / "glass" / "cap-2-1.jpg").read_bytes() == (folder / "2-1.jpg").read_bytes()
    assert is_capture_export(out)
    marker = json.loads((out / EXPORT_MARKER).read_text())
    assert marker["captures"] == {"1": "cardboard", "2": "glass", "4": "glass", "5": "cardboard"}
    # relabelled, labelled since, skipped since: the export follows
    assert captures(folder, "label", "4", "metal") == 0
    assert captures(folder, "label", "3", "metal") == 0
    assert captures(folder, "label", "5", "skip") == 0
    capsys.readouterr()
    assert captures(folder, "export", "--out", str(out)) == 0
    assert capsys.readouterr().out.endswith("cardboard 1, glass 1, metal 2; 4 photos new, 4 removed\n")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg")) == [
        "cardboard/cap-1-1.jpg", "cardboard/cap-1-2.jpg", "glass/cap-2-1.jpg", "glass/cap-2-2.jpg",
        "metal/cap-3-1.jpg", "metal/cap-3-2.jpg", "metal/cap-4-1.jpg", "metal/cap-4-2.jpg"]


def test_export_never_writes_into_a_folder_of_other_photos_and_leaves_out_unreadable_captures(folder, tmp_path,
                                                                                               capsys):
    mine = tmp_path / "photos"
    (mine / "glass").mkdir(parents=True)
    (mine / "glass" / "a.jpg").write_bytes(b"mine")
    assert captures(folder, "export", "--out", str(mine)) == 65
    assert "photos: exists and is not a capture export" in capsys.readouterr().err
    assert [p.name for p in mine.rglob("*")] == ["glass", "a.jpg"]
    assert captures(folder, "label", "1-2", "glass") == 0
    (folder / "2-2.jpg").write_bytes((folder / "2-2.jpg").read_bytes()[:100])  # cut short by a power cut
    assert captures(folder, "export", "--out", str(tmp_path / "export")) == 0
    assert "exported 1 captures (2 photos)" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "export" / "glass").iterdir()) == ["cap-1-1.jpg", "cap-1-2.jpg"]


def test_re_export_keeps_the_photos_of_captures_deleted_from_the_capture_folder_since(folder, tmp_path, capsys):
    out = tmp_path / "export"
    assert captures(folder, "label", "1", "2", "glass") == 0
    assert captures(folder, "label", "3", "metal") == 0
    assert captures(folder, "export", "--out", str(out)) == 0
    delete_capture(folder, 1, [n for n in os.listdir(folder) if capture_id_of(n) == 1])  # as the quota does
    assert captures(folder, "label", "2", "metal") == 0
    assert captures(folder, "label", "3", "skip") == 0
    capsys.readouterr()
    assert captures(folder, "export", "--out", str(out)) == 0
    assert capsys.readouterr().out == (f"exported 2 captures (4 photos) to {out}: glass 1, metal 1; 2 photos new, "
                                       "4 removed\nkept from earlier exports (no longer in the capture folder): 1\n")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg")) == [
        "glass/cap-1-1.jpg", "glass/cap-1-2.jpg", "metal/cap-2-1.jpg", "metal/cap-2-2.jpg"]
    assert json.loads((out / EXPORT_MARKER).read_text())["captures"] == {"1": "glass", "2": "metal"}


def test_a_label_that_is_no_class_or_no_plain_folder_name_writes_nothing(folder, tmp_path, capsys):
    out = tmp_path / "deep" / "export"
    (folder / "labels.json").write_text(json.dumps({"2": "../../escaped"}))  # edited by hand
    assert captures(folder, "export", "--out", str(out)) == 65
    err = capsys.readouterr().err
    assert err == (f"waste-sorter captures: error: {folder / 'labels.json'}: capture 2: '../../escaped' is not a "
                   "class of the model that decided it (cardboard, glass, metal) or 'skip'\n")
    assert not out.exists() and not (tmp_path / "escaped").exists()
    sidecar = json.loads((folder / "2.json").read_text())  # a model whose class names a folder elsewhere
    (folder / "2.json").write_text(json.dumps({**sidecar, "classes": ["../escaped", "glass", "metal"]}))
    assert captures(folder, "label", "2", "../escaped") == 65
    assert capsys.readouterr().err == (f"waste-sorter captures: error: {folder / '2.json'}: class '../escaped' is "
                                       "not a plain folder name (empty, a leading '.', a '/' or a NUL): it cannot "
                                       "be a label\n")
    assert json.loads((folder / "labels.json").read_text()) == {"2": "../../escaped"}  # not written
    (folder / "labels.json").write_text(json.dumps({"2": "../escaped"}))
    assert captures(folder, "export", "--out", str(out)) == 65
    assert "capture 2: '../escaped' cannot be a class folder's name" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "deep" / "escaped").exists()


def test_a_damaged_or_half_written_capture_is_not_listed(folder, capsys, caplog):
    (folder / "3.json").write_text('{"id": 3, "why": ')
    (folder / "4.json").unlink()  # frames without their sidecar: still being written
    (folder / "17-1.jpg").write_bytes(b"")
    assert captures(folder, "list", "--json") == 0
    assert [c["id"] for c in listed(capsys)] == [1, 2, 5, 6]
    assert "skipped 1 damaged capture sidecar(s), e.g. 3.json" in caplog.text


def test_sort_records_name_their_capture_and_older_records_still_read(tmp_path):
    path = tmp_path / "sort.jsonl"
    old = json.loads(event(1).to_json())
    del old["capture_id"]  # written before captures existed
    path.write_text(json.dumps(old) + "\n")
    with SortLog(path) as log:
        from dataclasses import replace

        log.append(replace(event(2), capture_id="17"))
    plain = run_logs("--log", str(path)).splitlines()
    assert "capture" not in plain[0] and plain[1].endswith("capture 17")
    records = [json.loads(line) for line in run_logs("--log", str(path), "--json").splitlines()]
    assert "capture_id" not in records[0] and records[1]["capture_id"] == "17"
    assert json.loads(run_logs("--log", str(path), "--summary", "--json"))["items"] == 2


@pytest.mark.parametrize("sidecar", [
    b'{"id": 3, "why": ',  # cut short
    b'{"format": 1, "id": 3, "why": "sample", "frames": ["4-1.jpg"], "classes": [], "record": {}}',  # another's frames
    b'{"format": 1, "id": 3, "why": "sample", "frames": "3-1.jpg", "classes": [], "record": {}}',
    b'{"format": 1, "id": 3, "why": "sample", "frames": [], "classes": [], "record": []}',
    b'{"format": 1, "id": 3, "why": "sample", "frames": [], "classes": [], "record": {"confidence": NaN}}',
    b'[' * 100_000 + b']' * 100_000,
    b'\xff\xfe not text',
])
def test_a_hostile_sidecar_is_skipped_in_one_warning(folder, capsys, caplog, sidecar):
    (folder / "3.json").write_bytes(sidecar)
    assert captures(folder, "list", "--json") == 0
    assert [c["id"] for c in listed(capsys)] == [1, 2, 4, 5, 6]
    assert caplog.text.count("damaged capture sidecar") == 1


@pytest.mark.parametrize("labels", [b'{"x": "glass"}', b'["glass"]', b'{"1": NaN}', b'[' * 50_000,
                                    b'{"1": "glass", "2": 3}', b'{"1": "glass", "+2": "metal"}', b'{"1": null}'])
def test_a_hostile_labels_file_is_a_one_line_error_and_never_rewritten(folder, capsys, labels):
    (folder / "labels.json").write_bytes(labels)
    assert captures(folder, "list") == 65
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "labels.json: labels file is damaged" in err
    assert captures(folder, "label", "3", "glass") == 65  # labelling on top would lose what it holds
    assert (folder / "labels.json").read_bytes() == labels
