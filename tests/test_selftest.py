"""The model's start-up self-test: the manifest's numbers on a reference picture."""

from __future__ import annotations

import json

import pytest

from helpers import colour_contract, colour_model
from device.classifier import Classifier, manifest_path_for
from device.cli import main as cli_main
from device.errors import ModelError
from device.selftest import REFERENCE, reference_image
from export.package import save_model


def test_reference_picture_is_fixed():
    a, b = reference_image(), reference_image()
    assert a.shape == (384, 512, 3) and (a == b).all()
    assert a.std() > 20, "a picture with content, not a flat board"


def test_the_manifest_carries_the_models_output_on_the_reference_picture(tmp_path):
    path = tmp_path / "m.onnx"
    save_model(colour_model(), path, colour_contract())
    test = json.loads(manifest_path_for(path).read_text())["self_test"]
    assert test["image"] == REFERENCE and len(test["probabilities"]) == 3
    with Classifier(path) as classifier:
        got = classifier.probabilities([reference_image()])[0]
    assert max(abs(a - b) for a, b in zip(test["probabilities"], got)) < 1e-5


def tamper(path, probabilities):
    manifest_path = manifest_path_for(path)
    manifest = json.loads(manifest_path.read_text())
    manifest["self_test"]["probabilities"] = probabilities
    manifest_path.write_text(json.dumps(manifest))


def test_a_runtime_that_computes_other_numbers_is_refused_at_load(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    save_model(colour_model(), path, colour_contract())
    tamper(path, [0.9, 0.05, 0.05])  # what the workstation "saw"; this runtime computes otherwise
    with pytest.raises(ModelError, match="self-test failed.*differ from the manifest's by 0\\.[0-9]+"):
        Classifier(path)
    assert cli_main(["evaluate", "--model", str(path), "--data", str(tmp_path)]) == 79  # any command loading it
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "self-test failed" in err


def test_small_differences_and_manifests_without_a_self_test_pass(tmp_path):
    path = tmp_path / "m.onnx"
    save_model(colour_model(), path, colour_contract())
    expected = json.loads(manifest_path_for(path).read_text())["self_test"]["probabilities"]
    tamper(path, [p + 0.01 for p in expected])  # an aarch64 int8 kernel rounds a little differently
    Classifier(path).close()
    manifest = json.loads(manifest_path_for(path).read_text())
    del manifest["self_test"]  # models shipped before the self-test
    manifest_path_for(path).write_text(json.dumps(manifest))
    Classifier(path).close()


def test_a_damaged_self_test_entry_is_a_one_line_refusal(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    save_model(colour_model(), path, colour_contract())
    tamper(path, "abc")  # not numbers: the manifest is not covered by the model's SHA-256
    assert cli_main(["evaluate", "--model", str(path), "--data", str(tmp_path)]) == 79
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "self-test failed" in err
