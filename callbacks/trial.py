"""Optimizer steps inside a fit that leave no trace: the LR range test and the sweep's mini-runs.

A :class:`Trial` takes the trainer's own optimizer and the task's pure ``model_step`` and trains
on batches of the datamodule's training split, through Lightning's public machinery only: the
strategy's ``batch_to_device`` (with the datamodule's transfer hooks, so device augmentation
applies), the precision plugin's ``train_step_context`` (autocast), the trainer's accumulation
and gradient clipping. Around it, everything a trial could change is put back: weights (batch-norm
statistics too), the optimizer's state and hyper-parameters, every random generator (Python,
NumPy, torch, CUDA) and the gradients. The training loader of the fit is not touched: a trial reads
its own loader (the datamodule's ``trial_dataloader`` where it has one, else ``train_dataloader``),
so the fit's batches, their order and their augmentation are those of a run without the trial.

Under DDP each process trains its own copy on its share of the batches (no gradient sync: the
weights are put back anyway); decisions that end a trial early are taken by all processes together.
"""

from __future__ import annotations

import random
from copy import deepcopy

import numpy as np
import torch


def rng_state() -> tuple:
    """Every random generator a step may draw from."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def set_rng_state(state: tuple) -> None:
    py, npy, cpu, cuda = state
    random.setstate(py)
    np.random.set_state(npy)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def set_epoch(loader, epoch: int) -> None:
    """Tell a loader's sampler (or its batch sampler's) the epoch, as Lightning does for the fit's."""
    for s in (getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        if callable(getattr(s, "set_epoch", None)):
            s.set_epoch(epoch)


class Trial:
    """``with Trial(trainer, pl_module) as t:`` steps with :meth:`step`, :meth:`restart` between
    runs from the same start; on exit the model, optimizer and RNG are as on entry."""

    def __init__(self, trainer, pl_module):
        self.trainer, self.module = trainer, pl_module
        self.optimizer = trainer.optimizers[0]
        self.accumulate = max(1, int(trainer.accumulate_grad_batches))
        precision = str(trainer.precision)
        self.scaler = torch.amp.GradScaler(trainer.strategy.root_device.type) if precision.startswith("16") and "true" not in precision else None

    def __enter__(self) -> "Trial":
        self.saved = ({k: v.detach().clone() for k, v in self.module.state_dict().items()},
                      deepcopy(self.optimizer.state_dict()), rng_state(), self.module.training)
        dm = self.trainer.datamodule
        self.loader = (getattr(dm, "trial_dataloader", None) or dm.train_dataloader)()
        set_epoch(self.loader, self.trainer.current_epoch)  # the batches this epoch starts with
        self.batches = iter(self.loader)
        set_rng_state(self.saved[2])  # (the iterator may have drawn its seed)
        return self

    def restart(self, batches: bool = True) -> None:
        """Back to the state on entry: weights, optimizer, RNG and (``batches``) the loader's first batch."""
        weights, optimizer, rng, training = self.saved
        if batches:  # from the entry's RNG, as on entry: a loader without a generator of its own draws from torch's
            set_rng_state(rng)
            self.batches = iter(self.loader)
        self.module.load_state_dict(weights)
        self.optimizer.load_state_dict(deepcopy(optimizer))
        self.optimizer.zero_grad(set_to_none=True)
        self.module.train(training)
        set_rng_state(rng)

    def __exit__(self, *exc) -> None:
        self.restart(batches=False)
        del self.batches, self.loader  # (its worker processes end with it)
        return None

    def _next(self):
        try:
            return next(self.batches)
        except StopIteration:  # a trial longer than an epoch goes round again
            self.batches = iter(self.loader)
            return next(self.batches)

    def step(self, lrs: list[float] | None = None) -> float:
        """One optimizer step (over the trainer's ``accumulate_grad_batches`` batches) at ``lrs``
        per parameter group (None: as the optimizer is, e.g. under a scheduler); its mean loss."""
        if lrs is not None:
            for group, lr in zip(self.optimizer.param_groups, lrs):
                group["lr"] = lr
        trainer, total = self.trainer, 0.0
        for _ in range(self.accumulate):
            batch = trainer.strategy.batch_to_device(self._next())
            with trainer.precision_plugin.train_step_context():
                loss = self.module.model_step(batch, "train")[0] / self.accumulate
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += float(loss.detach())
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if trainer.gradient_clip_val:
            self.module.clip_gradients(self.optimizer, trainer.gradient_clip_val, trainer.gradient_clip_algorithm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total
