"""``plot_lr`` and ``plot_losses`` (fastai's recorder plots) as PNGs in the run folder and on W&B."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch

from tasks.pictures import pyplot

from .lr_suggest import smooth
from .pictures import save_figure


class Recorder(pl.Callback):
    """Records LR and momentum per layer group and the training loss at every step, and the
    validation loss at every epoch; draws them at the end of ``fit`` (state survives a resume)."""

    def __init__(self):
        self.steps: list[int] = []
        self.lrs: list[list[float]] = []
        self.moms: list[float] = []
        self.losses: list[float] = []
        self.val: list[tuple[int, float]] = []
        self._pending: list = []  # losses still on the device: read in bulk, not one sync per step

    def _flush(self) -> None:
        if self._pending:
            self.losses.extend(torch.stack([t.float() for t in self._pending]).cpu().tolist())
            self._pending = []

    def state_dict(self):
        self._flush()
        return {"steps": self.steps, "lrs": self.lrs, "moms": self.moms, "losses": self.losses, "val": self.val}

    def load_state_dict(self, state):
        for k, v in state.items():
            setattr(self, k, list(v))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        opt = trainer.optimizers[0]
        self.steps.append(trainer.global_step)
        self.lrs.append([float(g["lr"]) for g in opt.param_groups])
        g = opt.param_groups[-1]
        self.moms.append(float(g["betas"][0] if "betas" in g else g.get("momentum", 0.0)))
        self._pending.append(loss.detach())

    def on_train_epoch_end(self, trainer, pl_module):
        self._flush()
        # read after Lightning has reduced the epoch's metrics on every process (reading
        # callback_metrics earlier, in a validation hook, desynchronises DDP's collectives)
        v = trainer.callback_metrics.get("val/loss")
        if v is not None:
            self.val.append((trainer.global_step, float(v)))

    def on_fit_end(self, trainer, pl_module):
        self._flush()
        if self.steps:
            save_figure(trainer, self.plot_lr(), "plot_lr")
            save_figure(trainer, self.plot_losses(), "plot_losses")

    def plot_lr(self):
        plt = pyplot()
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
        lrs = np.asarray(self.lrs)
        for i in range(lrs.shape[1]):
            a.plot(self.steps, lrs[:, i], label=f"group {i}")
        a.set_xlabel("step")
        a.set_ylabel("learning rate")
        a.set_yscale("log" if (lrs > 0).all() and lrs.max() / max(lrs.min(), 1e-12) > 100 else "linear")
        a.legend(fontsize=8)
        b.plot(self.steps, self.moms)
        b.set_xlabel("step")
        b.set_ylabel("momentum / beta1")
        fig.tight_layout()
        return fig

    def plot_losses(self):
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(self.steps, self.losses, color="0.8", lw=1)
        ax.plot(self.steps, smooth(self.losses, 0.9), label="train (smoothed)")
        if self.val:
            s, v = zip(*self.val)
            ax.plot(s, v, "o-", label="validation")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        fig.tight_layout()
        return fig
