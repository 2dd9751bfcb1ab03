"""Data-parallel training over torchrun's processes: the device, the process group, the
DistributedDataParallel wrapper, and one-line errors when a process is lost.

``torchrun --nproc_per_node N -m export.train ...`` starts N processes with ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous in their environment; without them (or with
N = 1) a run is one process and nothing here changes it. The backend is NCCL on GPUs and gloo
on CPUs; every collective waits at most ``--dist-timeout-s``. When a process dies, torchrun
stops the others (SIGTERM, then SIGKILL) and names the failed rank; each rank still running
says in one line why it stopped (:class:`RankFailed`), whether torchrun's signal or a lost
peer reached it first. Only rank 0 prints (``print(..., force=True)`` and anything written to
stderr print on every rank), as torchvision's reference scripts do.
"""

from __future__ import annotations

import builtins
import os
import signal
import sys
import warnings
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from device.errors import SorterError, UsageError, first_line

#: Words in a RuntimeError of a collective whose peer is gone or timed out.
_LOST_PEER = ("gloo", "nccl", "connection", "timed out", "timeout", "broken pipe", "peer")


class RankFailed(SorterError):
    """Another process of a data-parallel run failed, or torchrun stopped this one."""

    exit_code = 69  # EX_UNAVAILABLE


@dataclass(frozen=True)
class Context:
    """This process's place in the run (one process: rank 0 of 1) and its device; a ``with``
    block that closes the process group and turns a lost peer into :class:`RankFailed`."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def name(self) -> str:
        return f"rank {self.rank} of {self.world_size}"

    def __enter__(self) -> Context:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.distributed:
            # the block's end or failure is already this process's stop: torchrun's SIGTERM from
            # here on (during the error's print or the interpreter's exit) has nothing left to stop
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.distributed and dist.is_initialized() and exc is None:
            dist.destroy_process_group()  # after a failure the process's exit closes it (no wait on peers)
        if self.distributed and isinstance(exc, RuntimeError) and not isinstance(exc, SorterError):
            text = first_line(exc)
            if isinstance(exc, dist.DistError) or any(w in text.lower() for w in _LOST_PEER):
                raise RankFailed(f"{self.name}: another process of the run failed or cannot be reached "
                                 f"({text})") from None
        return False

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """``values`` summed over the processes (as they are in one process)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()


def start(device_name: str, *, timeout_s: float) -> Context:
    """This process's :class:`Context`: under torchrun (``WORLD_SIZE`` > 1) the process group
    joined, output and progress bars kept to rank 0, torchrun's SIGTERM a one-line stop."""
    env = os.environ
    world_size, rank = int(env.get("WORLD_SIZE", 1)), int(env.get("RANK", 0))
    local_rank, local_world_size = int(env.get("LOCAL_RANK", 0)), int(env.get("LOCAL_WORLD_SIZE", 1))
    device = training_device(device_name, local_rank)
    ctx = Context(device, rank, world_size, local_rank, local_world_size)
    if not ctx.distributed:
        return ctx
    if timeout_s <= 0:
        raise UsageError(f"--dist-timeout-s {timeout_s}: must be more than 0")
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s),
                                device_id=device if device.type == "cuda" else None)
    except (RuntimeError, ValueError) as exc:
        raise RankFailed(f"{ctx.name}: cannot join the run's process group ({backend}: {first_line(exc)})") from None

    def stopped(signum, _frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop, one line: a second signal adds nothing
        raise RankFailed(f"{ctx.name}: stopped by {signal.Signals(signum).name} (torchrun stops every process "
                         "when one fails or the run is interrupted)")

    signal.signal(signal.SIGTERM, stopped)
    if not ctx.is_main:
        _print_only_forced()
    return ctx


def training_device(name: str, local_rank: int = 0) -> torch.device:
    """The device ``--device`` names (a bare ``cuda``: the GPU of this local rank), checked to
    start: a missing GPU or one that fails is a one-line :class:`UsageError`."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"--device {name}: {first_line(exc)}") from None
    if device.type != "cuda":
        return device
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        why = (first_line(caught[0].message) if caught else
               "this PyTorch is built without CUDA" if torch.version.cuda is None else
               f"PyTorch for CUDA {torch.version.cuda} sees none; no driver, or CUDA_VISIBLE_DEVICES="
               f"{os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}")
        raise UsageError(f"--device {name}: no CUDA GPU here ({why}); use --device cpu")
    index = local_rank if device.index is None else device.index
    if index >= count:
        raise UsageError(f"--device {name}: GPU {index} asked for (local rank {local_rank}), but {count} visible")
    device = torch.device("cuda", index)
    try:
        torch.cuda.set_device(device)
        (torch.ones(1, device=device) + 1).item()
    except (RuntimeError, AssertionError) as exc:  # torch.AcceleratorError is a RuntimeError
        raise UsageError(f"--device {name}: GPU {index} failed to start ({first_line(exc)})") from None
    return device


def check_bf16(device: torch.device, amp: bool) -> None:
    if amp and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"{torch.cuda.get_device_name(device)} has no bfloat16; train with --no-amp")


def wrap(student: nn.Module, ctx: Context, *, sync_bn: bool) -> nn.Module:
    """The student as DistributedDataParallel over the run's processes (gradients averaged
    in backward; rank 0's weights and buffers broadcast at the start and its batch-norm buffers
    before each forward), its batch norms synchronised with ``sync_bn``; as it is in one process."""
    if not ctx.distributed:
        return student
    if sync_bn:
        student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(student, device_ids=device_ids)


def _print_only_forced() -> None:
    """``print`` on a rank other than 0: only with ``force=True`` or to stderr (errors)."""
    builtin_print = builtins.print

    def print_(*args, **kwargs):
        force = kwargs.pop("force", False)
        if force or kwargs.get("file") is sys.stderr:
            builtin_print(*args, **kwargs)

    builtins.print = print_
