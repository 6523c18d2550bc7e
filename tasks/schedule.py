"""Schedule maths as plain functions: one-cycle built from torch's OneCycleLR, discriminative LRs."""

from __future__ import annotations

import math

import torch


def one_cycle(optimizer: torch.optim.Optimizer, max_lrs: list[float], total_steps: int, pct_start: float = 0.25, div_factor: float = 25.0, final_div_factor: float = 1e4):
    """torch's ``OneCycleLR`` (cosine warm-up then annealing, momentum/beta1 inverse), robust to tiny runs.

    ``OneCycleLR`` divides by zero when the warm-up phase ends exactly on step 0 (e.g. 4 steps at
    ``pct_start=0.25``); the warm-up is therefore kept at least 1.5 steps long.
    """
    total_steps = max(1, int(total_steps))
    pct = min(0.9, max(pct_start, 1.5 / total_steps))
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=list(max_lrs), total_steps=total_steps, pct_start=pct,
        div_factor=div_factor, final_div_factor=final_div_factor, anneal_strategy="cos",
        cycle_momentum=any(k in optimizer.defaults for k in ("momentum", "betas")),  # (as fastai: where the optimizer has one)
    )


def spread_lrs(lr: float | tuple[float, float] | list[float], n_groups: int) -> list[float]:
    """Learning rates per layer group, input to output (fastai's ``slice``).

    A single number gives every group that LR; ``[lo, hi]`` gives the lowest group ``lo``, the
    head ``hi`` and the groups in between geometrically spaced values.
    """
    if isinstance(lr, (int, float)):
        return [float(lr)] * n_groups
    lr = [float(v) for v in lr]
    if len(lr) == n_groups and n_groups != 2:
        return lr
    if len(lr) != 2:
        raise ValueError(f"lr {lr}: give one value, [low, high], or one value per layer group ({n_groups}).")
    lo, hi = lr
    if n_groups == 1:
        return [hi]
    if lo <= 0 or hi <= 0:
        raise ValueError(f"lr {lr}: a slice needs positive values.")
    step = (math.log(hi) - math.log(lo)) / (n_groups - 1)
    return [math.exp(math.log(lo) + i * step) for i in range(n_groups)]
