"""Train the sorter's classifier (torchvision ResNet-34) on an ImageFolder of photos.

In the spirit of torchvision's reference ``train.py``: one flat ``main(args)``. Optional
knowledge distillation from fine-tuned teachers (``--teacher CKPT``, repeatable): the teachers
label the very same augmented (and mixed) batch the student sees (several teachers: the mean of
their softened probabilities), and the student also matches the teachers' pooled features
(concatenated, so a teacher with larger features weighs more in the cosine; the ensembles here
are of one architecture) through a projection used only in training. ``--teacher-for
SOURCE=K`` keeps a --data folder's photos to some of the teachers (:mod:`export.teacher_sources`).

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
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from device.atomic import write_with
from device.contract import FLATFIELD_POLICIES, ModelContract
from device.errors import DataError, UsageError
from export import distributed
from export.checkpoints import checkpoint_state, resume, resume_mismatches
from export.data import BatchAugment, load_cached, load_eval
from export.data_split import load_data_split, split_for_training
from export.epoch import in_memory_batches, throughput_line, train_one_epoch, validate
from export.loader import batch_seed, default_workers, make_loader
from export.split import parse_label_map, scan_image_folder
from export.teacher_sources import parse_teacher_for, teacher_shares
from export.loss import teacher_targets  # noqa: F401 (tests take it from here)
from export.lr_find import find_lr
from export.models import ARCHS, Student, build_model, feature_dim, load_checkpoint, load_teacher
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
    p.add_argument("--label-map", action="append", metavar="FOLDER=CLASS[,CLASS]",
                   help="a class folder's photos are these classes (recorded in the split): one other name "
                        "(other-wood=trash) or a set-valued label, the loss on the classes' summed probability "
                        "(paper-or-cardboard=cardboard,paper); repeat per folder")
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
    p.add_argument("--textured-board-prob", type=float, default=0.6,
                   help="share of the relit photos whose board has a grain and blotches, as real boards do")
    p.add_argument("--camera-prob", type=float, default=0.5,
                   help="share of training photos given a recorded video's artefacts: compression, "
                        "slight blur (with --flatfield border)")
    p.add_argument("--teacher", type=Path, action="append",
                   help="checkpoint of a trained teacher to distil from, or a ResNet-34 ONNX model this "
                        "project exported (the shipped int8 one too); repeat for an ensemble")
    p.add_argument("--teacher-for", action="append", metavar="SOURCE=K[,K]",
                   help="the photos of the --data folder named SOURCE are labelled by teachers K alone (their "
                        "positions among --teacher, from 1); other folders' photos by every teacher; repeatable")
    p.add_argument("--teacher-view", choices=("same", "photo"), default="same",
                   help="what the teachers label: the student's augmented batch (same) or each photo as it "
                        "is under the same crop and colour (photo: one target for every board and light)")
    p.add_argument("--kd-weight", type=float, default=0.7, help="weight of the teacher's soft labels")
    p.add_argument("--kd-temperature", type=float, default=2.0)
    p.add_argument("--feature-weight", type=float, default=1.0, help="weight of feature matching")
    p.add_argument("--model-ema-decay", type=float, default=0.998, help="0 disables the weight EMA")
    p.add_argument("--find-lr", action="store_true", help="run a learning-rate range test and exit")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint.pth")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda (under torchrun: the GPU of the local rank) or cuda:N")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="disable bf16 autocast")
    p.add_argument("--workers", type=int,
                   help="data loader processes decoding, relighting and augmenting batches (default: 0 on a "
                        "CPU, the path of before; on a GPU the CPUs less one, shared among the node's processes)")
    p.add_argument("--sync-bn", action="store_true",
                   help="with torchrun on GPUs: batch-norm statistics over the global batch (SyncBatchNorm); "
                        "default each process's own batch")
    p.add_argument("--dist-timeout-s", type=float, default=300.0,
                   help="with torchrun: how long a process waits for the others at a collective")
    p.add_argument("--stop-after-epoch", type=int, metavar="N",
                   help="stop after epoch N's checkpoint (a schedule split over sittings: --resume continues it)")
    p.add_argument("--debug-weights-log", type=Path, metavar="FILE",
                   help="after every step append the weights' SHA-256 to FILE.rankR (data-parallel runs: the same "
                        "on every rank)")
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


def main(args) -> int:
    if args.teacher_view == "photo" and (not args.teacher or args.flatfield == "none"):
        raise UsageError("--teacher-view photo needs --teacher and a board-normalised --flatfield "
                         "(the teacher's view is each photo without the student's board and light)")
    parse_teacher_for(args.teacher_for, args.data, len(args.teacher or ()))  # refused before anything is written
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers {args.workers}: must be 0 or more")
    if args.stop_after_epoch is not None and args.stop_after_epoch < 1:
        raise UsageError(f"--stop-after-epoch {args.stop_after_epoch}: must be at least 1")
    with distributed.start(args.device, timeout_s=args.dist_timeout_s) as ctx:
        torch.manual_seed(args.seed)
        device = ctx.device
        distributed.check_bf16(device, args.amp)
        if args.sync_bn and device.type != "cuda":
            raise UsageError("--sync-bn needs GPUs (PyTorch's SyncBatchNorm runs on CUDA only)")
        workers = default_workers(device, ctx.local_world_size) if args.workers is None else args.workers
        in_memory = workers == 0 and not ctx.distributed  # the path of before (export.loader: the other)
        if args.find_lr and not in_memory:
            raise UsageError("--find-lr runs in one process without --workers")
        out = Path(args.output_dir)
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
        args.input_height = args.input_height or round(args.input_size * 3 / 4)
        # the checkpoint to resume from, the split and the photos
        ckpt_path = out / "checkpoint.pth"
        ckpt = load_checkpoint(ckpt_path) if args.resume else None
        if ckpt is not None and (changed := resume_mismatches(ckpt["args"], args)):
            raise DataError(f"--resume: checkpoint was trained with {'; '.join(changed)} "
                            "(resume with the same values, or start anew with --init FILE.pth)")
        split = training_split(args, out, ckpt, ckpt_path, ctx)
        args.num_classes = len(split.classes)
        contract = ModelContract(classes=split.classes, input_width=args.input_size,
                                 input_height=args.input_height, flatfield=args.flatfield)
        data = load_data(args, split, contract, ctx, in_memory=in_memory)
        # the model, its teachers and the optimiser
        model = build_student(args, data, contract, device, resuming=ckpt is not None)
        teachers = [load_teacher(path, split.classes, device) for path in args.teacher or ()]
        projector = (nn.Linear(feature_dim(model), sum(feature_dim(t) for t in teachers)).to(device)
                     if teachers else None)
        optimizer = build_optimizer(args, model, projector)
        augment = BatchAugment((args.input_height, args.input_size), contract, min_scale=args.min_crop_scale,
                               relight_prob=args.relight_prob, camera_prob=args.camera_prob,
                               textured_prob=args.textured_board_prob)
        if args.find_lr:
            find_lr(model, projector, teachers, data.images, data.allowed, augment, optimizer, args, device, out,
                    student_size(args, args.epochs), data.teacher_shares)
            return 0
        photo_view = bool(teachers) and args.teacher_view == "photo"
        loader = None if in_memory else make_loader(data.train_items, data.allowed, augment, args, workers=workers,
                                                    rank=ctx.rank, world_size=ctx.world_size, device=device,
                                                    photo_view=photo_view, shares=data.teacher_shares)
        steps_per_epoch = data.steps_per_epoch(args.batch_size) if loader is None else len(loader)
        # the schedule (its peak after the global batch), the weights' EMA, where a resumed run carries on
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=peak_lr(args, ctx.world_size), total_steps=args.epochs * steps_per_epoch,
            pct_start=args.warmup_frac)
        ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.model_ema_decay), use_buffers=True)
               if args.model_ema_decay > 0 else None)
        start_epoch, history = (resume(ckpt, ckpt_path, device, model=model, ema=ema, projector=projector,
                                       optimizer=optimizer, scheduler=scheduler, world_size=ctx.world_size,
                                       steps_per_epoch=steps_per_epoch) if ckpt is not None else (0, []))
        student = distributed.wrap(Student(model, projector), ctx, sync_bn=args.sync_bn)
        for epoch in range(start_epoch, args.epochs):
            if loader is None:
                batches = in_memory_batches(data, augment, args, photo_view)
            else:
                loader.sampler.set_epoch(epoch)
                torch.manual_seed(batch_seed(args.seed, ctx.rank, epoch, -1))  # this process's draws (dropout)
                batches = iter(loader)
            record = train_one_epoch(student, teachers, batches, steps_per_epoch, optimizer, scheduler, ema, epoch,
                                     args, ctx, workers=workers if loader is not None else 0,
                                     size_hw=student_size(args, epoch))
            record.update(validate(model, ema, data, ctx, args.amp))
            history.append(record)
            print(json.dumps(record))
            print(throughput_line(record["throughput"]))
            if ctx.is_main:
                save_checkpoint(checkpoint_state(epoch=epoch, args=args, model=model, ema=ema, projector=projector,
                                                 optimizer=optimizer, scheduler=scheduler, split=split,
                                                 contract=contract, history=history, device=device,
                                                 world_size=ctx.world_size), ckpt_path)
            if args.stop_after_epoch is not None and epoch + 1 >= args.stop_after_epoch and epoch + 1 < args.epochs:
                print(f"stopped after epoch {epoch + 1} of {args.epochs} (--stop-after-epoch): "
                      f"continue with --resume")
                return 0
        if ctx.is_main:
            (out / "history.json").write_text(json.dumps(history, indent=1))
        return 0


def peak_lr(args, processes: int) -> float:
    """The one-cycle schedule's peak: ``--lr`` is the rate for one process's batch
    (``--batch-size``); N processes train on a global batch N times larger, and the rate grows
    with it, linearly for SGD (Goyal et al. 2017) and with its square root for AdamW (Malladi et
    al. 2022)."""
    return args.lr * (processes if args.opt == "sgd" else math.sqrt(processes))


def training_split(args, out: Path, ckpt: dict | None, ckpt_path: Path, ctx=distributed.Context()):
    """The split of every ``--data`` folder (:mod:`export.data_split`), written to
    OUTPUT_DIR/split.json by rank 0 (the other ranks read it there); on ``--resume``, the
    checkpoint's."""
    if args.replay_per_class is not None and args.replay_per_class < 1:
        raise UsageError(f"--replay-per-class {args.replay_per_class}: must be at least 1")
    label_map = parse_label_map(args.label_map) if args.label_map else None
    check_label_map(label_map or {}, args.data)  # before a split is written with it
    if ctx.is_main:
        split = split_for_training(args.split or out / "split.json", out / "split.json", args.data,
                                   val_frac=args.val_frac, test_frac=args.test_frac, seed=args.seed,
                                   label_map=label_map)
    ctx.barrier()
    if not ctx.is_main:
        split = load_data_split(out / "split.json", args.data)
    if ckpt is not None and ckpt["split_sha256"] != split.sha256:
        raise DataError(f"{ckpt_path}: checkpoint was trained on another split")
    return split


