"""A training run's checkpoint (OUTPUT_DIR/checkpoint.pth, rewritten after every epoch): the
weights and their EMA, the distillation projector, the optimiser's and scheduler's states, the
RNG states, the history so far, and the arguments it was trained with, paths as strings.
``train --resume`` continues from it only with the same :data:`RESUME_KEYS` arguments, and an
interrupted and resumed run ends where one run would. Read with
:func:`export.models.load_checkpoint`."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from export.models import unfit
from export.teacher_sources import canonical

#: Arguments that change the optimisation or the data: a resumed run must keep them.
RESUME_KEYS = ("arch", "opt", "lr", "weight_decay", "warmup_frac", "batch_size", "epochs", "seed",
               "train_on_val", "limit_per_class", "input_size", "input_height", "min_input_size",
               "mixup", "label_smoothing", "min_crop_scale", "teacher", "kd_weight", "kd_temperature",
               "feature_weight", "model_ema_decay", "split", "flatfield", "relight_prob", "camera_prob",
               "textured_board_prob", "replay_per_class", "teacher_view", "label_map", "teacher_for")


#: What a checkpoint written before --flatfield, --relight-prob, --camera-prob,
#: --textured-board-prob, --teacher-view or --teacher-for existed was trained with.
OLDER_CHECKPOINT_DEFAULTS = {"flatfield": "none", "relight_prob": 0.0, "camera_prob": 0.0,
                             "textured_board_prob": 0.0, "teacher_view": "same", "teacher_for": None}


def resume_mismatches(saved: dict, args) -> list[str]:
    """``key=saved, not now`` for each RESUME_KEYS argument that differs from the checkpoint's
    (keys an older checkpoint lacks are not compared)."""
    def plain(key, v):
        if key == "teacher_for":
            return canonical(v)
        if key == "teacher" and isinstance(v, (str, Path)):  # checkpoints from before several teachers
            v = [v]
        if isinstance(v, (list, tuple)):
            return tuple(plain(None, x) for x in v)
        return os.path.normpath(v) if isinstance(v, (str, Path)) and str(v) else v

    saved = {**OLDER_CHECKPOINT_DEFAULTS, **saved}  # checkpoints from before these arguments
    now = plain_args(args)
    return [f"{k}={saved[k]}, not {now[k]}" for k in RESUME_KEYS
            if k in saved and k in now and plain(k, saved[k]) != plain(k, now[k])]


def plain_args(args) -> dict:
    """The arguments as a checkpoint stores them: paths as strings."""
    def plain(v):
        return str(v) if isinstance(v, Path) else [plain(x) for x in v] if isinstance(v, list) else v

    return {k: plain(v) for k, v in vars(args).items()}


def checkpoint_state(*, epoch: int, args, model, ema, projector, optimizer, scheduler, split, contract,
                     history: list[dict], device: torch.device, world_size: int = 1) -> dict:
    """Everything a checkpoint holds after ``epoch`` (from 0), trained by ``world_size`` processes."""
    return {
        "model": model.state_dict(),
        "model_ema": ema.module.state_dict() if ema is not None else None,
        "model_ema_full": ema.state_dict() if ema is not None else None,
        "projector": projector.state_dict() if projector is not None else None,
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "args": plain_args(args),
        "classes": list(split.classes),
        "contract": contract.to_json(),
        "split_sha256": split.sha256,
        "history": history,
        "rng_state": torch.get_rng_state(),
        "cuda_rng_state": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "world_size": world_size,
    }


#: The parameter-group entries of a one-cycle schedule (its peak and ends).
_SCHEDULE_KEYS = ("initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum")


def resume(ckpt: dict, path: Path, device: torch.device, *, model, ema, projector, optimizer,
           scheduler, world_size: int = 1, steps_per_epoch: int = 0) -> tuple[int, list[dict]]:
    """Load the checkpoint's states into the run's and restore its RNG states; the epoch to
    start at and the history so far. A checkpoint of another number of processes (another
    global batch, so other steps per epoch and peak rate) keeps the run's new ``scheduler``,
    moved on to where the checkpoint's epochs end."""
    try:
        model.load_state_dict(ckpt["model"])
        new_schedule = ckpt.get("world_size", 1) != world_size
        schedule = [{k: g[k] for k in _SCHEDULE_KEYS if k in g} for g in optimizer.param_groups]
        optimizer.load_state_dict(ckpt["optimizer"])
        if new_schedule:
            for group, entries in zip(optimizer.param_groups, schedule):
                group.update(entries)
        else:
            scheduler.load_state_dict(ckpt["lr_scheduler"])
        if ema is not None and ckpt.get("model_ema_full"):
            ema.load_state_dict(ckpt["model_ema_full"])
        if projector is not None and ckpt.get("projector"):
            projector.load_state_dict(ckpt["projector"])
        epoch, history = ckpt["epoch"], ckpt.get("history", [])
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < -1 or not isinstance(history, list):
            raise ValueError(f"epoch {epoch!r}, history of type {type(history).__name__}")
        start_epoch = epoch + 1
        if new_schedule:
            with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": on purpose
                warnings.simplefilter("ignore")
                for _ in range(start_epoch * steps_per_epoch):
                    scheduler.step()
            print(f"{path}: trained by {ckpt.get('world_size', 1)} processes, continued by {world_size} "
                  f"({steps_per_epoch} steps an epoch from now on)")
        if ckpt.get("rng_state") is not None:  # older checkpoints lack it: carry on without
            torch.set_rng_state(ckpt["rng_state"])
        if device.type == "cuda" and ckpt.get("cuda_rng_state") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng_state"], device)
    except (OSError, RuntimeError, EOFError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise unfit(path, exc, "cannot resume from this checkpoint") from None
    print(f"resumed from {path} at epoch {start_epoch}")
    return start_epoch, history
