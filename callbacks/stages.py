"""Training stages as the lesson runs them: frozen, unfrozen with discriminative LRs, larger images.

Each stage is one one-cycle schedule over its epochs. Freezing is by parameter-group learning
rate (0 for frozen groups; batch-norm statistics keep updating, as in fastai), so one optimizer
and DDP serve every stage. A stage may change the input size and batch size (progressive
resizing); the loaders are rebuilt at the boundary and the weights carry over. The LR of a stage
may be found at its start (``lr: find``): read off an LR range test by a rule, or with ``rule: sweep`` by
short runs of the stage itself at a few LRs (``callbacks.lr_sweep``).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.types import LRSchedulerConfig

from .lr_finder import FIND_BUDGET, FIND_DEFAULTS, budget_steps, range_test, report
from .lr_suggest import RULES
from .nan_guard import finite_json
from .lr_sweep import CENTRE_RULE, SWEEP_FACTORS, SWEEP_RULE, candidates, choose, mini_runs, plan_sweep, sweep_figure
from .pictures import run_dir
from .checkpoints import save_checkpoint
from .stage_plan import Stage, eval_lr, needs_find, scale_epochs, stage_lrs, stage_size, uses_model_lr
from tasks.pictures import save_figure
from tasks.schedule import one_cycle

class Stages(pl.Callback):
    """Runs a list of :class:`Stage` in order; ``trainer.max_epochs`` follows their total.

    :attr:`ran` records each started stage as plain data (epochs, the LR as written, the LR per
    layer group that ran, the found LR, size, batch size), for ``metrics.json``. Resumable: the
    current stage, the LRs chosen so far and whether the stage has started are in
    :meth:`state_dict`; the running stage's one-cycle is saved in the checkpoint (Lightning's
    ``lr_schedulers``) and put back, so ``--ckpt_path`` continues mid-stage exactly. The task builds no
    schedule of its own (``fit_schedule`` off).
    """

    def __init__(self, stages: list[Stage], find_steps: int = FIND_DEFAULTS["num_steps"], min_lr: float = FIND_DEFAULTS["min_lr"],
                 max_lr: float = FIND_DEFAULTS["max_lr"], find_budget: float | None = FIND_BUDGET):
        self.stages = [s if isinstance(s, Stage) else Stage(**s) for s in stages]
        if not self.stages:
            raise ValueError("Stages needs at least one stage")
        for i, s in enumerate(self.stages):
            if needs_find(s.lr) and s.rule not in (*RULES, SWEEP_RULE):
                raise ValueError(f"stage {i + 1}: unknown LR rule '{s.rule}'; choose one of {', '.join((*RULES, SWEEP_RULE))}")
        self.find_steps, self.min_lr, self.max_lr, self.find_budget = find_steps, min_lr, max_lr, find_budget
        self.started = -1  # index of the last stage whose schedule was built
        self.head_lrs: list[float] = []  # head LR of each started stage
        self.found: list[float | None] = []
        self.ran: list[dict] = []  # what each started stage ran with (plain types: weights_only loads)
        self.base_size = None  # the datamodule's size at fit start (fractional stage sizes)
        self._stage_t0 = None  # when the running stage started training (its train_seconds)

    def setup(self, trainer, pl_module, stage):
        pl_module.fit_schedule = False  # before configure_optimizers: every stage builds its own one-cycle
        self._saved_schedule, self._resume_epoch, self._user_reload = None, None, None

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        # the running stage's one-cycle; Lightning restores no scheduler where the task configured none
        self._saved_schedule = (checkpoint.get("lr_schedulers") or [None])[0]
        # the epoch the resumed fit goes on with (the fit loop's progress in the checkpoint): its stage's
        # data settings go on the datamodule in on_fit_start, before Lightning builds the loaders
        progress = (checkpoint.get("loops") or {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
        self._resume_epoch = progress.get("processed")

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

    def _rebuild_loaders(self, trainer) -> None:
        """Have Lightning build new train and val loaders at the next epoch: its public
        ``reload_dataloaders_every_n_epochs``, put back once the next validation has its new loader."""
        if self._user_reload is None:
            self._user_reload = trainer.reload_dataloaders_every_n_epochs
        trainer.reload_dataloaders_every_n_epochs = 1

    def on_validation_start(self, trainer, pl_module):
        if self._user_reload is not None and not trainer.sanity_checking:  # both loaders rebuilt by now
            trainer.reload_dataloaders_every_n_epochs, self._user_reload = self._user_reload, None

    def on_fit_start(self, trainer, pl_module):
        if trainer.max_epochs is None or trainer.max_epochs < 0 or trainer.max_epochs > self.total_epochs:
            # (Lightning's unset max_epochs reads 1000: a longer budget is written in the stages, not stretched)
            trainer.fit_loop.max_epochs = self.total_epochs
        elif 0 < trainer.max_epochs < self.total_epochs:  # a shorter run: the whole recipe, compressed
            # (fewer epochs than stages: the first max_epochs stages, one epoch each, every one-cycle complete)
            lengths = scale_epochs([s.epochs for s in self.stages], trainer.max_epochs)
            self.stages = [replace(s, epochs=n) for s, n in zip(self.stages, lengths) if n > 0]
            _say(trainer, f"--trainer.max_epochs {trainer.max_epochs}: the recipe's stages scaled to {lengths} epochs")
        # fractional stage sizes are shares of the datamodule's own size (--data.size)
        self.base_size = getattr(trainer.datamodule, "size", None)
        self._apply_data(trainer, 0 if self._resume_epoch is None else self.stage_at(self._resume_epoch))  # before the first loaders are built
        if not uses_model_lr(self.stages):
            how = "is only the fallback of 'lr: find'" if any(needs_find(s.lr) for s in self.stages) else "is not used: every stage sets its own LR"
            _say(trainer, f"note: the model's lr ({float(pl_module.lr):.2e}) {how}; "
                 "write a stage's lr as base, base/N or [base/100, base] to set it from --model.lr")

    def on_train_start(self, trainer, pl_module):
        # after a resume the loops know the epoch only now: put that stage's data settings back
        k = self.stage_at(trainer.current_epoch)
        if self._apply_data(trainer, k):
            self._rebuild_loaders(trainer)
        saved, self._saved_schedule = getattr(self, "_saved_schedule", None), None
        if k <= self.started and saved is not None:  # resumed mid-stage: its one-cycle where it was
            self._schedule(trainer, pl_module, k, self.ran[-1]["max_lr_per_group"], saved)

    def _schedule(self, trainer, pl_module, k: int, lrs: list[float], state: dict | None = None) -> None:
        """Stage k's one-cycle as the trainer's scheduler (``state``: a saved one to continue)."""
        opt = trainer.optimizers[0]
        steps = self.stages[k].epochs * max(1, int(trainer.num_training_batches) // max(1, trainer.accumulate_grad_batches))
        kept = [{key: g[key] for key in ("lr", "betas", "momentum") if key in g} for g in opt.param_groups]
        sched = one_cycle(opt, lrs, steps, getattr(pl_module, "pct_start", 0.25))
        if state is not None:  # the constructor moved the LRs to step 0: the optimizer's restored ones back
            sched.load_state_dict(state)
            for g, values in zip(opt.param_groups, kept):
                g.update(values)
        trainer.strategy.lr_scheduler_configs = [LRSchedulerConfig(sched, interval="step")]

    def on_train_epoch_end(self, trainer, pl_module):
        k, epoch = self.stage_at(trainer.current_epoch), trainer.current_epoch
        if epoch + 1 == self.first_epoch(k) + self.stages[k].epochs:  # last epoch of stage k
            if self.ran and getattr(self, "_stage_t0", None) is not None:  # its training time, the range test not counted
                self.ran[-1] = {**self.ran[-1], "train_seconds": round(time.perf_counter() - self._stage_t0, 3)}
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
        found, find_cost = None, None
        if needs_find(stage.lr):
            t0 = time.perf_counter()
            found, steps = self._find(trainer, pl_module, stage, k, n_groups, float(pl_module.lr))  # its fallback: --model.lr
            find_cost = {"steps": steps, "seconds": round(time.perf_counter() - t0, 3)}
        lrs = stage_lrs(stage, n_groups, prev, found, float(pl_module.lr))
        self._schedule(trainer, pl_module, k, lrs)
        self.started, self.head_lrs, self.found = k, [*self.head_lrs, lrs[-1]], [*self.found, found]
        self.ran = [*self.ran, {
            "stage": stage.name or f"stage-{k + 1}", "schedule_epochs": stage.epochs,
            "epochs": [self.first_epoch(k), min(self.first_epoch(k) + stage.epochs, trainer.max_epochs) - 1],
            "lr": list(stage.lr) if isinstance(stage.lr, (list, tuple)) else stage.lr, "max_lr_per_group": [float(v) for v in lrs],
            "found_lr": found, "find": find_cost, "model_lr": float(pl_module.lr), "freeze_to": stage.freeze_to,
            "size": list(size) if isinstance(size, (list, tuple)) else size, "batch_size": getattr(trainer.datamodule, "batch_size", None),
        }]
        self._stage_t0 = time.perf_counter()
        _say(trainer, f"{stage.name or f'stage-{k + 1}'}: epochs {self.first_epoch(k)}..{self.first_epoch(k) + stage.epochs - 1}, "
             f"max LR per group {[f'{v:.2e}' for v in lrs]}, size {size}, batch {getattr(trainer.datamodule, 'batch_size', None)}")

    def _find(self, trainer, pl_module, stage: Stage, k: int, n_groups: int, fallback: float) -> tuple[float, int]:
        """The stage's LR from a range test (:func:`callbacks.lr_finder.range_test`)
        and its rule, or with ``rule: sweep`` the best of short runs around its edge
        (:mod:`callbacks.lr_sweep`); ``fallback`` (the model's ``lr``; logged, with the reason) where there is none; and the
        optimizer steps that finding it took."""
        per_epoch = max(1, int(trainer.num_training_batches) // max(1, trainer.accumulate_grad_batches))
        run_steps, sweep = self.total_epochs * per_epoch, stage.rule == SWEEP_RULE
        if sweep:
            steps, mini, why = plan_sweep(run_steps, self.find_budget, self.find_steps)
        else:
            (steps, why), mini = budget_steps(self.find_steps, run_steps, self.find_budget), 0
        if not steps:
            _say(trainer, f"stage {k + 1}: {why}; keeping LR {fallback:.2e}")
            return fallback, 0
        test = range_test(trainer, pl_module, num_steps=steps, min_lr=self.min_lr, max_lr=self.max_lr, freeze_to=stage.freeze_to)
        sugg, _, plot = report(test, run_dir(trainer), rule=CENTRE_RULE if sweep else stage.rule, name=f"lr_find-stage-{k + 1}", fallback=fallback)
        if trainer.is_global_zero:
            _log_plot(trainer, plot)
        lr = trainer.strategy.broadcast(sugg.lr, src=0)  # every process must use the same LR under DDP
        if sweep:
            return self._sweep(trainer, pl_module, stage, k, n_groups, fallback, lr, mini), len(test.lrs) + len(SWEEP_FACTORS) * mini
        if lr is None:
            _say(trainer, f"stage {k + 1}: {sugg.reason}; keeping LR {fallback:.2e}")
            return fallback, len(test.lrs)
        _say(trainer, f"stage {k + 1}: LR range test suggests {lr:.2e} ({stage.rule})")
        return float(lr), len(test.lrs)

    def _sweep(self, trainer, pl_module, stage: Stage, k: int, n_groups: int, fallback: float, edge: float | None, mini: int) -> float:
        """``rule: sweep``: a mini-run of ``mini`` steps per candidate LR, the lowest validation loss wins
        (``<run_dir>/lr_sweep-stage-<k>.json`` records them)."""
        lrs = candidates(edge, fallback)
        prev = self.head_lrs[-1] if self.head_lrs else float(pl_module.lr)  # ``lr`` in the stage's expressions
        sets = [stage_lrs(stage, n_groups, prev, lr, float(pl_module.lr)) for lr in lrs]
        start, scores = mini_runs(trainer, pl_module, sets, mini, getattr(pl_module, "pct_start", 0.25))
        lr, why = choose(lrs, scores, start)
        if trainer.is_global_zero:
            record = {"edge": edge, "fallback": fallback, "candidates": lrs, "start_val_loss": start, "val_loss": scores,
                      "chosen": lr, "reason": why, "mini_steps": mini}
            (run_dir(trainer) / f"lr_sweep-stage-{k + 1}.json").write_text(json.dumps(finite_json(record)[0], indent=1))
        save_figure(trainer, sweep_figure(lrs, scores, lr), f"lr_sweep-stage-{k + 1}")  # (rank 0 writes it)
        scores_text = ", ".join(f"{c:.2e}: {s:.4g}" for c, s in zip(lrs, scores))
        if lr is None:
            _say(trainer, f"stage {k + 1}: {why}; keeping LR {fallback:.2e}")
            lr = fallback
        else:
            _say(trainer, f"stage {k + 1}: sweep of {len(lrs)} mini-runs x {mini} steps (val loss {scores_text}) chooses {lr:.2e}")
        return float(trainer.strategy.broadcast(lr, src=0))


def _say(trainer, text: str) -> None:
    if trainer.is_global_zero:
        print(f"[stages] {text}", flush=True)


def _log_plot(trainer, path: Path) -> None:
    from pytorch_lightning.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=f"pictures/{path.stem}", images=[str(path)], step=trainer.global_step)


__all__ = ["Stage", "Stages", "eval_lr", "scale_epochs", "stage_lrs", "stage_size", "uses_model_lr"]
