"""``train --find-lr``: a learning-rate range test. The rate rises exponentially from 1e-5 to 1
over at most 100 steps (stopping once the smoothed loss runs away); the loss is plotted to
OUTPUT_DIR/lr_find.png and a tenth of the rate at its minimum is suggested."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from tqdm import tqdm

from export.loss import compute_loss


def find_lr(model, projector, teachers, images, labels, augment, optimizer, args, device, out: Path,
            size_hw: tuple[int, int], shares=None):
    """LR range test at the input size ``size_hw``: raise the rate exponentially from 1e-5 to 1
    and plot the smoothed loss (``shares``: the photos' teacher shares, None: every teacher's)."""
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
        loss = compute_loss(model, projector, teachers, images[idx], labels[idx], size_hw, augment, args, device,
                            None if shares is None else shares[idx])
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
