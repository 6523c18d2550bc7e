"""Writing outputs: ``predict`` results through the task's ``write_predictions``, and ``last.ckpt``."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter

from .pictures import run_dir


def save_checkpoint(trainer: pl.Trainer, path) -> None:
    """``trainer.save_checkpoint`` from an ``on_train_epoch_end`` hook, safe under DDP.

    Every rank must call it (its barrier is a collective). The epoch's ``sync_dist`` metrics are
    reduced first, on every rank: rank 0's progress bar reduces them in its own
    ``on_train_epoch_end``, the other ranks' (disabled) bars do not, and a barrier met by rank 1
    while rank 0 waits in that reduction hangs both processes.
    """
    _ = trainer.callback_metrics  # computes (and caches) every epoch metric, in one fixed order
    trainer.save_checkpoint(str(path))  # every rank calls; rank 0 writes


class SaveLast(pl.Callback):
    """Writes ``last.ckpt`` at the end of every training epoch (after its validation), whatever
    the monitored metric did: ``--ckpt_path last`` then resumes from the newest weights."""

    def __init__(self, path):
        from pathlib import Path

        self.path = Path(path)

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.fast_dev_run and not trainer.sanity_checking:
            save_checkpoint(trainer, self.path)


class PredictionWriter(BasePredictionWriter):
    """Each predicted batch goes to ``<run>/predictions/`` in the task's own format."""

    def __init__(self):
        super().__init__(write_interval="batch")

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        folder = run_dir(trainer) / "predictions"
        folder.mkdir(parents=True, exist_ok=True)
        pl_module.write_predictions(prediction, folder)
