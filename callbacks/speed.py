"""GPU speed settings: channels_last memory layout and cuDNN autotuning (no-ops on CPU).

Mixed precision is a Trainer setting: ``train.py`` picks ``bf16-mixed`` (or ``16-mixed`` with
loss scaling where bf16 is unsupported) on a GPU and ``32-true`` on CPU unless
``--trainer.precision`` is given.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn


def auto_precision(accelerator: str | None) -> str:
    """The precision for ``--trainer.precision`` left unset."""
    if str(accelerator) in ("auto", "gpu", "cuda", "None") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


class MemoryFormat(pl.Callback):
    """On a CUDA device: channels_last for convolutional models (weights and image batches) and
    ``cudnn.benchmark``. Turn either off with ``--memory.channels_last false`` /
    ``--memory.cudnn_benchmark false``. ``--memory.compile true`` compiles the network with
    ``torch.compile`` (in place: checkpoints keep their keys; the first steps are slow while it
    compiles, and on CPU it needs a C++ compiler).
    """

    def __init__(self, channels_last: bool = True, cudnn_benchmark: bool = True, compile: bool = False):
        self.channels_last, self.cudnn_benchmark, self.compile = channels_last, cudnn_benchmark, compile

    def setup(self, trainer, pl_module, stage):
        if self.compile and stage == "fit" and not getattr(pl_module, "_compiled", False):
            pl_module.net.compile()  # nn.Module.compile: same parameters, same state_dict keys
            pl_module._compiled = True
        if trainer.strategy.root_device.type != "cuda":
            return
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        if self.channels_last and any(isinstance(m, nn.Conv2d) for m in pl_module.modules()):
            pl_module.to(memory_format=torch.channels_last)
            pl_module.channels_last = True
