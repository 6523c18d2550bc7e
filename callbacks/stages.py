"""Training stages as the lesson runs them: frozen, unfrozen with discriminative LRs, larger images.

Each stage is one one-cycle schedule over its epochs. Freezing is by parameter-group learning
rate (0 for frozen groups; batch-norm statistics keep updating, as in fastai), so one optimizer
and DDP serve every stage. A stage may change the input size and batch size (progressive
resizing); the loaders are rebuilt at the boundary and the weights carry over. The LR of a stage
may be found by an LR range test at its start (``lr: find``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import pytorch_lightning as pl

from .lr_finder import FIND_DEFAULTS, RangeFinder, report
from .pictures import run_dir
from .checkpoints import save_checkpoint
from tasks.schedule import one_cycle, spread_lrs

LRValue = float | str


@dataclass
class Stage:
    """One stage of training.

    Attributes:
        epochs: length of the stage (and of its one-cycle schedule).
        lr: a number, ``find`` (LR range test at the stage start), an expression of the model's
            ``lr`` option (``base``, ``base/2``: ``--model.lr`` sets it), of the previous stage's
            head LR (``lr/5``; the model's ``lr`` for the first stage) or of the found one
            (``find/10``), or ``[low, high]`` of those: a slice, the lowest layer group gets
            ``low``, the head ``high``, geometric in between.
        freeze_to: first trainable layer group, fastai-style: ``-1`` trains only the head,
            ``0`` everything.
        size: input size for this stage: ``[h, w]`` or one number of pixels, a fraction of the
            datamodule's ``size`` (``0.5``: half of ``--data.size``, at least 32 pixels a side;
            ``1.0``: that size), or None to keep the current size.
        batch_size: batch size for this stage, or None to keep it.
        rule: LR-suggestion rule for ``find`` (``valley``, ``steepest``, ``minimum``).
        name: checkpoint name at the end of the stage (default ``stage-<k>``).
    """

    epochs: int = 1
    lr: LRValue | list[LRValue] = "lr"
    freeze_to: int = 0
    size: list[int] | int | float | None = None
    batch_size: int | None = None
    rule: str = "valley"
    name: str | None = None


_EXPR = re.compile(r"^\s*(lr|find|base)\s*(?:([/*])\s*([0-9.eE+-]+))?\s*$")


def eval_lr(value: LRValue, prev: float, found: float | None, base: float | None = None) -> float:
    """``3e-3``, ``lr``, ``lr/5``, ``base``, ``base*2``, ``find``, ``find/10``... as a number.

    ``prev`` is the previous stage's head LR, ``found`` the range test's, ``base`` the model's ``lr``.
    """
    if isinstance(value, (int, float)):
        return float(value)
    m = _EXPR.match(str(value))
    if not m:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"stage lr '{value}': use a number, lr, base, find, or lr/N, base*N, find/N") from None
    ref = {"lr": prev, "find": found, "base": base}[m.group(1)]
    if ref is None:
        need = "an LR range test: it has no 'find' result" if m.group(1) == "find" else "the model's lr"
        raise ValueError(f"stage lr '{value}' needs {need}")
    if m.group(2):
        k = float(m.group(3))
        return ref / k if m.group(2) == "/" else ref * k
    return ref


def scale_epochs(epochs: list[int], total: int) -> list[int]:
    """Stage lengths scaled to ``total`` epochs in their proportions (each at least 1), shorter or
    longer; with fewer epochs than stages, the first ``total`` stages get one each (a smoke run
    stops early, in order)."""
    if total == sum(epochs):
        return list(epochs)
    if total <= len(epochs):
        return [1] * total + [0] * (len(epochs) - total)
    out = [max(1, round(e * total / sum(epochs))) for e in epochs]
    while sum(out) != total:  # rounding: take from / give to the longest stage
        i = max(range(len(out)), key=lambda j: out[j])
        out[i] += 1 if sum(out) < total else -1
    return out


def stage_size(size, base, minimum: int = 32):
    """A stage's input size: pixels as given, or a fraction of the datamodule's ``base`` size."""
    if size is None or not isinstance(size, float):
        return size if size is None or isinstance(size, int) else tuple(size)
    hw = (base, base) if isinstance(base, int) else tuple(base)
    out = tuple(max(minimum, round(v * size)) for v in hw)
    return out[0] if isinstance(base, int) else out


def needs_find(lr) -> bool:
    values = lr if isinstance(lr, (list, tuple)) else [lr]
    return any(isinstance(v, str) and v.strip().startswith("find") for v in values)


def uses_model_lr(stages: list[Stage]) -> bool:
    """Whether the model's ``lr`` option sets some stage's LR (``base`` anywhere, or ``lr`` in the first)."""
    def refs(stage, names):
        values = stage.lr if isinstance(stage.lr, (list, tuple)) else [stage.lr]
        return any(isinstance(v, str) and v.strip().startswith(names) for v in values)

    return any(refs(s, ("base",)) for s in stages) or refs(stages[0], ("lr",))


def stage_lrs(stage: Stage, n_groups: int, prev: float, found: float | None, base: float | None = None) -> list[float]:
    """Per-group LRs of a stage: spread (slice) then zeroed below ``freeze_to``."""
    if isinstance(stage.lr, (list, tuple)):
        lrs = spread_lrs([eval_lr(v, prev, found, base) for v in stage.lr], n_groups)
    else:
        lrs = spread_lrs(eval_lr(stage.lr, prev, found, base), n_groups)
    first = stage.freeze_to if stage.freeze_to >= 0 else max(0, n_groups + stage.freeze_to)
    return [0.0 if i < first else v for i, v in enumerate(lrs)]


class Stages(pl.Callback):
    """Runs a list of :class:`Stage` in order; ``trainer.max_epochs`` follows their total.

    :attr:`ran` records each started stage as plain data (epochs, the LR as written, the LR per
    layer group that ran, the found LR, size, batch size), for ``metrics.json``. Resumable: the
    current stage, the LRs chosen so far and whether the stage has started are in
    :meth:`state_dict`; the one-cycle scheduler's own state is in the checkpoint, so ``--ckpt_path``
    continues mid-stage exactly.
    """

    def __init__(self, stages: list[Stage], find_steps: int = FIND_DEFAULTS["num_steps"], min_lr: float = FIND_DEFAULTS["min_lr"],
                 max_lr: float = FIND_DEFAULTS["max_lr"]):
        self.stages = [s if isinstance(s, Stage) else Stage(**s) for s in stages]
        if not self.stages:
            raise ValueError("Stages needs at least one stage")
        self.find_steps, self.min_lr, self.max_lr = find_steps, min_lr, max_lr
        self.started = -1  # index of the last stage whose schedule was built
        self.head_lrs: list[float] = []  # head LR of each started stage
        self.found: list[float | None] = []
        self.ran: list[dict] = []  # what each started stage ran with (plain types: weights_only loads)
        self.base_size = None  # the datamodule's size at fit start (fractional stage sizes)

    # -- bookkeeping ------------------------------------------------------------
    @property
    def total_epochs(self) -> int:
        return sum(s.epochs for s in self.stages)

    def stage_at(self, epoch: int) -> int:
        end = 0
        for i, s in enumerate(self.stages):
            end += s.epochs
            if epoch < end:
                return i
        return len(self.stages) - 1

    def first_epoch(self, k: int) -> int:
        return sum(s.epochs for s in self.stages[:k])

    def state_dict(self):
        return {"started": self.started, "head_lrs": list(self.head_lrs), "found": list(self.found), "ran": list(self.ran)}

    def load_state_dict(self, state):
        self.started = state["started"]
        self.head_lrs = list(state["head_lrs"])
        self.found = list(state["found"])
        self.ran = list(state.get("ran", []))

    # -- data: size and batch size ---------------------------------------------------
    def _apply_data(self, trainer, k: int) -> bool:
        """Set stage k's size/batch size on the datamodule; True if the loaders must be rebuilt."""
        dm, stage, changed = trainer.datamodule, self.stages[k], False
        if stage.size is not None:
            if not hasattr(dm, "set_size"):
                raise ValueError(f"stage {k + 1} sets size {stage.size} but {type(dm).__name__} has no set_size()")
            size = stage_size(stage.size, self.base_size)
            if getattr(dm, "size", None) != size:
                dm.set_size(size)
                changed = True
        if stage.batch_size is not None and dm.batch_size != stage.batch_size:
            dm.batch_size = stage.batch_size
            changed = True
        return changed

    @staticmethod
    def _rebuild_loaders(trainer) -> None:
        """Make the fit loop build new train/val loaders at the next epoch (Lightning 2.6 loops)."""
        trainer.fit_loop._combined_loader = None
        trainer.fit_loop.epoch_loop.val_loop._combined_loader = None

    def on_fit_start(self, trainer, pl_module):
        if trainer.max_epochs is None or trainer.max_epochs < 0 or trainer.max_epochs > self.total_epochs:
            # (Lightning's unset max_epochs reads 1000: a longer budget is written in the stages, not stretched)
            trainer.fit_loop.max_epochs = self.total_epochs
        elif len(self.stages) <= trainer.max_epochs < self.total_epochs:  # a shorter run: the whole recipe, compressed
            # (fewer epochs than stages: the configured stages run in order until max_epochs stops them)
            lengths = scale_epochs([s.epochs for s in self.stages], trainer.max_epochs)
            self.stages = [replace(s, epochs=n) for s, n in zip(self.stages, lengths) if n > 0]
            if trainer.is_global_zero:
                print(f"[stages] --trainer.max_epochs {trainer.max_epochs}: the recipe's stages scaled to {lengths} epochs", flush=True)
        # fractional stage sizes are shares of the datamodule's own size (--data.size)
        self.base_size = getattr(trainer.datamodule, "size", None)
        self._apply_data(trainer, 0)  # before the first loaders are built
        if trainer.is_global_zero and not uses_model_lr(self.stages):
            how = "is only the fallback of 'lr: find'" if needs_find(self.stages[0].lr) else "is not used: every stage sets its own LR"
            print(f"[stages] note: the model's lr ({float(pl_module.lr):.2e}) {how}; "
                  "write a stage's lr as base, base/N or [base/100, base] to set it from --model.lr", flush=True)

    def on_train_start(self, trainer, pl_module):
        # after a resume the loops know the epoch only now: put that stage's data settings back
        if self._apply_data(trainer, self.stage_at(trainer.current_epoch)):
            self._rebuild_loaders(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        k, epoch = self.stage_at(trainer.current_epoch), trainer.current_epoch
        if epoch + 1 == self.first_epoch(k) + self.stages[k].epochs:  # last epoch of stage k
            name = self.stages[k].name or f"stage-{k + 1}"
            save_checkpoint(trainer, run_dir(trainer) / "checkpoints" / f"{name}.ckpt")
            if k + 1 < len(self.stages) and self._apply_data(trainer, k + 1):
                self._rebuild_loaders(trainer)

    # -- optimisation: LRs and one-cycle per stage -------------------------------------
    def on_train_epoch_start(self, trainer, pl_module):
        k = self.stage_at(trainer.current_epoch)
        size = getattr(trainer.datamodule, "size", None)
        if size is not None and trainer.is_global_zero:
            # the current input size on the dashboards; straight to the loggers, not self.log:
            # an epoch-level self.log from this hook desynchronised DDP's metric reduction with
            # the progress bar on (seen with 2 CPU processes)
            h = size if isinstance(size, int) else size[0]
            for lg in trainer.loggers:
                lg.log_metrics({"data/size": float(h), "data/stage": float(k + 1)}, step=trainer.global_step)
        if k <= self.started:
            return  # running (or resumed mid-) stage: its scheduler is already in place
        stage = self.stages[k]
        opt = trainer.optimizers[0]
        n_groups = len(opt.param_groups)
        prev = self.head_lrs[-1] if self.head_lrs else float(pl_module.lr)
        found = None
        if needs_find(stage.lr):
            found = self._find(trainer, pl_module, stage, k, n_groups, prev)
        lrs = stage_lrs(stage, n_groups, prev, found, float(pl_module.lr))
        steps = stage.epochs * max(1, int(trainer.num_training_batches) // max(1, trainer.accumulate_grad_batches))
        sched = one_cycle(opt, lrs, steps, getattr(pl_module, "pct_start", 0.25))
        trainer.lr_scheduler_configs[0].scheduler = sched
        self.started, self.head_lrs, self.found = k, [*self.head_lrs, lrs[-1]], [*self.found, found]
        self.ran = [*self.ran, {
            "stage": stage.name or f"stage-{k + 1}", "schedule_epochs": stage.epochs,
            "epochs": [self.first_epoch(k), min(self.first_epoch(k) + stage.epochs, trainer.max_epochs) - 1],
            "lr": list(stage.lr) if isinstance(stage.lr, (list, tuple)) else stage.lr, "max_lr_per_group": [float(v) for v in lrs],
            "found_lr": found, "model_lr": float(pl_module.lr), "freeze_to": stage.freeze_to,
            "size": list(size) if isinstance(size, (list, tuple)) else size, "batch_size": getattr(trainer.datamodule, "batch_size", None),
        }]
        if trainer.is_global_zero:
            print(f"[stages] {stage.name or f'stage-{k + 1}'}: epochs {self.first_epoch(k)}..{self.first_epoch(k) + stage.epochs - 1}, "
                  f"max LR per group {[f'{v:.2e}' for v in lrs]}, size {size}, batch {getattr(trainer.datamodule, 'batch_size', None)}", flush=True)

    def _find(self, trainer, pl_module, stage: Stage, k: int, n_groups: int, prev: float) -> float:
        """The stage's LR from a range test on the trainer (:class:`callbacks.lr_finder.RangeFinder`),
        or ``prev`` (logged, with the reason) where the rule has no suggestion."""
        finder = RangeFinder(min_lr=self.min_lr, max_lr=self.max_lr, num_steps=self.find_steps, freeze_to=stage.freeze_to)
        test = finder.sweep(trainer, pl_module)
        sugg, _, plot = report(test, run_dir(trainer), rule=stage.rule, name=f"lr_find-stage-{k + 1}", fallback=prev)
        if trainer.is_global_zero:
            _log_plot(trainer, plot)
        lr = sugg.lr
        if lr is None:
            if trainer.is_global_zero:
                print(f"[stages] stage {k + 1}: {sugg.reason}; keeping LR {prev:.2e}", flush=True)
            lr = prev
        elif trainer.is_global_zero:
            print(f"[stages] stage {k + 1}: LR range test suggests {lr:.2e} ({stage.rule})", flush=True)
        # every process must use the same LR under DDP
        return float(trainer.strategy.broadcast(lr, src=0))


def _log_plot(trainer, path: Path) -> None:
    from pytorch_lightning.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=f"pictures/{path.stem}", images=[str(path)], step=trainer.global_step)


__all__ = ["Stage", "Stages", "eval_lr", "scale_epochs", "stage_lrs", "stage_size", "uses_model_lr"]
