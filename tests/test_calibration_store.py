"""device.calibration_file (schema and store): schema, strict loading (fuzzed), atomic saving, history and rollback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.calibration_file import schema, store
from device import atomic, safe_json
from device.calibration_file.schema import Calibration
from device.camera import ExposureControls
from device.errors import CalibrationError
from helpers import CALIBRATION_BOARD as BOARD, make_calibration


def valid_doc() -> dict:
    return make_calibration().to_dict()


def write_doc(path: Path, doc) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_roundtrip_and_board_image(tmp_path):
    cal = make_calibration()
    path = store.save_calibration(tmp_path / "cal" / "calibration.json", cal, BOARD)
    loaded = store.load_calibration(path)
    assert loaded == cal
    assert loaded.controls == ExposureControls(8000, 1.5, (1.9, 1.6))
    image = store.load_board_image(path, loaded)
    assert image.dtype == np.uint8 and image.shape == (24, 32, 3) and (image == 190).all()
    assert store.load_with_board(path)[0] == cal


def test_board_image_of_another_size_than_image_size(tmp_path):
    path = store.save_calibration(tmp_path / "calibration.json", make_calibration(), BOARD)
    cv2.imwrite(str(tmp_path / make_calibration().board_reference), np.full((48, 64, 3), 190, np.uint8))
    with pytest.raises(CalibrationError, match=r"board reference image is 64x48, but the calibration's "
                                               r"image_size is 32x24$"):
        store.load_with_board(path)
    with pytest.raises(CalibrationError, match=r"board reference image is 64x48, but the calibration's image_size is 32x24$"):
        store.save_calibration(tmp_path / "other" / "calibration.json", make_calibration(),
                               np.full((48, 64, 3), 190, np.uint8))
    assert not (tmp_path / "other").exists()


def test_missing_board_image(tmp_path):
    path = store.save_calibration(tmp_path / "calibration.json", make_calibration(), BOARD)
    (tmp_path / make_calibration().board_reference).unlink()
    with pytest.raises(CalibrationError, match="board reference image"):
        store.load_board_image(path, store.load_calibration(path))


def _set(doc: dict, keys: tuple, value) -> dict:
    node = doc
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return doc


@pytest.mark.parametrize("keys, value, expected", [
    (("exposure_us",), float("nan"), "not valid JSON"),  # json.dumps writes NaN
    (("analogue_gain",), float("inf"), "not valid JSON"),
    (("exposure_us",), 10 ** 18, "exposure_us: must be an integer in"),
    (("exposure_us",), 8000.5, "exposure_us: must be an integer"),
    (("exposure_us",), True, "exposure_us: must be an integer"),
    (("analogue_gain",), "1.5", "analogue_gain: must be a number"),
    (("analogue_gain",), 1e300, "analogue_gain: must be a number in"),
    (("colour_gains",), [1.0], "colour_gains: must have 2 items"),
    (("colour_gains",), [1.0, None], "colour_gains[1]: must be a number"),
    (("board", "cell_saturated_frac"), [0.0] * 15, "board.cell_saturated_frac: must have 16"),
    (("board", "median_luma"), -1, "board.median_luma: must be a number in"),
    (("gate", "saturation_level"), 300, "gate.saturation_level"),
    # the config's [gate] ranges hold here too: a level of 60 would reject nearly every frame
    (("gate", "saturation_level"), 60, "gate.saturation_level: must be an integer in [128, 255], got 60"),
    (("gate", "max_level_rise"), 0, "gate.max_level_rise: must be a number in [1, 255]"),
    (("gate", "surprise"), 1, "gate.surprise: unknown key"),
    (("surprise",), 1, "surprise: unknown key"),
    (("target",), [], "target: must be an object"),
    (("board_reference",), "../../etc/passwd.png", "board_reference: invalid value"),
    (("id",), "a/b", "id: invalid value"),
    (("created_utc",), "yesterday", "created_utc: not an ISO 8601"),
    (("schema",), 2, "schema: unsupported"),
    (("exposure_searched",), 1, "exposure_searched: must be true or false"),
])
def test_hostile_values_rejected(tmp_path, keys, value, expected):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(_set(valid_doc(), keys, value)))
    with pytest.raises(CalibrationError) as info:
        store.load_calibration(path)
    message = str(info.value)
    assert expected in message and str(path) in message and "\n" not in message


@pytest.mark.parametrize("text, expected", [
    ("", "not valid JSON"),
    ("[1, 2]", "must be an object"),
    ("{\"exposure_us\": Infinity}", "not valid JSON"),
    ("{\"exposure_us\": -Infinity}", "not valid JSON"),
    ("{\"a\": " + "9" * 5000 + "}", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ("{\"a\": 1", "not valid JSON"),
    (" " * (schema.MAX_FILE_BYTES + 10), "too large"),
])
def test_not_a_calibration(tmp_path, text, expected):
    path = write_doc(tmp_path / "calibration.json", text)
    with pytest.raises(CalibrationError, match=expected):
        store.load_calibration(path)


def test_overflowing_float_literal(tmp_path):
    text = json.dumps(valid_doc()).replace('"analogue_gain": 1.5', '"analogue_gain": 1e999')
    with pytest.raises(CalibrationError, match=r"calibration\.json: not valid JSON \(number 1e999 is too large\)$"):
        store.load_calibration(write_doc(tmp_path / "calibration.json", text))


@pytest.mark.parametrize("text", ["NaN", '{"exposure_us": -Infinity}', '{"a": ' + "9" * 30 + "}", "[" * 40 + "]" * 40,
                                  "[" * 100_000, b"\xff\xfe".decode("latin-1"), '{"a": 1'])
def test_the_json_is_read_by_the_projects_one_strict_reader(tmp_path, text):
    data = text.encode("latin-1")
    with pytest.raises(ValueError) as reason:
        safe_json.loads(data)
    (tmp_path / "calibration.json").write_bytes(data)
    with pytest.raises(CalibrationError) as error:
        store.load_calibration(tmp_path / "calibration.json")
    assert str(error.value) == f"{tmp_path / 'calibration.json'}: not valid JSON ({reason.value})"


def test_missing_key_and_binary_and_missing_file(tmp_path):
    doc = valid_doc()
    del doc["gate"]["min_level_ratio"]
    with pytest.raises(CalibrationError, match="gate.min_level_ratio: missing key"):
        store.load_calibration(write_doc(tmp_path / "a.json", doc))
    (tmp_path / "b.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CalibrationError, match="not UTF-8"):
        store.load_calibration(tmp_path / "b.json")
    with pytest.raises(CalibrationError, match="does not exist"):
        store.load_calibration(tmp_path / "nope.json")
    with pytest.raises(CalibrationError, match="calibration file is a directory, not a regular file$"):
        store.load_calibration(tmp_path)  # a folder


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


def _leaf_paths(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix + (key,)
            yield from _leaf_paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield prefix + (i,)
            yield from _leaf_paths(value, prefix + (i,))


PATHS = list(_leaf_paths(valid_doc()))


def _check_only_calibration_errors(data: bytes) -> None:
    try:
        result = schema.parse_bytes(data, "fuzz.json")
    except CalibrationError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("fuzz.json: ")
    else:
        assert isinstance(result, Calibration)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), json_values)
def test_fuzz_one_value_replaced(keys, value):
    doc = _set(valid_doc(), keys, value)
    _check_only_calibration_errors(json.dumps(doc).encode())


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                 json_values.map(lambda v: json.dumps(v).encode())))
def test_fuzz_arbitrary_input(data):
    _check_only_calibration_errors(data)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(PATHS))
def test_fuzz_key_removed(keys):
    doc = valid_doc()
    node = doc
    for key in keys[:-1]:
        node = node[key]
    del node[keys[-1]]
    _check_only_calibration_errors(json.dumps(doc).encode())


def _temps(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".tmp-" in p.name]


def _fd_name(fd: int) -> str:
    return Path(os.readlink(f"/proc/self/fd/{fd}")).name


@pytest.mark.parametrize("target", ["replace", "fsync"])
def test_interrupted_write_keeps_old_file(tmp_path, monkeypatch, target):
    """The write of calibration.json itself fails (its rename, or the fsync of its temp file), after
    the new board PNG and the history entry were written: the old file stays current."""
    if target == "fsync" and not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to tell which file an fsync is for")
    path = tmp_path / "calibration.json"
    store.save_calibration(path, make_calibration("old-1"), BOARD)
    before = path.read_bytes()
    seen, failed = [], []
    real = os.replace if target == "replace" else os.fsync

    def failing(*args, **kwargs):
        name = Path(args[1]).name if target == "replace" else _fd_name(args[0])
        seen.append(name)
        if name == "calibration.json" or name.startswith(".calibration.json.tmp-"):
            failed.append(name)
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(os, target, failing)
    with pytest.raises(CalibrationError, match="could not be written"):
        store.save_calibration(path, make_calibration("new-2", exposure_us=9000), BOARD)
    monkeypatch.undo()
    assert len(failed) == 1  # the failure hit calibration.json's write ...
    assert any(n.startswith(".board-new-2.png.tmp-") or n == "board-new-2.png" for n in seen)  # ... after the PNG
    assert path.read_bytes() == before
    assert store.load_calibration(path).id == "old-1"
    assert _temps(tmp_path) == [] and store.history(path) == []  # old-1 is still current, not history


def test_stray_temp_files_of_ended_writers_are_cleaned_and_a_running_writers_kept(tmp_path):
    """A temp file left by a killed write goes at the next save; one of a writer that still runs
    (another calibrate saving at this moment) stays, or its rename would fail."""
    path = tmp_path / "calibration.json"
    store.save_calibration(path, make_calibration("a-1"), BOARD)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True)
    stray = tmp_path / f".calibration.json.tmp-{int(ended.stdout)}-0badc0de"
    stray.write_text("{ half a fi")
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE) as running:
        busy = tmp_path / f".calibration.json.tmp-{running.pid}-12345678"
        busy.write_text("{ being writ")
        store.save_calibration(path, make_calibration("b-2"), BOARD)
        running.stdin.close()
    assert not stray.exists() and busy.exists()
    assert _temps(tmp_path) == [busy.name]


def test_rollback(tmp_path):
    path = tmp_path / "calibration.json"
    with pytest.raises(CalibrationError, match="no earlier calibration"):
        store.rollback(path)
    for i, cal_id in enumerate(["a-1", "b-2", "c-3"]):
        store.save_calibration(path, make_calibration(cal_id, exposure_us=1000 * (i + 1)), BOARD)
    assert [p.name for p in store.history(path)] == ["0001-a-1.json", "0002-b-2.json"]
    assert store.rollback(path).id == "b-2"
    assert store.load_calibration(path).id == "b-2"
    assert store.rollback(path).id == "a-1"
    assert store.load_calibration(path).exposure_us == 1000
    with pytest.raises(CalibrationError, match="no earlier calibration"):
        store.rollback(path)
    assert store.load_calibration(path).id == "a-1"  # unchanged by the failed rollback
    kept = sorted(p.name for p in (tmp_path / "history").glob("rolled-back-*.json"))
    assert kept == ["rolled-back-b-2.json", "rolled-back-c-3.json"]
    assert _temps(tmp_path) == []


def test_rollback_and_restore_to_a_version_whose_board_is_gone_change_nothing(tmp_path):
    path = tmp_path / "calibration.json"
    for cal_id in ["a-1", "b-2", "c-3"]:
        store.save_calibration(path, make_calibration(cal_id), BOARD)
    (tmp_path / "board-b-2.png").unlink()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(CalibrationError, match="board-b-2.png: board reference image is missing"):
        store.rollback(path)
    with pytest.raises(CalibrationError, match="board-b-2.png: board reference image is missing"):
        store.restore(path, "b-2")
    assert store.load_calibration(path).id == "c-3"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert store.restore(path, "a-1").id == "a-1"  # its board is there
    assert [p.name for p in store.history(path)] == ["0002-b-2.json", "0003-c-3.json"]


def test_history_pruned_with_its_pictures(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "KEEP_VERSIONS", 2)
    path = tmp_path / "calibration.json"
    for i in range(5):
        store.save_calibration(path, make_calibration(f"v-{i}"), BOARD)
    assert [p.name for p in store.history(path)] == ["0003-v-2.json", "0004-v-3.json"]
    assert sorted(p.name for p in tmp_path.glob("board-*.png")) == ["board-v-2.png", "board-v-3.png", "board-v-4.png"]


def test_rejects_bad_board_and_never_writes_invalid(tmp_path):
    with pytest.raises(CalibrationError, match="uint8"):
        store.save_calibration(tmp_path / "c.json", make_calibration(), BOARD.astype(np.float32))
    with pytest.raises(CalibrationError, match="analogue_gain"):
        store.save_calibration(tmp_path / "c.json", replace(make_calibration(), analogue_gain=0.1), BOARD)
    assert list(tmp_path.iterdir()) == []
