"""Speed settings: the channels_last memory layout (CPU and GPU) and cuDNN autotuning (GPU).

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


CHANNELS_LAST = (True, False, "cpu", "cuda")


class MemoryFormat(pl.Callback):
    """channels_last for convolutional models (weights and image batches) on the CPU and on CUDA,
    and ``cudnn.benchmark`` on CUDA.

    ``--memory.channels_last``: ``true`` (both devices), ``false``, ``cpu`` or ``cuda`` (that device
    only). On 2 CPU cores (oneDNN) a training step with channels_last took, against the default layout
    (``benchmarks/results/whole_run.md``): EfficientNet-Lite0 32x128x128 0.67 s vs 0.93 s, 32x64x64
    0.32 vs 0.36, 8x120x160 0.21 vs 0.28; the U-Net on it 8x192x256 1.31 vs 1.57. On an H200 it
    slowed 64-128 px inputs (issue 3), so the small-image recipes say ``cpu``.
    ``--memory.cudnn_benchmark false`` turns autotuning off. ``--memory.compile true`` compiles the
    network with ``torch.compile`` (in place: checkpoints keep their keys; the first steps are slow
    while it compiles, and on CPU it needs a C++ compiler).
    """

    def __init__(self, channels_last: bool | str = True, cudnn_benchmark: bool = True, compile: bool = False):
        if channels_last not in CHANNELS_LAST:
            raise ValueError(f"--memory.channels_last {channels_last!r}: expected true, false, cpu or cuda.")
        self.channels_last, self.cudnn_benchmark, self.compile = channels_last, cudnn_benchmark, compile

    def setup(self, trainer, pl_module, stage):
        if self.compile and stage == "fit" and not getattr(pl_module, "_compiled", False):
            pl_module.net.compile()  # nn.Module.compile: same parameters, same state_dict keys
            pl_module._compiled = True
        device = trainer.strategy.root_device.type
        if device == "cuda":
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
        if self.channels_last in (True, device) and device in ("cpu", "cuda") and any(isinstance(m, nn.Conv2d) for m in pl_module.modules()):
            pl_module.to(memory_format=torch.channels_last)
            pl_module.channels_last = True
