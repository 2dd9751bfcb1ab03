"""Training data: photos decoded once into memory, augmented as whole batches.

Evaluation images go through the device's own :func:`device.contract.preprocess`; training
crops are cut from a cached copy. For a board-normalised contract each photo is first put on a
random board under a random light (:func:`device.scenes.relight.random_condition`: the item,
not the backdrop, must carry the label; the board often textured, as a real one is) and given
sensor noise; some photos are then compressed as a recorded video's frames are
(:func:`camera_artefacts`); each goes through the contract's own
:func:`device.contract.prepare_photo`, as a device frame does. Then geometry (random resized
crop, flips) and light (exposure in linear light with clipping for contracts without board
normalisation, so the model sees the overexposure a sorter meets; contrast, saturation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from tqdm import tqdm

from device.contract import ModelContract, prepare_photo, preprocess
from device.gamma import GAMMA
from device.scenes.relight import random_condition, read_frame_shaped, relight, textured_board

#: Size of the in-memory copy training crops are cut from (width, height).
CACHE_SIZE = (320, 240)


def decode_cached(path: Path) -> np.ndarray:
    """One photo as the in-memory copy holds it: uint8 H x W x 3 RGB at CACHE_SIZE; a photo of
    another shape is laid on a 4:3 board first (:func:`device.scenes.relight.frame_shaped`), not
    stretched."""
    import cv2

    return cv2.resize(read_frame_shaped(str(path)), CACHE_SIZE, interpolation=cv2.INTER_AREA)


def load_cached(items: list[tuple[Path, int]], desc: str, *, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N x 3 x H x W images at CACHE_SIZE (:func:`decode_cached`) and int64 labels."""
    images = np.empty((len(items), CACHE_SIZE[1], CACHE_SIZE[0], 3), dtype=np.uint8)
    for i, (path, _) in enumerate(tqdm(items, desc=desc, leave=False, disable=not progress)):
        images[i] = decode_cached(path)
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels


def load_eval(items: list[tuple[Path, int]], contract: ModelContract, desc: str, *,
              progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 N x 3 x H x W inputs exactly as the device would build them (from a 4:3 frame:
    a photo of another shape laid on a board, as :func:`load_cached`), and labels."""
    inputs = np.stack([preprocess(read_frame_shaped(str(p)), contract)
                       for p, _ in tqdm(items, desc=desc, leave=False, disable=not progress)])
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    return torch.from_numpy(inputs), labels


def device_conditions(images: torch.Tensor, contract: ModelContract, relight_prob: float,
                      camera_prob: float = 0.0, textured_prob: float = 0.0, *,
                      with_photo: bool = False) -> torch.Tensor:
    """uint8 N x 3 x H x W photos as the device would see them: each (with ``relight_prob``) on
    a random board (textured with ``textured_prob``) under a random light with sensor noise,
    (with ``camera_prob``) with a video's compression artefacts, then the contract's pixel step.
    A probability of 0 draws nothing: runs from before an option draw as they did.
    ``with_photo``: 2N images, each photo as it is (only the pixel step) after the N above."""
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ())))  # torch's RNG: resumable
    n = len(images)
    out = np.empty((2 * n if with_photo else n, images.shape[2], images.shape[3], 3), dtype=np.uint8)
    for i, chw in enumerate(images):
        rgb = photo = chw.permute(1, 2, 0).numpy()
        if rng.random() < relight_prob:
            rgb = random_relight(rgb, rng, textured_prob)
        if camera_prob > 0 and rng.random() < camera_prob:
            rgb = camera_artefacts(rgb, rng)
        out[i] = prepare_photo(rgb, contract)
        if with_photo:
            out[n + i] = out[i] if rgb is photo else prepare_photo(photo, contract)
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def random_relight(rgb: np.ndarray, rng: np.random.Generator, textured_prob: float = 0.0) -> np.ndarray:
    """The photo's item on a random board (:func:`random_board`) under a random light, with
    sensor noise (standard deviation up to 4 grey levels)."""
    condition = random_condition(rng)
    lit = relight(rgb, condition, board=random_board(condition.board, rgb.shape[1::-1], rng, textured_prob))
    noisy = lit.astype(np.float32) + rng.normal(0.0, rng.uniform(0.0, 4.0), lit.shape)
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)


def random_board(albedo: tuple[float, float, float], size: tuple[int, int], rng: np.random.Generator,
                 textured_prob: float) -> np.ndarray | tuple[float, float, float]:
    """A board of reflectance ``albedo``: with ``textured_prob`` textured (HxWx3 for ``size`` =
    (w, h), a grain and blotches of 2-10%, as :func:`device.scenes.relight.textured_board`),
    else plain."""
    if textured_prob <= 0 or rng.random() >= textured_prob:
        return albedo
    return textured_board(size, seed=int(rng.integers(2**31)), albedo=albedo, texture=float(rng.uniform(0.02, 0.1)))


def camera_artefacts(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A frame as a recorded video gives it back: lossy DCT compression (JPEG, quality 20-90;
    MPEG-4 part 2 frames smear fine texture and block the same way), half the time after a
    slight defocus (Gaussian blur, sigma up to 0.8 px)."""
    import cv2

    if rng.random() < 0.5:
        rgb = cv2.GaussianBlur(rgb, (0, 0), float(rng.uniform(0.3, 0.8)))
    quality = int(rng.integers(20, 91))
    _, encoded = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]