def check_label_map(label_map: dict[str, tuple[str, ...]], roots: list[Path]) -> None:
    """A UsageError for a ``--label-map`` folder no data folder has, or a class no folder is."""
    folders = {f for root in roots for f in scan_image_folder(Path(root), min_classes=1)[0]}
    named = folders - set(label_map)
    for folder, classes in label_map.items():
        if folder not in folders:
            raise UsageError(f"--label-map {folder}=...: no data folder has a class folder {folder!r}")
        if unknown := [c for c in classes if c not in named]:
            raise UsageError(f"--label-map {folder}={','.join(classes)}: {', '.join(unknown)} is no class folder "
                             f"of the data (classes: {', '.join(sorted(named))})")


def allowed_matrix(split, labels: torch.Tensor) -> torch.Tensor:
    """N x classes float: 1 where a class is right for each label (:attr:`DataSplit.targets`)."""
    targets = split.targets
    table = torch.zeros(len(targets), len(split.classes))
    for i, classes in enumerate(targets):
        table[i, list(classes)] = 1.0
    return table[labels]


@dataclass(frozen=True)
class TrainingData:
    """The training photos decoded into memory (cached size, uint8) and the held-out validation
    photos as the device would give them to the model (none with ``--train-on-val``)."""

    train_items: list[tuple[Path, int]]
    images: torch.Tensor | None  # None: decoded by the data loader (export.loader)
    labels: torch.Tensor
    allowed: torch.Tensor  # N x classes: 1 where a class is right (a set-valued label has several)
    held_out: list[tuple[Path, int]]  # this process's share of the validation photos
    val_inputs: torch.Tensor | None
    val_allowed: torch.Tensor | None
    teacher_shares: torch.Tensor | None = None  # N x teachers (--teacher-for); None: every teacher's

    def steps_per_epoch(self, batch_size: int) -> int:
        return len(self.train_items) // batch_size


