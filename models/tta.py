"""Test-time augmentation: the model's answers for flipped copies of a batch, mapped back and averaged.

A :class:`Flip` is one symmetry of the image grid: an optional transpose (rows and columns swapped,
square images only), then an optional left-right mirror (``h``), then an optional top-bottom mirror
(``v``). The 8 combinations are the dihedral group of the square (fastai's ``dihedral``: the 4
rotations by 90 degrees and their mirrors); a rectangle keeps its shape under the 4 flips.

What comes back through a flip:

* scores of the whole image (Planet's tags): unchanged, so they are averaged as they are;
* maps (CamVid's class probabilities, ``(B, C, H, W)``) and masks (``(B, H, W)``): flipped back;
* points (BIWI's centre, ``(B, 2)`` ``(x, y)`` in [-1, 1] with pixel centres at ``(2i + 1) / n - 1``,
  the ``align_corners=False`` convention of ``models/inference.py`` (``to_pixels``) and ``datamodules/batch_augment.py``):
  a left-right mirror takes pixel ``i`` to ``n - 1 - i``, which is ``x -> -x`` exactly; a top-bottom
  mirror is ``y -> -y``; a transpose swaps ``x`` and ``y``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Callable

import torch

__all__ = ["Flip", "IDENTITY", "HFLIP", "active", "dihedral", "flips", "group_for", "mean_scores", "mean_maps", "mean_points"]


@dataclass(frozen=True)
class Flip:
    """One symmetry of the grid: transpose first, then mirror left-right, then top-bottom."""

    transpose: bool = False
    h: bool = False
    v: bool = False

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to anything whose last two dimensions are (height, width): images, maps, masks."""
        if self.transpose:
            x = x.transpose(-1, -2)
        if self.h:
            x = x.flip(-1)
        if self.v:
            x = x.flip(-2)
        return x

    def undo_image(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`image`: a map predicted on the flipped image, back on the original."""
        if self.v:
            x = x.flip(-2)
        if self.h:
            x = x.flip(-1)
        if self.transpose:
            x = x.transpose(-1, -2)
        return x

    def _signs(self, p: torch.Tensor) -> torch.Tensor:
        return torch.tensor([-1.0 if self.h else 1.0, -1.0 if self.v else 1.0], dtype=p.dtype, device=p.device)

    def point(self, p: torch.Tensor) -> torch.Tensor:
        """Where a point ``(..., 2)`` (x, y in [-1, 1]) of the original image lies in the flipped one."""
        if self.transpose:
            p = p.flip(-1)
        return p * self._signs(p)

    def undo_point(self, p: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`point`: a point found in the flipped image, in the original's coordinates."""
        p = p * self._signs(p)
        return p.flip(-1) if self.transpose else p


IDENTITY = Flip()
HFLIP = (IDENTITY, Flip(h=True))  # CamVid's and BIWI's: a street or a face mirrored is still one


def dihedral() -> tuple[Flip, ...]:
    """The 8 symmetries of a square, the identity first."""
    return tuple(Flip(t, h, v) for t, h, v in product((False, True), repeat=3))


def flips() -> tuple[Flip, ...]:
    """The 4 flips of a rectangle (identity, left-right, top-bottom, both), the identity first."""
    return tuple(Flip(False, h, v) for h, v in product((False, True), repeat=2))


def group_for(height: int, width: int) -> tuple[Flip, ...]:
    """Planet's symmetries for an image of this size: :func:`dihedral` if square, else :func:`flips`."""
    return dihedral() if height == width else flips()


def active(task, stage: str) -> bool:
    """Whether a task's ``stage`` step averages over flips: never in training; with ``task.tta``
    in validation and test, except for fit's per-epoch validation when ``task.tta_fit`` is false."""
    if stage == "train" or not getattr(task, "tta", False):
        return False
    trainer = getattr(task, "_trainer", None)
    fitting = trainer is not None and getattr(trainer.state.fn, "value", trainer.state.fn) == "fit"
    return bool(getattr(task, "tta_fit", True)) or not fitting


def _check(x: torch.Tensor, group: tuple[Flip, ...]) -> None:
    if not group:
        raise ValueError("test-time augmentation needs at least one flip.")
    if x.shape[-1] != x.shape[-2] and any(g.transpose for g in group):
        raise ValueError(f"a transpose needs square images, got {x.shape[-2]}x{x.shape[-1]}.")


def mean_scores(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, group: tuple[Flip, ...]) -> torch.Tensor:
    """Mean of ``fn`` over the flipped batches, for answers that do not move with the image
    (probabilities of tags: average probabilities, not logits)."""
    _check(x, group)
    return torch.stack([fn(g.image(x)) for g in group]).mean(0)


def mean_maps(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, group: tuple[Flip, ...]) -> torch.Tensor:
    """Mean of ``fn``'s maps ``(B, C, H, W)`` (or masks ``(B, H, W)``), each flipped back first."""
    _check(x, group)
    return torch.stack([g.undo_image(fn(g.image(x))) for g in group]).mean(0)


def mean_points(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, group: tuple[Flip, ...]) -> torch.Tensor:
    """Mean of ``fn``'s points ``(B, 2)``, each mapped back through its flip first."""
    _check(x, group)
    return torch.stack([g.undo_point(fn(g.image(x))) for g in group]).mean(0)
