"""The shared base of the image datamodules: the size option, progressive resizing, the augmentation
spec on both paths, and predict folders. Subclasses add where the items come from."""

from __future__ import annotations

from pathlib import Path

import albumentations as A

from .augment import Augment
from .base import BaseDataModule, parse_size
from .files import predict_images


class ImageDataModule(BaseDataModule):
    """A :class:`BaseDataModule` over images (subclasses set ``size``, ``augment``, ``predict_dir``).

    Class attributes a subclass may set:
        size_rule: (minimum, multiple, hint) that ``--data.size`` must meet.
        batch_keys: what :class:`BatchAugment` moves with the image (``mask_key``, ``point_key``).
        default_augment: what ``augment: true`` means for this kind of data.
    """

    size_rule: tuple[int, int, str] = (1, 1, "")
    batch_keys: dict = {}
    default_augment = Augment()
    size: tuple[int, int] = (64, 64)
    predict_dir: str | None = None

    @classmethod
    def check_size(cls, size) -> tuple[int, int]:
        return parse_size(size, *cls.size_rule)

    def augment_ops(self, train: bool) -> list:
        """The per-image (CPU) augmentation ops of a split: none where the device path runs them."""
        spec = self.aug_spec() if train else None
        return spec.cpu_ops(self.size) if spec is not None and self.batch_augment is None else []

    def transform(self, train: bool) -> A.Compose:
        """The loaders' albumentations pipeline after resizing (override to add keypoint params)."""
        return A.Compose(self.augment_ops(train))

    def make_batch_augment(self):
        return self.aug_spec().device(self.size, **self.batch_keys)

    def set_size(self, size) -> None:
        """Change the input size (progressive resizing); loaders built afterwards use it."""
        self.size = self.check_size(size)
        if self.batch_augment is not None:  # e.g. a square's transposes do not apply to a rectangle
            self.batch_augment = self.make_batch_augment()
            self.batch_augment.seed = self.run_seed()
        for stage, ds in self.datasets.items():
            self.resize_dataset(stage, ds)

    def resize_dataset(self, stage: str, ds) -> None:
        ds.size = self.size
        if hasattr(ds, "transform"):
            ds.transform = self.transform(stage == "train")

    def predict_paths(self) -> list[Path] | None:
        """The images of ``--data.predict_dir`` (one line if none), or None without one."""
        return predict_images(Path(self.predict_dir).expanduser()) if self.predict_dir else None
