"""The model contract: the one definition of how a photo becomes model input.

Export writes a :class:`ModelContract` into the ONNX model's metadata; the device reads it back
and preprocesses every frame with :func:`preprocess`. Training validation and ``evaluate`` use
the same function, so the workstation and the Pi share a single preprocessing path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import cv2
import numpy as np

from device.errors import DataError, ModelError
from device.flatfield import flatten_board

#: Metadata keys written into the ONNX model (``metadata_props``). Defined here only.
KEY_CONTRACT = "waste_sorter.contract"
KEY_SPLIT_SHA256 = "waste_sorter.split_sha256"
KEY_METRICS = "waste_sorter.metrics"
CONTRACT_VERSION = 2
#: Version 1 contracts (models before board normalisation) are read as ``flatfield="none"``.
SUPPORTED_VERSIONS = (1, 2)

#: ImageNet statistics, used by every model this project trains.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESIZE_POLICIES = ("stretch", "center_crop")
#: ``border``: the board and light are divided out (:func:`device.flatfield.flatten_board`).
FLATFIELD_POLICIES = ("none", "border")


@dataclass(frozen=True)
class ModelContract:
    """What a model expects: class order, input geometry and normalisation.

    ``resize="stretch"`` resizes the whole frame to ``input_width`` x ``input_height`` (nothing
    is cropped away: an item near the edge of the board stays in view). ``"center_crop"`` scales
    the shorter side and crops the centre. ``flatfield="border"`` then divides the board and
    light out (:mod:`device.flatfield`). Pixels are RGB, scaled to [0, 1], then
    ``(x - mean) / std``, laid out NCHW float32.
    """

    classes: tuple[str, ...]
    input_width: int
    input_height: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "stretch"
    input_name: str = "image"
    flatfield: str = "none"
    version: int = field(default=CONTRACT_VERSION)

    def __post_init__(self) -> None:
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ModelError(f"contract classes must be >= 2 distinct names, got {self.classes!r}")
        if not (16 <= self.input_width <= 4096 and 16 <= self.input_height <= 4096):
            raise ModelError(
                f"contract input size {self.input_width}x{self.input_height} is out of range"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ModelError("contract mean/std must be three numbers with std > 0")
        if self.resize not in RESIZE_POLICIES:
            raise ModelError(f"contract resize policy {self.resize!r} not in {RESIZE_POLICIES}")
        if self.flatfield not in FLATFIELD_POLICIES:
            raise ModelError(f"contract flatfield policy {self.flatfield!r} not in {FLATFIELD_POLICIES}")
        if self.version not in SUPPORTED_VERSIONS:
            raise ModelError(
                f"contract version {self.version} is not supported (expected one of {SUPPORTED_VERSIONS})"
            )
        if self.flatfield != "none" and self.resize != "stretch":  # training fits the whole photo's border
            raise ModelError("contract flatfield 'border' needs resize 'stretch' (a crop has another border)")
        if self.version == 1 and self.flatfield != "none":
            raise ModelError("contract version 1 has no flatfield step; version 2 is needed")

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "classes": list(self.classes),
                "input_width": self.input_width,
                "input_height": self.input_height,
                "mean": list(self.mean),
                "std": list(self.std),
                "resize": self.resize,
                "flatfield": self.flatfield,
                "input_name": self.input_name,
                "layout": "NCHW",
                "channels": "RGB",
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> "ModelContract":
        try:
            raw = json.loads(text)
            return cls(
                classes=tuple(str(c) for c in raw["classes"]),
                input_width=int(raw["input_width"]),
                input_height=int(raw["input_height"]),
                mean=tuple(float(v) for v in raw["mean"]),  # type: ignore[arg-type]
                std=tuple(float(v) for v in raw["std"]),  # type: ignore[arg-type]
                resize=str(raw["resize"]),
                input_name=str(raw["input_name"]),
                flatfield=str(raw.get("flatfield", "none")),
                version=int(raw["version"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"model contract metadata is malformed: {exc}") from exc


def resize_rgb(rgb: np.ndarray, contract: ModelContract) -> np.ndarray:
    """Resize an HxWx3 uint8 RGB image to the contract's input size (uint8, HxWx3), with the
    board divided out when the contract says so (the model's eyes: training crops are cut from
    :func:`prepare_photo`'s output)."""
    return prepare_photo(_resize(rgb, contract), contract)


def prepare_photo(rgb: np.ndarray, contract: ModelContract) -> np.ndarray:
    """The contract's pixel step before scaling: board normalisation or nothing (uint8 HxWx3).
    Training applies it to each photo before cropping; the device after resizing the frame."""
    return flatten_board(rgb) if contract.flatfield == "border" else rgb


def _resize(rgb: np.ndarray, contract: ModelContract) -> np.ndarray:
    width, height = contract.input_width, contract.input_height
    if contract.resize == "center_crop":
        scale = max(width / rgb.shape[1], height / rgb.shape[0])
        scaled_w = max(width, round(rgb.shape[1] * scale))
        scaled_h = max(height, round(rgb.shape[0] * scale))
        rgb = cv2.resize(rgb, (scaled_w, scaled_h), interpolation=cv2.INTER_AREA)
        x0, y0 = (scaled_w - width) // 2, (scaled_h - height) // 2
        return rgb[y0 : y0 + height, x0 : x0 + width]
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def normalize(rgb: np.ndarray, contract: ModelContract) -> np.ndarray:
    """uint8 HxWx3 RGB at input size -> float32 3xHxW, scaled and normalised."""
    mean = np.asarray(contract.mean, dtype=np.float32)
    std = np.asarray(contract.std, dtype=np.float32)
    chw = (rgb.astype(np.float32) / 255.0 - mean) / std
    return np.ascontiguousarray(chw.transpose(2, 0, 1))


def preprocess(rgb: np.ndarray, contract: ModelContract) -> np.ndarray:
    """One uint8 HxWx3 RGB frame -> float32 3xHxW model input (no batch axis)."""
    return normalize(resize_rgb(rgb, contract), contract)


def read_rgb(path: str) -> np.ndarray:
    """Read a photo from disk as uint8 HxWx3 RGB, or raise :class:`DataError` naming the file."""
    from device.safe_open import MiB, read_regular  # regular files only: a FIFO would block np.fromfile

    data = np.frombuffer(read_regular(path, what="photo", error=DataError, limit_bytes=64 * MiB), np.uint8)
    try:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except cv2.error:
        bgr = None
    if bgr is None:
        raise DataError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
