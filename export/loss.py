"""The student's loss on one augmented batch.

Label-smoothed cross-entropy on the summed probability of the classes each label allows
(:func:`label_set_loss`: one class, or a set-valued label such as paper-or-cardboard), mixed as
the batch is. With teachers (knowledge
distillation, ``train --teacher CKPT``, repeatable), the teachers label the very same augmented
(and mixed) batch the student sees (several teachers: the mean of their softened probabilities),
or with ``--teacher-view photo`` each photo as it is under the same crop, flips, colour and
mixing while the student sees it on its random board and light (the teacher's label of the
photo is the target for every light the student meets, as Noisy Student's clean teacher),
and the student also matches the teachers' pooled features (concatenated, so a teacher with
larger features weighs more in the cosine; the ensembles here are of one architecture) through
a projection used only in training. With ``--teacher-for`` each photo is labelled by the teachers
of its source alone (:func:`shared_teacher_targets`, :mod:`export.teacher_sources`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from export.data import mix_pairs, resize_batch
from export.models import Student, feature_dim, forward_features


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    targets = targets * (1 - smoothing) + smoothing / targets.shape[1]
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def label_set_loss(logits: torch.Tensor, allowed: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Cross-entropy on the summed probability of the classes each label allows (``allowed``:
    N x classes, 1 where the class is right: one class, or a set-valued label such as
    paper-or-cardboard), label-smoothed. For one class per label it is
    :func:`soft_cross_entropy` of the one-hot labels."""
    log_p = F.log_softmax(logits.float(), dim=1)
    log_p_allowed = torch.logsumexp(log_p.masked_fill(allowed <= 0, float("-inf")), dim=1)
    return (-(1 - smoothing) * log_p_allowed - smoothing * log_p.mean(1)).mean()


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


@torch.no_grad()
def shared_teacher_targets(teachers, x: torch.Tensor, temperature: float,
                           shares: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`teacher_targets` with each photo's teacher ``shares`` (N x teachers on the CPU,
    :mod:`export.teacher_sources`): the soft labels are the shares' weighted mean of the teachers'
    softmax; each teacher's features are scaled by the square root of its share and the third
    value is that scale for every feature column, for the student's projection, so that in the
    cosine each teacher's block counts by its share (none where it has none). A teacher runs
    only on the photos it has a share in; which those are is read on the CPU (no wait on a GPU)."""
    weights = shares.to(x.device, torch.float32, non_blocking=True)
    probs = None
    features, columns = [], []
    for k, teacher in enumerate(teachers):
        width = feature_dim(teacher)
        rows = (shares[:, k] > 0).nonzero()[:, 0]
        t_features = torch.zeros(len(x), width, device=x.device)
        if len(rows):
            every = len(rows) == len(x)
            rows = rows.to(x.device, non_blocking=True)
            t_logits, t_rows = forward_features(teacher, x if every else x.index_select(0, rows))
            p = F.softmax(t_logits.float() / temperature, 1)
            if not every:
                p = torch.zeros(len(x), p.shape[1], device=x.device).index_copy_(0, rows, p)
            t_features = t_rows.float() if every else t_features.index_copy_(0, rows, t_rows.float())
            probs = weights[:, k, None] * p if probs is None else probs + weights[:, k, None] * p
        scale = weights[:, k, None].sqrt()
        features.append(t_features * scale)
        columns.append(scale.expand(-1, width))
    return probs / weights.sum(1, keepdim=True), torch.cat(features, 1), torch.cat(columns, 1)


class Batch(NamedTuple):
    """One augmented (and mixed) batch, ready for the model: ``x`` what the student sees,
    ``x_teacher`` what the teachers label (None: ``x``), ``allowed`` N x classes (1 where a class
    is right for the photo: :attr:`export.data_split.DataSplit.targets`), ``mix`` the mixup's
    weight and partners (None: not mixed), ``seconds`` what making it took (decoding included
    where it was decoded for it), ``error`` a data loader worker's one-line error instead,
    ``teacher_shares`` N x teachers, mixed as the batch is (None: every teacher labels every
    photo; ``train --teacher-for``, :mod:`export.teacher_sources`)."""

    x: torch.Tensor | None
    x_teacher: torch.Tensor | None
    allowed: torch.Tensor | None
    mix: tuple[float, torch.Tensor] | None
    seconds: float = 0.0
    error: str | None = None
    teacher_shares: torch.Tensor | None = None


def make_batch(images, allowed, augment, mixup_prob: float, photo_view: bool, shares=None) -> Batch:
    """The augmented batch of cached uint8 ``images`` (``photo_view``: with the teachers' view of
    each photo as it is, :meth:`export.data.BatchAugment.views`), mixed with ``mixup_prob``;
    ``shares`` the photos' teacher shares (None: every teacher labels every photo)."""
    x, x_photo = augment.views(images, with_photo=photo_view)
    pairs = mix_pairs(mixup_prob, len(x))
    if pairs is not None:
        lam, perm = pairs
        x = lam * x + (1 - lam) * x[perm]
        x_photo = None if x_photo is None else lam * x_photo + (1 - lam) * x_photo[perm]
        shares = None if shares is None else lam * shares + (1 - lam) * shares[perm]
    return Batch(x, x_photo, allowed, pairs, teacher_shares=shares)


def batch_loss(student, teachers, batch: Batch, size_hw, args, device, laps=None):
    """The loss of one :class:`Batch`: ``student(x)`` gives the logits and the projected
    features (:class:`export.models.Student`, or its DistributedDataParallel wrapper);
    ``laps`` (:class:`export.stage_timer.Laps`) times the student and the teachers apart."""
    x = batch.x.to(device, memory_format=torch.channels_last, non_blocking=True)
    x_teacher = x if batch.x_teacher is None else batch.x_teacher.to(device, memory_format=torch.channels_last,
                                                                     non_blocking=True)
    allowed = batch.allowed.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
        logits, projected = student(resize_batch(x, size_hw))
        ce = label_set_loss(logits, allowed, args.label_smoothing)
        if batch.mix is not None:
            lam, perm = batch.mix
            ce = lam * ce + (1 - lam) * label_set_loss(logits, allowed[perm.to(device)], args.label_smoothing)
        loss = (1 - args.kd_weight if teachers else 1.0) * ce
        if teachers:
            t = args.kd_temperature
            if laps is not None:
                laps.lap("student")
            if batch.teacher_shares is None:
                t_probs, t_features = teacher_targets(teachers, x_teacher, t)
            else:
                t_probs, t_features, columns = shared_teacher_targets(teachers, x_teacher, t, batch.teacher_shares)
                projected = projected.float() * columns
            if laps is not None:
                laps.lap("teachers")
            kd = F.kl_div(F.log_softmax(logits.float() / t, 1), t_probs, reduction="batchmean") * t * t
            cos = F.cosine_similarity(projected.float(), t_features, dim=1)
            loss = loss + args.kd_weight * kd + args.feature_weight * (1 - cos).mean()
    return loss


def compute_loss(model, projector, teachers, images, allowed, size_hw, augment, args, device, shares=None):
    """The loss of one batch: ``images`` cached uint8, ``allowed`` N x classes (1 where a class
    is right for the photo: :attr:`export.data_split.DataSplit.targets`), ``shares`` their
    teacher shares (None: every teacher labels every photo)."""
    photo_view = bool(teachers) and args.teacher_view == "photo"
    batch = make_batch(images, allowed, augment, args.mixup, photo_view, shares)
    return batch_loss(Student(model, projector), teachers, batch, size_hw, args, device)
