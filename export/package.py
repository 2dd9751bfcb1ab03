"""Ship a model: the contract into the ONNX metadata, a manifest JSON with the SHA-256 beside it.

Used by ``export`` and ``quantize`` (and by tests that build tiny models); needs ``onnx`` but
not torch. The device side reads both back in :mod:`device.classifier`. The manifest carries the
model's output on the self-test's reference picture (:mod:`device.selftest`), computed here
with onnxruntime, for the device to check at start.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx

import logging

import numpy as np
import onnxruntime as ort

from device import selftest
from device.atomic import write_bytes
from device.sortlog import utc_iso
from device.classifier import manifest_path_for, sha256_bytes, softmax
from device.contract import KEY_CONTRACT, KEY_METRICS, KEY_SPLIT_SHA256, ModelContract, preprocess

log = logging.getLogger(__name__)


def self_test_record(data: bytes, contract: ModelContract) -> dict | None:
    """The model's class probabilities on the reference picture, as the manifest stores them
    (None, with a warning, for a model onnxruntime cannot run: the device refuses it anyway)."""
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        x = preprocess(selftest.reference_image(), contract)[None]
        logits = np.asarray(session.run(None, {contract.input_name: x})[0], dtype=np.float64)
        probabilities = softmax(logits.reshape(1, -1))[0]
    except Exception as exc:  # onnxruntime's own error types; the model is written all the same
        log.warning("no self-test in the manifest: the model does not run here (%s)", str(exc)[:160])
        return None
    return {"image": selftest.REFERENCE, "probabilities": [round(float(p), 6) for p in probabilities]}


def set_metadata(model: onnx.ModelProto, contract: ModelContract, *, split_sha256: str = "",
                 metrics: dict | None = None) -> None:
    entries = {KEY_CONTRACT: contract.to_json(), KEY_SPLIT_SHA256: split_sha256,
               KEY_METRICS: json.dumps(metrics or {}, sort_keys=True)}
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)


def metadata_of(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def read_metadata(path: Path) -> dict[str, str]:
    return metadata_of(onnx.load(str(path), load_external_data=False))


def save_model(model: onnx.ModelProto, path: Path, contract: ModelContract, *, split_sha256: str = "",
               metrics: dict | None = None, extra: dict | None = None) -> dict:
    """Write ``path`` (metadata set) and ``NAME.manifest.json``; returns the manifest."""
    set_metadata(model, contract, split_sha256=split_sha256, metrics=metrics)
    data = model.SerializeToString()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, data)
    manifest = {
        "model": path.name,
        "sha256": sha256_bytes(data),
        "bytes": len(data),
        "created_utc": utc_iso(),
        "contract": json.loads(contract.to_json()),
        "split_sha256": split_sha256,
        "metrics": metrics or {},
        **(extra or {}),
    }
    if (test := self_test_record(data, contract)) is not None:
        manifest["self_test"] = test
    write_bytes(manifest_path_for(path), (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest
