"""The training photos through a torch DataLoader: worker processes decode, relight and augment
whole batches while the model trains (``train --workers N``; under torchrun each process takes
its own share of the photos of every ``--data`` folder).

Every batch is a function of (``--seed``, rank, epoch, step) alone: an epoch's order is that of
:class:`torch.utils.data.DistributedSampler` (seeded by ``--seed`` and the epoch, one share per
rank), and each batch's random draws (board, light, crop, flips, colour, mixup) come from the
global RNG seeded for that batch (:func:`batch_seed`). So the weights do not depend on the
number of workers or on whether a worker or the training process made the batch, and a run
stopped at any epoch and resumed ends where one run would.

``--workers 0`` in one process is not this module: it is the path of before, the photos
decoded once into memory and augmented in the training process from the run's one RNG, so
earlier runs reproduce.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from device.errors import SorterError
from export.data import decode_cached
from export.loss import Batch, make_batch


def batch_seed(seed: int, rank: int, epoch: int, step: int) -> int:
    """The seed of one batch's random draws (``step`` -1: the training process's own draws of
    the epoch, dropout for one)."""
    entropy = [seed & 0xFFFFFFFF, rank, epoch, step + 1]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


def default_workers(device: torch.device, local_processes: int) -> int:
    """``--workers`` unless given: none on a CPU (the path of before; workers would take the
    cores the model trains on), else this machine's CPUs shared among its training processes,
    one of each share left to the process itself (at least 1)."""
    if device.type == "cpu":
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, local_processes) - 1)


class EpochBatches(Sampler):
    """One rank's batches of an epoch, as (epoch, step, indices): the rank's share of a
    DistributedSampler's permutation, cut into whole batches (every rank makes as many steps)."""

    def __init__(self, n: int, batch_size: int, *, rank: int, world_size: int, seed: int):
        self.order = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                        drop_last=True)
        self.batch_size, self.epoch = batch_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.order) // self.batch_size

    def __iter__(self):
        indices = list(self.order)
        for step in range(len(self)):
            yield self.epoch, step, indices[step * self.batch_size:(step + 1) * self.batch_size]


class AugmentedBatches(Dataset):
    """``dataset[(epoch, step, indices)]``: those training photos decoded and made into a
    :class:`export.loss.Batch` under the batch's own seed; a photo that cannot be read comes
    back as the batch's one-line ``error`` (the training process raises it). ``shares``: the
    photos' teacher shares (:mod:`export.teacher_sources`; None: every teacher labels every photo)."""

    def __init__(self, items: list[tuple[Path, int]], allowed: torch.Tensor, augment, *, mixup: float,
                 photo_view: bool, seed: int, rank: int, shares: torch.Tensor | None = None):
        self.items, self.allowed, self.augment, self.shares = items, allowed, augment, shares
        self.mixup, self.photo_view, self.seed, self.rank = mixup, photo_view, seed, rank

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key) -> Batch:
        epoch, step, indices = key
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=()):
            torch.manual_seed(batch_seed(self.seed, self.rank, epoch, step))
            try:
                photos = np.stack([decode_cached(self.items[i][0]) for i in indices])
            except SorterError as exc:
                return Batch(None, None, None, None, error=str(exc))
            images = torch.from_numpy(photos).permute(0, 3, 1, 2).contiguous()
            shares = None if self.shares is None else self.shares[indices]
            batch = make_batch(images, self.allowed[indices], self.augment, self.mixup, self.photo_view, shares)
        return batch._replace(seconds=time.perf_counter() - t0)


def _worker_init(_worker_id: int) -> None:
    import cv2

    cv2.setNumThreads(1)  # one core a worker (torch's own threads: DataLoader sets 1)


def make_loader(items: list[tuple[Path, int]], allowed: torch.Tensor, augment, args, *, workers: int, rank: int,
                world_size: int, device: torch.device, photo_view: bool,
                shares: torch.Tensor | None = None) -> DataLoader:
    """Batches of ``args.batch_size`` for this rank, made by ``workers`` worker processes
    (0: in the training process), pinned for a GPU, workers kept across epochs; call
    ``loader.sampler.set_epoch(epoch)`` before each epoch. Workers are spawned, not forked: a
    child forked from a process whose OpenMP or OpenCV threads ran hangs on their locks (seen)."""
    batches = EpochBatches(len(items), args.batch_size, rank=rank, world_size=world_size, seed=args.seed)
    dataset = AugmentedBatches(items, allowed, augment, mixup=args.mixup, photo_view=photo_view, seed=args.seed,
                               rank=rank, shares=shares)
    return DataLoader(dataset, sampler=batches, batch_size=None, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                      prefetch_factor=4 if workers > 0 else None, worker_init_fn=_worker_init if workers > 0 else None,
                      multiprocessing_context="spawn" if workers > 0 else None)
