"""``waste-sorter soup``: the weights of runs that share a start, averaged into one fp32 model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("torch")  # export.onnx_weights is a workstation module

from device.classifier import Classifier, manifest_path_for  # noqa: E402
from device.cli import main as cli  # noqa: E402
from device.errors import DataError, UsageError  # noqa: E402
from export.onnx_weights import folded_weights  # noqa: E402
from export.package import save_model  # noqa: E402
from export.soup import soup  # noqa: E402
from helpers import colour_contract, colour_model  # noqa: E402

CLASSES = ("cardboard", "glass", "metal")


def tiny_resnet(seed: int, *, int8: bool = False, channels: int = 4):
    """conv1 (1x1, 3 -> channels, bias) -> mean -> fc: named as an exported ResNet's layers,
    the convolution's weight int8 and per-channel dequantized when ``int8``."""
    rng = np.random.default_rng(seed)
    conv_w = rng.normal(0, 1, (channels, 3, 1, 1)).astype(np.float32)
    conv_b = rng.normal(0, 1, channels).astype(np.float32)
    fc_w = rng.normal(0, 1, (len(CLASSES), channels)).astype(np.float32)
    fc_b = rng.normal(0, 1, len(CLASSES)).astype(np.float32)
    inits = [numpy_helper.from_array(conv_b, "conv1.bias"), numpy_helper.from_array(fc_w, "fc.weight"),
             numpy_helper.from_array(fc_b, "fc.bias")]
    nodes = []
    if int8:
        scale = (np.abs(conv_w).reshape(channels, -1).max(1) / 127).astype(np.float32)
        q = np.round(conv_w / scale[:, None, None, None]).astype(np.int8)
        inits += [numpy_helper.from_array(q, "conv1.weight_quantized"),
                  numpy_helper.from_array(scale, "conv1.weight_scale"),
                  numpy_helper.from_array(np.zeros(channels, np.int8), "conv1.weight_zero_point")]
        nodes.append(helper.make_node("DequantizeLinear", ["conv1.weight_quantized", "conv1.weight_scale",
                                                           "conv1.weight_zero_point"], ["conv1.weight_dq"], axis=0))
        conv_weight = "conv1.weight_dq"
    else:
        inits.append(numpy_helper.from_array(conv_w, "conv1.weight"))
        conv_weight = "conv1.weight"
    nodes += [
        helper.make_node("Conv", ["image", conv_weight, "conv1.bias"], ["c"]),
        helper.make_node("GlobalAveragePool", ["c"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 48, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(CLASSES)])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def saved(tmp_path, name, model, contract=None, split="split-a"):
    path = tmp_path / name
    save_model(model, path, contract or colour_contract(CLASSES), split_sha256=split)
    return path


def test_the_soup_holds_the_mean_of_each_folded_weight_in_the_fp32_graph(tmp_path):
    a = saved(tmp_path, "a.onnx", tiny_resnet(1, int8=True))
    b = saved(tmp_path, "b.onnx", tiny_resnet(2))
    c = saved(tmp_path, "c.onnx", tiny_resnet(3))
    out = tmp_path / "soup" / "model-fp32.onnx"
    assert cli(["soup", "--model", str(a), "--model", str(b), "--model", str(c), "--out", str(out)]) == 0
    got, parts = folded_weights(out), [folded_weights(p) for p in (a, b, c)]
    assert got.keys() == parts[0].keys() == {"conv1.weight", "conv1.bias", "fc.weight", "fc.bias"}
    for key, value in got.items():
        np.testing.assert_allclose(value, np.mean([p[key] for p in parts], axis=0), rtol=1e-6, atol=1e-7)
    assert not np.allclose(got["conv1.weight"], parts[1]["conv1.weight"])  # really averaged, not b's
    manifest = json.loads(manifest_path_for(out).read_text())
    assert [m["model"] for m in manifest["soup_of"]] == [str(a), str(b), str(c)]
    assert manifest["split_sha256"] == "split-a" and len(manifest["soup_of"][0]["sha256"]) == 64
    classifier = Classifier(out)  # the device takes it: contract, manifest, self-test
    assert classifier.classes == CLASSES


def test_a_soup_of_one_model_twice_predicts_as_that_model(tmp_path):
    b = saved(tmp_path, "b.onnx", tiny_resnet(2))
    model, contract, _ = soup([b, b])
    out = tmp_path / "twice.onnx"
    save_model(model, out, contract)
    x = np.random.default_rng(0).normal(0, 1, (5, 3, 48, 64)).astype(np.float32)
    np.testing.assert_allclose(Classifier(out).logits(x), Classifier(b).logits(x), rtol=1e-5, atol=1e-5)


def test_models_that_do_not_belong_in_one_soup_are_refused_by_name(tmp_path):
    a = saved(tmp_path, "a.onnx", tiny_resnet(1))
    with pytest.raises(UsageError, match="at least two"):
        soup([a])
    other_split = saved(tmp_path, "other-split.onnx", tiny_resnet(2), split="split-b")
    with pytest.raises(DataError, match="other-split.onnx: its contract or split differs"):
        soup([a, other_split])
    other_classes = saved(tmp_path, "other-classes.onnx", tiny_resnet(2), colour_contract(("x", "y", "z")))
    with pytest.raises(DataError, match="other-classes.onnx: its contract or split differs"):
        soup([a, other_classes])
    wider = saved(tmp_path, "wider.onnx", tiny_resnet(2, channels=5))
    with pytest.raises(DataError, match=r"wider.onnx: conv1\.(weight|bias) has shape .* where .*a.onnx has"):
        soup([a, wider])
    int8s = [saved(tmp_path, f"q{i}.onnx", tiny_resnet(i, int8=True)) for i in (1, 2)]
    with pytest.raises(UsageError, match="needs one fp32"):
        soup(int8s)
    matmul_only = saved(tmp_path, "colour.onnx", colour_model(CLASSES))
    with pytest.raises(DataError, match="colour.onnx: no convolution"):
        soup([a, matmul_only])
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(DataError, match="junk.onnx: not a readable ONNX model"):
        soup([a, tmp_path / "junk.onnx"])


def test_the_command_refuses_with_one_line_and_writes_nothing(tmp_path, capsys):
    a = saved(tmp_path, "a.onnx", tiny_resnet(1))
    other = saved(tmp_path, "other.onnx", tiny_resnet(2), split="split-b")
    out = tmp_path / "soup.onnx"
    assert cli(["soup", "--model", str(a), "--model", str(other), "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other.onnx: its contract or split differs" in err[0]
    assert not out.exists()
