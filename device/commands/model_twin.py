"""The fp32 twin of a QDQ int8 model: the same network with float weights and no quantization.

It shows what quantization buys on a machine (the figures in ``device/model/REPORT.md`` were
measured with it; ``waste-sorter bench`` measures both side by side). Weights are the dequantized int8 ones (so the twin computes what the int8 model
approximates); activation QuantizeLinear/DequantizeLinear pairs are removed, or become the ReLU
they stood for where their range starts at 0. Needs the ``onnx``
package (a dev/train dependency, not a device one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def dequantize(node, consts: dict[str, np.ndarray]) -> np.ndarray:
    """The float value of a DequantizeLinear ``node`` whose inputs are all constants: per tensor,
    or per channel along its ``axis`` (ONNX's default 1)."""
    x = consts[node.input[0]].astype(np.float32)
    scale = consts[node.input[1]].astype(np.float32)
    zero = consts[node.input[2]].astype(np.float32) if len(node.input) > 2 and node.input[2] else 0.0
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * x.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
    return ((x - zero) * scale).astype(np.float32)


def clips_negatives(quantize, consts: dict[str, np.ndarray]) -> bool:
    """Whether a QuantizeLinear's range starts at 0 (its zero point is the type's minimum), so
    it also did the work of a ReLU that quantization folded away."""
    if len(quantize.input) < 3 or quantize.input[2] not in consts:
        return False
    zero = consts[quantize.input[2]]
    return bool(np.all(zero == np.iinfo(zero.dtype).min))


def fp32_twin_bytes(path: Path) -> bytes:
    """Serialized fp32 twin of the QDQ model at ``path``."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    rename: dict[str, str] = {}  # a DequantizeLinear output -> the float tensor it stands for
    new_consts: dict[str, np.ndarray] = {}
    kept = []
    producers = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in consts:
            new_consts[node.output[0]] = dequantize(node, consts)
        elif node.op_type == "DequantizeLinear" and producers.get(node.input[0]) is not None \
                and producers[node.input[0]].op_type == "QuantizeLinear":
            quantize = producers[node.input[0]]
            if clips_negatives(quantize, consts):  # the quantized range starts at 0: a folded ReLU
                kept.append(helper.make_node("Relu", [quantize.input[0]], [node.output[0]],
                                             name=f"{node.output[0]}_relu"))
            else:
                rename[node.output[0]] = quantize.input[0]
        elif node.op_type == "QuantizeLinear":
            continue  # its DequantizeLinear partner is bypassed above
        else:
            kept.append(node)
    for node in kept:
        for i, name in enumerate(node.input):
            while name in rename:
                name = rename[name]
            node.input[i] = name
    for output in graph.output:
        while output.name in rename:
            output.name = rename[output.name]
    used = {name for node in kept for name in node.input}
    initializers = [i for i in graph.initializer if i.name in used]
    initializers += [numpy_helper.from_array(v, name) for name, v in new_consts.items() if name in used]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    return model.SerializeToString()
