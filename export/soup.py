"""Average the weights of ResNets fine-tuned from one start into one fp32 ONNX (a model soup).

    waste-sorter soup --model device/model/waste-sorter-resnet34-int8.onnx \\
        --model runs/r34q/model-fp32.onnx --model runs/r34r/model-fp32.onnx --out runs/soup/model-fp32.onnx

Each model's convolutions and last layer are read with the batch norms folded in and int8
weights dequantized (:func:`export.onnx_weights.folded_weights`); every folded weight and bias
is averaged over the models and written into the graph of the first fp32 model among them,
whose contract and split the others must share. ``quantize`` then takes it as it takes an
exported model. Only models that share a start (warm-started from the same weights, as
``train --init MODEL.onnx`` does) average into a working model: two runs trained from scratch
do not, and nothing here can tell; measure the soup as any other model. The manifest names
each model and its SHA-256.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from device.classifier import sha256_bytes
from device.contract import KEY_CONTRACT, KEY_SPLIT_SHA256, ModelContract
from device.errors import DataError, UsageError
from export.onnx_weights import folded_layers, read_onnx
from export.package import metadata_of, save_model

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, action="append", required=True,
                   help="an ONNX ResNet exported (or quantized) by this project; repeat, at least twice")
    p.add_argument("--out", type=Path, required=True, help="fp32 ONNX file to write (with its manifest)")


def _contract_and_split(model, path: Path) -> tuple[ModelContract, str]:
    meta = metadata_of(model)
    if KEY_CONTRACT not in meta:
        raise DataError(f"{path}: no model contract in its metadata (not exported by this project)")
    return ModelContract.from_json(meta[KEY_CONTRACT]), meta.get(KEY_SPLIT_SHA256, "")


def _is_fp32(model) -> bool:
    return not any(node.op_type == "DequantizeLinear" for node in model.graph.node)


def soup(paths: list[Path]):
    """The averaged model (the first fp32 one's graph, its initializers replaced), its contract
    and its split's SHA-256."""
    if len(paths) < 2:
        raise UsageError("a soup needs at least two --model")
    models = [read_onnx(path) for path in paths]
    contract, split_sha256 = _contract_and_split(models[0], paths[0])
    layers = [folded_layers(model, path) for model, path in zip(models, paths)]
    for path, own in zip(paths, layers):
        if not own:
            raise DataError(f"{path}: no convolution or fully connected weights (not a ResNet exported here)")
    for model, path, own in zip(models[1:], paths[1:], layers[1:]):
        if _contract_and_split(model, path) != (contract, split_sha256):
            raise DataError(f"{path}: its contract or split differs from {paths[0]}'s; a soup is of one model's runs")
        if own.keys() != layers[0].keys():
            missing = sorted(own.keys() ^ layers[0].keys())[0]
            raise DataError(f"{path}: not the architecture of {paths[0]} ({missing} in one of them only)")
        for key, (array, _) in own.items():
            if array.shape != layers[0][key][0].shape:
                raise DataError(f"{path}: {key} has shape {array.shape} where {paths[0]} has "
                                f"{layers[0][key][0].shape}")
    try:
        base = next(i for i, model in enumerate(models) if _is_fp32(model))
    except StopIteration:
        raise UsageError("a soup needs one fp32 --model (export's output) to write the average into") from None
    from onnx import numpy_helper

    template = models[base]
    initializers = {init.name: init for init in template.graph.initializer}
    for key, (array, tensor) in layers[base].items():
        mean = np.mean([own[key][0].astype(np.float64) for own in layers], axis=0)
        initializers[tensor].CopyFrom(numpy_helper.from_array(mean.astype(array.dtype), tensor))
    return template, contract, split_sha256


def main(args) -> int:
    model, contract, split_sha256 = soup(args.model)
    ingredients = [{"model": str(path), "sha256": sha256_bytes(path.read_bytes())} for path in args.model]
    save_model(model, args.out, contract, split_sha256=split_sha256, metrics={"soup_of": len(args.model)},
               extra={"arch": "resnet34", "soup_of": ingredients})
    print(f"wrote {args.out} and its manifest: the mean of {len(args.model)} models' weights")
    return 0
