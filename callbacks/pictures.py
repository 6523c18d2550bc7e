"""``show_batch`` before training and ``show_results`` after validation, as PNGs and W&B images."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger

from tasks.pictures import pyplot


def run_dir(trainer: pl.Trainer) -> Path:
    """The run folder (the CLI sets it as the trainer's ``default_root_dir``)."""
    return Path(trainer.default_root_dir)


def save_figure(trainer: pl.Trainer, fig, name: str) -> Path | None:
    """Write ``<run>/pictures/<name>.png`` (rank 0 only) and log it to W&B when that logger is on."""
    if fig is None or not trainer.is_global_zero:
        if fig is not None:
            pyplot().close(fig)
        return None
    path = run_dir(trainer) / "pictures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    pyplot().close(fig)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=f"pictures/{name}", images=[str(path)], step=trainer.global_step)
    return path


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
