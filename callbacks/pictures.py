"""``show_batch`` before training and ``show_results`` after validation, as PNGs and W&B images."""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl

from tasks.pictures import save_figure


def run_dir(trainer: pl.Trainer) -> Path:
    """The run folder (the CLI sets it as the trainer's ``default_root_dir``)."""
    return Path(trainer.default_root_dir)


class Pictures(pl.Callback):
    """Draws the task's ``show_batch`` from the first training batch and its ``show_results`` after
    validation, within a share of the fit's time.

    Args:
        show_batch: draw the first training batch of the fit, as trained on (augmented, on any device).
        show_results: draw the first validation batch with predictions after a validation epoch
            when the pictures so far have taken at most ``time_share`` of the fit's time, and always
            after the last one (the file is overwritten; W&B keeps each drawing). Validation outside
            fit (``validate``) always draws.
        n: images per figure.
        time_share: the share of the fit's wall time the pictures may take: a matplotlib figure
            costs about half a second on a CPU, a short Planet epoch four (``benchmarks/whole_run.py``).
    """

    def __init__(self, show_batch: bool = True, show_results: bool = True, n: int = 8, time_share: float = 0.02):
        self.do_batch, self.do_results, self.n, self.time_share = show_batch, show_results, n, time_share
        self.started, self.spent, self.pending, self.batch_drawn = None, 0.0, False, False

    def on_fit_start(self, trainer, pl_module):
        self.started, self.spent, self.pending, self.batch_drawn = time.perf_counter(), 0.0, False, not self.do_batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.batch_drawn:
            self.batch_drawn = True
            self._draw(trainer, lambda: pl_module.show_batch(batch, self.n), "show_batch")

    def on_validation_epoch_end(self, trainer, pl_module):
        if not self.do_results or trainer.sanity_checking or pl_module.example is None:
            return
        self.pending = True
        if self.started is None or (self.time_share > 0 and self.spent <= self.time_share * (time.perf_counter() - self.started)):
            self._results(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        if self.pending and pl_module.example is not None:  # the last validation's, if skipped
            self._results(trainer, pl_module)
        self.started = None

    def _results(self, trainer, pl_module) -> None:
        self.pending = False
        self._draw(trainer, lambda: pl_module.show_results(pl_module.example, self.n), "show_results")

    def _draw(self, trainer, figure, name: str) -> None:
        if not trainer.is_global_zero:
            return
        t0 = time.perf_counter()
        save_figure(trainer, figure(), name)
        self.spent += time.perf_counter() - t0