class BatchAugment:
    """Device conditions (board-normalised contracts), random crops, flips and light changes
    for a batch of cached uint8 images."""

    def __init__(self, out_hw: tuple[int, int], contract: ModelContract, min_scale: float = 0.25,
                 relight_prob: float = 0.0, camera_prob: float = 0.0, textured_prob: float = 0.0):
        self.crop = v2.RandomResizedCrop(out_hw, scale=(min_scale, 1.0), ratio=(1.0, 1.8), antialias=True)
        self.contract = contract
        self.flat = contract.flatfield != "none"
        self.relight_prob, self.camera_prob, self.textured_prob = relight_prob, camera_prob, textured_prob
        self.mean = torch.tensor(contract.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(contract.std).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The augmented batch, normalised: N x 3 x H x W."""
        return self.views(images, with_photo=False)[0]

    def views(self, images: torch.Tensor, *, with_photo: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The augmented batch and (``with_photo``, board-normalised contracts) each photo as it
        is under the same crop, flips, contrast and saturation: no board, light or camera change
        (None without ``with_photo``)."""
        paired = with_photo and self.flat
        n = len(images)
        if self.flat:
            images = device_conditions(images, self.contract, self.relight_prob, self.camera_prob,
                                       self.textured_prob, with_photo=paired)
        if paired:  # one crop for both views: stack them as channels
            images = torch.cat([images[:n], images[n:]], 1)
        x = torch.stack([self.crop(img) for img in images]).float() / 255.0
        flip_h = torch.rand(n) < 0.5
        flip_v = torch.rand(n) < 0.5
        x[flip_h] = x[flip_h].flip(3)
        x[flip_v] = x[flip_v].flip(2)
        if not self.flat:
            # Exposure: scale linear light by 2^U(-1.2, 1.5) and clip, as a sensor does (a
            # board-normalised contract had its light changes in device_conditions).
            gain = torch.pow(2.0, torch.empty(n, 1, 1, 1).uniform_(-1.2, 1.5))
            x = (x.pow(GAMMA) * gain).clamp(0, 1).pow(1 / GAMMA)
        contrast = torch.empty(n, 1, 1, 1).uniform_(0.7, 1.3)
        saturation = torch.empty(n, 1, 1, 1).uniform_(0.6, 1.4)
        out = [self._colour(v, contrast, saturation) for v in (x[:, :3], x[:, 3:]) if v.shape[1]]
        return out[0], (out[1] if paired else None)

    def _colour(self, x: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor) -> torch.Tensor:
        x = (x - x.mean((1, 2, 3), keepdim=True)) * contrast + x.mean((1, 2, 3), keepdim=True)
        gray = x.mean(1, keepdim=True)
        x = ((x - gray) * saturation + gray).clamp(0, 1)
        return (x - self.mean) / self.std


def mix_pairs(prob: float, n: int) -> tuple[float, torch.Tensor] | None:
    """With probability ``prob``, the weight and partners of a mixup of a batch of ``n``
    (each sample ``lam * x + (1 - lam) * x[perm]``); None: no mixing."""
    if prob <= 0 or torch.rand(()) >= prob:
        return None
    lam = float(torch.distributions.Beta(1.0, 1.0).sample())
    return lam, torch.randperm(n)


def mixup(x: torch.Tensor, targets: torch.Tensor, prob: float,
          photos: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Mix pairs in a batch with probability ``prob``; ``targets`` are one-hot / soft labels;
    ``photos`` (the batch's other view, or None) mixed by the same pairs and weight."""
    pairs = mix_pairs(prob, x.shape[0])
    if pairs is None:
        return x, targets, photos
    lam, perm = pairs

    def mix(t):
        return None if t is None else lam * t + (1 - lam) * t[perm]

    return mix(x), mix(targets), mix(photos)


def resize_batch(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=hw, mode="bilinear", antialias=True, align_corners=False)
