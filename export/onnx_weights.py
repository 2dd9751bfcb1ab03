"""Recover a ResNet's PyTorch weights from a shipped ONNX model (``train --init MODEL.onnx``).

The shipped model is the one trained artifact that lasts (checkpoints stay on the workstation
that made them). Export folds each batch norm into the convolution before it and quantize turns
the weights into int8, so what comes back is, per convolution, the dequantized weight and the
folded bias. They are loaded with each batch norm as an identity carrying that bias, and
:func:`restore_batchnorm` then gives every batch norm back statistics measured on real photos
(with the scale and shift that keep the network's output unchanged), so that training in
``train`` mode starts from the shipped model's predictions instead of from re-normalised ones.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from device.errors import DataError, first_line
from device.commands.model_twin import dequantize

log = logging.getLogger(__name__)


def read_onnx(path: Path):
    """``path`` as an ``onnx.ModelProto``; a file that is not one is a one-line DataError."""
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf decode errors come in several types
        raise DataError(f"{path}: not a readable ONNX model ({first_line(exc)})") from None


def folded_layers(model, path: Path) -> dict[str, tuple[np.ndarray, str]]:
    """``{"conv1.weight": (w, tensor), "conv1.bias": (b, tensor), …, "fc.bias": (b, tensor)}`` of
    a ResNet exported by this project (fp32 or int8 QDQ), weights dequantized, batch norms folded
    in; ``tensor`` is the name the node reads it by (an initializer's in an fp32 model, a
    DequantizeLinear's output in an int8 one). ``path`` only names the model in errors."""
    from onnx import numpy_helper

    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    source = {name: name for name in consts}  # a tensor -> the initializer it was made from
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in consts:
            consts[node.output[0]] = dequantize(node, consts)
            source[node.output[0]] = source[node.input[0]]
    layers: dict[str, tuple[np.ndarray, str]] = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or node.input[1] not in consts:
            continue
        name = source[node.input[1]].removesuffix("_quantized")
        if not name.endswith(".weight"):
            raise DataError(f"{path}: cannot tell which layer the weight {name!r} belongs to")
        module = name.removesuffix(".weight")
        layers[f"{module}.weight"] = (consts[node.input[1]], node.input[1])
        if len(node.input) > 2 and node.input[2] in consts:
            layers[f"{module}.bias"] = (consts[node.input[2]], node.input[2])
    return layers


def folded_weights(path: Path) -> dict[str, np.ndarray]:
    """``{"conv1.weight": w, "conv1.bias": b, …, "fc.weight": w, "fc.bias": b}`` of a ResNet
    exported by this project (fp32 or int8 QDQ), weights dequantized, batch norms folded in."""
    return {key: array for key, (array, _) in folded_layers(read_onnx(path), path).items()}


def _batchnorm_of(model: nn.Module) -> dict[str, str]:
    """conv module name -> the batch norm that follows it, for a torchvision ResNet."""
    pairs = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if name.endswith("downsample.0"):
                pairs[name] = name[:-1] + "1"
            else:
                pairs[name] = name.replace("conv", "bn")
    return pairs


def resnet_state_from_onnx(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict for ``model`` (a torchvision ResNet) from the folded weights in ``path``:
    convolutions as exported, each batch norm an identity (mean 0, variance 1 - eps, scale 1)
    whose shift is the folded bias."""
    weights = folded_weights(path)
    own = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for conv, bn in _batchnorm_of(model).items():
        if f"{conv}.weight" not in weights:
            raise DataError(f"{path}: no weights for {conv} (not a model of this architecture)")
        w = torch.from_numpy(np.ascontiguousarray(weights[f"{conv}.weight"]))
        b = torch.from_numpy(weights.get(f"{conv}.bias", np.zeros(w.shape[0], np.float32)))
        if w.shape != own[f"{conv}.weight"].shape:
            raise DataError(f"{path}: {conv} has shape {tuple(w.shape)}, the model wants "
                            f"{tuple(own[f'{conv}.weight'].shape)}")
        eps = dict(model.named_modules())[bn].eps
        state[f"{conv}.weight"] = w
        state[f"{bn}.weight"] = torch.ones_like(b)
        state[f"{bn}.bias"] = b.clone()
        state[f"{bn}.running_mean"] = torch.zeros_like(b)
        state[f"{bn}.running_var"] = torch.full_like(b, 1.0 - eps)
    for key in ("fc.weight", "fc.bias"):
        if key not in weights:
            raise DataError(f"{path}: no {key} (not a model of this architecture)")
        state[key] = torch.from_numpy(np.ascontiguousarray(weights[key]))
    return state


@torch.no_grad()
def restore_batchnorm(model: nn.Module, inputs: torch.Tensor, batch_size: int = 32) -> None:
    """Give each identity batch norm of a model loaded by :func:`resnet_state_from_onnx` the mean
    and variance of its input on ``inputs`` (N x 3 x H x W, model-ready), with scale and shift
    set so that the model's eval-mode output does not change."""
    pairs = _batchnorm_of(model)
    modules = dict(model.named_modules())
    sums: dict[str, list[torch.Tensor]] = {conv: [] for conv in pairs}
    hooks = []
    for conv in pairs:
        def hook(_module, _inp, out, conv=conv):
            x = out.float()
            sums[conv].append(torch.stack([x.mean((0, 2, 3)), (x * x).mean((0, 2, 3))]) * x.shape[0])
        hooks.append(modules[conv].register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(inputs), batch_size):
            model(inputs[start:start + batch_size])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for conv, bn_name in pairs.items():
        mean, mean_sq = torch.stack(sums[conv]).sum(0) / len(inputs)
        var = (mean_sq - mean * mean).clamp_min(1e-6)
        bn = modules[bn_name]
        std = torch.sqrt(var + bn.eps)
        shift = bn.bias.clone()  # an identity batch norm: its output is input + bias
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(std)
        bn.bias.copy_(mean + shift)


def model_classes(path: Path) -> tuple[str, ...]:
    """The classes of an ONNX model this project exported (its contract's); a file that is none
    is a one-line DataError."""
    from device.contract import KEY_CONTRACT, ModelContract
    from device.errors import ModelError
    from export.package import metadata_of

    metadata = metadata_of(read_onnx(path))
    try:
        return ModelContract.from_json(metadata[KEY_CONTRACT]).classes
    except (KeyError, ModelError) as exc:
        raise DataError(f"{path}: not a model exported by waste-sorter (no readable contract: {exc})") from None


def warn_other_classes(model_path: Path, classes: tuple[str, ...]) -> None:
    """Say so when a model to start from has other classes than the data (or in another order)."""
    try:
        theirs = model_classes(model_path)
    except DataError:  # no readable contract: loading the weights says what is wrong with the file
        return
    if tuple(theirs) != tuple(classes):
        log.warning("--init %s: its classes (%s) are not the data's (%s): its last layer does not stand for "
                    "them and is learned again", model_path, ", ".join(theirs), ", ".join(classes))
