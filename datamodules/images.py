"""The shared base of the image datamodules: the size option, progressive resizing, the augmentation
spec on both paths, and predict folders. Subclasses add where the items come from."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from .augment import Augment
from .base import BaseDataModule, DataError
from .checks import DECODE_BUDGET, check_images
from .files import predict_images
from .splits import default_split, parse_split
from .store import attach, store_root

SKIP_HINT = "--data.init_args.skip_unreadable true leaves such images out."


def parse_size(size, minimum: int = 1, multiple: int = 1, hint: str = "") -> tuple[int, int]:
    """``--data.size`` as (height, width): one number or two, each >= ``minimum`` and a multiple of ``multiple``."""
    hw = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
    if len(hw) != 2 or any(s < minimum or s % multiple for s in hw):
        rule = f"at least {minimum}" + (f" and a multiple of {multiple}" if multiple > 1 else "")
        raise DataError(f"--data.size {list(hw)}: give one side or [height, width], each {rule}{hint}.")
    return hw


def unique_classes(classes: list | None, what: str = "classes") -> list[str] | None:
    """A given ``--data.init_args.classes`` as strings (None: not given); one line if a name repeats."""
    if not classes:
        return None
    names = [str(c).strip() for c in classes]
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise DataError(f"--data.init_args.classes: duplicate {what} {dup}; list each once.")
    return names


class ImageDataModule(BaseDataModule):
    """A :class:`BaseDataModule` over images: the options every image kind shares.

    Args:
        root: the data folder; ``None``: the kind's built-in sample.
        size: square side or [height, width] the images are resized to (:meth:`set_size`).
        batch_size: images per batch.
        num_workers: loader processes; ``None`` follows the machine (cores - 1, at most 8).
        seed: seed of a random validation split.
        split: the validation split (``datamodules.splits``): ``random`` (``valid_pct``, ``seed``),
            ``column:NAME``, ``folder``, ``names:FILE`` or ``function:module.fn``; ``None``: by an
            ``is_valid`` column or a ``valid/`` folder where the data has one, else ``random``.
        valid_pct: the validation share of a random split; ``test`` uses the validation split
            unless the layout has its own.
        augment: ``true`` (the kind's ``default_augment``), ``false``, ``flip`` or a mapping of
            ``datamodules.augment.Augment`` fields; the same spec drives both paths.
        augment_on: ``cpu`` (albumentations in the loaders), ``gpu`` (whole batches on the
            device) or ``auto`` (gpu when training on CUDA).
        predict_dir: folder of images for ``predict`` (default: the validation images).
        skip_unreadable: decode every listed image at setup and leave out (and count, in
            ``self.skipped``) those that cannot be read, instead of stopping at the first.
        feedback: ``serve.py``'s feedback store: its corrected examples join the training split.
        store: the decode-once store (``datamodules.store``): each split's images (and masks)
            decoded and resized once per size into memory-mapped uint8 arrays the loaders read.
            ``auto``: where a split's store fits ``store_budget_gb``; ``true``: always; ``false``: never.
        store_budget_gb: the most disk one split's store may take under ``store: auto``.
        store_dir: where stores are written (default ``$LESSON3_CACHE/store``, else ``~/.cache/lesson3/store``).

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

    def __init__(
        self, root: str | None = None, size: int | tuple[int, int] = 64, batch_size: int = 32, num_workers: int | None = None,
        seed: int = 42, split: str | dict | None = None, valid_pct: float = 0.2, augment: bool | str | dict = True,
        augment_on: str = "auto", predict_dir: str | None = None, skip_unreadable: bool = False, feedback: str | None = None,
        store: bool | str = "auto", store_budget_gb: float = 20.0, store_dir: str | None = None,
    ):
        super().__init__(root, batch_size, num_workers, seed, feedback)
        self.size = self.check_size(size)
        parse_split(split)  # a bad option is one line before any data is read
        self.split, self.valid_pct, self.augment, self.augment_on = split, valid_pct, augment, augment_on
        self.predict_dir, self.skip_unreadable = predict_dir, skip_unreadable
        self.skipped: list[str] = []
        self.store, self.store_budget_gb, self.store_dir = store, store_budget_gb, store_dir
        self.store_mode()  # a bad option is one line before any data is read

    def split_spec(self, columns=(), folder: Path | None = None) -> dict:
        """The ``split`` option as a mapping (``None``: ``is_valid`` column, ``valid/`` folder, else random)."""
        return default_split(self.split, columns, folder)

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

    def store_mode(self) -> str:
        """The ``store`` option as ``auto``, ``on`` or ``off`` (one line if it is none of them)."""
        value = str(self.store).lower()
        mode = {"auto": "auto", "true": "on", "on": "on", "false": "off", "off": "off", "none": "off"}.get(value)
        if mode is None:
            raise DataError(f"--data.init_args.store {self.store!r}: expected auto, true or false.")
        return mode

    def use_store(self, stage: str) -> None:
        """Attach the decode-once store of a split at the current size (built on first use; every
        DDP rank calls this, the first builds under a file lock and the others wait for it)."""
        ds, mode = self.datasets.get(stage), self.store_mode()
        if stage == "predict" or ds is None or not hasattr(ds, "decode") or len(ds) == 0:
            return
        if mode == "off":
            ds.store = None
            return
        budget = self.store_budget_gb * 1e9 if mode == "auto" else None
        attach(ds, self.size, store_root(self.store_dir), self.num_workers, f"{stage} {self.size[0]}x{self.size[1]}", budget)

    def _loader(self, stage: str, shuffle: bool = False, tied: bool = True):
        self.use_store(stage)
        return super()._loader(stage, shuffle, tied)

    def resize_dataset(self, stage: str, ds) -> None:
        ds.size = self.size
        if hasattr(ds, "transform"):
            ds.transform = self.transform(stage == "train")

    def predict_paths(self) -> list[Path] | None:
        """The images of ``--data.predict_dir`` (one line if none), or None without one."""
        return predict_images(Path(self.predict_dir).expanduser()) if self.predict_dir else None

    def find_unreadable(self, paths: list[Path]) -> dict[int, DataError]:
        """The images that do not open or are incomplete, by index (:func:`~datamodules.checks.check_images`:
        every one with ``skip_unreadable``, else a bounded sample of those needing a full decode)."""
        errors, left = check_images(paths, None if self.skip_unreadable else DECODE_BUDGET, self.seed)
        if left:
            rank_zero_info(f"{paths[0].parent}: {left} of {len(paths)} images were not decoded at setup (beyond a sample); a broken one stops the run when it loads.")
        return errors

    def readable(self, paths: list[Path], sources: list[str]) -> np.ndarray:
        """Which images to keep: without ``skip_unreadable`` the first bad one is an error naming it
        and where it is listed; with it the bad ones are left out, listed in ``self.skipped`` and
        counted in one warning."""
        errors = self.find_unreadable(paths) if paths else {}
        if errors and not self.skip_unreadable:
            i = min(errors)
            raise DataError(f"{errors[i]} Listed in {sources[i]}. {SKIP_HINT}")
        keep = np.ones(len(paths), bool)
        keep[list(errors)] = False
        self.skipped = [str(paths[i]) for i in sorted(errors)]
        if self.skipped:
            rank_zero_warn(f"{paths[0].parent}: left out {len(self.skipped)} unreadable image(s), e.g. {self.skipped[0]} (--data.init_args.skip_unreadable).")
        return keep
