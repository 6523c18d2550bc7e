"""Shared LightningModule machinery: steps per stage, metrics per stage, layer groups, optimizer."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import OptimizerCallable
from torch import nn

from .schedule import one_cycle

STAGES = ("train", "val", "test")


def class_names_for(num_classes: int, class_names: list[str] | None, strict: bool = True) -> list[str]:
    """The given class names, else ``"0"`` .. ``str(num_classes - 1)``.

    Raises:
        ValueError: with ``strict``, where the names given are not ``num_classes``.
    """
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    if strict and len(names) != num_classes:
        raise ValueError(f"{len(names)} class_names for num_classes={num_classes}.")
    return names


class BaseTask(pl.LightningModule):
    """A network passed in from ``models/``, trained with AdamW and a one-cycle schedule.

    Subclasses implement :meth:`make_metrics` (and call :meth:`init_metrics`), :meth:`model_step`
    and :meth:`predict_step`, and may override :meth:`update_metrics`, :meth:`make_example`,
    :meth:`layer_groups` and the picture methods.

    The options every task shares are this constructor's; a subclass takes its own and passes
    the rest up as ``**kwargs`` (the CLI lists these under each task's options all the same).
    The hyperparameters of the whole constructor chain are saved here (``hparams``, checkpoints),
    but for the network and the subclass's :attr:`hparams_ignore`.

    Args:
        net: the network (built in ``models/``); it takes raw images or token ids.
        lr: peak learning rate of the one-cycle schedule (the head's LR where stages set a slice).
        weight_decay: AdamW weight decay.
        pct_start: share of the steps spent warming up.
        optimizer: another optimizer than AdamW, with its options (``--model.init_args.optimizer
            torch.optim.SGD --model.init_args.optimizer.init_args.momentum 0.9``): it gets the
            layer groups, and the stages set their LRs (frozen groups at 0) and its one-cycle.
    """

    kind: str = ""  # what the task predicts: multilabel, classify, segmentation, points, text (models.inference.TASKS), or lm
    hparams_ignore: tuple[str, ...] = ()  # options kept out of hparams and checkpoints (output choices)

    def __init__(self, net: nn.Module, lr: float = 1e-3, weight_decay: float = 1e-2, pct_start: float = 0.25,
                 optimizer: OptimizerCallable | None = None):
        super().__init__()
        # Lightning reads the arguments of every __init__ from here down to the subclass's
        # (the optimizer is code, not data: it stays out of checkpoints, which load as data only)
        self.save_hyperparameters(ignore=["net", "optimizer", *self.hparams_ignore])
        self.net = net
        self.lr, self.weight_decay, self.pct_start, self.make_optimizer = lr, weight_decay, pct_start, optimizer
        self.example: dict[str, Any] | None = None  # first validation batch with predictions, for pictures
        self.channels_last = False  # set by callbacks.MemoryFormat: images enter the net channels-last
        self.fit_schedule = True  # a one-cycle over the whole fit; callbacks.Stages builds one per stage instead

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The network as data (``models.registry.net_spec``), so :meth:`load_from_checkpoint` needs no config."""
        from models.registry import UnsafeFileError, net_spec

        try:
            checkpoint["net"] = net_spec(self.net)
        except UnsafeFileError:  # a network of the user's own: load_from_checkpoint then needs net=
            pass

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None, weights_only=True, **kwargs):
        """Lightning's ``load_from_checkpoint``, with the network rebuilt from the checkpoint's own record
        (``net=`` still overrides it): ``PlanetTask.load_from_checkpoint("runs/.../last.ckpt")``."""
        if "net" not in kwargs:
            from models.registry import build_net, load_tensors

            spec = load_tensors(checkpoint_path).get("net")
            if spec is None:
                raise TypeError(f"{checkpoint_path}: the checkpoint does not record its network (written before it did, or a network "
                                "of your own): pass net=... to load_from_checkpoint")
            kwargs["net"] = build_net(spec)
        if weights_only is False:
            raise ValueError("weights_only=False is refused: checkpoints are loaded as data only")
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location, hparams_file=hparams_file, strict=strict, weights_only=True, **kwargs)

    def init_metrics(self) -> None:
        """One metric collection per stage; call at the end of the subclass's ``__init__``."""
        for s in STAGES:
            setattr(self, f"{s}_metrics", self.make_metrics().clone(prefix=f"{s}/"))

    def stage_metrics(self, stage: str):
        return getattr(self, f"{stage}_metrics")

    # -- to implement -----------------------------------------------------------
    def make_metrics(self):
        """A ``torchmetrics.MetricCollection`` of the task's metrics."""
        raise NotImplementedError

    def model_step(self, batch, stage: str = "train") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward and loss of a batch and nothing else (no metrics, logging or state).

        ``stage`` (``train``, ``val``, ``test``) only chooses what the stage computes (test-time
        augmentation in validation and test, :func:`models.tta.active`).

        Returns:
            ``(loss, preds, target)``: ``preds`` and ``target`` as :meth:`update_metrics` takes them.
        """
        raise NotImplementedError

    def update_metrics(self, stage: str, preds: torch.Tensor, target: torch.Tensor, batch) -> None:
        """Update the stage's metric collection (and any per-stage extras) with a step's outputs."""
        self.stage_metrics(stage).update(preds, target)

    def make_example(self, batch, preds: torch.Tensor, target: torch.Tensor) -> dict[str, Any] | None:
        """What :meth:`show_results` draws, from the first validation batch (kept on the CPU)."""
        return None

    @staticmethod
    def batch_size_of(batch) -> int:
        key = "image" if "image" in batch else "input_ids"
        return int(batch[key].shape[0])

    # -- steps ------------------------------------------------------------------
    def forward(self, x):
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def stage_step(self, batch, stage: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`model_step`, then the stage's metrics and logs."""
        loss, preds, target = self.model_step(batch, stage)
        self.update_metrics(stage, preds, target, batch)
        self.log_stage(stage, loss, self.batch_size_of(batch))
        return loss, preds, target

    def training_step(self, batch, batch_idx):
        return self.stage_step(batch, "train")[0]

    def validation_step(self, batch, batch_idx):
        loss, preds, target = self.stage_step(batch, "val")
        if batch_idx == 0:
            self.example = self.make_example(batch, preds, target)
        return {"loss": loss, "preds": preds}  # preds: for callbacks (the end-of-fit interpretation)

    def test_step(self, batch, batch_idx):
        return self.stage_step(batch, "test")[0]

    def log_stage(self, stage: str, loss: torch.Tensor, batch_size: int) -> None:
        """Log the loss and the stage's metric collection (epoch-level, synced across processes)."""
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True, batch_size=batch_size, sync_dist=True)
        self.log_dict(self.stage_metrics(stage), on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=batch_size)

    # -- optimisation -----------------------------------------------------------
    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups from input to output (frozen first, discriminative LRs)."""
        if hasattr(self.net, "layer_groups"):
            return self.net.layer_groups()
        return [list(self.net.parameters())]

    def configure_optimizers(self):
        groups = [{"params": g, "lr": self.lr} for g in self.layer_groups() if g]
        if self.make_optimizer is None:
            opt = torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        else:  # the groups' LRs win over the optimizer's own lr option
            opt = self.make_optimizer(groups)
        if not self.fit_schedule:
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = one_cycle(opt, [g["lr"] for g in groups], total, self.pct_start)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- pictures (overridden per task) -----------------------------------------
    def show_batch(self, batch, n: int = 8):
        """A matplotlib figure of a training batch as the model sees it, or None."""
        return None

    def show_results(self, example: dict[str, Any], n: int = 8):
        """A matplotlib figure of inputs, truths and predictions, or None."""
        return None
