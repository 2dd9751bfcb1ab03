"""Bad model files and bad configs: one-line errors naming the file, and the run command's exit codes.

Models are real ONNX files (built with onnx.helper, see helpers.py) checked by the real
onnxruntime; the command is device.cli.main, as the console script runs it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from onnx import TensorProto, helper

from device.actuators import BinActuators
from device.classifier import Classifier, manifest_path_for, sha256_bytes
from device.cli import main as cli_main
from device.commands.demo_scene import make_board
from device.errors import ModelError
from device.loop import Sorter
from device.sortlog import SortLog, read_records
from export.package import save_model

from helpers import COLOUR_CLASSES, RED, colour_contract, colour_model, item_on


def write_with_manifest(path: Path, data: bytes) -> Path:
    """``path`` holding ``data`` and a manifest whose SHA-256 matches it (only the content is bad)."""
    path.write_bytes(data)
    manifest_path_for(path).write_text(json.dumps({"model": path.name, "sha256": sha256_bytes(data)}))
    return path


def truncated(tmp_path: Path) -> Path:
    good = tmp_path / "good.onnx"
    save_model(colour_model(), good, colour_contract())
    data = good.read_bytes()
    return write_with_manifest(tmp_path / "model.onnx", data[: len(data) // 2])


def random_bytes(tmp_path: Path) -> Path:
    return write_with_manifest(tmp_path / "model.onnx", np.random.default_rng(0).bytes(4096))


def sha_mismatch(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    save_model(colour_model(), path, colour_contract())
    manifest = json.loads(manifest_path_for(path).read_text())
    manifest["sha256"] = "0" * 64
    manifest_path_for(path).write_text(json.dumps(manifest))
    return path


def no_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    save_model(colour_model(), path, colour_contract())
    manifest_path_for(path).unlink()
    return path


def no_contract(tmp_path: Path) -> Path:
    return write_with_manifest(tmp_path / "model.onnx", colour_model().SerializeToString())


def four_outputs(tmp_path: Path) -> Path:  # the contract names 3 classes, the model scores 4
    path = tmp_path / "model.onnx"
    save_model(colour_model(classes=COLOUR_CLASSES + ("paper",)), path, colour_contract())
    return path


def wrong_input_shape(tmp_path: Path) -> Path:  # model takes 32x32, contract says 64x48
    path = tmp_path / "model.onnx"
    save_model(colour_model(size=(32, 32)), path, colour_contract())
    return path


def _colour_model_with_output(kind: str, declared: list):
    """The colour model with its [N, 3] logits turned into a 0-d sum or an [N, 1, 3] tensor."""
    model = colour_model()
    graph = model.graph
    if kind == "scalar":
        graph.node.append(helper.make_node("ReduceSum", ["logits"], ["score"], keepdims=0))
    else:
        graph.initializer.append(helper.make_tensor("axis", TensorProto.INT64, [1], [1]))
        graph.node.append(helper.make_node("Unsqueeze", ["logits", "axis"], ["score"]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("score", TensorProto.FLOAT, declared))
    return model


def scalar_output(tmp_path: Path) -> Path:  # one number per batch, not a score per class
    path = tmp_path / "model.onnx"
    save_model(_colour_model_with_output("scalar", []), path, colour_contract())
    return path


def rank3_output(tmp_path: Path) -> Path:  # [N, 1, 3]: the right last axis, the wrong rank
    path = tmp_path / "model.onnx"
    save_model(_colour_model_with_output("rank3", ["N", 1, 3]), path, colour_contract())
    return path


CASES = [
    (truncated, "not a loadable ONNX model"),
    (random_bytes, "not a loadable ONNX model"),
    (sha_mismatch, "does not match manifest"),
    (no_manifest, "manifest model.manifest.json is missing"),
    (no_contract, "model metadata has no waste_sorter.contract"),
    (four_outputs, "model gives 4 scores but the contract names 3 classes"),
    (wrong_input_shape, "input shape"),
    (scalar_output, "output shape [] is not [N, 3]"),
    (rank3_output, "output shape ['N', 1, 3] is not [N, 3]"),
]
IDS = [make.__name__ for make, _ in CASES]


def fails_while_running(tmp_path: Path) -> Path:
    """A model that loads (shapes are symbolic) but whose Reshape to [2, 3] fails on a batch of one."""
    model = colour_model()
    graph = model.graph
    graph.initializer.append(helper.make_tensor("two_rows", TensorProto.INT64, [2], [2, 3]))
    graph.node.append(helper.make_node("Reshape", ["logits", "two_rows"], ["score"]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 3]))
    path = tmp_path / "model.onnx"
    save_model(model, path, colour_contract())
    return path


def test_a_model_that_fails_while_running_is_a_one_line_model_error(tmp_path):
    path = fails_while_running(tmp_path)
    with Classifier(path) as classifier:
        with pytest.raises(ModelError) as info:
            classifier.classify([np.full((48, 64, 3), 200, np.uint8)])
    message = str(info.value)
    assert message.startswith(f"{path}: inference failed (") and "\n" not in message
    assert info.value.exit_code == 79


def test_items_the_classifier_fails_on_go_to_the_fallback_bin_until_three_in_a_row_end_the_run(
        scene_config, tmp_path, caplog):
    """One failure is an item's: it goes to the fallback bin and sorting goes on. The third in
    a row is the model's: that item is still routed and logged, then the run ends (exit 79)."""
    board = make_board(seed=3)
    frames = ([board] * 15 + [item_on(board, RED)] * 20 + [board] * 10) * 4
    steps = 0
    with BinActuators(scene_config.actuators, scene_config.bins,
                      pin_factory=MockFactory(pin_class=MockPWMPin)) as actuators, \
            SortLog(tmp_path / "sort.jsonl") as sortlog, \
            caplog.at_level(logging.ERROR, logger="device.loop"):
        sorter = Sorter(scene_config, camera=None, classifier=Classifier(fails_while_running(tmp_path)),
                        actuators=actuators, sortlog=sortlog)
        with pytest.raises(ModelError) as info:
            for index, image in enumerate(frames):
                steps += 1
                sorter.step(image, index / 10)
        assert actuators.devices["diverter"].angle == pytest.approx(60, abs=0.5)  # item 3 went to landfill
    records = list(read_records(tmp_path / "sort.jsonl"))
    assert [(r["item"], r["bin"], r["reason"], r["label"]) for r in records] == [
        (i, "landfill", "classifier failed", "") for i in (1, 2, 3)]
    assert steps < 3 * 45  # ended on item 3, not after the fourth
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 3 and errors[0].startswith("item 1 not classified: ") and "inference failed" in errors[0]
    message = str(info.value)
    assert message.startswith("the classifier failed on 3 items in a row; the last: ") and "\n" not in message
    assert info.value.exit_code == 79


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A few frames of a real video (the model is rejected before the camera opens)."""
    path = tmp_path_factory.mktemp("video") / "scene.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for _ in range(5):
        writer.write(np.full((48, 64, 3), 200, np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize("make, expected", CASES, ids=IDS)
def test_bad_model_raises_one_line_model_error(make, expected, tmp_path):
    path = make(tmp_path)
    with pytest.raises(ModelError) as info:
        Classifier(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    assert expected in message


def test_corrupt_manifest_names_the_manifest(tmp_path):
    path = tmp_path / "model.onnx"
    save_model(colour_model(), path, colour_contract())
    manifest_path_for(path).write_text("{not json")
    with pytest.raises(ModelError, match="model.manifest.json: unreadable manifest") as info:
        Classifier(path)
    assert "\n" not in str(info.value)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli_main(["run", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("make, expected", CASES, ids=IDS)
def test_run_command_exits_79_with_one_line(make, expected, tmp_path, video, capsys, monkeypatch):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    path = make(tmp_path)
    code, out, err = run_cli(capsys, "--model", path, "--source", video, "--log", tmp_path / "sort.jsonl")
    assert code == 79
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("waste-sorter run: error: ") and str(path) in err and expected in err
    assert out == "" and not (tmp_path / "sort.jsonl").exists()


GOOD_CONFIG = """
[camera]
timeout_s = 1.5
[routing]
fallback_bin = "landfill"
[routing.classes]
cardboard = "paper"
glass = "glass"
metal = "containers"
"""


@pytest.mark.parametrize("text, names", [
    (GOOD_CONFIG + "[gate]\nmax_extra_saturated_frak = 0.2\n", ["gate.max_extra_saturated_frak", "unknown key"]),
    (GOOD_CONFIG.replace("timeout_s = 1.5", "timeout_s = 600.0"), ["camera.timeout_s", "out of range"]),
    (GOOD_CONFIG + "[bins.paper]\nactuator = \"diverter\"\nhold_ms = 1\n", ["bins.paper.hold_ms", "out of range"]),
    (GOOD_CONFIG + "[presence]\nsettle_s = \"long\"\n", ["presence.settle_s", "expected float"]),
    (GOOD_CONFIG + "[nonsense]\nx = 1\n", ["nonsense", "unknown section"]),
    ("[camera]\nwidth = = 3\n", ["invalid TOML", "line 2"]),
], ids=["unknown-key", "out-of-range", "out-of-range-in-named-table", "wrong-type", "unknown-section",
        "bad-toml"])
def test_bad_config_exits_78_naming_the_key(text, names, tmp_path, colour_model_path, video, capsys):
    config = tmp_path / "config.toml"
    config.write_text(text)
    code, out, err = run_cli(capsys, "--config", config, "--model", colour_model_path, "--source", video,
                             "--log", tmp_path / "sort.jsonl")
    assert code == 78
    assert err.count("\n") == 1 and err.startswith(f"waste-sorter run: error: {config}: "), err
    for name in names:
        assert name in err
    assert out == ""


def test_check_config_ok(tmp_path, colour_model_path, capsys, monkeypatch):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    config = tmp_path / "config.toml"
    config.write_text(GOOD_CONFIG)
    code, out, err = run_cli(capsys, "--check-config", "--config", config, "--model", colour_model_path,
                             "--source", "sim")
    assert code == 0 and err == ""
    assert out.startswith("config OK; model colour.onnx (")
    assert "classes cardboard, glass, metal" in out and "calibration none" in out
    assert "warning" not in out


def test_check_config_shows_routing_mistakes(tmp_path, colour_model_path, capsys, monkeypatch):
    """A class the model lacks that the file names (a typo), a class the file unroutes and the
    bin nothing is routed to then; the model's classes that only the defaults route (paper,
    plastic, trash) are no mistake."""
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    config = tmp_path / "config.toml"
    config.write_text(GOOD_CONFIG.replace('glass = "glass"', 'glas = "containers"\nglass = false'))
    code, out, err = run_cli(capsys, "--check-config", "--config", config, "--model", colour_model_path,
                             "--source", "sim")
    assert code == 0
    assert [line for line in out.splitlines() if line.startswith("warning")] == [
        "warning: classes without a bin go to the fallback bin: glass",
        "warning: routing.classes.glas: the model has no class 'glas' (it has cardboard, glass, metal)",
        "warning: bins.glass: no class is routed to it (routing.classes)"]


def test_check_config_catches_a_bad_model(tmp_path, capsys):
    path = sha_mismatch(tmp_path)
    code, out, err = run_cli(capsys, "--check-config", "--model", path)
    assert code == 79 and out == "" and err.count("\n") == 1 and "does not match manifest" in err
