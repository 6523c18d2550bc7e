"""The NaN guard: a non-finite loss, gradient norm or weight stops the run in one clear line.

Checked before every optimizer step (the loss of each micro-batch and the total gradient norm, in
one device sync) so the step that would spoil the weights is never taken; the weights are checked
again before validation checkpoints and at each epoch end, and ``FiniteCheckpointIO`` refuses any
save of non-finite weights. The last finite ``last.ckpt`` and best checkpoint therefore stay as they
were, and the run ends with :class:`TrainingDiverged` (``python train.py`` prints ``error: ...`` and
exits 1).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from .checkpoint_io import FiniteCheckpointIO, non_finite

FP16 = ("16-mixed", "16", "16-true")


class TrainingDiverged(RuntimeError):
    """The training loss, gradients or weights became NaN/inf; the run stopped."""


# -- pure checks ----------------------------------------------------------------------
def check_step(losses: list[torch.Tensor], grad_norm: torch.Tensor | None) -> str | None:
    """What is non-finite among the step's losses and the gradient norm (None: all finite)."""
    values = [t.detach().float().reshape(-1) for t in losses]
    if grad_norm is not None:
        values.append(grad_norm.detach().float().reshape(-1).to(values[0].device if values else grad_norm.device))
    if not values:
        return None
    v = torch.cat(values)
    if bool(torch.isfinite(v).all()):
        return None
    n_loss = sum(t.numel() for t in values[: len(losses)])
    loss = v[:n_loss]
    if n_loss and not bool(torch.isfinite(loss).all()):
        return f"the training loss is {float(loss[~torch.isfinite(loss)][0])}"
    return f"the gradient norm is {float(v[-1])}"


def format_lrs(lrs: list[float]) -> str:
    """``LR 1.00e-03`` or ``LRs per layer group [0.00e+00, 1.00e-04, 1.00e-03]``."""
    if not lrs:
        return "LR unknown"
    if len(set(lrs)) == 1:
        return f"LR {lrs[0]:.2e}"
    return "LRs per layer group [" + ", ".join(f"{v:.2e}" for v in lrs) + "]"


def diverged_message(step: int, epoch: int, what: str, lrs: list[float], kept: list[str]) -> str:
    """The one line a diverged run ends with."""
    keep = f"kept the last finite checkpoints: {', '.join(kept)}" if kept else "no checkpoint had been written yet"
    return (f"training diverged at global step {step} (epoch {epoch}): {what}; {format_lrs(lrs)}. "
            f"Stopped without saving non-finite weights; {keep}. Try a lower LR.")


def finite_json(obj: Any, prefix: str = "") -> tuple[Any, list[str]]:
    """``obj`` with every NaN/inf float replaced by None, and the dotted keys where that happened."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None, [prefix or "."]
    if isinstance(obj, dict):
        out, bad = {}, []
        for k, v in obj.items():
            out[k], b = finite_json(v, f"{prefix}.{k}" if prefix else str(k))
            bad += b
        return out, bad
    if isinstance(obj, (list, tuple)):
        out, bad = [], []
        for i, v in enumerate(obj):
            x, b = finite_json(v, f"{prefix}[{i}]")
            out.append(x)
            bad += b
        return out, bad
    return obj, []


def current_lrs(trainer: pl.Trainer) -> list[float]:
    return [float(g["lr"]) for opt in trainer.optimizers[:1] for g in opt.param_groups]


# -- the callback -----------------------------------------------------------------------
class NanGuard(pl.Callback):
    """Stops training at the first non-finite loss, gradient norm or weight (see the module doc).

    Args:
        check_grads: also check the total gradient norm (skipped in fp16, where the loss scaler
            expects overflowing gradients and skips those steps itself).
    """

    def __init__(self, check_grads: bool = True):
        self.check_grads = check_grads
        self._losses: list[torch.Tensor] = []
        self._trainer: pl.Trainer | None = None

    def setup(self, trainer, pl_module, stage):
        self._trainer = trainer
        io = trainer.strategy.checkpoint_io
        if not isinstance(io, FiniteCheckpointIO):
            trainer.strategy.checkpoint_io = FiniteCheckpointIO(io, trainer, refuse=self._refuse)

    def on_before_backward(self, trainer, pl_module, loss):
        # one entry per micro-batch until the optimizer step (bounded for manual optimisation)
        self._losses = [*self._losses[-63:], loss.detach()]

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        losses, self._losses = self._losses, []
        norm = None
        if self.check_grads and str(trainer.precision) not in FP16:
            grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads) if grads else None
        what = check_step(losses, norm)
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(what is not None, all=False) and what is None:
            what = "another process's loss or gradient norm is not finite"
        if what:
            self._stop(trainer, what + " (the optimizer step was not taken)")

    def on_validation_end(self, trainer, pl_module):
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._check_weights(trainer, pl_module)  # before ModelCheckpoint (checkpoint callbacks run last)

    def on_train_epoch_end(self, trainer, pl_module):
        self._check_weights(trainer, pl_module)

    # -- helpers ----------------------------------------------------------------
    def _check_weights(self, trainer, pl_module) -> None:
        bad = non_finite(pl_module.state_dict())
        if bad:
            self._stop(trainer, f"{len(bad)} weight tensor(s) hold NaN/inf ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")

    def _refuse(self, path, what: str) -> None:
        trainer = self._trainer
        if trainer is None:
            raise TrainingDiverged(f"not saving {path}: {what}")
        self._stop(trainer, f"{what}, not saved to {Path(path).name}")

    @staticmethod
    def _kept(trainer) -> list[str]:
        from .checkpoints import last_checkpoint_path

        root = Path(trainer.default_root_dir)
        paths = [p for p in [last_checkpoint_path(trainer)] if p is not None]
        best = getattr(trainer.checkpoint_callback, "best_model_path", None)
        paths += [Path(best)] if best else []
        out = []
        for p in dict.fromkeys(Path(x) for x in paths):
            if p.is_file():
                out.append(str(p.relative_to(root)) if p.is_relative_to(root) else str(p))
        return out

    def _stop(self, trainer, what: str) -> None:
        raise TrainingDiverged(diverged_message(trainer.global_step, trainer.current_epoch, what, current_lrs(trainer), self._kept(trainer)))


__all__ = ["NanGuard", "TrainingDiverged", "check_step", "diverged_message", "finite_json", "format_lrs"]
