"""Writing outputs: ``predict`` results through the task's ``write_predictions`` (the run's
checkpoints are in ``checkpoints.py``)."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter

from .pictures import run_dir


class PredictionWriter(BasePredictionWriter):
    """Each predicted batch goes to ``<run>/predictions/`` in the task's own format."""

    def __init__(self):
        super().__init__(write_interval="batch")

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        folder = run_dir(trainer) / "predictions"
        folder.mkdir(parents=True, exist_ok=True)
        pl_module.write_predictions(prediction, folder)
