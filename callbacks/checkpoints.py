"""The run's checkpoints: ``last.ckpt`` (Lightning's ``ModelCheckpoint``), ``on_exception.ckpt``, and
the state that makes a resumed run train on what the uninterrupted one would have.

- :func:`last_checkpoint`: ``checkpoints/last.ckpt`` at every training epoch end (after its
  validation) and every ``every_n_steps`` optimizer steps, whatever the monitored metric did
  (Lightning's ``ModelCheckpoint``).
- :class:`ExceptionCheckpoint`: ``on_exception.ckpt`` when a run stops on an exception, Ctrl+C or
  SIGTERM. Unlike Lightning's ``OnExceptionCheckpoint``, whose presence turns ``fit(ckpt_path=None)``
  into ``ckpt_path="last"``, it never makes a plain ``fit`` resume: only ``--ckpt_path last`` does.
- :class:`ResumeState`: the random generators in every checkpoint, put back when a resumed fit starts.

Checkpoints hold tensors and plain Python values only: they load with ``weights_only=True``.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint

LAST = "last"  # checkpoints/last.ckpt


def save_checkpoint(trainer: pl.Trainer, path) -> None:
    """``trainer.save_checkpoint`` from an ``on_train_epoch_end`` hook, safe under DDP.

    Every rank must call it (its barrier is a collective). The epoch's ``sync_dist`` metrics are
    reduced first, on every rank: rank 0's progress bar reduces them in its own
    ``on_train_epoch_end``, the other ranks' (disabled) bars do not, and a barrier met by rank 1
    while rank 0 waits in that reduction hangs both processes.
    """
    _ = trainer.callback_metrics  # computes (and caches) every epoch metric, in one fixed order
    trainer.save_checkpoint(str(path), weights_only=False)  # every rank calls; rank 0 writes


def last_checkpoint(dirpath, every_n_steps: int = 0) -> list[ModelCheckpoint]:
    """Lightning's ModelCheckpoint callbacks keeping the newest weights as ``dirpath/last.ckpt``: one at
    every training epoch end (after its validation), one every ``every_n_steps`` optimizer steps
    (none for 0).

    With no monitor, ``save_top_k=1`` keeps the newest save, here under the name ``last``. Not
    ``save_last=True``: Lightning 2.6 writes that ``last.ckpt`` only at steps where the callback
    saved a top-k checkpoint (so, on the best-model checkpoint, only in the epochs the monitored
    metric improved), and one callback cannot trigger both per step and per epoch. ``mode="max"``
    only keeps their ``state_key`` apart from the best-model checkpoint's.
    """
    common = dict(dirpath=str(dirpath), filename=LAST, monitor=None, mode="max", save_top_k=1, save_on_train_epoch_end=True,
                  enable_version_counter=False, auto_insert_metric_name=False)
    out = [ModelCheckpoint(every_n_epochs=1, **common)]
    if every_n_steps:
        out.append(ModelCheckpoint(every_n_train_steps=int(every_n_steps), **common))
    return out


def last_checkpoint_path(trainer: pl.Trainer) -> Path | None:
    """Where the run's :func:`last_checkpoint` writes (None without one)."""
    for c in trainer.checkpoint_callbacks:
        if isinstance(c, ModelCheckpoint) and c.filename == LAST and c.monitor is None and c.dirpath:
            return Path(c.dirpath) / f"{LAST}{c.FILE_EXTENSION}"
    return None


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


class ResumeState(pl.Callback):
    """What Lightning's loop, optimizer and loader state leave out of an exact resume.

    Its state in every checkpoint is the random generators' (torch, CUDA, numpy, ``random``) at the
    moment of saving; a resumed fit puts them back when training starts (after the sanity check and
    the pictures), so dropout and any other draw continue as in the uninterrupted run. With the
    training loader's position (the datamodule's state: ``datamodules.loaders.ResumableLoader``) and
    Lightning's loop and optimizer state, a resumed run then trains on what the uninterrupted one
    would have.

    A fit from another run folder's checkpoint starts its own best-model tracking: the
    ``ModelCheckpoint`` states naming another folder are left out (Lightning would warn that the
    dirpath has changed and keep a best model path in the other run).
    """

    def __init__(self):
        self._restore: dict | None = None

    def state_dict(self) -> dict:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restore = state_dict.get("rng")

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        here = {str(Path(c.dirpath).resolve()) for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.dirpath}
        states = checkpoint.get("callbacks") or {}
        for key in [k for k, v in states.items() if k.startswith("ModelCheckpoint") and isinstance(v, dict) and v.get("dirpath")]:
            if str(Path(states[key]["dirpath"]).resolve()) not in here:
                del states[key]

    def on_train_start(self, trainer, pl_module):
        if self._restore is not None:
            set_rng_states(self._restore)
            self._restore = None


class ExceptionCheckpoint(Checkpoint):
    """``on_exception.ckpt`` when a run stops on an exception, Ctrl+C or SIGTERM (removed when a
    fit ends normally); see the module doc for why not Lightning's ``OnExceptionCheckpoint``."""

    def __init__(self, path):
        self.path = None if path is None else Path(path)

    def on_exception(self, trainer, pl_module, exception):
        trainer.save_checkpoint(str(self.path), weights_only=False)

    def teardown(self, trainer, pl_module, stage):
        if stage == "fit":
            trainer.strategy.remove_checkpoint(str(self.path))


def run_checkpoints(folder, every_n_steps: int = 0) -> list[pl.Callback]:
    """The callbacks every run gets: ``folder/last.ckpt``, ``folder/on_exception.ckpt``, :class:`ResumeState`."""
    folder = Path(folder)
    return [ExceptionCheckpoint(folder / "on_exception.ckpt"), *last_checkpoint(folder, every_n_steps), ResumeState()]


__all__ = ["ExceptionCheckpoint", "ResumeState", "last_checkpoint", "last_checkpoint_path", "rng_states", "run_checkpoints", "save_checkpoint", "set_rng_states"]
