"""Batch augmentation on the device (fastai's batch transforms): flips, rotation, zoom, lighting
on a whole batch at once, with masks and points moved in step with the images.

On a GPU this replaces the per-image albumentations work in the loader processes, which cannot
keep a fast GPU busy at the lesson's sizes (see ``benchmarks/throughput.py``). The geometry is one
affine matrix per image in ``affine_grid``'s normalised coordinates (``align_corners=False``, the
same [-1, 1] pixel-centre convention as BIWI's targets).

Reproducible and resumable: during training the draws of a batch come from a generator seeded by
(the run seed, the process rank, the number of training batches before it) -- see
:meth:`BatchAugment.generator_for` -- so they depend on nothing else that uses random numbers, and a
run resumed from a checkpoint (which restores Lightning's batch counter) draws what the
uninterrupted run drew.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class BatchAugment(nn.Module):
    """Random flips, rotation, zoom and lighting applied to a batch dict on its device.

    Images (``image``: uint8 0..255 or float 0..1, B x C x H x W) come out float in 0..1 (the nets
    normalise either). A class-id mask (B x H x W) is resampled with nearest neighbours; points
    (B x 2, x and y in [-1, 1]) are mapped through the inverse transform.

    Args:
        flip_h: flip left-right with probability 0.5.
        flip_v: flip top-bottom with probability 0.5.
        transpose: swap x and y with probability 0.5 (with both flips: the 8 symmetries of a
            square, fastai's dihedral; square images only).
        max_rotate: rotation drawn from [-max_rotate, max_rotate] degrees.
        zoom: zoom factor range (1.1: a region 1/1.1 of the image fills it).
        p_affine: probability of the rotation and zoom.
        max_lighting: brightness and contrast change drawn from [-max_lighting, max_lighting].
        p_lighting: probability of the lighting change.
        padding: ``reflection`` or ``zeros`` for pixels coming from outside the image.
        mask_key: batch key of a class-id mask to move with the image.
        point_key: batch key of (x, y) points in [-1, 1] to move with the image.
        seed: the run seed that :meth:`generator_for` mixes in (default: ``seed_everything``'s).
    """

    def __init__(
        self,
        flip_h: bool = True,
        flip_v: bool = False,
        transpose: bool = False,
        max_rotate: float = 10.0,
        zoom: tuple[float, float] = (1.0, 1.1),
        p_affine: float = 0.75,
        max_lighting: float = 0.2,
        p_lighting: float = 0.75,
        padding: str = "reflection",
        mask_key: str | None = None,
        point_key: str | None = None,
        seed: int | None = None,
    ):
        super().__init__()
        self.flip_h, self.flip_v, self.transpose = flip_h, flip_v, transpose
        self.max_rotate, self.zoom, self.p_affine = max_rotate, zoom, p_affine
        self.max_lighting, self.p_lighting = max_lighting, p_lighting
        self.padding, self.mask_key, self.point_key = padding, mask_key, point_key
        self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else int(seed)

    def generator_for(self, trainer) -> torch.Generator:
        """A CPU generator for the training batch the trainer is about to run: seeded by the run seed,
        the rank and the count of training batches so far (restored on resume), nothing else."""
        done = trainer.fit_loop.epoch_loop.batch_progress.total.ready
        state = np.random.SeedSequence([int(self.seed) & 0xFFFFFFFF, int(trainer.global_rank), int(done)]).generate_state(2, np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    @staticmethod
    def _uniform(b: int, device, generator: torch.Generator | None) -> torch.Tensor:
        """b draws in [0, 1), on the CPU (so that a CPU generator seeds them) then moved."""
        return torch.rand(b, generator=generator).to(device)

    def matrices(self, b: int, h: int, w: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """B x 2 x 2 maps from output to input coordinates (normalised, no translation)."""

        def rand(n):
            return self._uniform(n, device, generator)

        m = torch.eye(2, device=device).repeat(b, 1, 1)
        if self.transpose:
            if h != w:
                raise ValueError(f"transpose needs square images, got {h}x{w}")
            t = rand(b) < 0.5
            m[t] = m[t].flip(-1)
        if self.flip_h:
            m[:, :, 0] *= torch.where(rand(b) < 0.5, -1.0, 1.0)[:, None]
        if self.flip_v:
            m[:, :, 1] *= torch.where(rand(b) < 0.5, -1.0, 1.0)[:, None]
        apply = (rand(b) < self.p_affine).float()
        angle = (rand(b) * 2 - 1) * math.radians(self.max_rotate) * apply
        zoom = 1 + (self.zoom[0] - 1 + rand(b) * (self.zoom[1] - self.zoom[0])) * apply
        c, s = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        # a rotation in pixels, written in normalised coordinates (x scaled by w/2, y by h/2)
        rot = torch.stack([torch.stack([c, -s * h / w], -1), torch.stack([s * w / h, c], -1)], -2)
        return rot @ m

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        x = batch["image"]
        b, _, h, w = x.shape
        x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
        a = self.matrices(b, h, w, x.device, generator)
        theta = torch.cat([a, torch.zeros(b, 2, 1, device=x.device)], -1)
        grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding, align_corners=False)
        out = dict(batch)
        if self.mask_key and self.mask_key in batch:
            y = batch[self.mask_key]
            y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode=self.padding, align_corners=False)
            out[self.mask_key] = y[:, 0].round().to(batch[self.mask_key].dtype)
        if self.point_key and self.point_key in batch:
            p = batch[self.point_key]
            out[self.point_key] = (torch.linalg.inv(a) @ p.float()[..., None])[..., 0].to(p.dtype)
        if self.max_lighting > 0 and self.p_lighting > 0:
            on = (self._uniform(b, x.device, generator) < self.p_lighting).float()
            contrast = 1 + (self._uniform(b, x.device, generator) * 2 - 1) * self.max_lighting * on
            bright = (self._uniform(b, x.device, generator) * 2 - 1) * self.max_lighting * on
            x = (x * contrast.view(b, 1, 1, 1) + bright.view(b, 1, 1, 1)).clamp_(0, 1)
        out["image"] = x
        return out


__all__ = ["BatchAugment"]