def load_data(args, split, contract: ModelContract, ctx=distributed.Context(), *, in_memory: bool = True) -> TrainingData:
    """The training photos (at most ``--limit-per-class`` of each class; at least one batch;
    decoded here when ``in_memory``, else by the data loader) and this process's share of the
    validation photos, decoded; says how many there are."""
    train_items = split.training_items(with_val=args.train_on_val, replay_per_class=args.replay_per_class)
    if args.limit_per_class:
        train_items = [it for c in range(len(split.targets))  # set-valued labels too
                       for it in [x for x in train_items if x[1] == c][:args.limit_per_class]]
    if len(train_items) < args.batch_size * ctx.world_size:
        raise DataError(f"{', '.join(map(str, args.data))}: {len(train_items)} training photos, "
                        f"fewer than one batch" + (f" for each of {ctx.world_size} processes" if ctx.distributed else ""))
    if in_memory:
        images, labels = load_cached(train_items, "decode train")
    else:
        images, labels = None, torch.tensor([label for _, label in train_items], dtype=torch.int64)
    held_out = [] if args.train_on_val else split.paths("val")[ctx.rank::ctx.world_size]
    val_inputs, val_labels = (load_eval(held_out, contract, "decode val", progress=ctx.is_main) if held_out
                              else (None, None))
    if len(split.folders) > 1:
        print("\n".join(split.describe() + ["(the test photos of every folder are held out)"]))
    if mapped := [f"{f} -> {' or '.join(s.allowed(f))}" for s in split.folders for f in s.label_map]:
        print(f"label map: {'; '.join(mapped)}")
    print(f"{len(train_items)} train / {len(split.paths('val')) if held_out else 0} val photos, "
          f"classes {', '.join(split.classes)}" + (f"; {ctx.world_size} processes" if ctx.distributed else ""))
    shares = None
    if chosen := parse_teacher_for(args.teacher_for, args.data, len(args.teacher or ())):
        shares = teacher_shares(train_items, split, chosen, len(args.teacher))
        print("teachers: " + "; ".join(f"{Path(args.data[i]).name} by teacher {', '.join(str(k + 1) for k in ks)}"
                                       for i, ks in sorted(chosen.items())) + "; other folders by every teacher")
    return TrainingData(train_items, images, labels, allowed_matrix(split, labels), held_out, val_inputs,
                        None if val_labels is None else allowed_matrix(split, val_labels), shares)


