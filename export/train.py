"""Train the sorter's classifier (torchvision ResNet-34) on an ImageFolder of photos.

In the spirit of torchvision's reference ``train.py``: one flat ``main(args)``. Optional
knowledge distillation from fine-tuned teachers (``--teacher CKPT``, repeatable): the teachers
label the very same augmented (and mixed) batch the student sees (several teachers: the mean of
their softened probabilities), and the student also matches the teachers' pooled features
(concatenated, so a teacher with larger features weighs more in the cosine; the ensembles here
are of one architecture) through a projection used only in training.

    waste-sorter train --data DIR --output-dir runs/r34 [--init scratch|imagenet|FILE.pth]
    waste-sorter train ... --find-lr          # learning-rate range test -> PNG + suggestion
    waste-sorter train ... --resume           # continue runs/r34/checkpoint.pth (same arguments)
    waste-sorter train ... --train-on-val     # final refit of a recipe chosen on validation
    waste-sorter train --data TRASHNET --data CAPTURES --split device/model/split.json \
        --init device/model/waste-sorter-resnet34-int8.onnx ...   # fine-tune on device photos

Several ``--data`` folders are one training set (:mod:`export.data_split`): the first keeps the
manifest ``--split`` names, a folder of exported captures is split by item, and every folder's
test photos stay out of training; the split of all of them is written to OUTPUT_DIR/split.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from device.atomic import write_with
from device.contract import FLATFIELD_POLICIES, ModelContract
from device.errors import DataError, UsageError
from export.data import BatchAugment, load_cached, load_eval, mixup, resize_batch
from export.data_split import split_for_training
from export.models import ARCHS, build_model, checkpoint_weights, feature_dim, forward_features, load_checkpoint, unfit
from export.onnx_weights import restore_batchnorm, warn_other_classes

log = logging.getLogger(__name__)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, add_help=add_help,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, action="append",
                   help="ImageFolder: one folder per class; repeat for several (TrashNet, exported captures)")
    p.add_argument("--output-dir", required=True, type=Path, help="checkpoints, split, plots")
    p.add_argument("--split", type=Path, help="split manifest (default OUTPUT_DIR/split.json; made if missing); "
                                              "with several --data, that of all of them or of the first")
    p.add_argument("--val-frac", type=float, default=0.10)
    p.add_argument("--test-frac", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", choices=ARCHS, default="resnet34")
    p.add_argument("--init", default="scratch", help="imagenet | scratch | FILE.pth")
    p.add_argument("--input-size", type=int, default=224, help="model input width in pixels")
    p.add_argument("--input-height", type=int, help="model input height (default 3/4 of the width)")
    p.add_argument("--min-input-size", type=int, help="progressive resizing: start width (default: no ramp)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--opt", choices=("sgd", "adamw"), default="sgd")
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--warmup-frac", type=float, default=0.15, help="fraction of steps rising to --lr")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--mixup", type=float, default=0.0, help="probability of mixing a batch")
    p.add_argument("--min-crop-scale", type=float, default=0.25)
    p.add_argument("--flatfield", choices=FLATFIELD_POLICIES, default="border",
                   help="contract step before scaling: border = divide the board and light out "
                        "(device.flatfield); none = the photo as it is")
    p.add_argument("--relight-prob", type=float, default=0.8,
                   help="share of training photos put on a random board under a random light "
                        "(with --flatfield border)")
    p.add_argument("--teacher", type=Path, action="append",
                   help="checkpoint of a trained teacher to distil from; repeat for an ensemble")
    p.add_argument("--kd-weight", type=float, default=0.7, help="weight of the teacher's soft labels")
    p.add_argument("--kd-temperature", type=float, default=2.0)
    p.add_argument("--feature-weight", type=float, default=1.0, help="weight of feature matching")
    p.add_argument("--model-ema-decay", type=float, default=0.998, help="0 disables the weight EMA")
    p.add_argument("--find-lr", action="store_true", help="run a learning-rate range test and exit")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint.pth")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="disable bf16 autocast")
    p.add_argument("--train-on-val", action="store_true",
                   help="final refit: the validation photos join training, so nothing is scored on them "
                        "(export then takes the EMA weights); the test photos stay held out")
    p.add_argument("--limit-per-class", type=int, help="use at most N training photos per class (smoke tests)")
    p.add_argument("--replay-per-class", type=int,
                   help="with several --data: at most N training photos per class of the first folder, "
                        "all of the others' (a short fine-tune on device photos)")


def student_size(args, epoch: int) -> tuple[int, int]:
    """(height, width) for this epoch: a linear ramp to the full size over 80% of training."""
    width = args.input_size
    if args.min_input_size and args.min_input_size < args.input_size:
        frac = min(1.0, epoch / max(1, round(0.8 * (args.epochs - 1))))
        width = args.min_input_size + frac * (args.input_size - args.min_input_size)
        width = min(args.input_size, int(round(width / 32) * 32))
    height = round(width * args.input_height / args.input_size / 8) * 8
    return height, width


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    targets = targets * (1 - smoothing) + smoothing / targets.shape[1]
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


@torch.no_grad()
def teacher_targets(teachers, x: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The ensemble's soft labels (mean of each teacher's softmax at ``temperature``) and its
    pooled features (each teacher's, concatenated)."""
    probs, features = [], []
    for teacher in teachers:
        t_logits, t_features = forward_features(teacher, x)
        probs.append(F.softmax(t_logits.float() / temperature, 1))
        features.append(t_features.float())
    return torch.stack(probs).mean(0), torch.cat(features, 1)


