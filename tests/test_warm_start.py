"""``train --init MODEL.onnx``: the shipped model is enough to start training from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from device.classifier import Classifier  # noqa: E402
from device.contract import preprocess, read_rgb  # noqa: E402
from export.models import build_model  # noqa: E402
from export.onnx_weights import restore_batchnorm  # noqa: E402
from export.split import load_split  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "device" / "model" / "waste-sorter-resnet34-int8.onnx"


@pytest.fixture(scope="module")
def shipped_and_inputs(trashnet_module):
    classifier = Classifier(SHIPPED)
    split = load_split(SHIPPED.parent / "split.json", trashnet_module)
    test = split.paths("test")[::20]  # 17 photos, every class
    inputs = np.stack([preprocess(read_rgb(str(p)), classifier.contract) for p, _ in test])
    return classifier, inputs


@pytest.fixture(scope="module")
def trashnet_module():
    from helpers import TRASHNET

    if not TRASHNET.is_dir():
        pytest.fail(f"{TRASHNET} is missing")
    return TRASHNET


def test_a_warm_start_from_the_shipped_onnx_reproduces_its_predictions(shipped_and_inputs):
    classifier, inputs = shipped_and_inputs
    model = build_model("resnet34", len(classifier.classes), str(SHIPPED)).eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(inputs)).numpy()
    shipped = classifier.logits(inputs)
    assert (logits.argmax(1) == shipped.argmax(1)).all()
    assert np.abs(logits - shipped).max() < 0.5  # int8 activations vs float: close, not equal


def test_restored_batch_norm_keeps_the_output_and_trains_from_it(shipped_and_inputs):
    classifier, inputs = shipped_and_inputs
    model = build_model("resnet34", len(classifier.classes), str(SHIPPED)).eval()
    x = torch.from_numpy(inputs)
    with torch.no_grad():
        before = model(x)
        restore_batchnorm(model, x)
        after = model(x)
        assert torch.allclose(before, after, atol=1e-4)
        bn = model.layer2[0].bn1
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))  # measured, not identity
        model.train()  # batch statistics of these photos are the ones measured: same output
        assert (model(x).argmax(1) == before.argmax(1)).all()


def test_an_onnx_that_is_not_a_resnet34_is_a_clear_error(tmp_path):
    from helpers import colour_contract, colour_model
    from device.errors import DataError
    from export.package import save_model

    path = tmp_path / "colour.onnx"
    save_model(colour_model(), path, colour_contract())
    with pytest.raises(DataError, match="no weights for conv1"):
        build_model("resnet34", 3, str(path))
    with pytest.raises(DataError, match="not a readable ONNX model"):
        (tmp_path / "junk.onnx").write_bytes(b"not onnx")
        build_model("resnet34", 3, str(tmp_path / "junk.onnx"))


def test_the_shipped_onnx_is_a_teacher_that_labels_as_it_does(shipped_and_inputs, tmp_path):
    """``train --teacher MODEL.onnx``: the frozen teacher gives the shipped model's labels, and a
    model of other classes, or an ONNX file that is no exported model, is a one-line error."""
    from helpers import colour_contract, colour_model
    from device.errors import DataError
    from export.loss import teacher_targets
    from export.models import load_teacher
    from export.package import save_model

    classifier, inputs = shipped_and_inputs
    teacher = load_teacher(SHIPPED, classifier.classes, torch.device("cpu"))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    probs, features = teacher_targets([teacher], torch.from_numpy(inputs), temperature=1.0)
    shipped = classifier.logits(inputs)
    assert (probs.numpy().argmax(1) == shipped.argmax(1)).all()
    assert features.shape == (len(inputs), 512)

    with pytest.raises(DataError, match="teacher classes .* differ from the data's"):
        load_teacher(SHIPPED, tuple(reversed(classifier.classes)), torch.device("cpu"))
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(colour_model().SerializeToString())  # an ONNX model without the contract
    with pytest.raises(DataError, match="not a model exported by waste-sorter"):
        load_teacher(bare, classifier.classes, torch.device("cpu"))
    colour = tmp_path / "colour.onnx"
    save_model(colour_model(), colour, colour_contract())
    with pytest.raises(DataError, match="teacher classes"):
        load_teacher(colour, classifier.classes, torch.device("cpu"))
