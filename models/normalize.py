"""Input normalisation inside the network, so data pipelines stay uint8 and bundles stay self-contained."""

from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """Maps uint8 (0..255) or float (0..1) images to the encoder's pretraining statistics."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"the input has {x.shape[1]} channels but the network takes {self.mean.shape[1]} "
                "(set --model.init_args.net.init_args.in_chans to the data's channels)."
            )
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        return (x - self.mean) / self.std
