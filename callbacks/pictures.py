"""``show_batch`` before training and ``show_results`` after validation, as PNGs and W&B images."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from tasks.pictures import save_figure


def run_dir(trainer: pl.Trainer) -> Path:
    """The run folder (the CLI sets it as the trainer's ``default_root_dir``)."""
    return Path(trainer.default_root_dir)


class Pictures(pl.Callback):
    """Draws the task's ``show_batch`` at the start of fit and its ``show_results`` after validation.

    Args:
        show_batch: draw one augmented training batch before training.
        show_results: draw the first validation batch with predictions after each validation
            epoch (the file is overwritten; W&B keeps every epoch).
        n: images per figure.
    """

    def __init__(self, show_batch: bool = True, show_results: bool = True, n: int = 8):
        self.do_batch, self.do_results, self.n = show_batch, show_results, n

    def on_fit_start(self, trainer, pl_module):
        if not self.do_batch or not trainer.is_global_zero:
            return
        batch = next(iter(trainer.datamodule.train_dataloader()))
        augment = getattr(trainer.datamodule, "batch_augment", None)
        if augment is not None:  # augmentation on the device: show it too
            batch = augment(batch)
        save_figure(trainer, pl_module.show_batch(batch, self.n), "show_batch")

    def on_validation_epoch_end(self, trainer, pl_module):
        if self.do_results and not trainer.sanity_checking and pl_module.example is not None:
            save_figure(trainer, pl_module.show_results(pl_module.example, self.n), "show_results")