def compute_loss(model, projector, teachers, images, labels, size_hw, augment, args, device):
    x = augment(images)
    y = F.one_hot(labels, num_classes=args.num_classes).float()
    x, y = mixup(x, y, args.mixup)
    x = x.to(device, memory_format=torch.channels_last)
    y = y.to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
        logits, features = forward_features(model, resize_batch(x, size_hw))
        loss = (1 - args.kd_weight if teachers else 1.0) * soft_cross_entropy(logits, y, args.label_smoothing)
        if teachers:
            t = args.kd_temperature
            t_probs, t_features = teacher_targets(teachers, x, t)
            kd = F.kl_div(F.log_softmax(logits.float() / t, 1), t_probs, reduction="batchmean") * t * t
            cos = F.cosine_similarity(projector(features).float(), t_features, dim=1)
            loss = loss + args.kd_weight * kd + args.feature_weight * (1 - cos).mean()
    return loss


@torch.no_grad()
def evaluate_accuracy(model, inputs, labels, device, amp: bool) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(inputs), 64):
        x = inputs[start:start + 64].to(device, memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            correct += (model(x).argmax(1).cpu() == labels[start:start + 64]).sum().item()
    return correct / max(1, len(inputs))


def find_lr(model, projector, teachers, images, labels, augment, optimizer, args, device, out: Path):
    """LR range test: raise the rate exponentially from 1e-5 to 1 and plot the smoothed loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = min(100, 3 * max(1, len(images) // args.batch_size))
    rates = [1e-5 * (1e5 ** (i / max(1, steps - 1))) for i in range(steps)]
    losses, smooth = [], 0.0
    model.train()
    for i, rate in enumerate(tqdm(rates, desc="find-lr")):
        for group in optimizer.param_groups:
            group["lr"] = rate
        idx = torch.randint(0, len(images), (args.batch_size,))
        loss = compute_loss(model, projector, teachers, images[idx], labels[idx],
                            student_size(args, args.epochs), augment, args, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        smooth = 0.9 * smooth + 0.1 * loss.item()
        losses.append(smooth / (1 - 0.9 ** (i + 1)))
        if not math.isfinite(losses[-1]) or losses[-1] > 4 * min(losses):
            break
    best = min(range(len(losses)), key=losses.__getitem__)
    suggested = rates[best] / 10
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(rates[:len(losses)], losses)
    ax.axvline(suggested, color="tab:red", linestyle="--", label=f"suggested {suggested:.2g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed training loss", title="LR range test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "lr_find.png", dpi=120)
    print(f"suggested --lr {suggested:.3g} (loss minimum at {rates[best]:.3g}); plot: {out / 'lr_find.png'}")
    return suggested


#: Arguments that change the optimisation or the data: a resumed run must keep them.
RESUME_KEYS = ("arch", "opt", "lr", "weight_decay", "warmup_frac", "batch_size", "epochs", "seed",
               "train_on_val", "limit_per_class", "input_size", "input_height", "min_input_size",
               "mixup", "label_smoothing", "min_crop_scale", "teacher", "kd_weight", "kd_temperature",
               "feature_weight", "model_ema_decay", "split", "flatfield", "relight_prob", "replay_per_class")


#: What a checkpoint written before --flatfield/--relight-prob existed was trained with.
PRE_FLATFIELD_DEFAULTS = {"flatfield": "none", "relight_prob": 0.0}


def resume_mismatches(saved: dict, args) -> list[str]:
    """``key=saved, not now`` for each RESUME_KEYS argument that differs from the checkpoint's
    (keys an older checkpoint lacks are not compared)."""
    def plain(key, v):
        if key == "teacher" and isinstance(v, (str, Path)):  # checkpoints from before several teachers
            v = [v]
        if isinstance(v, (list, tuple)):
            return tuple(plain(None, x) for x in v)
        return os.path.normpath(v) if isinstance(v, (str, Path)) and str(v) else v

    saved = {**PRE_FLATFIELD_DEFAULTS, **saved}  # checkpoints from before board normalisation
    now = plain_args(args)
    return [f"{k}={saved[k]}, not {now[k]}" for k in RESUME_KEYS
            if k in saved and k in now and plain(k, saved[k]) != plain(k, now[k])]


def load_teacher(path: Path, classes: tuple[str, ...], device: torch.device) -> nn.Module:
    ckpt = load_checkpoint(path)
    if list(ckpt["classes"]) != list(classes):
        raise DataError(f"{path}: teacher classes {ckpt['classes']} differ from the data's")
    try:
        teacher = build_model(ckpt["args"]["arch"], len(classes), "scratch")
        teacher.load_state_dict(checkpoint_weights(ckpt))
    except (KeyError, RuntimeError) as exc:
        raise unfit(path, exc, "teacher weights do not fit") from None
    return teacher.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)


def plain_args(args) -> dict:
    """The arguments as a checkpoint stores them: paths as strings."""
    def plain(v):
        return str(v) if isinstance(v, Path) else [plain(x) for x in v] if isinstance(v, list) else v

    return {k: plain(v) for k, v in vars(args).items()}


def save_checkpoint(state: dict, path: Path) -> None:
    write_with(path, lambda tmp: torch.save(state, tmp))


def main(args) -> int:
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    args.input_height = args.input_height or round(args.input_size * 3 / 4)
    ckpt_path = out / "checkpoint.pth"
    ckpt = load_checkpoint(ckpt_path) if args.resume else None
    if ckpt is not None and (changed := resume_mismatches(ckpt["args"], args)):
        raise DataError(f"--resume: checkpoint was trained with {'; '.join(changed)} "
                        "(resume with the same values, or start anew with --init FILE.pth)")
    if args.replay_per_class is not None and args.replay_per_class < 1:
        raise UsageError(f"--replay-per-class {args.replay_per_class}: must be at least 1")
    split = split_for_training(args.split or out / "split.json", out / "split.json", args.data,
                               val_frac=args.val_frac, test_frac=args.test_frac, seed=args.seed)
    args.num_classes = len(split.classes)
    if ckpt is not None and ckpt["split_sha256"] != split.sha256:
        raise DataError(f"{ckpt_path}: checkpoint was trained on another split")
    contract = ModelContract(classes=split.classes, input_width=args.input_size,
                             input_height=args.input_height, flatfield=args.flatfield)
    train_items = split.training_items(with_val=args.train_on_val, replay_per_class=args.replay_per_class)
    if args.limit_per_class:
        train_items = [it for c in range(args.num_classes)
                       for it in [x for x in train_items if x[1] == c][:args.limit_per_class]]
    if len(train_items) < args.batch_size:
        raise DataError(f"{', '.join(map(str, args.data))}: {len(train_items)} training photos, "
                        f"fewer than one batch")
    images, labels = load_cached(train_items, "decode train")
    held_out = [] if args.train_on_val else split.paths("val")
    val_inputs, val_labels = load_eval(held_out, contract, "decode val") if held_out else (None, None)
    if len(split.folders) > 1:
        print("\n".join(split.describe() + ["(the test photos of every folder are held out)"]))
    print(f"{len(images)} train / {len(held_out)} val photos, classes {', '.join(split.classes)}")

    # On --resume the checkpoint's weights replace the initial ones: don't fetch those.
    model = build_model(args.arch, args.num_classes, "scratch" if ckpt is not None else args.init)
    model = model.to(device, memory_format=torch.channels_last)
    if ckpt is None and str(args.init).endswith(".onnx"):
        warn_other_classes(Path(args.init), split.classes)
        # Batch norms folded away by export come back as identities: measure their statistics
        # on training photos so train-mode batch norm starts from the shipped model's outputs.
        sample = train_items[::max(1, len(train_items) // 256)]
        restore_batchnorm(model, load_eval(sample, contract, "batch-norm statistics")[0].to(device))
    teachers = [load_teacher(path, split.classes, device) for path in args.teacher or ()]
    projector = (nn.Linear(feature_dim(model), sum(feature_dim(t) for t in teachers)).to(device)
                 if teachers else None)

    trainable = list(model.parameters()) + (list(projector.parameters()) if projector else [])
    groups = [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": args.weight_decay},
              {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0}]
    if args.opt == "sgd":
        optimizer = torch.optim.SGD(groups, lr=args.lr, momentum=0.9, nesterov=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=args.lr)
    augment = BatchAugment((args.input_height, args.input_size), contract, min_scale=args.min_crop_scale,
                           relight_prob=args.relight_prob)
    if args.find_lr:
        find_lr(model, projector, teachers, images, labels, augment, optimizer, args, device, out)
        return 0

    steps_per_epoch = len(images) // args.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=args.warmup_frac)
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.model_ema_decay), use_buffers=True)
           if args.model_ema_decay > 0 else None)
    start_epoch, history = 0, []
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["lr_scheduler"])
            if ema is not None and ckpt.get("model_ema_full"):
                ema.load_state_dict(ckpt["model_ema_full"])
            if projector is not None and ckpt.get("projector"):
                projector.load_state_dict(ckpt["projector"])
            start_epoch, history = ckpt["epoch"] + 1, ckpt.get("history", [])
        except (OSError, RuntimeError, EOFError, KeyError, ValueError) as exc:
            raise unfit(ckpt_path, exc, "cannot resume from this checkpoint") from None
        if ckpt.get("rng_state") is not None:  # older checkpoints lack it: carry on without
            torch.set_rng_state(ckpt["rng_state"])
        if device.type == "cuda" and ckpt.get("cuda_rng_state") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng_state"], device)
        print(f"resumed from {ckpt_path} at epoch {start_epoch}")

    for epoch in range(start_epoch, args.epochs):
        model.train()
        size_hw = student_size(args, epoch)
        perm = torch.randperm(len(images))
        t0, total = time.time(), 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs} {size_hw[1]}x{size_hw[0]}")
        for step in bar:
            idx = perm[step * args.batch_size:(step + 1) * args.batch_size]
            loss = compute_loss(model, projector, teachers, images[idx], labels[idx], size_hw, augment, args, device)
            if not math.isfinite(loss.item()):
                raise DataError(f"training diverged at epoch {epoch + 1} (loss {loss.item()}); lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            total += loss.item()
            bar.set_postfix(loss=f"{total / (step + 1):.3f}", lr=f"{scheduler.get_last_lr()[0]:.3g}")
        record = {"epoch": epoch + 1, "train_loss": total / steps_per_epoch, "seconds": time.time() - t0}
        if val_inputs is not None:
            record["val_acc"] = evaluate_accuracy(model, val_inputs, val_labels, device, args.amp)
            if ema is not None:
                record["val_acc_ema"] = evaluate_accuracy(ema.module, val_inputs, val_labels, device, args.amp)
        history.append(record)
        print(json.dumps(record))
        save_checkpoint({
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
        }, ckpt_path)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(get_args_parser().parse_args())
