"""Segmentation items: mask name patterns (and the one line when they match nothing), and the
dataset of (image, class-id mask) pairs (read from the decode-once store where it has one)."""

from __future__ import annotations

import string
from pathlib import Path

import albumentations as A
import cv2
import torch
from torch.utils.data import Dataset

from models.inference import resize

from .base import DataError
from .decode import read_rgb
from .checks import read_mask
from .store import StoredItem, Stored

FIELDS = ("stem", "name", "suffix")


def check_pattern(pattern: str) -> str:
    """A mask name pattern naming at least one of :data:`FIELDS` and no other (one line otherwise)."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None}
    except ValueError as e:
        fields, problem = set(), str(e)
    else:
        bad = sorted(fields - set(FIELDS))
        problem = f"unknown field(s) {bad}" if bad else ("" if fields else "names no field, so every image would get one mask")
    if problem:
        raise DataError(f"--data.mask_pattern '{pattern}': {problem}; use {{stem}}, {{name}} or {{suffix}}, e.g. '{{stem}}_P.png' or '{{name}}'.")
    return pattern


def mask_name(image: Path, pattern: str) -> str:
    return pattern.format(stem=image.stem, name=image.name, suffix=image.suffix)


def guess_pattern(images: list[Path], masks: list[str]) -> str | None:
    """A pattern under which one of the first images finds a mask among ``masks`` (file names)."""
    for img in images[:20]:
        for m in masks:
            i = m.find(img.stem)
            j = i + len(img.stem)
            if i >= 0 and (i == 0 or not m[i - 1].isalnum()) and (j == len(m) or not m[j].isalnum()):
                return m[:i] + "{stem}" + m[j:]
    return None


def unmatched(img: Path, mask: Path, pattern: str, mask_dir: Path, images: list[Path]) -> DataError:
    """The one line for 'no image found its mask': what was expected, what is there, a pattern to try."""
    there = sorted(p.name for p in mask_dir.iterdir() if p.is_file() and not p.name.startswith(".")) if mask_dir.is_dir() else []
    held = f", which holds e.g. {there[0]}" if there else ", which holds no files"
    guess = guess_pattern(images, there)
    fix = f"try --data.mask_pattern '{guess}'" if guess else "set --data.mask_pattern so each mask name follows from its image's ({{stem}}, {{name}}, {{suffix}})"
    return DataError(f"{mask}: no mask for image {img}: --data.mask_pattern '{pattern}' matches no file in {mask_dir}{held}; {fix}.")


class SegmentationDataset(Stored, Dataset):
    """(image, mask) pairs from files; masks hold class ids.

    Args:
        items: (image path, mask path or None) pairs.
        transform: albumentations augmentation applied to the resized image and mask together.
        num_classes: masks with a value ``>= num_classes`` are an error naming the file.
        size: (height, width) images and masks are resized to (area / nearest).
        classes_from: where the class list comes from (for error messages).

    With a decode-once store attached (``datamodules.store``), the resized pairs are read from it.
    """

    def __init__(self, items: list[tuple[Path, Path | None]], transform: A.Compose, num_classes: int, size: tuple[int, int], classes_from: str = "the class list"):
        self.items, self.transform, self.num_classes, self.size = items, transform, num_classes, size
        self.classes_from = classes_from

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        img_path, mask_path = self.items[i]
        image, mask, orig = self.decoded(i)
        out = {"name": img_path.name, "orig_size": torch.tensor(orig)}
        t = self.transform(image=image) if mask is None else self.transform(image=image, mask=mask)
        out["image"] = torch.from_numpy(t["image"]).permute(2, 0, 1).contiguous()
        if mask is not None:
            out["mask"] = torch.from_numpy(t["mask"]).long()
        return out

    def decode(self, i) -> StoredItem:
        """The resized image, mask (or None) and the original (height, width), from the files."""
        img_path, mask_path = self.items[i]
        image = read_rgb(img_path)
        orig = image.shape[:2]
        mask = read_mask(mask_path, self.num_classes, self.classes_from, orig) if mask_path is not None else None
        h, w = self.size
        if orig != (h, w) and mask is not None:
            mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
        return StoredItem(resize(image, (h, w)), mask, orig)

    def store_files(self, i) -> tuple[Path, ...]:
        return tuple(p for p in self.items[i] if p is not None)

    def decode_id(self) -> str:
        return f"read_rgb, read_mask({self.num_classes}), cv2 area/nearest"
