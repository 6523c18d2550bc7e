"""The LR range test (Smith 2015, fastai's ``lr_find``) as a trial inside the fit.

:func:`range_test` raises the LR geometrically from ``min_lr`` to ``max_lr``, one optimizer step
per LR, on the trainer's own optimizer and the task's ``model_step`` (a :class:`callbacks.trial.Trial`:
the trainer's precision, accumulation, clipping and device augmentation; weights, optimizer, RNG
and the fit's loader left as they were). Layer groups below ``freeze_to`` keep LR 0, as in the stage
the test is for. The raw losses are recorded (the rules in ``callbacks.lr_suggest`` smooth on their
own); the test stops early where the loss is no longer finite or its smoothed value passes
:data:`STOP_FACTOR` times the lowest one (fastai's rule), after :data:`MIN_FIND_STEPS` steps.

:func:`report` adds the suggestions, the plot and a JSON record; :class:`FindAtStart` runs a test
at the start of a fit that then stops (the ``lr_find`` subcommand).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl

from .lr_suggest import DEFAULT_RULE, Suggestion, smooth_centered, suggest_all
from .trial import Trial

# the one set of defaults of a range test: the lr_find subcommand and Stages' ``lr: find``
FIND_DEFAULTS = {"min_lr": 1e-6, "max_lr": 1.0, "num_steps": 60}
FIND_BUDGET = 0.15  # Stages' range tests: at most this share of the run's optimizer steps ...
MIN_FIND_STEPS = 20  # ... and never fewer steps than this (a shorter curve means nothing)
STOP_FACTOR = 4.0  # the test ends once the smoothed loss is this many times its lowest ...
STOP_BETA = 0.98  # ... smoothed as fastai's (a debiased running mean)


def budget_steps(num_steps: int, run_steps: int, budget: float | None) -> tuple[int, str]:
    """The range test's steps within ``budget`` (a share of the run's ``run_steps``; None: no cap),
    or 0 and the reason where the budget does not allow :data:`MIN_FIND_STEPS`."""
    if budget is None:
        return num_steps, ""
    steps = min(num_steps, int(budget * run_steps))
    if steps < MIN_FIND_STEPS:
        return 0, (f"no range test: {MIN_FIND_STEPS} steps would be {MIN_FIND_STEPS / max(run_steps, 1):.0%} of this run's "
                   f"{run_steps} optimizer steps (budget {budget:.0%}: find_budget)")
    return steps, ""


@dataclass
class RangeTest:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def first_trainable(freeze_to: int, n_groups: int) -> int:
    """The first layer group that trains under ``freeze_to`` (fastai's: ``-1`` only the head)."""
    return freeze_to if freeze_to >= 0 else max(0, n_groups + freeze_to)


def diverging(losses: list[float], factor: float = STOP_FACTOR, beta: float = STOP_BETA, min_steps: int = MIN_FIND_STEPS) -> bool:
    """Whether a range test should stop after ``losses``: the last is not finite, or (after
    ``min_steps``) the smoothed loss is over ``factor`` times its lowest so far."""
    if not math.isfinite(losses[-1]):
        return True
    avg, smoothed = 0.0, []
    for i, x in enumerate(losses):
        avg = beta * avg + (1 - beta) * x
        smoothed.append(avg / (1 - beta ** (i + 1)))
    return len(losses) >= min_steps and smoothed[-1] > factor * min(smoothed)


def range_test(trainer, pl_module, num_steps: int = FIND_DEFAULTS["num_steps"], min_lr: float = FIND_DEFAULTS["min_lr"],
               max_lr: float = FIND_DEFAULTS["max_lr"], freeze_to: int = 0) -> RangeTest:
    """The curve of training loss against LR, from inside a fit (any hook once the trainer has its
    optimizer); nothing it did remains."""
    n_groups = len(trainer.optimizers[0].param_groups)
    first = first_trainable(freeze_to, n_groups)
    test = RangeTest()
    if first >= n_groups:  # nothing trains: no curve
        return test
    with Trial(trainer, pl_module) as trial:
        for lr in np.geomspace(min_lr, max_lr, num_steps):
            test.lrs.append(float(lr))
            test.losses.append(trial.step([0.0] * first + [float(lr)] * (n_groups - first)))
            if trainer.strategy.reduce_boolean_decision(diverging(test.losses), all=False):
                break
    return test


class FindAtStart(pl.Callback):
    """A range test when training starts (the first stage's data settings are in place by then),
    after which the fit ends without training: :attr:`result` holds the curve."""

    def __init__(self, **find):
        self.find, self.result = find, RangeTest()

    def on_train_start(self, trainer, pl_module):
        self.result = range_test(trainer, pl_module, **self.find)
        trainer.should_stop = True


def lr_axes(fig, ax, xlabel: str, ylabel: str, title: str) -> None:
    """A log-LR x axis, the labels, the legend: the range test's and the sweep's pictures."""
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()


def plot_range_test(test: RangeTest, suggestions: dict[str, Suggestion], chosen: str, path: Path) -> Path:
    """Loss against LR (log scale), raw and smoothed, with each rule's suggestion marked."""
    from tasks.pictures import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lrs, losses = np.asarray(test.lrs), np.asarray(test.losses)
    finite = np.isfinite(losses)
    ax.plot(lrs[finite], losses[finite], color="0.8", lw=1, label="loss")
    if finite.any():
        ax.plot(lrs[finite], smooth_centered(losses[finite]), color="C0", lw=2, label="smoothed (zero-lag)")
        lo, hi = np.percentile(losses[finite], [0, 95])
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.1 * (hi - lo) + 1e-8)
    for i, (rule, s) in enumerate(suggestions.items()):
        if s.lr is not None:
            ax.axvline(s.lr, color=f"C{i + 1}", ls="-" if rule == chosen else "--", label=f"{rule}: {s.lr:.2e}" + (" (chosen)" if rule == chosen else ""))
    lr_axes(fig, ax, "learning rate", "training loss", "LR range test")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def report(test: RangeTest, out_dir: Path, rule: str = DEFAULT_RULE, name: str = "lr_find", fallback: float | None = None) -> tuple[Suggestion, dict[str, Suggestion], Path]:
    """Suggestions + ``<out_dir>/pictures/<name>.png`` + ``<out_dir>/<name>.json`` (with the LR used
    instead, ``fallback``, where the rule has no suggestion).

    Returns:
        (the chosen rule's suggestion, every rule's suggestion, the plot's path)
    """
    sugg = suggest_all(test.lrs, test.losses)
    if rule not in sugg:
        raise ValueError(f"unknown LR rule '{rule}'; choose one of {', '.join(sugg)}")
    plot = plot_range_test(test, sugg, rule, Path(out_dir) / "pictures" / f"{name}.png")
    record = {"rule": rule, "suggestion": sugg[rule].lr, "reason": sugg[rule].reason,
              "fallback_lr": None if sugg[rule].lr is not None else fallback,
              "suggestions": {r: {"lr": s.lr, "reason": s.reason} for r, s in sugg.items()}, "lrs": test.lrs, "losses": test.losses}
    (Path(out_dir) / f"{name}.json").write_text(json.dumps(record, indent=1))
    return sugg[rule], sugg, plot


def lr_find(trainer, model, datamodule, out_dir: Path, rule: str = DEFAULT_RULE, freeze_to: int = 0, name: str = "lr_find",
            fallback: float | None = None, keep: tuple = (), **find) -> tuple[Suggestion, dict[str, Suggestion], Path]:
    """A range test at the start of ``trainer.fit(model, datamodule)``, which then ends (nothing is
    trained): only the callbacks of the types in ``keep`` run with it (e.g. the recipe's stages, for
    their data settings), and no sanity check. ``find``: :data:`FIND_DEFAULTS` overrides."""
    finder = FindAtStart(**{**FIND_DEFAULTS, **find}, freeze_to=freeze_to)
    callbacks, sanity = trainer.callbacks, trainer.num_sanity_val_steps
    trainer.callbacks = [finder, *(c for c in callbacks if isinstance(c, keep))]
    trainer.num_sanity_val_steps = 0
    try:
        trainer.fit(model, datamodule=datamodule)
    finally:
        trainer.callbacks, trainer.num_sanity_val_steps = callbacks, sanity
    return report(finder.result, out_dir, rule, name, fallback)
