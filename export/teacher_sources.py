"""Which teachers label which photos (``train --teacher-for SOURCE=K[,K]``).

By default every teacher labels every photo and the soft labels are their mean. A teacher that
knows one photo source and not another can be kept to the one it knows: run 13, trained on
TrashNet alone, reads TrashNet well and calls most of the second source's bottles paper, so
``--teacher runs/t7/checkpoint.pth --teacher runs/run13-int8.onnx --teacher-for waste-web=1``
has the photos of the ``--data`` folder named ``waste-web`` labelled by the first teacher alone
and every other folder's photos by both.

Each training photo carries a row of teacher shares (1 for a teacher that labels it, 0 for one
that does not, :func:`teacher_shares`); a mixed photo gets its pair's rows mixed by the mixup
weight (:func:`export.loss.make_batch`), and :func:`export.loss.shared_teacher_targets` weighs
the teachers by them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from device.errors import UsageError

FORMAT = "SOURCE=K[,K] (SOURCE: a --data folder's name; K: a --teacher's position, from 1)"


def parse_teacher_for(specs: list[str] | None, data: list[Path], n_teachers: int) -> dict[int, tuple[int, ...]]:
    """``--teacher-for`` as {index of the --data folder: its teachers' 0-based positions}; a
    UsageError naming the first malformed or unknown one."""
    if not specs:
        return {}
    if not n_teachers:
        raise UsageError("--teacher-for needs --teacher (it says which teachers label which --data folder)")
    names = [Path(d).name for d in data]
    chosen: dict[int, tuple[int, ...]] = {}
    for spec in specs:
        source, sep, picks = spec.partition("=")
        if not sep or not source or not picks:
            raise UsageError(f"--teacher-for {spec}: expected {FORMAT}")
        if names.count(source) != 1:
            which = "no" if source not in names else "more than one"
            raise UsageError(f"--teacher-for {spec}: {which} --data folder is named {source!r} "
                             f"(folders: {', '.join(names)})")
        try:
            positions = sorted({int(k) for k in picks.split(",")})
        except ValueError:
            raise UsageError(f"--teacher-for {spec}: expected {FORMAT}") from None
        if bad := [k for k in positions if not 1 <= k <= n_teachers]:
            raise UsageError(f"--teacher-for {spec}: there is no teacher {bad[0]} "
                             f"({n_teachers} --teacher given, counted from 1)")
        folder = names.index(source)
        if folder in chosen:
            raise UsageError(f"--teacher-for {source}=...: given twice")
        chosen[folder] = tuple(k - 1 for k in positions)
    return chosen


def teacher_shares(items: list[tuple[Path, int]], split, chosen: dict[int, tuple[int, ...]],
                   n_teachers: int) -> torch.Tensor:
    """len(items) x n_teachers float: 1 where a teacher labels the photo (``chosen`` from
    :func:`parse_teacher_for`; a folder not in it: every teacher). Each training photo's folder
    is the one of ``split`` (:class:`export.data_split.DataSplit`) whose manifest lists it."""
    per_folder = torch.ones(len(split.folders), n_teachers)
    for folder, positions in chosen.items():
        per_folder[folder] = 0.0
        per_folder[folder, list(positions)] = 1.0
    folder_of = {path: i for i, s in enumerate(split.folders) for subset in ("train", "val")
                 for path, _ in s.paths(subset)}
    return per_folder[[folder_of[path] for path, _ in items]]


def canonical(specs: list[str] | None) -> tuple[str, ...] | None:
    """``--teacher-for`` as a checkpoint compares it: in name order, each source's teachers in
    order (``web=2,1`` is ``web=1,2``), so that only a change of meaning refuses a resume."""
    if not specs:
        return None
    def one(spec: str) -> str:  # the specs were parsed (parse_teacher_for) before they were saved
        source, _, picks = spec.partition("=")
        return f"{source}={','.join(str(k) for k in sorted({int(k) for k in picks.split(',')}))}"

    return tuple(sorted(one(s) for s in specs))
