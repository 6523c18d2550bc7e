"""The second way to find a stage's LR (``lr: find`` with ``rule: sweep``): short runs of the stage itself.

The range test ramps the LR with no warm-up, one batch per LR, and is read from the training loss;
for an unfrozen pretrained transformer its lowest loss sits 20x below the best one-cycle peak
(``benchmarks/results/lr_suggestion-imdb.md``). A sweep asks the question directly: from the stage's
starting weights, a few *mini-runs* -- the stage's own one-cycle (its ``pct_start``, layer-group
slice, frozen groups at LR 0) compressed to ``mini_steps`` optimizer steps -- one per candidate peak,
each scored by the validation loss on the same few validation batches; the lowest wins, if it is below
the loss before the mini-runs (otherwise none helped, and the fallback LR is kept). Candidates
are the range test's ``edge`` LR times :data:`SWEEP_FACTORS` (the edge errs low, never high, in the
benchmarks), or around the fallback LR where the range test has no edge.

Every mini-run is a :class:`callbacks.trial.Trial` (the trainer's precision, accumulation, clipping
and device augmentation) from the same weights, optimizer state, RNG and batches, all put back after:
training after a sweep is the training without it.
The planning and the choice are pure functions (:func:`plan_sweep`, :func:`candidates`, :func:`choose`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pytorch_lightning.utilities import move_data_to_device

from tasks.schedule import one_cycle

from .lr_finder import MIN_FIND_STEPS, lr_axes
from .trial import Trial

SWEEP_RULE = "sweep"
CENTRE_RULE = "edge"  # the range-test rule whose LR the candidates multiply
SWEEP_FACTORS = (1.0, 3.0, 9.0, 27.0)  # x the edge LR: it was 20x low on IMDB, 1-6x low on BIWI, right on CamVid
FALLBACK_FACTORS = (1 / 9, 1 / 3, 1.0, 3.0)  # x the fallback LR where the range test has no edge
MIN_MINI_STEPS = 8  # a mini-run shorter than this says nothing about the stage
VAL_BATCHES = 8  # validation batches scoring each mini-run (the same ones for every candidate)
FORWARD_COST = 1 / 3  # a validation batch against a training step (forward only), for the budget
RANGE_SHARE = 0.4  # the range test's share of a sweep's budget (at least MIN_FIND_STEPS steps)


def plan_sweep(run_steps: int, budget: float | None, find_steps: int, n_candidates: int = len(SWEEP_FACTORS),
               val_batches: int = VAL_BATCHES) -> tuple[int, int, str]:
    """The sweep's range-test steps and steps per mini-run within ``budget`` (a share of the run's
    ``run_steps`` optimizer steps; None: no cap, then mini-runs of a tenth of the run, at least
    :data:`MIN_MINI_STEPS`), or ``(0, 0, reason)`` where the budget cannot hold them."""
    if budget is None:
        return find_steps, max(MIN_MINI_STEPS, run_steps // 10), ""
    total = budget * run_steps
    range_steps = min(find_steps, max(MIN_FIND_STEPS, int(RANGE_SHARE * total)))
    mini = int((total - range_steps) / n_candidates - val_batches * FORWARD_COST)
    if mini < MIN_MINI_STEPS:  # a tight budget: the shortest range test, the rest to the mini-runs
        range_steps = min(find_steps, MIN_FIND_STEPS)
        mini = int((total - range_steps) / n_candidates - val_batches * FORWARD_COST)
    if mini < MIN_MINI_STEPS:
        need = MIN_FIND_STEPS + n_candidates * (MIN_MINI_STEPS + val_batches * FORWARD_COST)
        return 0, 0, (f"no sweep: a {MIN_FIND_STEPS}-step range test and {n_candidates} mini-runs of {MIN_MINI_STEPS} steps "
                      f"would be {need / max(run_steps, 1):.0%} of this run's {run_steps} optimizer steps "
                      f"(budget {budget:.0%}: find_budget)")
    return range_steps, mini, ""


def candidates(edge: float | None, fallback: float) -> list[float]:
    """The peak LRs to try: the range test's edge LR x :data:`SWEEP_FACTORS`, or the fallback x
    :data:`FALLBACK_FACTORS` where there is no edge."""
    if edge is not None:
        return [edge * f for f in SWEEP_FACTORS]
    return [fallback * f for f in FALLBACK_FACTORS]


def choose(lrs: list[float], scores: list[float], start: float | None = None) -> tuple[float | None, str]:
    """The LR of the lowest finite score (the lower LR on a tie), or None and why there is none: every
    score NaN/inf, or none below ``start`` (the validation loss before any mini-run: no candidate helped)."""
    finite = [(float(s), float(lr)) for lr, s in zip(lrs, scores) if s is not None and math.isfinite(s)]
    if not finite:
        return None, f"no sweep result: the validation loss of all {len(lrs)} mini-runs was NaN/inf"
    score, lr = min(finite)
    if start is not None and math.isfinite(start) and score >= start:
        return None, f"no sweep result: no mini-run lowered the validation loss ({start:.4g} before them; the best {score:.4g})"
    return lr, f"lowest validation loss {score:.4g} of {len(lrs)} mini-runs"


def sweep_figure(lrs: list[float], scores: list[float], chosen: float | None):
    """Each mini-run's validation loss against its peak LR (log scale), the chosen one marked."""
    from tasks.pictures import pyplot

    fig, ax = pyplot().subplots(figsize=(6, 4))
    pts = [(lr, s) for lr, s in zip(lrs, scores) if s is not None and math.isfinite(s)]
    if pts:
        ax.plot(*zip(*pts), "o-", color="C0", label="validation loss after the mini-run")
    for lr in (lr for lr, s in zip(lrs, scores) if s is None or not math.isfinite(s)):
        ax.axvline(lr, color="0.7", ls=":", label=f"{lr:.2e}: NaN/inf")
    if chosen is not None:
        ax.axvline(chosen, color="C1", label=f"chosen: {chosen:.2e}")
    lr_axes(fig, ax, "peak learning rate of the stage's one-cycle", "validation loss", "LR sweep")
    return fig


