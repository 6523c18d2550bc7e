"""A callback for tests that signals its own process at a given optimizer step (a real kill -9 or
SIGTERM, for runs of ``train.py`` in a subprocess): ``--trainer.callbacks+=tests.killer.KillAt``."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


class KillAt(pl.Callback):
    """Sends ``sig`` (``KILL`` or ``TERM``) to this process once ``global_step`` reaches ``step``,
    at the end of that training batch (before the callbacks after it, e.g. the ``last.ckpt`` checkpoints, run)."""

    def __init__(self, step: int, sig: str = "KILL"):
        self.step, self.sig = step, sig

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, f"SIG{self.sig}"))
