"""One augmentation spec per dataset, feeding both paths: albumentations in the loaders (CPU) and
:class:`~datamodules.batch_augment.BatchAugment` on whole batches (device).

A datamodule's ``augment`` option takes ``true`` (the dataset's default spec), ``false``/``none``
(no augmentation), ``flip`` (the default's flips only) or a mapping that replaces some fields of
the default, e.g. ``--data.init_args.augment '{max_rotate: 0, max_lighting: 0.1}'``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import albumentations as A
import cv2

from .base import DataError
from .batch_augment import BatchAugment


@dataclass(frozen=True)
class Augment:
    """fastai's ``aug_transforms`` knobs.

    Args:
        flip: flip left-right with probability 0.5.
        flip_vert: flip top-bottom with probability 0.5.
        dihedral: on square images, all 8 symmetries of the square (with both flips).
        max_rotate: rotation drawn from [-max_rotate, max_rotate] degrees.
        max_zoom: zoom drawn from [1, max_zoom].
        p_affine: probability of the rotation and zoom.
        max_lighting: brightness and contrast change drawn from [-max_lighting, max_lighting].
        p_lighting: probability of the lighting change.
        padding: ``reflection`` or ``zeros`` for pixels that come from outside the image.
    """

    flip: bool = True
    flip_vert: bool = False
    dihedral: bool = False
    max_rotate: float = 10.0
    max_zoom: float = 1.1
    p_affine: float = 0.75
    max_lighting: float = 0.2
    p_lighting: float = 0.75
    padding: str = "reflection"

    def flips_only(self) -> "Augment":
        return dataclasses.replace(self, max_rotate=0.0, max_zoom=1.0, p_affine=0.0, max_lighting=0.0, p_lighting=0.0)

    @property
    def affine(self) -> bool:
        return self.p_affine > 0 and (self.max_rotate > 0 or self.max_zoom > 1)

    def cpu_ops(self, size: tuple[int, int]) -> list:
        """The albumentations ops for one resized image of ``size`` (mask and keypoints follow)."""
        h, w = size
        if self.dihedral and self.flip and self.flip_vert and h == w:
            ops = [A.D4(p=1.0)]
        else:
            ops = ([A.HorizontalFlip(p=0.5)] if self.flip else []) + ([A.VerticalFlip(p=0.5)] if self.flip_vert else [])
        if self.affine:
            border = cv2.BORDER_REFLECT_101 if self.padding == "reflection" else cv2.BORDER_CONSTANT
            ops.append(A.Affine(scale=(1.0, self.max_zoom), rotate=(-self.max_rotate, self.max_rotate), border_mode=border, p=self.p_affine))
        if self.p_lighting > 0 and self.max_lighting > 0:
            ops.append(A.RandomBrightnessContrast(brightness_limit=self.max_lighting, contrast_limit=self.max_lighting, p=self.p_lighting))
        return ops

    def device(self, size: tuple[int, int], mask_key: str | None = None, point_key: str | None = None) -> BatchAugment:
        """The same augmentation on whole batches on the device."""
        h, w = size
        return BatchAugment(
            flip_h=self.flip, flip_v=self.flip_vert, transpose=self.dihedral and h == w, max_rotate=self.max_rotate if self.affine else 0.0,
            zoom=(1.0, self.max_zoom if self.affine else 1.0), p_affine=self.p_affine if self.affine else 0.0,
            max_lighting=self.max_lighting, p_lighting=self.p_lighting, padding=self.padding, mask_key=mask_key, point_key=point_key,
        )


def augment_spec(value, default: Augment) -> Augment | None:
    """The spec an ``augment`` option asks for (None: no augmentation); one line if it is not one."""
    if value is True or (isinstance(value, str) and value.lower() in ("true", "default")):
        return default
    if value is None or value is False or (isinstance(value, str) and value.lower() in ("false", "none")):
        return None
    if isinstance(value, str) and value.lower() == "flip":
        return default.flips_only()
    if isinstance(value, dict):
        names = {f.name for f in dataclasses.fields(Augment)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise DataError(f"--data.augment: unknown field(s) {unknown}; expected some of {sorted(names)}.")
        spec = dataclasses.replace(default, **value)
        if spec.padding not in ("reflection", "zeros"):
            raise DataError(f"--data.augment: padding '{spec.padding}': expected reflection or zeros.")
        return spec
    raise DataError(f"--data.augment {value!r}: expected true, false, flip or a mapping of fields such as {{max_rotate: 0}}.")