def build_student(args, data: TrainingData, contract: ModelContract, device: torch.device, *,
                  resuming: bool) -> nn.Module:
    """The model to train, initialised from ``--init`` (on ``--resume`` the checkpoint's weights
    replace the initial ones: don't fetch those)."""
    model = build_model(args.arch, args.num_classes, "scratch" if resuming else args.init)
    model = model.to(device, memory_format=torch.channels_last)
    if not resuming and str(args.init).endswith(".onnx"):
        warn_other_classes(Path(args.init), contract.classes)
        # Batch norms folded away by export come back as identities: measure their statistics
        # on training photos so train-mode batch norm starts from the shipped model's outputs.
        sample = data.train_items[::max(1, len(data.train_items) // 256)]
        restore_batchnorm(model, load_eval(sample, contract, "batch-norm statistics")[0].to(device))
    return model


def build_optimizer(args, model: nn.Module, projector: nn.Module | None) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW; no weight decay on biases and batch-norm parameters."""
    trainable = list(model.parameters()) + (list(projector.parameters()) if projector else [])
    groups = [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": args.weight_decay},
              {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0}]
    if args.opt == "sgd":
        return torch.optim.SGD(groups, lr=args.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=args.lr)


def save_checkpoint(state: dict, path: Path) -> None:
    write_with(path, lambda tmp: torch.save(state, tmp))


if __name__ == "__main__":  # torchrun --nproc_per_node N -m export.train ARGS: waste-sorter train ARGS
    from device.cli import main as cli_main

    sys.exit(cli_main(["train", *sys.argv[1:]]))
