"""The classifier: an onnxruntime session plus the model contract, checked at load.

The model file is read once; its SHA-256 must match the manifest beside it
(``NAME.manifest.json``), its metadata must hold a valid :class:`ModelContract`, and its input
and output must fit that contract. Any failure is a :class:`ModelError` with one line naming
the file and the problem. Decisions are per item: the probabilities of several frames are
averaged (:meth:`Classifier.classify`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from device import selftest
from device.contract import KEY_CONTRACT, ModelContract, preprocess
from device.errors import ModelError, first_line
from device import safe_json
from device.safe_open import MiB, exists_entry, read_regular

MAX_MODEL_BYTES = 1024 * MiB  # the shipped int8 model is 22 MB, an fp32 ResNet-34 86 MB
MAX_MANIFEST_BYTES = MiB

log = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).parent / "model" / "waste-sorter-resnet34-int8.onnx"


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    probabilities: tuple[float, ...]  # in the contract's class order
    top3: tuple[tuple[str, float], ...]
    frames: int


def manifest_path_for(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".manifest.json")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def prediction_from(classes: tuple[str, ...], probabilities: np.ndarray) -> Prediction:
    """One prediction from several frames' class probabilities (frames x classes): their mean."""
    mean = probabilities.mean(axis=0)
    order = np.argsort(-mean)
    top3 = tuple((classes[i], float(mean[i])) for i in order[:3])
    return Prediction(top3[0][0], top3[0][1], tuple(float(p) for p in mean), top3, len(probabilities))


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; a container or systemd's
    CPUAffinity= may give fewer than the machine has)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this platform
        return max(1, os.cpu_count() or 1)


class Classifier:
    def __init__(self, model_path: Path | str | None = None, *, threads: int | str = 2):
        """``threads``: onnxruntime intra-op threads, or ``"auto"`` for the cores this process
        may run on (its CPU affinity: a Pi 4 or 5 gives 4)."""
        self.path = Path(model_path) if model_path else DEFAULT_MODEL
        self.threads = available_cores() if threads == "auto" else int(threads)
        data = read_regular(self.path, what="model", error=ModelError, limit_bytes=MAX_MODEL_BYTES)
        self.sha256 = sha256_bytes(data)
        self.manifest = self._check_manifest()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.enable_cpu_mem_arena = False  # a Pi has little memory; the arena only grows
        try:
            self._session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelError(f"{self.path}: not a loadable ONNX model ({first_line(exc, 160)})") from None
        del data
        meta = self._session.get_modelmeta().custom_metadata_map
        if KEY_CONTRACT not in meta:
            raise ModelError(f"{self.path}: model metadata has no {KEY_CONTRACT} (not exported by waste-sorter)")
        try:
            self.contract = ModelContract.from_json(meta[KEY_CONTRACT])
        except ModelError as exc:
            raise ModelError(f"{self.path}: {exc}") from None
        self.metadata = dict(meta)
        self._check_io()
        self._self_test()

    def _check_manifest(self) -> dict:
        path = manifest_path_for(self.path)
        if not exists_entry(path):
            raise ModelError(f"{self.path}: manifest {path.name} is missing")
        data = read_regular(path, what="model manifest", error=ModelError, limit_bytes=MAX_MANIFEST_BYTES)
        try:
            manifest = safe_json.loads(data)
            expected = manifest["sha256"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{path}: unreadable manifest ({first_line(exc, 120)})") from None
        if expected != self.sha256:
            raise ModelError(f"{self.path}: SHA-256 {self.sha256[:12]}… does not match manifest "
                             f"{str(expected)[:12]}… (corrupt or replaced model)")
        return manifest

    def _check_io(self) -> None:
        c = self.contract
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or inputs[0].name != c.input_name:
            raise ModelError(f"{self.path}: expected one input named {c.input_name!r}, "
                             f"got {[i.name for i in inputs]}")
        if inputs[0].type != "tensor(float)":
            raise ModelError(f"{self.path}: input type {inputs[0].type}, expected tensor(float)")
        shape = list(inputs[0].shape)
        if len(shape) != 4 or shape[1:] != [3, c.input_height, c.input_width]:
            raise ModelError(f"{self.path}: input shape {shape} does not match the contract "
                             f"[N, 3, {c.input_height}, {c.input_width}]")
        self._batch_dynamic = not isinstance(shape[0], int)
        out_shape = list(outputs[0].shape) if outputs and outputs[0].shape is not None else None
        if out_shape is None or len(out_shape) != 2:
            raise ModelError(f"{self.path}: output shape {out_shape} is not [N, {len(c.classes)}] "
                             f"(one score per class for each image)")
        if out_shape[-1] != len(c.classes):
            raise ModelError(f"{self.path}: model gives {out_shape[-1]} "
                             f"scores but the contract names {len(c.classes)} classes")

    def _self_test(self) -> None:
        """Run the manifest's reference picture; refuse a runtime that computes other numbers."""
        test = self.manifest.get("self_test")
        if not isinstance(test, dict) or test.get("image") != selftest.REFERENCE:
            log.info("%s: the manifest has no self-test for this runtime to pass", self.path.name)
            return
        got = self.probabilities([selftest.reference_image()])[0]
        delta = selftest.mismatch(test.get("probabilities", []), got)
        if delta is not None:
            raise ModelError(f"{self.path}: self-test failed: this runtime's class probabilities on the "
                             f"reference picture differ from the manifest's by {delta:.3f} "
                             f"(> {selftest.TOLERANCE}; onnxruntime {ort.__version__})")

    @property
    def classes(self) -> tuple[str, ...]:
        return self.contract.classes

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw model output for a float32 N x 3 x H x W batch."""
        name = self.contract.input_name
        try:
            if self._batch_dynamic:
                out = np.asarray(self._session.run(None, {name: batch})[0])
            else:
                out = np.concatenate([np.atleast_1d(self._session.run(None, {name: x[None]})[0]) for x in batch])
        except Exception as exc:  # onnxruntime's own errors (Fail, RuntimeException, ...)
            raise ModelError(f"{self.path}: inference failed ({first_line(exc)})") from exc
        if out.shape != (len(batch), len(self.classes)):  # a model whose declared shape is not what it gives
            raise ModelError(f"{self.path}: output shape {list(out.shape)} for a batch of {len(batch)}, "
                             f"expected [{len(batch)}, {len(self.classes)}]")
        return out

    def probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        """Class probabilities (N x classes) of uint8 RGB frames of any size."""
        batch = np.stack([preprocess(img, self.contract) for img in images])
        return softmax(self.logits(batch).astype(np.float64))

    def classify(self, images: list[np.ndarray]) -> Prediction:
        """One decision for an item: the mean of its frames' probabilities."""
        if not images:
            raise ValueError("classify needs at least one frame")
        return prediction_from(self.classes, self.probabilities(images))

    def close(self) -> None:
        self._session = None

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
