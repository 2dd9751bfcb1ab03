"""Ship a model: the contract into the ONNX metadata, a manifest JSON with the SHA-256 beside it.

Used by ``export`` and ``quantize`` (and by tests that build tiny models); needs ``onnx`` but
not torch. The device side reads both back in :mod:`device.classifier`.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from device.atomic import write_bytes
from device.sortlog import utc_iso
from device.classifier import manifest_path_for, sha256_bytes
from device.contract import KEY_CONTRACT, KEY_METRICS, KEY_SPLIT_SHA256, ModelContract


def set_metadata(model: onnx.ModelProto, contract: ModelContract, *, split_sha256: str = "",
                 metrics: dict | None = None) -> None:
    entries = {KEY_CONTRACT: contract.to_json(), KEY_SPLIT_SHA256: split_sha256,
               KEY_METRICS: json.dumps(metrics or {}, sort_keys=True)}
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)


def read_metadata(path: Path) -> dict[str, str]:
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


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
    write_bytes(manifest_path_for(path), (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest
