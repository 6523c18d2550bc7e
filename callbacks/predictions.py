"""Writing outputs: ``predict`` results through the task's ``write_predictions``, ``last.ckpt`` (with
the random generators' state, for exact resumes) and ``on_exception.ckpt``."""

from __future__ import annotations

import random

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter, Checkpoint

from .pictures import run_dir


def save_checkpoint(trainer: pl.Trainer, path) -> None:
    """``trainer.save_checkpoint`` from an ``on_train_epoch_end`` hook, safe under DDP.

    Every rank must call it (its barrier is a collective). The epoch's ``sync_dist`` metrics are
    reduced first, on every rank: rank 0's progress bar reduces them in its own
    ``on_train_epoch_end``, the other ranks' (disabled) bars do not, and a barrier met by rank 1
    while rank 0 waits in that reduction hangs both processes.
    """
    _ = trainer.callback_metrics  # computes (and caches) every epoch metric, in one fixed order
    trainer.save_checkpoint(str(path), weights_only=False)  # every rank calls; rank 0 writes


def rng_states() -> dict:
    """torch (CPU and every CUDA device), numpy and ``random`` generator states, as tensors and
    plain Python values (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "random": random.getstate(),
    }


def set_rng_states(state: dict) -> None:
    """Put back what :func:`rng_states` returned."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["random"]
    random.setstate((version, tuple(internal), gauss_next))


class SaveLast(pl.Callback):
    """Writes ``last.ckpt`` at the end of every training epoch (after its validation), whatever
    the monitored metric did, and every ``every_n_steps`` optimizer steps within an epoch (0: only
    at epoch ends): ``--ckpt_path last`` then resumes from the newest weights.

    Its state in every checkpoint is the random generators' (torch, CUDA, numpy, ``random``) at the
    moment of saving; a resumed run puts them back when training starts (after the sanity check
    and the pictures), so dropout and any other draw continue as in the uninterrupted run. With
    the loaders' position (``datamodules.loaders.ResumableLoader``) and Lightning's loop and
    optimizer state, a resumed run then trains on what the uninterrupted one would have.
    """

    def __init__(self, path, every_n_steps: int = 0):
        from pathlib import Path

        self.path = Path(path)
        self.every_n_steps = int(every_n_steps or 0)
        self._restore: dict | None = None
        self._saved_step = -1

    def state_dict(self) -> dict:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restore = state_dict.get("rng")

    def on_train_start(self, trainer, pl_module):
        # Lightning 2.6 puts the loaders' saved position back only when it builds them after the
        # restore; ``estimated_stepping_batches`` (the one-cycle schedule) builds them before, and
        # the position would be dropped (the epoch would restart from its first batch)
        loop = trainer.fit_loop
        if loop.restarting and loop._combined_loader_states_to_load and loop._combined_loader is not None:
            loop._load_combined_loader_states()
        if self._restore is not None:
            set_rng_states(self._restore)
            self._restore = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        n, step = self.every_n_steps, trainer.global_step
        if not n or step % n or step == self._saved_step or trainer.fast_dev_run:
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the epoch-end save follows
        self._saved_step = step
        trainer.save_checkpoint(str(self.path), weights_only=False)  # every rank calls; rank 0 writes

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.fast_dev_run and not trainer.sanity_checking:
            self._saved_step = trainer.global_step
            save_checkpoint(trainer, self.path)


class ExceptionCheckpoint(Checkpoint):
    """``on_exception.ckpt`` when a run stops on an exception, Ctrl+C or SIGTERM (removed when a
    fit ends normally). Unlike Lightning's ``OnExceptionCheckpoint``, whose presence turns
    ``fit(ckpt_path=None)`` into ``ckpt_path="last"``, it never makes a plain ``fit`` resume."""

    def __init__(self, path):
        from pathlib import Path

        self.path = Path(path)

    def on_exception(self, trainer, pl_module, exception):
        trainer.save_checkpoint(str(self.path), weights_only=False)

    def teardown(self, trainer, pl_module, stage):
        if stage == "fit":
            trainer.strategy.remove_checkpoint(str(self.path))


class PredictionWriter(BasePredictionWriter):
    """Each predicted batch goes to ``<run>/predictions/`` in the task's own format."""

    def __init__(self):
        super().__init__(write_interval="batch")

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        folder = run_dir(trainer) / "predictions"
        folder.mkdir(parents=True, exist_ok=True)
        pl_module.write_predictions(prediction, folder)