def val_batches(trainer, n: int = VAL_BATCHES) -> list:
    """The first ``n`` batches of the datamodule's validation loader (kept on the CPU)."""
    out = []
    for batch in trainer.datamodule.val_dataloader():
        out.append(batch)
        if len(out) >= n:
            break
    if not out:
        raise ValueError("rule sweep scores mini-runs on validation batches, and the validation loader has none")
    return out


def val_loss(trainer, pl_module, batches: list) -> float:
    """Mean loss of ``pl_module.model_step`` over ``batches`` as validation sees them: eval mode, no
    gradients, the trainer's precision, moved to the device as they are (the datamodule's transfer
    hook augments training batches only)."""
    was_training = pl_module.training
    pl_module.eval()
    try:
        losses = []
        with torch.no_grad(), trainer.precision_plugin.val_step_context():
            for batch in batches:
                loss, _, _ = pl_module.model_step(move_data_to_device(batch, trainer.strategy.root_device), "val")
                losses.append(float(loss))
    finally:
        pl_module.train(was_training)
    return float(np.mean(losses))


def mini_runs(trainer, pl_module, lr_sets: list[list[float]], steps: int, pct_start: float,
              n_val: int = VAL_BATCHES) -> tuple[float, list[float]]:
    """The validation loss (on the first ``n_val`` validation batches) now, and after ``steps``
    optimizer steps of one-cycle at each of ``lr_sets`` (LRs per parameter group), each from the
    current state and the same training batches; the state is put back after."""
    with Trial(trainer, pl_module) as trial:
        batches = val_batches(trainer, n_val)
        start, scores = val_loss(trainer, pl_module, batches), []
        for lrs in lr_sets:
            trial.restart()
            schedule = one_cycle(trial.optimizer, lrs, steps, pct_start)
            for _ in range(steps):
                trial.step()
                schedule.step()
            scores.append(val_loss(trainer, pl_module, batches))
    return start, scores
