"""One epoch of training, its steps timed by stage, and the validation score (``train``).

The batches come from the photos in memory (:func:`in_memory_batches`: the path of before, in
the training process) or from :func:`export.loader.make_loader`; under torchrun the student is
DistributedDataParallel and the epoch's loss, times and validation counts are summed over the
processes (:class:`export.distributed.Context`).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from device.errors import DataError
from export.loss import batch_loss, make_batch
from export.stage_timer import Laps, throughput


def in_memory_batches(data, augment, args, photo_view: bool):
    """The epoch's batches from the photos in memory, in a random order of the run's RNG,
    each made when the loop asks for it (the draws of before, in their order)."""
    perm = torch.randperm(len(data.images))
    for step in range(data.steps_per_epoch(args.batch_size)):
        idx = perm[step * args.batch_size:(step + 1) * args.batch_size]
        t0 = time.perf_counter()
        shares = None if data.teacher_shares is None else data.teacher_shares[idx]
        batch = make_batch(data.images[idx], data.allowed[idx], augment, args.mixup, photo_view, shares)
        yield batch._replace(seconds=time.perf_counter() - t0)


def train_one_epoch(student, teachers, batches, steps_per_epoch: int, optimizer, scheduler, ema, epoch: int, args,
                    ctx, *, workers: int, size_hw: tuple[int, int]) -> dict:
    """One pass over ``batches`` (:class:`export.loss.Batch`); the epoch's record so far, with
    the throughput of each stage. On a GPU the loss is read every 20 steps, not each (a read
    waits for the GPU)."""
    student.train()
    model = student.module.model if isinstance(student, nn.parallel.DistributedDataParallel) else student.model
    device = ctx.device
    read_every = 1 if device.type == "cpu" else 20
    laps = Laps(device)
    t0, total, pending, data_s, wait_s = time.time(), 0.0, [], 0.0, 0.0
    bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs} {size_hw[1]}x{size_hw[0]}",
               disable=not ctx.is_main)
    for step in bar:
        t_wait = time.perf_counter()
        batch = next(batches)
        wait_s += time.perf_counter() - t_wait
        if batch.error is not None:
            raise DataError(batch.error)
        data_s += batch.seconds
        laps.start()
        loss = batch_loss(student, teachers, batch, size_hw, args, device, laps)
        pending.append(loss.detach())
        if len(pending) == read_every or step == steps_per_epoch - 1:
            for value in torch.stack(pending).tolist() if read_every > 1 else [pending[0].item()]:
                if not math.isfinite(value):
                    raise DataError(f"training diverged at epoch {epoch + 1} (loss {value}); lower --lr")
                total += value
            pending = []
            bar.set_postfix(loss=f"{total / (step + 1):.3f}", lr=f"{scheduler.get_last_lr()[0]:.3g}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        laps.lap("student")
        if args.debug_weights_log:
            log_weights(args.debug_weights_log, ctx, epoch, step, model)
    seconds = laps.seconds()
    loss_sum, student_s, teachers_s, data_s, wait_s = ctx.sum(
        [total, seconds.get("student", 0.0), seconds.get("teachers", 0.0), data_s, wait_s])
    n = ctx.world_size
    rates = throughput(steps_per_epoch * args.batch_size * n, {"student": student_s / n, "teachers": teachers_s / n},
                       data_s / n, workers, wait_s / n, n)
    return {"epoch": epoch + 1, "train_loss": loss_sum / n / steps_per_epoch, "seconds": time.time() - t0,
            "throughput": rates}


def throughput_line(rates: dict) -> str:
    figures = ", ".join(f"{stage} {value:.3g}" for stage, value in rates["images_per_s"].items())
    where = f"{rates['workers']} workers" if rates["workers"] else "in the training process"
    return f"images/s: {figures} (data: {where}; waited {rates['data_wait_s']:.1f} s for it)"


def log_weights(path: Path, ctx, epoch: int, step: int, model: nn.Module) -> None:
    """Append ``epoch step pid sha256`` of the model's parameters to PATH.rankR."""
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    with open(f"{path}.rank{ctx.rank}", "a") as f:
        f.write(f"{epoch} {step} {os.getpid()} {digest.hexdigest()}\n")


def validate(model, ema, data, ctx, amp: bool) -> dict:
    """Accuracy on the validation photos, of the weights and of their EMA ({} without them;
    each process scores its share and the counts are summed)."""
    if data.val_inputs is None and not ctx.distributed:  # with several, every process takes part in the sum
        return {}
    scores = [correct_count(model, data.val_inputs, data.val_allowed, ctx.device, amp)]
    if ema is not None:
        scores.append(correct_count(ema.module, data.val_inputs, data.val_allowed, ctx.device, amp))
    n, *correct = ctx.sum([len(data.held_out), *scores])
    if n == 0:
        return {}
    record = {"val_acc": correct[0] / n}
    if ema is not None:
        record["val_acc_ema"] = correct[1] / n
    return record


@torch.no_grad()
def correct_count(model, inputs, allowed, device, amp: bool) -> int:
    """How many of ``inputs`` (None: none) have a top class ``allowed`` (N x classes) for them."""
    model.eval()
    correct = 0
    for start in range(0, 0 if inputs is None else len(inputs), 64):
        x = inputs[start:start + 64].to(device, memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            predicted = model(x).argmax(1).cpu()
        correct += allowed[start:start + 64].gather(1, predicted[:, None]).sum().item()
    return correct
