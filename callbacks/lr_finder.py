"""The LR range test (Smith 2015, fastai's ``lr_find``) on Lightning's own LR finder.

:class:`RangeFinder` is Lightning's ``LearningRateFinder``: the sweep runs through the trainer's
own fit loop -- its precision, accumulation and clipping, the hooks, among them the datamodule's
``on_after_batch_transfer`` (the device augmentation) -- on the trainer's optimizer with its
settings; Lightning then restores weights, optimizer, schedulers and loops from a checkpoint, and
the RNG is isolated. Around it, what Lightning's finder does not do for a stage of training:

* frozen layer groups keep the stage's LR 0: an optimizer step pre-hook sets it before every step
  (Lightning's scheduler sweeps every parameter group);
* raw losses: Lightning records a smoothed loss whose debiasing counts the trainer's global step;
  :func:`unsmooth` undoes it exactly, and the rules (``callbacks.lr_suggest``) smooth on their own;
* Lightning's divergence stop holds only for a sweep that starts at step 0 (later its best loss
  reads 0 and it stops after one step), so a later sweep runs all its steps and the rules cut the curve;
* the sweep is not cut short by the end of the fit's epochs, runs no validation, and leaves the
  training loader on the epoch it was on.

:func:`report` adds the suggestions, the plot and a JSON record; :func:`lr_find` is the
``lr_find`` subcommand (a sweep at the start of a fit that then stops).
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pytorch_lightning.callbacks import LearningRateFinder
from pytorch_lightning.utilities.exceptions import _TunerExitException

from .lr_suggest import DEFAULT_RULE, Suggestion, smooth_centered, suggest_all

# the one set of defaults of a range test: the lr_find subcommand and Stages' ``lr: find``
FIND_DEFAULTS = {"min_lr": 1e-6, "max_lr": 1.0, "num_steps": 60}
FIND_BUDGET = 0.15  # Stages' range tests: at most this share of the run's optimizer steps ...
MIN_FIND_STEPS = 20  # ... and never fewer steps than this (a shorter curve means nothing)


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
LIGHTNING_BETA = 0.98  # the smoothing of Lightning's _LRCallback


@dataclass
class RangeTest:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def unsmooth(smoothed, steps, beta: float = LIGHTNING_BETA) -> list[float]:
    """The raw losses behind Lightning's recorded ones: ``avg = beta * avg + (1 - beta) * loss``,
    recorded as ``avg / (1 - beta ** (step + 1))`` with ``step`` the trainer's global step (NaN where
    a step returned no loss, the average then unchanged)."""
    out, prev = [], 0.0
    for value, step in zip(smoothed, steps):
        if not np.isfinite(value):  # a NaN/inf loss makes every later point non-finite too
            out.append(float(value))
            continue
        avg = float(value) * (1 - beta ** (step + 1))
        out.append((avg - beta * prev) / (1 - beta))
        prev = avg
    return out


def first_trainable(freeze_to: int, n_groups: int) -> int:
    """The first layer group that trains under ``freeze_to`` (fastai's: ``-1`` only the head)."""
    return freeze_to if freeze_to >= 0 else max(0, n_groups + freeze_to)


def set_train_epoch(trainer) -> None:
    """Tell the training loader's sampler the current epoch (Lightning did so before the sweep,
    on the loader the sweep's restore replaced)."""
    loaders = trainer.train_dataloader
    for dl in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
        for s in (getattr(dl, "sampler", None), getattr(getattr(dl, "batch_sampler", None), "sampler", None)):
            if callable(getattr(s, "set_epoch", None)):
                s.set_epoch(trainer.current_epoch)


@contextmanager
def fresh_fit_loop(trainer):
    """The fit loop ready for a trial run from inside a fit (a range test, a mini-run): no epoch
    limit, no validation, a fresh epoch -- the trial's step limit makes the loop "restart" from the
    state it finds, and a finished epoch would run no batch -- and fresh loaders (the epoch's are used
    up); the epoch limit, validation and a disabled progress bar (the finder enables it, even on
    rank > 0) are put back after. The trial itself restores weights, optimizer and loops. Lightning's
    info lines about it ("`Trainer.fit` stopped", "Restoring states from ...", one of each per trial)
    are held back: the stage's own ``[stages]`` line says what it found."""
    loop = trainer.fit_loop
    saved = loop.max_epochs, trainer.check_val_every_n_epoch
    bar = trainer.progress_bar_callback
    bar_on = bar is not None and bar.is_enabled
    lightning_log = logging.getLogger("pytorch_lightning")
    level = lightning_log.level
    lightning_log.setLevel(max(logging.WARNING, level))
    try:
        loop.max_epochs, trainer.check_val_every_n_epoch = -1, 2**31
        epoch = loop.epoch_loop
        for progress in (epoch.batch_progress, epoch.scheduler_progress, epoch.automatic_optimization.optim_progress):
            progress.reset_on_run()
        loop._combined_loader = None
        yield loop
    finally:
        if bar is not None and not bar_on:
            bar.disable()
        loop.max_epochs, trainer.check_val_every_n_epoch = saved
        lightning_log.setLevel(level)


class RangeFinder(LearningRateFinder):
    """Lightning's LR finder for a stage: :meth:`sweep` runs it now, with the layer groups below
    ``freeze_to`` frozen, and returns the raw curve (it runs at no hook by itself).

    Args:
        min_lr: first LR of the sweep.
        max_lr: last LR of the sweep.
        num_steps: optimizer steps in the sweep.
        freeze_to: first trainable layer group (``-1``: the head only, ``0``: everything).
    """

    def __init__(self, min_lr: float = FIND_DEFAULTS["min_lr"], max_lr: float = FIND_DEFAULTS["max_lr"],
                 num_steps: int = FIND_DEFAULTS["num_steps"], freeze_to: int = 0):
        super().__init__(min_lr=min_lr, max_lr=max_lr, num_training_steps=num_steps, update_attr=False)
        self.freeze_to = freeze_to
        self.result: RangeTest | None = None

    def on_fit_start(self, trainer, pl_module):
        return  # only on demand

    def sweep(self, trainer, pl_module) -> RangeTest:
        start = trainer.global_step
        self._early_stop_threshold = 4.0 if start == 0 else None
        groups = trainer.optimizers[0].param_groups
        first = first_trainable(self.freeze_to, len(groups))
        if first >= len(groups):  # nothing trains: no curve
            self.result = RangeTest()
            return self.result
        frozen = groups[:first]

        def frozen_at_zero(optimizer, args, kwargs):  # before each step: the stage's LR 0 (as with DDP too)
            for g in frozen:
                g["lr"] = 0.0

        handle = trainer.optimizers[0].register_step_pre_hook(frozen_at_zero)
        strategy, remove = trainer.strategy, trainer.strategy.remove_checkpoint

        def remove_once_all_restored(path):  # Lightning's finder: rank 0 deleted it while others still read it
            strategy.barrier("range test restored")
            remove(path)

        strategy.remove_checkpoint = remove_once_all_restored
        save = trainer.save_checkpoint  # the finder's own full-state checkpoint, saved with weights_only stated
        trainer.save_checkpoint = lambda path, weights_only=False, storage_options=None: save(path, weights_only, storage_options)
        try:
            with fresh_fit_loop(trainer):
                self.lr_find(trainer, pl_module)
        finally:
            handle.remove()
            del strategy.remove_checkpoint, trainer.save_checkpoint
        set_train_epoch(trainer)
        for p in pl_module.parameters():
            p.grad = None  # the sweep's last gradients (every step starts by zeroing them)
        results = self.optimal_lr.results if self.optimal_lr is not None else {"lr": [], "loss": []}
        lrs, smoothed = [float(v) for v in results["lr"]], [float(v) for v in results["loss"]]
        self.result = RangeTest(lrs[: len(smoothed)], unsmooth(smoothed, range(start + 1, start + 1 + len(smoothed))))
        return self.result


class _FindAtFitStart(RangeFinder):
    def on_fit_start(self, trainer, pl_module):
        self.sweep(trainer, pl_module)
        raise _TunerExitException()  # as Lightning's Tuner.lr_find: the fit ends once the sweep is done


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
            fallback: float | None = None, **find) -> tuple[Suggestion, dict[str, Suggestion], Path]:
    """A range test at the start of ``trainer.fit(model, datamodule)``, which then ends (nothing is
    trained); ``find``: :data:`FIND_DEFAULTS` overrides."""
    finder = _FindAtFitStart(**{**FIND_DEFAULTS, **find}, freeze_to=freeze_to)
    trainer.callbacks = [finder, *trainer.callbacks]
    try:
        trainer.fit(model, datamodule=datamodule)
    finally:
        trainer.callbacks = [c for c in trainer.callbacks if c is not finder]
    return report(finder.result or RangeTest(), out_dir, rule, name, fallback)
